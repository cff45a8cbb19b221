//! Day 2 on k3s end to end, on the test rack (real OpenSSH nodes in network
//! namespaces; root only; skipped elsewhere, failed under CI=true) with the
//! k3s stand-in, whose first server keeps the API's objects in a real etcd
//! (Debian `etcd-server`), driven through the real `bootstrap` binary:
//!
//! - `bootstrap up` converges one server and one agent;
//! - `bootstrap snapshot` runs `k3s etcd-snapshot save` over SSH, streams the
//!   file to the state dir (0600) and records it with the sha256 of what was
//!   fetched; `--keep 1` prunes the older one;
//! - `bootstrap reset` refuses a node that is not this cluster's and a
//!   snapshot whose bytes differ from its record, touching nothing;
//! - `bootstrap reset --snapshot FILE --yes` uninstalls k3s everywhere and
//!   rebuilds with the first server restored (`--cluster-reset
//!   --cluster-reset-restore-path`): a ConfigMap created before the snapshot
//!   is back, one created after it is gone, and the cluster CA is the one
//!   the snapshot held;
//! - `bootstrap reset --yes` takes its own snapshot first (recorded as
//!   `reset`) and keeps everything;
//! - with two servers and an agent, every node is uninstalled and the other
//!   server and the agent join the restored first server afresh; on nodes a
//!   reset left without k3s, `reset --snapshot FILE` rebuilds without a wipe.
//!
//! Addresses: leased by `Rack::start` from 198.18.0.100 up (free slots only,
//! so concurrent rack tests never share one).
//!
//! `harness = false`: this binary is also the stand-in (uploaded to the nodes
//! as the k3s binary, started there as `/usr/local/bin/k3s`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bootstrap::ssh::{self, Pool, Target, UploadOpts};
use bootstrap::state::{SnapshotRecord, StateStore};
use k8s_openapi::api::core::v1::ConfigMap;
use xtask::rack::Rack;

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

fn main() {
    if xtask::k3s_standin::invoked_as_k3s() {
        std::process::exit(xtask::k3s_standin::main());
    }
    if !xtask::etcd::member::available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but etcd-server/etcd-client are not installed (cargo xtask test installs them)"
        );
        println!("test day2_k3s ... skipped (/usr/bin/etcd or /usr/bin/etcdctl missing)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `cargo test --test day2_k3s -- WORD` runs the scenarios whose name holds WORD.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    type Scenario = for<'a> fn(&'a Rack) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;
    let scenarios: [(&str, usize, Scenario); 3] = [
        ("snapshot and reset drill", 2, |r| {
            Box::pin(snapshot_then_reset_restores_what_the_snapshot_held(r))
        }),
        ("reset of two servers and an agent", 3, |r| {
            Box::pin(two_servers_and_an_agent_are_reset_and_rejoin_the_restored_one(r))
        }),
        ("upgrade, then remove-node", 3, |r| {
            Box::pin(upgrade_moves_servers_then_agents_and_remove_node_keeps_quorum(r))
        }),
    ];
    let mut passed = 0;
    for (name, nodes, run) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        let Some(rack) = Rack::for_test(nodes) else {
            println!("test day2_k3s ... skipped");
            return;
        };
        rt.block_on(run(&rack));
        drop(rack);
        println!("test day2_k3s: {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
}

struct Env {
    home: tempfile::TempDir,
    inventory: PathBuf,
    state: PathBuf,
    crds: PathBuf,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Env {
    /// The real binary, with this test's HOME (known_hosts of the rack) and state dir.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("-i")
            .arg(&self.inventory)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("KUBECONFIG");
        c
    }

    fn bootstrap(&self, args: &[&str]) -> Run {
        let t = Instant::now();
        let out = self.command(args).output().unwrap();
        let run = Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "bootstrap {} → {} in {:.1} s",
            args.join(" "),
            if run.ok { "ok" } else { "failed" },
            t.elapsed().as_secs_f64()
        );
        run
    }

    /// What `phase` recorded last for `node` (`v1.35.0+k3s1: cordon`, ...).
    fn progress(&self, phase: &str, node: &str) -> Option<String> {
        let state = StateStore::peek(&self.state, "rack").ok()??;
        state.phases.get(phase)?.steps.get(node).cloned()
    }

    fn records(&self) -> Vec<SnapshotRecord> {
        StateStore::peek(&self.state, "rack").unwrap().unwrap().snapshots
    }

    async fn kube(&self) -> kube::Api<ConfigMap> {
        let path = self.state.join("rack/kubeconfig");
        let client = bootstrap::k8s::Client::from_kubeconfig(&path).await.unwrap();
        kube::Api::namespaced(client.kube().clone(), "default")
    }
}

fn target(rack: &Rack, n: &xtask::rack::RackNode) -> Target {
    let mut t = Target::new(&n.name, n.ip.to_string());
    t.user = Some("root".into());
    t.key = Some(rack.client_key());
    t
}

/// Fails the test with the reset's output and the first server's k3s log unless it succeeded.
async fn reset_succeeded(pool: &Pool, rack: &Rack, reset: &Run) {
    if !reset.ok {
        let log = on_node(
            pool,
            rack,
            0,
            "tail -n 30 /var/log/k3s.log; echo '--- systemctl:'; tail -n 12 /var/log/standin-systemctl.log; \
             echo '--- processes:'; ps -eo pid,ppid,stat,etime,args | grep -e etcd -e k3s | grep -v grep",
        )
        .await;
        panic!(
            "reset:\n{}{}\nrack-1 /var/log/k3s.log, systemctl calls, processes:\n{log}",
            reset.stdout, reset.stderr
        );
    }
}

async fn on_node(pool: &Pool, rack: &Rack, i: usize, cmd: &str) -> String {
    let s = pool.session(&target(rack, &rack.nodes()[i])).await.unwrap();
    let out = s.exec(cmd, Default::default()).await.unwrap();
    format!("{}{}", out.stdout_str(), out.stderr_str())
}

/// Another workstation's live run: its lock file on node `i`.
const FOREIGN_HOLDER: &str = "op@ws2 pid 4242 since 2026-12-02T08:00:00Z";

async fn plant_foreign_lock(pool: &Pool, rack: &Rack, i: usize) {
    let lock = bootstrap::ssh::host_lock::PATH;
    on_node(
        pool,
        rack,
        i,
        &format!("mkdir -p /run/lock; echo '{FOREIGN_HOLDER}' > {lock}"),
    )
    .await;
}

/// Node `i`'s lock file, or `none`.
async fn lock_of(pool: &Pool, rack: &Rack, i: usize) -> String {
    let lock = bootstrap::ssh::host_lock::PATH;
    on_node(pool, rack, i, &format!("cat {lock} 2>/dev/null || echo none"))
        .await
        .trim()
        .to_owned()
}

fn marker(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"marker": name},
    }))
    .unwrap()
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// The rack's nodes get the stand-in's `systemctl`; the inventory uses this
/// binary as k3s; HOME holds the rack's known_hosts.
async fn prepare(rack: &Rack, servers: usize) -> (Env, Pool) {
    let pool = Pool::new(ssh::Options::isolated(rack.known_hosts()));
    for n in rack.nodes() {
        let s = pool.session(&target(rack, n)).await.unwrap();
        s.upload(
            xtask::k3s_standin::SYSTEMCTL.as_bytes(),
            "/usr/local/bin/systemctl",
            UploadOpts {
                mode: 0o755,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::copy(rack.known_hosts(), home.path().join(".ssh/known_hosts")).unwrap();
    let inventory = home.path().join("rack.toml");
    let mut nodes = rack.inventory_toml();
    for n in &rack.nodes()[1..servers] {
        nodes = nodes.replace(
            &format!("name = \"{}\"\nrole = \"worker\"", n.name),
            &format!("name = \"{}\"\nrole = \"controlplane\"", n.name),
        );
    }
    std::fs::write(
        &inventory,
        format!(
            "{}\n[cluster.k3s]\nbinary = {:?}\n",
            nodes,
            std::env::current_exe().unwrap().display().to_string()
        ),
    )
    .unwrap();
    let crds = xtask::sim_rack::offline_crds(&home.path().join("crds")).unwrap();
    let state = home.path().join("state");
    (
        Env {
            home,
            inventory,
            state,
            crds,
        },
        pool,
    )
}

async fn snapshot_then_reset_restores_what_the_snapshot_held(rack: &Rack) {
    let (env, pool) = prepare(rack, 1).await;
    let crds = env.crds.display().to_string();
    let up = env.bootstrap(&["up", "--artifacts", &crds, "--timeout", "60"]);
    assert!(up.ok, "up:\n{}{}", up.stdout, up.stderr);
    let kubeconfig = env.state.join("rack/kubeconfig");
    let ca_before = bootstrap::phases::k3s_nodes::ca_sha256(&std::fs::read(&kubeconfig).unwrap()).unwrap();
    let token = bootstrap::render::K3sSecrets::load(&env.state.join("rack"))
        .unwrap()
        .unwrap()
        .k3s
        .token;

    // A marker, then a snapshot: streamed to the state dir, 0600, recorded with the fetched file's sha256.
    let cms = env.kube().await;
    cms.create(&Default::default(), &marker("before-snapshot"))
        .await
        .unwrap();
    let first = env.bootstrap(&["--output", "json", "snapshot"]);
    assert!(first.ok, "snapshot:\n{}{}", first.stdout, first.stderr);
    let reported: serde_json::Value = serde_json::from_str(first.stdout.trim()).unwrap();
    let record: SnapshotRecord = serde_json::from_value(reported["snapshot"].clone()).unwrap();
    assert_eq!(record.node, "rack-1");
    assert_eq!(record.reason, "snapshot");
    assert!(record.path.starts_with(env.state.join("rack/snapshots")), "{record:?}");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&record.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), record.size);
    assert!(record.size > 0);
    assert_eq!(
        sha256_file(&record.path),
        record.sha256,
        "recorded sha256 = fetched file's"
    );
    assert_eq!(env.records(), vec![record.clone()], "recorded in the state");
    // It is the node's etcd snapshot: etcdctl reads it, and it is the file k3s wrote there.
    bootstrap::day2::snapshot::check_etcd_hash(&record.path).expect("etcd's trailing checksum");
    let status = xtask::etcd::member::snapshot_status(&record.path).unwrap();
    assert!(status.2 > 0, "keys in the snapshot: {status:?}");
    let listing = on_node(
        &pool,
        rack,
        0,
        &format!("sha256sum {}/bootstrap-*", xtask::k3s_standin::SNAPSHOT_DIR),
    )
    .await;
    assert!(
        listing.contains(&record.sha256) && listing.contains("/bootstrap-") && listing.contains("-rack-1-"),
        "{listing}"
    );

    // A marker after the snapshot; a second snapshot with --keep 1 prunes the first... kept aside first.
    cms.create(&Default::default(), &marker("after-snapshot"))
        .await
        .unwrap();
    let kept = env.home.path().join("before.snapshot");
    std::fs::copy(&record.path, &kept).unwrap();
    let second = env.bootstrap(&["snapshot", "--keep", "1"]);
    assert!(second.ok, "snapshot --keep 1:\n{}{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains(&format!("pruned {}", record.path.display())),
        "{}",
        second.stdout
    );
    assert!(!record.path.exists(), "the pruned snapshot is deleted");
    let records = env.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let newest = records[0].clone();
    assert_ne!(newest.sha256, record.sha256);

    // Refusals touch nothing: a recorded snapshot whose bytes changed ...
    let footprint = || {
        on_node(
            &pool,
            rack,
            0,
            "systemctl is-active k3s; cat /var/lib/rancher/k3s/standin-calls.log",
        )
    };
    let before = footprint().await;
    let mut bytes = std::fs::read(&newest.path).unwrap();
    let original = bytes.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&newest.path, &bytes).unwrap();
    let path = newest.path.display().to_string();
    let refused = env.bootstrap(&["reset", "--snapshot", &path, "--yes"]);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("differs from the") && refused.stderr.contains("refusing to restore"),
        "{}",
        refused.stderr
    );
    std::fs::write(&newest.path, &original).unwrap();
    // ... a file the state does not know, damaged: refused by etcd's own trailing checksum ...
    let damaged = env.home.path().join("damaged.snapshot");
    std::fs::write(&damaged, &bytes).unwrap();
    let refused = env.bootstrap(&["reset", "--snapshot", &damaged.display().to_string(), "--yes"]);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("not an intact etcd snapshot") && refused.stderr.contains("nothing was wiped"),
        "{}",
        refused.stderr
    );
    // ... and a node that joins with another token (named; the others never touched).
    let config = "/etc/rancher/k3s/config.yaml";
    on_node(
        &pool,
        rack,
        1,
        &format!("cp -p {config} /root/config.keep && sed -i 's/^token: .*/token: \"not-this-cluster\"/' {config}"),
    )
    .await;
    let refused = env.bootstrap(&["reset", "--snapshot", &path, "--yes"]);
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("rack-2: its k3s agent joins with another cluster token")
            && refused.stderr.contains("nothing was done")
            && !refused.stderr.contains("rack-1:"),
        "{}",
        refused.stderr
    );
    on_node(&pool, rack, 1, &format!("mv /root/config.keep {config}")).await;
    // Without --yes (no terminal): asks, and stops before the wipe.
    let unconfirmed = env.bootstrap(&["reset", "--snapshot", &kept.display().to_string()]);
    assert!(!unconfirmed.ok);
    assert!(
        unconfirmed.stderr.contains("pass --yes to confirm"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(footprint().await, before, "a refused reset changed the first server");
    // Another live run holds rack-2's lock file: refused by name before anything is done.
    plant_foreign_lock(&pool, rack, 1).await;
    let locked = env.bootstrap(&["reset", "--snapshot", &kept.display().to_string(), "--yes"]);
    assert!(
        !locked.ok
            && locked.stderr.contains("rack-2")
            && locked.stderr.contains("op@ws2 pid 4242")
            && locked.stderr.contains("nothing was done"),
        "{}",
        locked.stderr
    );
    assert_eq!(footprint().await, before, "a locked node: nothing wiped");
    assert_eq!(
        lock_of(&pool, rack, 0).await,
        "none",
        "the lock taken on rack-1 meanwhile is gone again"
    );
    on_node(&pool, rack, 1, &format!("rm {}", bootstrap::ssh::host_lock::PATH)).await;

    // The drill from the first snapshot: every node uninstalled, the first server restored from it.
    let kept_path = kept.display().to_string();
    let reset = env.bootstrap(&[
        "reset",
        "--snapshot",
        &kept_path,
        "--yes",
        "--artifacts",
        &crds,
        "--timeout",
        "60",
    ]);
    reset_succeeded(&pool, rack, &reset).await;
    assert!(reset.stderr.contains("rebuilt and etcd restored"), "{}", reset.stderr);
    for i in 0..2 {
        assert_eq!(
            lock_of(&pool, rack, i).await,
            "none",
            "rack-{}: the reset's lock released",
            i + 1
        );
    }
    assert!(
        !reset.stderr.contains(&token) && !reset.stdout.contains(&token),
        "the token was printed"
    );
    let calls = on_node(
        &pool,
        rack,
        0,
        "cat /var/lib/rancher/k3s/standin-calls.log; ls /var/lib/rancher/k3s/server/db",
    )
    .await;
    assert!(
        calls.contains("server cluster-reset restore /var/lib/bootstrap/k3s-restore/etcd.snapshot"),
        "{calls}"
    );
    assert!(
        !calls.contains("bootstrap-"),
        "the node's old snapshots went with the uninstall: {calls}"
    );
    let left = on_node(&pool, rack, 0, "ls /var/lib/bootstrap/k3s-restore").await;
    assert!(left.trim().is_empty(), "the uploaded snapshot was removed: {left}");

    let cms = env.kube().await;
    let back = cms.get_opt("before-snapshot").await.unwrap();
    assert_eq!(
        back.and_then(|c| c.data)
            .and_then(|d| d.get("marker").cloned())
            .as_deref(),
        Some("before-snapshot"),
        "the object the snapshot held is back"
    );
    assert!(
        cms.get_opt("after-snapshot").await.unwrap().is_none(),
        "an object created after the snapshot is gone"
    );
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(cms.clone().into_client())
        .list(&Default::default())
        .await
        .unwrap();
    let mut names: Vec<String> = nodes.items.iter().filter_map(|n| n.metadata.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["rack-1", "rack-2"]);
    let agent = on_node(&pool, rack, 1, "systemctl is-active k3s-agent").await;
    assert_eq!(agent.trim(), "active");
    // The restored datastore brought its cluster CA back (k3s keeps it in its bootstrap data).
    let ca_after = bootstrap::phases::k3s_nodes::ca_sha256(&std::fs::read(&kubeconfig).unwrap()).unwrap();
    assert_eq!(ca_after, ca_before, "the cluster CA after the restore");

    // The drill again, taking its own snapshot (recorded as `reset`): what was there is kept.
    cms.create(&Default::default(), &marker("after-first-reset"))
        .await
        .unwrap();
    let reset = env.bootstrap(&["reset", "--yes", "--artifacts", &crds, "--timeout", "60"]);
    reset_succeeded(&pool, rack, &reset).await;
    let taken = env.records().last().cloned().unwrap();
    assert_eq!((taken.reason.as_str(), taken.node.as_str()), ("reset", "rack-1"));
    assert_eq!(sha256_file(&taken.path), taken.sha256);
    assert!(
        reset
            .stderr
            .contains(&format!("etcd snapshot from rack-1: {}", taken.path.display())),
        "{}",
        reset.stderr
    );
    let cms = env.kube().await;
    for name in ["before-snapshot", "after-first-reset"] {
        assert!(
            cms.get_opt(name).await.unwrap().is_some(),
            "{name} kept through the second drill"
        );
    }

    // Converged after the drill: a plan finds nothing to do.
    let plan = env.bootstrap(&["plan", "--artifacts", &crds]);
    assert!(plan.ok, "plan:\n{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("rack: nothing to do"),
        "a converged cluster after the drill:\n{}",
        plan.stdout
    );
}

/// Servers other than the first are uninstalled too and join the restored
/// one afresh (k3s docs: on the other servers the datastore is deleted and
/// k3s started again to rejoin); the agent comes back through them.
async fn two_servers_and_an_agent_are_reset_and_rejoin_the_restored_one(rack: &Rack) {
    let (env, pool) = prepare(rack, 2).await;
    let crds = env.crds.display().to_string();
    let up = env.bootstrap(&["up", "--artifacts", &crds, "--timeout", "60"]);
    assert!(up.ok, "up:\n{}{}", up.stdout, up.stderr);
    env.kube()
        .await
        .create(&Default::default(), &marker("kept"))
        .await
        .unwrap();
    let reset = env.bootstrap(&["reset", "--yes", "--artifacts", &crds, "--timeout", "60"]);
    reset_succeeded(&pool, rack, &reset).await;
    assert!(reset.stderr.contains("rebuilt and etcd restored"), "{}", reset.stderr);
    let cms = env.kube().await;
    assert!(cms.get_opt("kept").await.unwrap().is_some(), "restored");
    // Both servers were uninstalled (their call logs start over) and run again; the second
    // joined the restored first one; only the first was restored.
    let first = on_node(&pool, rack, 0, "cat /var/lib/rancher/k3s/standin-calls.log").await;
    let second = on_node(&pool, rack, 1, "cat /var/lib/rancher/k3s/standin-calls.log").await;
    assert!(first.contains("server cluster-reset restore"), "{first}");
    assert!(
        second.contains("server joined") && !second.contains("cluster-reset"),
        "{second}"
    );
    assert_eq!(second.matches("server start").count(), 1, "{second}");
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(cms.into_client())
        .list(&Default::default())
        .await
        .unwrap();
    let mut names: Vec<String> = nodes.items.iter().filter_map(|n| n.metadata.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["rack-1", "rack-2", "rack-3"]);

    // A reset whose rebuild did not finish leaves nodes without k3s: without a snapshot there is
    // nothing to restore (refused), with one it rebuilds without a wipe.
    for i in 0..3 {
        on_node(&pool, rack, i, bootstrap::day2::k3s::UNINSTALL).await;
    }
    let refused = env.bootstrap(&["reset", "--yes"]);
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("no node runs k3s") && refused.stderr.contains("pass --snapshot FILE"),
        "{}",
        refused.stderr
    );
    let last = env.records().last().cloned().unwrap();
    assert_eq!(last.reason, "reset");
    let path = last.path.display().to_string();
    let resumed = env.bootstrap(&[
        "reset",
        "--snapshot",
        &path,
        "--yes",
        "--artifacts",
        &crds,
        "--timeout",
        "60",
    ]);
    assert!(resumed.ok, "resumed reset:\n{}{}", resumed.stdout, resumed.stderr);
    assert!(resumed.stderr.contains("nothing to wipe"), "{}", resumed.stderr);
    let cms = env.kube().await;
    assert!(
        cms.get_opt("kept").await.unwrap().is_some(),
        "restored by the resumed reset"
    );

    // The stand-in restores only what k3s would: a snapshot taken under this token does not
    // restore on a server configured with another one, and its data dir is left as it was.
    let taken = env.bootstrap(&["snapshot"]);
    assert!(taken.ok, "{}{}", taken.stdout, taken.stderr);
    let out = on_node(
        &pool,
        rack,
        0,
        &format!(
            "systemctl stop k3s; ls /var/lib/rancher/k3s/server/db > /root/db.before; \
             sed -i 's/^token: .*/token: \"not-this-cluster\"/' /etc/rancher/k3s/config.yaml; \
             /usr/local/bin/k3s server --cluster-reset --cluster-reset-restore-path=$(ls -d {}/bootstrap-* | head -n 1); \
             echo rc=$?; ls /var/lib/rancher/k3s/server/db | diff /root/db.before - && echo unchanged",
            xtask::k3s_standin::SNAPSHOT_DIR
        ),
    )
    .await;
    assert!(
        out.contains("bootstrap data already found and encrypted with different token")
            && out.contains("rc=1")
            && out.contains("unchanged"),
        "{out}"
    );
}

/// The target version the upgrade scenario moves to.
const TO: &str = "v1.35.0+k3s1";

/// Node name → (kubelet version, unschedulable), from the API.
async fn node_versions(env: &Env) -> std::collections::BTreeMap<String, (String, bool)> {
    let client = env.kube().await.into_client();
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(client)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let version = n
                .status
                .and_then(|s| s.node_info)
                .map(|i| i.kubelet_version)
                .unwrap_or_default();
            let cordoned = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
            (n.metadata.name.unwrap_or_default(), (version, cordoned))
        })
        .collect()
}

/// Two servers and an agent: `upgrade` refuses bad input and a binary that is not the
/// target's, touching nothing; then moves the servers one at a time (each back, its own
/// /readyz answering and its Node at the target, before the next is touched), then the
/// agent drained; a second run has nothing to do. `remove-node` refuses to take every
/// server or to leave etcd without a healthy majority, then removes the agent: uninstalled,
/// its Node gone, no other node restarted.
async fn upgrade_moves_servers_then_agents_and_remove_node_keeps_quorum(rack: &Rack) {
    let (env, pool) = prepare(rack, 2).await;
    let crds = env.crds.display().to_string();
    let up = env.bootstrap(&["up", "--artifacts", &crds, "--timeout", "60"]);
    assert!(up.ok, "up:\n{}{}", up.stdout, up.stderr);
    let from = bootstrap::inventory::DEFAULT_K3S_VERSION;
    let before = node_versions(&env).await;
    assert!(before.values().all(|(v, _)| v == from), "{before:?}");
    let calls = || async {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(on_node(&pool, rack, i, "cat /var/lib/rancher/k3s/standin-calls.log").await);
        }
        out
    };
    let untouched = calls().await;

    // Bad input and a binary that is not the target's: refused, nothing touched.
    let text = std::fs::read_to_string(&env.inventory).unwrap();
    let with_version = format!("{text}\n[cluster.versions]\nk3s = \"{TO}\"\n");
    std::fs::write(&env.inventory, &with_version).unwrap();
    for (args, says) in [
        (vec!["upgrade"], "pin the v1.35.0+k3s1 binary"),
        (
            vec!["upgrade", "--k3s", "v1.36.0+k3s1"],
            "the inventory says versions.k3s",
        ),
        (vec!["upgrade", "--talos", "v1.14.0"], "is a k3s cluster"),
        (vec!["upgrade", "--batch", "0"], "--batch `0`: must be at least 1"),
    ] {
        let refused = env.bootstrap(&args);
        assert!(!refused.ok, "{args:?} must be refused");
        assert!(refused.stderr.contains(says), "{args:?}: {}", refused.stderr);
    }
    assert_eq!(calls().await, untouched, "refusals restart nothing");

    // The target's own binary, pinned in the inventory.
    let target_bin = env.home.path().join("k3s-v1.35.0");
    xtask::k3s_standin::binary_for_version(&std::env::current_exe().unwrap(), TO, &target_bin).unwrap();
    let exe = std::env::current_exe().unwrap().display().to_string();
    std::fs::write(
        &env.inventory,
        with_version.replace(&format!("{exe:?}"), &format!("{:?}", target_bin.display().to_string())),
    )
    .unwrap();
    let dry = env.bootstrap(&["upgrade", "--dry-run", "--output", "json"]);
    assert!(dry.ok, "{}{}", dry.stdout, dry.stderr);
    let planned: Vec<String> = dry
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].clone())
        .map(|a| {
            format!(
                "{} {}",
                a["target"].as_str().unwrap(),
                a["step"]["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            "cluster snapshot",
            "rack-1 cordon",
            "rack-1 upgrade-k3s",
            "rack-1 await-kubelet",
            "rack-1 uncordon",
            "rack-2 cordon",
            "rack-2 upgrade-k3s",
            "rack-2 await-kubelet",
            "rack-2 uncordon",
            "rack-3 cordon",
            "rack-3 drain",
            "rack-3 upgrade-k3s",
            "rack-3 await-kubelet",
            "rack-3 uncordon",
        ]
    );
    assert_eq!(calls().await, untouched, "--dry-run restarts nothing");

    // Another live run holds rack-2's lock file: refused by name, nothing restarted, and the
    // locks taken meanwhile on the other nodes are gone again.
    let lock = bootstrap::ssh::host_lock::PATH;
    let locks = || async {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(lock_of(&pool, rack, i).await);
        }
        out
    };
    plant_foreign_lock(&pool, rack, 1).await;
    let refused = env.bootstrap(&["upgrade", "--timeout", "60"]);
    assert!(
        !refused.ok
            && refused.stderr.contains("rack-2")
            && refused.stderr.contains("op@ws2 pid 4242")
            && refused.stderr.contains("--force-unlock"),
        "{}",
        refused.stderr
    );
    assert_eq!(calls().await, untouched, "a locked node: nothing restarted");
    let held = locks().await;
    assert_eq!((held[0].trim(), held[2].trim()), ("none", "none"), "{held:?}");
    // Not refreshed for a minute: stale, so the next run replaces it.
    on_node(&pool, rack, 1, &format!("touch -d '1 minute ago' {lock}")).await;

    // Killed while rack-2 (the second server) gets its new binary (preflight passed, upload
    // under way): the resumed run takes rack-2 up again where it was, and no node restarts
    // twice (below).
    let killed_events = env.home.path().join("killed-run.json");
    let killed_stderr = env.home.path().join("killed-run.stderr");
    let mut child = env
        .command(&["upgrade", "--output", "json", "--timeout", "60"])
        .stdout(std::fs::File::create(&killed_events).unwrap())
        .stderr(std::fs::File::create(&killed_stderr).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let uploading = || {
        env.progress("upgrade", "rack-2") == Some(format!("{TO}: cordon"))
            && env.progress("nodes", "rack-2").as_deref() == Some("preflight ok")
    };
    while !uploading() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the upgrade ended before the kill:\n{}",
            std::fs::read_to_string(&killed_stderr).unwrap()
        );
        assert!(t.elapsed().as_secs() < 120, "rack-2 never reached its upload");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let during = locks().await;
    assert!(
        during.iter().all(|l| l.contains(" pid ") && !l.contains("op@ws2")),
        "the killed run's locks (a gone process of this host: the next run takes them over at once): {during:?}"
    );
    let run = env.bootstrap(&["upgrade", "--output", "json", "--timeout", "60"]);
    assert!(run.ok, "resumed upgrade:\n{}{}", run.stdout, run.stderr);
    assert!(locks().await.iter().all(|l| l.trim() == "none"), "released at the end");
    // Node by node: each finished before the next one's first step, in the killed run and
    // in the resumed one (which leaves rack-1, done before the kill, alone).
    let events =
        |text: &str| -> Vec<serde_json::Value> { text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect() };
    let at = |events: &[serde_json::Value], node: &str, event: &str| {
        events
            .iter()
            .position(|e| e["event"] == event && e["target"] == node && e["phase"] == "upgrade")
    };
    let killed = events(&std::fs::read_to_string(&killed_events).unwrap());
    assert!(
        at(&killed, "rack-1", "target_done").is_some(),
        "rack-1 finished before the kill"
    );
    assert!(
        at(&killed, "rack-1", "target_done") < at(&killed, "rack-2", "step"),
        "one server at a time"
    );
    assert_eq!(at(&killed, "rack-3", "step"), None, "the agent waits for the servers");
    let resumed = events(&run.stdout);
    assert_eq!(at(&resumed, "rack-1", "step"), None, "rack-1 is not touched again");
    assert!(
        at(&resumed, "rack-2", "target_done") < at(&resumed, "rack-3", "step"),
        "servers before agents"
    );
    assert!(at(&resumed, "rack-3", "target_done").is_some());
    let after = node_versions(&env).await;
    assert!(
        after.values().all(|(v, cordoned)| v == TO && !cordoned),
        "every Node at {TO} and schedulable: {after:?}"
    );
    let now = calls().await;
    for (i, (log, role)) in now.iter().zip(["server", "server", "agent"]).enumerate() {
        assert_eq!(
            log.matches(&format!("{role} start")).count(),
            untouched[i].matches(&format!("{role} start")).count() + 1,
            "rack-{} restarted once: {log}",
            i + 1
        );
        let record = on_node(&pool, rack, i, "cat /var/lib/bootstrap/k3s-install.state").await;
        assert!(record.starts_with(&format!("version={TO} ")), "{record}");
    }
    let again = env.bootstrap(&["upgrade", "--dry-run"]);
    assert!(
        again.ok && again.stdout.contains("nothing to do"),
        "{}{}",
        again.stdout,
        again.stderr
    );
    let plan = env.bootstrap(&["plan", "--artifacts", &crds]);
    assert!(
        plan.ok && plan.stdout.contains("rack: nothing to do"),
        "`up` has nothing to roll back:\n{}{}",
        plan.stdout,
        plan.stderr
    );
    assert!(
        env.records().iter().any(|r| r.reason == "upgrade"),
        "a snapshot came first"
    );

    // remove-node: every server, or a majority lost (rack-2 stopped), is refused ...
    let untouched = calls().await;
    let refused = env.bootstrap(&["remove-node", "rack-1", "rack-2", "--yes"]);
    assert!(
        !refused.ok && refused.stderr.contains("every control plane"),
        "{}",
        refused.stderr
    );
    on_node(&pool, rack, 1, "systemctl stop k3s").await;
    let refused = env.bootstrap(&["remove-node", "rack-1", "--yes"]);
    assert!(
        !refused.ok && refused.stderr.contains("0 healthy of 1 members, no majority"),
        "{}",
        refused.stderr
    );
    on_node(&pool, rack, 1, "systemctl start k3s").await;
    let not_ours = env.bootstrap(&["remove-node", "rack-9", "--yes"]);
    assert!(
        !not_ours.ok && not_ours.stderr.contains("`rack-9` is not a node"),
        "{}",
        not_ours.stderr
    );
    // ... and the agent goes: drained, uninstalled, its Node deleted; nothing else restarted.
    let untouched_servers: Vec<String> = calls().await[..2].to_vec();
    assert_eq!(untouched_servers[0], untouched[0]);
    let removed = env.bootstrap(&["remove-node", "rack-3", "--yes", "--timeout", "60"]);
    assert!(removed.ok, "remove-node:\n{}{}", removed.stdout, removed.stderr);
    let left = node_versions(&env).await;
    assert_eq!(left.keys().collect::<Vec<_>>(), ["rack-1", "rack-2"]);
    let gone = on_node(&pool, rack, 2, "ls /usr/local/bin/k3s /etc/rancher/k3s 2>&1; echo end").await;
    assert!(gone.matches("No such file").count() == 2, "{gone}");
    assert_eq!(
        calls().await[..2],
        untouched_servers[..],
        "the servers were not touched"
    );
}

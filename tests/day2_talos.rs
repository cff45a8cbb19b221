//! Day 2 on the simulated Talos rack (3 control planes + 3 workers), driven
//! through the `bootstrap` binary: `upgrade` node by node (a drain blocked by
//! a PodDisruptionBudget waits until the budget allows it; never more than
//! one control plane down; killed mid-way, even inside an Upgrade call, it
//! resumes without rebooting a node twice; Ctrl-C, a node that comes back
//! NotReady, a fallback to the old version or an etcd that stays unhealthy
//! stop it at that node), `remove-node` (quorum refusals; the success path
//! touches no other node), `snapshot` with retention, and bad input refused
//! before any node is touched. Addresses 127.90.x.0/24 (x: one block per test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bootstrap::inventory;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use xtask::kube_sim::Behaviour;
use xtask::sim_rack::{RackOptions, SimRack};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");
const TO: &str = "v1.14.0";

struct Rack {
    _dir: tempfile::TempDir,
    inv: PathBuf,
    /// The inventory as first written (before `set_kubernetes`).
    text: String,
    state: PathBuf,
    crds: PathBuf,
    rack: SimRack,
}

/// The bundled simulated inventory moved to 127.90.`block`.0/24, with a third worker.
async fn rack(block: u8) -> Rack {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
        .unwrap()
        .replace("127.1.0.", &format!("127.90.{block}."))
        + "\n[[cluster.node]]\nname = \"worker-3\"\nrole = \"worker\"\n"
        + &format!("ip = \"127.90.{block}.23\"\nmac = \"02:00:7f:5a:00:17\"\n");
    let inv = dir.path().join("rack.toml");
    std::fs::write(&inv, &text).unwrap();
    let crds = xtask::sim_rack::offline_crds(&dir.path().join("crds")).unwrap();
    let state = dir.path().join("state");
    let cluster = inventory::load(&inv).unwrap().inventory.clusters.remove(0);
    let options = RackOptions {
        reboot_delay: Duration::from_millis(300),
        ready_delay: Duration::from_millis(50),
        behaviour: Behaviour::uniform(Duration::from_millis(20)),
    };
    let rack = SimRack::start(&cluster, options).await.unwrap();
    let r = Rack {
        _dir: dir,
        inv,
        text,
        state,
        crds,
        rack,
    };
    let out = r.run(&["up", "--timeout", "120"]);
    assert!(out.status.success(), "up failed:\n{}", text_of(&out));
    r.rack.clear_logs();
    r
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Rack {
    /// Sets the inventory's `versions.kubernetes`.
    fn set_kubernetes(&self, version: &str) {
        let versions = format!("\n[cluster.versions]\nkubernetes = \"{version}\"\n");
        std::fs::write(&self.inv, format!("{}{versions}", self.text)).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        for var in [
            "SOPS_AGE_KEY",
            "SOPS_AGE_KEY_FILE",
            "SOPS_AGE_KEY_CMD",
            "XDG_CONFIG_HOME",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("-i")
            .arg(&self.inv)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args);
        if matches!(args.first(), Some(&"up" | &"plan")) {
            cmd.arg("--artifacts").arg(&self.crds);
        }
        cmd.env("HOME", &self.state).stdin(Stdio::null());
        cmd
    }

    /// `args` (a `--dry-run` or `plan`) prints "nothing to do".
    fn assert_nothing_to_do(&self, args: &[&str]) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("nothing to do"), "{}", text_of(&out));
    }

    fn run(&self, args: &[&str]) -> Output {
        tokio::task::block_in_place(|| self.command(args).output().unwrap())
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The progress `upgrade` recorded for `node` (`v1.14.0: cordon`, ...).
    fn progress(&self, phase: &str, node: &str) -> Option<String> {
        let state = bootstrap::state::StateStore::peek(&self.state, "sim").ok()??;
        state.phases.get(phase)?.steps.get(node).cloned()
    }

    async fn kube(&self) -> kube::Client {
        let path = self.state.join("sim/kubeconfig");
        bootstrap::k8s::Client::from_kubeconfig(&path)
            .await
            .unwrap()
            .kube()
            .clone()
    }

    /// Mutating Talos calls per node name.
    fn calls(&self, method: &str) -> Vec<(String, usize)> {
        self.rack
            .talos
            .nodes()
            .iter()
            .map(|n| (n.hostname(), n.calls().iter().filter(|c| c.method == method).count()))
            .collect()
    }

    /// Runs the upgrade again: it finishes, every node got exactly one Upgrade and runs [`TO`].
    async fn resume_and_check_each_upgraded_once(self) {
        let out = self.run(&["upgrade", "--talos", TO]);
        assert!(out.status.success(), "resumed upgrade failed:\n{}", text_of(&out));
        assert!(
            self.calls("Upgrade").iter().all(|(_, c)| *c == 1),
            "every node upgraded exactly once: {:?}",
            self.calls("Upgrade")
        );
        assert!(self.rack.talos.nodes().iter().all(|n| n.version() == TO));
        self.rack.stop().await;
    }

    fn names_with(&self, method: &str) -> Vec<String> {
        self.calls(method)
            .into_iter()
            .filter(|(_, c)| *c > 0)
            .map(|(n, _)| n)
            .collect()
    }
}

async fn until(what: &str, budget: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + budget;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn finished(child: Child) -> Output {
    tokio::task::block_in_place(|| child.wait_with_output().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_goes_node_by_node_and_a_blocked_drain_waits_for_its_budget() {
    let r = rack(1).await;
    let kube = r.kube().await;
    // Two replicas pinned to worker-2, and a budget that allows no disruption.
    let web: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": "worker-2"},
                    "containers": [{"name": "web", "image": "nginx:1.27"}]}}}
    }))
    .unwrap();
    Api::namespaced(kube.clone(), "default")
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(kube.clone(), "default");
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    // The plan, printed before anything happens: a snapshot, control planes, then workers.
    let dry = r.run(&["upgrade", "--talos", TO, "--dry-run", "--output", "json"]);
    assert!(dry.status.success(), "{}", text_of(&dry));
    let actions: Vec<serde_json::Value> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].clone())
        .collect();
    let upgrades: Vec<&str> = actions
        .iter()
        .filter(|a| a["step"]["kind"] == "upgrade-talos")
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(upgrades, ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2", "worker-3"]);
    assert_eq!(actions[0]["step"]["kind"], "snapshot");
    assert!(r.rack.talos_mutations().is_empty(), "--dry-run changes nothing");

    // Watch how many control planes are down at once while the upgrade runs.
    let (most_down, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let watcher = {
        let nodes: Vec<_> = r.rack.talos.nodes()[..3].to_vec();
        let (most_down, stop) = (most_down.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let down = nodes.iter().filter(|n| !n.is_up()).count();
                most_down.fetch_max(down, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let child = r.spawn(&["upgrade", "--talos", TO, "--batch", "1", "--drain-timeout", "120"]);
    until("worker-2 cordoned", Duration::from_secs(120), || {
        r.progress("upgrade", "worker-2").as_deref() == Some("v1.14.0: cordon")
    })
    .await;
    // The budget holds the drain: worker-2 is not upgraded while it refuses.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.progress("upgrade", "worker-2").as_deref(), Some("v1.14.0: cordon"));
    assert!(!r.names_with("Upgrade").contains(&"worker-2".to_owned()));
    let refused = r
        .rack
        .kube()
        .unwrap()
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/eviction") && q.status == 429)
        .count();
    assert!(refused > 0, "the evictions were refused with 429");
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"maxUnavailable": 2}})),
    )
    .await
    .unwrap();
    let out = finished(child);
    stop.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    assert!(out.status.success(), "upgrade failed:\n{}", text_of(&out));

    for n in r.rack.talos.nodes() {
        assert_eq!(n.version(), TO, "{}", n.hostname());
        assert_eq!(
            n.installer_image().as_deref(),
            Some("ghcr.io/siderolabs/installer:v1.14.0")
        );
    }
    assert!(
        r.calls("Upgrade").iter().all(|(_, c)| *c == 1),
        "{:?}",
        r.calls("Upgrade")
    );
    assert_eq!(
        most_down.load(Ordering::SeqCst),
        1,
        "never more than one control plane down"
    );
    // Control planes first, each before the next; then workers.
    let first_call = |name: &str| {
        r.rack
            .talos
            .nodes()
            .iter()
            .find(|n| n.hostname() == name)
            .unwrap()
            .calls()
            .iter()
            .find(|c| c.method == "Upgrade")
            .unwrap()
            .at
    };
    let order = ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2", "worker-3"];
    assert!(order.windows(2).all(|w| first_call(w[0]) < first_call(w[1])));
    let nodes: Api<Node> = Api::all(kube.clone());
    for n in nodes.list(&Default::default()).await.unwrap() {
        let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        assert!(!unschedulable, "{:?} uncordoned", n.metadata.name);
    }
    let state = bootstrap::state::StateStore::peek(&r.state, "sim").unwrap().unwrap();
    assert_eq!(state.snapshots.len(), 1, "a snapshot before the control planes");
    assert_eq!(state.snapshots[0].reason, "upgrade");

    // Converged: the same upgrade has nothing left to do.
    r.assert_nothing_to_do(&["upgrade", "--talos", TO, "--dry-run"]);
    r.rack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_upgrade_resumes_and_never_upgrades_a_node_twice() {
    let r = rack(2).await;
    // Killed right after cp-2's Upgrade was sent (it reboots meanwhile), then
    // once worker-1 is cordoned (or, when its drain was quicker than a look,
    // sent its Upgrade). Not right after a drain: the Upgrade call follows it
    // at once, and a kill inside that call is the one window where a resumed
    // run cannot tell whether the node received it.
    let cp2: &[&str] = &["v1.14.0: upgrade-talos"];
    let worker1: &[&str] = &["v1.14.0: cordon", "v1.14.0: upgrade-talos"];
    for (node, at) in [("cp-2", cp2), ("worker-1", worker1)] {
        let mut child = r.spawn(&["upgrade", "--talos", TO]);
        let mut exited = None;
        until(&format!("{node} at one of {at:?}"), Duration::from_secs(120), || {
            exited = child.try_wait().unwrap();
            exited.is_some() || r.progress("upgrade", node).is_some_and(|p| at.contains(&p.as_str()))
        })
        .await;
        let _ = child.kill();
        let out = finished(child);
        assert!(exited.is_none(), "the run ended before the kill:\n{}", text_of(&out));
    }
    r.resume_and_check_each_upgraded_once().await;
}

/// Killed inside cp-2's Upgrade call (Talos took it and started its upgrade
/// sequence; its answer was slow), the resumed run finds cp-2's last record
/// is the drain before it, reads its MachineStatus (stage Upgrading) and
/// awaits it instead of sending a second Upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_inside_the_upgrade_call_it_resumes_without_a_second_upgrade() {
    let r = rack(8).await;
    r.rack.talos.nodes()[1].update_faults(|f| {
        f.upgrade_install = Some(Duration::from_secs(3));
        f.upgrade_reply_delay = Some(Duration::from_secs(2));
    });
    let mut child = r.spawn(&["upgrade", "--talos", TO]);
    until("cp-2 to take its Upgrade", Duration::from_secs(120), || {
        r.calls("Upgrade").iter().any(|(n, c)| n == "cp-2" && *c > 0)
    })
    .await;
    let _ = child.kill();
    let out = finished(child);
    assert_eq!(
        r.progress("upgrade", "cp-2").as_deref(),
        Some("v1.14.0: drain"),
        "killed before the Upgrade was recorded:\n{}",
        text_of(&out)
    );
    r.resume_and_check_each_upgraded_once().await;
}

/// A node is awaited until its Node is Ready again: while its machine
/// reboots the Node reports Ready Unknown (its kubelet stopped posting), and
/// one that comes back with its Node never Ready stops the run there, named,
/// still cordoned; once Ready, the resumed run finishes it without a second
/// Upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_comes_back_not_ready_stops_the_upgrade_until_it_is_ready() {
    let r = rack(9).await;
    let worker1 = &r.rack.talos.nodes()[3];
    assert_eq!(worker1.hostname(), "worker-1");
    worker1.update_faults(|f| f.reboot_delay = Some(Duration::from_secs(2)));
    let nodes: Api<Node> = Api::all(r.kube().await);
    let child = r.spawn(&["upgrade", "--talos", TO, "--timeout", "8"]);
    until("worker-1 to take its Upgrade", Duration::from_secs(120), || {
        r.calls("Upgrade").iter().any(|(n, c)| n == "worker-1" && *c > 0)
    })
    .await;
    // Its kubelet stops posting while the machine is down; then it never becomes Ready.
    let mut unknown = false;
    for _ in 0..100 {
        let n = nodes.get("worker-1").await.unwrap();
        let ready = n.status.and_then(|s| s.conditions).unwrap_or_default();
        if ready.iter().any(|c| c.type_ == "Ready" && c.status == "Unknown") {
            unknown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        unknown,
        "worker-1's Node reports Ready Unknown while its machine reboots"
    );
    let hold = serde_json::json!({"metadata": {"annotations": {xtask::kube_sim::HOLD_ANNOTATION: "true"}}});
    nodes
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    let out = finished(child);
    assert!(!out.status.success(), "{}", text_of(&out));
    let text = text_of(&out);
    assert!(
        text.contains("Node worker-1 Ready") && text.contains("NotReady"),
        "{text}"
    );
    assert!(
        r.calls("Upgrade")
            .iter()
            .all(|(n, c)| (n == "worker-2" || n == "worker-3") == (*c == 0)),
        "the run stopped at worker-1: {:?}",
        r.calls("Upgrade")
    );
    let cordoned = nodes.get("worker-1").await.unwrap().spec.and_then(|s| s.unschedulable);
    assert_eq!(cordoned, Some(true), "a node that is not Ready stays cordoned");
    let release = serde_json::json!({"metadata": {"annotations": {xtask::kube_sim::HOLD_ANNOTATION: null}}});
    nodes
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    r.resume_and_check_each_upgraded_once().await;
}

/// Ctrl-C while cp-1 upgrades lets cp-1 finish and stops before cp-2 (exit
/// 130); then a control plane whose etcd stays unhealthy after its reboot
/// stops the run there, named; each time the next run resumes without a
/// second Upgrade anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_or_unhealthy_etcd_stops_the_upgrade_after_the_node_in_flight() {
    let r = rack(10).await;
    let talos = r.rack.talos.nodes();
    talos[0].update_faults(|f| f.reboot_delay = Some(Duration::from_secs(1)));
    let child = r.spawn(&["upgrade", "--talos", TO]);
    until("cp-1 to take its Upgrade", Duration::from_secs(120), || {
        r.calls("Upgrade").iter().any(|(n, c)| n == "cp-1" && *c > 0)
    })
    .await;
    let sigint = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sigint.success());
    let out = finished(child);
    assert_eq!(out.status.code(), Some(130), "{}", text_of(&out));
    assert!(
        text_of(&out).contains("interrupted after the nodes in flight finished"),
        "{}",
        text_of(&out)
    );
    assert_eq!(
        r.progress("upgrade", "cp-1").as_deref(),
        Some("v1.14.0: uncordon"),
        "cp-1 finished"
    );
    assert_eq!(r.names_with("Upgrade"), ["cp-1"], "nothing after cp-1 was started");
    assert_eq!(talos[0].version(), TO);

    // cp-2's etcd does not come back healthy: the run waits for it, then stops naming it.
    talos[1].update_faults(|f| f.etcd_unhealthy_after_reboot = true);
    let out = r.run(&["upgrade", "--talos", TO, "--timeout", "5"]);
    assert!(!out.status.success());
    let text = text_of(&out);
    assert!(
        text.contains("etcd healthy with all 3 members after cp-2's upgrade") && text.contains("not healthy"),
        "{text}"
    );
    assert_eq!(r.names_with("Upgrade"), ["cp-1", "cp-2"], "the run stopped at cp-2");
    talos[1].set_etcd_unhealthy(false);
    r.resume_and_check_each_upgraded_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_falls_back_to_the_old_version_stops_the_upgrade_naming_it() {
    let r = rack(3).await;
    r.rack.talos.nodes()[1].update_faults(|f| f.upgrade_keeps_old_version = true);
    let out = r.run(&["upgrade", "--talos", TO, "--timeout", "60"]);
    assert!(!out.status.success());
    let text = text_of(&out);
    assert!(text.contains("cp-2 rebooted but runs v1.13.9, not v1.14.0"), "{text}");
    assert_eq!(r.names_with("Upgrade"), ["cp-1", "cp-2"], "the run stopped at cp-2");
    r.rack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_node_keeps_quorum_and_touches_no_other_node() {
    let r = rack(4).await;
    // Every control plane: refused.
    let out = r.run(&["--yes", "remove-node", "cp-1", "cp-2", "cp-3"]);
    assert!(!out.status.success());
    assert!(text_of(&out).contains("every control plane"), "{}", text_of(&out));
    // cp-2's etcd is unhealthy: removing cp-1 would leave 1 healthy of 2.
    r.rack.talos.nodes()[1].set_etcd_unhealthy(true);
    let out = r.run(&["--yes", "remove-node", "cp-1"]);
    assert!(!out.status.success());
    assert!(text_of(&out).contains("1 healthy of 2 members"), "{}", text_of(&out));
    assert!(r.rack.talos_mutations().is_empty(), "refusals change nothing");
    r.rack.talos.nodes()[1].set_etcd_unhealthy(false);
    // Without --yes and without a terminal: refused.
    let out = r.run(&["remove-node", "cp-3"]);
    assert!(!out.status.success());
    assert!(text_of(&out).contains("pass --yes"), "{}", text_of(&out));

    let out = r.run(&["--yes", "remove-node", "cp-3", "--drain-timeout", "60"]);
    assert!(out.status.success(), "remove-node failed:\n{}", text_of(&out));
    let mutations: Vec<(String, &str)> = r
        .rack
        .talos
        .nodes()
        .iter()
        .flat_map(|n| {
            n.calls()
                .into_iter()
                .filter(|c| c.mutating)
                .map(|c| (n.hostname(), c.method))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        mutations,
        [
            ("cp-1".to_owned(), "EtcdRemoveMemberByID"),
            ("cp-3".to_owned(), "Reset")
        ],
        "only the etcd membership change and the node's own wipe"
    );
    let sim = r.rack.talos.nodes();
    let cluster = sim[0].cluster().unwrap();
    let member = |i: usize| cluster.lock().unwrap().is_member(sim[i].name());
    assert!(member(0) && member(1));
    assert!(!member(2), "cp-3 left etcd");
    let nodes: Api<Node> = Api::all(r.kube().await);
    assert!(
        nodes.get_opt("cp-3").await.unwrap().is_none(),
        "its Node object is gone"
    );
    // Removed already: nothing to do.
    r.assert_nothing_to_do(&["remove-node", "cp-3", "--dry-run"]);
    r.rack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_are_recorded_with_their_hash_and_pruned_to_keep() {
    let r = rack(5).await;
    let mut printed = Vec::new();
    for _ in 0..3 {
        let out = r.run(&["snapshot", "--keep", "2", "--output", "json"]);
        assert!(out.status.success(), "{}", text_of(&out));
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        printed.push(line["snapshot"].clone());
    }
    let state = bootstrap::state::StateStore::peek(&r.state, "sim").unwrap().unwrap();
    let kept: Vec<&Path> = state.snapshots.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(kept.len(), 2);
    assert!(
        !Path::new(printed[0]["path"].as_str().unwrap()).exists(),
        "the oldest is pruned"
    );
    for s in &state.snapshots {
        let bytes = std::fs::read(&s.path).unwrap();
        assert_eq!(s.size, bytes.len() as u64);
        assert_eq!(s.sha256, bootstrap::artifacts::sha256_file(&s.path).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&s.path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let out_file = r.state.join("elsewhere.snapshot");
    let out = r.run(&["snapshot", "--out", out_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(out_file.exists());
    r.rack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_day2_input_is_refused_before_any_node_is_touched() {
    let r = rack(6).await;
    for (args, expected) in [
        (vec!["upgrade", "--batch", "0"], "--batch `0`: must be at least 1"),
        (vec!["upgrade", "--talos", "1.14"], "--talos `1.14`: not a version"),
        (
            vec!["upgrade", "--talos", "v1.15.0"],
            "upgrade one minor release at a time",
        ),
        (vec!["upgrade", "--talos", "v1.12.0"], "downgrades are not supported"),
        (
            vec!["upgrade", "--kubernetes", "v1.35.0"],
            "the inventory says versions.kubernetes = \"v1.34.2\"",
        ),
        (
            vec!["upgrade", "--k3s", "v1.35.0+k3s1"],
            "--k3s: cluster sim is a Talos cluster",
        ),
        (
            vec!["--yes", "remove-node", "nope"],
            "`nope` is not a node of cluster sim",
        ),
    ] {
        let out = r.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text_of(&out).contains(expected), "{args:?}:\n{}", text_of(&out));
    }
    assert!(r.rack.talos_mutations().is_empty(), "{:?}", r.rack.talos_mutations());
    r.rack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_moves_control_planes_first_without_reboots_and_one_minor_at_a_time() {
    let r = rack(7).await;
    r.set_kubernetes("v1.36.0");
    let out = r.run(&["upgrade"]);
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("upgrade one minor release at a time (v1.35.x first)"),
        "{}",
        text_of(&out)
    );
    assert!(r.rack.talos_mutations().is_empty(), "{:?}", r.rack.talos_mutations());

    r.set_kubernetes("v1.35.0");
    let dry = r.run(&["upgrade", "--dry-run"]);
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(plan.contains("upgrade-kubernetes:"), "{plan}");
    assert!(
        !plan.contains("upgrade Talos"),
        "the OS is at the inventory's version: {plan}"
    );
    let out = r.run(&["upgrade", "--batch", "2"]);
    assert!(out.status.success(), "upgrade failed:\n{}", text_of(&out));

    let kube = r.kube().await;
    let nodes: Api<Node> = Api::all(kube.clone());
    for n in nodes.list(&Default::default()).await.unwrap() {
        let info = n.status.and_then(|s| s.node_info).unwrap();
        assert_eq!(info.kubelet_version, "v1.35.0", "{:?}", n.metadata.name);
    }
    let version = kube.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.35.0");
    assert!(
        r.names_with("Upgrade").is_empty() && r.names_with("Reboot").is_empty(),
        "no reboot"
    );
    assert!(
        r.calls("ApplyConfiguration").iter().all(|(_, c)| *c == 1),
        "{:?}",
        r.calls("ApplyConfiguration")
    );
    assert!(r.rack.talos.nodes().iter().all(|n| n.is_up()));
    let applied = |name: &str| {
        let node = r.rack.talos.nodes().iter().find(|n| n.hostname() == name).unwrap();
        node.calls()
            .iter()
            .find(|c| c.method == "ApplyConfiguration")
            .unwrap()
            .at
    };
    let order = ["cp-1", "cp-2", "cp-3", "worker-1"];
    assert!(
        order.windows(2).all(|w| applied(w[0]) < applied(w[1])),
        "control planes one at a time, then workers"
    );
    // `up` renders what `upgrade` applied: nothing to do.
    r.assert_nothing_to_do(&["plan"]);
    r.rack.stop().await;
}

//! End-to-end `bootstrap up` against the simulated Talos rack: real gRPC/mTLS
//! to every node, the Kubernetes API over HTTPS once etcd is bootstrapped.
//! The `bootstrap` binary is run as the operator would run it; each test gets
//! its own 127.B.0.0/24 block so the racks never collide.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bootstrap::inventory::{self, Cluster};
use xtask::kube_sim::Behaviour;
use xtask::sim_rack::{RackOptions, SimRack};

mod sops_support;

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

/// `inventory/simulated.toml` moved to 127.`block`.0.0/24, plus `extra` TOML.
fn inventory(dir: &Path, block: u8, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
        .unwrap()
        .replace("127.1.0.", &format!("127.{block}.0."));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("rack.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

/// The pinned CRDs of phase 1, offline (tests never download).
fn crds() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        xtask::sim_rack::offline_crds(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("up-talos-crds")).unwrap()
    })
    .clone()
}

/// `args` plus `--artifacts` for the commands that run phases.
fn with_artifacts(args: &[&str]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    if args.iter().any(|a| matches!(*a, "up" | "plan" | "add-node" | "reset")) {
        v.push("--artifacts".into());
        v.push(crds().into());
    }
    v
}

fn cluster(path: &Path) -> Cluster {
    inventory::load(path).unwrap().inventory.clusters.remove(0)
}

fn fast() -> RackOptions {
    let d = Duration::from_millis(30);
    RackOptions {
        reboot_delay: Duration::from_millis(150),
        ready_delay: Duration::from_millis(50),
        behaviour: Behaviour::uniform(d),
    }
}

/// Runs `bootstrap <args>` with the inventory and state dir; (success, stdout, stderr).
fn bootstrap(inv: &Path, state: &Path, args: &[&str]) -> (bool, String, String) {
    bootstrap_env(inv, state, args, &[])
}

/// [`bootstrap`] with extra environment variables; the SOPS identity
/// variables of the calling environment are never passed on.
fn bootstrap_env(inv: &Path, state: &Path, args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    run_bootstrap(inv, state, args, env, None)
}

/// [`bootstrap`] with `stdin` written to the process.
fn bootstrap_stdin(inv: &Path, state: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    run_bootstrap(inv, state, args, &[], Some(stdin))
}

fn run_bootstrap(
    inv: &Path,
    state: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    for var in [
        "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_KEY_CMD",
        "XDG_CONFIG_HOME",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .arg("-i")
        .arg(inv)
        .arg("--state-dir")
        .arg(state)
        .args(with_artifacts(args))
        .env("HOME", state)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bootstrap_calls(rack: &SimRack) -> usize {
    rack.talos_mutations().iter().filter(|(_, m)| *m == "Bootstrap").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_reaches_gitops_and_a_second_up_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 61, "");
    let state = dir.path().join("state");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();

    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "first up failed:\n{err}");
    assert_eq!(bootstrap_calls(&rack), 1, "etcd bootstrapped exactly once");
    let kube = rack.kube().expect("the API came up after etcd bootstrap");
    for node in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        assert!(kube.object("", "nodes", "", node).is_some(), "node {node} registered");
    }
    let root = kube.object(
        "kustomize.toolkit.fluxcd.io",
        "kustomizations",
        "flux-system",
        "flux-system",
    );
    assert!(
        root.is_some_and(|r| r["spec"].get("decryption").is_none()),
        "no sops_age_key: the root Kustomization does not decrypt"
    );
    assert!(kube.object("", "secrets", "flux-system", "sops-age").is_none());
    let kubeconfig = std::fs::read_to_string(state.join("sim/kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("https://127.61.0.10:6443"),
        "the kubeconfig points at the endpoint"
    );
    assert!(state.join("sim/talosconfig").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("sim/kubeconfig"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "kubeconfig holds a client key: 0600");

    rack.clear_logs();
    let (ok, plan, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["plan"]));
    assert!(ok, "plan failed:\n{err}");
    assert!(plan.contains("nothing to do"), "converged cluster, plan:\n{plan}");
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up"]));
    assert!(ok, "second up failed:\n{err}");
    assert_eq!(
        rack.talos_mutations(),
        vec![],
        "the second up made no mutating Talos call"
    );
    let k8s_writes: Vec<String> = kube
        .requests()
        .iter()
        .filter(|r| r.mutating)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        k8s_writes,
        Vec::<String>::new(),
        "the second up made no mutating Kubernetes call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_cluster_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 62, "");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    // worker-2 was set up earlier by another cluster (another state dir: other secrets).
    let other = dir.path().join("other");
    let (ok, _, err) =
        tokio::task::block_in_place(|| bootstrap(&inv, &other, &["up", "--limit", "cp-1,worker-2", "--timeout", "30"]));
    // That run may stop at a later phase; what matters is that worker-2 now
    // answers with the other cluster's certificate.
    let _ = (ok, err);
    rack.clear_logs();

    let state = dir.path().join("state");
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "30"]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("worker-2") && err.contains("another cluster"),
        "the error names the node:\n{err}"
    );
    assert_eq!(rack.talos_mutations(), vec![], "nothing was changed on any node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_node_fails_the_run_by_name_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // worker-3 has an address where nothing answers.
    let extra =
        "[[cluster.node]]\nname = \"worker-3\"\nrole = \"worker\"\nip = \"127.63.0.99\"\nmac = \"02:00:7f:3f:00:63\"\n";
    let inv = inventory(dir.path(), 63, "");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    std::fs::write(&inv, std::fs::read_to_string(&inv).unwrap() + extra).unwrap();
    let state = dir.path().join("state");
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "3"]));
    assert!(!ok, "up must fail");
    assert!(
        err.contains("worker-3") && err.contains("unreachable"),
        "the error names the node:\n{err}"
    );
    let (_, status, _) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["status"]));
    for node in ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"] {
        assert!(
            status.contains(&format!("{node}: ready")),
            "{node}'s progress is kept:\n{status}"
        );
    }
    assert_eq!(
        bootstrap_calls(&rack),
        1,
        "etcd was bootstrapped once the first control plane was ready; a missing worker does not hold it back"
    );
}

/// Runs `up --output json` and SIGKILLs it after its `kill_after`-th progress
/// event (`None`: let it finish). Returns the number of events seen.
fn up_killed_after(inv: &Path, state: &Path, kill_after: Option<usize>) -> usize {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .arg("-i")
        .arg(inv)
        .arg("--state-dir")
        .arg(state)
        .args(with_artifacts(&["up", "--output", "json", "--timeout", "60"]))
        .env("HOME", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut events = 0;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().starts_with('{') {
            events += 1;
        }
        if Some(events) == kill_after {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_ten_points_up_resumes_and_never_bootstraps_twice() {
    let dir = tempfile::tempdir().unwrap();
    // A reference run tells how many progress events a whole `up` emits.
    let reference = {
        let inv = inventory(&dir.path().join("ref"), 70, "");
        let _rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
        let state = dir.path().join("ref/state");
        tokio::task::block_in_place(|| up_killed_after(&inv, &state, None))
    };
    assert!(reference >= 20, "a whole run emits events across phases ({reference})");
    // Ten kill points spread over the whole run, each on its own fresh rack.
    let mut runs = Vec::new();
    for i in 0..10u8 {
        let point = 1 + usize::from(i) * (reference - 2) / 9;
        let base = dir.path().join(format!("kill-{i}"));
        let inv = inventory(&base, 71 + i, "");
        let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
        runs.push(tokio::task::spawn_blocking(move || {
            let state = base.join("state");
            up_killed_after(&inv, &state, Some(point));
            let (ok, _, err) = bootstrap(&inv, &state, &["up", "--timeout", "60"]);
            (point, rack, ok, err)
        }));
    }
    for run in runs {
        let (point, rack, ok, err) = run.await.unwrap();
        assert!(ok, "killed after event {point}, the next up failed:\n{err}");
        assert_eq!(
            bootstrap_calls(&rack),
            1,
            "killed after event {point}: etcd bootstrapped exactly once"
        );
        let kube = rack.kube().expect("API up");
        assert!(
            kube.object("", "nodes", "", "worker-2").is_some(),
            "killed after event {point}: converged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_finishes_in_flight_steps_records_state_and_exits_130() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 64, "");
    let _rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    let state = dir.path().join("state");
    let code = tokio::task::block_in_place(|| {
        let mut child = Command::new(BIN)
            .arg("-i")
            .arg(&inv)
            .arg("--state-dir")
            .arg(&state)
            .args(with_artifacts(&["up", "--output", "json", "--concurrency", "1"]))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // Interrupt as soon as the first node starts applying its config.
        for line in lines.by_ref() {
            if line.unwrap().contains("applying config") {
                break;
            }
        }
        Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        for _ in lines {}
        child.wait().unwrap().code()
    });
    assert_eq!(code, Some(130), "an interrupted run exits 130");
    let (_, status, _) = bootstrap(&inv, &state, &["status"]);
    let ready = ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]
        .iter()
        .filter(|n| status.contains(&format!("{n}: ready")))
        .count();
    assert_eq!(ready, 1, "the in-flight node finished, no other started:\n{status}");
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "the next up resumes:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_snapshots_confirms_wipes_and_rebuilds_with_etcd_restored() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 65, "");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    let state = dir.path().join("state");
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "up failed:\n{err}");
    rack.clear_logs();

    // Without confirmation (no terminal, no --yes) nothing is wiped.
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["reset", "--timeout", "60"]));
    assert!(!ok && err.contains("--yes"), "reset asks for confirmation:\n{err}");
    assert!(
        !rack.talos_mutations().iter().any(|(_, m)| *m == "Reset"),
        "nothing wiped without confirmation"
    );

    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["--yes", "reset", "--timeout", "60"]));
    assert!(ok, "reset failed:\n{err}");
    let snapshots: Vec<_> = std::fs::read_dir(state.join("sim/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(snapshots.len(), 2, "one snapshot per reset attempt: {snapshots:?}");
    assert!(snapshots.iter().all(|p| std::fs::metadata(p).unwrap().len() > 0));
    let calls = rack.talos_mutations();
    let count = |m: &str| calls.iter().filter(|(_, c)| *c == m).count();
    assert_eq!(count("Reset"), 5, "every node wiped once: {calls:?}");
    assert_eq!(count("EtcdRecover"), 1, "etcd restored from the snapshot: {calls:?}");
    assert_eq!(
        count("Bootstrap"),
        1,
        "etcd bootstrapped once after the wipe: {calls:?}"
    );
    let (ok, plan, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["plan"]));
    assert!(
        ok && plan.contains("nothing to do"),
        "rebuilt and converged:\n{plan}{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_node_joins_a_new_worker_and_touches_no_other_node() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 66, "");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    let full = std::fs::read_to_string(&inv).unwrap();
    // The cluster starts without worker-2 (the last node of the inventory).
    let without = &full[..full.rfind("[[cluster.node]]").unwrap()];
    std::fs::write(&inv, without).unwrap();
    let state = dir.path().join("state");

    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["add-node", "worker-1"]));
    assert!(
        !ok && err.contains("bootstrap up"),
        "add-node needs a running cluster:\n{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "up failed:\n{err}");
    let kube = rack.kube().expect("API up");
    assert!(kube.object("", "nodes", "", "worker-2").is_none());

    std::fs::write(&inv, &full).unwrap();
    rack.clear_logs();
    let (ok, _, err) =
        tokio::task::block_in_place(|| bootstrap(&inv, &state, &["add-node", "worker-2", "--timeout", "60"]));
    assert!(ok, "add-node failed:\n{err}");
    assert!(
        kube.object("", "nodes", "", "worker-2").is_some(),
        "worker-2 registered"
    );
    let worker2: std::net::SocketAddr = "127.66.0.22:50000".parse().unwrap();
    let calls = rack.talos_mutations();
    assert!(
        calls.iter().all(|(addr, _)| *addr == worker2),
        "only worker-2 was changed: {calls:?}"
    );
    assert!(calls.iter().any(|(_, m)| *m == "ApplyConfiguration"), "{calls:?}");
    assert_eq!(bootstrap_calls(&rack), 0, "no second etcd bootstrap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_inventory_is_reapplied_to_the_changed_nodes_only() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 67, "");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    let state = dir.path().join("state");
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "up failed:\n{err}");

    let text = std::fs::read_to_string(&inv).unwrap();
    let relabelled = ["cp-2", "worker-1"].iter().fold(text, |t, n| {
        t.replace(
            &format!("name = \"{n}\"\n"),
            &format!("name = \"{n}\"\nlabels = {{ tier = \"gold\" }}\n"),
        )
    });
    std::fs::write(&inv, relabelled).unwrap();
    rack.clear_logs();
    let (ok, plan, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["plan"]));
    assert!(ok, "plan failed:\n{err}");
    let reapply: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("re-apply machine config"))
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    assert_eq!(reapply, ["cp-2", "worker-1"], "plan:\n{plan}");
    assert_eq!(rack.talos_mutations(), vec![], "plan changes nothing");

    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "up after relabelling failed:\n{err}");
    let mut changed: Vec<u8> = rack
        .talos_mutations()
        .iter()
        .map(|(addr, m)| {
            assert_eq!(*m, "ApplyConfiguration");
            match addr.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                std::net::IpAddr::V6(_) => unreachable!(),
            }
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [12, 21],
        "only cp-2 (.12) and worker-1 (.21) got their new config"
    );
    let (ok, plan, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["plan"]));
    assert!(ok && plan.contains("nothing to do"), "converged again:\n{plan}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_decrypts_sops_references_and_without_an_identity_touches_no_node() {
    if !sops_support::age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(
        dir.path(),
        90,
        "\n[cluster.secrets]\nsops_age_key = \"sops:secrets.sops.yaml#flux.age_key\"\n",
    );
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        "path = \"./clusters/sim\"\n",
        "path = \"./clusters/sim\"\ndeploy_key = \"sops:secrets.sops.yaml#git.deploy_key\"\n",
    );
    std::fs::write(&inv, text).unwrap();
    // The operator's identity opens the file; the file holds the key Flux gets.
    let operator = sops_support::keygen(dir.path(), "operator-age.txt");
    let flux = sops_support::keygen(dir.path(), "flux-age.txt");
    // A real deploy key (phase 0 derives `identity.pub` from it), made by OpenSSH's ssh-keygen.
    let key_path = dir.path().join("deploy-key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&key_path)
        .status()
        .expect("ssh-keygen (openssh-client) runs");
    assert!(made.success(), "ssh-keygen failed");
    let deploy_key = std::fs::read_to_string(&key_path).unwrap();
    let deploy_key = deploy_key.trim_end();
    let doc = serde_json::json!({"flux": {"age_key": flux.secret()}, "git": {"deploy_key": deploy_key}});
    let sealed = sops_support::Writer::new(&[&operator]).yaml(&doc.to_string());
    std::fs::write(dir.path().join("secrets.sops.yaml"), sealed).unwrap();
    let state = dir.path().join("state");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();

    let (ok, out, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(!ok, "up without an identity must fail:\n{out}{err}");
    assert!(
        err.contains("secrets.sops.yaml") && err.contains(&operator.recipient),
        "names the file and its recipients:\n{err}"
    );
    let shown = format!("{out}{err}");
    assert!(!shown.contains(&flux.secret()) && !shown.contains("simulated-sops-deploy-key"));
    assert_eq!(rack.talos_mutations(), vec![], "nothing changed on any node");

    let env = [("SOPS_AGE_KEY_FILE", operator.file.as_path())];
    let (ok, out, err) = tokio::task::block_in_place(|| bootstrap_env(&inv, &state, &["up", "--timeout", "60"], &env));
    assert!(ok, "up with the identity failed:\n{err}");
    assert!(
        !format!("{out}{err}").contains(&flux.secret()),
        "no secret in the output"
    );
    let kube = rack.kube().expect("the API came up");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let age = kube
        .object("", "secrets", "flux-system", "sops-age")
        .expect("sops-age Secret");
    assert_eq!(age["data"]["age.agekey"], b64(&flux.secret()));
    let repo_key = kube
        .object("", "secrets", "flux-system", "flux-system")
        .expect("deploy-key Secret");
    assert_eq!(repo_key["data"]["identity"], b64(deploy_key));
    let root = kube
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "flux-system",
        )
        .expect("root Kustomization");
    assert_eq!(
        root["spec"]["decryption"],
        serde_json::json!({"provider": "sops", "secretRef": {"name": "sops-age"}})
    );
}

/// `(phase, target, step)` of every action, from `plan --output json` lines
/// (`{"cluster", "action"}`) or from `up --output json` phase-start events.
fn steps_of(stdout: &str, from_up: bool) -> Vec<(String, String, serde_json::Value)> {
    let key = |a: &serde_json::Value| {
        (
            a["phase"].as_str().unwrap_or_default().to_owned(),
            a["target"].as_str().unwrap_or_default().to_owned(),
            a["step"].clone(),
        )
    };
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| match from_up {
            false => v.get("action").map(|a| vec![key(a)]).unwrap_or_default(),
            true if v["event"] == "phase_started" => v["plan"].as_array().unwrap().iter().map(key).collect(),
            true => vec![],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_lists_step_for_step_what_up_then_executes_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 68, "");
    let state = dir.path().join("state");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();

    let (ok, planned, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["--output", "json", "plan"]));
    assert!(ok, "plan failed:\n{err}");
    assert!(!state.exists(), "plan created the state dir (lock, secrets, cache)");
    assert_eq!(rack.talos_mutations(), vec![], "plan changes nothing");
    let planned = steps_of(&planned, false);
    let kinds: Vec<&str> = planned.iter().map(|(_, _, s)| s["kind"].as_str().unwrap()).collect();
    for kind in [
        "generate-secrets",
        "apply-config",
        "bootstrap-etcd",
        "store-credentials",
        "apply-object",
    ] {
        assert!(kinds.contains(&kind), "no {kind} step in the plan: {kinds:?}");
    }

    let (ok, events, err) =
        tokio::task::block_in_place(|| bootstrap(&inv, &state, &["--output", "json", "up", "--timeout", "60"]));
    assert!(ok, "up failed:\n{err}");
    assert_eq!(
        steps_of(&events, true),
        planned,
        "up executed another plan than the one printed"
    );
    let (ok, after, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["--output", "json", "plan"]));
    assert!(ok, "plan after up failed:\n{err}");
    assert_eq!(steps_of(&after, false), vec![], "after up, the plan is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_locked_from_another_workstation_is_refused_until_the_lock_is_taken_over() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 69, "");
    let state = dir.path().join("state");
    let rack = SimRack::start(&cluster(&inv), fast()).await.unwrap();
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(ok, "first up failed:\n{err}");
    let kube = rack.kube().unwrap();
    assert!(
        kube.object("coordination.k8s.io", "leases", "kube-system", "bootstrap")
            .is_none(),
        "the lock is released at the end of a run"
    );

    // Another operator's run, elsewhere, holds the cluster (as client-go leader election would write it).
    let client = bootstrap::k8s::Client::from_kubeconfig_yaml(kube.admin_kubeconfig(), "test")
        .await
        .unwrap();
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.kube().clone(), "kube-system");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let theirs = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("bootstrap".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("ana@ws1 pid 7".into()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(300),
            ..Default::default()
        }),
    };
    leases.create(&Default::default(), &theirs).await.unwrap();
    // Something for the next run to do (a run with nothing to do takes no lock).
    let settings: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.kube().clone(), "flux-system");
    settings.delete("cluster-settings", &Default::default()).await.unwrap();
    rack.clear_logs();
    kube.clear_requests();
    let (ok, _, err) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &["up", "--timeout", "60"]));
    assert!(!ok && err.contains("locked by ana@ws1 pid 7"), "{err}");
    assert_eq!(rack.talos_mutations(), vec![], "a locked cluster: no node touched");
    let writes: Vec<String> = kube
        .requests()
        .iter()
        .filter(|r| r.mutating)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "a locked cluster: nothing written");

    let (ok, _, err) =
        tokio::task::block_in_place(|| bootstrap_stdin(&inv, &state, &["up", "--force-unlock"], "other\n"));
    assert!(!ok && err.contains("not taken over"), "{err}");
    let (ok, _, err) = tokio::task::block_in_place(|| {
        bootstrap_stdin(&inv, &state, &["up", "--force-unlock", "--timeout", "60"], "sim\n")
    });
    assert!(ok, "taken over with the cluster name typed:\n{err}");
    assert!(
        kube.object("coordination.k8s.io", "leases", "kube-system", "bootstrap")
            .is_none(),
        "released again"
    );
}

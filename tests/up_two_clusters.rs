//! Seed 003's rack: two Talos clusters (`infra`, `apps`) in one inventory
//! (`inventory/simulated-two.toml`), each on its own simulated rack. One `up`
//! converges both; a cluster that fails leaves the other's state and progress
//! intact; `--cluster` limits a run to one cluster and touches no node of the other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootstrap::inventory::{self, Cluster};
use xtask::kube_sim::Behaviour;
use xtask::sim_rack::{RackOptions, SimRack};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");
const INVENTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated-two.toml");

fn crds() -> PathBuf {
    xtask::sim_rack::offline_crds(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("up-two-crds")).unwrap()
}

fn clusters() -> Vec<Cluster> {
    inventory::load(Path::new(INVENTORY)).unwrap().inventory.clusters
}

fn fast() -> RackOptions {
    RackOptions {
        reboot_delay: Duration::from_millis(150),
        ready_delay: Duration::from_millis(50),
        behaviour: Behaviour::uniform(Duration::from_millis(30)),
    }
}

/// Runs `bootstrap <args>` (phase-running commands get the offline CRDs); (success, stdout, stderr).
fn bootstrap(state: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("-i").arg(INVENTORY).arg("--state-dir").arg(state).args(args);
    if args.iter().any(|a| matches!(*a, "up" | "plan")) {
        cmd.arg("--artifacts").arg(crds());
    }
    let out = tokio::task::block_in_place(|| cmd.env("HOME", state).output().unwrap());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kube_writes(rack: &SimRack) -> Vec<String> {
    rack.kube()
        .map(|k| {
            k.requests()
                .iter()
                .filter(|r| r.mutating)
                .map(|r| format!("{} {}", r.method, r.path))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_up_converges_both_clusters_a_failed_one_leaves_the_other_intact() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let [infra, apps] = <[Cluster; 2]>::try_from(clusters()).expect("two clusters");

    // The infra rack is powered off: nothing answers on its addresses (each
    // node is waited for `--timeout` seconds, as a booting node would be).
    let apps_rack = SimRack::start(&apps, fast()).await.unwrap();
    let (ok, _, err) = bootstrap(&state, &["up", "--timeout", "5"]);
    assert!(!ok, "up must fail while infra is down:\n{err}");
    assert!(
        err.contains("cluster infra") && err.contains("unreachable"),
        "the failure names the cluster and why:\n{err}"
    );
    let (ok, plan, err) = bootstrap(&state, &["--cluster", "apps", "plan"]);
    assert!(ok, "plan apps failed:\n{err}");
    assert!(
        plan.contains("nothing to do"),
        "apps converged in the same run although infra failed:\n{plan}"
    );
    let (_, status, _) = bootstrap(&state, &["--cluster", "apps", "status"]);
    for node in ["apps-cp-1", "apps-cp-2", "apps-cp-3"] {
        assert!(
            status.contains(&format!("{node}: ready")),
            "{node}'s progress is kept:\n{status}"
        );
    }
    assert!(
        state.join("apps/kubeconfig").is_file() && !state.join("infra/kubeconfig").exists(),
        "each cluster has its own state dir"
    );

    // infra comes up; `--cluster infra` converges it and touches no apps node.
    let infra_rack = SimRack::start(&infra, fast()).await.unwrap();
    apps_rack.clear_logs();
    let (ok, _, err) = bootstrap(&state, &["--cluster", "infra", "up", "--timeout", "60"]);
    assert!(ok, "up --cluster infra failed:\n{err}");
    assert_eq!(
        apps_rack.talos_mutations(),
        vec![],
        "no Talos call changed an apps node"
    );
    assert_eq!(
        kube_writes(&apps_rack),
        Vec::<String>::new(),
        "no write to the apps API"
    );
    let kubeconfig = std::fs::read_to_string(state.join("infra/kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("https://127.86.0.10:6443"),
        "infra's kubeconfig points at its VIP"
    );
    let kubeconfig = std::fs::read_to_string(state.join("apps/kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("https://127.86.0.20:6443"),
        "apps' kubeconfig points at its VIP"
    );

    // Both converged: one more `up` over the whole inventory changes nothing anywhere.
    infra_rack.clear_logs();
    apps_rack.clear_logs();
    let (ok, plan, err) = bootstrap(&state, &["plan"]);
    assert!(ok, "plan failed:\n{err}");
    assert_eq!(
        plan.matches("nothing to do").count(),
        2,
        "plan has nothing to do on either cluster:\n{plan}"
    );
    let (ok, _, err) = bootstrap(&state, &["up"]);
    assert!(ok, "second up failed:\n{err}");
    for rack in [&infra_rack, &apps_rack] {
        assert_eq!(rack.talos_mutations(), vec![], "the second up made no Talos change");
        assert_eq!(
            kube_writes(rack),
            Vec::<String>::new(),
            "the second up made no Kubernetes write"
        );
    }
}

//! The disaster-recovery drill, checked object by object: a simulated Talos
//! rack whose control planes run real etcd members (and whose Kubernetes API
//! keeps its objects in that etcd), `bootstrap up`, a marker ConfigMap, then
//! `bootstrap reset --yes`: the wipe loses everything, the restore brings the
//! marker back; a marker created after the snapshot is gone after a restore
//! from that snapshot. Addresses 127.82.0.0/24.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootstrap::inventory;
use k8s_openapi::api::core::v1::ConfigMap;
use xtask::kube_sim::Behaviour;
use xtask::sim_rack::{RackOptions, SimRack};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

fn etcd_available() -> bool {
    if xtask::etcd::member::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "etcd-server/etcd-client are not installed (cargo xtask test installs them)"
    );
    eprintln!("skipping: /usr/bin/etcd or /usr/bin/etcdctl missing");
    false
}

fn inventory(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
        .unwrap()
        .replace("127.1.0.", "127.82.0.");
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("rack.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn crds(dir: &Path) -> PathBuf {
    xtask::sim_rack::offline_crds(&dir.join("crds")).unwrap()
}

fn bootstrap(inv: &Path, state: &Path, crds: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    for var in [
        "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_KEY_CMD",
        "XDG_CONFIG_HOME",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .arg("-i")
        .arg(inv)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .arg("--artifacts")
        .arg(crds)
        .env("HOME", state)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out);
        } else if p.file_name().is_some_and(|n| n.to_string_lossy().contains(name)) {
            out.push(p);
        }
    }
}

async fn configmaps(state: &Path) -> kube::Api<ConfigMap> {
    let mut found = Vec::new();
    find(state, "kubeconfig", &mut found);
    let path = found
        .into_iter()
        .find(|p| p.file_name().unwrap() == "kubeconfig")
        .expect("kubeconfig");
    let client = bootstrap::k8s::Client::from_kubeconfig(&path).await.unwrap();
    kube::Api::namespaced(client.kube().clone(), "default")
}

async fn marker(state: &Path, name: &str) {
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"drill": name},
    }))
    .unwrap();
    configmaps(state).await.create(&Default::default(), &cm).await.unwrap();
}

async fn present(state: &Path, name: &str) -> bool {
    configmaps(state).await.get_opt(name).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_restores_etcd_object_by_object() {
    if !etcd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path());
    let crds = crds(dir.path());
    let state = dir.path().join("state");
    let options = RackOptions {
        reboot_delay: Duration::from_millis(150),
        ready_delay: Duration::from_millis(50),
        behaviour: Behaviour::uniform(Duration::from_millis(30)),
    };
    let cluster = inventory::load(&inv).unwrap().inventory.clusters.remove(0);
    let rack = SimRack::start_real_etcd(&cluster, options).await.unwrap();

    let (ok, out) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &crds, &["up", "--timeout", "120"]));
    assert!(ok, "up failed:\n{out}");
    assert!(
        rack.kube().is_some_and(|k| k.etcd_backed()),
        "the API keeps its objects in etcd"
    );
    marker(&state, "before-snapshot").await;

    let (ok, out) =
        tokio::task::block_in_place(|| bootstrap(&inv, &state, &crds, &["--yes", "reset", "--timeout", "120"]));
    assert!(ok, "reset failed:\n{out}");
    let (ok, plan) = tokio::task::block_in_place(|| bootstrap(&inv, &state, &crds, &["plan"]));
    assert!(
        ok && plan.contains("nothing to do"),
        "the rebuilt cluster plans nothing:\n{plan}"
    );
    let mut snapshots = Vec::new();
    find(&state, ".snapshot", &mut snapshots);
    snapshots.retain(|p| !p.to_string_lossy().contains(".tmp-"));
    let [snapshot] = snapshots.as_slice() else {
        panic!("one snapshot expected: {snapshots:?}")
    };
    let (_, _, keys) = xtask::etcd::member::snapshot_status(snapshot).expect("a real etcd snapshot");
    assert!(keys > 50, "the snapshot holds the cluster's objects: {keys} keys");
    assert!(
        present(&state, "before-snapshot").await,
        "the marker is back after the restore"
    );

    // A marker written after the snapshot is gone after a restore from it.
    marker(&state, "after-snapshot").await;
    let snap = snapshot.to_string_lossy().into_owned();
    let (ok, out) = tokio::task::block_in_place(|| {
        bootstrap(
            &inv,
            &state,
            &crds,
            &["--yes", "reset", "--snapshot", &snap, "--timeout", "120"],
        )
    });
    assert!(ok, "second reset failed:\n{out}");
    assert!(
        present(&state, "before-snapshot").await,
        "the snapshot's marker is back"
    );
    assert!(!present(&state, "after-snapshot").await, "the later marker is gone");
    rack.stop().await;
}

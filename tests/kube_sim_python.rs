//! The official Python Kubernetes client (PyPI `kubernetes`, in the test venv
//! `cargo xtask test` creates) drives the Kubernetes API simulator: one test
//! per operation, each running `tests/kube_sim_python/conformance.py` against
//! its own simulator. Without the venv the tests skip, except under `CI=true`.

use std::path::PathBuf;
use std::process::Command;

use xtask::kube_sim::{KubeSim, SimOptions};

const CRD: &str = "crds/flux/source.toolkit.fluxcd.io_gitrepositories.v1.9.0.yaml";

fn shared(rel: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|b| b.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()))
}

/// Runs one operation of the conformance script; `None` when the test skips.
async fn run(operation: &str) -> Option<()> {
    let venv = xtask::sushy::venv_or_skip(operation)?;
    let python = venv.join("bin/python");
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.admin_kubeconfig()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kube_sim_python/conformance.py");
    let out = tokio::task::block_in_place(|| {
        Command::new(&python)
            .arg(&script)
            .arg(&kubeconfig)
            .arg(operation)
            .arg(shared(CRD))
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .output()
            .expect("python starts")
    });
    assert!(
        out.status.success(),
        "{operation} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    drop(sim);
    Some(())
}

macro_rules! operations {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let _ = run(stringify!($name)).await;
            }
        )*
    };
}

operations!(
    create,
    get,
    list_by_label_selector,
    apply_server_side,
    patch_merge,
    patch_json,
    patch_strategic,
    label,
    watch,
    delete_then_404,
    namespace_deletion,
    wait_for_crd_established,
    create_custom_resource,
);

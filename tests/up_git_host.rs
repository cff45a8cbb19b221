//! The Git host's SSH key, end to end: a real OpenSSH server on the test rack
//! (198.18.0.0/24) stands in for the Git host of an `ssh://` repository, the
//! Talos nodes are simulated on loopback. An unknown or mismatched host key is
//! refused before phase -1: the `bootstrap` binary exits 1 and no Talos node
//! got a single mutating call.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use xtask::kube_sim::Behaviour;
use xtask::rack::Rack;
use xtask::sim_rack::{RackOptions, SimRack};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

/// `inventory/simulated.toml` on 127.85.0.0/24 with an SSH repository on `git_host`.
fn inventory(dir: &Path, git_host: &str, extra: &str) -> std::path::PathBuf {
    let key = dir.join("deploy-key");
    if !key.exists() {
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (openssh-client) runs");
        assert!(made.success());
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
        .unwrap()
        .replace("127.1.0.", "127.85.0.")
        .replace(
            "repository = \"https://git.sim.invalid/rack/gitops.git\"",
            &format!(
                "repository = \"ssh://git@{git_host}/rack/gitops.git\"\ndeploy_key = \"file:{}\"\n{extra}",
                key.display()
            ),
        );
    let path = dir.join("rack.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn up(inv: &Path, state: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("-i")
        .arg(inv)
        .arg("--state-dir")
        .arg(state)
        .args(["up", "--timeout", "20"])
        .env("HOME", state)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_or_mismatched_git_host_key_is_refused_before_any_node_changes() {
    let Some(git) = Rack::for_test(1) else { return };
    let host = &git.nodes()[0];
    let dir = tempfile::tempdir().unwrap();

    // Unknown: no pin in the inventory or the state dir, no --accept-new.
    let inv = inventory(dir.path(), &host.ip.to_string(), "");
    let cluster = bootstrap::inventory::load(&inv).unwrap().inventory.clusters.remove(0);
    let rack = SimRack::start(
        &cluster,
        RackOptions {
            reboot_delay: Duration::from_millis(150),
            ready_delay: Duration::from_millis(50),
            behaviour: Behaviour::uniform(Duration::from_millis(30)),
        },
    )
    .await
    .unwrap();
    let state = dir.path().join("state");
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &state));
    assert!(!ok, "up must refuse an unknown Git host key:\n{err}");
    assert!(
        err.contains(&host.fingerprint) && err.contains("--accept-new") && err.contains("nothing was changed"),
        "the refusal names the key OpenSSH presented and the way out:\n{err}"
    );
    assert_eq!(rack.talos_mutations(), vec![], "no node was touched");
    assert!(!state.join("sim/git_known_hosts").exists(), "nothing was pinned");

    // Pinned to another fingerprint: a mismatch, refused the same way.
    let pin = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let inv = inventory(dir.path(), &host.ip.to_string(), &format!("known_hosts = \"{pin}\""));
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &state));
    assert!(!ok, "up must refuse a mismatched Git host key:\n{err}");
    assert!(
        err.contains("MISMATCH") && err.contains(&host.fingerprint) && err.contains(pin),
        "the refusal shows both keys:\n{err}"
    );
    assert_eq!(rack.talos_mutations(), vec![], "still no node was touched");
}

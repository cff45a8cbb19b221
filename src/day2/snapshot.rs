//! Etcd snapshots on the workstation: taken from the first control plane that
//! answers, written 0600 and atomically, hashed, recorded in the state dir,
//! and pruned to the newest `--keep`. `snapshot`, `reset` and `upgrade` all
//! take theirs here.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::talos_client;
use crate::inventory::{Cluster, Distribution};
use crate::state::{SnapshotRecord, StateStore};
use crate::talos::TalosCredentials;

/// Budget of one snapshot attempt on one control plane.
const BUDGET: Duration = Duration::from_secs(120);

/// Where a snapshot goes when no `--out` is given: `<state>/<cluster>/snapshots/etcd-<ms>.snapshot`
/// (milliseconds: two snapshots in one second never overwrite each other).
pub fn default_path(store: &StateStore) -> Result<PathBuf, String> {
    let dir = store.dir().join("snapshots");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir.join(format!("etcd-{}.snapshot", now().as_millis())))
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Takes a snapshot of `cluster`'s etcd into `out` (or [`default_path`]),
/// records it with `reason`, and prunes recorded state-dir snapshots beyond
/// the newest `keep`. Control planes are tried in inventory order; the error
/// names each one that failed and why.
pub async fn take(
    cluster: &Cluster,
    creds: &TalosCredentials,
    store: &mut StateStore,
    out: Option<&Path>,
    keep: Option<usize>,
    reason: &str,
) -> Result<(SnapshotRecord, Vec<SnapshotRecord>), String> {
    if cluster.distribution != Distribution::Talos {
        return Err(format!(
            "cluster {}: etcd snapshots are taken over the Talos API; k3s (`k3s etcd-snapshot save` over SSH) is not implemented yet",
            cluster.name
        ));
    }
    let path = match out {
        Some(p) => p.to_owned(),
        None => default_path(store)?,
    };
    let mut failures = Vec::new();
    for cp in cluster.control_planes() {
        let got = match talos_client(cp, creds, BUDGET) {
            Ok(c) => c.etcd_snapshot(&path).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match got {
            Ok(info) => {
                let record = SnapshotRecord {
                    path: info.path,
                    size: info.size,
                    sha256: info.sha256,
                    node: cp.name.clone(),
                    taken_at: now().as_secs(),
                    reason: reason.to_owned(),
                };
                let pruned = store.record_snapshot(record.clone(), keep).map_err(|e| e.to_string())?;
                return Ok((record, pruned));
            }
            Err(e) => failures.push(format!("{}: {e}", cp.name)),
        }
    }
    Err(format!(
        "cluster {}: no control plane gave an etcd snapshot ({})",
        cluster.name,
        failures.join("; ")
    ))
}

/// Checks a snapshot file against the sha256 recorded for it (a file the
/// state does not know passes unchecked: the operator brought it).
pub fn verify(store: &StateStore, path: &Path) -> Result<(), String> {
    let Some(record) = store.state().snapshots.iter().rev().find(|r| r.path == path) else {
        return Ok(());
    };
    let got = crate::artifacts::sha256_file(path).map_err(|e| format!("snapshot {}: {e}", path.display()))?;
    if got == record.sha256 {
        Ok(())
    } else {
        Err(format!(
            "snapshot {}: sha256 {got} differs from the {} recorded when it was taken: refusing to restore from it",
            path.display(),
            record.sha256
        ))
    }
}

//! Etcd snapshots on the workstation: taken from the first control plane that
//! answers, written 0600 and atomically, hashed, recorded in the state dir,
//! and pruned to the newest `--keep`. `snapshot`, `reset` and `upgrade` all
//! take theirs here: Talos over its machine API, k3s over SSH
//! ([`super::k3s_snapshot`]).

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

/// How a cluster's etcd is reached for a snapshot.
pub enum Access<'a> {
    /// Talos: the machine API (mTLS) with the cluster's credentials.
    Talos(&'a TalosCredentials),
    /// k3s: SSH to the servers (host keys checked by the pool's options, as
    /// phase -1 checks them), `k3s etcd-snapshot save` there, then a download.
    K3s(&'a crate::ssh::Pool),
}

/// Takes a snapshot of `cluster`'s etcd into `out` (or [`default_path`]),
/// records it with `reason`, and prunes recorded state-dir snapshots beyond
/// the newest `keep`. Control planes are tried in inventory order; the error
/// names each one that failed and why.
pub async fn take(
    cluster: &Cluster,
    access: Access<'_>,
    store: &mut StateStore,
    out: Option<&Path>,
    keep: Option<usize>,
    reason: &str,
) -> Result<(SnapshotRecord, Vec<SnapshotRecord>), String> {
    match (&access, cluster.distribution) {
        (Access::Talos(_), Distribution::Talos) | (Access::K3s(_), Distribution::K3s) => {}
        (_, d) => {
            return Err(format!(
                "cluster {}: a {d:?} cluster's snapshot needs {} access",
                cluster.name,
                if d == Distribution::Talos { "Talos API" } else { "SSH" }
            ));
        }
    }
    let path = match out {
        Some(p) => p.to_owned(),
        None => default_path(store)?,
    };
    let mut failures = Vec::new();
    for cp in cluster.control_planes() {
        let got = match &access {
            Access::Talos(creds) => match talos_client(cp, creds, BUDGET) {
                Ok(c) => c
                    .etcd_snapshot(&path)
                    .await
                    .map(|info| (info.path, info.size, info.sha256))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
            Access::K3s(pool) => super::k3s_snapshot::take(pool, cp, &path, BUDGET)
                .await
                .map(|d| (path.clone(), d.size, d.sha256)),
        };
        match got {
            Ok((path, size, sha256)) => {
                let record = SnapshotRecord {
                    path,
                    size,
                    sha256,
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

/// The snapshot a reset takes before it wipes anything (said on stderr);
/// its error says that nothing was wiped.
pub async fn before_reset(cluster: &Cluster, access: Access<'_>, store: &mut StateStore) -> Result<PathBuf, String> {
    let (record, _) = take(cluster, access, store, None, None, "reset")
        .await
        .map_err(|e| format!("snapshot: {e}; nothing was wiped"))?;
    eprintln!(
        "reset {}: etcd snapshot from {}: {} ({} bytes, sha256 {})",
        cluster.name,
        record.node,
        record.path.display(),
        record.size,
        record.sha256
    );
    Ok(record.path)
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

/// Checks an etcd snapshot against its own integrity hash: etcd's
/// `Maintenance.Snapshot` stream (what `etcdctl snapshot save`, k3s's
/// `etcd-snapshot save` and Talos's `EtcdSnapshot` write) ends with the sha256
/// of everything before it, which `etcdctl snapshot restore` checks too
/// (etcd server/etcdserver/api/v3rpc/maintenance.go; `--skip-hash-check` is
/// only for a db file copied out of a data dir). Streams the file.
pub fn check_etcd_hash(path: &Path) -> Result<(), String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let what = |e: &dyn std::fmt::Display| format!("snapshot {}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let len = f.metadata().map_err(|e| what(&e))?.len();
    let mut magic = [0u8; 4];
    if len >= 4 {
        f.read_exact(&mut magic).map_err(|e| what(&e))?;
        if &magic == b"PK\x03\x04" {
            return Err(what(
                &"a zip archive (k3s --etcd-snapshot-compress): unzip it and pass the snapshot inside",
            ));
        }
    }
    if len <= 32 {
        return Err(what(&format!("{len} bytes: too short to be an etcd snapshot")));
    }
    let mut f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut hasher = Sha256::new();
    let mut body = (&mut f).take(len - 32);
    std::io::copy(&mut body, &mut hasher).map_err(|e| what(&e))?;
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer).map_err(|e| what(&e))?;
    if hasher.finalize().as_slice() == trailer {
        Ok(())
    } else {
        Err(what(
            &"not an intact etcd snapshot (its trailing sha256 does not match its contents): refusing to restore from it",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_snapshot_carries_the_sha256_of_its_body() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let body = vec![7u8; 100_000];
        let mut good = body.clone();
        good.extend_from_slice(&Sha256::digest(&body));
        let path = dir.path().join("s");
        std::fs::write(&path, &good).unwrap();
        check_etcd_hash(&path).unwrap();
        good[10] ^= 1;
        std::fs::write(&path, &good).unwrap();
        assert!(
            check_etcd_hash(&path)
                .unwrap_err()
                .contains("not an intact etcd snapshot")
        );
        std::fs::write(&path, b"PK\x03\x04rest of a zip archive, long enough to pass the size").unwrap();
        assert!(check_etcd_hash(&path).unwrap_err().contains("unzip it"));
        std::fs::write(&path, b"short").unwrap();
        assert!(check_etcd_hash(&path).unwrap_err().contains("too short"));
    }
}

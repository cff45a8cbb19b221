//! Per-cluster state in the state dir: what each phase has done on each node,
//! and where the artifacts are. Written atomically after every step; a lock
//! file keeps two runs off one cluster. The state file records progress only:
//! destructive steps are always guarded by observed state, never by this file.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The state of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Format version of this file.
    pub version: u32,
    /// Phase name → its progress.
    #[serde(default)]
    pub phases: BTreeMap<String, PhaseState>,
    /// Artifact name (`kubeconfig`, `talosconfig`, `snapshot-...`) → file in the cluster's state dir.
    #[serde(default)]
    pub artifacts: BTreeMap<String, PathBuf>,
    /// Node → sha256 of the configuration it last accepted from us (Talos
    /// machine config), so a changed inventory is re-applied and an unchanged
    /// one is not.
    #[serde(default)]
    pub applied: BTreeMap<String, String>,
    /// Talos node → the install disk (device path) its selector resolved to
    /// among the disks it reported in maintenance mode; its config names it.
    #[serde(default)]
    pub install_disks: BTreeMap<String, String>,
    /// Etcd snapshots taken by `snapshot`, `reset` and `upgrade`, oldest first.
    #[serde(default)]
    pub snapshots: Vec<SnapshotRecord>,
}

/// One etcd snapshot on the workstation: where, what it hashes to, and where from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot file (0600).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the file, checked again before a restore.
    pub sha256: String,
    /// The control plane it was streamed or fetched from.
    pub node: String,
    /// Seconds since the Unix epoch when it was taken.
    pub taken_at: u64,
    /// Which command took it (`snapshot`, `reset`, `upgrade`).
    pub reason: String,
}

/// Progress of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseState {
    /// True once every action of the phase has completed.
    pub done: bool,
    /// Node (or `cluster` for cluster-wide steps) → the last step completed there.
    #[serde(default)]
    pub steps: BTreeMap<String, String>,
}

/// Why the state could not be read, written or locked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("cannot write state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cluster `{cluster}` is locked by another run ({path}); wait for it to finish")]
    Locked { cluster: String, path: PathBuf },
    /// A write through a store opened for `plan` (a bug: plans write nothing).
    #[error("state of {dir} was opened read-only (plan): refusing to write it")]
    ReadOnly { dir: PathBuf },
}

const FORMAT_VERSION: u32 = 1;

/// The state directory of one cluster, held locked for the lifetime of this
/// value (or read-only, unlocked, for `plan`).
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    state: ClusterState,
    /// `None`: opened read-only; every write is refused.
    lock: Option<File>,
    /// Changes made so far (each `save`).
    generation: u64,
    /// Saves only count changes; the owner writes them ([`Self::unsaved`]).
    deferred: bool,
}

impl StateStore {
    /// Opens (creating if needed) `<state_dir>/<cluster>/` and takes its lock;
    /// fails at once if another run holds it.
    pub fn open(state_dir: &Path, cluster: &str) -> Result<Self, StateError> {
        let dir = state_dir.join(cluster);
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Write {
            path: dir.clone(),
            source,
        })?;
        set_private(&dir);
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|source| StateError::Write {
            path: lock_path.clone(),
            source,
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    cluster: cluster.to_owned(),
                    path: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::Write {
                    path: lock_path,
                    source,
                });
            }
        }
        let state = Self::peek(state_dir, cluster)?.unwrap_or_else(|| ClusterState {
            version: FORMAT_VERSION,
            ..Default::default()
        });
        Ok(Self {
            dir,
            state,
            lock: Some(lock),
            generation: 0,
            deferred: false,
        })
    }

    /// Reads `<state_dir>/<cluster>/` for `plan`: creates nothing, takes no
    /// lock, and refuses every write.
    pub fn read_only(state_dir: &Path, cluster: &str) -> Result<Self, StateError> {
        let state = Self::peek(state_dir, cluster)?.unwrap_or_else(|| ClusterState {
            version: FORMAT_VERSION,
            ..Default::default()
        });
        Ok(Self {
            dir: state_dir.join(cluster),
            state,
            lock: None,
            generation: 0,
            deferred: false,
        })
    }

    fn writable(&self) -> Result<(), StateError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(StateError::ReadOnly { dir: self.dir.clone() }),
        }
    }

    /// Reads a cluster's state without taking the lock (for `status` and
    /// `kubeconfig`, which change nothing). `None` when nothing was recorded yet.
    pub fn peek(state_dir: &Path, cluster: &str) -> Result<Option<ClusterState>, StateError> {
        let path = state_dir.join(cluster).join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// The cluster's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Records that `step` completed for `node` in `phase`, and saves.
    pub fn record_step(&mut self, phase: &str, node: &str, step: &str) -> Result<(), StateError> {
        let p = self.state.phases.entry(phase.to_owned()).or_default();
        p.steps.insert(node.to_owned(), step.to_owned());
        self.save()
    }

    /// Records that `node` accepted the configuration whose sha256 is `sha256`, and saves.
    pub fn record_applied(&mut self, node: &str, sha256: &str) -> Result<(), StateError> {
        self.state.applied.insert(node.to_owned(), sha256.to_owned());
        self.save()
    }

    /// Records the install disk `node`'s selector resolved to, and saves.
    pub fn record_install_disk(&mut self, node: &str, dev_path: &str) -> Result<(), StateError> {
        self.state.install_disks.insert(node.to_owned(), dev_path.to_owned());
        self.save()
    }

    /// Marks `phase` done (or not), and saves.
    pub fn set_phase_done(&mut self, phase: &str, done: bool) -> Result<(), StateError> {
        self.state.phases.entry(phase.to_owned()).or_default().done = done;
        self.save()
    }

    /// Writes a secret artifact (0600, atomic) into the state dir and records it.
    pub fn put_artifact(&mut self, name: &str, file: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
        self.writable()?;
        let path = self.dir.join(file);
        fsutil::write_secret(&path, bytes).map_err(|source| StateError::Write {
            path: path.clone(),
            source,
        })?;
        self.state.artifacts.insert(name.to_owned(), path.clone());
        self.save()?;
        Ok(path)
    }

    /// Forgets every phase's progress and the kubeconfig (after a wipe), keeping
    /// secrets and snapshots.
    pub fn forget_progress(&mut self) -> Result<(), StateError> {
        self.writable()?;
        self.state.phases.clear();
        self.state.applied.clear();
        self.state.install_disks.clear();
        if let Some(path) = self.state.artifacts.remove("kubeconfig") {
            let _ = std::fs::remove_file(path);
        }
        self.save()
    }

    /// Records a snapshot and, with `keep`, deletes the oldest recorded
    /// snapshots in this state dir (file and record) beyond the newest `keep`;
    /// returns the records it pruned. Files elsewhere (`snapshot --out`) and
    /// files not recorded here are never deleted.
    pub fn record_snapshot(
        &mut self,
        record: SnapshotRecord,
        keep: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>, StateError> {
        self.writable()?;
        self.state.snapshots.push(record);
        let ours = self
            .state
            .snapshots
            .iter()
            .filter(|r| r.path.starts_with(&self.dir))
            .count();
        let mut excess = keep.map_or(0, |k| ours.saturating_sub(k.max(1)));
        let (mut kept, mut pruned) = (Vec::new(), Vec::new());
        for r in std::mem::take(&mut self.state.snapshots) {
            if excess > 0 && r.path.starts_with(&self.dir) {
                excess -= 1;
                let _ = std::fs::remove_file(&r.path);
                pruned.push(r);
            } else {
                kept.push(r);
            }
        }
        self.state.snapshots = kept;
        self.save()?;
        Ok(pruned)
    }

    /// The recorded artifact called `name`, if its file still exists.
    pub fn artifact(&self, name: &str) -> Option<&Path> {
        self.state
            .artifacts
            .get(name)
            .map(PathBuf::as_path)
            .filter(|p| p.exists())
    }

    /// From now on a change is only counted ([`Self::generation`]); its
    /// owner writes what [`Self::unsaved`] returns (the engine's group commit).
    pub fn defer_saves(&mut self) {
        self.deferred = true;
    }

    /// How many changes were made since this store was opened.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation, path and bytes of the state as it is now, to write
    /// with [`write_state`].
    pub fn unsaved(&self) -> (u64, PathBuf, Vec<u8>) {
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        (self.generation, self.dir.join("state.json"), bytes)
    }

    fn save(&mut self) -> Result<(), StateError> {
        self.writable()?;
        self.generation += 1;
        if self.deferred {
            return Ok(());
        }
        let (_, path, bytes) = self.unsaved();
        write_state(&path, &bytes)
    }
}

/// Writes `state.json` bytes (0600, atomic, synced).
pub fn write_state(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    fsutil::write_secret(path, bytes).map_err(|source| StateError::Write {
        path: path.to_owned(),
        source,
    })
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_retention_prunes_the_oldest_recorded_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path(), "c").unwrap();
        let stray = dir.path().join("c/stray.snapshot");
        std::fs::write(&stray, b"not ours").unwrap();
        let record = |i: u64| {
            let path = dir.path().join(format!("c/etcd-{i}.snapshot"));
            std::fs::write(&path, b"x").unwrap();
            SnapshotRecord {
                path,
                size: 1,
                sha256: "2d71".into(),
                node: "cp-1".into(),
                taken_at: i,
                reason: "snapshot".into(),
            }
        };
        let elsewhere = tempfile::NamedTempFile::new().unwrap();
        let mut outside = record(0);
        outside.path = elsewhere.path().to_owned();
        assert!(s.record_snapshot(outside, None).unwrap().is_empty());
        assert!(s.record_snapshot(record(1), None).unwrap().is_empty());
        assert!(s.record_snapshot(record(2), Some(2)).unwrap().is_empty());
        let pruned = s.record_snapshot(record(3), Some(2)).unwrap();
        assert_eq!(pruned.iter().map(|r| r.taken_at).collect::<Vec<_>>(), [1]);
        assert!(!pruned[0].path.exists());
        let kept: Vec<u64> = s.state().snapshots.iter().map(|r| r.taken_at).collect();
        assert_eq!(kept, [0, 2, 3], "a snapshot written elsewhere (--out) is kept");
        assert!(elsewhere.path().exists());
        assert!(stray.exists(), "a file the state does not record is never pruned");
        let reread = StateStore::peek(dir.path(), "c").unwrap().unwrap();
        assert_eq!(reread.snapshots.len(), 3);
    }

    #[test]
    fn a_read_only_store_creates_nothing_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::read_only(dir.path(), "fresh").unwrap();
        assert!(s.state().phases.is_empty());
        assert!(matches!(
            s.record_step("nodes", "cp-1", "x"),
            Err(StateError::ReadOnly { .. })
        ));
        assert!(matches!(
            s.put_artifact("kubeconfig", "kubeconfig", b"x"),
            Err(StateError::ReadOnly { .. })
        ));
        assert!(!dir.path().join("fresh").exists(), "no state dir, no lock file");
        // A locked store does not stop a read-only one (plan beside a running up).
        let mut w = StateStore::open(dir.path(), "sim").unwrap();
        w.record_step("nodes", "cp-1", "ready").unwrap();
        let r = StateStore::read_only(dir.path(), "sim").unwrap();
        assert_eq!(r.state().phases["nodes"].steps["cp-1"], "ready");
    }

    #[test]
    fn records_progress_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = StateStore::open(dir.path(), "sim").unwrap();
            s.record_step("nodes", "cp-1", "config applied").unwrap();
            s.set_phase_done("nodes", true).unwrap();
            s.put_artifact("kubeconfig", "kubeconfig", b"apiVersion: v1").unwrap();
        }
        let s = StateStore::open(dir.path(), "sim").unwrap();
        assert!(s.state().phases["nodes"].done);
        assert_eq!(s.state().phases["nodes"].steps["cp-1"], "config applied");
        assert_eq!(
            std::fs::read(s.artifact("kubeconfig").unwrap()).unwrap(),
            b"apiVersion: v1"
        );
    }

    #[test]
    fn a_second_run_on_the_same_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateStore::open(dir.path(), "sim").unwrap();
        match StateStore::open(dir.path(), "sim") {
            Err(StateError::Locked { cluster, .. }) => assert_eq!(cluster, "sim"),
            other => panic!("expected Locked, got {other:?}"),
        }
        // Another cluster is independent.
        StateStore::open(dir.path(), "other").unwrap();
    }

    #[test]
    fn a_corrupt_state_file_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sim")).unwrap();
        std::fs::write(dir.path().join("sim/state.json"), b"{not json").unwrap();
        assert!(matches!(
            StateStore::open(dir.path(), "sim"),
            Err(StateError::Corrupt { .. })
        ));
        assert_eq!(std::fs::read(dir.path().join("sim/state.json")).unwrap(), b"{not json");
    }
}

//! Real etcd members (Debian's `etcd-server`, `/usr/bin/etcd`) for the
//! simulated control planes: one process per control plane on its own
//! address (`IP:2379` clients, `IP:2380` peers), data in a temp dir.
//! Membership changes go through etcd itself the way Talos drives them
//! (Talos docs, "etcd maintenance"; internal/app/machined/pkg/system/services/etcd.go):
//! the bootstrap node starts a new cluster, later control planes are
//! `member add`ed and start with `--initial-cluster-state existing`,
//! recovery restores a snapshot into a fresh data dir before the first start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tempfile::TempDir;

use super::client::{EtcdClient, MemberInfo};

/// The etcd server binary (Debian `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";
/// The etcd CLI (Debian `etcd-client`): snapshot save/restore/status.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Whether the etcd binaries are installed.
pub fn available() -> bool {
    Path::new(ETCD).exists() && Path::new(ETCDCTL).exists()
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `http://IP:2379`.
pub fn client_url(ip: IpAddr) -> String {
    format!("http://{}:2379", host(ip))
}

/// `http://IP:2380`.
pub fn peer_url(ip: IpAddr) -> String {
    format!("http://{}:2380", host(ip))
}

/// One etcd process and its data.
pub struct Member {
    /// Member name (the node's hostname, as Talos names members).
    pub name: String,
    /// The node address it listens on.
    pub ip: IpAddr,
    /// Member id, once known.
    pub id: u64,
    child: Option<tokio::process::Child>,
    /// The log (and, unless `data` names another place, the data).
    dir: TempDir,
    /// A data dir kept outside the temp dir (k3s's `server/db/etcd`).
    data: Option<PathBuf>,
}

impl Member {
    fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// A client for this member.
    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(&client_url(self.ip))
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the process (a reboot); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Starts (or restarts) the process on the existing data dir, or with
    /// `initial_cluster` and `state` when the data dir is empty, and waits
    /// until it serves with a quorum behind it.
    async fn start(&mut self, initial_cluster: &str, state: &str, wait: Duration) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let mut cmd = tokio::process::Command::new(ETCD);
        // SAFETY: prctl is async-signal-safe; the member dies with the thread that started
        // it, so a test process that exits without dropping the simulator leaves no etcd behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg(format!("--listen-client-urls={}", client_url(self.ip)))
            .arg(format!("--advertise-client-urls={}", client_url(self.ip)))
            .arg(format!("--listen-peer-urls={}", peer_url(self.ip)))
            .arg(format!("--initial-advertise-peer-urls={}", peer_url(self.ip)))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=talos-sim")
            // Loopback peers: short raft timings keep elections fast.
            .args(["--heartbeat-interval=50", "--election-timeout=500"])
            .args(["--logger=zap", "--log-level=warn", "--enable-v2=false"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {ETCD}"))?;
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + wait;
        loop {
            if !self.running() {
                anyhow::bail!("etcd {} exited:\n{}", self.name, self.log_tail());
            }
            if client.healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                anyhow::bail!("etcd {} not healthy after {wait:?}:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

const WAIT: Duration = Duration::from_secs(30);

/// Failure of a membership operation, mapped to gRPC codes by the caller.
#[derive(Debug)]
pub enum EtcdError {
    /// etcd already runs (Bootstrap on an initialised cluster).
    AlreadyRunning,
    /// Nothing runs that could serve the request.
    NotRunning,
    /// etcd or etcdctl said no.
    Failed(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyRunning => f.write_str("etcd data directory is not empty"),
            Self::NotRunning => f.write_str("etcd is not running on this node"),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> EtcdError {
    EtcdError::Failed(format!("{e:#}"))
}

/// The real etcd cluster of one simulated Talos cluster.
#[derive(Default)]
pub struct EtcdCluster {
    /// Serialises membership changes (one at a time, as quorum needs).
    ops: tokio::sync::Mutex<()>,
    members: Mutex<Vec<Member>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = lock(&self.members).iter().map(|m| m.name.clone()).collect();
        f.debug_struct("EtcdCluster").field("members", &names).finish()
    }
}

impl EtcdCluster {
    /// Whether `name`'s process runs.
    pub fn is_running(&self, name: &str) -> bool {
        lock(&self.members).iter_mut().any(|m| m.name == name && m.running())
    }

    /// Whether any member runs (the cluster has data).
    pub fn any_running(&self) -> bool {
        lock(&self.members).iter_mut().any(Member::running)
    }

    /// Whether `name` has a data dir (a member, running or stopped).
    pub fn has_member(&self, name: &str) -> bool {
        lock(&self.members).iter().any(|m| m.name == name)
    }

    /// Client URLs of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        lock(&self.members)
            .iter_mut()
            .filter_map(|m| m.running().then(|| client_url(m.ip)))
            .collect()
    }

    /// A client for `name`'s member, if it runs.
    pub fn client(&self, name: &str) -> Option<EtcdClient> {
        lock(&self.members)
            .iter_mut()
            .find(|m| m.name == name)
            .and_then(|m| m.running().then(|| m.client()))
    }

    fn any_client(&self, except: &str) -> Option<EtcdClient> {
        lock(&self.members)
            .iter_mut()
            .filter(|m| m.name != except)
            .find_map(|m| m.running().then(|| m.client()))
    }

    /// Starts a new cluster with `name` as its only member; with `snapshot`
    /// the data dir is first restored from it (`etcdctl snapshot restore`,
    /// as Talos's recover does), its hash checked unless `skip_hash_check`.
    pub async fn bootstrap(
        &self,
        name: &str,
        ip: IpAddr,
        snapshot: Option<&[u8]>,
        skip_hash_check: bool,
    ) -> Result<(), EtcdError> {
        let _ops = self.ops.lock().await;
        if self.any_running() {
            return Err(EtcdError::AlreadyRunning);
        }
        lock(&self.members).clear();
        let dir = tempfile::Builder::new()
            .prefix("talos-sim-etcd-")
            .tempdir()
            .map_err(failed)?;
        let initial = format!("{name}={}", peer_url(ip));
        let mut member = Member {
            name: name.to_owned(),
            ip,
            id: 0,
            child: None,
            dir,
            data: None,
        };
        if let Some(bytes) = snapshot {
            let file = member.dir.path().join("restore.snapshot");
            std::fs::write(&file, bytes).map_err(failed)?;
            let mut cmd = tokio::process::Command::new(ETCDCTL);
            cmd.args(["snapshot", "restore"])
                .arg(&file)
                .arg(format!("--name={name}"))
                .arg(format!("--data-dir={}", member.data_dir().display()))
                .arg(format!("--initial-cluster={initial}"))
                .arg(format!("--initial-advertise-peer-urls={}", peer_url(ip)))
                .arg("--initial-cluster-token=talos-sim");
            if skip_hash_check {
                cmd.arg("--skip-hash-check");
            }
            let out = cmd.env("ETCDCTL_API", "3").output().await.map_err(failed)?;
            if !out.status.success() {
                return Err(EtcdError::Failed(format!(
                    "etcd recovery: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        member.start(&initial, "new", WAIT).await.map_err(failed)?;
        member.id = own_id(&member).await.map_err(failed)?;
        lock(&self.members).push(member);
        Ok(())
    }

    /// Starts `name` as the only member on the data dir `data`, kept across
    /// restarts (k3s's embedded etcd in `server/db/etcd`): on the data there
    /// (a restart, or after [`restore_into`]), else as a new cluster.
    pub async fn start_at(&self, name: &str, ip: IpAddr, data: &Path) -> Result<(), EtcdError> {
        let _ops = self.ops.lock().await;
        if self.any_running() {
            return Err(EtcdError::AlreadyRunning);
        }
        lock(&self.members).clear();
        if let Some(parent) = data.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("k3s-standin-etcd-")
            .tempdir()
            .map_err(failed)?;
        let mut member = Member {
            name: name.to_owned(),
            ip,
            id: 0,
            child: None,
            dir,
            data: Some(data.to_owned()),
        };
        let initial = format!("{name}={}", peer_url(ip));
        member.start(&initial, "new", WAIT).await.map_err(failed)?;
        member.id = own_id(&member).await.map_err(failed)?;
        lock(&self.members).push(member);
        Ok(())
    }

    /// Adds `name` to the running cluster (`member add`, then a start with
    /// state existing), or restarts its stopped member on its data dir.
    /// Nothing happens while no member runs.
    pub async fn join(&self, name: &str, ip: IpAddr) -> Result<(), EtcdError> {
        let _ops = self.ops.lock().await;
        let stopped = {
            let mut members = lock(&self.members);
            match members.iter_mut().position(|m| m.name == name) {
                Some(i) if members[i].running() => return Ok(()),
                Some(i) => Some(members.remove(i)),
                None => None,
            }
        };
        if let Some(mut member) = stopped {
            // A reboot: the data dir says who it is; the flags are ignored.
            let initial = format!("{name}={}", peer_url(ip));
            let result = member.start(&initial, "existing", WAIT).await;
            lock(&self.members).push(member);
            return result.map_err(failed);
        }
        let Some(via) = self.any_client(name) else {
            return Err(EtcdError::NotRunning);
        };
        // etcd refuses reconfiguration until every voting member has been connected for
        // its health interval (5 s; etcdserver `mayAddMember`, strict reconfig check on as
        // in Talos): the add is retried, as Talos's etcd service retries its join.
        let deadline = Instant::now() + WAIT;
        let (id, after) = loop {
            match via.member_add(&peer_url(ip)).await {
                Ok(added) => break added,
                Err(e)
                    if Instant::now() < deadline
                        && ["unhealthy cluster", "not enough started members"]
                            .iter()
                            .any(|m| e.to_string().contains(m)) =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(failed(e)),
            }
        };
        let initial: Vec<String> = after
            .iter()
            .map(|m| {
                let n = if m.id == id { name } else { m.name.as_str() };
                format!("{n}={}", m.peer_urls.first().map(String::as_str).unwrap_or_default())
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("talos-sim-etcd-")
            .tempdir()
            .map_err(failed)?;
        let mut member = Member {
            name: name.to_owned(),
            ip,
            id,
            child: None,
            dir,
            data: None,
        };
        if let Err(e) = member.start(&initial.join(","), "existing", WAIT).await {
            // Give the quorum back: the member never came up.
            let _ = via.member_remove(id).await;
            return Err(failed(e));
        }
        lock(&self.members).push(member);
        Ok(())
    }

    /// `name` leaves: gracefully (`member remove` first, Talos's `leaveEtcd`)
    /// or not (a wipe: the process is killed); its data is deleted either way.
    pub async fn leave(&self, name: &str, graceful: bool) {
        let _ops = self.ops.lock().await;
        let id = lock(&self.members).iter().find(|m| m.name == name).map(|m| m.id);
        if let (Some(id), true) = (id, graceful)
            && let Some(client) = self.client(name).or_else(|| self.any_client(name))
            && let Err(e) = client.member_remove(id).await
        {
            tracing::debug!("etcd member remove {id:x} ({name}): {e:#}");
        }
        lock(&self.members).retain(|m| m.name != name);
    }

    /// Stops `name`'s process and keeps its data (a reboot).
    pub fn stop(&self, name: &str) {
        if let Some(m) = lock(&self.members).iter_mut().find(|m| m.name == name) {
            m.stop();
        }
    }

    /// The members as `name`'s etcd reports them.
    pub async fn member_list(&self, name: &str) -> Result<Vec<MemberInfo>, EtcdError> {
        let client = self.client(name).ok_or(EtcdError::NotRunning)?;
        client.member_list().await.map_err(failed)
    }

    /// Removes member `id` through `name`'s etcd; the removed member's
    /// process stops, as etcd stops a member removed from its cluster.
    pub async fn remove(&self, name: &str, id: u64) -> Result<(), EtcdError> {
        let _ops = self.ops.lock().await;
        let client = self.client(name).ok_or(EtcdError::NotRunning)?;
        client.member_remove(id).await.map_err(failed)?;
        lock(&self.members).retain(|m| m.id != id);
        Ok(())
    }

    /// A snapshot of `name`'s etcd (`etcdctl snapshot save`: etcd's
    /// Maintenance.Snapshot, the bbolt database plus its SHA-256).
    pub async fn snapshot(&self, name: &str) -> Result<Vec<u8>, EtcdError> {
        let client = self.client(name).ok_or(EtcdError::NotRunning)?;
        let dir = tempfile::tempdir().map_err(failed)?;
        let file = dir.path().join("snapshot.db");
        let out = tokio::process::Command::new(ETCDCTL)
            .arg(format!("--endpoints={}", client.url()))
            .args(["snapshot", "save"])
            .arg(&file)
            .env("ETCDCTL_API", "3")
            .output()
            .await
            .map_err(failed)?;
        if !out.status.success() {
            return Err(EtcdError::Failed(format!(
                "etcd snapshot: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::read(&file).map_err(failed)
    }

    /// Kills every member and deletes all data.
    pub fn destroy(&self) {
        lock(&self.members).clear();
    }
}

/// Restores `snapshot` into the new data dir `data` (which must not exist)
/// for a one-member cluster of `name` on `ip` (`etcdctl snapshot restore`: a
/// snapshot saved by etcd has its hash checked; a damaged one is refused).
pub async fn restore_into(snapshot: &Path, name: &str, ip: IpAddr, data: &Path) -> Result<()> {
    anyhow::ensure!(!data.exists(), "{} already exists", data.display());
    let out = tokio::process::Command::new(ETCDCTL)
        .args(["snapshot", "restore"])
        .arg(snapshot)
        .arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--initial-cluster={name}={}", peer_url(ip)))
        .arg(format!("--initial-advertise-peer-urls={}", peer_url(ip)))
        .arg("--initial-cluster-token=talos-sim")
        .env("ETCDCTL_API", "3")
        .output()
        .await
        .context("running etcdctl")?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl snapshot restore {}: {}",
        snapshot.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

async fn own_id(member: &Member) -> Result<u64> {
    let list = member.client().member_list().await?;
    list.iter()
        .find(|m| m.name == member.name)
        .map(|m| m.id)
        .context("the new member is not in its own member list")
}

/// `etcdctl snapshot status` of a snapshot file: (hash, revision, total keys),
/// or etcdctl's error when the file is no etcd snapshot.
pub fn snapshot_status(file: &Path) -> Result<(String, u64, u64)> {
    let out = std::process::Command::new(ETCDCTL)
        .args(["snapshot", "status", "--write-out=json"])
        .arg(file)
        .env("ETCDCTL_API", "3")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl snapshot status: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["hash"].to_string(),
        v["revision"].as_u64().unwrap_or(0),
        v["totalKey"].as_u64().unwrap_or(0),
    ))
}

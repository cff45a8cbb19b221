//! Address slots on the shared rack bridge, leased under a lock file so racks of
//! concurrent test binaries (and `cargo xtask rack up`) never collide.
//!
//! Every rack node takes one address of 198.18.0.0/24; its lease file records
//! the owning process (0 for a rack that outlives `cargo xtask rack up`) and the
//! node's process. Leases of dead owners are reclaimed on the next allocation.
//! The bridge exists while at least one lease does.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::net;

/// Where locks and leases live.
pub const STATE_DIR: &str = "/run/bootstrap-rack";

/// Holds the rack lock while alive.
pub struct Lock(#[allow(dead_code)] File);

/// Takes the process-wide and machine-wide rack lock (blocking).
pub fn lock() -> anyhow::Result<Lock> {
    std::fs::create_dir_all(leases_dir()).with_context(|| format!("creating {STATE_DIR}"))?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(STATE_DIR).join("lock"))
        .context("opening the rack lock file")?;
    f.lock().context("locking the rack lock file")?;
    Ok(Lock(f))
}

fn leases_dir() -> PathBuf {
    Path::new(STATE_DIR).join("leases")
}

/// One leased slot.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Last octet of the node address.
    pub octet: u8,
    /// Owning process, 0 when the node outlives its creator (`rack up`).
    pub owner: u32,
    /// The node's `unshare` process, 0 before it started.
    pub node_pid: u32,
}

impl Lease {
    /// The node's address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, self.octet)
    }

    fn path(octet: u8) -> PathBuf {
        leases_dir().join(octet.to_string())
    }

    /// Writes (or rewrites) the lease file.
    pub fn save(&self, _lock: &Lock) -> anyhow::Result<()> {
        std::fs::write(Self::path(self.octet), format!("{} {}\n", self.owner, self.node_pid))
            .with_context(|| format!("writing the lease of 198.18.0.{}", self.octet))
    }

    /// Removes the lease file.
    pub fn remove(&self, _lock: &Lock) {
        let _ = std::fs::remove_file(Self::path(self.octet));
    }
}

/// Every lease on this machine.
pub fn all(_lock: &Lock) -> Vec<Lease> {
    let Ok(rd) = std::fs::read_dir(leases_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(octet) = e.file_name().to_str().and_then(|s| s.parse::<u8>().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut it = text.split_whitespace().map(|s| s.parse::<u32>().unwrap_or(0));
        out.push(Lease {
            octet,
            owner: it.next().unwrap_or(0),
            node_pid: it.next().unwrap_or(0),
        });
    }
    out.sort_by_key(|l| l.octet);
    out
}

/// True when process `pid` exists.
pub fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Tears down the nodes of leases whose owner died without cleaning up.
pub fn reclaim_stale(lock: &Lock) {
    for l in all(lock) {
        if l.owner != 0 && !alive(l.owner) {
            net::teardown_node(l.octet, l.node_pid);
            l.remove(lock);
        }
    }
}

/// Leases `n` free slots for `owner`: exactly `first..first+n` when `first` is
/// given, else any free ones from .100 up.
pub fn allocate(lock: &Lock, n: usize, first: Option<u8>, owner: u32) -> anyhow::Result<Vec<Lease>> {
    reclaim_stale(lock);
    let taken: Vec<u8> = all(lock).iter().map(|l| l.octet).collect();
    let wanted: Vec<u8> = match first {
        Some(f) => {
            let last = f as usize + n;
            if f < 2 || last > 255 {
                bail!("rack addresses 198.18.0.{f}.. do not fit in 198.18.0.2-254 for {n} nodes");
            }
            let want: Vec<u8> = (f..last as u8).collect();
            if let Some(busy) = want.iter().find(|o| taken.contains(o)) {
                bail!("198.18.0.{busy} is already used by another rack (run `cargo xtask rack down` first)");
            }
            want
        }
        None => {
            let free: Vec<u8> = (100u8..=254).filter(|o| !taken.contains(o)).take(n).collect();
            if free.len() < n {
                bail!(
                    "only {} free rack addresses in 198.18.0.100-254, {n} needed",
                    free.len()
                );
            }
            free
        }
    };
    net::ensure_bridge()?;
    let leases: Vec<Lease> = wanted
        .into_iter()
        .map(|octet| Lease {
            octet,
            owner,
            node_pid: 0,
        })
        .collect();
    for l in &leases {
        l.save(lock)?;
    }
    Ok(leases)
}

/// Drops the bridge when no lease is left.
pub fn release_bridge_if_unused(lock: &Lock) {
    if all(lock).is_empty() {
        net::remove_bridge();
    }
}

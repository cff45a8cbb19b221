//! The state one simulated cluster shares between its nodes: the etcd
//! members, a small key/value store standing in for etcd data (or, with
//! [`super::SimOptions::real_etcd`], real etcd processes), and the OS CA
//! that control planes hand to workers (as trustd does).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::etcd::EtcdCluster;

use sha2::{Digest, Sha256};

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Name of the simulated node running it.
    pub node: String,
    /// Hostname reported by the member.
    pub hostname: String,
    /// Peer URL (`https://IP:2380`).
    pub peer_url: String,
    /// Client URL (`https://IP:2379`).
    pub client_url: String,
}

/// Simulated etcd: members plus data.
#[derive(Debug, Clone, Default)]
pub struct Etcd {
    /// Current members, the bootstrap node first.
    pub members: Vec<Member>,
    /// Key/value data.
    pub kv: BTreeMap<String, String>,
    /// Bumped on every write.
    pub revision: u64,
}

/// A control plane with an applied configuration, eligible to join etcd.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Its hostname.
    pub hostname: String,
    /// Its address.
    pub ip: std::net::IpAddr,
}

/// State shared by all nodes of one cluster (keyed by `cluster.id`).
#[derive(Debug, Default)]
pub struct ClusterState {
    /// `None` until Bootstrap; `None` again when the last member leaves.
    pub etcd: Option<Etcd>,
    /// OS CA (crt, key) PEM as served by control planes to workers.
    pub os_ca: Option<(String, String)>,
    /// Configured control planes by node name.
    pub control_planes: BTreeMap<String, ControlPlane>,
    /// Real etcd members (one process per control plane), when the simulator runs real etcd;
    /// `etcd` stays `None` then.
    pub real: Option<Arc<EtcdCluster>>,
}

impl ClusterState {
    /// Adds `node` to etcd if etcd runs and it is not a member yet.
    pub fn join(&mut self, node: &str) {
        let Some(cp) = self.control_planes.get(node).cloned() else {
            return;
        };
        let Some(etcd) = self.etcd.as_mut() else { return };
        if etcd.members.iter().any(|m| m.node == node) {
            return;
        }
        etcd.members.push(Member {
            id: rand::random::<u64>() >> 1,
            node: node.to_owned(),
            hostname: cp.hostname.clone(),
            peer_url: format!("https://{}:2380", url_host(cp.ip)),
            client_url: format!("https://{}:2379", url_host(cp.ip)),
        });
    }

    /// Starts etcd with `kv` and `node` as the first member, then lets every
    /// other configured control plane join.
    pub fn start_etcd(&mut self, node: &str, kv: BTreeMap<String, String>, revision: u64) {
        self.etcd = Some(Etcd {
            members: Vec::new(),
            kv,
            revision,
        });
        self.join(node);
        let others: Vec<String> = self.control_planes.keys().filter(|n| *n != node).cloned().collect();
        for other in others {
            self.join(&other);
        }
    }

    /// Removes `node` from etcd; when no member is left the data is gone.
    pub fn leave(&mut self, node: &str) {
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.members.retain(|m| m.node != node);
            if etcd.members.is_empty() {
                self.etcd = None;
            }
        }
    }

    /// Whether `node` is an etcd member (with real etcd: its member process runs).
    pub fn is_member(&self, node: &str) -> bool {
        if let Some(real) = &self.real {
            return self
                .control_planes
                .get(node)
                .is_some_and(|cp| real.is_running(&cp.hostname));
        }
        self.etcd
            .as_ref()
            .is_some_and(|e| e.members.iter().any(|m| m.node == node))
    }

    /// Whether etcd runs (and so the cluster has data).
    pub fn etcd_running(&self) -> bool {
        match &self.real {
            Some(real) => real.any_running(),
            None => self.etcd.is_some(),
        }
    }
}

fn url_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

const SNAPSHOT_MAGIC: &[u8] = b"talos-sim etcd snapshot v1\n";

/// Serialises etcd data like an etcd snapshot: the data followed by the
/// SHA-256 of everything before it (etcd appends a hash the same way).
pub fn encode_snapshot(etcd: &Etcd) -> Vec<u8> {
    let body = serde_json::json!({ "revision": etcd.revision, "kv": etcd.kv });
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.extend(serde_json::to_vec(&body).expect("a JSON value serialises"));
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

/// Reads a snapshot back, checking its trailing hash unless `skip_hash_check`.
pub fn decode_snapshot(bytes: &[u8], skip_hash_check: bool) -> Result<(BTreeMap<String, String>, u64), String> {
    if bytes.len() < SNAPSHOT_MAGIC.len() + 32 || !bytes.starts_with(SNAPSHOT_MAGIC) {
        return Err("snapshot is not an etcd snapshot".into());
    }
    let (content, hash) = bytes.split_at(bytes.len() - 32);
    if !skip_hash_check && Sha256::digest(content).as_slice() != hash {
        return Err("snapshot hash mismatch: the file is corrupt or truncated".into());
    }
    let body: serde_json::Value =
        serde_json::from_slice(&content[SNAPSHOT_MAGIC.len()..]).map_err(|e| format!("snapshot data: {e}"))?;
    let kv = serde_json::from_value(body["kv"].clone()).map_err(|e| format!("snapshot data: {e}"))?;
    Ok((kv, body["revision"].as_u64().unwrap_or(0)))
}

//! A protocol-faithful Talos node simulator: N nodes in one process, each a
//! gRPC (`machine.MachineService`) server with TLS on its own `IP:50000`.
//!
//! Nodes start in maintenance mode (throwaway certificate, reader rights),
//! accept ApplyConfiguration, "reboot" (listener closed for a while) and come
//! back in configured mode with an OS-CA-signed certificate and mandatory
//! client certificates. Each node also serves the COSI resource API
//! (`cosi.resource.State`) with its SystemInformation, Disks and MachineStatus
//! ([`hardware::Hardware`], configurable per node). Control planes share one [`cluster::ClusterState`]
//! per `cluster.id`, so Bootstrap, joins, snapshots and recovery are
//! consistent across nodes. Faults can be injected per node and every call is
//! logged. Never part of the `bootstrap` binary.

pub mod cluster;
pub mod cmd;
pub mod config;
pub mod fixtures;
pub mod hardware;
mod node;
pub mod pki;
pub mod resources;
mod service;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use node::lock;
pub use node::{NodeMode, SimNode};

/// How to run a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// First address of a /16 block (`A.B.0.0`) in 127.0.0.0/8; nodes get
    /// `A.B.(i / 250).(i % 250 + 1)`. `None` picks a free random block.
    pub base: Option<Ipv4Addr>,
    /// API port (Talos: 50000).
    pub port: u16,
    /// How long a reboot keeps the listener closed.
    pub reboot_delay: Duration,
    /// After a configured boot, how long Bootstrap/EtcdRecover answer
    /// FailedPrecondition ("not available yet").
    pub ready_delay: Duration,
    /// Server URL written into kubeconfigs instead of
    /// `cluster.controlPlane.endpoint` (e.g. the Kubernetes API simulator).
    pub kube_api_url: Option<String>,
    /// Version tag reported by Version.
    pub talos_version: String,
    /// Explicit node addresses (one node each, overriding `nodes` and
    /// `base`), e.g. the addresses an inventory names.
    pub addresses: Vec<IpAddr>,
    /// Run a real etcd member (`/usr/bin/etcd`) per control plane on its
    /// address (ports 2379/2380) instead of the in-memory stand-in.
    pub real_etcd: bool,
}

impl SimOptions {
    /// `nodes` nodes with the default timings.
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            base: None,
            port: bootstrap::talos::TALOS_API_PORT,
            reboot_delay: Duration::from_millis(300),
            ready_delay: Duration::from_millis(200),
            kube_api_url: None,
            talos_version: "v1.13.9".into(),
            addresses: Vec::new(),
            real_etcd: false,
        }
    }
}

/// Per-node fault injection knobs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added to every call before it is handled.
    pub latency: Duration,
    /// Answer the next N calls with UNAVAILABLE.
    pub refuse_next: u32,
    /// Break the next N server streams (Kubeconfig, EtcdSnapshot) after their
    /// first chunk with UNAVAILABLE.
    pub drop_next_streams: u32,
    /// Reboot duration instead of [`SimOptions::reboot_delay`] (a slow reboot).
    pub reboot_delay: Option<Duration>,
    /// The node does not come back after its next reboot.
    pub fail_reboot: bool,
    /// On its next configuration the node joins a cluster of its own instead
    /// of the one named by `cluster.id` (wrong cluster identity).
    pub wrong_cluster_identity: bool,
    /// Right after serving this RPC (e.g. `cosi.State/List`), new connections
    /// get a fresh throwaway certificate, as if another machine answered at
    /// the node's address. One-shot.
    pub swap_certificate_after: Option<&'static str>,
    /// After its next Upgrade the node boots the old version again (Talos
    /// falls back to the previous boot entry when the new one fails).
    pub upgrade_keeps_old_version: bool,
    /// After its next reboot the node's etcd is unhealthy (with real etcd:
    /// its member is not started again).
    pub etcd_unhealthy_after_reboot: bool,
    /// How long an Upgrade's installer runs before the reboot; meanwhile the
    /// node answers with MachineStatus stage Upgrading and the old version.
    pub upgrade_install: Option<Duration>,
    /// The Upgrade response is held this long after the upgrade started (a
    /// slow answer: a client killed meanwhile cannot know the upgrade began).
    pub upgrade_reply_delay: Option<Duration>,
}

/// One call a node received.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// RPC name, e.g. `ApplyConfiguration`.
    pub method: &'static str,
    /// When it arrived.
    pub at: SystemTime,
    /// Whether the RPC changes the node or cluster.
    pub mutating: bool,
    /// The node's mode when the call arrived.
    pub mode: NodeMode,
    /// The fault injected instead of handling it, if any.
    pub injected: Option<&'static str>,
}

/// State shared by all nodes of a simulator.
pub(crate) struct SimShared {
    pub options: SimOptions,
    pub kube_api_url: Mutex<Option<String>>,
    clusters: Mutex<HashMap<String, Arc<Mutex<cluster::ClusterState>>>>,
}

impl SimShared {
    /// The cluster state for `key`, created on first use.
    pub fn cluster(&self, key: &str) -> Arc<Mutex<cluster::ClusterState>> {
        lock(&self.clusters)
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(cluster::ClusterState {
                    real: self.options.real_etcd.then(Default::default),
                    ..Default::default()
                }))
            })
            .clone()
    }
}

/// A running simulated fleet.
pub struct TalosSim {
    shared: Arc<SimShared>,
    nodes: Vec<Arc<SimNode>>,
}

fn node_ip(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    let [a, b, _, _] = base.octets();
    Ipv4Addr::new(a, b, (i / 250) as u8, (i % 250 + 1) as u8)
}

impl TalosSim {
    /// Starts every node in maintenance mode. Without an explicit base, a
    /// random 127.X.Y.0 block is tried until all addresses bind.
    pub async fn start(options: SimOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(options.nodes <= 250 * 256, "at most {} nodes", 250 * 256);
        bootstrap::tls::install_crypto_provider();
        let mut attempts = 0;
        loop {
            let base = options
                .base
                .filter(|_| options.addresses.is_empty())
                .unwrap_or_else(|| Ipv4Addr::new(127, rand::random_range(2..=254), 0, 0));
            match Self::start_at(options.clone(), base).await {
                Ok(sim) => return Ok(sim),
                Err(e) if options.base.is_none() && attempts < 5 && e.to_string().contains("in use") => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_at(options: SimOptions, base: Ipv4Addr) -> anyhow::Result<Self> {
        let shared = Arc::new(SimShared {
            kube_api_url: Mutex::new(options.kube_api_url.clone()),
            options: options.clone(),
            clusters: Mutex::new(HashMap::new()),
        });
        let ips: Vec<IpAddr> = if options.addresses.is_empty() {
            (0..options.nodes).map(|i| IpAddr::V4(node_ip(base, i))).collect()
        } else {
            options.addresses.clone()
        };
        let nodes: Vec<Arc<SimNode>> = ips
            .into_iter()
            .enumerate()
            .map(|(i, ip)| {
                SimNode::new(
                    format!("node-{}", i + 1),
                    SocketAddr::new(ip, options.port),
                    shared.clone(),
                )
            })
            .collect();
        let sim = Self { shared, nodes };
        let boots = futures::future::join_all(sim.nodes.iter().map(|n| n.boot(Duration::ZERO))).await;
        if let Some(err) = boots.into_iter().find_map(Result::err) {
            sim.stop().await;
            anyhow::bail!("talos simulator: {err}");
        }
        Ok(sim)
    }

    /// Closes every listener.
    pub async fn stop(&self) {
        futures::future::join_all(self.nodes.iter().map(|n| n.shutdown())).await;
    }

    /// All nodes, in order.
    pub fn nodes(&self) -> &[Arc<SimNode>] {
        &self.nodes
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &Arc<SimNode> {
        &self.nodes[i]
    }

    /// Every node's API address, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }

    /// Points kubeconfigs served from now on at `url` (the Kubernetes API simulator).
    pub fn set_kube_api_url(&self, url: Option<String>) {
        *lock(&self.shared.kube_api_url) = url;
    }

    /// The shared state of the cluster `cluster_id`, for assertions and for
    /// writing data that snapshots must carry.
    pub fn cluster(&self, cluster_id: &str) -> Arc<Mutex<cluster::ClusterState>> {
        self.shared.cluster(cluster_id)
    }

    /// Client URLs of the cluster's running real etcd members (empty with the
    /// in-memory stand-in, see [`SimOptions::real_etcd`]).
    pub fn etcd_endpoints(&self, cluster_id: &str) -> Vec<String> {
        let cluster = self.cluster(cluster_id);
        let real = lock(&cluster).real.clone();
        real.map(|r| r.endpoints()).unwrap_or_default()
    }

    /// Writes a key into the cluster's in-memory etcd; false when it is not
    /// running (with real etcd, write through [`crate::etcd::EtcdClient`]).
    pub fn etcd_put(&self, cluster_id: &str, key: &str, value: &str) -> bool {
        let cluster = self.cluster(cluster_id);
        let mut cluster = lock(&cluster);
        match cluster.etcd.as_mut() {
            Some(etcd) => {
                etcd.kv.insert(key.to_owned(), value.to_owned());
                etcd.revision += 1;
                true
            }
            None => false,
        }
    }

    /// Reads a key from the cluster's in-memory etcd.
    pub fn etcd_get(&self, cluster_id: &str, key: &str) -> Option<String> {
        let cluster = self.cluster(cluster_id);
        let cluster = lock(&cluster);
        cluster.etcd.as_ref()?.kv.get(key).cloned()
    }
}

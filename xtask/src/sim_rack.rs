//! The simulated Talos rack: a Talos simulator node on every address an
//! inventory cluster names, plus the cluster's Kubernetes API, which (as on a
//! real rack) only comes up once etcd is bootstrapped: then a Kubernetes API
//! simulator starts on the cluster endpoint (`<endpoint>:6443`), serving with
//! the cluster CA from the applied machine configuration, and each configured
//! node registers itself as its kubelet would. Test support for `cargo xtask
//! demo`, the end-to-end tests and `bench up`; never part of `bootstrap`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bootstrap::inventory::Cluster;
use tokio::task::JoinHandle;

use crate::kube_sim::{self, KubeSim, NodeRegistration, SimTls};
use crate::talos_sim::config::MachineConfig;
use crate::talos_sim::{NodeMode, SimOptions, TalosSim};

/// How the rack behaves.
#[derive(Debug, Clone)]
pub struct RackOptions {
    /// How long a Talos reboot (after apply-config) keeps a node away.
    pub reboot_delay: Duration,
    /// How long Bootstrap answers "not available yet" after a configured boot.
    pub ready_delay: Duration,
    /// Kubernetes controller delays (CRDs, workloads, nodes Ready).
    pub behaviour: kube_sim::Behaviour,
}

impl Default for RackOptions {
    fn default() -> Self {
        Self {
            reboot_delay: Duration::from_millis(300),
            ready_delay: Duration::from_millis(200),
            behaviour: kube_sim::Behaviour::default(),
        }
    }
}

/// A running simulated rack for one cluster.
pub struct SimRack {
    /// The Talos nodes, in inventory order.
    pub talos: TalosSim,
    kube: Arc<Mutex<Option<Arc<KubeSim>>>>,
    watcher: JoinHandle<()>,
}

impl Drop for SimRack {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl SimRack {
    /// Starts a Talos node (maintenance mode) on every node address of
    /// `cluster`, and the watcher that brings the Kubernetes API up after
    /// etcd bootstrap. Addresses must be loopback.
    pub async fn start(cluster: &Cluster, options: RackOptions) -> Result<Self> {
        Self::start_with(cluster, options, false).await
    }

    /// [`SimRack::start`] with real etcd: one `/usr/bin/etcd` member per
    /// control plane behind the Talos nodes, and the Kubernetes API simulator
    /// keeping its objects in it, so a wipe loses them and a restore brings
    /// them back. Opt-in: each member costs a process and a second or so.
    pub async fn start_real_etcd(cluster: &Cluster, options: RackOptions) -> Result<Self> {
        anyhow::ensure!(
            crate::etcd::member::available(),
            "real etcd needs {} and {} (Debian etcd-server, etcd-client)",
            crate::etcd::member::ETCD,
            crate::etcd::member::ETCDCTL
        );
        Self::start_with(cluster, options, true).await
    }

    async fn start_with(cluster: &Cluster, options: RackOptions, real_etcd: bool) -> Result<Self> {
        let addresses: Vec<IpAddr> = cluster.nodes.iter().map(|n| n.ip).collect();
        if let Some(ip) = addresses.iter().find(|ip| !ip.is_loopback()) {
            anyhow::bail!("the simulated rack only binds loopback addresses; {ip} is not one");
        }
        let api: SocketAddr = format!("{}:6443", cluster.endpoint)
            .parse()
            .with_context(|| format!("cluster endpoint {:?} is not an IP address", cluster.endpoint))?;
        anyhow::ensure!(
            api.ip().is_loopback(),
            "the cluster endpoint {api} is not a loopback address"
        );
        let talos = TalosSim::start(SimOptions {
            addresses,
            reboot_delay: options.reboot_delay,
            ready_delay: options.ready_delay,
            real_etcd,
            ..SimOptions::new(cluster.nodes.len())
        })
        .await?;
        let kube = Arc::new(Mutex::new(None));
        let watcher = tokio::spawn(watch(talos.nodes().to_vec(), api, options.behaviour, kube.clone()));
        Ok(Self { talos, kube, watcher })
    }

    /// The Kubernetes API simulator, once etcd was bootstrapped.
    pub fn kube(&self) -> Option<Arc<KubeSim>> {
        self.kube.lock().expect("kube lock").clone()
    }

    /// Mutating calls every Talos node received so far: `(node address, RPC)`.
    pub fn talos_mutations(&self) -> Vec<(SocketAddr, &'static str)> {
        self.talos
            .nodes()
            .iter()
            .flat_map(|n| {
                n.calls()
                    .into_iter()
                    .filter(|c| c.mutating && c.injected.is_none())
                    .map(|c| (n.addr(), c.method))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Forgets the Talos call logs and the Kubernetes request log.
    pub fn clear_logs(&self) {
        for n in self.talos.nodes() {
            n.clear_calls();
        }
        if let Some(k) = self.kube() {
            k.clear_requests();
        }
    }

    /// Stops every listener.
    pub async fn stop(&self) {
        self.watcher.abort();
        self.kube.lock().expect("kube lock").take();
        self.talos.stop().await;
    }
}

/// Every 50 ms: once some node's cluster has etcd running, start the API on
/// the endpoint with that cluster's CA; register configured nodes once.
/// With real etcd the API stops when etcd has no member left (a wipe) and
/// starts again, loading its objects from etcd, when etcd is back.
async fn watch(
    nodes: Vec<Arc<crate::talos_sim::SimNode>>,
    api: SocketAddr,
    behaviour: kube_sim::Behaviour,
    slot: Arc<Mutex<Option<Arc<KubeSim>>>>,
) {
    // Node name → the config it registered with (a kubelet re-registers, with
    // its new version, after its config changed) and its API server's tag.
    let mut registered: BTreeMap<String, (Arc<MachineConfig>, Option<String>)> = BTreeMap::new();
    // Node name → the Node it registered.
    let mut hostnames: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let mut current = slot.lock().expect("kube lock").clone();
        if current.as_ref().is_some_and(|k| k.etcd_backed()) && !real_etcd_running(&nodes) {
            slot.lock().expect("kube lock").take();
            current = None;
        }
        let kube = match current {
            Some(k) => k,
            None => match start_api(&nodes, api, &behaviour).await {
                Ok(Some(k)) => {
                    let k = Arc::new(k);
                    *slot.lock().expect("kube lock") = Some(k.clone());
                    registered.clear();
                    hostnames.clear();
                    k
                }
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("sim_rack: cannot start the Kubernetes API simulator: {e:#}");
                    continue;
                }
            },
        };
        // A registered node whose machine is down (rebooting, reset) stops posting status.
        kube.set_kubelets_stopped(
            nodes
                .iter()
                .filter_map(|n| Some((hostnames.get(n.name())?.as_str(), !n.is_up()))),
        );
        let mut changed = false;
        for n in &nodes {
            let Some(config) = n.config().filter(|_| n.is_up() && n.mode() == NodeMode::Configured) else {
                continue;
            };
            if registered.get(n.name()).is_some_and(|(c, _)| Arc::ptr_eq(c, &config)) {
                continue;
            }
            let document = v1alpha1(&config);
            let reg = registration(n, &config, &document);
            hostnames.insert(n.name().to_owned(), reg.name.clone());
            kube.register(reg);
            let api_tag = image_tag(&document, &["cluster", "apiServer", "image"]);
            registered.insert(n.name().to_owned(), (config, api_tag));
            changed = true;
        }
        // Each kube-apiserver serves `/version` from its own build (k8s.io/component-base/version);
        // behind the endpoint any of them may answer mid-upgrade, so report the oldest.
        let oldest = registered
            .values()
            .filter_map(|(_, tag)| tag.as_deref())
            .min_by_key(|v| version_key(v));
        if let Some(oldest) = oldest.filter(|_| changed) {
            kube.set_server_version(oldest);
        }
    }
}

/// The tag of the image at `path` in the config's v1alpha1 document (`ghcr.io/siderolabs/kubelet:v1.34.2` → `v1.34.2`).
fn image_tag(document: &yaml_serde::Value, path: &[&str]) -> Option<String> {
    let image = path.iter().try_fold(document, |v, k| v.get(*k))?.as_str()?;
    Some(image.rsplit_once(':')?.1.to_owned())
}

/// The config's v1alpha1 document (the one without `kind`), or null.
fn v1alpha1(config: &MachineConfig) -> yaml_serde::Value {
    yaml_serde::Deserializer::from_str(&config.raw)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .find(|v: &yaml_serde::Value| v.get("kind").is_none() && v.get("machine").is_some())
        .unwrap_or_default()
}

/// `v1.34.2` → (1, 34, 2), for ordering versions.
fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split(['.', '-', '+'])
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The Node a Talos node's kubelet registers. Upstream: Talos machine config reference
/// (`machine.nodeLabels`, `machine.nodeTaints` as `key: value:Effect`; control planes get the
/// `node-role.kubernetes.io/control-plane` label, and its NoSchedule taint unless
/// `cluster.allowSchedulingOnControlPlanes`).
/// `config` is the node's, `raw` its v1alpha1 document.
fn registration(n: &crate::talos_sim::SimNode, config: &MachineConfig, raw: &yaml_serde::Value) -> NodeRegistration {
    let mut reg = NodeRegistration {
        name: n.hostname(),
        internal_ip: Some(n.addr().ip()),
        ..Default::default()
    };
    // Talos machine config reference: `machine.kubelet.image` is the kubelet that runs.
    reg.kubelet_version = image_tag(raw, &["machine", "kubelet", "image"]);
    let strings = |v: Option<&yaml_serde::Value>| -> Vec<(String, String)> {
        v.and_then(yaml_serde::Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str().unwrap_or_default().to_owned())))
            .collect()
    };
    let machine = raw.get("machine");
    reg.labels = strings(machine.and_then(|m| m.get("nodeLabels"))).into_iter().collect();
    for (key, v) in strings(machine.and_then(|m| m.get("nodeTaints"))) {
        let (value, effect) = v.rsplit_once(':').unwrap_or(("", v.as_str()));
        reg.taints.push((key, value.to_owned(), effect.to_owned()));
    }
    if config.machine_type == crate::talos_sim::config::MachineType::ControlPlane {
        reg.labels
            .insert("node-role.kubernetes.io/control-plane".into(), String::new());
        let schedulable = raw
            .get("cluster")
            .and_then(|c| c.get("allowSchedulingOnControlPlanes"))
            .and_then(yaml_serde::Value::as_bool)
            .unwrap_or(false);
        if !schedulable {
            reg.taints.push((
                "node-role.kubernetes.io/control-plane".into(),
                String::new(),
                "NoSchedule".into(),
            ));
        }
    }
    reg
}

/// Whether some node's cluster runs real etcd with a member up.
fn real_etcd_running(nodes: &[Arc<crate::talos_sim::SimNode>]) -> bool {
    nodes.iter().any(|n| {
        n.cluster().is_some_and(|c| {
            let c = c.lock().expect("cluster lock");
            c.real.is_some() && c.etcd_running()
        })
    })
}

/// Starts the API once a control plane's cluster has etcd; `None` before that.
async fn start_api(
    nodes: &[Arc<crate::talos_sim::SimNode>],
    api: SocketAddr,
    behaviour: &kube_sim::Behaviour,
) -> Result<Option<KubeSim>> {
    let Some((config, cluster)) = nodes.iter().find_map(|n| {
        let config = n.config()?;
        config.k8s_ca_key.as_ref()?;
        let cluster = n.cluster()?;
        let etcd_up = n.is_up() && cluster.lock().expect("cluster lock").etcd_running();
        etcd_up.then_some((config, cluster))
    }) else {
        return Ok(None);
    };
    // kube-apiserver's --etcd-servers: every control plane's etcd, running members first.
    let etcd = {
        let c = cluster.lock().expect("cluster lock");
        match &c.real {
            Some(real) => {
                let mut urls = real.endpoints();
                for cp in c.control_planes.values() {
                    let url = crate::etcd::member::client_url(cp.ip);
                    if !urls.contains(&url) {
                        urls.push(url);
                    }
                }
                urls
            }
            None => Vec::new(),
        }
    };
    let key = config.k8s_ca_key.as_deref().unwrap_or_default();
    let sans = vec![
        api.ip().to_string(),
        "localhost".into(),
        "kubernetes.default.svc".into(),
    ];
    let tls = SimTls::with_ca(&config.k8s_ca_crt, key, &sans)?;
    let sim = KubeSim::start(kube_sim::SimOptions {
        bind: api,
        tls: Some(tls),
        behaviour: behaviour.clone(),
        cluster_name: config.cluster_name.clone(),
        etcd,
    })
    .await?;
    Ok(Some(sim))
}

/// A directory of the pinned CRD files `phases/crds.toml` names, copied from
/// the reference copies in `shared/crds/` beside the repository (or beside a
/// worktree's parent), for `up --artifacts DIR`: tests, demos and benchmarks
/// never download. Copies, not links, so a test that tampers with one never
/// touches `shared/`. Errors when the reference copies are not there.
pub fn offline_crds(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root
        .ancestors()
        .skip(1)
        .take(3)
        .map(|a| a.join("shared/crds"))
        .find(|p| p.is_dir())
        .context("shared/crds (reference CRDs) not found beside the repository")?;
    std::fs::create_dir_all(dir)?;
    for sub in std::fs::read_dir(&shared)? {
        let sub = sub?.path();
        if !sub.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&sub)? {
            let file = file?.path();
            let copy = dir.join(file.file_name().context("file name")?);
            if !copy.exists() {
                std::fs::copy(&file, &copy).with_context(|| format!("copying to {}", copy.display()))?;
            }
        }
    }
    Ok(dir.to_path_buf())
}

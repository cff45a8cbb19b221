//! A Kubernetes API simulator: HTTPS with client-certificate auth, speaking
//! enough of the real REST API (discovery, CRUD, server-side apply, watch,
//! status) for `kube` (kube-rs) to work against it unchanged. Status is
//! simulated (see [`controllers`]); faults can be injected and requests are
//! logged. Test tooling only, never part of the `bootstrap` product.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = xtask::kube_sim::KubeSim::start(Default::default()).await?;
//! std::fs::write("kubeconfig", sim.admin_kubeconfig())?;
//! sim.register_node("cp-1");
//! # Ok(()) }
//! ```

pub mod admit;
mod api;
pub mod charts;
pub mod cli;
pub mod controllers;
pub mod decode;
pub mod discovery;
pub mod events;
pub mod eviction;
pub mod faults;
pub mod field;
pub mod flux;
pub mod helm;
pub mod kubelet;
pub mod lifecycle;
pub mod negotiate;
pub mod openapi;
pub mod path;
pub mod persist;
pub mod protobuf;
pub mod resources;
pub mod scheduler;
pub mod schema;
pub mod selector;
pub mod smp;
pub mod ssa;
pub mod store;
#[cfg(test)]
mod strict_tests;
pub mod table;
pub mod tls;
pub mod validate;
pub mod workloads;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use controllers::{Behaviour, HOLD_ANNOTATION};
pub use faults::{Fault, FaultKind, RequestRecord};
pub use tls::{ClientCert, SimTls};

use resources::{GroupResource, ResourceType};
use store::Store;

/// State shared by the connection handlers and the controllers.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Mutex<faults::Faults>,
    pub(crate) requests: Mutex<Vec<RequestRecord>>,
    pub(crate) behaviour: Mutex<Behaviour>,
    pub(crate) builtins: Vec<ResourceType>,
    pub(crate) addr: SocketAddr,
    /// Write-through to etcd (`SimOptions::etcd`).
    pub(crate) persist: Option<persist::Persist>,
    /// What `/version` reports (`gitVersion`).
    pub(crate) server_version: Mutex<String>,
}

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Certificates to serve with; generated (valid for the bind IP, `localhost`
    /// and `kubernetes.default.svc`) when `None`.
    pub tls: Option<SimTls>,
    pub behaviour: Behaviour,
    /// Cluster name written into the admin kubeconfig.
    pub cluster_name: String,
    /// etcd client URLs: when set, objects are loaded from etcd at start
    /// and every change is written through (`/registry/...` keys).
    pub etcd: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            behaviour: Behaviour::default(),
            cluster_name: "sim".into(),
            etcd: Vec::new(),
        }
    }
}

/// Reference material in `shared/` beside the workspace (or beside a worktree's parent):
/// `<dir>/shared/<rel>` for the first ancestor that has it, else `<workspace>/../shared/<rel>`.
pub fn shared_path(rel: &str) -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .ancestors()
        .skip(1)
        .take(3)
        .map(|a| a.join("shared").join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| xtask.join("../../shared").join(rel))
}

/// A Node to register, as a kubelet would.
#[derive(Clone, Debug, Default)]
pub struct NodeRegistration {
    pub name: String,
    pub internal_ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// `(key, value, effect)`, as `--register-with-taints` (or Talos' `machine.nodeTaints`) sets them.
    pub taints: Vec<(String, String, String)>,
    /// `status.nodeInfo.kubeletVersion` (k3s reports its own, e.g. `v1.34.1+k3s1`); default v1.34.1.
    pub kubelet_version: Option<String>,
}

/// A running simulator; stops (closing every connection) when dropped.
pub struct KubeSim {
    shared: Arc<Shared>,
    tls: SimTls,
    admin_kubeconfig: Option<String>,
    url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KubeSim {
    /// Binds, then serves in the background on the current tokio runtime.
    pub async fn start(opts: SimOptions) -> Result<Self> {
        bootstrap::tls::install_crypto_provider();
        let listener = TcpListener::bind(opts.bind)
            .await
            .with_context(|| format!("kube-sim: cannot bind {}", opts.bind))?;
        let addr = listener.local_addr()?;
        let tls = match opts.tls {
            Some(t) => t,
            None => SimTls::generate(&[
                addr.ip().to_string(),
                "localhost".into(),
                "kubernetes".into(),
                "kubernetes.default.svc".into(),
            ])?,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config()?));
        let url = format!("https://{addr}");
        let admin_kubeconfig = match tls.ca_key_pem {
            Some(_) => {
                let cert = tls.issue_client_cert("admin", Some("system:masters"))?;
                Some(tls::kubeconfig(
                    &opts.cluster_name,
                    &url,
                    &tls.ca_cert_pem,
                    "admin",
                    &cert,
                ))
            }
            None => None,
        };
        let builtins = resources::builtins();
        let store = Mutex::new(Store::default());
        let mut tasks = Vec::new();
        let persist = if opts.etcd.is_empty() {
            None
        } else {
            let loaded = persist::load(&opts.etcd, &store)
                .await
                .context("kube-sim: loading from etcd")?;
            tracing::debug!(target: "kube_sim", loaded, "objects loaded from etcd");
            let gr = builtins
                .iter()
                .map(|t| GroupResource::new(&t.group, &t.plural))
                .collect();
            let (p, task) = persist::Persist::start(&opts.etcd, gr);
            store.lock().expect("store lock").set_persist(p.clone());
            tasks.push(task);
            Some(p)
        };
        let shared = Arc::new(Shared {
            store,
            faults: Mutex::default(),
            requests: Mutex::default(),
            behaviour: Mutex::new(opts.behaviour),
            builtins,
            addr,
            persist,
            server_version: Mutex::new("v1.34.1".into()),
        });
        {
            let mut store = shared.store.lock().expect("store lock");
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                if store.get(&GroupResource::new("", "namespaces"), "", ns).is_some() {
                    continue;
                }
                store.put(
                    &GroupResource::new("", "namespaces"),
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "generation": 1},
                           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
                );
            }
            // Upstream: kube-apiserver's RBAC bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy)
            // creates the cluster-admin ClusterRole at start.
            let cluster_admin = GroupResource::new("rbac.authorization.k8s.io", "clusterroles");
            if store.get(&cluster_admin, "", "cluster-admin").is_none() {
                store.put(
                    &cluster_admin,
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                                    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
                       "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                 {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
                );
            }
        }
        let serve = tokio::spawn(serve(listener, acceptor, shared.clone()));
        let ctrl = tokio::spawn(controllers::run(shared.clone()));
        tracing::debug!(target: "kube_sim", %url, "kube-sim listening");
        Ok(Self {
            shared,
            tls,
            admin_kubeconfig,
            url,
            tasks: {
                tasks.extend([serve, ctrl]);
                tasks
            },
        })
    }

    /// `https://IP:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The CA (PEM) that signed the server certificate and verifies clients.
    pub fn ca_pem(&self) -> &str {
        &self.tls.ca_cert_pem
    }

    /// The TLS material in use.
    pub fn tls(&self) -> &SimTls {
        &self.tls
    }

    /// A kubeconfig (YAML) for `admin` (O=system:masters). Panics when the
    /// simulator was given a CA without its key; use [`KubeSim::kubeconfig_for`] then.
    pub fn admin_kubeconfig(&self) -> &str {
        self.admin_kubeconfig
            .as_deref()
            .expect("kube-sim: no CA key was given, so there is no admin kubeconfig")
    }

    /// A kubeconfig authenticating with a given client certificate.
    pub fn kubeconfig_for(&self, user: &str, cert: &ClientCert) -> String {
        tls::kubeconfig("sim", &self.url, &self.tls.ca_cert_pem, user, cert)
    }

    /// Registers a Node (NotReady until a CNI runs on it).
    pub fn register_node(&self, name: &str) {
        self.register(NodeRegistration {
            name: name.to_owned(),
            ..Default::default()
        });
    }

    /// Registers a Node with an address and labels.
    pub fn register(&self, node: NodeRegistration) {
        let mut labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", node.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        labels.extend(node.labels);
        let mut addresses = vec![json!({"type": "Hostname", "address": node.name})];
        if let Some(ip) = node.internal_ip {
            addresses.insert(0, json!({"type": "InternalIP", "address": ip.to_string()}));
        }
        let gr = GroupResource::new("", "nodes");
        let mut store = self.shared.store.lock().expect("store lock");
        let mut obj = store.get(&gr, "", &node.name).cloned().unwrap_or_else(|| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name, "generation": 1}, "spec": {},
                   "status": {"conditions": [], "nodeInfo": {"kubeletVersion": "v1.34.1", "containerRuntimeVersion": "containerd://2.1.4",
                              "operatingSystem": "linux", "architecture": "amd64"}}})
        });
        obj["metadata"]["labels"] = json!(labels);
        let mut taints: Vec<Value> = node
            .taints
            .iter()
            .map(|(key, value, effect)| match value.as_str() {
                "" => json!({"key": key, "effect": effect}),
                v => json!({"key": key, "value": v, "effect": effect}),
            })
            .collect();
        taints.extend(
            obj.pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| t["key"] == "node.kubernetes.io/not-ready")
                .cloned(),
        );
        obj["spec"]["taints"] = Value::Array(taints);
        obj["status"]["addresses"] = Value::Array(addresses);
        if let Some(v) = node.kubelet_version {
            obj["status"]["nodeInfo"]["kubeletVersion"] = json!(v);
        }
        store.put(&gr, obj);
    }

    /// Marks the kubelets of Nodes `(name, stopped)` as no longer posting status (their
    /// machines are down) or posting again; the node lifecycle controller then
    /// reports such a Node's Ready condition Unknown. Nodes not registered are skipped.
    /// One store lock for all of them: the rack asks for every node every tick.
    pub fn set_kubelets_stopped<'a>(&self, nodes: impl IntoIterator<Item = (&'a str, bool)>) {
        let gr = GroupResource::new("", "nodes");
        let mut store = self.shared.store.lock().expect("store lock");
        for (name, stopped) in nodes {
            // Looked at before anything is copied.
            let Some(current) = store.get(&gr, "", name) else {
                continue;
            };
            let had = current
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(controllers::KUBELET_STOPPED_ANNOTATION))
                .is_some();
            if had == stopped {
                continue;
            }
            let mut obj = current.clone();
            let annotations = &mut obj["metadata"]["annotations"];
            if !annotations.is_object() {
                *annotations = json!({});
            }
            let map = annotations.as_object_mut().expect("an object");
            if stopped {
                map.insert(controllers::KUBELET_STOPPED_ANNOTATION.into(), json!("true"));
            } else {
                map.remove(controllers::KUBELET_STOPPED_ANNOTATION);
            }
            store.put(&gr, obj);
        }
    }

    /// Sets the version `/version` reports from now on (the API servers'
    /// image tag on a simulated Talos rack).
    pub fn set_server_version(&self, version: &str) {
        *self.shared.server_version.lock().expect("version lock") = version.to_owned();
    }

    /// Changes the controllers' delays and CNI from now on.
    pub fn set_behaviour(&self, b: Behaviour) {
        *self.shared.behaviour.lock().expect("behaviour lock") = b;
    }

    /// Adds a fault for upcoming requests.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.lock().expect("faults lock").push(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().expect("log lock").clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().expect("log lock").clear();
    }

    /// An object as stored, by API group, plural resource name, namespace ("" when cluster-scoped) and name.
    pub fn object(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().expect("store lock");
        store
            .get(&GroupResource::new(group, resource), namespace, name)
            .cloned()
    }

    /// Every stored object of one collection, all namespaces.
    pub fn list(&self, group: &str, resource: &str) -> Vec<Value> {
        let store = self.shared.store.lock().expect("store lock");
        store
            .list(&GroupResource::new(group, resource), None)
            .cloned()
            .collect()
    }

    /// Whether objects are kept in etcd.
    pub fn etcd_backed(&self) -> bool {
        self.shared.persist.is_some()
    }

    /// Waits until every change so far is in etcd (no-op without etcd).
    pub async fn flushed(&self) {
        if let Some(p) = &self.shared.persist {
            let rv = self.resource_version();
            p.flushed(rv).await;
        }
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().expect("store lock").resource_version()
    }
}

/// Accepts TLS connections and serves HTTP/1.1 and HTTP/2 on each.
async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(target: "kube_sim", "accept failed: {e}");
                    continue;
                }
            },
            Some(_) = conns.join_next() => continue,
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        conns.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(target: "kube_sim", %peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            let user: Arc<str> = peer_common_name(tls.get_ref().1).into();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                api::handle(shared.clone(), req.map(axum::body::Body::new), user.clone())
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(target: "kube_sim", %peer, "connection ended: {e}");
            }
        });
    }
}

/// The client certificate's subject CN (the Kubernetes user name).
fn peer_common_name(conn: &rustls::ServerConnection) -> String {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default()
}

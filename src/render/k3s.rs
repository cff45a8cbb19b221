//! k3s: per node `config.yaml` (for `/etc/rancher/k3s/`) and an air-gapped,
//! idempotent `install.sh`, from `templates/k3s/`. Patches (all → role →
//! node) are merged into `config.yaml`.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use minijinja::context;
use serde::Serialize;

use super::patch::Patch;
use super::registries::{self, K3sRegistries};
use super::secrets::K3sSecrets;
use super::templates::Templates;
use super::{load_patches, parse_documents, serialize_documents};
use crate::inventory::{Cluster, Cni, Node, Role};

/// Renders the k3s files of one cluster.
pub struct K3sRenderer<'a> {
    cluster: &'a Cluster,
    templates: Templates,
    cluster_ctx: minijinja::Value,
    token: String,
    first_server: &'a Node,
    registries: Option<K3sRegistries>,
    all: Vec<Patch>,
    controlplane: Vec<Patch>,
    worker: Vec<Patch>,
}

#[derive(Serialize)]
struct ClusterCtx<'a> {
    name: &'a str,
    endpoint: &'a str,
    pod_cidr: String,
    service_cidr: String,
    dns_domain: &'a str,
    disable: &'a [String],
    cilium: bool,
    version: &'a str,
    /// k3s's embedded Spegel (servers turn it on for the cluster).
    embedded_registry: bool,
}

#[derive(Serialize)]
struct NodeCtx<'a> {
    name: &'a str,
    ip: String,
    server: bool,
    cluster_init: bool,
    server_url: Option<String>,
    tls_san: Vec<String>,
    labels: Vec<String>,
    taints: Vec<String>,
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl<'a> K3sRenderer<'a> {
    /// Prepares templates, contexts and cluster-wide patches.
    pub fn new(cluster: &'a Cluster, secrets: &K3sSecrets) -> Result<Self> {
        let Some(first_server) = cluster.control_planes().next() else {
            bail!(
                "cluster {}: a k3s cluster needs at least one controlplane node",
                cluster.name
            );
        };
        let net = &cluster.network;
        let cctx = ClusterCtx {
            name: &cluster.name,
            endpoint: &cluster.endpoint,
            pod_cidr: net.pod_cidr.to_string(),
            service_cidr: net.service_cidr.to_string(),
            dns_domain: &net.cluster_domain,
            disable: &cluster.k3s.disable,
            cilium: cluster.cni == Cni::Cilium,
            version: &cluster.versions.k3s,
            embedded_registry: registries::uses_k3s_embedded_registry(cluster),
        };
        let p = &cluster.patches;
        let ctx = |e: anyhow::Error| e.context(format!("cluster {}", cluster.name));
        Ok(Self {
            cluster,
            templates: Templates::new(cluster.templates.as_deref()),
            cluster_ctx: super::templates::value(&cctx),
            token: secrets.k3s.token.clone(),
            first_server,
            registries: registries::k3s_registries(cluster).map_err(ctx)?,
            all: load_patches(&p.all).map_err(ctx)?,
            controlplane: load_patches(&p.controlplane).map_err(ctx)?,
            worker: load_patches(&p.worker).map_err(ctx)?,
        })
    }

    /// `config.yaml` of `node`.
    pub fn node_config(&self, node: &Node) -> Result<String> {
        let c = self.cluster;
        let server = node.role == Role::Controlplane;
        let first = node.name == self.first_server.name;
        let mut tls_san = vec![c.endpoint.clone()];
        for s in c
            .network
            .vip
            .map(|v| v.to_string())
            .into_iter()
            .chain([node.ip.to_string()])
        {
            if !tls_san.contains(&s) {
                tls_san.push(s);
            }
        }
        let nctx = NodeCtx {
            name: &node.name,
            ip: node.ip.to_string(),
            server,
            cluster_init: first,
            server_url: (!first).then(|| format!("https://{}:6443", url_host(self.first_server.ip))),
            tls_san,
            labels: node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            taints: node.taints.iter().map(ToString::to_string).collect(),
        };
        let t = "k3s/config.yaml.j2";
        let text = self
            .templates
            .render(
                t,
                context! { cluster => &self.cluster_ctx, node => super::templates::value(&nctx), token => &self.token },
            )
            .with_context(|| format!("node {}: rendering the k3s config", node.name))?;
        let mut docs = parse_documents(&text)
            .with_context(|| format!("node {}: {} produced invalid YAML", node.name, self.templates.origin(t)))?;
        let role_patches = if server { &self.controlplane } else { &self.worker };
        let node_patches = load_patches(&node.patches).with_context(|| format!("node {}", node.name))?;
        for p in self.all.iter().chain(role_patches).chain(&node_patches) {
            p.apply(&mut docs).with_context(|| format!("node {}", node.name))?;
        }
        Ok(serialize_documents(&docs))
    }

    /// `/etc/rancher/k3s/registries.yaml` of every node, when the cluster has one.
    pub fn registries_yaml(&self) -> Option<&str> {
        self.registries.as_ref().map(|r| r.yaml.as_str())
    }

    /// `install.sh` of `node` (holds no secret; embeds `registries.yaml` and its CA files).
    pub fn install_script(&self, node: &Node) -> Result<String> {
        let c = self.cluster;
        let (role, unit) = match node.role {
            Role::Controlplane => ("server", "k3s"),
            Role::Worker => ("agent", "k3s-agent"),
        };
        self.templates
            .render(
                "k3s/install.sh.j2",
                context! {
                    cluster => &self.cluster_ctx,
                    node => context! { name => &node.name, ip => node.ip.to_string() },
                    role => role,
                    unit => unit,
                    version => &c.versions.k3s,
                    sha256 => c.k3s.binary_sha256.as_deref().unwrap_or(""),
                    registries => super::templates::value(&self.registries),
                },
            )
            .with_context(|| format!("node {}: rendering the k3s install script", node.name))
    }
}

/// `config.yaml` of one node (see [`K3sRenderer`] to render many).
pub fn node_config(cluster: &Cluster, node: &Node, secrets: &K3sSecrets) -> Result<String> {
    K3sRenderer::new(cluster, secrets)?.node_config(node)
}

/// `install.sh` of one node.
pub fn install_script(cluster: &Cluster, node: &Node, secrets: &K3sSecrets) -> Result<String> {
    K3sRenderer::new(cluster, secrets)?.install_script(node)
}

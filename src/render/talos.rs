//! Talos machine configs (one per node) and `talosconfig`, from the
//! templates under `templates/talos/`, then the cluster's patches
//! (all → role → node). Pure: same cluster + bundle = same bytes.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use minijinja::context;
use serde::Serialize;

use super::patch::Patch;
use super::registries;
use super::secrets::TalosBundle;
use super::templates::Templates;
use super::{load_patches, parse_documents, serialize_documents};
use crate::inventory::{Cluster, Cni, DiskSelector, Node, Role, SizeRange};

/// Name given to the NIC chosen by MAC (LinkAliasConfig).
pub const LINK_ALIAS: &str = "net0";
/// KubePrism port: the node-local API load balancer Cilium talks to.
pub const KUBEPRISM_PORT: u16 = 7445;

/// Renders the Talos files of one cluster, sharing templates, contexts and
/// cluster-wide patches between nodes.
pub struct TalosRenderer {
    /// Its own copy: a renderer outlives the borrow it was made from (one per run of a phase).
    cluster: Cluster,
    templates: Templates,
    cluster_ctx: minijinja::Value,
    cp_secrets: minijinja::Value,
    worker_secrets: minijinja::Value,
    admin_ctx: minijinja::Value,
    all: Vec<Patch>,
    controlplane: Vec<Patch>,
    worker: Vec<Patch>,
}

#[derive(Serialize)]
struct ClusterCtx<'a> {
    name: &'a str,
    endpoint: &'a str,
    api_url: String,
    kubernetes_version: &'a str,
    talos_version: &'a str,
    install_image: &'a str,
    node_cidr: String,
    gateway: String,
    nameservers: Vec<String>,
    pod_cidr: String,
    service_cidr: String,
    dns_domain: &'a str,
    vip: Option<String>,
    cni_name: &'static str,
    proxy_disabled: bool,
    api_cert_sans: Vec<String>,
    controlplane_ips: Vec<String>,
    schedule_on_controlplanes: bool,
    kubeprism_port: u16,
    /// The CRI fragment that keeps unpacked layers for Spegel.
    cri_customization: CriPart,
    /// RegistryMirrorConfig / RegistryTLSConfig documents.
    registry_documents: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct CriPart {
    path: &'static str,
    content: &'static str,
}

#[derive(Serialize)]
struct CertKeyCtx<'a> {
    crt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

#[derive(Serialize)]
struct SecretsCtx<'a> {
    machine_token: &'a str,
    cluster_id: &'a str,
    cluster_secret: &'a str,
    bootstrap_token: &'a str,
    os_ca: CertKeyCtx<'a>,
    k8s_ca: CertKeyCtx<'a>,
    // Encryption secrets: `none` when the bundle has none (and always on workers).
    secretbox: Option<&'a str>,
    aescbc: Option<&'a str>,
    // Control planes only: absent (undefined) in a worker's context.
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregator_ca: Option<CertKeyCtx<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_ca: Option<CertKeyCtx<'a>>,
}

#[derive(Serialize)]
struct NodeCtx<'a> {
    name: &'a str,
    role: &'static str,
    ip: String,
    address: String,
    mac: Option<String>,
    link: Option<&'static str>,
    cert_sans: Vec<String>,
    install: InstallCtx,
    /// Data disks that become Talos user volumes (`UserVolumeConfig`); Ceph disks stay raw.
    volumes: Vec<VolumeCtx>,
    labels: &'a BTreeMap<String, String>,
    taints: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct VolumeCtx {
    name: String,
    /// CEL over Talos's disk environment.
    r#match: String,
    min_size: String,
    filesystem: String,
}

#[derive(Serialize)]
struct InstallCtx {
    disk: Option<String>,
    selector: Option<BTreeMap<&'static str, String>>,
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

impl TalosRenderer {
    /// Prepares templates, contexts and cluster-wide patches.
    pub fn new(cluster: &Cluster, bundle: &TalosBundle) -> Result<Self> {
        let net = &cluster.network;
        let cilium = cluster.cni == Cni::Cilium;
        let mut api_cert_sans = vec![cluster.endpoint.clone()];
        if let Some(vip) = net.vip {
            push_unique(&mut api_cert_sans, vip.to_string());
        }
        let cctx = ClusterCtx {
            name: &cluster.name,
            endpoint: &cluster.endpoint,
            api_url: cluster.api_url(),
            kubernetes_version: &cluster.versions.kubernetes,
            talos_version: &cluster.versions.talos,
            install_image: &cluster.talos.install_image,
            node_cidr: net.node_cidr.trunc().to_string(),
            gateway: net.gateway.to_string(),
            nameservers: net.nameservers.iter().map(ToString::to_string).collect(),
            pod_cidr: net.pod_cidr.to_string(),
            service_cidr: net.service_cidr.to_string(),
            dns_domain: &net.cluster_domain,
            vip: net.vip.map(|v| v.to_string()),
            cni_name: if cilium { "none" } else { "flannel" },
            proxy_disabled: cilium,
            api_cert_sans,
            controlplane_ips: cluster.control_planes().map(|n| n.ip.to_string()).collect(),
            schedule_on_controlplanes: cluster.workers().next().is_none(),
            kubeprism_port: KUBEPRISM_PORT,
            cri_customization: CriPart {
                path: registries::TALOS_CRI_CUSTOMIZATION_PATH,
                content: registries::TALOS_CRI_CUSTOMIZATION,
            },
            registry_documents: registries::talos_documents(cluster)?,
        };
        let s = &bundle.secrets;
        let c = &s.certs;
        let full = SecretsCtx {
            machine_token: &s.trustdinfo.token,
            cluster_id: &s.cluster.id,
            cluster_secret: &s.cluster.secret,
            bootstrap_token: &s.secrets.bootstraptoken,
            os_ca: CertKeyCtx {
                crt: &c.os.crt,
                key: Some(&c.os.key),
            },
            k8s_ca: CertKeyCtx {
                crt: &c.k8s.crt,
                key: Some(&c.k8s.key),
            },
            secretbox: s.secrets.secretboxencryptionsecret.as_deref(),
            aescbc: s.secrets.aescbcencryptionsecret.as_deref(),
            aggregator_ca: Some(CertKeyCtx {
                crt: &c.k8saggregator.crt,
                key: Some(&c.k8saggregator.key),
            }),
            service_account_key: Some(&c.k8sserviceaccount.key),
            etcd_ca: Some(CertKeyCtx {
                crt: &c.etcd.crt,
                key: Some(&c.etcd.key),
            }),
        };
        let worker = SecretsCtx {
            os_ca: CertKeyCtx {
                crt: &c.os.crt,
                key: None,
            },
            k8s_ca: CertKeyCtx {
                crt: &c.k8s.crt,
                key: None,
            },
            secretbox: None,
            aescbc: None,
            aggregator_ca: None,
            service_account_key: None,
            etcd_ca: None,
            machine_token: full.machine_token,
            cluster_id: full.cluster_id,
            cluster_secret: full.cluster_secret,
            bootstrap_token: full.bootstrap_token,
        };
        let admin_ctx = context! { ca => &c.os.crt, crt => &bundle.admin.crt, key => &bundle.admin.key };
        let p = &cluster.patches;
        Ok(Self {
            cluster: cluster.clone(),
            templates: Templates::new(cluster.templates.as_deref()),
            cluster_ctx: super::templates::value(&cctx),
            cp_secrets: super::templates::value(&full),
            worker_secrets: super::templates::value(&worker),
            admin_ctx,
            all: load_patches(&p.all).with_context(|| format!("cluster {}", cluster.name))?,
            controlplane: load_patches(&p.controlplane).with_context(|| format!("cluster {}", cluster.name))?,
            worker: load_patches(&p.worker).with_context(|| format!("cluster {}", cluster.name))?,
        })
    }

    /// The machine config of `node` (multi-document YAML).
    pub fn machine_config(&self, node: &Node) -> Result<String> {
        let c = &self.cluster;
        let (template, secrets, role_patches) = match node.role {
            Role::Controlplane => ("talos/controlplane.yaml.j2", &self.cp_secrets, &self.controlplane),
            Role::Worker => ("talos/worker.yaml.j2", &self.worker_secrets, &self.worker),
        };
        let nctx = node_ctx(c, node)?;
        let text = self
            .templates
            .render(
                template,
                context! { cluster => &self.cluster_ctx, node => super::templates::value(&nctx), secrets => secrets },
            )
            .with_context(|| format!("node {}: rendering the machine config", node.name))?;
        let mut docs = parse_documents(&text).with_context(|| {
            format!(
                "node {}: {} produced invalid YAML",
                node.name,
                self.templates.origin(template)
            )
        })?;
        let node_patches = load_patches(&node.patches).with_context(|| format!("node {}", node.name))?;
        for p in self.all.iter().chain(role_patches).chain(&node_patches) {
            p.apply(&mut docs).with_context(|| format!("node {}", node.name))?;
        }
        Ok(serialize_documents(&docs))
    }

    /// `talosconfig`: context = cluster name, endpoints = control-plane IPs.
    pub fn talosconfig(&self) -> Result<String> {
        let t = "talos/talosconfig.j2";
        let text = self
            .templates
            .render(t, context! { cluster => &self.cluster_ctx, admin => &self.admin_ctx })
            .with_context(|| format!("cluster {}: rendering talosconfig", self.cluster.name))?;
        let docs = parse_documents(&text).with_context(|| {
            format!(
                "cluster {}: {} produced invalid YAML",
                self.cluster.name,
                self.templates.origin(t)
            )
        })?;
        Ok(serialize_documents(&docs))
    }
}

fn node_ctx<'n>(c: &Cluster, node: &'n Node) -> Result<NodeCtx<'n>> {
    let mut cert_sans = vec![c.endpoint.clone()];
    if let Some(vip) = c.network.vip {
        push_unique(&mut cert_sans, vip.to_string());
    }
    push_unique(&mut cert_sans, node.ip.to_string());
    let install = match &node.install_disk {
        Some(d) if !d.is_empty() => install_ctx(d),
        _ => bail!(
            "node {}: Talos needs an install disk: set install_disk (a path, or serial/wwid/model/size) on the node or in [defaults]",
            node.name
        ),
    };
    Ok(NodeCtx {
        name: &node.name,
        role: match node.role {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        },
        ip: node.ip.to_string(),
        address: format!("{}/{}", node.ip, c.network.node_cidr.prefix_len()),
        mac: node.mac.map(|m| m.to_string()),
        link: node.mac.map(|_| LINK_ALIAS),
        cert_sans,
        install,
        volumes: node
            .data_disks
            .iter()
            .filter(|d| !d.ceph)
            .map(|d| VolumeCtx {
                name: d.name.clone(),
                r#match: crate::disks::cel_match(&d.selector),
                // The partition starts at the selector's lower bound (or 1 GB) and grows to the whole disk.
                min_size: format_size(d.selector.size.and_then(|r| r.min).unwrap_or(1_000_000_000)),
                filesystem: d.filesystem.clone(),
            })
            .collect(),
        labels: &node.labels,
        taints: node
            .taints
            .iter()
            .map(|t| {
                (
                    t.key.clone(),
                    format!("{}:{}", t.value.as_deref().unwrap_or(""), t.effect),
                )
            })
            .collect(),
    })
}

fn install_ctx(d: &DiskSelector) -> InstallCtx {
    if let Some(p) = &d.path {
        return InstallCtx {
            disk: Some(p.clone()),
            selector: None,
        };
    }
    let mut sel = BTreeMap::new();
    for (k, v) in [("serial", &d.serial), ("wwid", &d.wwid), ("model", &d.model)] {
        if let Some(v) = v {
            sel.insert(k, v.clone());
        }
    }
    if let Some(r) = d.size {
        sel.insert("size", size_expression(r));
    }
    InstallCtx {
        disk: None,
        selector: Some(sel),
    }
}

/// Maps a size range to a Talos disk size matcher (`400GB`, `>= 400GB`, `<= 2TB`).
/// Talos matches one bound only: for a `min-max` range the lower bound is kept
/// (it guarantees room for the system), the upper bound cannot be expressed.
pub fn size_expression(r: SizeRange) -> String {
    match (r.min, r.max) {
        (Some(a), Some(b)) if a == b => format_size(a),
        (Some(a), _) => format!(">= {}", format_size(a)),
        (None, Some(b)) => format!("<= {}", format_size(b)),
        (None, None) => ">= 1".into(),
    }
}

/// Bytes in the largest unit that divides them exactly (`400GB`, `1TiB`, `1234`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1_000_000_000_000, "TB"),
        (1 << 40, "TiB"),
        (1_000_000_000, "GB"),
        (1 << 30, "GiB"),
        (1_000_000, "MB"),
        (1 << 20, "MiB"),
        (1_000, "kB"),
        (1 << 10, "KiB"),
    ];
    for (n, u) in UNITS {
        if bytes >= *n && bytes.is_multiple_of(*n) {
            return format!("{}{u}", bytes / n);
        }
    }
    bytes.to_string()
}

/// The machine config of one node (see [`TalosRenderer`] to render many).
pub fn machine_config(cluster: &Cluster, node: &Node, bundle: &TalosBundle) -> Result<String> {
    TalosRenderer::new(cluster, bundle)?.machine_config(node)
}

/// The `talosconfig` of a cluster.
pub fn talosconfig(cluster: &Cluster, bundle: &TalosBundle) -> Result<String> {
    TalosRenderer::new(cluster, bundle)?.talosconfig()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_talos_matchers() {
        let r = |s: &str| size_expression(s.parse().unwrap());
        assert_eq!(r("400GB-2TB"), ">= 400GB");
        assert_eq!(r("500GB"), "500GB");
        assert_eq!(r("<= 2TB"), "<= 2TB");
        assert_eq!(r(">= 1TiB"), ">= 1TiB");
        assert_eq!(format_size(1234), "1234");
    }
}

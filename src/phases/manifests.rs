//! Release objects of phase 2, built as JSON: one HelmRepository +
//! HelmRelease per core release, handed to Flux's helm-controller (Flux
//! itself comes from the pinned upstream manifest, see [`super::flux`]).
//! Names match what the GitOps repository defines, so its definitions adopt
//! these objects later; plus the API addresses and DNS IP the objects use.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::catalog::{Core, Release};
use super::checkout::Checkout;
use super::objects;
use crate::inventory::{Cluster, Distribution};

/// Namespace of Flux's controllers and of the HelmRepositories.
pub const FLUX_NAMESPACE: &str = "flux-system";

/// The API server address controllers use before any CNI or Service works:
/// Talos' KubePrism on every node, k3s' apiserver on every control plane.
pub fn local_api(cluster: &Cluster) -> (&'static str, u16) {
    match cluster.distribution {
        Distribution::Talos => ("localhost", 7445),
        Distribution::K3s => ("127.0.0.1", 6443),
    }
}

/// The API server address for chart values (Cilium's `k8sServiceHost`):
/// reachable from every node, workers included, before kube-proxy or a CNI.
/// KubePrism on Talos; the cluster endpoint (VIP or load balancer) on k3s.
pub fn node_api(cluster: &Cluster) -> (String, u16) {
    match cluster.distribution {
        Distribution::Talos => ("localhost".into(), 7445),
        Distribution::K3s => (cluster.endpoint.clone(), 6443),
    }
}

/// The cluster DNS Service address: the 10th address of the service CIDR.
pub fn dns_ip(cluster: &Cluster) -> String {
    match cluster.network.service_cidr.network() {
        IpAddr::V4(v4) => std::net::Ipv4Addr::from(u32::from(v4) + 10).to_string(),
        IpAddr::V6(v6) => std::net::Ipv6Addr::from(u128::from(v6) + 10).to_string(),
    }
}

/// One core release, resolved: the objects to apply and what to wait for.
#[derive(Debug, Clone)]
pub struct ReleaseObjects {
    pub name: String,
    pub namespace: String,
    /// Chart version installed (for messages).
    pub version: String,
    /// Where the chart version and values come from (`phases/core.toml` or a checkout file).
    pub origin: String,
    pub cni: bool,
    /// `(kind, name)` in `namespace`.
    pub waits: Vec<(String, String)>,
    /// The HelmRepository (when the release uses one) and the HelmRelease.
    pub objects: Vec<Value>,
}

fn render_values(r: &Release, cluster: &Cluster) -> Result<Value, String> {
    if r.values.trim().is_empty() {
        return Ok(json!({}));
    }
    let (host, port) = node_api(cluster);
    let env = minijinja::Environment::new();
    let text = env
        .render_str(
            &r.values,
            minijinja::context! { api_host => host, api_port => port, dns_ip => dns_ip(cluster),
            ..super::chart_context::values_context(cluster) },
        )
        .map_err(|e| format!("release {}: values template: {e}", r.name))?;
    let v: yaml_serde::Value =
        yaml_serde::from_str(&text).map_err(|e| format!("release {}: values are not YAML: {e}", r.name))?;
    serde_json::to_value(v).map_err(|e| format!("release {}: values: {e}", r.name))
}

fn default_repository(name: &str, namespace: &str, url: &str) -> Value {
    let mut spec = json!({"interval": "12h", "url": url});
    if url.starts_with("oci://") {
        spec["type"] = json!("oci");
    }
    objects::labelled(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
}

/// The release from `phases/core.toml`.
fn from_defaults(r: &Release, cluster: &Cluster) -> Result<ReleaseObjects, String> {
    let release = objects::labelled(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": r.name, "namespace": r.namespace},
        "spec": {
            "interval": "30m",
            "chart": {"spec": {
                "chart": r.chart,
                "version": r.version,
                "sourceRef": {"kind": "HelmRepository", "name": r.name, "namespace": FLUX_NAMESPACE},
                "interval": "12h",
            }},
            "install": {"crds": "CreateReplace", "remediation": {"retries": 3}},
            "upgrade": {"crds": "CreateReplace", "remediation": {"retries": 3}},
            "values": render_values(r, cluster)?,
        },
    }));
    Ok(ReleaseObjects {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        version: r.version.clone(),
        origin: "phases/core.toml".into(),
        cni: r.cni,
        waits: r.waits(),
        objects: vec![default_repository(&r.name, FLUX_NAMESPACE, &r.repository), release],
    })
}

/// The release as the checkout defines it (chart, version, values, options),
/// with its HelmRepository from the checkout when it is there.
fn from_checkout(r: &Release, file: &std::path::Path, found: &Value, c: &Checkout) -> Result<ReleaseObjects, String> {
    let origin = file.display().to_string();
    let spec = found["spec"].clone();
    let chart = spec.pointer("/chart/spec").ok_or_else(|| {
        format!("release {}: HelmRelease in {origin} has no spec.chart.spec (spec.chartRef is not supported for core releases)", r.name)
    })?;
    let version = chart["version"].as_str().unwrap_or("*").to_owned();
    let source = &chart["sourceRef"];
    let source_kind = source["kind"].as_str().unwrap_or("HelmRepository");
    let source_name = source["name"].as_str().unwrap_or(&r.name).to_owned();
    let source_ns = source["namespace"].as_str().unwrap_or(&r.namespace).to_owned();
    if source_kind != "HelmRepository" {
        return Err(format!(
            "release {}: HelmRelease in {origin} takes its chart from a {source_kind}; core releases need a HelmRepository",
            r.name
        ));
    }
    let repository = match c.repository(&source_name, &source_ns) {
        Some((_, repo)) => objects::labelled(json!({
            "apiVersion": repo["apiVersion"],
            "kind": "HelmRepository",
            "metadata": {"name": source_name, "namespace": source_ns},
            "spec": repo["spec"],
        })),
        None => default_repository(&source_name, &source_ns, &r.repository),
    };
    let release = objects::labelled(json!({
        "apiVersion": found["apiVersion"],
        "kind": "HelmRelease",
        "metadata": {"name": r.name, "namespace": r.namespace},
        "spec": spec,
    }));
    Ok(ReleaseObjects {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        version,
        origin,
        cni: r.cni,
        waits: r.waits(),
        objects: vec![repository, release],
    })
}

/// The core releases `cluster` gets, from the checkout when it defines them,
/// else from `phases/core.toml`.
pub fn releases(core: &Core, cluster: &Cluster, checkout: Option<&Checkout>) -> Result<Vec<ReleaseObjects>, String> {
    core.releases
        .iter()
        .filter(|r| r.wanted(cluster))
        .map(
            |r| match checkout.and_then(|c| c.release(&r.name, &r.namespace).map(|f| (c, f))) {
                Some((c, (file, found))) => from_checkout(r, file, found, c),
                None => from_defaults(r, cluster),
            },
        )
        .collect()
}

//! What the core releases need from the cluster beyond their chart: the
//! namespaces phase 2 creates with their labels (Spegel's, privileged for Pod
//! Security: spegel website "Talos", siderolabs docs `spegel.mdx`), and the
//! per-distribution facts their values templates read (containerd paths for
//! Spegel, whether Talos or k3s mirrors must be kept, Cilium's BGP switch).

use serde_json::{Value, json};

use super::catalog::Release;
use super::objects;
use crate::inventory::Cluster;
use crate::render::registries;

/// The namespaces of `releases` that carry labels, as objects.
pub fn namespaces<'a>(releases: impl IntoIterator<Item = &'a Release>) -> Vec<Value> {
    releases
        .into_iter()
        .filter(|r| !r.namespace_labels.is_empty())
        .map(|r| {
            objects::labelled(json!({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": r.namespace, "labels": r.namespace_labels}}))
        })
        .collect()
}

/// What values templates in `phases/core.toml` may use besides the API and DNS addresses.
pub fn values_context(cluster: &Cluster) -> minijinja::Value {
    minijinja::context! {
        containerd => crate::render::templates::value(&registries::containerd(cluster.distribution)),
        // Talos (and k3s) write the inventory's mirrors into the same hosts
        // directory; Spegel keeps them only when told to (spegel v0.7.4
        // pkg/oci/containerd.go, AddMirrorConfiguration; chart `prependExisting`).
        prepend_existing => cluster.registries.iter().any(|r| !r.mirrors.is_empty()),
        bgp_control_plane => cluster.network.bgp_enabled(),
    }
}

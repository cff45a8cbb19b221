//! Phase 2's objects for the inventory's network promises, and the
//! `cluster-settings` every GitOps Kustomization can substitute from.
//!
//! - `lb_pool` → a `CiliumLoadBalancerIPPool` (cilium.io/v2): Cilium's LB IPAM
//!   is always on and hands out addresses once a pool exists (Cilium docs,
//!   "LoadBalancer IP Address Management").
//! - `bgp_asn` + `bgp_peers` → Cilium's BGP control plane v2: one
//!   `CiliumBGPClusterConfig` (an instance with the cluster's ASN on every node:
//!   no `nodeSelector` means all nodes), one `CiliumBGPPeerConfig` selecting
//!   the advertisement by label, and one `CiliumBGPAdvertisement` of every
//!   Service's LoadBalancer IP (a selector is required: without one "no objects
//!   ... are selected", CRD description in `../shared/cilium/`). The chart value
//!   `bgpControlPlane.enabled` turns the control plane on.
//! - These kinds exist once Cilium's operator has registered its CRDs (it does
//!   so at startup, the BGP ones only with the control plane enabled: cilium
//!   `pkg/k8s/synced/crd.go`), so phase 2 applies them after the CNI is up and
//!   those CRDs are Established.
//! - Every network value goes into the `cluster-settings` ConfigMap in
//!   `flux-system`, referenced by the root Kustomization's
//!   `postBuild.substituteFrom` and patched into the Kustomizations it applies,
//!   as onedr0p's cluster-template does (`kubernetes/flux/cluster/ks.yaml`), so
//!   the repository writes `${LB_POOL_START}` instead of repeating the address.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::manifests::{FLUX_NAMESPACE, ReleaseObjects, dns_ip};
use super::objects;
use crate::inventory::{Cluster, Cni};

/// Name of the settings ConfigMap (onedr0p's cluster-template calls it the same).
pub const SETTINGS: &str = "cluster-settings";
/// Label the peer config selects advertisements by (Cilium docs use `advertise: bgp`).
fn advertise_label() -> Value {
    json!({"advertise": "bgp"})
}
const CILIUM: &str = "cilium.io/v2";

/// `10.0.0.1` → `10-0-0-1`, for object and peer names.
fn dashed(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The Cilium objects `cluster` gets: none without Cilium, a pool with
/// `lb_pool`, the BGP v2 trio with `bgp_asn` and peers.
pub fn cilium_objects(cluster: &Cluster) -> Vec<Value> {
    let net = &cluster.network;
    if cluster.cni != Cni::Cilium {
        return vec![];
    }
    let mut out = vec![];
    if let Some(pool) = net.lb_pool {
        out.push(objects::labelled(json!({
            "apiVersion": CILIUM,
            "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "lb-pool"},
            "spec": {"blocks": [{"start": pool.first.to_string(), "stop": pool.last.to_string()}]},
        })));
    }
    if let (Some(asn), false) = (net.bgp_asn, net.bgp_peers.is_empty()) {
        let peers: Vec<Value> = net
            .bgp_peers
            .iter()
            .map(|p| {
                json!({"name": format!("peer-{}", dashed(&p.address.to_string())),
                       "peerAddress": p.address.to_string(), "peerASN": p.asn,
                       "peerConfigRef": {"name": "bgp-peer"}})
            })
            .collect();
        out.push(objects::labelled(json!({
            "apiVersion": CILIUM,
            "kind": "CiliumBGPClusterConfig",
            "metadata": {"name": "bgp"},
            "spec": {"bgpInstances": [{"name": format!("asn-{asn}"), "localASN": asn, "peers": peers}]},
        })));
        let afi = match net.lb_pool.map(|p| p.first) {
            Some(std::net::IpAddr::V6(_)) => "ipv6",
            _ => "ipv4",
        };
        out.push(objects::labelled(json!({
            "apiVersion": CILIUM,
            "kind": "CiliumBGPPeerConfig",
            "metadata": {"name": "bgp-peer"},
            "spec": {"families": [{"afi": afi, "safi": "unicast",
                                   "advertisements": {"matchLabels": advertise_label()}}]},
        })));
        out.push(objects::labelled(json!({
            "apiVersion": CILIUM,
            "kind": "CiliumBGPAdvertisement",
            "metadata": {"name": "bgp-loadbalancer", "labels": advertise_label()},
            "spec": {"advertisements": [{
                "advertisementType": "Service",
                "service": {"addresses": ["LoadBalancerIP"]},
                // Every Service: the Cilium docs' selector that no Service fails to match.
                "selector": {"matchExpressions": [{"key": "somekey", "operator": "NotIn", "values": ["never-used-value"]}]},
            }]},
        })));
    }
    out
}

/// Whether Cilium's BGP control plane must be on (`bgpControlPlane.enabled`).
/// With BGP peers, the CNI release must enable Cilium's BGP control plane:
/// Cilium registers the BGP CRDs only then, and Flux would later reconcile the
/// GitOps repository's values anyway. Values from `valuesFrom` cannot be seen
/// here, so such a release is trusted.
pub fn check_cni_values(cluster: &Cluster, releases: &[ReleaseObjects]) -> Result<(), String> {
    if !cluster.network.bgp_enabled() {
        return Ok(());
    }
    for r in releases.iter().filter(|r| r.cni) {
        let Some(hr) = r.objects.iter().find(|o| o["kind"] == "HelmRelease") else {
            continue;
        };
        let external = hr
            .pointer("/spec/valuesFrom")
            .and_then(Value::as_array)
            .is_some_and(|v| !v.is_empty());
        if !external && hr.pointer("/spec/values/bgpControlPlane/enabled") != Some(&Value::Bool(true)) {
            return Err(format!(
                "the inventory's bgp_peers need Cilium's BGP control plane, but the HelmRelease {}/{} from {} does not set values.bgpControlPlane.enabled: true",
                r.namespace, r.name, r.origin
            ));
        }
    }
    Ok(())
}

/// The CRDs (`plural.group`) the objects need (registered by Cilium's operator).
pub fn crds_of(objs: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = objs
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .map(|k| format!("{}s.cilium.io", k.to_ascii_lowercase()))
        .collect();
    out.dedup();
    out
}

/// Every network value of the inventory, by the variable name GitOps
/// manifests substitute (`${NAME}`).
pub fn settings(cluster: &Cluster) -> BTreeMap<String, String> {
    let net = &cluster.network;
    let mut s = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        s.insert(k.to_owned(), v);
    };
    put("CLUSTER_NAME", cluster.name.clone());
    put("CLUSTER_DOMAIN", net.cluster_domain.clone());
    put("CLUSTER_ENDPOINT", cluster.endpoint.clone());
    put("CLUSTER_DNS_IP", dns_ip(cluster));
    put("NODE_CIDR", net.node_cidr.to_string());
    put("NODE_GATEWAY", net.gateway.to_string());
    put("POD_CIDR", net.pod_cidr.to_string());
    put("SERVICE_CIDR", net.service_cidr.to_string());
    if !net.nameservers.is_empty() {
        let ns: Vec<String> = net.nameservers.iter().map(ToString::to_string).collect();
        put("NAMESERVERS", ns.join(","));
    }
    if let Some(vip) = net.vip {
        put("CLUSTER_VIP", vip.to_string());
    }
    if let Some(pool) = net.lb_pool {
        put("LB_POOL", pool.to_string());
        put("LB_POOL_START", pool.first.to_string());
        put("LB_POOL_STOP", pool.last.to_string());
    }
    if let Some(asn) = net.bgp_asn {
        put("BGP_ASN", asn.to_string());
    }
    for (i, p) in net.bgp_peers.iter().enumerate() {
        put(&format!("BGP_PEER_{}_ADDRESS", i + 1), p.address.to_string());
        put(&format!("BGP_PEER_{}_ASN", i + 1), p.asn.to_string());
    }
    s
}

/// The `cluster-settings` ConfigMap.
pub fn cluster_settings(cluster: &Cluster) -> Value {
    objects::labelled(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SETTINGS, "namespace": FLUX_NAMESPACE},
        "data": settings(cluster),
    }))
}

/// Makes a Flux Kustomization substitute `${VAR}`s from `cluster-settings`,
/// itself and every Kustomization it applies (Flux Kustomization API
/// `spec.postBuild.substituteFrom`, `spec.patches`).
pub fn substitute_from(kustomization: &mut Value) {
    let from = json!([{"kind": "ConfigMap", "name": SETTINGS}]);
    kustomization["spec"]["postBuild"] = json!({"substituteFrom": from});
    let patch = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "not-used"},
        "spec": {"postBuild": {"substituteFrom": from}},
    });
    kustomization["spec"]["patches"] = json!([{
        "patch": yaml_serde::to_string(&patch).expect("a JSON value serialises"),
        "target": {"group": "kustomize.toolkit.fluxcd.io", "kind": "Kustomization"},
    }]);
}

//! Flux's helm-controller, simulated: a HelmRelease of a known chart installs
//! the workloads (and CRDs) that chart would create, in the release's target
//! namespace, labelled as Helm labels them. The other controllers then make
//! them ready; the HelmRelease itself gets Ready like every Flux object.

use serde_json::{Value, json};

use super::resources::GroupResource;
use super::store::Store;

/// What a chart creates: `(kind, name)` workloads and CRDs (`group`, `kind`, `plural`).
struct Chart {
    workloads: &'static [(&'static str, &'static str)],
    crds: &'static [(&'static str, &'static str, &'static str)],
}

/// The charts the simulator knows, by chart name.
fn chart(name: &str) -> Option<Chart> {
    Some(match name {
        "cilium" => Chart {
            workloads: &[("DaemonSet", "cilium"), ("Deployment", "cilium-operator")],
            crds: &[],
        },
        "coredns" => Chart {
            workloads: &[("Deployment", "coredns")],
            crds: &[],
        },
        "spegel" => Chart {
            workloads: &[("DaemonSet", "spegel")],
            crds: &[],
        },
        "cert-manager" => Chart {
            workloads: &[
                ("Deployment", "cert-manager"),
                ("Deployment", "cert-manager-webhook"),
                ("Deployment", "cert-manager-cainjector"),
            ],
            crds: &[
                ("cert-manager.io", "Certificate", "certificates"),
                ("cert-manager.io", "ClusterIssuer", "clusterissuers"),
            ],
        },
        "external-secrets" => Chart {
            workloads: &[
                ("Deployment", "external-secrets"),
                ("Deployment", "external-secrets-webhook"),
                ("Deployment", "external-secrets-cert-controller"),
            ],
            crds: &[("external-secrets.io", "ExternalSecret", "externalsecrets")],
        },
        "argo-cd" => Chart {
            workloads: &[
                ("Deployment", "argocd-server"),
                ("Deployment", "argocd-repo-server"),
                ("Deployment", "argocd-applicationset-controller"),
            ],
            crds: &[
                ("argoproj.io", "Application", "applications"),
                ("argoproj.io", "AppProject", "appprojects"),
            ],
        },
        _ => return None,
    })
}

fn workload(kind: &str, name: &str, namespace: &str, release: &str) -> Value {
    let labels = json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release,
                        "app.kubernetes.io/managed-by": "Helm"});
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "labels": labels,
                     "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}},
                              "spec": {"containers": [{"name": name, "image": format!("sim.invalid/{name}:latest")}]}}},
    })
}

fn crd(group: &str, kind: &str, plural: &str, release: &str) -> Value {
    crd_served(group, kind, plural, ("v1alpha1", "Namespaced"), release)
}

/// A CRD serving one version (`(version, scope)`), accepting any fields.
fn crd_served(group: &str, kind: &str, plural: &str, (version, scope): (&str, &str), release: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "generation": 1,
                     "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": release}},
        "spec": {"group": group, "scope": scope,
                 "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                 "versions": [{"name": version, "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    })
}

/// The CRDs Cilium's operator registers at startup (not the chart's templates):
/// the LB-IPAM pool always, the BGP control plane's only when it is enabled
/// (cilium `pkg/k8s/synced/crd.go`, `agentCRDResourceNames`). Cluster-scoped,
/// served at cilium.io/v2 (cilium `pkg/k8s/apis/cilium.io/client/crds/v2/`).
fn cilium_operator_crds(hr: &Value, release: &str) -> Vec<Value> {
    let mut kinds = vec![("CiliumLoadBalancerIPPool", "ciliumloadbalancerippools")];
    if hr.pointer("/spec/values/bgpControlPlane/enabled") == Some(&Value::Bool(true)) {
        kinds.extend([
            ("CiliumBGPClusterConfig", "ciliumbgpclusterconfigs"),
            ("CiliumBGPPeerConfig", "ciliumbgppeerconfigs"),
            ("CiliumBGPAdvertisement", "ciliumbgpadvertisements"),
        ]);
    }
    kinds
        .into_iter()
        .map(|(kind, plural)| crd_served("cilium.io", kind, plural, ("v2", "Cluster"), release))
        .collect()
}

/// Installs what each HelmRelease's chart creates, once (never overwrites).
pub fn install(store: &mut Store) {
    let releases = GroupResource::new("helm.toolkit.fluxcd.io", "helmreleases");
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let mut writes: Vec<(GroupResource, Value)> = vec![];
    for hr in store.list(&releases, None) {
        let Some(c) = hr
            .pointer("/spec/chart/spec/chart")
            .and_then(Value::as_str)
            .and_then(chart)
        else {
            continue;
        };
        let release = hr["metadata"]["name"].as_str().unwrap_or_default();
        let ns = hr
            .pointer("/spec/targetNamespace")
            .or_else(|| hr.pointer("/metadata/namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut chart_crds: Vec<Value> = c.crds.iter().map(|(g, k, p)| crd(g, k, p, release)).collect();
        if c.workloads.contains(&("Deployment", "cilium-operator")) {
            chart_crds.extend(cilium_operator_crds(hr, release));
        }
        for o in chart_crds {
            if store
                .get(&crds, "", o["metadata"]["name"].as_str().unwrap_or_default())
                .is_none()
            {
                writes.push((crds.clone(), o));
            }
        }
        for (kind, name) in c.workloads {
            let gr = GroupResource::new(
                "apps",
                if *kind == "DaemonSet" {
                    "daemonsets"
                } else {
                    "deployments"
                },
            );
            if store.get(&gr, ns, name).is_none() {
                writes.push((gr, workload(kind, name, ns, release)));
            }
        }
    }
    for (gr, o) in writes {
        store.put(&gr, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_installs_its_charts_workloads_and_crds_once() {
        let mut store = Store::default();
        let releases = GroupResource::new("helm.toolkit.fluxcd.io", "helmreleases");
        store.put(
            &releases,
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                   "metadata": {"name": "argo-cd", "namespace": "argocd"},
                   "spec": {"chart": {"spec": {"chart": "argo-cd", "version": "9.1.0"}}}}),
        );
        install(&mut store);
        let deployments = GroupResource::new("apps", "deployments");
        let server = store
            .get(&deployments, "argocd", "argocd-server")
            .expect("installed")
            .clone();
        assert_eq!(
            server["metadata"]["annotations"]["meta.helm.sh/release-name"],
            "argo-cd"
        );
        let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        assert!(store.get(&crds, "", "applications.argoproj.io").is_some());
        let rv = store.resource_version();
        install(&mut store);
        assert_eq!(store.resource_version(), rv, "installed once, never rewritten");
    }

    #[test]
    fn ciliums_operator_registers_bgp_crds_only_with_the_bgp_control_plane() {
        let mut store = Store::default();
        let releases = GroupResource::new("helm.toolkit.fluxcd.io", "helmreleases");
        let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        let mut hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                            "metadata": {"name": "cilium", "namespace": "kube-system"},
                            "spec": {"chart": {"spec": {"chart": "cilium"}}, "values": {}}});
        store.put(&releases, hr.clone());
        install(&mut store);
        let pool = store
            .get(&crds, "", "ciliumloadbalancerippools.cilium.io")
            .expect("LB IPAM always");
        assert_eq!(pool["spec"]["scope"], "Cluster");
        assert_eq!(pool["spec"]["versions"][0]["name"], "v2");
        assert!(store.get(&crds, "", "ciliumbgpclusterconfigs.cilium.io").is_none());
        hr["spec"]["values"] = json!({"bgpControlPlane": {"enabled": true}});
        store.put(&releases, hr);
        install(&mut store);
        for name in [
            "ciliumbgpclusterconfigs",
            "ciliumbgppeerconfigs",
            "ciliumbgpadvertisements",
        ] {
            assert!(store.get(&crds, "", &format!("{name}.cilium.io")).is_some(), "{name}");
        }
    }
}

//! What the charts the simulator knows render, reduced to what scheduling and
//! readiness need: workload kinds and names (each chart's own naming rule),
//! ServiceAccounts, hostNetwork, tolerations, nodeSelector, images and CRDs.
//! Images carry the registry and repository of the chart's values.yaml and the
//! chart version as tag (the simulator never pulls).

use serde_json::{Value, json};

/// Upstream: the `<chart>.fullname` helper of `helm create`'s `_helpers.tpl` (and argo-helm's
/// `charts/argo-cd/templates/_common.tpl`): `fullnameOverride`, else the release name when it
/// contains the chart name (or `nameOverride`), else `<release>-<name>`; truncated to 63, `-` trimmed.
pub fn fullname(chart: &str, release: &str, values: &Value) -> String {
    let trunc = |s: String| s.chars().take(63).collect::<String>().trim_end_matches('-').to_owned();
    if let Some(f) = values["fullnameOverride"].as_str().filter(|s| !s.is_empty()) {
        return trunc(f.to_owned());
    }
    let name = values["nameOverride"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(chart);
    if release.contains(name) {
        trunc(release.to_owned())
    } else {
        trunc(format!("{release}-{name}"))
    }
}

fn get<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    values.pointer(path).filter(|v| !v.is_null())
}

/// One workload of a release.
struct Workload<'a> {
    kind: &'a str,
    name: String,
    sa: String,
    image: String,
    replicas: i64,
    host_network: bool,
    tolerations: Value,
    node_selector: Value,
}

fn labels(release: &str, name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release,
           "app.kubernetes.io/managed-by": "Helm"})
}

fn meta(name: &str, ns: &str, release: &str) -> Value {
    json!({"name": name, "namespace": ns, "generation": 1, "labels": labels(release, name),
           "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns}})
}

fn objects(release: &str, ns: &str, workloads: Vec<Workload>, crds: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut out = vec![];
    let mut sas: Vec<String> = workloads
        .iter()
        .map(|w| w.sa.clone())
        .filter(|s| s != "default")
        .collect();
    sas.sort();
    sas.dedup();
    for sa in sas {
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&sa, ns, release)}));
    }
    for w in workloads {
        let selector = json!({"app.kubernetes.io/name": w.name, "app.kubernetes.io/instance": release});
        let mut spec = json!({
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector},
                         "spec": {"serviceAccountName": w.sa, "hostNetwork": w.host_network,
                                  "tolerations": w.tolerations, "nodeSelector": w.node_selector,
                                  "containers": [{"name": w.name, "image": w.image}]}},
        });
        if w.kind == "Deployment" {
            spec["replicas"] = json!(w.replicas);
        }
        out.push(
            json!({"apiVersion": "apps/v1", "kind": w.kind, "metadata": meta(&w.name, ns, release), "spec": spec}),
        );
    }
    for (group, kind, plural) in crds {
        // Upstream: argoproj/argo-cd manifests/crds/*-crd.yaml serve argoproj.io/v1alpha1 only.
        let version = if *group == "argoproj.io" { "v1alpha1" } else { "v1" };
        out.push(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}"), "generation": 1,
                         "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": release}},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                     "versions": [{"name": version, "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
        }));
    }
    out
}

/// Tolerate every taint (`- operator: Exists`).
fn all() -> Value {
    json!([{"operator": "Exists"}])
}

fn or(values: &Value, path: &str, default: Value) -> Value {
    get(values, path).cloned().unwrap_or(default)
}

/// The objects `chart` renders for `release` in `ns`; `None` for a chart the simulator does not know.
pub fn render(chart: &str, version: &str, release: &str, ns: &str, values: &Value) -> Option<Vec<Value>> {
    let v = version.trim_start_matches('v');
    let linux = json!({"kubernetes.io/os": "linux"});
    Some(match chart {
        // Upstream: cilium/cilium install/kubernetes/cilium templates cilium-agent/daemonset.yaml,
        // cilium-operator/deployment.yaml, cilium-envoy/daemonset.yaml (fixed names; host network;
        // tolerations `- operator: Exists` by default; operator.replicas default 2; the envoy DaemonSet
        // when l7Proxy and envoy.enabled, unset meaning on since 1.16: `envoyDaemonSetEnabled` in _helpers.tpl).
        "cilium" => {
            let mut w = vec![
                Workload {
                    kind: "DaemonSet",
                    name: "cilium".into(),
                    sa: or(values, "/serviceAccounts/cilium/name", json!("cilium"))
                        .as_str()?
                        .to_owned(),
                    image: format!("quay.io/cilium/cilium:v{v}"),
                    replicas: 1,
                    host_network: true,
                    tolerations: or(values, "/tolerations", all()),
                    node_selector: or(values, "/nodeSelector", linux.clone()),
                },
                Workload {
                    kind: "Deployment",
                    name: "cilium-operator".into(),
                    sa: or(values, "/serviceAccounts/operator/name", json!("cilium-operator"))
                        .as_str()?
                        .to_owned(),
                    image: format!("quay.io/cilium/operator-generic:v{v}"),
                    replicas: or(values, "/operator/replicas", json!(2)).as_i64()?,
                    host_network: true,
                    tolerations: or(values, "/operator/tolerations", all()),
                    node_selector: or(values, "/operator/nodeSelector", linux.clone()),
                },
            ];
            let envoy = values["l7Proxy"] != json!(false) && values.pointer("/envoy/enabled") != Some(&json!(false));
            if envoy {
                w.push(Workload {
                    kind: "DaemonSet",
                    name: "cilium-envoy".into(),
                    sa: or(values, "/serviceAccounts/envoy/name", json!("cilium-envoy"))
                        .as_str()?
                        .to_owned(),
                    image: "quay.io/cilium/cilium-envoy".into(),
                    replicas: 1,
                    host_network: true,
                    tolerations: or(values, "/envoy/tolerations", all()),
                    node_selector: or(values, "/envoy/nodeSelector", linux),
                });
            }
            objects(release, ns, w, &[])
        }
        // Upstream: coredns/helm charts/coredns templates/deployment.yaml: `coredns.fullname`; the
        // ServiceAccount only with serviceAccount.create (default false); replicaCount default 1; no tolerations.
        "coredns" => {
            let name = fullname(chart, release, values);
            let sa = if values.pointer("/serviceAccount/create") == Some(&json!(true)) {
                or(values, "/serviceAccount/name", json!(name)).as_str()?.to_owned()
            } else {
                "default".into()
            };
            let w = Workload {
                kind: "Deployment",
                name,
                sa,
                image: "coredns/coredns".into(),
                replicas: or(values, "/replicaCount", json!(1)).as_i64()?,
                host_network: false,
                tolerations: or(values, "/tolerations", json!([])),
                node_selector: or(values, "/nodeSelector", json!({})),
            };
            objects(release, ns, vec![w], &[])
        }
        // Upstream: spegel-org/spegel charts/spegel values.yaml + templates/daemonset.yaml: `spegel.fullname`,
        // tolerations CriticalAddonsOnly + NoExecute/NoSchedule Exists, nodeSelector kubernetes.io/os: linux.
        "spegel" => {
            let name = fullname(chart, release, values);
            let w = Workload {
                kind: "DaemonSet",
                name: name.clone(),
                sa: or(values, "/serviceAccount/name", json!(""))
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&name)
                    .to_owned(),
                image: format!("ghcr.io/spegel-org/spegel:v{v}"),
                replicas: 1,
                host_network: false,
                tolerations: or(
                    values,
                    "/tolerations",
                    json!([{"key": "CriticalAddonsOnly", "operator": "Exists"},
                           {"effect": "NoExecute", "operator": "Exists"},
                           {"effect": "NoSchedule", "operator": "Exists"}]),
                ),
                node_selector: or(values, "/nodeSelector", linux),
            };
            objects(release, ns, vec![w], &[])
        }
        // Upstream: cert-manager/cert-manager deploy/charts/cert-manager/templates/_helpers.tpl:
        // `cert-manager.fullname`, `webhook.fullname` = fullname-webhook, `cainjector.fullname` = fullname-cainjector.
        "cert-manager" => {
            let base = fullname(chart, release, values);
            let w = ["", "-cainjector", "-webhook"]
                .iter()
                .map(|suffix| Workload {
                    kind: "Deployment",
                    name: format!("{base}{suffix}"),
                    sa: format!("{base}{suffix}"),
                    image: format!(
                        "quay.io/jetstack/cert-manager-{}:v{v}",
                        if suffix.is_empty() { "controller" } else { &suffix[1..] }
                    ),
                    replicas: 1,
                    host_network: false,
                    tolerations: json!([]),
                    node_selector: linux.clone(),
                })
                .collect();
            let crds_on = values.pointer("/crds/enabled") == Some(&json!(true)) || values["installCRDs"] == true;
            let crds: &[(&str, &str, &str)] = if crds_on {
                &[
                    ("cert-manager.io", "Certificate", "certificates"),
                    ("cert-manager.io", "ClusterIssuer", "clusterissuers"),
                    ("cert-manager.io", "Issuer", "issuers"),
                ]
            } else {
                &[]
            };
            objects(release, ns, w, crds)
        }
        // Upstream: external-secrets/external-secrets deploy/charts/external-secrets templates: `external-secrets.fullname`,
        // fullname-webhook, fullname-cert-controller; installCRDs default true.
        "external-secrets" => {
            let base = fullname(chart, release, values);
            let w = ["", "-webhook", "-cert-controller"]
                .iter()
                .map(|suffix| Workload {
                    kind: "Deployment",
                    name: format!("{base}{suffix}"),
                    sa: format!("{base}{suffix}"),
                    image: format!("ghcr.io/external-secrets/external-secrets:v{v}"),
                    replicas: 1,
                    host_network: false,
                    tolerations: json!([]),
                    node_selector: json!({}),
                })
                .collect();
            let crds: &[(&str, &str, &str)] = if values["installCRDs"] != json!(false) {
                &[
                    ("external-secrets.io", "ExternalSecret", "externalsecrets"),
                    ("external-secrets.io", "ClusterSecretStore", "clustersecretstores"),
                    ("external-secrets.io", "SecretStore", "secretstores"),
                ]
            } else {
                &[]
            };
            objects(release, ns, w, crds)
        }
        // Upstream: argoproj/argo-helm charts/argo-cd templates/_common.tpl `argo-cd.fullname` and _helpers.tpl
        // (`<fullname>-server`, `-repo-server`, `-applicationset-controller`, `-redis`, `-dex-server`,
        // `-notifications-controller`); values.yaml ServiceAccount names `argocd-server`, `argocd-repo-server`, ...
        "argo-cd" => {
            let base = fullname(chart, release, values);
            let w = [
                ("server", "argocd-server"),
                ("repo-server", "argocd-repo-server"),
                ("applicationset-controller", "argocd-applicationset-controller"),
                ("redis", "default"),
                ("dex-server", "argocd-dex-server"),
                ("notifications-controller", "argocd-notifications-controller"),
            ]
            .iter()
            .map(|(component, sa)| Workload {
                kind: "Deployment",
                name: format!("{base}-{component}"),
                sa: (*sa).to_owned(),
                image: if *component == "redis" {
                    "public.ecr.aws/docker/library/redis".into()
                } else if *component == "dex-server" {
                    "ghcr.io/dexidp/dex".into()
                } else {
                    "quay.io/argoproj/argocd".into()
                },
                replicas: 1,
                host_network: false,
                tolerations: json!([]),
                node_selector: json!({}),
            })
            .collect();
            objects(
                release,
                ns,
                w,
                &[
                    ("argoproj.io", "Application", "applications"),
                    ("argoproj.io", "AppProject", "appprojects"),
                    ("argoproj.io", "ApplicationSet", "applicationsets"),
                ],
            )
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_charts_fullname_rule() {
        let names = |chart: &str, release: &str, values: Value| -> Vec<String> {
            render(chart, "1.0.0", release, "ns", &values)
                .unwrap()
                .iter()
                .filter(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let argo = names("argo-cd", "argo-cd", json!({}));
        assert!(argo.contains(&"argo-cd-server".to_owned()), "{argo:?}");
        assert!(argo.contains(&"argo-cd-repo-server".to_owned()), "{argo:?}");
        assert!(names("argo-cd", "gitops", json!({}))[0].starts_with("gitops-argo-cd-"));
        assert_eq!(
            names("argo-cd", "x", json!({"fullnameOverride": "argocd"}))[0],
            "argocd-server"
        );
        assert_eq!(names("coredns", "dns", json!({})), ["dns-coredns"]);
        assert_eq!(
            names("coredns", "coredns", json!({"fullnameOverride": "coredns"})),
            ["coredns"]
        );
        assert_eq!(
            names("cilium", "anything", json!({})),
            ["cilium", "cilium-operator", "cilium-envoy"]
        );
        assert_eq!(
            names("cilium", "cilium", json!({"envoy": {"enabled": false}})),
            ["cilium", "cilium-operator"]
        );
    }
}

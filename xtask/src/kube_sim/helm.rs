//! Flux's helm-controller, simulated. For a HelmRelease with a chart template
//! it creates the HelmChart `<namespace>-<name>` in the source's namespace,
//! as upstream does; it installs only once that chart (or the `chartRef`
//! source) is Ready and the release's values meet the chart's
//! `values.schema.json` (where the chart publishes one). Installing writes the
//! objects the real chart renders ([`super::charts`]), named by the chart's
//! fullname rule; the release turns Ready once its workloads are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use super::path::At;
use serde_json::{Value, json};

use super::charts;
use super::controllers::Behaviour;
use super::flux::{Verdict, ready_of, source_gr};
use super::resources::{GroupResource, crd_established};
use super::store::Store;

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.at(p).and_then(Value::as_str).unwrap_or_default()
}

/// Upstream: fluxcd/helm-controller api/v2 `HelmRelease.GetHelmChartName`: `<namespace>-<name>`.
fn chart_name(hr: &Value) -> String {
    format!("{}-{}", s(hr, "/metadata/namespace"), s(hr, "/metadata/name"))
}

/// The HelmChart helm-controller keeps for a release with `spec.chart`.
fn helm_chart(hr: &Value) -> Option<(String, Value)> {
    let tpl = hr.at("/spec/chart/spec")?;
    let ns = tpl
        .at("/sourceRef/namespace")
        .and_then(Value::as_str)
        .unwrap_or(s(hr, "/metadata/namespace"))
        .to_owned();
    let mut spec = json!({"chart": tpl["chart"], "sourceRef": tpl["sourceRef"],
                          "interval": tpl.get("interval").cloned().unwrap_or(json!("1m0s")),
                          "reconcileStrategy": tpl.get("reconcileStrategy").cloned().unwrap_or(json!("ChartVersion"))});
    if let Some(v) = tpl.get("version") {
        spec["version"] = v.clone();
    }
    if let Some(m) = spec["sourceRef"].as_object_mut() {
        m.remove("namespace");
    }
    Some((
        ns.clone(),
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
               "metadata": {"name": chart_name(hr), "namespace": ns, "generation": 1,
                            "labels": {"helm.toolkit.fluxcd.io/name": hr["metadata"]["name"],
                                       "helm.toolkit.fluxcd.io/namespace": hr["metadata"]["namespace"]}},
               "spec": spec}),
    ))
}

/// `(chart name, version)` the release installs, and its source: Ready, or why not.
fn chart_source(store: &Store, hr: &Value) -> Result<(String, String), String> {
    if let Some(tpl) = hr.at("/spec/chart/spec") {
        let (ns, _) = helm_chart(hr).ok_or("no chart template")?;
        let name = chart_name(hr);
        let chart = store.get(
            &GroupResource::new("source.toolkit.fluxcd.io", "helmcharts"),
            &ns,
            &name,
        );
        // Upstream: helm-controller reports the HelmChart's readiness before it can pull the chart.
        return match chart.and_then(ready_of) {
            Some(true) => Ok((s(tpl, "/chart").to_owned(), s(tpl, "/version").to_owned())),
            _ => Err(format!("HelmChart '{ns}/{name}' is not ready")),
        };
    }
    let r = hr.at("/spec/chartRef").ok_or("neither spec.chart nor spec.chartRef")?;
    let kind = s(r, "/kind");
    let ns = r["namespace"].as_str().unwrap_or(s(hr, "/metadata/namespace"));
    let name = s(r, "/name");
    let src = source_gr(kind).and_then(|gr| store.get(&gr, ns, name));
    match src {
        Some(o) if ready_of(o) == Some(true) => {
            let chart = match kind {
                "OCIRepository" => s(o, "/spec/url").rsplit('/').next().unwrap_or_default().to_owned(),
                _ => s(o, "/spec/chart").to_owned(),
            };
            Ok((chart, s(o, "/spec/ref/tag").to_owned()))
        }
        Some(_) => Err(format!("{kind} '{ns}/{name}' is not ready")),
        None => Err(format!("could not get Source object: {kind} '{ns}/{name}' not found")),
    }
}

fn schema(path: &Path) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<std::path::PathBuf, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(v) = cache.lock().expect("schema cache").get(path) {
        return Ok(v.clone());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // Upstream: Helm validates values.schema.json as JSON Schema draft-07 (pkg/chartutil/jsonschema.go).
    let v = Arc::new(jsonschema::draft7::new(&json).map_err(|e| format!("{}: {e}", path.display()))?);
    cache.lock().expect("schema cache").insert(path.to_owned(), v.clone());
    Ok(v)
}

/// Upstream: helm pkg/chartutil/jsonschema.go `ValidateAgainstSchema`: "values don't meet the
/// specifications of the schema(s) in the following chart(s):\n<chart>:\n- <path>: <error>\n".
pub fn validate_values(chart: &str, values: &Value, schema_path: &Path) -> Result<(), String> {
    let v = schema(schema_path)?;
    let errors: Vec<String> = v
        .iter_errors(values)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = path.trim_start_matches('/').replace('/', ".");
            format!("- {}: {e}", if path.is_empty() { "(root)" } else { &path })
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(format!(
        "values don't meet the specifications of the schema(s) in the following chart(s):\n{chart}:\n{}\n",
        errors.join("\n")
    ))
}

fn gr_of(kind: &str) -> Option<GroupResource> {
    Some(match kind {
        "Deployment" => GroupResource::new("apps", "deployments"),
        "DaemonSet" => GroupResource::new("apps", "daemonsets"),
        "ServiceAccount" => GroupResource::new("", "serviceaccounts"),
        "CustomResourceDefinition" => GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
        _ => return None,
    })
}

/// Writes the rendered objects (helm install / upgrade); returns the workloads to wait for.
fn install(store: &mut Store, objects: Vec<Value>) -> Vec<(GroupResource, String, String)> {
    let mut waits = vec![];
    for o in objects {
        let Some(gr) = gr_of(o["kind"].as_str().unwrap_or_default()) else {
            continue;
        };
        let (ns, name) = (
            s(&o, "/metadata/namespace").to_owned(),
            s(&o, "/metadata/name").to_owned(),
        );
        if matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")) {
            waits.push((gr.clone(), ns.clone(), name.clone()));
        }
        match store.get(&gr, &ns, &name) {
            None => {
                store.put(&gr, o);
            }
            Some(live) if live.get("spec") != o.get("spec") => {
                let mut n = live.clone();
                n["spec"] = o["spec"].clone();
                let g = n.at("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                n["metadata"]["generation"] = json!(g + 1);
                store.put(&gr, n);
            }
            Some(_) => {}
        }
    }
    waits
}

fn workload_ready(store: &Store, (gr, ns, name): &(GroupResource, String, String)) -> bool {
    let Some(o) = store.get(gr, ns, name) else { return false };
    let int = |p: &str| o.at(p).and_then(Value::as_i64).unwrap_or(0);
    let current = o.at("/status/observedGeneration") == o.at("/metadata/generation");
    current
        && if gr.resource == "daemonsets" {
            int("/status/numberAvailable") >= int("/status/desiredNumberScheduled")
        } else {
            int("/status/availableReplicas") >= o.at("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
        }
}

/// helm-controller's pass (it runs): keeps HelmCharts, installs what may be installed, and says
/// each release's Ready condition, by `(namespace, name)`.
pub fn reconcile_releases(store: &mut Store, b: &Behaviour) -> HashMap<(String, String), Verdict> {
    let releases = GroupResource::new("helm.toolkit.fluxcd.io", "helmreleases");
    let charts_gr = GroupResource::new("source.toolkit.fluxcd.io", "helmcharts");
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let helmcharts_served = store
        .get(&crds, "", "helmcharts.source.toolkit.fluxcd.io")
        .is_some_and(crd_established);
    let hrs: Vec<Value> = store.list(&releases, None).cloned().collect();
    let mut out = HashMap::new();
    for hr in hrs {
        let key = (
            s(&hr, "/metadata/namespace").to_owned(),
            s(&hr, "/metadata/name").to_owned(),
        );
        if let Some((ns, chart)) = helm_chart(&hr)
            && helmcharts_served
        {
            let live = store.get(&charts_gr, &ns, s(&chart, "/metadata/name"));
            if live.is_none_or(|l| l.get("spec") != chart.get("spec")) {
                let mut n = live.cloned().unwrap_or(chart.clone());
                n["spec"] = chart["spec"].clone();
                store.put(&charts_gr, n);
            }
        }
        out.insert(key, release(store, b, &hr));
    }
    out
}

fn release(store: &mut Store, b: &Behaviour, hr: &Value) -> Verdict {
    let (chart, version) = match chart_source(store, hr) {
        Ok(c) => c,
        Err(e) => return ("False", "ArtifactFailed", e),
    };
    let name = s(hr, "/metadata/name");
    let hr_ns = s(hr, "/metadata/namespace");
    let ns = hr.at("/spec/targetNamespace").and_then(Value::as_str).unwrap_or(hr_ns);
    let release_name = hr.at("/spec/releaseName").and_then(Value::as_str).unwrap_or(name);
    let values = hr.at("/spec/values").cloned().unwrap_or_else(|| json!({}));
    let what = format!("release {ns}/{release_name} with chart {chart}@{version}");
    if let Some(path) = b.chart_schemas.get(&chart)
        && let Err(e) = validate_values(&chart, &values, path)
    {
        return ("False", "InstallFailed", format!("Helm install failed for {what}: {e}"));
    }
    let create_ns = hr.at("/spec/install/createNamespace") == Some(&json!(true));
    if !create_ns && store.get(&GroupResource::new("", "namespaces"), "", ns).is_none() {
        // Upstream: Helm's kube client creating objects in a namespace that does not exist.
        return (
            "False",
            "InstallFailed",
            format!("Helm install failed for {what}: create: failed to create: namespaces \"{ns}\" not found"),
        );
    }
    let Some(objects) = charts::render(&chart, &version, release_name, ns, &values) else {
        return (
            "False",
            "InstallFailed",
            format!("kube-sim: chart {chart} is not simulated"),
        );
    };
    let waits = install(store, objects);
    if chart == "cilium"
        && let Some(operator) = waits.iter().find(|w| w.2.ends_with("-operator"))
        && workload_ready(store, operator)
    {
        register_cilium_crds(store, &values);
    }
    if waits.iter().all(|w| workload_ready(store, w)) {
        ("True", "InstallSucceeded", format!("Helm install succeeded for {what}"))
    } else {
        // Upstream: helm-controller waits for the release's resources (Helm's --wait) before Ready.
        (
            "Unknown",
            "Progressing",
            format!("Running 'install' action with timeout of 5m0s for {what}"),
        )
    }
}

/// The CRDs Cilium's operator registers once it runs (not the chart's
/// templates): the LB-IPAM pool always, the BGP control plane's only when it
/// is enabled (cilium `pkg/k8s/synced/crd.go`, `agentCRDResourceNames`). The
/// definitions are upstream's own files in `../shared/cilium/` (cilium
/// `pkg/k8s/apis/cilium.io/client/crds/v2/`), so their schemas are enforced.
fn register_cilium_crds(store: &mut Store, values: &Value) {
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let mut plurals = vec!["ciliumloadbalancerippools"];
    if values.at("/bgpControlPlane/enabled") == Some(&Value::Bool(true)) {
        plurals.extend([
            "ciliumbgpclusterconfigs",
            "ciliumbgppeerconfigs",
            "ciliumbgpadvertisements",
        ]);
    }
    for plural in plurals {
        if store.get(&crds, "", &format!("{plural}.cilium.io")).is_some() {
            continue;
        }
        let path = crate::kube_sim::shared_path(&format!("cilium/{plural}.yaml"));
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| yaml_serde::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(mut crd) => {
                crd["metadata"]["generation"] = json!(1);
                store.put(&crds, crd);
            }
            Err(e) => tracing::warn!(
                "kube-sim: cannot register {plural}.cilium.io from {}: {e}",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_values_are_checked_against_the_published_schema() {
        let path = crate::kube_sim::shared_path("cilium/values.schema.json");
        let good = json!({"ipam": {"mode": "kubernetes"}, "kubeProxyReplacement": true,
                          "k8sServiceHost": "localhost", "k8sServicePort": 7445, "operator": {"replicas": 1}});
        validate_values("cilium", &good, &path).unwrap();
        let bad = json!({"kubeProxyReplacement": 5, "operator": {"replicas": "one"}});
        let err = validate_values("cilium", &bad, &path).unwrap_err();
        assert!(
            err.starts_with(
                "values don't meet the specifications of the schema(s) in the following chart(s):\ncilium:\n"
            ),
            "{err}"
        );
        assert!(err.contains("- kubeProxyReplacement: "), "{err}");
        assert!(err.contains("- operator.replicas: "), "{err}");
    }

    #[test]
    fn ciliums_operator_registers_upstreams_bgp_crds_only_with_the_bgp_control_plane() {
        let mut store = Store::default();
        let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
        register_cilium_crds(&mut store, &json!({}));
        let pool = store
            .get(&crds, "", "ciliumloadbalancerippools.cilium.io")
            .expect("LB IPAM always");
        assert_eq!(pool["spec"]["scope"], "Cluster");
        assert!(
            pool.at("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
                .is_some(),
            "upstream's schema, not a stub"
        );
        assert!(store.get(&crds, "", "ciliumbgpclusterconfigs.cilium.io").is_none());
        register_cilium_crds(&mut store, &json!({"bgpControlPlane": {"enabled": true}}));
        for name in [
            "ciliumbgpclusterconfigs",
            "ciliumbgppeerconfigs",
            "ciliumbgpadvertisements",
        ] {
            assert!(store.get(&crds, "", &format!("{name}.cilium.io")).is_some(), "{name}");
        }
    }
}

//! Day-2 node operations: the `pods/eviction` subresource with
//! PodDisruptionBudget semantics, the disruption controller that computes
//! PDB status from pods, and the pod garbage collector that removes pods of
//! deleted Nodes. (Cordon is `spec.unschedulable`, honoured in [`super::scheduler`].)

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};
use super::workloads::{pod_ready, pods_gr};

fn pdbs_gr() -> GroupResource {
    GroupResource::new("policy", "poddisruptionbudgets")
}

/// A metav1.LabelSelector against labels. Upstream: apimachinery
/// pkg/apis/meta/v1/helpers.go `LabelSelectorAsSelector` (empty selects everything).
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let by_exprs = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str() {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

/// PDBs of `ns` whose selector matches `pod` (a null selector matches nothing).
fn pdbs_for<'a>(store: &'a Store, ns: &'a str, pod: &'a Value) -> Vec<&'a Value> {
    store
        .list(&pdbs_gr(), Some(ns))
        .filter(|p| p["spec"]["selector"].is_object() && selects(&p["spec"]["selector"], &pod["metadata"]["labels"]))
        .collect()
}

/// An int-or-percent against `total`, rounded up (intstr.GetScaledValueFromIntOrPercent, roundUp).
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((pct * total + 99) / 100)
        }
        _ => None,
    }
}

/// The status the disruption controller computes for one PDB. Upstream:
/// pkg/controller/disruption/disruption.go (`getExpectedPodCount`,
/// `countHealthyPods`, `updatePdbStatus`); the expected count is the number of
/// matching pods (the scale of their controllers, which owns them one to one here).
fn pdb_status(store: &Store, pdb: &Value) -> Value {
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or_default();
    let old = &pdb["status"];
    let disrupted: BTreeMap<String, Value> = old["disruptedPods"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let pods: Vec<&Value> = store
        .list(&pods_gr(), Some(ns))
        .filter(|p| selects(&pdb["spec"]["selector"], &p["metadata"]["labels"]))
        .collect();
    let expected = pods.len() as i64;
    let healthy = pods
        .iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .filter(|p| !disrupted.contains_key(p["metadata"]["name"].as_str().unwrap_or_default()))
        .filter(|p| pod_ready(p))
        .count() as i64;
    let desired = if let Some(min) = pdb["spec"].get("minAvailable") {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = pdb["spec"].get("maxUnavailable") {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        0
    };
    let allowed = (healthy - desired).max(0);
    // Entries of pods that are gone are dropped (the controller's DeletionTimeout handling).
    let still: serde_json::Map<String, Value> = disrupted
        .into_iter()
        .filter(|(name, _)| store.get(&pods_gr(), ns, name).is_some())
        .collect();
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut out = json!({
        "observedGeneration": pdb["metadata"]["generation"].as_i64().unwrap_or(1),
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "conditions": [{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
                        "observedGeneration": pdb["metadata"]["generation"].as_i64().unwrap_or(1),
                        "lastTransitionTime": now_rfc3339()}],
    });
    if !still.is_empty() {
        out["disruptedPods"] = Value::Object(still);
    }
    out
}

/// One pass: PDB statuses from pods, and pods bound to a Node that was
/// deleted (one in `seen`, the Nodes earlier passes saw) deleted.
pub fn reconcile(store: &mut Store, seen: &mut std::collections::BTreeSet<String>) {
    let mut writes = Vec::new();
    for pdb in store.list(&pdbs_gr(), None) {
        let status = pdb_status(store, pdb);
        if super::controllers::differs(&pdb["status"], &status) {
            let mut n = pdb.clone();
            n["status"] = status;
            writes.push(n);
        }
    }
    for n in writes {
        store.put(&pdbs_gr(), n);
    }
    // Upstream: pkg/controller/podgc/gc_controller.go `gcOrphaned` (pods on a deleted Node).
    let nodes = GroupResource::new("", "nodes");
    let now: std::collections::BTreeSet<String> = store
        .list(&nodes, None)
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let gone: std::collections::BTreeSet<String> = seen.difference(&now).cloned().collect();
    *seen = now;
    let orphans: Vec<(String, String)> = store
        .list(&pods_gr(), None)
        .filter(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| gone.contains(n)))
        .map(|p| {
            (
                p["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                p["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (ns, name) in orphans {
        store.remove(&pods_gr(), &ns, &name);
    }
}

/// A refusal: HTTP code, reason and message, and details for the Status body.
pub type Refusal = (u16, &'static str, String, Option<Value>);

const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// `POST .../pods/{name}/eviction`. Upstream: pkg/registry/core/pod/storage/eviction.go
/// (`EvictionREST.Create`, `checkAndDecrement`, `createTooManyRequestsError`).
/// Returns the Status body of a successful eviction.
pub fn evict(store: &mut Store, ns: &str, name: &str, body: &Value) -> Result<Value, Refusal> {
    // The endpoint's type fills in a missing kind/apiVersion (kube-apiserver decodes into
    // the Eviction the subresource expects); a different one is refused.
    let kind = body["kind"].as_str().unwrap_or("Eviction");
    let api = body["apiVersion"].as_str().unwrap_or("policy/v1");
    if kind != "Eviction" || !matches!(api, "policy/v1" | "policy/v1beta1") {
        return Err((
            400,
            "BadRequest",
            format!("the body must be a policy/v1 Eviction, not {api} {kind}"),
            None,
        ));
    }
    if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err((
            400,
            "BadRequest",
            format!("name in URL does not match name in Eviction object: {name}"),
            None,
        ));
    }
    let Some(pod) = store.get(&pods_gr(), ns, name).cloned() else {
        return Err((
            404,
            "NotFound",
            format!("pods \"{name}\" not found"),
            Some(json!({"name": name, "kind": "pods"})),
        ));
    };
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    // canIgnorePDB: terminal, pending or already terminating pods are deleted without a budget check.
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed" | "Pending") || pod["metadata"].get("deletionTimestamp").is_some() {
        super::lifecycle::delete(store, &pods_gr(), pod);
        return Ok(success);
    }
    let pdbs: Vec<Value> = pdbs_for(store, ns, &pod).into_iter().cloned().collect();
    if pdbs.len() > 1 {
        return Err((
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            None,
        ));
    }
    if let Some(mut pdb) = pdbs.into_iter().next() {
        let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
        if observed < generation {
            return Err(too_many(
                10,
                format!("The disruption budget {pdb_name} is still being processed by the server."),
            ));
        }
        let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed <= 0 {
            let (desired, current) = (
                pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                pdb["status"]["currentHealthy"].as_i64().unwrap_or(0),
            );
            return Err(too_many(
                0,
                format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"),
            ));
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !pdb["status"]["disruptedPods"].is_object() {
            pdb["status"]["disruptedPods"] = json!({});
        }
        pdb["status"]["disruptedPods"][name] = json!(now_rfc3339());
        store.put(&pdbs_gr(), pdb);
    }
    super::lifecycle::delete(store, &pods_gr(), pod);
    Ok(success)
}

/// errors.NewTooManyRequests with a DisruptionBudget cause.
fn too_many(retry_after: u64, cause: String) -> Refusal {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    (429, "TooManyRequests", VIOLATES.into(), Some(details))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(store: &mut Store, name: &str, ready: bool) {
        store.put(
            &pods_gr(),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
                   "status": {"phase": "Running",
                              "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        );
    }

    fn eviction(name: &str) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}})
    }

    fn with_node() -> (Store, std::collections::BTreeSet<String>) {
        let mut store = Store::default();
        store.put(
            &GroupResource::new("", "nodes"),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        );
        (store, Default::default())
    }

    #[test]
    fn eviction_honours_the_budget_and_is_allowed_once_the_budget_allows() {
        let (mut store, mut seen) = with_node();
        pod(&mut store, "a", true);
        pod(&mut store, "b", true);
        store.put(
            &pdbs_gr(),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "web", "namespace": "default", "generation": 1},
                   "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
        );
        // Before the controller observed the PDB: 429, still being processed.
        let (code, reason, msg, details) = evict(&mut store, "default", "a", &eviction("a")).unwrap_err();
        assert_eq!((code, reason, msg.as_str()), (429, "TooManyRequests", VIOLATES));
        assert!(
            details.unwrap()["causes"][0]["message"]
                .as_str()
                .unwrap()
                .contains("still being processed")
        );
        reconcile(&mut store, &mut seen);
        let pdb = store.get(&pdbs_gr(), "default", "web").unwrap();
        assert_eq!(pdb["status"]["currentHealthy"], 2);
        assert_eq!(pdb["status"]["desiredHealthy"], 2);
        assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
        let (code, _, _, details) = evict(&mut store, "default", "a", &eviction("a")).unwrap_err();
        assert_eq!(code, 429);
        assert_eq!(
            details.unwrap()["causes"][0]["message"],
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        assert!(
            store.get(&pods_gr(), "default", "a").is_some(),
            "a refused eviction deletes nothing"
        );

        // A third ready pod: one disruption allowed, and only one.
        pod(&mut store, "c", true);
        reconcile(&mut store, &mut seen);
        assert_eq!(
            store.get(&pdbs_gr(), "default", "web").unwrap()["status"]["disruptionsAllowed"],
            1
        );
        let ok = evict(&mut store, "default", "a", &eviction("a")).unwrap();
        assert_eq!(ok["status"], "Success");
        assert!(
            store.get(&pods_gr(), "default", "a").is_none(),
            "the evicted pod is gone"
        );
        assert_eq!(evict(&mut store, "default", "b", &eviction("b")).unwrap_err().0, 429);
        reconcile(&mut store, &mut seen);
        let pdb = store.get(&pdbs_gr(), "default", "web").unwrap();
        assert_eq!(pdb["status"]["currentHealthy"], 2);
        assert_eq!(pdb["status"]["expectedPods"], 2);
    }

    #[test]
    fn pods_outside_any_budget_and_pending_pods_are_evicted_at_once() {
        let (mut store, _) = with_node();
        pod(&mut store, "a", true);
        assert!(evict(&mut store, "default", "a", &eviction("a")).is_ok());
        assert_eq!(evict(&mut store, "default", "a", &eviction("a")).unwrap_err().0, 404);
        assert_eq!(
            evict(&mut store, "default", "a", &json!({"apiVersion": "v1", "kind": "Pod"}))
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn max_unavailable_percent_and_unready_pods() {
        let (mut store, mut seen) = with_node();
        for (n, ready) in [("a", true), ("b", true), ("c", false), ("d", true)] {
            pod(&mut store, n, ready);
        }
        store.put(
            &pdbs_gr(),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "web", "namespace": "default", "generation": 1},
                   "spec": {"maxUnavailable": "25%", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}}),
        );
        reconcile(&mut store, &mut seen);
        let st = &store.get(&pdbs_gr(), "default", "web").unwrap()["status"];
        // 4 expected, 25% of 4 = 1 unavailable: 3 desired, 3 healthy, 0 allowed.
        assert_eq!(
            (st["expectedPods"].as_i64(), st["desiredHealthy"].as_i64()),
            (Some(4), Some(3))
        );
        assert_eq!(st["disruptionsAllowed"], 0);
    }

    #[test]
    fn pods_of_a_deleted_node_are_collected() {
        let (mut store, mut seen) = with_node();
        pod(&mut store, "a", true);
        reconcile(&mut store, &mut seen);
        assert!(store.get(&pods_gr(), "default", "a").is_some());
        store.remove(&GroupResource::new("", "nodes"), "", "n1");
        reconcile(&mut store, &mut seen);
        assert!(
            store.get(&pods_gr(), "default", "a").is_none(),
            "podgc removed the orphan"
        );
    }
}

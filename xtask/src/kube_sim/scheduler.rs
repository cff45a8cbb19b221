//! kube-scheduler, simulated: binds each unbound Pod to a Node that passes the
//! filters a real scheduler runs (taints, nodeSelector and required node
//! affinity, host ports), or records why none does, in the message shape of
//! upstream's `FitError` (`0/3 nodes are available: ...`).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::path::At;
use serde_json::{Value, json};

use super::events;
use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};

/// A Node's taints, as `(key, value, effect)`.
pub fn taints(node: &Value) -> Vec<(String, String, String)> {
    node.at("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            (s("key"), s("value"), s("effect"))
        })
        .collect()
}

/// Whether one toleration tolerates one taint.
// Upstream: k8s.io/api/core/v1/toleration.go `ToleratesTaint` (empty key + Exists matches all; empty effect matches all).
fn tolerates(tol: &Value, (key, value, effect): &(String, String, String)) -> bool {
    let t_effect = tol["effect"].as_str().unwrap_or_default();
    if !t_effect.is_empty() && t_effect != effect {
        return false;
    }
    let t_key = tol["key"].as_str().unwrap_or_default();
    if !t_key.is_empty() && t_key != key {
        return false;
    }
    match tol["operator"].as_str().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => tol["value"].as_str().unwrap_or_default() == value,
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration of `pod_spec` tolerates.
// Upstream: k8s.io/component-helpers/scheduling/corev1 `FindMatchingUntoleratedTaint`.
pub fn untolerated<'a>(
    pod_spec: &Value,
    taints: &'a [(String, String, String)],
    effects: &[&str],
) -> Option<&'a (String, String, String)> {
    let tols = pod_spec["tolerations"].as_array();
    taints
        .iter()
        .filter(|t| effects.contains(&t.2.as_str()))
        .find(|t| !tols.is_some_and(|ts| ts.iter().any(|tol| tolerates(tol, t))))
}

fn field_of(node: &Value, key: &str) -> Option<String> {
    // Upstream: only `metadata.name` is supported in matchFields (nodeaffinity.go).
    (key == "metadata.name").then(|| node["metadata"]["name"].as_str().unwrap_or_default().to_owned())
}

fn requirement_matches(req: &Value, value: Option<String>) -> bool {
    let values: Vec<&str> = req["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let num = |s: &str| s.parse::<i64>().ok();
    match req["operator"].as_str().unwrap_or_default() {
        "In" => value.is_some_and(|v| values.contains(&v.as_str())),
        "NotIn" => value.is_none_or(|v| !values.contains(&v.as_str())),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.as_deref().and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.as_deref().and_then(num), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// nodeSelector and `requiredDuringSchedulingIgnoredDuringExecution` node affinity.
// Upstream: k8s.io/component-helpers/scheduling/corev1/nodeaffinity `GetRequiredNodeAffinity(pod).Match(node)`:
// every nodeSelector label equal, and any one nodeSelectorTerm whose expressions and fields all match.
pub fn affinity_matches(pod_spec: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let label = |k: &str| labels[k].as_str().map(str::to_owned);
    if let Some(sel) = pod_spec["nodeSelector"].as_object()
        && !sel.iter().all(|(k, v)| label(k).as_deref() == v.as_str())
    {
        return false;
    }
    let Some(terms) = pod_spec
        .at("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    terms.iter().any(|term| {
        let exprs = term["matchExpressions"].as_array();
        let fields = term["matchFields"].as_array();
        // Upstream: a term with neither expressions nor fields matches nothing.
        (exprs.is_some_and(|e| !e.is_empty()) || fields.is_some_and(|f| !f.is_empty()))
            && exprs
                .into_iter()
                .flatten()
                .all(|r| requirement_matches(r, label(r["key"].as_str().unwrap_or_default())))
            && fields
                .into_iter()
                .flatten()
                .all(|r| requirement_matches(r, field_of(node, r["key"].as_str().unwrap_or_default())))
    })
}

/// Host ports a pod asks for: `(protocol, hostIP, port)`. With hostNetwork every containerPort is a host port.
// Upstream: pkg/scheduler/framework/plugins/nodeports (containerPort becomes hostPort under hostNetwork, defaulting).
pub fn host_ports(pod_spec: &Value) -> Vec<(String, String, i64)> {
    let host_network = pod_spec["hostNetwork"] == true;
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod_spec["initContainers"].as_array().into_iter().flatten())
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let port = p["hostPort"]
                .as_i64()
                .or_else(|| host_network.then(|| p["containerPort"].as_i64()).flatten())?;
            (port > 0).then(|| {
                (
                    p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                    p["hostIP"].as_str().unwrap_or("0.0.0.0").to_owned(),
                    port,
                )
            })
        })
        .collect()
}

fn ports_clash(want: &[(String, String, i64)], used: &HashSet<(String, String, i64)>) -> bool {
    want.iter().any(|(proto, ip, port)| {
        used.iter()
            .any(|(p2, ip2, port2)| p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0"))
    })
}

/// Why one node does not fit, as upstream's filter plugins word it.
fn misfit(pod_spec: &Value, node: &Value, used: Option<&HashSet<(String, String, i64)>>) -> Option<String> {
    if !affinity_matches(pod_spec, node) {
        // Upstream: nodeaffinity.ErrReasonPod.
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    let ts = taints(node);
    // Upstream: tainttoleration plugin filters on NoSchedule and NoExecute taints only.
    if let Some((k, v, _)) = untolerated(pod_spec, &ts, &["NoSchedule", "NoExecute"]) {
        return Some(format!("node(s) had untolerated taint {{{k}: {v}}}"));
    }
    if node.at("/spec/unschedulable") == Some(&json!(true)) {
        // Upstream: nodeunschedulable.ErrReasonUnschedulable.
        return Some("node(s) were unschedulable".into());
    }
    let want = host_ports(pod_spec);
    if !want.is_empty() && used.is_some_and(|u| ports_clash(&want, u)) {
        // Upstream: nodeports.ErrReason.
        return Some("node(s) didn't have free ports for the requested pod ports".into());
    }
    None
}

/// Result of trying to schedule one pod.
pub enum Placement {
    Bind(String),
    /// The FailedScheduling message.
    Unschedulable(String),
}

/// The host ports in use per node, by every bound pod that has not terminated.
pub fn ports_in_use(pods: &[&Value]) -> HashMap<String, HashSet<(String, String, i64)>> {
    let mut used: HashMap<String, HashSet<(String, String, i64)>> = HashMap::new();
    for p in pods {
        let Some(node) = p.at("/spec/nodeName").and_then(Value::as_str) else {
            continue;
        };
        if matches!(
            p.at("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        used.entry(node.to_owned()).or_default().extend(host_ports(&p["spec"]));
    }
    used
}

/// Picks a node for `pod` (the first that fits, by name), or the FailedScheduling message.
/// A pod pinned by `matchFields metadata.name In [one]` (DaemonSet pods) looks at that node only.
pub fn place(
    pod: &Value,
    nodes: &BTreeMap<String, &Value>,
    used: &HashMap<String, HashSet<(String, String, i64)>>,
) -> Placement {
    let spec = &pod["spec"];
    let pinned = pinned_node(spec);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let candidates: Box<dyn Iterator<Item = (&String, &&Value)>> = match &pinned {
        Some(n) => Box::new(nodes.get_key_value(n).into_iter()),
        None => Box::new(nodes.iter()),
    };
    for (name, node) in candidates {
        match misfit(spec, node, used.get(name)) {
            None => return Placement::Bind(name.clone()),
            Some(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    // Nodes a pinned pod never looked at did not match its affinity.
    let unmatched = nodes.len() - reasons.values().sum::<usize>();
    if unmatched > 0 {
        *reasons
            .entry("node(s) didn't match Pod's node affinity/selector".into())
            .or_default() += unmatched;
    }
    Placement::Unschedulable(fit_error(nodes.len(), &reasons))
}

/// Upstream: pkg/scheduler/framework/types.go `FitError.Error()`: "0/N nodes are available: " + the reasons
/// histogram ("<count> <reason>", sorted as strings, joined by ", ") + ".", then the preemption post-filter
/// message; with no nodes at all, "no nodes available to schedule pods".
pub fn fit_error(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
        parts.join(", ")
    )
}

/// The node every required term pins a pod to with `matchFields metadata.name In [x]` (DaemonSet pods).
fn pinned_node(spec: &Value) -> Option<String> {
    let terms = spec
        .at("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    let pins: Vec<Option<&str>> = terms
        .iter()
        .map(|t| {
            t["matchFields"].as_array().and_then(|fs| {
                fs.iter().find_map(|f| {
                    let one = f["values"].as_array().filter(|v| v.len() == 1)?;
                    (f["key"] == "metadata.name" && f["operator"] == "In").then(|| one[0].as_str())?
                })
            })
        })
        .collect();
    let first = (*pins.first()?)?;
    pins.iter().all(|p| *p == Some(first)).then(|| first.to_owned())
}

/// One scheduling pass: binds every unbound, unscheduled pod that fits somewhere; records
/// `PodScheduled=False` (reason Unschedulable) and a FailedScheduling event on the others.
pub fn run(store: &mut Store) {
    let pods_gr = GroupResource::new("", "pods");
    type Decided = Vec<(Value, String)>;
    let (binds, failures): (Decided, Decided) = {
        let unbound: Vec<&Value> = store
            .list(&pods_gr, None)
            .filter(|p| p.at("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty))
            .collect();
        if unbound.is_empty() {
            return;
        }
        let nodes: BTreeMap<String, &Value> = store
            .list(&GroupResource::new("", "nodes"), None)
            .map(|n| (n["metadata"]["name"].as_str().unwrap_or_default().to_owned(), n))
            .collect();
        let all: Vec<&Value> = store.list(&pods_gr, None).collect();
        let mut used = ports_in_use(&all);
        let (mut binds, mut failures) = (vec![], vec![]);
        for p in unbound {
            match place(p, &nodes, &used) {
                Placement::Bind(n) => {
                    used.entry(n.clone()).or_default().extend(host_ports(&p["spec"]));
                    binds.push((p.clone(), n));
                }
                Placement::Unschedulable(msg) => failures.push((p.clone(), msg)),
            }
        }
        (binds, failures)
    };
    for (mut p, node) in binds {
        p["spec"]["nodeName"] = json!(node);
        p["status"]["conditions"] =
            json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]);
        store.put(&pods_gr, p);
    }
    for (mut p, msg) in failures {
        let current = p.at("/status/conditions/0/message").and_then(Value::as_str) == Some(msg.as_str());
        if current {
            continue;
        }
        let (ns, name) = (
            p["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
            p["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        );
        events::warn(store, ("Pod", &ns, &name), "FailedScheduling", &msg);
        p["status"] = json!({"phase": "Pending", "qosClass": p["status"]["qosClass"].clone(),
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": msg, "lastTransitionTime": now_rfc3339()}]});
        store.put(&pods_gr, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, taints: Value, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn taints_need_tolerations_and_the_message_is_upstreams() {
        let not_ready = json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]);
        let (a, b, c) = (
            node("a", not_ready.clone(), json!({})),
            node("b", not_ready.clone(), json!({})),
            node("c", not_ready, json!({})),
        );
        let nodes: BTreeMap<String, &Value> = [("a".into(), &a), ("b".into(), &b), ("c".into(), &c)].into();
        let pod = json!({"spec": {"containers": [{"name": "x"}]}});
        let Placement::Unschedulable(msg) = place(&pod, &nodes, &HashMap::new()) else {
            panic!("bound to a not-ready node")
        };
        assert!(
            msg.starts_with(
                "0/3 nodes are available: 3 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
            ),
            "{msg}"
        );
        let tolerant =
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}});
        assert!(matches!(place(&tolerant, &nodes, &HashMap::new()), Placement::Bind(n) if n == "a"));
        // A NoExecute-only toleration (what DefaultTolerationSeconds adds) does not tolerate NoSchedule.
        let no_execute = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]}});
        assert!(matches!(
            place(&no_execute, &nodes, &HashMap::new()),
            Placement::Unschedulable(_)
        ));
    }

    #[test]
    fn affinity_selector_and_host_ports_filter_nodes() {
        let cp = node("cp", json!([]), json!({"node-role.kubernetes.io/control-plane": ""}));
        let w = node("w", json!([]), json!({}));
        let nodes: BTreeMap<String, &Value> = [("cp".into(), &cp), ("w".into(), &w)].into();
        let pod = json!({"spec": {"hostNetwork": true, "containers": [{"ports": [{"containerPort": 9090}]}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}]}}}}});
        assert!(matches!(place(&pod, &nodes, &HashMap::new()), Placement::Bind(n) if n == "cp"));
        let used: HashMap<String, HashSet<(String, String, i64)>> =
            [("cp".into(), [("TCP".into(), "0.0.0.0".into(), 9090)].into())].into();
        let Placement::Unschedulable(msg) = place(&pod, &nodes, &used) else {
            panic!("port clash ignored")
        };
        assert!(msg.starts_with("0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't match Pod's node affinity/selector."), "{msg}");
        let selector = json!({"spec": {"nodeSelector": {"disk": "ssd"}}});
        assert!(matches!(
            place(&selector, &nodes, &HashMap::new()),
            Placement::Unschedulable(_)
        ));
    }
}

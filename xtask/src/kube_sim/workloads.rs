//! kube-controller-manager's workload controllers, simulated: the
//! ServiceAccount controller (`default` in every namespace), Deployments and
//! DaemonSets creating Pods from their templates (admission included: a pod
//! whose ServiceAccount is missing is refused), pod garbage collection, and
//! workload status computed from the pods that run.

use std::collections::{BTreeMap, HashMap};

use super::path::At;
use serde_json::{Value, json};
use sha2::Digest;

use super::controllers::{cond, differs, generation, held};
use super::events;
use super::resources::GroupResource;
use super::scheduler;
use super::store::Store;

pub fn pods_gr() -> GroupResource {
    GroupResource::new("", "pods")
}
fn deployments_gr() -> GroupResource {
    GroupResource::new("apps", "deployments")
}
fn daemonsets_gr() -> GroupResource {
    GroupResource::new("apps", "daemonsets")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}
fn namespace(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// Upstream: pkg/controller/serviceaccount (tokens_controller / serviceaccounts_controller): every
/// namespace gets a `default` ServiceAccount.
pub fn default_service_accounts(store: &mut Store) {
    let sas = GroupResource::new("", "serviceaccounts");
    let missing: Vec<String> = store
        .list(&GroupResource::new("", "namespaces"), None)
        .filter(|ns| ns.at("/status/phase").and_then(Value::as_str) != Some("Terminating"))
        .map(|ns| name(ns).to_owned())
        .filter(|ns| store.get(&sas, ns, "default").is_none())
        .collect();
    for ns in missing {
        store.put(
            &sas,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
        );
    }
}

/// Letters upstream uses for generated names (k8s.io/apimachinery/pkg/util/rand `SafeEncodeString`).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_hash(input: &str, len: usize) -> String {
    let digest = sha2::Sha256::digest(input.as_bytes());
    digest
        .iter()
        .take(len)
        .map(|b| SAFE[*b as usize % SAFE.len()] as char)
        .collect()
}

/// The pod template's hash (`pod-template-hash` / `controller-revision-hash`).
fn template_hash(w: &Value) -> String {
    safe_hash(&w.at("/spec/template").cloned().unwrap_or_default().to_string(), 10)
}

/// The owner reference a controller puts on its pods.
fn owner_ref(w: &Value) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": w["kind"], "name": w["metadata"]["name"],
            "uid": w["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
}

fn owned_by(pod: &Value) -> Option<(&str, &str)> {
    let r = pod.at("/metadata/ownerReferences/0")?;
    Some((r["kind"].as_str()?, r["name"].as_str()?))
}

fn add_toleration(spec: &mut Value, tol: Value) {
    let tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let same = |t: &Value| t["key"] == tol["key"] && t["effect"] == tol["effect"];
    if !tols.iter().any(same) {
        let mut tols = tols;
        tols.push(tol);
        spec["tolerations"] = Value::Array(tols);
    }
}

/// A pod as the workload controller and admission would create it.
fn new_pod(w: &Value, pod_name: &str, hash_label: (&str, &str), node: Option<&str>) -> Value {
    let mut spec = w.at("/spec/template/spec").cloned().unwrap_or_else(|| json!({}));
    // Upstream: ServiceAccount admission plugin defaults the pod's serviceAccountName to "default".
    if spec["serviceAccountName"].as_str().is_none_or(str::is_empty) {
        spec["serviceAccountName"] = json!(spec["serviceAccount"].as_str().unwrap_or("default"));
    }
    // Upstream: DefaultTolerationSeconds admission plugin (not-ready/unreachable NoExecute for 300 s).
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        add_toleration(
            &mut spec,
            json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        );
    }
    if let Some(node) = node {
        daemon_pod_tolerations(&mut spec);
        // Upstream: pkg/controller/daemon/util `ReplaceDaemonSetPodNodeNameNodeAffinity`: every required
        // term gets matchFields metadata.name In [node] (expressions are kept).
        let pin = json!([{"key": "metadata.name", "operator": "In", "values": [node]}]);
        let path = "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
        let mut terms = spec.at(path).and_then(Value::as_array).cloned().unwrap_or_default();
        if terms.is_empty() {
            terms.push(json!({}));
        }
        for t in &mut terms {
            t["matchFields"] = pin.clone();
        }
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] =
            Value::Array(terms);
    }
    let mut labels = w
        .at("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels[hash_label.0] = json!(hash_label.1);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace(w), "labels": labels,
                     "annotations": w.at("/spec/template/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
                     "ownerReferences": owner_ref(w), "generation": 1},
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    })
}

/// Upstream: kubernetes docs "DaemonSet: Taints and tolerations" / pkg/controller/daemon/util
/// `AddOrUpdateDaemonPodTolerations`: the tolerations every DaemonSet pod gets.
fn daemon_pod_tolerations(spec: &mut Value) {
    let host_network = spec["hostNetwork"] == true;
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        add_toleration(spec, json!({"key": key, "operator": "Exists", "effect": effect}));
    }
    if host_network {
        add_toleration(
            spec,
            json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}),
        );
    }
}

/// Upstream: plugin/pkg/admission/serviceaccount: a pod naming a missing ServiceAccount is refused.
fn admission_error(store: &Store, w: &Value, pod_name: &str) -> Option<String> {
    let sa = w
        .at("/spec/template/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let ns = namespace(w);
    store
        .get(&GroupResource::new("", "serviceaccounts"), ns, sa)
        .is_none()
        .then(|| {
            format!(
                "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
            )
        })
}

/// Pods by owner `(kind, namespace, name)`.
type ByOwner<'a> = HashMap<(&'a str, &'a str, &'a str), Vec<&'a Value>>;

fn pods_by_owner(store: &Store) -> ByOwner<'_> {
    let mut out: ByOwner = HashMap::new();
    for p in store.list(&pods_gr(), None) {
        if let Some((kind, owner)) = owned_by(p) {
            out.entry((kind, namespace(p), owner)).or_default().push(p);
        }
    }
    out
}

/// Pods to create and delete, and workload failures to report.
#[derive(Default)]
struct Changes {
    create: Vec<Value>,
    delete: Vec<(String, String)>,
    /// (workload kind, namespace, name) → FailedCreate message.
    failed: HashMap<(String, String, String), String>,
}

/// Creates and deletes pods so every Deployment and DaemonSet has the pods it wants; deletes
/// pods whose owner or node is gone (upstream: garbage collector and PodGC).
pub fn sync_pods(store: &mut Store, failures: &mut HashMap<(String, String, String), String>) {
    let nodes: BTreeMap<String, &Value> = store
        .list(&GroupResource::new("", "nodes"), None)
        .map(|n| (name(n).to_owned(), n))
        .collect();
    let by_owner = pods_by_owner(store);
    let mut ch = Changes::default();
    for d in store.list(&deployments_gr(), None) {
        sync_deployment(store, d, &by_owner, &mut ch);
    }
    for ds in store.list(&daemonsets_gr(), None) {
        sync_daemonset(store, ds, &nodes, &by_owner, &mut ch);
    }
    for p in store.list(&pods_gr(), None) {
        let orphan = owned_by(p).is_some_and(|(kind, owner)| {
            let gr = match kind {
                "Deployment" => deployments_gr(),
                "DaemonSet" => daemonsets_gr(),
                _ => return false,
            };
            store.get(&gr, namespace(p), owner).is_none()
        });
        let lost = p
            .at("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !nodes.contains_key(n));
        if orphan || lost {
            ch.delete.push((namespace(p).to_owned(), name(p).to_owned()));
        }
    }
    let Changes { create, delete, failed } = ch;
    for (ns, n) in delete {
        store.remove(&pods_gr(), &ns, &n);
    }
    for p in create {
        store.put(&pods_gr(), p);
    }
    for ((kind, ns, n), msg) in &failed {
        if failures.get(&(kind.clone(), ns.clone(), n.clone())) != Some(msg) {
            events::warn(store, (kind, ns, n), "FailedCreate", &format!("Error creating: {msg}"));
        }
    }
    *failures = failed;
}

fn sync_deployment(store: &Store, d: &Value, by_owner: &ByOwner, ch: &mut Changes) {
    let want = d.at("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
    let hash = template_hash(d);
    let key = ("Deployment".to_owned(), namespace(d).to_owned(), name(d).to_owned());
    let pods = by_owner
        .get(&("Deployment", namespace(d), name(d)))
        .cloned()
        .unwrap_or_default();
    let (current, old): (Vec<&Value>, Vec<&Value>) = pods
        .into_iter()
        .partition(|p| p.at("/metadata/labels/pod-template-hash").and_then(Value::as_str) == Some(&hash));
    // Old revisions go (a Recreate-like rollout); extra replicas go.
    ch.delete
        .extend(old.iter().map(|p| (namespace(p).to_owned(), name(p).to_owned())));
    let mut current: Vec<&Value> = current;
    current.sort_by_key(|p| name(p).to_owned());
    for p in current.iter().skip(want) {
        ch.delete.push((namespace(p).to_owned(), name(p).to_owned()));
    }
    let mut created = current.len().min(want);
    while created < want {
        // Upstream: the ReplicaSet controller creates pods with generateName "<rs>-", so a
        // replacement never reuses an evicted or deleted pod's name.
        let pod_name = generated_pod_name(store, namespace(d), &format!("{}-{hash}-", name(d)));
        if let Some(msg) = admission_error(store, d, &pod_name) {
            ch.failed.insert(key.clone(), msg);
            return;
        }
        ch.create
            .push(new_pod(d, &pod_name, ("pod-template-hash", &hash), None));
        created += 1;
    }
}

/// `prefix` plus a generated suffix no pod in `ns` has (upstream the apiserver refuses a taken
/// name with AlreadyExists and the controller creates again).
fn generated_pod_name(store: &Store, ns: &str, prefix: &str) -> String {
    loop {
        let name = format!("{prefix}{}", super::api::name_suffix());
        if store.get(&pods_gr(), ns, &name).is_none() {
            return name;
        }
    }
}

/// Upstream: pkg/controller/daemon `NodeShouldRunDaemonPod`: the node matches the pod's node
/// affinity/selector and the pod (with the automatic DaemonSet tolerations) tolerates the node's
/// NoSchedule and NoExecute taints.
/// `spec` is the template's, with [`daemon_pod_tolerations`] added.
fn should_run(spec: &Value, node: &Value) -> bool {
    let taints = scheduler::taints(node);
    scheduler::affinity_matches(spec, node)
        && scheduler::untolerated(spec, &taints, &["NoSchedule", "NoExecute"]).is_none()
}

fn daemon_spec(ds: &Value) -> Value {
    let mut spec = ds.at("/spec/template/spec").cloned().unwrap_or_else(|| json!({}));
    daemon_pod_tolerations(&mut spec);
    spec
}

/// The node a DaemonSet pod is pinned to.
fn pinned(p: &Value) -> Option<&str> {
    p.at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields")?
        .as_array()?
        .iter()
        .find(|f| f["key"] == "metadata.name")?
        .at("/values/0")?
        .as_str()
}

fn sync_daemonset(store: &Store, ds: &Value, nodes: &BTreeMap<String, &Value>, by_owner: &ByOwner, ch: &mut Changes) {
    let hash = template_hash(ds);
    let key = ("DaemonSet".to_owned(), namespace(ds).to_owned(), name(ds).to_owned());
    let pods = by_owner
        .get(&("DaemonSet", namespace(ds), name(ds)))
        .cloned()
        .unwrap_or_default();
    let mut on_node: HashMap<&str, &Value> = HashMap::new();
    for p in &pods {
        let current = p
            .at("/metadata/labels/controller-revision-hash")
            .and_then(Value::as_str)
            == Some(&hash);
        match pinned(p) {
            Some(n) if current && !on_node.contains_key(n) => {
                on_node.insert(n, p);
            }
            _ => ch.delete.push((namespace(p).to_owned(), name(p).to_owned())),
        }
    }
    let spec = daemon_spec(ds);
    for (node_name, node) in nodes {
        if on_node.contains_key(node_name.as_str()) || !should_run(&spec, node) {
            continue;
        }
        // Upstream: pkg/controller/daemon creates pods with generateName "<ds>-".
        let pod_name = generated_pod_name(store, namespace(ds), &format!("{}-", name(ds)));
        if let Some(msg) = admission_error(store, ds, &pod_name) {
            ch.failed.insert(key.clone(), msg);
            return;
        }
        ch.create.push(new_pod(
            ds,
            &pod_name,
            ("controller-revision-hash", &hash),
            Some(node_name),
        ));
    }
}

pub fn pod_ready(p: &Value) -> bool {
    p.at("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Every Deployment and DaemonSet whose status (computed from its pods) changed, with the new status.
pub fn statuses(store: &Store, failures: &HashMap<(String, String, String), String>) -> Vec<(GroupResource, Value)> {
    let nodes: Vec<&Value> = store.list(&GroupResource::new("", "nodes"), None).collect();
    let by_owner = pods_by_owner(store);
    let mut out = vec![];
    for d in store.list(&deployments_gr(), None) {
        let key = ("Deployment".to_owned(), namespace(d).to_owned(), name(d).to_owned());
        let pods = by_owner
            .get(&("Deployment", namespace(d), name(d)))
            .map(Vec::as_slice)
            .unwrap_or_default();
        out.push((
            deployments_gr(),
            with_status(d, deployment_status(d, pods, failures.get(&key))),
        ));
    }
    for ds in store.list(&daemonsets_gr(), None) {
        let pods = by_owner
            .get(&("DaemonSet", namespace(ds), name(ds)))
            .map(Vec::as_slice)
            .unwrap_or_default();
        out.push((daemonsets_gr(), with_status(ds, daemonset_status(ds, pods, &nodes))));
    }
    out.into_iter().filter_map(|(gr, o)| Some((gr, o?))).collect()
}

fn with_status(o: &Value, status: Value) -> Option<Value> {
    differs(&o["status"], &status).then(|| {
        let mut n = o.clone();
        n["status"] = status;
        n
    })
}

/// Upstream: pkg/controller/deployment/util `MaxUnavailable` (0 for Recreate; else
/// `rollingUpdate.maxUnavailable`, default 25%, rounded down).
fn max_unavailable(d: &Value, want: i64) -> i64 {
    if d.at("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        return 0;
    }
    let v = d
        .at("/spec/strategy/rollingUpdate/maxUnavailable")
        .cloned()
        .unwrap_or(json!("25%"));
    let n = match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(|p| want * p / 100)
            .unwrap_or(0),
        _ => 0,
    };
    n.min(want)
}

fn deployment_status(d: &Value, pods: &[&Value], failure: Option<&String>) -> Value {
    let want = d.at("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let g = generation(d);
    let hash = template_hash(d);
    let replicas = pods.len() as i64;
    let updated = pods
        .iter()
        .filter(|p| p.at("/metadata/labels/pod-template-hash").and_then(Value::as_str) == Some(&hash))
        .count() as i64;
    let held = held(d);
    let ready = if held {
        0
    } else {
        pods.iter().filter(|p| pod_ready(p)).count() as i64
    };
    let available = ready;
    let mut conditions = vec![];
    // Upstream: pkg/controller/deployment/sync.go `syncDeploymentStatus` / util `DeploymentAvailable`.
    conditions.push(if available >= want - max_unavailable(d, want) && !held {
        cond(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    });
    conditions.push(if updated == want && available >= want && !held {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{}-{hash}\" has successfully progressed.", name(d)),
        )
    } else {
        cond(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{}-{hash}\" is progressing.", name(d)),
        )
    });
    if let Some(msg) = failure {
        conditions.push(cond("ReplicaFailure", "True", "FailedCreate", msg));
    }
    let mut s = json!({"observedGeneration": g, "replicas": replicas, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": available, "conditions": conditions});
    if replicas - available > 0 {
        s["unavailableReplicas"] = json!(replicas.max(want) - available);
    }
    s
}

fn daemonset_status(ds: &Value, pods: &[&Value], nodes: &[&Value]) -> Value {
    let g = generation(ds);
    let hash = template_hash(ds);
    let spec = daemon_spec(ds);
    let desired = nodes.iter().filter(|n| should_run(&spec, n)).count() as i64;
    let scheduled = pods.iter().filter(|p| p.at("/spec/nodeName").is_some()).count() as i64;
    let updated = pods
        .iter()
        .filter(|p| p.at("/spec/nodeName").is_some())
        .filter(|p| {
            p.at("/metadata/labels/controller-revision-hash")
                .and_then(Value::as_str)
                == Some(&hash)
        })
        .count() as i64;
    let ready = if held(ds) {
        0
    } else {
        pods.iter().filter(|p| pod_ready(p)).count() as i64
    };
    let mut s = json!({"observedGeneration": g, "desiredNumberScheduled": desired, "currentNumberScheduled": scheduled,
                       "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": ready,
                       "numberMisscheduled": 0});
    if desired - ready > 0 {
        s["numberUnavailable"] = json!(desired - ready);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_names(store: &Store) -> Vec<String> {
        let mut names: Vec<String> = store.list(&pods_gr(), None).map(|p| name(p).to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_replaced_replica_gets_a_new_name() {
        let mut store = Store::default();
        store.put(
            &GroupResource::new("", "namespaces"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        );
        default_service_accounts(&mut store);
        store.put(
            &deployments_gr(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        let mut failures = HashMap::new();
        sync_pods(&mut store, &mut failures);
        let before = pod_names(&store);
        assert_eq!(before.len(), 2, "{failures:?}");
        store.remove(&pods_gr(), "default", &before[0]);
        sync_pods(&mut store, &mut failures);
        let after = pod_names(&store);
        assert_eq!(after.len(), 2);
        assert!(after.contains(&before[1]), "the surviving replica stays: {after:?}");
        assert!(
            !after.contains(&before[0]),
            "an evicted pod's name is not reused (generateName): {after:?}"
        );
    }
}

//! The kubelets and the node lifecycle controller, simulated. A Node is Ready
//! once a CNI runs on it (the CNI DaemonSet's pod Ready there, or the
//! distribution's built-in one) and carries the `node.kubernetes.io/not-ready`
//! taints until then. A pod bound to a node starts only when its volumes'
//! Secrets and ConfigMaps exist, the node's network is up (unless
//! `hostNetwork`), its images may be pulled and its environment resolves;
//! otherwise it waits with the reason a kubelet reports.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::path::At;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::controllers::{Behaviour, Timers, cond, differs, held, key_of, version};
use super::events;
use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};
use super::workloads::{pod_ready, pods_gr};

/// Upstream: the CNI plugin's "not initialized" text as containerd reports it through the kubelet.
const NETWORK_NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// Nodes where the pod network is up: every node when the distribution brings its own CNI
/// (`cni_daemonset: None`, e.g. k3s's flannel), else the nodes where the CNI DaemonSet's pod is Ready.
pub fn network_ready_nodes(store: &Store, b: &Behaviour) -> Option<HashSet<String>> {
    let (ns, ds) = b.cni_daemonset.as_ref()?;
    Some(
        store
            .list(&pods_gr(), Some(ns))
            .filter(|p| {
                p.at("/metadata/ownerReferences/0")
                    .is_some_and(|r| r["kind"] == "DaemonSet" && r["name"] == json!(ds))
            })
            .filter(|p| pod_ready(p))
            .filter_map(|p| p.at("/spec/nodeName").and_then(Value::as_str).map(str::to_owned))
            .collect(),
    )
}

/// Node conditions and taints. Upstream: pkg/controller/nodelifecycle (TaintNodesByCondition:
/// `node.kubernetes.io/not-ready:NoSchedule` while Ready is not True; taint-based eviction adds the
/// NoExecute one), and the kubelet's Ready condition with the runtime's network status.
pub fn nodes(store: &mut Store, b: &Behaviour, net: Option<&HashSet<String>>, timers: &mut Timers, now: Instant) {
    let gr = GroupResource::new("", "nodes");
    let mut writes = vec![];
    let mut settled = HashSet::new();
    for o in store.list(&gr, None) {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let network = net.is_none_or(|n| n.contains(name));
        // A Ready node stays so while it and its network are unchanged.
        if network && timers.settled_nodes.contains(&version(o)) {
            settled.insert(version(o));
            continue;
        }
        // Upstream: pkg/controller/nodelifecycle: a Node whose kubelet stopped posting status gets
        // Ready Unknown ("NodeStatusUnknown") and the `node.kubernetes.io/unreachable` taints
        // (here at once: the simulated machines reboot in well under the 40 s grace period).
        let stopped = o
            .at("/metadata/annotations")
            .and_then(|a| a.get(super::controllers::KUBELET_STOPPED_ANNOTATION))
            .is_some();
        // The timer starts when the network is there: generation 0 before, 1 after.
        let ready = network && !held(o) && timers.due(key_of(&gr, o), 1, b.node_ready, now);
        let mut conditions: Vec<Value> = o
            .at("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "Ready")
            .collect();
        conditions.push(if stopped {
            cond(
                "Ready",
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
            )
        } else if ready {
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        } else {
            cond("Ready", "False", "KubeletNotReady", NETWORK_NOT_READY)
        });
        let mut taints: Vec<Value> = o
            .at("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["key"] != "node.kubernetes.io/not-ready" && t["key"] != "node.kubernetes.io/unreachable")
            .collect();
        if stopped {
            taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}));
            taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}));
        } else if !ready {
            taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
            taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}));
        }
        let (conditions, taints) = (Value::Array(conditions), Value::Array(taints));
        let changed = |path: &str, want: &Value| o.at(path).is_none_or(|have| differs(have, want));
        if changed("/status/conditions", &conditions) || changed("/spec/taints", &taints) {
            let mut n = o.clone();
            n["status"]["conditions"] = conditions;
            n["spec"]["taints"] = taints;
            writes.push(n);
        } else if ready && !stopped {
            settled.insert(version(o));
        }
    }
    timers.settled_nodes = settled;
    for n in writes {
        store.put(&gr, n);
    }
}

/// What keeps a bound pod's containers from running.
struct Waiting {
    reason: &'static str,
    message: String,
    /// `(event reason, message)`.
    event: Option<(&'static str, String)>,
    /// A container that started and exited (CrashLoopBackOff): its termination message.
    crashed: Option<String>,
}

fn optional(r: &Value) -> bool {
    r["optional"] == true
}

/// Upstream: pkg/kubelet/volumemanager: a secret/configMap volume (or projected source) whose
/// object is missing fails `MountVolume.SetUp` and the pod stays ContainerCreating.
fn missing_volume(store: &Store, ns: &str, spec: &Value) -> Option<String> {
    let secrets = GroupResource::new("", "secrets");
    let cms = GroupResource::new("", "configmaps");
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let vol = v["name"].as_str().unwrap_or_default();
        let mut refs: Vec<(&str, &Value)> = vec![];
        if v["secret"].is_object() {
            refs.push(("secret", &v["secret"]));
        }
        if v["configMap"].is_object() {
            refs.push(("configmap", &v["configMap"]));
        }
        for s in v
            .at("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if s["secret"].is_object() {
                refs.push(("secret", &s["secret"]));
            }
            if s["configMap"].is_object() {
                refs.push(("configmap", &s["configMap"]));
            }
        }
        for (kind, r) in refs {
            let name = r["secretName"]
                .as_str()
                .or_else(|| r["name"].as_str())
                .unwrap_or_default();
            let gr = if kind == "secret" { &secrets } else { &cms };
            if !optional(r) && store.get(gr, ns, name).is_none() {
                return Some(format!(
                    "MountVolume.SetUp failed for volume \"{vol}\" : {kind} \"{name}\" not found"
                ));
            }
        }
    }
    None
}

/// Upstream: pkg/kubelet/kubelet_pods.go `makeEnvironmentVariables`: a missing non-optional Secret or
/// ConfigMap (or key) referenced by `envFrom` or `env[].valueFrom` is a CreateContainerConfigError.
fn env_error(store: &Store, ns: &str, container: &Value) -> Option<String> {
    let get = |kind: &str, name: &str| {
        let gr = GroupResource::new("", if kind == "Secret" { "secrets" } else { "configmaps" });
        store.get(&gr, ns, name).cloned()
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        for (field, kind, word) in [
            ("secretRef", "Secret", "secret"),
            ("configMapRef", "ConfigMap", "configmap"),
        ] {
            let r = &from[field];
            if let Some(name) = r["name"].as_str()
                && !optional(r)
                && get(kind, name).is_none()
            {
                return Some(format!("{word} \"{name}\" not found"));
            }
        }
    }
    for env in container["env"].as_array().into_iter().flatten() {
        for (field, kind, word) in [
            ("secretKeyRef", "Secret", "secret"),
            ("configMapKeyRef", "ConfigMap", "configmap"),
        ] {
            let r = &env["valueFrom"][field];
            let Some(name) = r["name"].as_str() else { continue };
            if optional(r) {
                continue;
            }
            let key = r["key"].as_str().unwrap_or_default();
            match get(kind, name) {
                None => return Some(format!("{word} \"{name}\" not found")),
                Some(o) if o["data"].get(key).is_none() && o["binaryData"].get(key).is_none() => {
                    return Some(format!("couldn't find key {key} in {kind} {ns}/{name}"));
                }
                Some(_) => {}
            }
        }
    }
    None
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten())
}

/// Why `pod` (bound to a node) cannot run its containers, checked in the kubelet's order.
fn waiting(
    store: &Store,
    b: &Behaviour,
    pod: &Value,
    network_up: bool,
    crash: &dyn Fn(&Store, &Value) -> Option<String>,
) -> Option<Waiting> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let spec = &pod["spec"];
    if let Some(msg) = missing_volume(store, ns, spec) {
        return Some(Waiting {
            reason: "ContainerCreating",
            message: String::new(),
            event: Some(("FailedMount", msg)),
            crashed: None,
        });
    }
    if spec["hostNetwork"] != true && !network_up {
        // Upstream: pkg/kubelet/kubelet.go syncPod: "network is not ready: ..." (event NetworkNotReady).
        return Some(Waiting {
            reason: "ContainerCreating",
            message: String::new(),
            event: Some(("NetworkNotReady", format!("network is not ready: {NETWORK_NOT_READY}"))),
            crashed: None,
        });
    }
    if let Some(allowed) = &b.allowed_images
        && let Some(image) = containers(spec)
            .filter_map(|c| c["image"].as_str())
            .find(|i| !allowed.iter().any(|p| i.starts_with(p.as_str())))
    {
        // Upstream: pkg/kubelet/images: ErrImagePull on the first failure, then ImagePullBackOff.
        let before = pod
            .at("/status/containerStatuses/0/state/waiting/reason")
            .and_then(Value::as_str);
        let backoff = matches!(before, Some("ErrImagePull" | "ImagePullBackOff"));
        let pull = format!(
            "failed to pull and unpack image \"{image}\": the simulated nodes may pull only from {}",
            allowed.join(", ")
        );
        return Some(Waiting {
            reason: if backoff { "ImagePullBackOff" } else { "ErrImagePull" },
            message: if backoff {
                format!("Back-off pulling image \"{image}\"")
            } else {
                pull.clone()
            },
            event: Some(("Failed", format!("Failed to pull image \"{image}\": {pull}"))),
            crashed: None,
        });
    }
    if let Some(msg) = containers(spec).find_map(|c| env_error(store, ns, c)) {
        return Some(Waiting {
            reason: "CreateContainerConfigError",
            message: msg.clone(),
            event: Some(("Failed", format!("Error: {msg}"))),
            crashed: None,
        });
    }
    if let Some(msg) = crash(store, pod) {
        let c = spec
            .at("/containers/0/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        // Upstream: pkg/kubelet/kuberuntime: "back-off 10s restarting failed container=... pod=..._...(uid)".
        return Some(Waiting {
            reason: "CrashLoopBackOff",
            message: format!("back-off 10s restarting failed container={c} pod={pod_name}_{ns}({uid})"),
            event: Some(("BackOff", "Back-off restarting failed container".into())),
            crashed: Some(msg),
        });
    }
    None
}

fn pod_ip(pod: &Value, node: &Value) -> String {
    if pod["spec"]["hostNetwork"] == true {
        return node_ip_of(node);
    }
    let h = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .bytes()
        .fold(0u32, |a, c| a.wrapping_mul(31).wrapping_add(c.into()));
    format!("10.244.{}.{}", (h >> 8) % 250, h % 250 + 2)
}

/// The ready delay of a pod: its owner kind's.
fn ready_delay(b: &Behaviour, pod: &Value) -> Duration {
    match pod.at("/metadata/ownerReferences/0/kind").and_then(Value::as_str) {
        Some("DaemonSet") => b.daemonset_available,
        _ => b.deployment_available,
    }
}

/// What a bound pod's status is computed from besides the pod itself: its node's version, whether
/// the node's network is up, and the last change to the objects a kubelet checks before starting
/// containers (volumes' and env's Secrets and ConfigMaps, and what a Flux controller needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    node: u64,
    network_up: bool,
    dependencies: u64,
}

/// Collections whose objects [`waiting`] reads.
fn dependencies(store: &Store) -> u64 {
    [
        ("", "secrets"),
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ]
    .into_iter()
    .map(|(g, r)| store.collection_version(&GroupResource::new(g, r)))
    .max()
    .unwrap_or(0)
}

/// Status of every bound pod, as its node's kubelet reports it. A pod found with nothing to write
/// (Running and Ready, or waiting for a volume, the network, an image or its config: its event
/// already recorded, or Running until its ready delay ends) is not computed again until it, its
/// node or its dependencies change (or that delay ends).
pub fn pods(
    store: &mut Store,
    b: &Behaviour,
    net: Option<&HashSet<String>>,
    crash: &dyn Fn(&Store, &Value) -> Option<String>,
    timers: &mut Timers,
    now: Instant,
) {
    let nodes = GroupResource::new("", "nodes");
    let mut writes = vec![];
    let mut evs = vec![];
    let dependencies = dependencies(store);
    let mut settled = HashMap::new();
    for p in store.list(&pods_gr(), None) {
        let Some(node_name) = p.at("/spec/nodeName").and_then(Value::as_str) else {
            continue;
        };
        let Some(node) = store.get(&nodes, "", node_name) else {
            continue;
        };
        let network_up = net.is_none_or(|n| n.contains(node_name));
        let inputs = Inputs {
            node: version(node),
            network_up,
            dependencies,
        };
        let pod_version = version(p);
        if let Some(&(seen, until)) = timers.settled_pods.get(&pod_version)
            && seen == inputs
            && until.is_none_or(|t| now < t)
        {
            if let Some(t) = until {
                timers.wake_at(t);
            }
            settled.insert(pod_version, (inputs, until));
            continue;
        }
        let wait = waiting(store, b, p, network_up, crash);
        let key = key_of(&pods_gr(), p);
        let running = wait.is_none() || wait.as_ref().is_some_and(|w| w.crashed.is_some());
        let ready = wait.is_none() && timers.due(key.clone(), 1, ready_delay(b, p), now);
        // Until when the status computed holds: for a pod waiting for its ready delay, until then.
        let until = (wait.is_none() && !ready).then(|| timers.deadline(&key)).flatten();
        let started_at = p
            .at("/status/startTime")
            .cloned()
            .unwrap_or_else(|| json!(now_rfc3339()));
        let statuses: Vec<Value> = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut s = json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
                                   "started": wait.is_none(), "restartCount": 0});
                match &wait {
                    None => s["state"] = json!({"running": {"startedAt": started_at}}),
                    Some(w) => {
                        s["state"] = json!({"waiting": {"reason": w.reason}});
                        if !w.message.is_empty() {
                            s["state"]["waiting"]["message"] = json!(w.message);
                        }
                        if let Some(m) = &w.crashed {
                            s["restartCount"] = json!(1);
                            s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "message": m}});
                        }
                    }
                }
                s
            })
            .collect();
        let t = |ok: bool| if ok { "True" } else { "False" };
        let mut ready_cond = json!({"type": "Ready", "status": t(ready)});
        let mut cr_cond = json!({"type": "ContainersReady", "status": t(ready)});
        if !ready {
            let names: Vec<&str> = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            let msg = format!("containers with unready status: [{}]", names.join(" "));
            for c in [&mut ready_cond, &mut cr_cond] {
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(msg);
            }
        }
        let ip = pod_ip(p, node);
        let mut status = json!({
            "phase": if running { "Running" } else { "Pending" },
            "qosClass": p["status"]["qosClass"].as_str().unwrap_or("BestEffort"),
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": t(wait.as_ref().is_none_or(|w| w.reason != "ContainerCreating"))},
                {"type": "Initialized", "status": "True"},
                ready_cond, cr_cond,
                {"type": "PodScheduled", "status": "True"},
            ],
            "hostIP": node_ip_of(node), "hostIPs": [{"ip": node_ip_of(node)}],
            "startTime": started_at, "containerStatuses": statuses,
        });
        if wait.as_ref().is_none_or(|w| w.reason != "ContainerCreating") {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some((reason, msg)) = wait.and_then(|w| w.event) {
            evs.push((
                p["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                p["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                reason,
                msg,
            ));
        }
        if differs(&p["status"], &status) {
            let mut n = p.clone();
            n["status"] = status;
            writes.push(n);
        } else {
            settled.insert(pod_version, (inputs, until));
        }
    }
    timers.settled_pods = settled;
    for n in writes {
        store.put(&pods_gr(), n);
    }
    for (ns, name, reason, msg) in evs {
        events::warn(store, ("Pod", &ns, &name), reason, &msg);
    }
}

fn node_ip_of(node: &Value) -> String {
    node.at("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(store: &mut Store, b: &Behaviour, timers: &mut Timers) {
        super::super::controllers::reconcile(store, b, timers, Instant::now());
    }

    fn waiting_reason(store: &Store) -> Option<String> {
        let pod = store.get(&pods_gr(), "default", "web")?;
        pod.at("/status/containerStatuses/0/state/waiting/reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// A pod the kubelet settled (Running and Ready, not computed again) is
    /// computed again when what it mounts goes away, and waits as upstream's
    /// would; once the Secret is back it runs again.
    #[test]
    fn a_settled_pod_sees_its_secret_deleted_and_restored() {
        let b = Behaviour {
            cni_daemonset: None,
            ..Behaviour::uniform(Duration::ZERO)
        };
        let mut store = Store::default();
        let secrets = GroupResource::new("", "secrets");
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}});
        store.put(
            &GroupResource::new("", "nodes"),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        );
        store.put(&secrets, secret.clone());
        store.put(
            &pods_gr(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}],
                            "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}}),
        );
        let mut timers = Timers::default();
        for _ in 0..4 {
            pass(&mut store, &b, &mut timers);
        }
        assert!(pod_ready(store.get(&pods_gr(), "default", "web").unwrap()));
        assert_eq!(timers.settled_pods.len(), 1, "the Ready pod is settled");
        store.remove(&secrets, "default", "s");
        pass(&mut store, &b, &mut timers);
        assert_eq!(waiting_reason(&store).as_deref(), Some("ContainerCreating"));
        store.put(&secrets, secret);
        for _ in 0..4 {
            pass(&mut store, &b, &mut timers);
        }
        assert!(pod_ready(store.get(&pods_gr(), "default", "web").unwrap()));
    }
}

//! Status simulation: what kube-controller-manager, the kubelets and the GitOps
//! controllers would report, after configurable delays. CRDs become
//! Established; Deployments and DaemonSets available; Nodes Ready once the CNI
//! DaemonSet is available; Flux objects Ready; Argo CD Applications Healthy;
//! HelmReleases install their chart's workloads ([`super::helm`]).
//! An object annotated `kube-sim.bootstrap.dev/hold: "true"` never gets ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Shared;
use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};

/// Annotation that keeps an object from ever becoming ready (for timeout tests).
pub const HOLD_ANNOTATION: &str = "kube-sim.bootstrap.dev/hold";

/// How long each simulated controller takes.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub crd_established: Duration,
    pub deployment_available: Duration,
    pub daemonset_available: Duration,
    /// After the CNI DaemonSet is available (or after registration without a CNI).
    pub node_ready: Duration,
    pub flux_ready: Duration,
    pub argo_healthy: Duration,
    /// `(namespace, name)` of the CNI DaemonSet Nodes wait for; `None`: Nodes get Ready on their own.
    pub cni_daemonset: Option<(String, String)>,
}

impl Behaviour {
    /// Every readiness delay `d`, with the default CNI DaemonSet.
    pub fn uniform(d: Duration) -> Self {
        Self {
            crd_established: d,
            deployment_available: d,
            daemonset_available: d,
            node_ready: d,
            flux_ready: d,
            argo_healthy: d,
            cni_daemonset: Some(("kube-system".into(), "cilium".into())),
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::uniform(Duration::from_millis(100))
    }
}

type Key = (GroupResource, String, String);

/// When each object's pending transition is due, by (key, generation).
#[derive(Default)]
pub struct Timers(HashMap<Key, (i64, Instant)>);

impl Timers {
    fn due(&mut self, key: Key, generation: i64, delay: Duration, now: Instant) -> bool {
        let entry = self.0.entry(key).or_insert((generation, now + delay));
        if entry.0 != generation {
            *entry = (generation, now + delay);
        }
        now >= entry.1
    }
}

fn held(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(HOLD_ANNOTATION))
        .is_some_and(|v| v == "true")
}

fn generation(o: &Value) -> i64 {
    o.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1)
}

/// Status without timestamps, to compare an existing status with a target.
fn timeless(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with("last") || !k.ends_with("Time"))
                .map(|(k, v)| (k.clone(), timeless(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(timeless).collect()),
        other => other.clone(),
    }
}

fn key_of(gr: &GroupResource, o: &Value) -> Key {
    (
        gr.clone(),
        o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
        o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
    )
}

fn cond(t: &str, s: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": s, "reason": reason, "message": message, "lastTransitionTime": now_rfc3339()})
}

/// Runs the controllers every 20 ms until the simulator stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut timers = Timers::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let behaviour = shared.behaviour.lock().expect("behaviour lock").clone();
        let mut store = shared.store.lock().expect("store lock");
        reconcile(&mut store, &behaviour, &mut timers, Instant::now());
        super::lifecycle::reconcile(&mut store);
    }
}

/// One pass of every simulated controller.
pub fn reconcile(store: &mut Store, b: &Behaviour, timers: &mut Timers, now: Instant) {
    super::helm::install(store);
    let mut writes: Vec<(GroupResource, Value)> = vec![];
    let set_status = |gr: &GroupResource, o: &Value, status: Value, writes: &mut Vec<(GroupResource, Value)>| {
        if timeless(&o["status"]) != timeless(&status) {
            let mut n = o.clone();
            n["status"] = status;
            writes.push((gr.clone(), n));
        }
    };

    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    for o in store.list(&crds, None) {
        let ready = !held(o) && timers.due(key_of(&crds, o), generation(o), b.crd_established, now);
        let storage: Vec<Value> = o
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].clone())
            .collect();
        let status = if ready {
            json!({
                "conditions": [
                    cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                    cond("Established", "True", "InitialNamesAccepted", "the initial names have been accepted"),
                ],
                "acceptedNames": o["spec"]["names"], "storedVersions": storage,
            })
        } else {
            json!({
                "conditions": [
                    cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                    cond("Established", "False", "Installing", "the initial names have been accepted"),
                ],
                "acceptedNames": o["spec"]["names"], "storedVersions": storage,
            })
        };
        set_status(&crds, o, status, &mut writes);
    }

    let deployments = GroupResource::new("apps", "deployments");
    for o in store.list(&deployments, None) {
        let n = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let g = generation(o);
        let ready = !held(o) && timers.due(key_of(&deployments, o), g, b.deployment_available, now);
        let status = if ready {
            json!({"observedGeneration": g, "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
            "conditions": [
                cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                cond("Progressing", "True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed."),
            ]})
        } else {
            json!({"observedGeneration": g, "replicas": n, "updatedReplicas": n, "unavailableReplicas": n,
            "conditions": [
                cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
                cond("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet is progressing."),
            ]})
        };
        set_status(&deployments, o, status, &mut writes);
    }

    let nodes = GroupResource::new("", "nodes");
    let node_count = store.list(&nodes, None).count() as i64;
    let daemonsets = GroupResource::new("apps", "daemonsets");
    let mut cni_available = b.cni_daemonset.is_none();
    for o in store.list(&daemonsets, None) {
        let g = generation(o);
        let ready = !held(o) && timers.due(key_of(&daemonsets, o), g, b.daemonset_available, now);
        let d = node_count;
        let status = if ready {
            json!({"observedGeneration": g, "desiredNumberScheduled": d, "currentNumberScheduled": d,
                   "updatedNumberScheduled": d, "numberReady": d, "numberAvailable": d, "numberMisscheduled": 0})
        } else {
            json!({"observedGeneration": g, "desiredNumberScheduled": d, "currentNumberScheduled": d,
                   "updatedNumberScheduled": d, "numberReady": 0, "numberUnavailable": d, "numberMisscheduled": 0})
        };
        let is_cni = b
            .cni_daemonset
            .as_ref()
            .is_some_and(|(ns, name)| o["metadata"]["namespace"] == json!(ns) && o["metadata"]["name"] == json!(name));
        if is_cni && ready {
            cni_available = true;
        }
        set_status(&daemonsets, o, status, &mut writes);
    }

    for o in store.list(&nodes, None) {
        // The timer starts when the network is there: generation 0 before, 1 after.
        let key = key_of(&nodes, o);
        let ready = cni_available && !held(o) && timers.due(key, 1, b.node_ready, now);
        let mut status = o["status"].clone();
        let mut conditions: Vec<Value> = status["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "Ready")
            .collect();
        conditions.push(if ready {
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        } else {
            cond(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            )
        });
        status["conditions"] = Value::Array(conditions);
        set_status(&nodes, o, status, &mut writes);
    }

    for gr in store.resources() {
        let flux = gr.group.ends_with(".toolkit.fluxcd.io");
        let argo = gr.group == "argoproj.io" && gr.resource == "applications";
        if !flux && !argo {
            continue;
        }
        for o in store.list(&gr, None) {
            let g = generation(o);
            let delay = if flux { b.flux_ready } else { b.argo_healthy };
            let ready = !held(o) && timers.due(key_of(&gr, o), g, delay, now);
            let mut status = o["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            if flux {
                status["observedGeneration"] = json!(g);
                status["conditions"] = json!([if ready {
                    cond(
                        "Ready",
                        "True",
                        "ReconciliationSucceeded",
                        "Applied revision: main@sha1:0000000",
                    )
                } else {
                    cond("Ready", "Unknown", "Progressing", "reconciliation in progress")
                }]);
            } else {
                status["health"] = json!({"status": if ready { "Healthy" } else { "Progressing" }});
                status["sync"] = json!({"status": if ready { "Synced" } else { "OutOfSync" }});
            }
            set_status(&gr, o, status, &mut writes);
        }
    }

    for (gr, o) in writes {
        store.put(&gr, o);
    }
}

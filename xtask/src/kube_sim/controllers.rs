//! Status simulation, the driver of every simulated controller: CRDs become
//! Established; workloads create Pods ([`super::workloads`]) that the
//! scheduler binds ([`super::scheduler`]) and kubelets run
//! ([`super::kubelet`]); Nodes turn Ready once a CNI runs on them; Flux's
//! controllers act once their pods run ([`super::flux`], [`super::helm`]);
//! Argo CD Applications get Healthy. Delays are [`Behaviour`]'s.
//! An object annotated `kube-sim.bootstrap.dev/hold: "true"` never gets ready.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::path::At;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Shared;
use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};

/// Annotation that keeps an object from ever becoming ready (for timeout tests).
pub const HOLD_ANNOTATION: &str = "kube-sim.bootstrap.dev/hold";
/// Annotation of a Node whose kubelet stopped posting status (its machine is
/// down: [`super::KubeSim::set_kubelets_stopped`]).
pub const KUBELET_STOPPED_ANNOTATION: &str = "kube-sim.bootstrap.dev/kubelet-stopped";

/// How the simulated cluster behaves: delays, its CNI, what its nodes may pull, and the upstream
/// material its controllers are checked against.
#[derive(Clone, Debug, PartialEq)]
pub struct Behaviour {
    pub crd_established: Duration,
    /// From a Deployment pod's containers starting to the pod being Ready.
    pub deployment_available: Duration,
    /// From a DaemonSet pod's containers starting to the pod being Ready.
    pub daemonset_available: Duration,
    /// After the CNI runs on a Node.
    pub node_ready: Duration,
    pub flux_ready: Duration,
    pub argo_healthy: Duration,
    /// `(namespace, name)` of the CNI DaemonSet: a Node's network is up once its pod is Ready there.
    /// `None`: the distribution brings its own CNI (k3s's flannel), up on every node.
    pub cni_daemonset: Option<(String, String)>,
    /// Registry prefixes nodes may pull from (air-gapped rehearsals); `None`: any image.
    pub allowed_images: Option<Vec<String>>,
    /// Upstream Flux installation the Flux controllers' prerequisites are read from.
    pub flux_install: PathBuf,
    /// `values.schema.json` per chart name, for charts that publish one.
    pub chart_schemas: BTreeMap<String, PathBuf>,
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
            allowed_images: None,
            flux_install: super::flux::default_install_path(),
            chart_schemas: [("cilium".to_owned(), super::shared_path("cilium/values.schema.json"))].into(),
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::uniform(Duration::from_millis(100))
    }
}

type Key = (GroupResource, String, String);

/// When each object's pending transition is due, by (key, generation); and the controllers' memory.
#[derive(Default)]
pub struct Timers {
    due: HashMap<Key, (i64, Instant)>,
    /// The earliest deadline a pass found still pending.
    next: Option<Instant>,
    /// Workloads whose pods admission refused, with the message.
    pub(crate) failed_creates: HashMap<(String, String, String), String>,
    /// Nodes the last pass saw (the pod garbage collector's memory).
    pub(crate) seen_nodes: std::collections::BTreeSet<String>,
    /// Bound pods the kubelets found with nothing to write, by their resourceVersion: what they
    /// were computed from ([`super::kubelet::Inputs`]). Such a pod is not computed again while its
    /// inputs are the same: a pass over 3,000 settled pods cost 50 ms, with the store locked.
    /// With the instant the status stops holding, for a pod waiting for its ready delay.
    pub(crate) settled_pods: HashMap<u64, (super::kubelet::Inputs, Option<Instant>)>,
    /// Nodes found Ready with nothing to write, by resourceVersion (with network up).
    pub(crate) settled_nodes: std::collections::HashSet<u64>,
    /// The behaviour the memos above hold under.
    memo_behaviour: Option<Behaviour>,
}

impl Timers {
    pub(crate) fn due(&mut self, key: Key, generation: i64, delay: Duration, now: Instant) -> bool {
        let entry = self.due.entry(key).or_insert((generation, now + delay));
        if entry.0 != generation {
            *entry = (generation, now + delay);
        }
        let due = now >= entry.1;
        let at = entry.1;
        if !due {
            self.wake_at(at);
        }
        due
    }

    /// Makes sure a pass runs at `at`.
    pub(crate) fn wake_at(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// When `key`'s pending transition is due.
    pub(crate) fn deadline(&self, key: &Key) -> Option<Instant> {
        self.due.get(key).map(|(_, at)| *at)
    }
}

pub(crate) fn held(o: &Value) -> bool {
    o.at("/metadata/annotations")
        .and_then(|a| a.get(HOLD_ANNOTATION))
        .is_some_and(|v| v == "true")
}

pub(crate) fn generation(o: &Value) -> i64 {
    o.at("/metadata/generation").and_then(Value::as_i64).unwrap_or(1)
}

/// True when `a` and `b` differ other than in their `last…Time` fields (an existing status
/// against a target).
pub(crate) fn differs(a: &Value, b: &Value) -> bool {
    // Compared in place: the controllers ask this of every object on every pass.
    let time = |k: &str| k.starts_with("last") && k.ends_with("Time");
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kept = |m: &'_ serde_json::Map<String, Value>| m.keys().filter(|k| !time(k)).count();
            kept(x) != kept(y)
                || x.iter()
                    .filter(|(k, _)| !time(k))
                    .any(|(k, v)| y.get(k).is_none_or(|w| differs(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() != y.len() || x.iter().zip(y).any(|(v, w)| differs(v, w)),
        _ => a != b,
    }
}

/// An object's resourceVersion as a number: it names one version of one object.
pub(crate) fn version(o: &Value) -> u64 {
    o.at("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn key_of(gr: &GroupResource, o: &Value) -> Key {
    (
        gr.clone(),
        o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
        o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
    )
}

pub(crate) fn cond(t: &str, s: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": s, "reason": reason, "message": message, "lastTransitionTime": now_rfc3339()})
}

/// Runs the controllers every 20 ms until the simulator stops; a tick with nothing new (the last
/// pass wrote nothing, nothing was written since, no deadline reached, the same behaviour) is skipped.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut timers = Timers::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(u64, Behaviour)> = None;
    loop {
        tick.tick().await;
        let behaviour = shared.behaviour.lock().expect("behaviour lock").clone();
        let mut store = shared.store.lock().expect("store lock");
        let now = Instant::now();
        let idle = last
            .as_ref()
            .is_some_and(|(rv, b)| *rv == store.resource_version() && *b == behaviour)
            && timers.next.is_none_or(|n| now < n);
        if idle {
            continue;
        }
        timers.next = None;
        let before = store.resource_version();
        reconcile(&mut store, &behaviour, &mut timers, now);
        super::lifecycle::reconcile(&mut store);
        // A pass that wrote needs another: a controller earlier in the pass may read what a later one wrote.
        let rv = store.resource_version();
        last = (rv == before).then_some((rv, behaviour));
    }
}

/// One pass of every simulated controller.
pub fn reconcile(store: &mut Store, b: &Behaviour, timers: &mut Timers, now: Instant) {
    if timers.memo_behaviour.as_ref() != Some(b) {
        timers.settled_pods.clear();
        timers.settled_nodes.clear();
        timers.memo_behaviour = Some(b.clone());
    }
    super::workloads::default_service_accounts(store);
    crds(store, b, timers, now);
    super::flux::reconcile(store, b, &mut |gr, o| {
        timers.due(key_of(gr, o), generation(o), b.flux_ready, now)
    });
    let net = super::kubelet::network_ready_nodes(store, b);
    super::kubelet::nodes(store, b, net.as_ref(), timers, now);
    super::workloads::sync_pods(store, &mut timers.failed_creates);
    super::scheduler::run(store);
    super::eviction::reconcile(store, &mut timers.seen_nodes);
    let crash = |s: &Store, p: &Value| super::flux::crash_reason(s, b, p);
    super::kubelet::pods(store, b, net.as_ref(), &crash, timers, now);
    for (gr, o) in super::workloads::statuses(store, &timers.failed_creates) {
        store.put(&gr, o);
    }
    argo(store, b, timers, now);
}

fn set_status(gr: &GroupResource, o: &Value, status: Value, writes: &mut Vec<(GroupResource, Value)>) {
    if differs(&o["status"], &status) {
        let mut n = o.clone();
        n["status"] = status;
        writes.push((gr.clone(), n));
    }
}

fn crds(store: &mut Store, b: &Behaviour, timers: &mut Timers, now: Instant) {
    let mut writes: Vec<(GroupResource, Value)> = vec![];
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    for o in store.list(&crds, None) {
        let ready = !held(o) && timers.due(key_of(&crds, o), generation(o), b.crd_established, now);
        let storage: Vec<Value> = o
            .at("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].clone())
            .collect();
        let established = if ready {
            cond(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            )
        } else {
            cond(
                "Established",
                "False",
                "Installing",
                "the initial names have been accepted",
            )
        };
        let status = json!({
            "conditions": [cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"), established],
            "acceptedNames": o["spec"]["names"], "storedVersions": storage,
        });
        set_status(&crds, o, status, &mut writes);
    }
    for (gr, o) in writes {
        store.put(&gr, o);
    }
}

fn argo(store: &mut Store, b: &Behaviour, timers: &mut Timers, now: Instant) {
    let gr = GroupResource::new("argoproj.io", "applications");
    let mut writes: Vec<(GroupResource, Value)> = vec![];
    for o in store.list(&gr, None) {
        let ready = !held(o) && timers.due(key_of(&gr, o), generation(o), b.argo_healthy, now);
        let mut status = if o["status"].is_object() {
            o["status"].clone()
        } else {
            json!({})
        };
        status["health"] = json!({"status": if ready { "Healthy" } else { "Progressing" }});
        status["sync"] = json!({"status": if ready { "Synced" } else { "OutOfSync" }});
        set_status(&gr, o, status, &mut writes);
    }
    for (gr, o) in writes {
        store.put(&gr, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_ignores_only_last_time_fields() {
        let a = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}]});
        let later = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t2"}]});
        let no_time = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        assert!(!differs(&a, &later), "a timestamp alone is no change");
        assert!(!differs(&a, &no_time), "nor is a timestamp missing");
        let flipped = json!({"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "t1"}]});
        assert!(differs(&a, &flipped));
        let more = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "R"}]});
        assert!(differs(&a, &more), "a key added");
        assert!(differs(&more, &a), "a key removed");
        assert!(differs(&a, &json!({"conditions": []})));
        assert!(
            differs(&json!({"startTime": "t1"}), &json!({"startTime": "t2"})),
            "not a last…Time key"
        );
    }
}

//! Desired objects compared with what the cluster holds, for phases 0-3.
//! Observation is GETs plus server-side dry-run applies (never a write); an
//! object already managed by Flux or Argo CD is left alone. Apply goes
//! through [`crate::k8s::apply_manifests`] with field manager `bootstrap`.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::{GroupVersion, GroupVersionKind};
use kube::discovery::{self, Scope};
use serde_json::{Value, json};

use super::{ClusterRun, KUBECONFIG};
use crate::engine::{Action, CLUSTER, Manifest, ObjectRef, PhaseError, RunCtx, Step};
use crate::k8s::wait;
use crate::k8s::{self, ApplyOpts, Client};

/// Field manager of every write of `bootstrap`.
pub const FIELD_MANAGER: &str = "bootstrap";
/// Label on every object `bootstrap` creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "bootstrap");

/// An object that is missing or differs from what the phase wants.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The desired object.
    pub obj: Value,
    /// `create Kind ns/name` or `update Kind ns/name (fields)`; never values.
    pub what: String,
}

impl Pending {
    /// `obj`, to be created.
    pub fn create(obj: Value) -> Self {
        let what = format!("create {}", describe(&obj));
        Self { obj, what }
    }
}

/// `Kind ns/name` or `Kind name` ([`ObjectRef`]'s text).
pub fn describe(obj: &Value) -> String {
    ObjectRef::of(obj).to_string()
}

/// What `render` writes instead of a Secret value.
pub const PLACEHOLDER: &str = "<redacted: filled by bootstrap up>";

/// How the phases' object builders fill Secret values.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// Resolved from the inventory's references, with the Git host's
    /// known_hosts (phase 0 finds it, see `git_host`).
    Resolved { known_hosts: Option<&'a str> },
    /// Nothing resolved: every Secret value is [`PLACEHOLDER`] (`render`'s export).
    Placeholder,
}

/// A Secret with `data` (plaintext, base64-encoded here; `None`: [`PLACEHOLDER`]).
pub fn secret(namespace: &str, name: &str, labels: Value, data: Vec<(String, Option<String>)>) -> Value {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = data
        .into_iter()
        .map(|(k, v)| {
            let v = v.map_or_else(
                || PLACEHOLDER.to_owned(),
                |v| base64::engine::general_purpose::STANDARD.encode(v),
            );
            (k, Value::String(v))
        })
        .collect();
    labelled(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": data,
    }))
}

/// Adds the `managed-by: bootstrap` label.
pub fn labelled(mut obj: Value) -> Value {
    let meta = &mut obj["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][MANAGED_BY.0] = json!(MANAGED_BY.1);
    obj
}

/// The GitOps engine that manages `live`, if any: Flux's kustomize-controller
/// labels what it applies, Argo CD annotates (or labels) it.
pub fn managed_by_gitops(live: &Value) -> Option<&'static str> {
    let keys = |field: &str| -> Vec<String> {
        live["metadata"][field]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let labels = keys("labels");
    if labels.iter().any(|k| k.starts_with("kustomize.toolkit.fluxcd.io/")) {
        return Some("Flux");
    }
    // Argo CD tracks by annotation (default) or label; `secret-type` marks
    // credentials, not ownership.
    let annotations = keys("annotations");
    if annotations.iter().any(|k| k == "argocd.argoproj.io/tracking-id")
        || labels.iter().any(|k| k == "argocd.argoproj.io/instance")
    {
        return Some("Argo CD");
    }
    None
}

/// The live object, or `None` when it, its namespace or its kind does not exist (yet).
pub async fn get(client: &Client, obj: &Value) -> Result<Option<Value>, k8s::Error> {
    let what = describe(obj);
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let gv: GroupVersion = api_version.parse().map_err(|_| k8s::Error::Manifest {
        index: 0,
        message: format!("{what}: apiVersion {api_version:?} is not group/version"),
    })?;
    let gvk = GroupVersionKind::gvk(&gv.group, &gv.version, kind);
    let found = client
        .retry()
        .run(&format!("discover {api_version}"), || {
            discovery::pinned_kind(client.kube(), &gvk)
        })
        .await;
    let (ar, caps) = match found {
        Ok(f) => f,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(kube::Error::Discovery(_)) => return Ok(None),
        Err(e) => return Err(client.api_error("discover the kind of", &what, &e)),
    };
    let api: Api<DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.kube().clone(), ns, &ar),
        _ => Api::all_with(client.kube().clone(), &ar),
    };
    let live = client
        .retry()
        .run(&format!("get {what}"), || api.get_opt(name))
        .await
        .map_err(|e| client.api_error("get", &what, &e))?;
    Ok(live.map(|o| serde_json::to_value(o).unwrap_or_default()))
}

fn yaml(objs: &[&Value]) -> String {
    objs.iter()
        .map(|o| yaml_serde::to_string(o).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Compares one desired object with the cluster.
async fn compare(client: &Client, obj: Value) -> Result<Option<Pending>, k8s::Error> {
    let Some(live) = get(client, &obj).await? else {
        return Ok(Some(Pending::create(obj)));
    };
    if let Some(engine) = managed_by_gitops(&live) {
        tracing::debug!("{} is managed by {engine}: left alone", describe(&obj));
        return Ok(None);
    }
    let opts = ApplyOpts {
        dry_run: true,
        field_manager: FIELD_MANAGER.into(),
        ..ApplyOpts::default()
    };
    let changes = k8s::apply_manifests(client, &yaml(&[&obj]), &opts).await?;
    Ok(changes.into_iter().next().map(|c| Pending {
        what: c.to_string(),
        obj,
    }))
}

/// `each` of `items`, four at a time, the results in the order given.
async fn four_at_a_time<I, T, Fut: Future<Output = T>>(items: Vec<I>, each: impl Fn(I) -> Fut) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<Fut> = rest.by_ref().take(4).map(&each).collect();
        out.extend(futures::future::join_all(batch).await);
    }
    out
}

/// The desired objects that are missing or differ, in the order given.
pub async fn pending(client: &Client, desired: Vec<Value>) -> Result<Vec<Pending>, k8s::Error> {
    let found = four_at_a_time(desired, |o| compare(client, o)).await;
    Ok(found
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// What a plan of phases 0-3 decides from, read through the API (nothing
/// without one yet): the desired objects that differ, and which of those it
/// may wait for are live and ready.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The desired objects missing or different (all while there is no API), in order.
    pub changes: Vec<Pending>,
    /// Of the objects looked up for a wait, those live and ready.
    pub ready: BTreeSet<ObjectRef>,
}

impl Observed {
    /// Whether the plan applies `obj`.
    pub fn applies(&self, obj: &Value) -> bool {
        self.changes.iter().any(|p| p.obj == *obj)
    }

    /// Whether the plan waits for `obj`: it is applied now, missing or not ready.
    pub fn needs_wait(&self, obj: &Value) -> bool {
        self.applies(obj) || !self.ready.contains(&ObjectRef::of(obj))
    }

    /// The `ApplyObject` actions of the changes among `objs` (all: `None`), in order.
    pub fn actions(&self, phase: &str, objs: Option<&[Value]>) -> Vec<Action> {
        let among = |p: &&Pending| objs.is_none_or(|o| o.contains(&p.obj));
        actions(phase, self.changes.iter().filter(among))
    }
}

/// Observes `desired` (what differs) and `waited` (which are ready) for a
/// plan; reads only.
pub async fn observe(client: Option<&Client>, desired: Vec<Value>, waited: Vec<Value>) -> Result<Observed, k8s::Error> {
    let changes = changes(client, desired).await?;
    let Some(client) = client else {
        return Ok(Observed {
            changes,
            ready: BTreeSet::new(),
        });
    };
    let live = four_at_a_time(waited, |stub| async move {
        let live = get(client, &stub).await?;
        let kind = stub["kind"].as_str().unwrap_or_default();
        Ok::<_, k8s::Error>(live.filter(|l| is_ready(kind, l)).map(|_| ObjectRef::of(&stub)))
    })
    .await;
    let ready = live
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(Observed { changes, ready })
}

/// A client when phase -1 has stored a kubeconfig; `None` before (then a plan
/// lists every object as to be created).
pub async fn client_if_up(run: &ClusterRun, ctx: &RunCtx) -> Result<Option<Client>, PhaseError> {
    let up = ctx.state.lock().await.artifact(KUBECONFIG).is_some();
    if up { run.kube(ctx).await.map(Some) } else { Ok(None) }
}

/// The desired objects to apply: all of them while there is no API to
/// compare with (no client: all created), else those missing or different.
pub async fn changes(client: Option<&Client>, desired: Vec<Value>) -> Result<Vec<Pending>, k8s::Error> {
    match client {
        Some(client) => pending(client, desired).await,
        None => Ok(desired.into_iter().map(Pending::create).collect()),
    }
}

/// A stub naming CustomResourceDefinition `name` (for [`Observed::needs_wait`]).
pub fn crd_stub(name: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name}})
}

/// The plan's actions for `pending` objects (each carrying its object for
/// the executor).
fn actions<'a>(phase: &str, pending: impl Iterator<Item = &'a Pending>) -> Vec<Action> {
    pending
        .map(|p| {
            let step = Step::ApplyObject {
                change: p.what.clone(),
                object: Manifest::new(p.obj.clone()),
            };
            Action::new(phase, CLUSTER, step)
        })
        .collect()
}

/// Applies `objs` server-side (Namespaces first, CRDs waited for
/// `crd_timeout`); the executor's `ApplyObject`.
pub async fn apply(client: &Client, objs: &[&Value], crd_timeout: Duration) -> Result<(), k8s::Error> {
    if objs.is_empty() {
        return Ok(());
    }
    let opts = ApplyOpts {
        field_manager: FIELD_MANAGER.into(),
        crd_timeout,
        ..ApplyOpts::default()
    };
    k8s::apply_manifests(client, &yaml(objs), &opts).await.map(drop)
}

/// Whether a live object of `kind` is ready: [`wait::readiness`], the
/// definition the executor's waits use.
pub fn is_ready(kind: &str, live: &Value) -> bool {
    wait::readiness(kind, live) == wait::Progress::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitops_managed_objects_are_recognised() {
        let flux = json!({"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "infra"}}});
        let argo = json!({"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "root:x"}}});
        let ours = labelled(json!({"metadata": {"name": "x"}}));
        assert_eq!(managed_by_gitops(&flux), Some("Flux"));
        assert_eq!(managed_by_gitops(&argo), Some("Argo CD"));
        assert_eq!(managed_by_gitops(&ours), None);
    }

    #[test]
    fn readiness_follows_each_kinds_convention() {
        let dep = |avail: i64| {
            json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": avail,
                              "conditions": [{"type": "Available", "status": "True"}]}})
        };
        assert!(is_ready("Deployment", &dep(2)));
        assert!(!is_ready("Deployment", &dep(1)));
        let ds = json!({"metadata": {"generation": 1}, "status": {}});
        assert!(
            !is_ready("DaemonSet", &ds),
            "a DaemonSet without status is not rolled out"
        );
        let mut unobserved = dep(2);
        unobserved["status"]["observedGeneration"].take();
        assert!(
            !is_ready("Deployment", &unobserved),
            "a Deployment its controller has not observed is not ready (plan and wait agree)"
        );
        let release = json!({"metadata": {"generation": 3},
                             "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(
            is_ready("HelmRelease", &release),
            "Flux objects may not report observedGeneration"
        );
    }
}

//! Waits with deadlines, on kube-runtime watchers: an object ready by its
//! kind's convention ([`readiness`], the one definition `plan` checks too),
//! Namespace Active, Nodes registered/Ready. A timeout error carries the last
//! state seen, e.g. `1/3 available`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::core::{GroupVersion, GroupVersionKind};
use kube::discovery::{self, ApiResource};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use super::{Client, Error};

/// The verdict of a check on the latest state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    /// Not yet, and what it looks like now.
    Pending(String),
}

/// `Type=Status (Reason: message)` for each condition.
pub fn conditions_summary(obj: &Value) -> String {
    let conds: Vec<String> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("");
            let mut out = format!("{}={}", s("type"), s("status"));
            if !s("reason").is_empty() || !s("message").is_empty() {
                out.push_str(&format!(" ({}: {})", s("reason"), s("message")));
            }
            out
        })
        .collect();
    if conds.is_empty() {
        "no conditions reported".into()
    } else {
        conds.join(", ")
    }
}

/// Whether `obj` has status condition `kind` with status "True".
pub(crate) fn condition_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// The integer at JSON pointer `ptr` in `obj` (0 when absent).
pub(crate) fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// `Some(pending)` while status.observedGeneration is behind metadata.generation.
fn stale(obj: &Value) -> Option<Progress> {
    let generation = int(obj, "/metadata/generation");
    let observed = int(obj, "/status/observedGeneration");
    (obj.pointer("/status/observedGeneration").is_none() || observed < generation).then(|| {
        Progress::Pending(format!(
            "status not yet updated for generation {generation} (observedGeneration {observed})"
        ))
    })
}

fn api_for(client: &Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.kube().clone(), ns, ar),
        None => Api::all_with(client.kube().clone(), ar),
    }
}

/// Watches one object until `check` says done, or `timeout` passes.
pub async fn wait_for(
    client: &Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> Progress,
) -> Result<Value, Error> {
    let api = api_for(client, ar, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut found = None;
    let result = watch_until(client, api, config, what, timeout, |objects| match objects.get(name) {
        None => Progress::Pending("not found".into()),
        Some(o) => {
            let p = check(o);
            if p == Progress::Done {
                found = Some(o.clone());
            }
            p
        }
    })
    .await;
    result.map(|()| found.unwrap_or_default())
}

/// The shared loop: keeps the watched objects by name and evaluates `check` on
/// each change; on the deadline reports the last verdict and any watch error.
async fn watch_until(
    client: &Client,
    api: Api<DynamicObject>,
    config: watcher::Config,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&BTreeMap<String, Value>) -> Progress,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    let mut initial: Option<BTreeMap<String, Value>> = None;
    let mut last_seen = "no answer from the API server yet".to_owned();
    let mut last_error: Option<String> = None;
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => {
                let last_seen = match last_error {
                    Some(e) => format!("{last_seen} (last watch error: {e})"),
                    None => last_seen,
                };
                return Err(Error::Timeout {
                    server: client.server().to_owned(),
                    what: what.to_owned(),
                    waited: timeout,
                    last_seen,
                });
            }
        };
        let event = match next {
            Ok(e) => e,
            Err(e) => {
                last_error = Some(e.to_string());
                continue;
            }
        };
        let key = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
        let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        match event {
            Event::Init => {
                initial = Some(BTreeMap::new());
                continue;
            }
            Event::InitApply(o) => {
                if let Some(init) = initial.as_mut() {
                    init.insert(key(&o), value(&o));
                }
                continue;
            }
            Event::InitDone => objects = initial.take().unwrap_or_default(),
            Event::Apply(o) => {
                objects.insert(key(&o), value(&o));
            }
            Event::Delete(o) => {
                objects.remove(&key(&o));
            }
        }
        last_error = None;
        match check(&objects) {
            Progress::Done => return Ok(()),
            Progress::Pending(s) => last_seen = s,
        }
    }
}

/// Whether a live object is ready by its kind's convention, and what it
/// looks like when it is not: CRD Established; Deployment Available with every
/// replica updated and available, DaemonSet every scheduled pod updated and
/// available (both for their latest generation, which their controllers
/// always report); Node Ready; Argo CD Application Healthy and Synced;
/// anything else `Ready=True` for its latest generation when it reports one
/// (Flux's kstatus convention). The one definition both `plan` (a check of
/// the live object) and the executor ([`ready`]) use. `kind` is passed, not
/// read from `o`: the items of a list (a watcher's first page) carry none.
pub fn readiness(kind: &str, o: &Value) -> Progress {
    let done = |ok: bool, seen: String| if ok { Progress::Done } else { Progress::Pending(seen) };
    match kind {
        "CustomResourceDefinition" => done(condition_true(o, "Established"), conditions_summary(o)),
        "Deployment" => stale(o).unwrap_or_else(|| {
            let want = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let updated = int(o, "/status/updatedReplicas");
            let available = int(o, "/status/availableReplicas");
            done(
                condition_true(o, "Available") && updated >= want && available >= want,
                format!(
                    "{available}/{want} replicas available, {updated} updated; {}",
                    conditions_summary(o)
                ),
            )
        }),
        "DaemonSet" => stale(o).unwrap_or_else(|| {
            let desired = int(o, "/status/desiredNumberScheduled");
            let updated = int(o, "/status/updatedNumberScheduled");
            let available = int(o, "/status/numberAvailable");
            done(
                updated >= desired && available >= desired,
                format!("{available}/{desired} pods available, {updated} updated"),
            )
        }),
        "Node" => done(condition_true(o, "Ready"), node_state(o)),
        "Application" => {
            let status = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or("unknown");
            let (health, sync) = (status("/status/health/status"), status("/status/sync/status"));
            done(
                health == "Healthy" && sync == "Synced",
                format!("health {health}, sync {sync}"),
            )
        }
        _ => {
            let generation = int(o, "/metadata/generation");
            let observed = o.pointer("/status/observedGeneration").and_then(Value::as_i64);
            done(
                condition_true(o, "Ready") && observed.is_none_or(|g| g >= generation),
                conditions_summary(o),
            )
        }
    }
}

/// What being ready is called for `kind`, in timeout messages.
fn goal(kind: &str) -> &'static str {
    match kind {
        "CustomResourceDefinition" => "Established",
        "Deployment" => "Available",
        "DaemonSet" => "rolled out",
        "Application" => "Healthy and Synced",
        _ => "Ready",
    }
}

/// Waits until the object is ready by [`readiness`]; the built-in kinds
/// need no discovery, any other kind is resolved first.
pub async fn ready(
    client: &Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let object = match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let ar = match kind {
        "CustomResourceDefinition" => ApiResource::erase::<CustomResourceDefinition>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "DaemonSet" => ApiResource::erase::<DaemonSet>(&()),
        "Node" => ApiResource::erase::<Node>(&()),
        _ => resolve(client, api_version, kind, &object).await?,
    };
    let what = format!("{object} to be {}", goal(kind));
    wait_for(client, &ar, namespace, name, &what, timeout, |o| readiness(kind, o))
        .await
        .map(drop)
}

/// CustomResourceDefinition `name` has `Established=True`.
pub async fn crd_established(client: &Client, name: &str, timeout: Duration) -> Result<(), Error> {
    let kind = "CustomResourceDefinition";
    ready(client, "apiextensions.k8s.io/v1", kind, None, name, timeout).await
}

/// Namespace `name` is `Active`.
pub async fn namespace_active(client: &Client, name: &str, timeout: Duration) -> Result<(), Error> {
    let ar = ApiResource::erase::<Namespace>(&());
    let what = format!("Namespace {name} to be Active");
    wait_for(client, &ar, None, name, &what, timeout, |o| {
        match o.pointer("/status/phase") {
            Some(p) if p == "Active" => Progress::Done,
            p => Progress::Pending(format!("phase {}", p.and_then(Value::as_str).unwrap_or("unknown"))),
        }
    })
    .await
    .map(drop)
}

fn node_state(o: &Value) -> String {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map_or_else(
            || "no Ready condition".into(),
            |c| {
                format!(
                    "Ready={} ({}: {})",
                    c["status"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                )
            },
        )
}

async fn nodes_until(
    client: &Client,
    names: &[&str],
    timeout: Duration,
    goal: &str,
    ready_needed: bool,
) -> Result<(), Error> {
    let ar = ApiResource::erase::<Node>(&());
    let api = api_for(client, &ar, None);
    let what = format!("nodes {} to be {goal}", names.join(", "));
    watch_until(client, api, watcher::Config::default(), &what, timeout, |objects| {
        let mut pending = vec![];
        for n in names {
            match objects.get(*n) {
                None => pending.push(format!("{n}: not registered")),
                Some(o) if ready_needed => {
                    if let Progress::Pending(seen) = readiness("Node", o) {
                        pending.push(format!("{n}: {seen}"));
                    }
                }
                Some(_) => {}
            }
        }
        if pending.is_empty() {
            Progress::Done
        } else {
            Progress::Pending(pending.join("; "))
        }
    })
    .await
}

/// Every named Node exists.
pub async fn nodes_registered(client: &Client, names: &[&str], timeout: Duration) -> Result<(), Error> {
    nodes_until(client, names, timeout, "registered", false).await
}

/// Every named Node exists and is `Ready=True`.
pub async fn nodes_ready(client: &Client, names: &[&str], timeout: Duration) -> Result<(), Error> {
    nodes_until(client, names, timeout, "Ready", true).await
}

async fn resolve(client: &Client, api_version: &str, kind: &str, object: &str) -> Result<ApiResource, Error> {
    let unknown = || Error::UnknownKind {
        server: client.server().to_owned(),
        object: object.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    };
    let gv: GroupVersion = api_version.parse().map_err(|_| unknown())?;
    let gvk = GroupVersionKind::gvk(&gv.group, &gv.version, kind);
    match client
        .retry()
        .run(&format!("discover {api_version}"), || {
            discovery::pinned_kind(client.kube(), &gvk)
        })
        .await
    {
        Ok((ar, _)) => Ok(ar),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(unknown()),
        Err(kube::Error::Discovery(_)) => Err(unknown()),
        Err(e) => Err(client.api_error("discover the kind of", object, &e)),
    }
}

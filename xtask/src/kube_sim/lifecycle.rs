//! Graceful deletion: finalizers and namespace termination.
//!
//! - An object with `metadata.finalizers` is not removed by DELETE: it gets a
//!   `deletionTimestamp` and stays until an update empties its finalizers
//!   (k8s.io/apiserver/pkg/registry/generic/registry/store.go: `Delete`,
//!   `deletionFinalizersForGarbageCollection`, `ShouldDeleteDuringUpdate`); no
//!   finalizer may be added once it is being deleted.
//! - DELETE of a Namespace marks it `Terminating` (pkg/registry/core/namespace/storage);
//!   the namespace controller then deletes what it holds and, once it is empty,
//!   drops the `kubernetes` finalizer and the namespace goes
//!   (pkg/controller/namespace/deletion/namespaced_resources_deleter.go).
//! - Nothing new may be created in a terminating namespace: 403 Forbidden from the
//!   NamespaceLifecycle admission plugin (k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle).

use super::path::At;
use serde_json::{Value, json};

use super::field::{self, FieldError};
use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};

fn namespaces() -> GroupResource {
    GroupResource::new("", "namespaces")
}

/// `metadata.finalizers`.
pub fn finalizers(v: &Value) -> Vec<&str> {
    v.at("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether deletion has been requested (`metadata.deletionTimestamp` is set).
pub fn deleting(v: &Value) -> bool {
    v.at("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// Whether a namespace exists and is terminating.
pub fn namespace_terminating(store: &Store, ns: &str) -> bool {
    store.get(&namespaces(), "", ns).is_some_and(deleting)
}

/// The NamespaceLifecycle refusal, with its `NamespaceTerminating` cause.
pub fn terminating_refusal(group: &str, resource: &str, name: &str, ns: &str) -> Value {
    let why = format!("unable to create new content in namespace {ns} because it is being terminated");
    field::forbidden(
        group,
        resource,
        name,
        &why,
        vec![json!({"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"})],
    )
}

fn mark_deleting(obj: &mut Value) {
    if !deleting(obj) {
        obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    }
}

/// What DELETE answers: the object, removed or (with finalizers pending) kept and marked.
pub fn delete(store: &mut Store, gr: &GroupResource, live: Value) -> Value {
    let ns = live["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let name = live["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let is_ns = *gr == namespaces();
    let spec_finalizers = is_ns
        && live
            .at("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if finalizers(&live).is_empty() && !spec_finalizers {
        return store.remove(gr, &ns, &name).unwrap_or(live);
    }
    if deleting(&live) {
        return live;
    }
    let mut obj = live;
    mark_deleting(&mut obj);
    if is_ns {
        obj["status"]["phase"] = json!("Terminating");
    }
    store.put(gr, obj).clone()
}

/// After an update: an object being deleted whose finalizers are all gone is removed.
pub fn finish_if_done(store: &mut Store, gr: &GroupResource, obj: &Value) -> Option<Value> {
    let spec_done = *gr != namespaces()
        || obj
            .at("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    if deleting(obj) && finalizers(obj).is_empty() && spec_done {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        return store.remove(gr, ns, name);
    }
    None
}

/// Updates of an object being deleted may remove finalizers, never add one.
pub fn finalizer_errors(live: &Value, new: &Value) -> Vec<FieldError> {
    if !deleting(live) {
        return vec![];
    }
    let old = finalizers(live);
    let added: Vec<&str> = finalizers(new).into_iter().filter(|f| !old.contains(f)).collect();
    if added.is_empty() {
        return vec![];
    }
    vec![FieldError::forbidden(
        "metadata.finalizers",
        format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
    )]
}

/// The namespace controller's pass: empties terminating namespaces, then removes them.
pub fn reconcile(store: &mut Store) {
    let doomed: Vec<String> = store
        .list(&namespaces(), None)
        .filter(|n| deleting(n))
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for ns in doomed {
        let mut left = 0;
        for gr in store.resources() {
            let items: Vec<Value> = store.list(&gr, Some(&ns)).cloned().collect();
            for o in items {
                left += 1;
                if finalizers(&o).is_empty() {
                    let name = o["metadata"]["name"].as_str().unwrap_or_default();
                    store.remove(&gr, &ns, name);
                    left -= 1;
                } else if !deleting(&o) {
                    let mut o = o;
                    mark_deleting(&mut o);
                    store.put(&gr, o);
                }
            }
        }
        if left > 0 {
            continue;
        }
        let Some(mut n) = store.get(&namespaces(), "", &ns).cloned() else {
            continue;
        };
        if n.at("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            // The `kubernetes` finalizer goes once the content is gone (the /finalize call).
            n["spec"]["finalizers"] = json!([]);
            n = store.put(&namespaces(), n).clone();
        }
        finish_if_done(store, &namespaces(), &n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &mut Store, gr: &GroupResource, v: Value) {
        store.put(gr, v);
    }

    #[test]
    fn namespace_deletion_waits_for_content_with_finalizers() {
        let mut store = Store::default();
        let cms = GroupResource::new("", "configmaps");
        put(
            &mut store,
            &namespaces(),
            json!({"metadata":{"name":"x"},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}),
        );
        put(&mut store, &cms, json!({"metadata":{"name":"plain","namespace":"x"}}));
        put(
            &mut store,
            &cms,
            json!({"metadata":{"name":"held","namespace":"x","finalizers":["example.com/hold"]}}),
        );
        let live = store.get(&namespaces(), "", "x").cloned().unwrap();
        let answered = delete(&mut store, &namespaces(), live);
        assert_eq!(answered["status"]["phase"], "Terminating");
        assert!(namespace_terminating(&store, "x"));
        reconcile(&mut store);
        assert!(store.get(&cms, "x", "plain").is_none());
        let held = store.get(&cms, "x", "held").cloned().unwrap();
        assert!(deleting(&held));
        assert!(store.get(&namespaces(), "", "x").is_some(), "waits for the held object");
        let mut released = held;
        released["metadata"]["finalizers"] = json!([]);
        let stored = store.put(&cms, released).clone();
        assert!(finish_if_done(&mut store, &cms, &stored).is_some());
        reconcile(&mut store);
        assert!(store.get(&namespaces(), "", "x").is_none());
    }

    #[test]
    fn no_finalizer_may_be_added_while_deleting() {
        let live = json!({"metadata":{"deletionTimestamp":"2026-01-01T00:00:00Z","finalizers":["a"]}});
        let new = json!({"metadata":{"finalizers":["a","b"]}});
        assert_eq!(finalizer_errors(&live, &new)[0].field, "metadata.finalizers");
        assert!(finalizer_errors(&live, &json!({"metadata":{}})).is_empty());
    }
}

//! Events (core/v1), as controllers and kubelets record them: one object per
//! involved object and reason, its count raised when it repeats.

use serde_json::json;
use sha2::Digest;

use super::resources::GroupResource;
use super::store::{Store, now_rfc3339};

/// Records a Warning event about `(kind, namespace, name)`.
pub fn warn(store: &mut Store, (kind, ns, name): (&str, &str, &str), reason: &str, message: &str) {
    let gr = GroupResource::new("", "events");
    let digest = sha2::Sha256::digest(format!("{kind}/{reason}").as_bytes());
    // Upstream: client-go tools/record names events `<object>.<hex timestamp>`; a stable suffix here.
    let event_name = format!("{name}.{}", hex::encode(&digest[..8]));
    let now = now_rfc3339();
    let event = match store.get(&gr, ns, &event_name) {
        Some(e) if e["message"] == json!(message) => return,
        Some(e) => {
            let mut e = e.clone();
            e["message"] = json!(message);
            e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
            e["lastTimestamp"] = json!(now);
            e
        }
        None => json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": ns},
            "involvedObject": {"kind": kind, "namespace": ns, "name": name,
                               "apiVersion": if kind == "Pod" { "v1" } else { "apps/v1" }},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": source(kind, reason)},
            "reportingComponent": source(kind, reason),
        }),
    };
    store.put(&gr, event);
}

fn source(kind: &str, reason: &str) -> &'static str {
    match (kind, reason) {
        (_, "FailedScheduling") => "default-scheduler",
        ("DaemonSet", _) => "daemonset-controller",
        ("Deployment", _) => "replicaset-controller",
        _ => "kubelet",
    }
}

/// The message of the latest event about an object with this reason, if any.
pub fn message(store: &Store, ns: &str, name: &str, reason: &str) -> Option<String> {
    store
        .list(&GroupResource::new("", "events"), Some(ns))
        .find(|e| e["involvedObject"]["name"] == json!(name) && e["reason"] == json!(reason))
        .and_then(|e| e["message"].as_str().map(str::to_owned))
}

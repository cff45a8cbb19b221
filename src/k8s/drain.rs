//! Node maintenance through the API, as `kubectl drain` does it
//! (k8s.io/kubectl/pkg/drain): cordon (`spec.unschedulable`), evict every pod
//! through the Eviction API so PodDisruptionBudgets are respected (a 429 is
//! retried until the deadline; DaemonSet and mirror pods are left where they
//! are), uncordon, and delete the Node object.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};

use super::{Client, Error};

/// How often a refused eviction is asked again (kubectl drain waits 5 s;
/// shorter here so a budget that frees up is noticed quickly).
const EVICT_RETRY: Duration = Duration::from_secs(1);

/// Sets or clears `spec.unschedulable` on `node` (a JSON merge patch, as
/// `kubectl cordon` sends).
pub async fn cordon(client: &Client, node: &str, unschedulable: bool) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.kube().clone());
    let patch = Patch::Merge(serde_json::json!({ "spec": { "unschedulable": unschedulable } }));
    let params = PatchParams::default();
    client
        .retry()
        .run("cordon", || nodes.patch(node, &params, &patch))
        .await
        .map(drop)
        .map_err(|e| {
            client.api_error(
                if unschedulable { "cordon" } else { "uncordon" },
                &format!("Node {node}"),
                &e,
            )
        })
}

/// Whether a pod stays on a drained node: mirror pods (the kubelet owns them)
/// and DaemonSet pods (their controller ignores `unschedulable`); kubectl
/// drain's `--ignore-daemonsets` filters.
fn stays(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    let mirror = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let daemon = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    mirror || daemon
}

/// Evicts every pod on `node` except those that [`stays`] and waits until
/// they are gone. A budget that refuses an eviction (429) is asked again
/// until `timeout`; then the error names the node, the pod and the budget's
/// answer. Returns how many pods were evicted.
pub async fn drain(client: &Client, node: &str, timeout: Duration) -> Result<usize, Error> {
    let deadline = Instant::now() + timeout;
    let pods: Api<Pod> = Api::all(client.kube().clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let listed = client
        .retry()
        .run("list pods", || pods.list(&on_node))
        .await
        .map_err(|e| client.api_error("list pods on", &format!("Node {node}"), &e))?;
    let targets: Vec<Pod> = listed.items.into_iter().filter(|p| !stays(p)).collect();
    let evictions = targets.iter().map(|pod| evict(client, node, pod, deadline, timeout));
    futures::future::try_join_all(evictions).await?;
    Ok(targets.len())
}

async fn evict(client: &Client, node: &str, pod: &Pod, deadline: Instant, timeout: Duration) -> Result<(), Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone();
    let api: Api<Pod> = Api::namespaced(client.kube().clone(), &ns);
    let object = format!("pod {ns}/{name} on Node {node}");
    let timed_out = |last: String| Error::Timeout {
        server: client.server().to_owned(),
        what: format!("{object} to be evicted"),
        waited: timeout,
        last_seen: last,
    };
    // Evict until the API accepts (or the pod is gone).
    loop {
        match api.evict(&name, &EvictParams::default()).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            // 429: a PodDisruptionBudget allows no disruption now (policy/v1 Eviction).
            // 5xx and transport errors: the API is busy or restarting; ask again.
            Err(e) if super::retry::retryable(&e).is_some() => {
                if Instant::now() >= deadline {
                    return Err(timed_out(format!("eviction refused: {}", super::retry::short(&e))));
                }
                let hint = super::retry::retryable(&e).flatten().unwrap_or(EVICT_RETRY);
                tokio::time::sleep(hint.min(deadline.saturating_duration_since(Instant::now()))).await;
            }
            Err(e) => return Err(client.api_error("evict", &object, &e)),
        }
    }
    // Then wait for that pod (same UID; a replacement with the same name is another pod) to go.
    loop {
        match api.get_opt(&name).await {
            Ok(None) => return Ok(()),
            Ok(Some(p)) if p.metadata.uid != uid => return Ok(()),
            Ok(Some(_)) if Instant::now() >= deadline => return Err(timed_out("evicted, still terminating".into())),
            Ok(Some(_)) | Err(_) => tokio::time::sleep(EVICT_RETRY).await,
        }
    }
}

/// Deletes the Node object (gone already counts as done).
pub async fn delete_node(client: &Client, node: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.kube().clone());
    let params = DeleteParams::default();
    match client.retry().run("delete node", || nodes.delete(node, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(client.api_error("delete", &format!("Node {node}"), &e)),
    }
}

/// The Node's `status.nodeInfo.kubeletVersion` and whether it is Ready,
/// or `None` when there is no such Node.
pub async fn node_status(client: &Client, node: &str) -> Result<Option<(String, bool)>, Error> {
    let nodes: Api<Node> = Api::all(client.kube().clone());
    let got = client
        .retry()
        .run("get node", || nodes.get_opt(node))
        .await
        .map_err(|e| client.api_error("get", &format!("Node {node}"), &e))?;
    Ok(got.map(|n| {
        let status = n.status.unwrap_or_default();
        let version = status.node_info.map(|i| i.kubelet_version).unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (version, ready)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn daemonset_and_mirror_pods_stay_everything_else_is_evicted() {
        let daemon = pod(serde_json::json!({"metadata": {"name": "cilium-x", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "cilium", "uid": "u", "controller": true}]}}));
        let mirror = pod(serde_json::json!({"metadata": {"name": "kube-apiserver-cp-1",
            "annotations": {"kubernetes.io/config.mirror": "abc"}}}));
        let replica = pod(serde_json::json!({"metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u", "controller": true}]}}));
        let bare = pod(serde_json::json!({"metadata": {"name": "debug"}}));
        assert!(stays(&daemon));
        assert!(stays(&mirror));
        assert!(!stays(&replica));
        assert!(!stays(&bare));
    }
}

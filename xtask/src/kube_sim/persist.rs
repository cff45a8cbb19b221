//! Optional etcd backing for the object store: every change is written
//! through to etcd under kube-apiserver's key layout, and a simulator
//! started on an etcd that holds objects loads them first. JSON values
//! (kube-apiserver writes protobuf for built-ins; the key layout is what
//! restore drills and `etcdctl get --prefix /registry/` look at).
//!
//! Writes are queued in store order and applied by one task; a mutating
//! request is answered only once its change is in etcd
//! ([`Persist::flushed`]), so an acknowledged write is in any later snapshot.
//!
//! resourceVersions stay the store's own counter (kube-apiserver uses etcd's
//! mod_revision; here writes are asynchronous to the store lock, so the
//! revision is not known when the version is assigned). The counter starts
//! above both etcd's revision and every loaded object's version, so versions
//! never go back across a restart or a restore.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::resources::GroupResource;
use super::store::Store;
use crate::etcd::EtcdClient;

/// Keys whose layout differs from `/registry/<resource>`. Upstream:
/// kubernetes pkg/registry/core/node/storage ("minions"), pkg/registry/core/service/storage
/// ("services/specs"), pkg/registry/core/endpoint/storage ("services/endpoints"), and API groups served by their own apiservers keep the group.
const OVERRIDES: &[(&str, &str, &str)] = &[
    ("", "nodes", "minions"),
    ("", "services", "services/specs"),
    ("", "endpoints", "services/endpoints"),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "apiextensions.k8s.io/customresourcedefinitions",
    ),
    (
        "apiregistration.k8s.io",
        "apiservices",
        "apiregistration.k8s.io/apiservices",
    ),
];

/// The registry prefix of a collection (without `/registry/`): built-in
/// resources by resource name (k8s.io/apiserver generic registry store, prefix
/// "/registry/<resource>"), custom resources by group and resource
/// (apiextensions-apiserver pkg/registry/customresource: "/<group>/<resource>").
fn collection(gr: &GroupResource, builtin: bool) -> String {
    if let Some((_, _, p)) = OVERRIDES.iter().find(|(g, r, _)| *g == gr.group && *r == gr.resource) {
        return (*p).to_owned();
    }
    if builtin {
        gr.resource.clone()
    } else {
        format!("{}/{}", gr.group, gr.resource)
    }
}

/// `/registry/<collection>/<namespace>/<name>`, or without the namespace when cluster-scoped.
pub fn registry_key(gr: &GroupResource, builtin: bool, ns: &str, name: &str) -> String {
    let c = collection(gr, builtin);
    if ns.is_empty() {
        format!("/registry/{c}/{name}")
    } else {
        format!("/registry/{c}/{ns}/{name}")
    }
}

/// Group and resource of a stored key, the group taken from the object's apiVersion.
fn parse_key(key: &str, object: &Value) -> Option<GroupResource> {
    let rest = key.strip_prefix("/registry/")?;
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    if let Some((g, r, _)) = OVERRIDES.iter().find(|(_, _, p)| rest.starts_with(&format!("{p}/"))) {
        return Some(GroupResource::new(g, r));
    }
    let mut parts = rest.split('/');
    let first = parts.next()?;
    let resource = if first.contains('.') { parts.next()? } else { first };
    Some(GroupResource::new(group, resource))
}

struct Write {
    rv: u64,
    key: String,
    value: Option<Vec<u8>>,
}

/// The write-through handle the store holds.
#[derive(Clone)]
pub struct Persist {
    tx: mpsc::UnboundedSender<Write>,
    done: watch::Receiver<u64>,
    builtins: Arc<BTreeSet<GroupResource>>,
}

impl Persist {
    /// Starts the writer for `endpoints` (tried in turn, so a member that
    /// is down for a reboot does not stop writes).
    pub fn start(endpoints: &[String], builtins: BTreeSet<GroupResource>) -> (Self, tokio::task::JoinHandle<()>) {
        let clients: Vec<EtcdClient> = endpoints.iter().map(|e| EtcdClient::new(e)).collect();
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        let (done_tx, done) = watch::channel(0);
        let task = tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                write(&clients, &w).await;
                let _ = done_tx.send(w.rv);
            }
        });
        (
            Self {
                tx,
                done,
                builtins: Arc::new(builtins),
            },
            task,
        )
    }

    /// Queues a change at `rv`: the object, or `None` for a deletion.
    pub(crate) fn send(&self, rv: u64, gr: &GroupResource, ns: &str, name: &str, object: Option<&Value>) {
        let key = registry_key(gr, self.builtins.contains(gr), ns, name);
        let value = object.map(|o| serde_json::to_vec(o).expect("a JSON value serialises"));
        let _ = self.tx.send(Write { rv, key, value });
    }

    /// Waits (up to 10 s) until every change up to `rv` is in etcd.
    pub async fn flushed(&self, rv: u64) {
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d >= rv)).await;
    }
}

async fn write(clients: &[EtcdClient], w: &Write) {
    for attempt in 0..100 {
        for c in clients {
            let result = match &w.value {
                Some(v) => c.put(&w.key, v).await,
                None => c.delete(&w.key).await,
            };
            match result {
                Ok(_) => return,
                Err(e) if attempt == 0 => tracing::debug!("kube-sim: etcd write {} via {}: {e:#}", w.key, c.url()),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("kube-sim: etcd write {} failed on every member; dropped", w.key);
}

/// Loads every object under `/registry/` into `store`; returns how many.
pub async fn load(endpoints: &[String], store: &std::sync::Mutex<Store>) -> Result<usize> {
    let client = EtcdClient::new(endpoints.first().context("no etcd endpoint")?);
    let (kvs, revision) = client.range_prefix("/registry/").await?;
    let mut store = store.lock().expect("store lock");
    let mut n = 0;
    for kv in kvs {
        let object: Value = serde_json::from_slice(&kv.value).with_context(|| format!("etcd key {}", kv.key))?;
        let Some(gr) = parse_key(&kv.key, &object) else {
            continue;
        };
        store.insert_loaded(&gr, object);
        n += 1;
    }
    store.advance_to(revision);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_follow_kube_apiserver() {
        let cm = GroupResource::new("", "configmaps");
        assert_eq!(
            registry_key(&cm, true, "default", "m"),
            "/registry/configmaps/default/m"
        );
        let node = GroupResource::new("", "nodes");
        assert_eq!(registry_key(&node, true, "", "cp-1"), "/registry/minions/cp-1");
        let deploy = GroupResource::new("apps", "deployments");
        assert_eq!(registry_key(&deploy, true, "a", "b"), "/registry/deployments/a/b");
        let hr = GroupResource::new("helm.toolkit.fluxcd.io", "helmreleases");
        let key = registry_key(&hr, false, "flux-system", "cilium");
        assert_eq!(key, "/registry/helm.toolkit.fluxcd.io/helmreleases/flux-system/cilium");
        let obj = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2"});
        assert_eq!(parse_key(&key, &obj), Some(hr));
        assert_eq!(
            parse_key("/registry/minions/cp-1", &json!({"apiVersion": "v1"})),
            Some(node)
        );
        assert_eq!(
            parse_key("/registry/deployments/a/b", &json!({"apiVersion": "apps/v1"})),
            Some(deploy)
        );
    }
}

//! Day-2 operations on a running cluster: etcd snapshots on demand
//! ([`snapshot`]), node removal ([`remove`]) and upgrades ([`upgrade`]).
//! Each observes the cluster first (every node ours and healthy, etcd
//! quorate), builds a typed plan from what it saw (printed before anything
//! happens), and runs that plan step by step through [`execute`], the one
//! place these operations change a node or the API.

pub mod execute;
pub mod health;
mod k3s_snapshot;
pub mod remove;
pub mod snapshot;
pub mod upgrade;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::inventory::{Cluster, Node};
use crate::render::{SecretsBundle, talos as render_talos};
use crate::state::StateStore;
use crate::talos::{CallPolicy, TalosClient, TalosCredentials};

/// The cluster's talosconfig credentials, rebuilt from the secrets bundle in
/// the state dir (the identity every node must answer with).
pub fn talos_credentials(root: &Path, cluster: &Cluster) -> Result<TalosCredentials, String> {
    let bundle = SecretsBundle::load(root, cluster)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| {
            format!(
                "cluster {}: no secrets in {}: the nodes' identity cannot be verified; nothing was done",
                cluster.name,
                root.display()
            )
        })?;
    let talosconfig =
        render_talos::talosconfig(cluster, bundle.talos().map_err(|e| e.to_string())?).map_err(|e| format!("{e:#}"))?;
    TalosCredentials::from_talosconfig(&talosconfig, None).map_err(|e| e.to_string())
}

/// A mTLS client for `node` whose calls retry for at most `budget`.
pub fn talos_client(node: &Node, creds: &TalosCredentials, budget: Duration) -> Result<TalosClient, String> {
    let policy = CallPolicy {
        deadline: Duration::from_secs(10).min(budget.max(Duration::from_secs(1))),
        retry_budget: budget,
        max_backoff: Duration::from_secs(1),
        ..CallPolicy::default()
    };
    TalosClient::configured_with(&node.name, SocketAddr::new(node.ip, node.talos.port), creds, policy)
        .map_err(|e| e.to_string())
}

/// A client of the cluster's API from the kubeconfig `up` stored.
pub async fn kube_client(store: &StateStore, cluster: &str) -> Result<crate::k8s::Client, String> {
    let path = store.artifact("kubeconfig").ok_or_else(|| {
        format!("cluster {cluster}: no kubeconfig in the state dir: run `bootstrap up` first; nothing was done")
    })?;
    crate::k8s::Client::from_kubeconfig(path)
        .await
        .map_err(|e| e.to_string())
}

/// Whether an etcd member is `node`.
pub fn is_member(member: &crate::talos::proto::machine::EtcdMember, node: &Node) -> bool {
    crate::talos::is_member(member, &node.name, node.ip)
}

/// The Talos version a Version response reports (`v1.13.9`).
pub fn tag(v: &crate::talos::proto::machine::Version) -> String {
    v.version.as_ref().map(|i| i.tag.clone()).unwrap_or_default()
}

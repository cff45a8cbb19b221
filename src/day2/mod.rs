//! Day-2 operations on a running cluster: etcd snapshots on demand
//! ([`snapshot`]), node removal ([`remove`]) and upgrades ([`upgrade`]).
//! Each observes the cluster first (every node ours and healthy, etcd
//! quorate), builds a typed plan from what it saw (printed before anything
//! happens), and runs that plan step by step through [`execute`], the one
//! place these operations change a node or the API.

pub mod execute;
pub mod health;
pub mod k3s;
mod k3s_snapshot;
pub mod k3s_upgrade;
pub mod kubernetes;
pub mod remove;
pub mod snapshot;
pub mod upgrade;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::inventory::{Cluster, Node};
use crate::render::{SecretsBundle, TalosBundle, talos as render_talos};
use crate::state::StateStore;
use crate::talos::{CallPolicy, TalosClient, TalosCredentials};

/// The cluster's secrets bundle from the state dir; without one, the nodes'
/// identity cannot be checked and nothing is done.
pub fn secrets(root: &Path, cluster: &Cluster) -> Result<SecretsBundle, String> {
    SecretsBundle::load(root, cluster)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| {
            format!(
                "cluster {}: no secrets in {}: the nodes' identity cannot be verified; nothing was done",
                cluster.name,
                root.display()
            )
        })
}

/// The cluster's talosconfig credentials, rebuilt from the secrets bundle in
/// the state dir (the identity every node must answer with).
pub fn talos_credentials(root: &Path, cluster: &Cluster) -> Result<TalosCredentials, String> {
    talos_material(root, cluster).map(|(_, creds)| creds)
}

/// The cluster's Talos secrets bundle (to render machine configs) and its
/// talosconfig credentials.
pub fn talos_material(root: &Path, cluster: &Cluster) -> Result<(TalosBundle, TalosCredentials), String> {
    let bundle = secrets(root, cluster)?;
    let bundle = bundle.talos().map_err(|e| e.to_string())?.clone();
    let talosconfig = render_talos::talosconfig(cluster, &bundle).map_err(|e| format!("{e:#}"))?;
    let creds = TalosCredentials::from_talosconfig(&talosconfig, None).map_err(|e| e.to_string())?;
    Ok((bundle, creds))
}

/// A mTLS client for `node` whose calls retry for at most `budget`.
pub fn talos_client(node: &Node, creds: &TalosCredentials, budget: Duration) -> Result<TalosClient, String> {
    TalosClient::configured_with(&node.name, address(node), creds, CallPolicy::within(budget))
        .map_err(|e| e.to_string())
}

/// The node's Talos API address.
pub fn address(node: &Node) -> SocketAddr {
    SocketAddr::new(node.ip, node.talos.port)
}

/// What `node` answers ([`crate::talos::probe`]): reset's identity check.
pub async fn probe(node: &Node, creds: Option<&TalosCredentials>) -> crate::talos::Seen {
    crate::talos::probe(
        &node.name,
        address(node),
        node.role == crate::inventory::Role::Controlplane,
        creds,
    )
    .await
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

/// What the Day-2 plan tests share.
#[cfg(test)]
pub(crate) mod testing {
    use crate::engine::Action;
    pub(crate) use crate::inventory::example as cluster;

    /// A plan as `<target> <kind>` lines.
    pub fn kinds(plan: &[Action]) -> Vec<String> {
        plan.iter()
            .map(|a| {
                let kind = super::execute::progress("", &a.step);
                format!("{} {}", a.target, kind.trim_start_matches(": "))
            })
            .collect()
    }
}

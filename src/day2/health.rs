//! What a Day-2 operation reads before it touches anything, and the refusal
//! when the cluster is not fit for it: every node answers mTLS as ours (its
//! Talos version read), every control plane is a running, healthy etcd
//! member and no other member exists, and every Node is Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{is_member, talos_client};
use crate::inventory::{Cluster, Node, Role};
use crate::talos::TalosCredentials;
use crate::talos::proto::machine::EtcdMember;

/// Budget of one observation call: a node that does not answer within it is reported.
const OBSERVE: Duration = Duration::from_secs(10);

/// One node as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    /// Talos version (Version's tag), or why it could not be read.
    pub talos: Result<String, String>,
    /// Control planes: whether etcd runs there and reports healthy.
    pub etcd_healthy: Option<bool>,
    /// The Node object: kubelet version and Ready, or `None` when it has none.
    pub node: Option<(String, bool)>,
}

/// The cluster as observed before a Day-2 operation.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Inventory node name → what it answered.
    pub nodes: BTreeMap<String, NodeSeen>,
    /// Etcd members, as a control plane reports them (empty when none answered).
    pub members: Vec<EtcdMember>,
}

impl Observed {
    /// What is wrong with the nodes `among` (all when empty), one entry per
    /// problem naming the node; empty when the cluster is fit for a Day-2 step.
    pub fn problems(&self, cluster: &Cluster, among: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for n in &cluster.nodes {
            if !among.is_empty() && !among.contains(&n.name.as_str()) {
                continue;
            }
            let Some(seen) = self.nodes.get(&n.name) else {
                continue;
            };
            if let Err(why) = &seen.talos {
                out.push(format!("{}: does not answer as this cluster's node ({why})", n.name));
                continue;
            }
            if n.role == Role::Controlplane {
                if seen.etcd_healthy != Some(true) {
                    out.push(format!("{}: etcd is not running and healthy there", n.name));
                }
                if !self.members.iter().any(|m| is_member(m, n)) {
                    out.push(format!("{}: not an etcd member", n.name));
                }
            }
            match &seen.node {
                None => out.push(format!("{}: no Node object", n.name)),
                Some((_, false)) => out.push(format!("{}: Node is not Ready", n.name)),
                Some(_) => {}
            }
        }
        if among.is_empty() {
            for m in &self.members {
                if !cluster.control_planes().any(|n| is_member(m, n)) {
                    out.push(format!(
                        "etcd member {} ({:x}) is no control plane of the inventory",
                        m.hostname, m.id
                    ));
                }
            }
        }
        out
    }
}

/// Refuses a Day-2 `phase` (`what`: "upgrade") when `problems` is not empty.
pub fn refuse_unless_healthy(phase: &str, what: &str, problems: &[String]) -> Result<(), crate::engine::PhaseError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(super::execute::refusal(
        phase,
        format!(
            "refusing to {what}: the cluster is not healthy: {}; nothing was changed",
            problems.join("; ")
        ),
    ))
}

/// Reads every node of `cluster` (Talos version, etcd service health, Node status).
pub async fn observe(cluster: &Cluster, creds: &TalosCredentials, kube: &crate::k8s::Client) -> Observed {
    let seen = futures::future::join_all(cluster.nodes.iter().map(|n| observe_node(n, creds, kube))).await;
    let mut members = Vec::new();
    for cp in cluster.control_planes() {
        let got = match talos_client(cp, creds, OBSERVE) {
            Ok(c) => c.etcd_members().await,
            Err(_) => continue,
        };
        if let Ok(m) = got {
            members = m;
            break;
        }
    }
    Observed {
        nodes: cluster.nodes.iter().map(|n| n.name.clone()).zip(seen).collect(),
        members,
    }
}

async fn observe_node(node: &Node, creds: &TalosCredentials, kube: &crate::k8s::Client) -> NodeSeen {
    let client = talos_client(node, creds, OBSERVE);
    let talos = match &client {
        Ok(c) => c.version().await.map(|v| super::tag(&v)).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let etcd_healthy = match (&client, node.role) {
        (Ok(c), Role::Controlplane) if talos.is_ok() => Some(c.service_list().await.is_ok_and(|services| {
            services
                .iter()
                .any(|s| s.id == "etcd" && s.state == "Running" && s.health.as_ref().is_some_and(|h| h.healthy))
        })),
        (_, Role::Controlplane) => Some(false),
        _ => None,
    };
    let node_status = crate::k8s::drain::node_status(kube, &node.name).await.ok().flatten();
    NodeSeen {
        talos,
        etcd_healthy,
        node: node_status,
    }
}

//! `remove-node` as a phase: each named node, one at a time, is cordoned,
//! drained, taken out of etcd, wiped and its Node object deleted. Refused
//! when it would remove the last control plane or leave etcd without a
//! healthy majority of the members that remain. A node that no longer
//! answers is not wiped (nothing can reach it): its member and Node are
//! still removed.
//!
//! - Talos: the etcd member is removed through another control plane, then
//!   the node is reset (all partitions).
//! - k3s: the node is uninstalled (the service stopped first, so it cannot
//!   register again: a running k3s re-creates its Node), then its Node is
//!   deleted; for a server, that deletion is what takes it out of etcd: k3s's
//!   etcd controller removes the member of a deleted server Node through its
//!   finalizer (k3s-io/k3s discussion 14894: "If you FORCE deleted the node
//!   [...] the finalizers would not have fired to remove the old node from
//!   the etcd cluster"). Its quorum is counted over the servers that answer
//!   as ours with a Ready Node.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::execute::{self, Access, Env};
use super::k3s::K3sAccess;
use super::{health, is_member};
use crate::engine::{Action, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, Role};
use crate::talos::TalosCredentials;

/// Phase name in state and events.
pub const PHASE: &str = "remove-node";

/// The etcd arithmetic of removing `removing` from `members` of which
/// `healthy` are healthy: refused when no member would remain, or the
/// remaining members would not have a healthy majority (etcd needs
/// ⌊n/2⌋+1 of n to agree: etcd docs, "FAQ: What is failure tolerance?").
pub fn quorum_after(members: &[String], healthy: &[String], removing: &[String]) -> Result<(), String> {
    let remaining: Vec<&String> = members.iter().filter(|m| !removing.contains(m)).collect();
    if remaining.is_empty() {
        return Err("it would remove the last etcd member (the last control plane)".into());
    }
    let up = remaining.iter().filter(|m| healthy.contains(m)).count();
    if up * 2 <= remaining.len() {
        return Err(format!(
            "etcd would be left with {up} healthy of {} members, no majority",
            remaining.len()
        ));
    }
    Ok(())
}

/// What was seen of one node to be removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// It answers the Talos API as this cluster's node (so it can be drained and wiped).
    pub answers: bool,
    /// It has a Node object.
    pub registered: bool,
    /// It is an etcd member.
    pub member: bool,
}

/// How the nodes of a removal are taken out of etcd and wiped.
#[derive(Debug, Clone, Copy)]
pub struct Removal<'a> {
    /// The control plane that carries etcd member removals (Talos); `None`
    /// when the Node deletion does it (k3s).
    pub via: Option<&'a str>,
    /// How a node is wiped, as the plan says it.
    pub wipe: &'a str,
}

/// How Talos nodes are wiped.
pub const TALOS_WIPE: &str = "Talos reset (all partitions), back to maintenance mode";
/// How k3s nodes are wiped.
pub const K3S_WIPE: &str = "k3s stopped and uninstalled (binary, configs, datastore)";

/// The plan for removing `nodes` (pure), from what was seen of each.
pub fn plan(
    cluster: &Cluster,
    nodes: &[String],
    facts: &BTreeMap<String, Facts>,
    how: Removal,
    drain_secs: u64,
) -> Vec<Action> {
    let mut out = Vec::new();
    for name in nodes {
        let (Some(n), Some(f)) = (cluster.node(name), facts.get(name)) else {
            continue;
        };
        let mut steps = Vec::new();
        if f.registered {
            steps.push(Step::Cordon);
            if f.answers {
                steps.push(Step::Drain {
                    timeout_secs: drain_secs,
                });
            }
        }
        if let Some(via) = how.via
            && n.role == Role::Controlplane
            && f.member
        {
            steps.push(Step::RemoveEtcdMember { via: via.to_owned() });
        }
        if f.answers {
            steps.push(Step::WipeNode { how: how.wipe.into() });
        }
        if f.registered {
            steps.push(Step::DeleteNode);
        }
        out.extend(steps.into_iter().map(|s| Action::new(PHASE, name, s)));
    }
    out
}

/// What a removal's plan reads: per node, whether it answers as ours and
/// has a Node; the etcd members (as node names) and the healthy ones.
#[derive(Debug, Default)]
struct Seen {
    answers: BTreeMap<String, bool>,
    registered: BTreeMap<String, bool>,
    members: Vec<String>,
    healthy: Vec<String>,
}

impl Seen {
    fn facts(&self, nodes: &[String]) -> BTreeMap<String, Facts> {
        let get = |m: &BTreeMap<String, bool>, n: &String| m.get(n).copied().unwrap_or(false);
        nodes
            .iter()
            .map(|n| {
                let f = Facts {
                    answers: get(&self.answers, n),
                    registered: get(&self.registered, n),
                    member: self.members.contains(n),
                };
                (n.clone(), f)
            })
            .collect()
    }
}

/// Talos: the machine API says who answers and who is an etcd member.
async fn talos_seen(cluster: &Cluster, creds: &TalosCredentials, kube: &crate::k8s::Client) -> Seen {
    let seen = health::observe(cluster, creds, kube).await;
    let members: Vec<String> = cluster
        .control_planes()
        .filter(|n| seen.members.iter().any(|m| is_member(m, n)))
        .map(|n| n.name.clone())
        .collect();
    Seen {
        answers: seen.nodes.iter().map(|(n, s)| (n.clone(), s.talos.is_ok())).collect(),
        registered: seen.nodes.iter().map(|(n, s)| (n.clone(), s.node.is_some())).collect(),
        healthy: members
            .iter()
            .filter(|n| seen.nodes.get(*n).is_some_and(|s| s.etcd_healthy == Some(true)))
            .cloned()
            .collect(),
        members,
    }
}

/// k3s: every server runs an etcd member (embedded etcd); one that answers
/// over SSH as ours with its Node Ready counts as healthy.
async fn k3s_seen(cluster: &Cluster, k: &K3sAccess, kube: &crate::k8s::Client, concurrency: usize) -> Seen {
    let seen = k.observe(cluster, kube, concurrency).await;
    let members: Vec<String> = cluster.control_planes().map(|n| n.name.clone()).collect();
    Seen {
        answers: seen.iter().map(|(n, s)| (n.clone(), s.ours.is_ok())).collect(),
        registered: seen
            .iter()
            .map(|(n, s)| (n.clone(), matches!(s.node, Ok(Some(_)))))
            .collect(),
        healthy: members
            .iter()
            .filter(|n| seen.get(*n).is_some_and(|s| s.problems(n).is_empty()))
            .cloned()
            .collect(),
        members,
    }
}

/// Node removal, as a phase of the engine.
pub struct RemoveNodes {
    pub env: Arc<Env>,
    pub nodes: Vec<String>,
    pub drain_secs: u64,
}

#[async_trait::async_trait]
impl Phase for RemoveNodes {
    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let cluster = &self.env.cluster;
        let seen = match &self.env.access {
            Access::Talos { creds, .. } => talos_seen(cluster, creds, &self.env.kube).await,
            Access::K3s(k) => k3s_seen(cluster, k, &self.env.kube, ctx.concurrency).await,
        };
        if cluster.control_planes().all(|n| self.nodes.contains(&n.name)) {
            return Err(execute::refusal(
                PHASE,
                "refusing: it would remove every control plane of the cluster; nothing was changed".into(),
            ));
        }
        let removing: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| seen.members.contains(n))
            .cloned()
            .collect();
        if !removing.is_empty() {
            quorum_after(&seen.members, &seen.healthy, &removing).map_err(|e| {
                execute::refusal(
                    PHASE,
                    format!("refusing to remove {}: {e}; nothing was changed", removing.join(", ")),
                )
            })?;
        }
        let how = match &self.env.access {
            Access::Talos { .. } => {
                let via = seen.healthy.iter().find(|n| !self.nodes.contains(n));
                if !removing.is_empty() && via.is_none() {
                    return Err(execute::refusal(
                        PHASE,
                        "refusing: no healthy control plane remains to carry the etcd member removal; nothing was changed"
                            .into(),
                    ));
                }
                Removal {
                    via: Some(via.map_or("", String::as_str)),
                    wipe: TALOS_WIPE,
                }
            }
            Access::K3s(_) => Removal {
                via: None,
                wipe: K3S_WIPE,
            },
        };
        Ok(plan(
            cluster,
            &self.nodes,
            &seen.facts(&self.nodes),
            how,
            self.drain_secs,
        ))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        // One node at a time (control planes first): each stage is one node.
        execute::apply(ctx, &self.env, PHASE, "removed", plan, execute::Batch::Count(1)).await
    }

    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Remove nodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quorum_is_kept_or_the_removal_is_refused() {
        let three = names(&["cp-1", "cp-2", "cp-3"]);
        assert!(quorum_after(&three, &three, &names(&["cp-3"])).is_ok());
        // cp-2 is down: removing cp-1 leaves cp-2 and cp-3 with one healthy of two.
        let err = quorum_after(&three, &names(&["cp-1", "cp-3"]), &names(&["cp-1"])).unwrap_err();
        assert!(err.contains("1 healthy of 2"), "{err}");
        // Removing the dead one is what restores a healthy majority.
        assert!(quorum_after(&three, &names(&["cp-1", "cp-3"]), &names(&["cp-2"])).is_ok());
        assert!(
            quorum_after(&names(&["cp-1"]), &names(&["cp-1"]), &names(&["cp-1"]))
                .unwrap_err()
                .contains("last")
        );
    }

    #[test]
    fn a_dead_node_is_not_drained_or_wiped_but_leaves_etcd_and_the_api() {
        let c = crate::day2::testing::cluster("simulated.toml");
        let facts: BTreeMap<String, Facts> = [
            (
                "cp-3",
                Facts {
                    answers: false,
                    registered: true,
                    member: true,
                },
            ),
            (
                "worker-1",
                Facts {
                    answers: true,
                    registered: true,
                    member: false,
                },
            ),
        ]
        .into_iter()
        .map(|(n, f)| (n.to_owned(), f))
        .collect();
        let talos = Removal {
            via: Some("cp-1"),
            wipe: TALOS_WIPE,
        };
        let p = plan(&c, &names(&["cp-3", "worker-1"]), &facts, talos, 30);
        let k = crate::day2::testing::kinds(&p);
        assert_eq!(
            k,
            [
                "cp-3 cordon",
                "cp-3 remove-etcd-member",
                "cp-3 delete-node",
                "worker-1 cordon",
                "worker-1 drain",
                "worker-1 wipe-node",
                "worker-1 delete-node"
            ]
        );
        assert_eq!(p[1].step, Step::RemoveEtcdMember { via: "cp-1".into() });
        // k3s: no member step (deleting a server's Node removes its member), an uninstall as the wipe.
        let k3s = Removal {
            via: None,
            wipe: K3S_WIPE,
        };
        let p = plan(&c, &names(&["cp-3", "worker-1"]), &facts, k3s, 30);
        let without_member: Vec<&String> = k.iter().filter(|s| !s.ends_with("remove-etcd-member")).collect();
        assert_eq!(
            crate::day2::testing::kinds(&p).iter().collect::<Vec<_>>(),
            without_member
        );
        assert_eq!(p[4].step, Step::WipeNode { how: K3S_WIPE.into() });
    }
}

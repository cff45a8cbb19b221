//! `remove-node` as a phase: each named node, one at a time, is cordoned,
//! drained, taken out of etcd (control planes, through another control
//! plane), wiped (Talos reset) and its Node object deleted. Refused when it
//! would remove the last control plane or leave etcd without a healthy
//! majority of the members that remain. A node that no longer answers is
//! not wiped (nothing can reach it): its member and Node are still removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::execute::{self, Env};
use super::{health, is_member};
use crate::engine::{Action, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, Role};

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

/// The plan for removing `nodes` (pure), from what was seen of each; `via`
/// is the control plane that carries etcd member removals.
pub fn plan(
    cluster: &Cluster,
    nodes: &[String],
    facts: &BTreeMap<String, Facts>,
    via: &str,
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
        if n.role == Role::Controlplane && f.member {
            steps.push(Step::RemoveEtcdMember { via: via.to_owned() });
        }
        if f.answers {
            steps.push(Step::WipeNode {
                how: "Talos reset (all partitions), back to maintenance mode".into(),
            });
        }
        if f.registered {
            steps.push(Step::DeleteNode);
        }
        out.extend(steps.into_iter().map(|s| Action::new(PHASE, name, s)));
    }
    out
}

/// Node removal, as a phase of the engine.
pub struct RemoveNodes {
    pub env: Arc<Env>,
    pub nodes: Vec<String>,
    pub drain_secs: u64,
}

#[async_trait::async_trait]
impl Phase for RemoveNodes {
    async fn plan(&self, _ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let cluster = &self.env.cluster;
        let seen = health::observe(cluster, &self.env.creds, &self.env.kube).await;
        let member = |name: &str| {
            cluster
                .node(name)
                .is_some_and(|n| seen.members.iter().any(|m| is_member(m, n)))
        };
        let facts: BTreeMap<String, Facts> = self
            .nodes
            .iter()
            .map(|name| {
                let s = seen.nodes.get(name);
                let f = Facts {
                    answers: s.is_some_and(|s| s.talos.is_ok()),
                    registered: s.is_some_and(|s| s.node.is_some()),
                    member: member(name),
                };
                (name.clone(), f)
            })
            .collect();
        let members: Vec<String> = cluster
            .control_planes()
            .filter(|n| member(&n.name))
            .map(|n| n.name.clone())
            .collect();
        let healthy: Vec<String> = members
            .iter()
            .filter(|n| seen.nodes.get(*n).is_some_and(|s| s.etcd_healthy == Some(true)))
            .cloned()
            .collect();
        let removing: Vec<String> = self.nodes.iter().filter(|n| members.contains(n)).cloned().collect();
        if cluster.control_planes().all(|n| self.nodes.contains(&n.name)) {
            return Err(execute::refusal(
                PHASE,
                "refusing: it would remove every control plane of the cluster; nothing was changed".into(),
            ));
        }
        if !removing.is_empty() {
            quorum_after(&members, &healthy, &removing).map_err(|e| {
                execute::refusal(
                    PHASE,
                    format!("refusing to remove {}: {e}; nothing was changed", removing.join(", ")),
                )
            })?;
        }
        let via = healthy
            .iter()
            .find(|n| !self.nodes.contains(n))
            .cloned()
            .unwrap_or_default();
        if !removing.is_empty() && via.is_empty() {
            return Err(execute::refusal(
                PHASE,
                "refusing: no healthy control plane remains to carry the etcd member removal; nothing was changed"
                    .into(),
            ));
        }
        Ok(plan(cluster, &self.nodes, &facts, &via, self.drain_secs))
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
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.toml");
        std::fs::write(&path, text).unwrap();
        let c = crate::inventory::load(&path).unwrap().inventory.clusters.remove(0);
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
        let p = plan(&c, &names(&["cp-3", "worker-1"]), &facts, "cp-1", 30);
        let k: Vec<String> = p
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a.target,
                    execute::progress("", &a.step).trim_start_matches(": ")
                )
            })
            .collect();
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
    }
}

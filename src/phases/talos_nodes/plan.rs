//! The Talos phase -1 plan as a pure function of what was observed: no
//! transport, no state store, no clock (unit-tested without a simulator).

use crate::engine::{Action, CLUSTER, Step};
use crate::inventory::Role;
use crate::talos::Seen;

use super::PHASE;

/// What was observed of one node of the run.
#[derive(Debug, Clone)]
pub(super) struct NodeSeen {
    pub name: String,
    pub role: Role,
    pub seen: Seen,
    /// A maintenance node's identity check: the install disk it resolved
    /// (`None`: it could not be read, the apply reads it), or the refusal.
    pub check: Option<Result<Option<String>, String>>,
    /// The sha256 of the config it last accepted from us (state dir) and
    /// of the one rendered for it now (both present only for a node of ours).
    pub recorded: Option<String>,
    pub desired: Option<String>,
}

/// Everything the plan decides from.
#[derive(Debug, Clone)]
pub(super) struct Observation {
    /// The cluster's secrets bundle exists in the state dir.
    pub secrets: bool,
    pub nodes: Vec<NodeSeen>,
    /// A control plane outside the run's nodes reports etcd running.
    pub etcd_elsewhere: bool,
    /// The first control plane of the inventory (where etcd is bootstrapped).
    pub first: String,
    /// talosconfig and kubeconfig are both in the state dir.
    pub stored: bool,
}

/// The plan's steps, or the nodes refused and why (a node of another
/// cluster, a machine the inventory does not describe, an ambiguous disk).
pub(super) fn decide(o: &Observation) -> Result<Vec<Action>, Vec<(String, String)>> {
    let mut actions = Vec::new();
    if !o.secrets {
        actions.push(Action::new(PHASE, CLUSTER, Step::GenerateSecrets));
    }
    let mut refused = Vec::new();
    for n in &o.nodes {
        let step = match &n.seen {
            Seen::Ours { .. } => match (&n.recorded, &n.desired) {
                (Some(recorded), Some(desired)) if recorded != desired => Step::Reapply,
                _ => continue,
            },
            Seen::Maintenance => match n.check.clone() {
                Some(Ok(install_disk)) => Step::ApplyConfig { install_disk },
                Some(Err(why)) => {
                    refused.push((n.name.clone(), why));
                    continue;
                }
                None => Step::ApplyConfig { install_disk: None },
            },
            Seen::Unreachable(why) => Step::AwaitNode {
                seen: why.clone(),
                via: "the node to answer".into(),
                then: "configure it".into(),
            },
            Seen::Foreign(why) => {
                refused.push((n.name.clone(), refusal(why)));
                continue;
            }
        };
        actions.push(Action::new(PHASE, &n.name, step));
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let running = |n: &NodeSeen| n.seen == Seen::Ours { etcd: true };
    let etcd = o.etcd_elsewhere || o.nodes.iter().any(running);
    if !etcd {
        let node = o.first.clone();
        actions.push(Action::new(PHASE, CLUSTER, Step::BootstrapEtcd { node }));
    }
    let cps_not_member = o.nodes.iter().any(|n| n.role == Role::Controlplane && !running(n));
    if etcd && cps_not_member {
        actions.push(Action::new(PHASE, CLUSTER, Step::AwaitEtcdMembers));
    }
    if !actions.is_empty() || !o.stored {
        actions.push(Action::new(PHASE, CLUSTER, Step::StoreCredentials));
    }
    Ok(actions)
}

/// The refusal of a node that answers as another cluster's.
pub(super) fn refusal(why: &str) -> String {
    format!(
        "refusing: the node answers as a member of another cluster ({why}); reset it (talosctl reset) or fix its address in the inventory"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role, seen: Seen) -> NodeSeen {
        NodeSeen {
            name: name.into(),
            role,
            seen,
            check: None,
            recorded: None,
            desired: None,
        }
    }

    fn converged() -> Observation {
        let ours = Seen::Ours { etcd: true };
        let mut cp = node("cp1", Role::Controlplane, ours);
        (cp.recorded, cp.desired) = (Some("a".into()), Some("a".into()));
        let mut w = node("w1", Role::Worker, Seen::Ours { etcd: false });
        (w.recorded, w.desired) = (Some("b".into()), Some("b".into()));
        Observation {
            secrets: true,
            nodes: vec![cp, w],
            etcd_elsewhere: false,
            first: "cp1".into(),
            stored: true,
        }
    }

    fn steps(o: &Observation) -> Vec<(String, Step)> {
        decide(o)
            .expect("not refused")
            .into_iter()
            .map(|a| (a.target, a.step))
            .collect()
    }

    #[test]
    fn a_converged_cluster_plans_nothing() {
        assert_eq!(steps(&converged()), vec![]);
        let mut lost = converged();
        lost.stored = false;
        assert_eq!(
            steps(&lost),
            vec![(CLUSTER.into(), Step::StoreCredentials)],
            "credentials missing from the state dir are stored again"
        );
    }

    #[test]
    fn a_fresh_rack_generates_secrets_applies_configs_and_bootstraps_etcd_once() {
        let mut cp = node("cp1", Role::Controlplane, Seen::Maintenance);
        cp.check = Some(Ok(Some("/dev/vda".into())));
        let w = node("w1", Role::Worker, Seen::Maintenance);
        let off = node("w2", Role::Worker, Seen::Unreachable("connection refused".into()));
        let o = Observation {
            secrets: false,
            nodes: vec![cp, w, off],
            etcd_elsewhere: false,
            first: "cp1".into(),
            stored: false,
        };
        let disk = Some("/dev/vda".to_owned());
        assert_eq!(
            steps(&o),
            vec![
                (CLUSTER.into(), Step::GenerateSecrets),
                ("cp1".into(), Step::ApplyConfig { install_disk: disk }),
                ("w1".into(), Step::ApplyConfig { install_disk: None }),
                (
                    "w2".into(),
                    Step::AwaitNode {
                        seen: "connection refused".into(),
                        via: "the node to answer".into(),
                        then: "configure it".into(),
                    }
                ),
                (CLUSTER.into(), Step::BootstrapEtcd { node: "cp1".into() }),
                (CLUSTER.into(), Step::StoreCredentials),
            ]
        );
    }

    #[test]
    fn etcd_running_anywhere_is_never_bootstrapped_again_and_new_members_are_awaited() {
        let mut o = converged();
        o.nodes.push(node("cp2", Role::Controlplane, Seen::Maintenance));
        let planned = steps(&o);
        assert!(!planned.iter().any(|(_, s)| matches!(s, Step::BootstrapEtcd { .. })));
        assert!(
            planned.contains(&(CLUSTER.into(), Step::AwaitEtcdMembers)),
            "{planned:?}"
        );
        // --limit to a new control plane: etcd runs on one outside the run.
        let limited = Observation {
            nodes: vec![node("cp3", Role::Controlplane, Seen::Maintenance)],
            etcd_elsewhere: true,
            ..converged()
        };
        let planned = steps(&limited);
        assert!(!planned.iter().any(|(_, s)| matches!(s, Step::BootstrapEtcd { .. })));
        assert!(planned.contains(&(CLUSTER.into(), Step::AwaitEtcdMembers)));
    }

    #[test]
    fn a_changed_config_is_reapplied_and_a_foreign_or_unknown_node_refuses_the_plan() {
        let mut o = converged();
        o.nodes[1].desired = Some("changed".into());
        assert_eq!(
            steps(&o),
            vec![("w1".into(), Step::Reapply), (CLUSTER.into(), Step::StoreCredentials)]
        );
        let mut stranger = node("w2", Role::Worker, Seen::Maintenance);
        stranger.check = Some(Err("refusing: its serial is not the inventory's".into()));
        o.nodes.push(stranger);
        o.nodes
            .push(node("w3", Role::Worker, Seen::Foreign("CA mismatch".into())));
        let refused = decide(&o).expect_err("refused");
        assert_eq!(refused.len(), 2, "every refusal at once: {refused:?}");
        assert_eq!(refused[0].0, "w2");
        assert!(refused[1].1.contains("another cluster (CA mismatch)"), "{refused:?}");
    }
}

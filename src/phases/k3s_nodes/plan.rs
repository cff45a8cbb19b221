//! The k3s phase -1 plan as a pure function of what was observed: no
//! transport, no state store (unit-tested without a rack).

use super::material::{Material, NodeFiles};
use super::{PHASE, remote};
use crate::engine::{Action, CLUSTER, Step};
use crate::inventory::Role;

/// What plan saw on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    /// Installed exactly as rendered now and running.
    Converged,
    /// Installed as rendered but the service is not running.
    Stopped,
    /// Not installed, or installed with other inputs (why).
    Differs(String),
    /// No SSH answer (why).
    Unreachable(String),
}

impl Seen {
    /// The one comparison of what a node has (`o`) with what is rendered
    /// for it now (`f`, and the pinned binary of `m`): plan, apply and Day 2
    /// all decide from it.
    pub(super) fn of(o: &remote::Observed, f: &NodeFiles, m: &Material) -> Self {
        if o.state.is_empty() {
            Seen::Differs("k3s not installed".into())
        } else if o.state != f.record {
            Seen::Differs("installed with other inputs (version, binary, config or script)".into())
        } else if o.config_sha256 != f.config_sha256 || o.binary_sha256 != m.binary_sha256 {
            Seen::Differs("installed files were changed on the node".into())
        } else if !o.active {
            Seen::Stopped
        } else {
            Seen::Converged
        }
    }
}

/// What was observed of one node of the run.
#[derive(Debug, Clone)]
pub(super) struct NodeSeen {
    pub name: String,
    pub role: Role,
    pub seen: Seen,
}

/// Everything the plan decides from.
#[derive(Debug, Clone)]
pub(super) struct Observation {
    /// The cluster's secrets (token, CA) exist in the state dir.
    pub secrets: bool,
    pub nodes: Vec<NodeSeen>,
    /// The kubeconfig is in the state dir.
    pub stored: bool,
}

/// The plan's steps for k3s `version`: each node installed, started or
/// waited for by what it has, then the kubeconfig fetched unless nothing
/// changes and it is stored already.
pub(super) fn decide(o: &Observation, version: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    if !o.secrets {
        actions.push(Action::new(PHASE, CLUSTER, Step::GenerateSecrets));
    }
    for n in &o.nodes {
        let role = match n.role {
            Role::Controlplane => "server",
            Role::Worker => "agent",
        };
        let step = match &n.seen {
            Seen::Converged => continue,
            Seen::Stopped => Step::StartService,
            Seen::Differs(why) => Step::InstallK3s {
                version: version.into(),
                role: role.into(),
                why: why.clone(),
            },
            Seen::Unreachable(why) => Step::AwaitNode {
                seen: why.clone(),
                via: "SSH".into(),
                then: format!("install k3s {version} ({role})"),
            },
        };
        actions.push(Action::new(PHASE, &n.name, step));
    }
    if !actions.is_empty() || !o.stored {
        actions.push(Action::new(PHASE, CLUSTER, Step::FetchKubeconfig));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "v1.33.1+k3s1";

    fn node(name: &str, role: Role, seen: Seen) -> NodeSeen {
        NodeSeen {
            name: name.into(),
            role,
            seen,
        }
    }

    fn steps(o: &Observation) -> Vec<(String, Step)> {
        decide(o, V).into_iter().map(|a| (a.target, a.step)).collect()
    }

    #[test]
    fn a_converged_cluster_plans_nothing_unless_its_kubeconfig_is_gone() {
        let mut o = Observation {
            secrets: true,
            nodes: vec![
                node("s1", Role::Controlplane, Seen::Converged),
                node("a1", Role::Worker, Seen::Converged),
            ],
            stored: true,
        };
        assert_eq!(steps(&o), vec![]);
        o.stored = false;
        assert_eq!(steps(&o), vec![(CLUSTER.into(), Step::FetchKubeconfig)]);
    }

    #[test]
    fn each_node_is_installed_started_or_awaited_by_what_it_has() {
        let o = Observation {
            secrets: false,
            nodes: vec![
                node("s1", Role::Controlplane, Seen::Differs("k3s not installed".into())),
                node("s2", Role::Controlplane, Seen::Stopped),
                node("a1", Role::Worker, Seen::Unreachable("no route to host".into())),
                node("a2", Role::Worker, Seen::Converged),
            ],
            stored: false,
        };
        assert_eq!(
            steps(&o),
            vec![
                (CLUSTER.into(), Step::GenerateSecrets),
                (
                    "s1".into(),
                    Step::InstallK3s {
                        version: V.into(),
                        role: "server".into(),
                        why: "k3s not installed".into()
                    }
                ),
                ("s2".into(), Step::StartService),
                (
                    "a1".into(),
                    Step::AwaitNode {
                        seen: "no route to host".into(),
                        via: "SSH".into(),
                        then: format!("install k3s {V} (agent)"),
                    }
                ),
                (CLUSTER.into(), Step::FetchKubeconfig),
            ]
        );
    }
}

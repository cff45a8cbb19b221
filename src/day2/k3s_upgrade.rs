//! `upgrade` of k3s as a phase: observe (every node ours over SSH, k3s
//! installed by bootstrap and running, every Node Ready), plan (an etcd
//! snapshot when servers move, then the servers one at a time, each cordoned,
//! reinstalled, waited for on its own `/readyz` and until its Node reports
//! the target, and uncordoned; then the agents in batches, each also drained
//! first), execute through [`super::execute`].
//!
//! The order is k3s's own (docs.k3s.io, "Manual Upgrades": servers first,
//! one at a time, then agents); the cordon of servers and the drain of
//! agents follow the system-upgrade-controller's example plans in the same
//! docs ("Automated Upgrades": `cordon: true` on the server plan, `drain` on
//! the agent plan). The node is reinstalled by phase -1's installer, so it
//! gets exactly what `up` would install: the binary the inventory pins by
//! sha256, and configs rendered for the new version.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::execute::{self, Batch, Env};
use super::upgrade::{Moves, PHASE, check_target, in_flight, recorded, rolling};
use crate::engine::{Action, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, Role};

/// The plan of a k3s upgrade to `to` (pure), from the version each node has
/// installed (`running`) and what an earlier run recorded (`done`).
pub fn plan(
    cluster: &Cluster,
    running: &BTreeMap<String, String>,
    done: &BTreeMap<String, String>,
    to: &str,
    drain_secs: u64,
) -> Vec<Action> {
    let moves = Moves {
        to,
        before: &|role| match role {
            Role::Controlplane => vec![Step::Cordon],
            Role::Worker => vec![
                Step::Cordon,
                Step::Drain {
                    timeout_secs: drain_secs,
                },
            ],
        },
        upgrade: &|from| Step::UpgradeK3s {
            from: from.to_owned(),
            to: to.to_owned(),
        },
        awaited: Step::AwaitKubelet { version: to.to_owned() },
    };
    rolling(cluster, running, done, &moves)
}

/// The k3s upgrade, as a phase of the engine.
pub struct K3sUpgrade {
    pub env: Arc<Env>,
    pub to: String,
    pub batch: Batch,
    pub drain_secs: u64,
}

#[async_trait::async_trait]
impl Phase for K3sUpgrade {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Upgrade: k3s")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let cluster = &self.env.cluster;
        let k3s = self.env.k3s().map_err(|e| execute::refusal(PHASE, e))?;
        let done = recorded(ctx).await;
        let seen = k3s.observe(cluster, &self.env.kube, ctx.concurrency).await;
        // A node an interrupted run was upgrading may be restarting: it is awaited, not refused.
        let problems: Vec<String> = seen
            .iter()
            .filter(|(n, _)| !in_flight(&done, &self.to, n))
            .flat_map(|(n, s)| s.problems(n))
            .collect();
        super::health::refuse_unless_healthy(PHASE, "upgrade", &problems)?;
        let mut running = BTreeMap::new();
        for (node, s) in &seen {
            let Ok(installed) = &s.installed else { continue };
            if installed.version != self.to {
                check_target("--k3s", &installed.version, &self.to)
                    .map_err(|e| execute::refusal(PHASE, format!("{node}: {e}; nothing was changed")))?;
                if installed.binary_current {
                    return Err(execute::refusal(
                        PHASE,
                        format!(
                            "{node} runs k3s {} from the very binary [cluster.k3s] pins now, but versions.k3s says {}: pin the {} binary (binary or binary_url with binary_sha256); nothing was changed",
                            installed.version, self.to, self.to
                        ),
                    ));
                }
            }
            running.insert(node.clone(), installed.version.clone());
        }
        Ok(plan(cluster, &running, &done, &self.to, self.drain_secs))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        execute::apply(ctx, &self.env, PHASE, &self.to, plan, self.batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::day2::testing::{cluster, kinds};

    #[test]
    fn servers_are_cordoned_agents_drained_after_a_snapshot() {
        let c = cluster("rack-k3s.toml");
        let running: BTreeMap<String, String> = c
            .nodes
            .iter()
            .map(|n| (n.name.clone(), "v1.34.2+k3s1".to_owned()))
            .collect();
        let p = plan(&c, &running, &BTreeMap::new(), "v1.35.0+k3s1", 60);
        let k = kinds(&p);
        let server = c.control_planes().next().unwrap().name.clone();
        let agent = c.nodes.iter().find(|n| n.role == Role::Worker).unwrap().name.clone();
        assert_eq!(k[0], "cluster snapshot");
        let steps_of = |node: &str| -> Vec<String> {
            k.iter()
                .filter_map(|s| s.strip_prefix(&format!("{node} ")).map(str::to_owned))
                .collect()
        };
        let moved = ["upgrade-k3s", "await-kubelet", "uncordon"];
        assert_eq!(
            steps_of(&server),
            [&["cordon"][..], &moved].concat(),
            "a server is cordoned, not drained"
        );
        assert_eq!(steps_of(&agent), [&["cordon", "drain"][..], &moved].concat());
        let last_server = k.iter().rposition(|s| s.starts_with(&server)).unwrap();
        let first_agent = k.iter().position(|s| s.starts_with(&agent)).unwrap();
        assert!(last_server < first_agent, "servers before agents: {k:?}");
        assert_eq!(p[1].step, Step::Cordon, "the snapshot comes before anything is touched");
        assert!(p.iter().any(|a| a.step
            == Step::UpgradeK3s {
                from: "v1.34.2+k3s1".into(),
                to: "v1.35.0+k3s1".into()
            }));
    }

    #[test]
    fn a_resumed_k3s_upgrade_awaits_what_was_sent_and_skips_what_is_done() {
        let c = cluster("rack-k3s.toml");
        let server = c.control_planes().next().unwrap().name.clone();
        let mut running: BTreeMap<String, String> = c
            .nodes
            .iter()
            .map(|n| (n.name.clone(), "v1.35.0+k3s1".to_owned()))
            .collect();
        // Everything at the target with nothing recorded: nothing to do.
        assert!(plan(&c, &running, &BTreeMap::new(), "v1.35.0+k3s1", 60).is_empty());
        // The server's reinstall was sent and the run killed before its wait.
        running.insert(server.clone(), "v1.34.2+k3s1".into());
        let done: BTreeMap<String, String> = [
            ("cluster".to_owned(), "v1.35.0+k3s1: snapshot".to_owned()),
            (server.clone(), "v1.35.0+k3s1: upgrade-k3s".to_owned()),
        ]
        .into_iter()
        .collect();
        let k = kinds(&plan(&c, &running, &done, "v1.35.0+k3s1", 60));
        assert_eq!(k, [format!("{server} await-kubelet"), format!("{server} uncordon")]);
    }
}

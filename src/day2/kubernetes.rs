//! `upgrade` of Kubernetes on Talos, as `talosctl upgrade-k8s` does it
//! (siderolabs/talos pkg/cluster/kubernetes: each node's machine config
//! re-applied with the new component images, mode NO_REBOOT): control planes
//! one at a time (API server, controller manager, scheduler and kubelet
//! images), then workers' kubelets in batches, each awaited until its kubelet
//! reports the target and its Node is Ready. The configs are rendered from
//! the inventory, so the target is always the inventory's
//! `versions.kubernetes` and a later `up` finds nothing to re-apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::execute::Batch;
use super::execute::{self, Env};
use super::health;
use super::upgrade::{forward_one_minor, parse_version};
use crate::engine::{Action, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, Role};

/// Phase name in state and events.
pub const PHASE: &str = "upgrade-kubernetes";

/// The version skew policy (kubernetes.io/releases/version-skew-policy):
/// kube-apiserver moves one minor at a time and never back; a kubelet is
/// never newer than the API server and at most three minors older, so no
/// kubelet may be older than `to` minus three once the API servers moved.
pub fn check_skew(server: &str, kubelets: &BTreeMap<String, String>, to: &str) -> Result<(), String> {
    let target = parse_version(to).ok_or_else(|| format!("Kubernetes `{to}`: not a version (vMAJOR.MINOR.PATCH)"))?;
    let current = parse_version(server).ok_or_else(|| format!("the API server reports `{server}`, not a version"))?;
    forward_one_minor(
        &format!("Kubernetes {to}: the API server runs {server}"),
        current,
        target,
    )?;
    for (node, v) in kubelets {
        let Some(k) = parse_version(v) else { continue };
        if k > target {
            return Err(format!("{node}: its kubelet runs {v}, newer than the target {to}"));
        }
        if k.0 != target.0 || k.1 + 3 < target.1 {
            return Err(format!(
                "{node}: its kubelet runs {v}, more than three minors behind {to}: upgrade it first"
            ));
        }
    }
    Ok(())
}

/// The plan (pure): control planes then workers whose kubelet is not `to`.
pub fn plan(cluster: &Cluster, kubelets: &BTreeMap<String, String>, to: &str) -> Vec<Action> {
    let mut out = Vec::new();
    for role in [Role::Controlplane, Role::Worker] {
        for n in cluster.nodes.iter().filter(|n| n.role == role) {
            let from = kubelets.get(&n.name).map_or("", String::as_str);
            if from == to {
                continue;
            }
            let steps = [
                Step::UpgradeKubernetes {
                    from: from.to_owned(),
                    to: to.to_owned(),
                },
                Step::AwaitKubelet { version: to.to_owned() },
            ];
            out.extend(steps.into_iter().map(|s| Action::new(PHASE, &n.name, s)));
        }
    }
    out
}

/// The Kubernetes upgrade, as a phase of the engine (after the Talos OS one).
pub struct KubernetesUpgrade {
    pub env: Arc<Env>,
    pub batch: Batch,
}

#[async_trait::async_trait]
impl Phase for KubernetesUpgrade {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Upgrade: Kubernetes")
    }

    async fn plan(&self, _ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let cluster = &self.env.cluster;
        let to = &cluster.versions.kubernetes;
        let seen = health::observe(
            cluster,
            self.env.creds().map_err(|e| execute::refusal(PHASE, e))?,
            &self.env.kube,
        )
        .await;
        let kubelets: BTreeMap<String, String> = seen
            .nodes
            .iter()
            .filter_map(|(n, s)| s.node.as_ref().map(|(v, _)| (n.clone(), v.clone())))
            .collect();
        if kubelets.len() == cluster.nodes.len() && kubelets.values().all(|v| v == to) {
            return Ok(Vec::new());
        }
        let problems = seen.problems(cluster, &[]);
        health::refuse_unless_healthy(PHASE, "upgrade Kubernetes", &problems)?;
        let server = self.env.kube.server_version().await.map_err(|e| {
            execute::refusal(
                PHASE,
                format!("reading the API server's version: {e}; nothing was changed"),
            )
        })?;
        check_skew(&server, &kubelets, to)
            .map_err(|e| execute::refusal(PHASE, format!("refusing: {e}; nothing was changed")))?;
        Ok(plan(cluster, &kubelets, to))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        let to = &self.env.cluster.versions.kubernetes;
        execute::apply(ctx, &self.env, PHASE, to, plan, self.batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelets(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn control_planes_then_workers_each_reapplied_and_awaited_unless_already_at_the_version() {
        let c = crate::day2::testing::cluster("simulated.toml");
        let mut seen: BTreeMap<String, String> = c.nodes.iter().map(|n| (n.name.clone(), "v1.34.2".into())).collect();
        let worker = c.nodes.iter().find(|n| n.role == Role::Worker).unwrap().name.clone();
        seen.insert(worker.clone(), "v1.35.0".into());
        let p = plan(&c, &seen, "v1.35.0");
        let cps = c.control_planes().count();
        let workers = c.nodes.len() - cps;
        assert_eq!(p.len(), 2 * (cps + workers - 1), "every node but {worker}: {p:?}");
        assert!(
            !p.iter().any(|a| a.target == worker),
            "a node at the version is left alone"
        );
        for pair in p.chunks(2) {
            assert_eq!(pair[0].target, pair[1].target);
            assert_eq!(
                pair[0].step,
                Step::UpgradeKubernetes {
                    from: "v1.34.2".into(),
                    to: "v1.35.0".into()
                }
            );
            assert_eq!(
                pair[1].step,
                Step::AwaitKubelet {
                    version: "v1.35.0".into()
                }
            );
        }
        let role = |a: &Action| c.node(&a.target).unwrap().role;
        assert!(
            p[..2 * cps].iter().all(|a| role(a) == Role::Controlplane),
            "control planes first"
        );
        assert!(
            plan(
                &c,
                &BTreeMap::from_iter(c.nodes.iter().map(|n| (n.name.clone(), "v1.35.0".to_owned()))),
                "v1.35.0"
            )
            .is_empty()
        );
    }

    #[test]
    fn the_version_skew_policy_is_enforced() {
        let all = kubelets(&[("cp-1", "v1.34.2"), ("worker-1", "v1.34.2")]);
        assert!(check_skew("v1.34.2", &all, "v1.35.0").is_ok());
        assert!(check_skew("v1.34.2", &all, "v1.34.5").is_ok());
        let skip = check_skew("v1.34.2", &all, "v1.36.0").unwrap_err();
        assert!(skip.contains("one minor release at a time (v1.35.x first)"), "{skip}");
        assert!(
            check_skew("v1.34.2", &all, "v1.33.0")
                .unwrap_err()
                .contains("downgrade")
        );
        let old = kubelets(&[("worker-9", "v1.31.4")]);
        let err = check_skew("v1.34.2", &old, "v1.35.0").unwrap_err();
        assert!(
            err.starts_with("worker-9: its kubelet runs v1.31.4, more than three minors"),
            "{err}"
        );
        assert!(
            check_skew("v1.34.2", &kubelets(&[("w", "v1.35.1")]), "v1.35.0")
                .unwrap_err()
                .contains("newer")
        );
        assert!(
            check_skew("v1.34.2", &all, "1.35")
                .unwrap_err()
                .contains("not a version")
        );
    }
}

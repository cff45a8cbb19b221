//! The executor of phases 0-3: carries out the steps of the plan it is
//! handed, in order, and nothing else. Consecutive `ApplyObject`s are applied
//! together (server-side, Namespaces first, CRDs waited Established);
//! consecutive waits run at once, the Nodes among them in one watch; a Git
//! host key accepted new is pinned in the state dir.

use std::time::Duration;

use serde_json::Value;

use super::{ClusterRun, git_host, objects};
use crate::engine::{Action, CLUSTER, ObjectRef, PhaseError, RunCtx, Step};
use crate::k8s::{self, Client, wait};

/// Steps carried out together.
#[derive(Debug, PartialEq)]
enum Group<'a> {
    Pin { line: &'a str, fingerprint: &'a str },
    Apply(Vec<&'a Value>),
    Nodes(Vec<&'a str>),
    Waits(Vec<&'a Step>),
}

/// The plan's steps as groups, in order; a step no group takes is returned
/// as the error (it belongs to another phase's executor).
fn groups(plan: &[Action]) -> Result<Vec<Group<'_>>, &Step> {
    let mut out: Vec<Group> = vec![];
    for a in plan {
        match (&a.step, out.last_mut()) {
            (Step::PinGitHostKey { line, fingerprint }, _) => out.push(Group::Pin { line, fingerprint }),
            (Step::ApplyObject { object, .. }, Some(Group::Apply(objs))) => objs.push(object.object()),
            (Step::ApplyObject { object, .. }, _) => out.push(Group::Apply(vec![object.object()])),
            (Step::AwaitReady { object }, Some(Group::Nodes(names))) if object.kind == "Node" => {
                names.push(&object.name)
            }
            (Step::AwaitReady { object }, _) if object.kind == "Node" => out.push(Group::Nodes(vec![&object.name])),
            (s @ (Step::AwaitReady { .. } | Step::AwaitEstablished { .. } | Step::AwaitGitops { .. }), last) => {
                match last {
                    Some(Group::Waits(waits)) => waits.push(s),
                    _ => out.push(Group::Waits(vec![s])),
                }
            }
            (other, _) => return Err(other),
        }
    }
    Ok(out)
}

/// How long one wait may take.
fn budget(run: &ClusterRun, step: &Step) -> Duration {
    match step {
        Step::AwaitGitops { .. } => run.timeouts.gitops,
        _ => run.timeouts.workload,
    }
}

async fn wait_for(client: &Client, step: &Step, timeout: Duration) -> Result<(), k8s::Error> {
    let o: &ObjectRef = match step {
        Step::AwaitEstablished { crd } => return wait::crd_established(client, crd, timeout).await,
        Step::AwaitReady { object } => object,
        Step::AwaitGitops { root } => root,
        _ => unreachable!("groups() puts only waits in Group::Waits"),
    };
    let ns = o.namespace.as_deref();
    wait::ready(client, &o.api_version, &o.kind, ns, &o.name, timeout).await
}

/// Carries out `plan` (phase `phase`'s, as its `plan` returned it).
pub async fn run(run: &ClusterRun, ctx: &RunCtx, phase: &str, plan: &[Action]) -> Result<(), PhaseError> {
    let groups = groups(plan).map_err(|s| run.failed(phase, format!("no executor for step {s:?} in phase {phase}")))?;
    let needs_api = groups.iter().any(|g| !matches!(g, Group::Pin { .. }));
    let client = match needs_api {
        true => Some(run.kube(ctx).await?),
        false => None,
    };
    let failed = |e: k8s::Error| run.failed(phase, e);
    for group in groups {
        let client = || client.as_ref().expect("a client for API steps");
        match group {
            Group::Pin { line, fingerprint } => {
                git_host::pin(&run.cluster_dir(), line, fingerprint).map_err(|e| run.failed(phase, e))?;
            }
            Group::Apply(objs) => {
                ctx.step(phase, CLUSTER, &format!("applying {} object(s)", objs.len()));
                objects::apply(client(), &objs, run.timeouts.workload)
                    .await
                    .map_err(failed)?;
                ctx.record(phase, CLUSTER, "applied").await?;
            }
            Group::Nodes(names) => {
                ctx.step(
                    phase,
                    CLUSTER,
                    &format!("waiting for {} Node(s) to be Ready", names.len()),
                );
                wait::nodes_ready(client(), &names, run.timeouts.workload)
                    .await
                    .map_err(failed)?;
            }
            Group::Waits(steps) => {
                let what = match steps.as_slice() {
                    [one] => one.to_string(),
                    many => format!("waiting for {} object(s) to be ready", many.len()),
                };
                ctx.step(phase, CLUSTER, &what);
                let waits = steps.iter().map(|s| wait_for(client(), s, budget(run, s)));
                let results = futures::future::join_all(waits).await;
                results.into_iter().collect::<Result<Vec<()>, _>>().map_err(failed)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::Manifest;

    fn act(step: Step) -> Action {
        Action::new("core", CLUSTER, step)
    }

    fn apply(name: &str) -> Step {
        Step::ApplyObject {
            change: format!("create ConfigMap x/{name}"),
            object: Manifest::new(json!({"kind": "ConfigMap", "metadata": {"name": name}})),
        }
    }

    fn ready(kind: &str, name: &str) -> Step {
        Step::AwaitReady {
            object: ObjectRef::new("v1", kind, None, name),
        }
    }

    #[test]
    fn consecutive_steps_of_a_kind_are_carried_out_together_in_plan_order() {
        let plan: Vec<Action> = [
            Step::PinGitHostKey {
                line: "git.example ssh-ed25519 AAAA".into(),
                fingerprint: "SHA256:x".into(),
            },
            apply("a"),
            apply("b"),
            ready("DaemonSet", "cilium"),
            ready("Node", "n1"),
            ready("Node", "n2"),
            ready("Deployment", "d"),
            Step::AwaitEstablished {
                crd: "x.cilium.io".into(),
            },
            apply("pool"),
        ]
        .into_iter()
        .map(act)
        .collect();
        let g = groups(&plan).unwrap();
        assert_eq!(g.len(), 6, "{g:#?}");
        assert!(matches!(
            g[0],
            Group::Pin {
                fingerprint: "SHA256:x",
                ..
            }
        ));
        assert!(matches!(&g[1], Group::Apply(o) if o.len() == 2));
        assert!(
            matches!(&g[2], Group::Waits(w) if w.len() == 1),
            "the CNI before the Nodes"
        );
        assert_eq!(g[3], Group::Nodes(vec!["n1", "n2"]));
        assert!(
            matches!(&g[4], Group::Waits(w) if w.len() == 2),
            "workloads and CRDs at once"
        );
        assert!(matches!(&g[5], Group::Apply(o) if o[0]["metadata"]["name"] == "pool"));
    }

    #[test]
    fn a_step_of_another_phase_is_refused() {
        let plan = [act(apply("a")), act(Step::BootstrapEtcd { node: "cp-1".into() })];
        assert_eq!(groups(&plan).unwrap_err(), &Step::BootstrapEtcd { node: "cp-1".into() });
    }
}

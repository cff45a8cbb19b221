//! Phase 1: the CRDs of Flux's pinned upstream manifest (compiled in, see
//! [`flux`]) and of `phases/crds.toml`, each file pinned by sha256 and
//! taken from the artifact store (`--artifacts DIR`, the cache, or fetched
//! once; with `--artifacts` nothing is ever downloaded), applied server-side
//! and waited for until Established. Every file is read and verified before
//! anything is applied, so a missing or tampered file changes nothing.

use std::sync::Arc;

use serde_json::Value;

use super::{ClusterRun, catalog, execute, flux, objects};
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx, Step};
use crate::k8s;

const PHASE: &str = "crds";

/// Phase 1: CRDs.
pub struct Crds {
    run: Arc<ClusterRun>,
}

impl Crds {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    /// The objects of one pinned source, verified; `None` when it is not on
    /// disk and `fetch` is false (a plan never downloads).
    async fn source(&self, source: &catalog::CrdSource, fetch: bool) -> Result<Option<Vec<Value>>, PhaseError> {
        let what = describe(source);
        let pinned = source.pinned(self.run.artifacts.offline.is_some());
        let local = match fetch {
            true => Some(self.run.artifacts.get(&pinned).await),
            false => self.run.artifacts.local(&pinned).transpose(),
        };
        let Some(local) = local else { return Ok(None) };
        let path = local.map_err(|e| self.failed(format!("{what}: {e}")))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.failed(format!("{what}: cannot read {}: {e}", path.display())))?;
        let docs = k8s::parse_manifests(&text).map_err(|e| self.failed(format!("{what}: {e}")))?;
        for doc in docs.iter().filter(|d| d["kind"] != "CustomResourceDefinition") {
            // Pinned files may carry other objects (e.g. a ValidatingAdmissionPolicy).
            tracing::debug!("{what}: applying {} as well", objects::describe(doc));
        }
        Ok(Some(docs.into_iter().map(objects::labelled).collect()))
    }

    /// Every CRD of every pinned source on disk, then Flux's (compiled in),
    /// and a fetch step for each source not on disk yet.
    async fn desired(&self) -> Result<(Vec<Value>, Vec<Step>), PhaseError> {
        let (mut out, mut fetches) = (vec![], vec![]);
        for source in catalog::crds().sources {
            match self.source(&source, false).await? {
                Some(objs) => out.extend(objs),
                None => fetches.push(Step::FetchArtifact {
                    what: describe(&source),
                    sha256: source.pinned(self.run.artifacts.offline.is_some()).sha256,
                }),
            }
        }
        out.extend(flux::crds(&self.run.cluster));
        Ok((out, fetches))
    }

    /// What differs of `desired` and which of its CRDs are Established (reads only).
    async fn observe(&self, client: Option<&k8s::Client>, desired: &[Value]) -> Result<objects::Observed, PhaseError> {
        let crds: Vec<Value> = desired.iter().filter(|o| is_crd(o)).cloned().collect();
        objects::observe(client, desired.to_vec(), crds)
            .await
            .map_err(|e| self.failed(e))
    }
}

fn is_crd(obj: &Value) -> bool {
    obj["kind"] == "CustomResourceDefinition"
}

/// The plan, pure: a fetch for each source not on disk yet, each object of
/// `desired` missing or different applied, then each CRD applied now,
/// missing or not Established waited for.
fn decide(fetches: Vec<Step>, desired: &[Value], observed: &objects::Observed) -> Vec<Action> {
    let mut actions: Vec<Action> = fetches.into_iter().map(|s| Action::new(PHASE, CLUSTER, s)).collect();
    actions.extend(observed.actions(PHASE, None));
    for crd in desired.iter().filter(|o| is_crd(o) && observed.needs_wait(o)) {
        let crd = crd["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        actions.push(Action::new(PHASE, CLUSTER, Step::AwaitEstablished { crd }));
    }
    actions
}

/// `CRD source NAME VERSION (FILE)`: how a plan names a pinned source.
fn describe(source: &catalog::CrdSource) -> String {
    format!("CRD source {} {} ({})", source.name, source.version, source.file)
}

#[async_trait::async_trait]
impl Phase for Crds {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase 1: CRDs")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let (desired, fetches) = self.desired().await?;
        let client = objects::client_if_up(&self.run, ctx).await?;
        let observed = self.observe(client.as_ref(), &desired).await?;
        Ok(decide(fetches, &desired, &observed))
    }

    /// A fetch step downloads its source (verified by sha256) and adds the
    /// steps for what it holds; every file is fetched and verified before
    /// anything is applied.
    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        let mut fetched = vec![];
        for source in catalog::crds().sources {
            let sha256 = source.pinned(self.run.artifacts.offline.is_some()).sha256;
            if plan
                .iter()
                .any(|a| matches!(&a.step, Step::FetchArtifact { sha256: s, .. } if *s == sha256))
            {
                ctx.step(PHASE, CLUSTER, &format!("fetching {}", describe(&source)));
                fetched.extend(self.source(&source, true).await?.unwrap_or_default());
            }
        }
        let mut steps: Vec<Action> = plan
            .iter()
            .filter(|a| !matches!(a.step, Step::FetchArtifact { .. }))
            .cloned()
            .collect();
        if !fetched.is_empty() {
            let client = self.run.kube(ctx).await?;
            let observed = self.observe(Some(&client), &fetched).await?;
            let more = decide(vec![], &fetched, &observed);
            // Their objects go with the plan's applies, their waits after them.
            let (applies, waits): (Vec<Action>, Vec<Action>) = more
                .into_iter()
                .partition(|a| matches!(a.step, Step::ApplyObject { .. }));
            let at = steps
                .iter()
                .take_while(|a| matches!(a.step, Step::ApplyObject { .. }))
                .count();
            steps.splice(at..at, applies);
            steps.extend(waits);
        }
        execute::run(&self.run, ctx, PHASE, &steps).await?;
        ctx.record(PHASE, CLUSTER, "established").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ObjectRef;
    use crate::inventory::example;
    use crate::phases::no_api;

    fn shape(plan: &[Action]) -> String {
        let mut out: Vec<char> = plan
            .iter()
            .map(|a| match a.step {
                Step::FetchArtifact { .. } => 'F',
                Step::ApplyObject { .. } => 'A',
                Step::AwaitEstablished { .. } => 'E',
                ref other => panic!("phase 1 plans no {other:?}"),
            })
            .collect();
        out.dedup();
        out.into_iter().collect()
    }

    #[test]
    fn fetches_then_applies_then_every_crd_not_established_is_waited_for() {
        let desired = flux::crds(&example("simulated.toml"));
        let crds = desired.iter().filter(|o| is_crd(o)).count();
        let fetch = Step::FetchArtifact {
            what: "CRD source gateway-api v1.3.0 (standard-install.yaml)".into(),
            sha256: "ab".repeat(32),
        };
        let plan = decide(vec![fetch.clone()], &desired, &no_api(&desired));
        assert_eq!(shape(&plan), "FAE");
        assert_eq!(plan[0].step, fetch);
        let waits = plan.iter().filter(|a| matches!(a.step, Step::AwaitEstablished { .. }));
        assert_eq!(waits.count(), crds);

        let mut converged = objects::Observed {
            changes: vec![],
            ready: desired.iter().map(ObjectRef::of).collect(),
        };
        assert!(decide(vec![], &desired, &converged).is_empty());
        // A changed CRD is waited for again, even though it was Established.
        converged.changes.push(objects::Pending {
            obj: desired[0].clone(),
            what: "update CustomResourceDefinition (spec.versions)".into(),
        });
        let plan = decide(vec![], &desired, &converged);
        assert_eq!(shape(&plan), "AE");
        assert_eq!(plan.len(), 2);
    }
}

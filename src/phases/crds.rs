//! Phase 1: the CRDs of Flux's pinned upstream manifest (compiled in, see
//! [`flux`]) and of `phases/crds.toml`, each file pinned by sha256 and
//! taken from the artifact store (`--artifacts DIR`, the cache, or fetched
//! once; with `--artifacts` nothing is ever downloaded), applied server-side
//! and waited for until Established. Every file is read and verified before
//! anything is applied, so a missing or tampered file changes nothing.

use std::sync::Arc;

use serde_json::Value;

use super::{ClusterRun, catalog, flux, objects};
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx, Step};
use crate::k8s::{self, wait};

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

    /// Every CRD of every pinned source, verified; with `fetch` false (plan)
    /// sources not on disk yet are not downloaded but returned as steps.
    async fn desired(&self, fetch: bool) -> Result<(Vec<Value>, Vec<Step>), PhaseError> {
        let offline = self.run.artifacts.offline.is_some();
        let (mut out, mut fetches) = (vec![], vec![]);
        for source in catalog::crds().sources {
            let what = format!("CRD source {} {} ({})", source.name, source.version, source.file);
            let pinned = source.pinned(offline);
            let local = match fetch {
                true => Some(self.run.artifacts.get(&pinned).await),
                false => self.run.artifacts.local(&pinned).transpose(),
            };
            let Some(local) = local else {
                fetches.push(Step::FetchArtifact {
                    what,
                    sha256: pinned.sha256.clone(),
                });
                continue;
            };
            let path = local.map_err(|e| self.failed(format!("{what}: {e}")))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| self.failed(format!("{what}: cannot read {}: {e}", path.display())))?;
            let docs = k8s::parse_manifests(&text).map_err(|e| self.failed(format!("{what}: {e}")))?;
            for doc in docs {
                if doc["kind"] != "CustomResourceDefinition" {
                    // Pinned files may carry other objects (e.g. a ValidatingAdmissionPolicy).
                    tracing::debug!("{what}: applying {} as well", objects::describe(&doc));
                }
                out.push(objects::labelled(doc));
            }
        }
        // Flux's CRDs come with its pinned upstream manifest, compiled in.
        out.extend(flux::crds(&self.run.cluster));
        Ok((out, fetches))
    }

    /// CRD names of `desired` that exist but are not Established yet.
    async fn not_established(&self, client: &k8s::Client, desired: &[Value]) -> Result<Vec<String>, PhaseError> {
        let mut out = vec![];
        for crd in desired.iter().filter(|o| o["kind"] == "CustomResourceDefinition") {
            if let Some(live) = objects::get(client, crd).await.map_err(|e| self.failed(e))?
                && !objects::is_ready(&live)
            {
                out.push(crd["metadata"]["name"].as_str().unwrap_or_default().to_owned());
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Phase for Crds {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase 1: CRDs")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let (desired, fetches) = self.desired(false).await?;
        let (client, mut actions) = objects::plan(&self.run, ctx, PHASE, desired.clone()).await?;
        actions.splice(0..0, fetches.into_iter().map(|s| Action::new(PHASE, CLUSTER, s)));
        let Some(client) = client else {
            return Ok(actions);
        };
        for name in self.not_established(&client, &desired).await? {
            actions.push(Action::new(PHASE, CLUSTER, Step::AwaitEstablished { crd: name }));
        }
        Ok(actions)
    }

    async fn apply(&self, ctx: &RunCtx, _plan: &[Action]) -> Result<(), PhaseError> {
        let (desired, _) = self.desired(true).await?;
        let client = self.run.kube(ctx).await?;
        ctx.step(PHASE, CLUSTER, "comparing CRDs");
        let pending = objects::pending(&client, desired.clone())
            .await
            .map_err(|e| self.failed(e))?;
        ctx.step(PHASE, CLUSTER, &format!("applying {} object(s)", pending.len()));
        let timeout = self.run.timeouts.workload;
        objects::apply(&client, &pending, timeout)
            .await
            .map_err(|e| self.failed(e))?;
        ctx.step(PHASE, CLUSTER, "waiting for CRDs to be Established");
        for crd in desired.iter().filter(|o| o["kind"] == "CustomResourceDefinition") {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            wait::crd_established(&client, name, timeout)
                .await
                .map_err(|e| self.failed(e))?;
        }
        ctx.record(PHASE, CLUSTER, "established").await?;
        Ok(())
    }
}

//! Phase 0: the namespaces of `phases/prerequisites.toml`, then the seed
//! secrets later phases and the GitOps engine read (SOPS age key, 1Password
//! Connect token, Vault token, Git deploy key), each from its inventory
//! reference; a reference that is not set is skipped. Values go to the API
//! only: plans and errors name objects and fields, never values.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::catalog::{self, SeedSecret};
use super::{ClusterRun, objects};
use crate::engine::{Action, Phase, PhaseError, RunCtx};
use crate::secret::SecretRef;

const PHASE: &str = "prerequisites";

/// Phase 0: namespaces and seed secrets.
pub struct Prerequisites {
    run: Arc<ClusterRun>,
}

impl Prerequisites {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    /// The inventory reference a seed secret is filled from, if set.
    fn reference(&self, s: &SeedSecret) -> Result<Option<&SecretRef>, PhaseError> {
        let c = &self.run.cluster;
        Ok(match s.from.as_str() {
            "sops_age_key" => c.secrets.sops_age_key.as_ref(),
            "onepassword_token" => c.secrets.onepassword_token.as_ref(),
            "vault_token" => c.secrets.vault_token.as_ref(),
            "deploy_key" => c.gitops.as_ref().and_then(|g| g.deploy_key.as_ref()),
            other => {
                return Err(self.failed(format!(
                    "phases/prerequisites.toml: secret {}/{} comes from unknown reference {other:?}",
                    s.namespace, s.name
                )));
            }
        })
    }

    /// Namespaces, then one Secret per set reference (values resolved).
    fn desired(&self) -> Result<Vec<Value>, PhaseError> {
        let data = catalog::prerequisites();
        let mut out: Vec<Value> = data
            .namespaces
            .iter()
            .map(|ns| objects::labelled(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})))
            .collect();
        for s in &data.secrets {
            let Some(reference) = self.reference(s)? else {
                tracing::debug!("secret {}/{}: {} is not set, skipped", s.namespace, s.name, s.from);
                continue;
            };
            let value = reference
                .resolve()
                .map_err(|e| self.failed(format!("secret {}/{}: {e}", s.namespace, s.name)))?;
            let mut data = serde_json::Map::new();
            data.insert(
                s.key.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(value.expose())),
            );
            out.push(objects::labelled(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "type": "Opaque",
                "data": data,
            })));
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Phase for Prerequisites {
    fn name(&self) -> &'static str {
        PHASE
    }

    fn title(&self) -> &'static str {
        "Phase 0: prerequisites"
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let desired = self.desired()?;
        Ok(objects::plan(&self.run, ctx, PHASE, desired).await?.1)
    }

    async fn apply(&self, ctx: &RunCtx, _plan: &[Action]) -> Result<(), PhaseError> {
        let client = self.run.kube(ctx).await?;
        ctx.step(PHASE, crate::engine::CLUSTER, "observing namespaces and secrets");
        let pending = objects::pending(&client, self.desired()?)
            .await
            .map_err(|e| self.failed(e))?;
        ctx.step(PHASE, crate::engine::CLUSTER, "applying namespaces and secrets");
        objects::apply(&client, &pending, self.run.timeouts.workload)
            .await
            .map_err(|e| self.failed(e))?;
        ctx.record(PHASE, crate::engine::CLUSTER, "applied").await?;
        Ok(())
    }
}

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
use crate::inventory::Cluster;
use crate::secret::SecretRef;

const PHASE: &str = "prerequisites";

/// The inventory reference seed secret `s` is filled from, if set.
fn reference<'a>(c: &'a Cluster, s: &SeedSecret) -> Result<Option<&'a SecretRef>, String> {
    Ok(match s.from.as_str() {
        "sops_age_key" => c.secrets.sops_age_key.as_ref(),
        "onepassword_token" => c.secrets.onepassword_token.as_ref(),
        "vault_token" => c.secrets.vault_token.as_ref(),
        "deploy_key" => c.gitops.as_ref().and_then(|g| g.deploy_key.as_ref()),
        other => {
            return Err(format!(
                "phases/prerequisites.toml: secret {}/{} comes from unknown reference {other:?}",
                s.namespace, s.name
            ));
        }
    })
}

/// Resolves every seed-secret reference of `cluster` (env, file, SOPS) and
/// reports all that fail, so `up` can refuse before phase -1 touches a node.
pub fn preflight(cluster: &Cluster) -> Result<(), String> {
    let mut failures = Vec::new();
    for s in &catalog::prerequisites().secrets {
        match reference(cluster, s) {
            Ok(Some(r)) => {
                if let Err(e) = r.resolve() {
                    failures.push(format!("secret {}/{}: {e}", s.namespace, s.name));
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; nothing was changed", failures.join("; ")))
    }
}

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
        reference(&self.run.cluster, s).map_err(|e| self.failed(e))
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

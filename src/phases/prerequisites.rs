//! Phase 0: the namespaces of `phases/prerequisites.toml` (Flux's with the
//! labels of its upstream manifest), then the seed secrets later phases and
//! the GitOps engine read (SOPS age key, 1Password Connect token, Vault token,
//! Git deploy key with its public key and the Git host's known_hosts, see
//! [`git_host`]), each from its inventory reference; a reference that is not
//! set is skipped. Values go to the API
//! only: plans and errors name objects and fields, never values.

use std::sync::Arc;

use serde_json::{Value, json};

use super::catalog::{self, SeedSecret};
use super::objects::Values;
use super::{ClusterRun, execute, flux, git_host, objects};
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx, Step};
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
            Ok(Some(r)) => match r.resolve() {
                Err(e) => failures.push(format!("secret {}/{}: {e}", s.namespace, s.name)),
                // A key phase 0 derives a public key from must parse now, not after phase -1.
                Ok(value) if s.public_key.is_some() => {
                    if let Err(e) = public_key(value.expose()) {
                        failures.push(format!("secret {}/{}: {} ({r}): {e}", s.namespace, s.name, s.from));
                    }
                }
                Ok(_) => {}
            },
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

/// Whether some seed secret needs the Git host's known_hosts (a deploy key
/// for an SSH repository).
pub fn needs_known_hosts(cluster: &Cluster) -> bool {
    let ssh = cluster.gitops.as_ref().is_some_and(|g| g.ssh_host().is_some());
    ssh && catalog::prerequisites()
        .secrets
        .iter()
        .any(|s| s.known_hosts.is_some() && matches!(reference(cluster, s), Ok(Some(_))))
}

/// `ssh-ed25519 AAAA...` (no comment, newline-terminated, as
/// `ssh.MarshalAuthorizedKey` writes `identity.pub`) of an OpenSSH private key.
fn public_key(private: &str) -> Result<String, String> {
    let key = russh::keys::decode_secret_key(private, None)
        .map_err(|e| format!("not an unencrypted OpenSSH private key ({e})"))?;
    let plain = russh::keys::PublicKey::new(key.public_key().key_data().clone(), "");
    let text = plain.to_openssh().map_err(|e| e.to_string())?;
    Ok(format!("{}\n", text.trim()))
}

/// Phase 0's objects: the namespaces (Flux's as its upstream manifest has it),
/// then one Secret per set reference, filled as `values` says.
pub fn desired_objects(cluster: &Cluster, values: Values) -> Result<Vec<Value>, String> {
    let data = catalog::prerequisites();
    let mut out = vec![];
    for ns in &data.namespaces {
        if ns == flux::namespace_name() {
            out.extend(flux::namespace(cluster));
        } else {
            out.push(objects::labelled(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ));
        }
    }
    let ssh = cluster.gitops.as_ref().is_some_and(|g| g.ssh_host().is_some());
    for s in &data.secrets {
        let Some(reference) = reference(cluster, s)? else {
            tracing::debug!("secret {}/{}: {} is not set, skipped", s.namespace, s.name, s.from);
            continue;
        };
        let what = format!("secret {}/{}", s.namespace, s.name);
        let mut fields: Vec<(String, Option<String>)> = vec![];
        match values {
            Values::Placeholder => {
                fields.push((s.key.clone(), None));
                fields.extend(s.public_key.iter().map(|k| (k.clone(), None)));
                fields.extend(s.known_hosts.iter().filter(|_| ssh).map(|k| (k.clone(), None)));
            }
            Values::Resolved { known_hosts } => {
                let value = reference.resolve().map_err(|e| format!("{what}: {e}"))?;
                if let Some(k) = &s.public_key {
                    let line =
                        public_key(value.expose()).map_err(|e| format!("{what}: {} ({reference}): {e}", s.from))?;
                    fields.push((k.clone(), Some(line)));
                }
                if let (Some(k), true) = (&s.known_hosts, ssh) {
                    let text = known_hosts.ok_or_else(|| format!("{what}: the Git host's known_hosts is missing"))?;
                    fields.push((k.clone(), Some(text.to_owned())));
                }
                fields.insert(0, (s.key.clone(), Some(value.expose().to_owned())));
            }
        }
        out.push(objects::secret(&s.namespace, &s.name, json!({}), fields));
    }
    Ok(out)
}

impl Prerequisites {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    /// Namespaces, then one Secret per set reference (values resolved), and
    /// the Git host's key when a Secret needs it (verified, never pinned here).
    async fn desired(&self) -> Result<(Vec<Value>, Option<git_host::HostKey>), PhaseError> {
        let c = &self.run.cluster;
        let host_key = if needs_known_hosts(c) {
            git_host::known_hosts(c, &self.run.cluster_dir(), self.run.accept_new)
                .await
                .map_err(|e| self.failed(e))?
        } else {
            None
        };
        let values = Values::Resolved {
            known_hosts: host_key.as_ref().map(|k| k.text.as_str()),
        };
        let objs = desired_objects(c, values).map_err(|e| self.failed(e))?;
        Ok((objs, host_key))
    }
}

/// The plan, pure: the Git host's key pinned (when accepted new) before the
/// Secret holding it is applied, then each object missing or different.
fn decide(host_key: Option<&git_host::HostKey>, observed: &objects::Observed) -> Vec<Action> {
    let pin = host_key.and_then(|k| k.accepted.clone()).map(|a| {
        let step = Step::PinGitHostKey {
            line: a.line,
            fingerprint: a.fingerprint,
        };
        Action::new(PHASE, CLUSTER, step)
    });
    pin.into_iter().chain(observed.actions(PHASE, None)).collect()
}

#[async_trait::async_trait]
impl Phase for Prerequisites {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase 0: prerequisites")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let (desired, host_key) = self.desired().await?;
        let client = objects::client_if_up(&self.run, ctx).await?;
        let observed = objects::observe(client.as_ref(), desired, vec![])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(decide(host_key.as_ref(), &observed))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        execute::run(&self.run, ctx, PHASE, plan).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::example;
    use crate::phases::no_api;

    #[test]
    fn a_git_host_key_accepted_new_is_pinned_before_any_object_is_applied() {
        let desired = desired_objects(&example("simulated.toml"), Values::Placeholder).unwrap();
        let accepted = git_host::Accepted {
            line: "git.sim.invalid ssh-ed25519 AAAA".into(),
            fingerprint: "SHA256:abc".into(),
        };
        let key = git_host::HostKey {
            text: format!("{}\n", accepted.line),
            accepted: Some(accepted),
        };
        let plan = decide(Some(&key), &no_api(&desired));
        assert_eq!(
            plan[0].step,
            Step::PinGitHostKey {
                line: "git.sim.invalid ssh-ed25519 AAAA".into(),
                fingerprint: "SHA256:abc".into()
            }
        );
        assert_eq!(plan.len(), desired.len() + 1);
        assert!(plan[1..].iter().all(|a| matches!(a.step, Step::ApplyObject { .. })));
        let pinned = git_host::HostKey { accepted: None, ..key };
        assert_eq!(decide(Some(&pinned), &no_api(&desired)).len(), desired.len());
        assert!(decide(Some(&pinned), &objects::Observed::default()).is_empty());
    }
}

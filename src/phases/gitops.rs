//! Phase 3: GitOps takeover. Flux: a GitRepository (authenticated with the
//! deploy-key secret of phase 0) and the root Kustomization (decrypting SOPS
//! with the `sops-age` secret), both named `flux-system` like `flux bootstrap`
//! names them, so the repository's own definitions adopt them. Argo CD: the
//! repository credentials and a root Application. Then it waits until the root
//! reports Ready (Healthy) and steps back: from here on the repository drives
//! the cluster, and objects Flux or Argo CD manage are never touched again.

use std::sync::Arc;

use serde_json::{Value, json};

use super::objects::{self, Values};
use super::{ClusterRun, execute};
use crate::engine::{Action, CLUSTER, ObjectRef, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, Gitops as GitopsSettings, GitopsEngine};

const PHASE: &str = "gitops";
/// Name of Flux's GitRepository and root Kustomization.
pub const FLUX_ROOT: &str = "flux-system";
/// Name of Argo CD's root Application.
pub const ARGO_ROOT: &str = "root";
const FLUX_NS: &str = "flux-system";
const ARGO_NS: &str = "argocd";
/// Argo CD's Application CRD (its chart brings it in phase 2).
const ARGO_CRD: &str = "applications.argoproj.io";

/// The command an operator runs to watch the GitOps root reconcile.
pub fn watch_hint(cluster: &Cluster) -> String {
    match cluster.gitops.as_ref().map(|g| g.engine) {
        Some(GitopsEngine::Argocd) => format!("kubectl --namespace {ARGO_NS} get application {ARGO_ROOT} --watch"),
        Some(GitopsEngine::Flux) => "flux get kustomizations --all-namespaces --watch".to_owned(),
        None => format!(
            "cluster {} has no [cluster.gitops]: nothing reconciles it",
            cluster.name
        ),
    }
}

fn flux(cluster: &Cluster, g: &GitopsSettings) -> Vec<Value> {
    let mut repo = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": FLUX_ROOT, "namespace": FLUX_NS},
        "spec": {"interval": "1m", "url": g.repository, "ref": {"branch": g.branch}},
    });
    if g.deploy_key.is_some() {
        // Phase 0 stored the deploy key in flux-system/flux-system.
        repo["spec"]["secretRef"] = json!({"name": FLUX_ROOT});
    }
    let mut root = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": FLUX_ROOT, "namespace": FLUX_NS},
        "spec": {
            "interval": "10m",
            "path": g.path,
            "prune": true,
            "sourceRef": {"kind": "GitRepository", "name": FLUX_ROOT},
        },
    });
    super::network::substitute_from(&mut root);
    if cluster.secrets.sops_age_key.is_some() {
        root["spec"]["decryption"] = json!({"provider": "sops", "secretRef": {"name": "sops-age"}});
    }
    vec![objects::labelled(repo), objects::labelled(root)]
}

fn argocd(g: &GitopsSettings, values: Values) -> Result<Vec<Value>, String> {
    let mut out = vec![];
    if let Some(key) = &g.deploy_key {
        let key = match values {
            Values::Placeholder => None,
            Values::Resolved { .. } => Some(
                key.resolve()
                    .map_err(|e| format!("Argo CD repository credentials: {e}"))?
                    .expose()
                    .to_owned(),
            ),
        };
        let plain = |s: &str| key.as_ref().map(|_| s.to_owned());
        out.push(objects::secret(
            ARGO_NS,
            "root-repository",
            json!({"argocd.argoproj.io/secret-type": "repository"}),
            vec![
                ("type".into(), plain("git")),
                ("url".into(), plain(&g.repository)),
                ("sshPrivateKey".into(), key.clone()),
            ],
        ));
    }
    out.push(objects::labelled(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": ARGO_ROOT, "namespace": ARGO_NS},
        "spec": {
            "project": "default",
            "source": {"repoURL": g.repository, "targetRevision": g.branch, "path": g.path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ARGO_NS},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    })));
    Ok(out)
}

/// Phase 3's objects: Flux's GitRepository + root Kustomization, or Argo CD's
/// repository Secret + root Application; nothing without `[cluster.gitops]`.
pub fn desired_objects(cluster: &Cluster, values: Values) -> Result<Vec<Value>, String> {
    match &cluster.gitops {
        None => Ok(vec![]),
        Some(g) if g.engine == GitopsEngine::Flux => Ok(flux(cluster, g)),
        Some(g) => argocd(g, values),
    }
}

/// Phase 3: GitOps takeover.
pub struct Gitops {
    run: Arc<ClusterRun>,
}

impl Gitops {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    /// The root objects, or nothing without `[cluster.gitops]`.
    fn desired(&self) -> Result<Vec<Value>, PhaseError> {
        desired_objects(&self.run.cluster, Values::Resolved { known_hosts: None }).map_err(|e| self.failed(e))
    }
}

/// The object whose readiness says the takeover worked.
fn root(desired: &[Value]) -> Option<Value> {
    desired
        .iter()
        .find(|o| o["kind"] == "Kustomization" || o["kind"] == "Application")
        .cloned()
}

/// What phase 3 waits for to be Ready: Flux's GitRepository, then the root.
fn roots(root: &Value) -> Vec<Value> {
    let mut out = vec![];
    if root["kind"] == "Kustomization" {
        out.push(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": FLUX_ROOT, "namespace": FLUX_NS}}));
    }
    out.push(root.clone());
    out
}

/// What phase 3 may wait for: [`roots`], and Argo CD's Application CRD.
fn waited(root: &Value) -> Vec<Value> {
    let mut out = roots(root);
    if root["kind"] == "Application" {
        out.push(objects::crd_stub(ARGO_CRD));
    }
    out
}

/// Phase 3's plan, pure. Argo CD: its Application CRD Established first
/// (the argo-cd chart of phase 2 brings it) when the root is applied. Then
/// the objects missing or different applied, and the root waited for (Flux:
/// its GitRepository first) while it is applied now, missing or not Ready.
fn decide(root: &Value, observed: &objects::Observed) -> Vec<Action> {
    let root_applies = observed.applies(root);
    let mut actions = vec![];
    if root["kind"] == "Application" && root_applies && observed.needs_wait(&objects::crd_stub(ARGO_CRD)) {
        let crd = ARGO_CRD.into();
        actions.push(Action::new(PHASE, CLUSTER, Step::AwaitEstablished { crd }));
    }
    actions.extend(observed.actions(PHASE, None));
    for obj in roots(root)
        .into_iter()
        .filter(|o| root_applies || observed.needs_wait(o))
    {
        let root = ObjectRef::of(&obj);
        actions.push(Action::new(PHASE, CLUSTER, Step::AwaitGitops { root }));
    }
    actions
}

#[async_trait::async_trait]
impl Phase for Gitops {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase 3: GitOps takeover")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let desired = self.desired()?;
        let Some(root) = root(&desired) else {
            return Ok(vec![]);
        };
        let client = objects::client_if_up(&self.run, ctx).await?;
        let observed = objects::observe(client.as_ref(), desired, waited(&root))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(decide(&root, &observed))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        execute::run(&self.run, ctx, PHASE, plan).await?;
        ctx.record(PHASE, CLUSTER, "ready").await?;
        tracing::info!(
            "cluster {}: the GitOps root is Ready; watch it with: {}",
            self.run.cluster.name,
            watch_hint(&self.run.cluster)
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::example;
    use crate::phases::no_api;

    fn plan_of(file: &str, observe: impl Fn(&[Value], &Value) -> objects::Observed) -> Vec<Step> {
        let desired = desired_objects(&example(file), Values::Placeholder).unwrap();
        let root = root(&desired).expect("a root");
        decide(&root, &observe(&desired, &root))
            .into_iter()
            .map(|a| a.step)
            .collect()
    }

    fn converged(root: &Value) -> objects::Observed {
        objects::Observed {
            changes: vec![],
            ready: waited(root).iter().map(ObjectRef::of).collect(),
        }
    }

    #[test]
    fn flux_waits_for_its_git_repository_then_the_root_kustomization() {
        let plan = plan_of("simulated.toml", |d, _| no_api(d));
        let waits: Vec<String> = plan
            .iter()
            .filter_map(|s| match s {
                Step::AwaitGitops { root } => Some(root.to_string()),
                Step::ApplyObject { .. } => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            waits,
            [
                "GitRepository flux-system/flux-system",
                "Kustomization flux-system/flux-system"
            ]
        );
        assert!(matches!(plan[0], Step::ApplyObject { .. }), "applies first: {plan:?}");
        assert_eq!(plan_of("simulated.toml", |_, r| converged(r)), vec![]);
        let not_ready = plan_of("simulated.toml", |_, r| {
            let mut o = converged(r);
            o.ready.remove(&ObjectRef::of(r));
            o
        });
        assert_eq!(not_ready.len(), 1, "only the root that is not Ready: {not_ready:?}");
    }

    #[test]
    fn argo_cd_waits_for_its_application_crd_before_a_new_root() {
        let plan = plan_of("homelab-k3s.toml", |d, _| no_api(d));
        assert_eq!(plan[0], Step::AwaitEstablished { crd: ARGO_CRD.into() });
        assert!(matches!(plan.last(), Some(Step::AwaitGitops { root }) if root.kind == "Application"));
        // An unchanged root waits for nothing it already has.
        let established = plan_of("homelab-k3s.toml", |_, r| {
            let mut o = converged(r);
            o.ready.remove(&ObjectRef::of(r));
            o
        });
        assert!(
            matches!(established.as_slice(), [Step::AwaitGitops { .. }]),
            "{established:?}"
        );
    }
}

//! Phase 2: core services with no helm, kubectl or flux binary on the
//! operator's machine. `bootstrap` applies Flux as upstream installs it (see
//! [`flux`], patched only as [`super::flux_patches`] lists) and hands the core releases (Cilium, CoreDNS where the
//! distribution runs none, Spegel, cert-manager, external-secrets, Argo CD
//! when it is the GitOps engine) to helm-controller as HelmRelease objects.
//! Chart versions and values come from the GitOps checkout's HelmReleases when
//! `[cluster.gitops] checkout` is set, else from `phases/core.toml`. Then it
//! waits: CNI DaemonSet rolled out, Nodes Ready, Deployments Available,
//! HelmReleases Ready.

use std::sync::Arc;

use serde_json::{Value, json};

use super::checkout::Checkout;
use super::manifests::{self, ReleaseObjects};
use super::objects::Pending;
use super::{ClusterRun, catalog, chart_context, execute, flux, network, objects};
use crate::engine::{Action, CLUSTER, ObjectRef, Phase, PhaseError, RunCtx, Step};
use crate::inventory::Cluster;
use crate::k8s::Client;

const PHASE: &str = "core";

/// Phase 2: core services.
pub struct Core {
    run: Arc<ClusterRun>,
}

/// Everything phase 2 wants.
struct Desired {
    /// Flux's objects (quota, RBAC, Services, controllers, NetworkPolicies).
    controllers: Vec<Value>,
    releases: Vec<ReleaseObjects>,
    /// Labelled release namespaces and `cluster-settings` ([`chart_context`], [`network`]).
    extra: Vec<Value>,
    /// Applied once Cilium's CRDs are Established ([`network`]).
    cilium: Vec<Value>,
}

impl Desired {
    /// What is applied first (everything but the Cilium objects).
    fn first(&self) -> Vec<Value> {
        let mut out = self.extra.clone();
        out.extend(self.controllers.iter().cloned());
        for r in &self.releases {
            out.extend(r.objects.iter().cloned());
        }
        out
    }

    fn objects(&self) -> Vec<Value> {
        let mut out = self.first();
        out.extend(self.cilium.iter().cloned());
        out
    }

    /// The stubs (apiVersion, kind, namespace, name) of each release's
    /// workloads, with the release.
    fn workloads(&self) -> impl Iterator<Item = (&ReleaseObjects, Value)> {
        self.releases.iter().flat_map(|r| {
            r.waits.iter().map(move |(kind, name)| {
                let stub = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": r.namespace}});
                (r, stub)
            })
        })
    }
}

/// Everything phase 2 wants for `cluster` (reads the GitOps checkout when set).
fn desired(cluster: &Cluster) -> Result<Desired, String> {
    let core = catalog::core();
    let checkout = match cluster.gitops.as_ref().and_then(|g| g.checkout.as_ref()) {
        Some(dir) => Some(Checkout::read(dir)?),
        None => None,
    };
    let releases = manifests::releases(&core, cluster, checkout.as_ref())?;
    for r in &releases {
        tracing::debug!(
            "release {}/{}: chart {} from {}",
            r.namespace,
            r.name,
            r.version,
            r.origin
        );
    }
    network::check_cni_values(cluster, &releases)?;
    let mut extra = chart_context::namespaces(core.releases.iter().filter(|r| r.wanted(cluster)));
    extra.push(network::cluster_settings(cluster));
    Ok(Desired {
        controllers: flux::components(cluster),
        releases,
        extra,
        cilium: network::cilium_objects(cluster),
    })
}

/// Phase 2's objects: release namespaces and `cluster-settings`, Flux's
/// (upstream, patched), each release's HelmRepository and HelmRelease, then
/// the Cilium load-balancer pool and BGP objects.
pub fn desired_objects(cluster: &Cluster) -> Result<Vec<Value>, String> {
    desired(cluster).map(|d| d.objects())
}

impl Core {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    fn desired(&self) -> Result<Desired, PhaseError> {
        desired(&self.run.cluster).map_err(|e| self.failed(e))
    }

    /// The waits, in the order they are carried out: the CNI's DaemonSets,
    /// then every Node (nothing else schedules before they are Ready), then
    /// Flux's controllers, the releases' workloads and the HelmReleases. A
    /// target is waited for when it is applied now (a release's workloads
    /// when the release is), missing, or not ready.
    async fn waits(&self, client: Option<&Client>, d: &Desired, applied: &[Pending]) -> Result<Vec<Step>, PhaseError> {
        let applies = |obj: &Value| applied.iter().any(|p| p.obj == *obj);
        let release_applies = |r: &ReleaseObjects| r.objects.iter().any(applies);
        let fail = |e| self.failed(e);
        let mut out = vec![];
        let cni = |r: &ReleaseObjects, stub: &Value| r.cni && stub["kind"] == "DaemonSet";
        for (r, stub) in d.workloads().filter(|(r, stub)| cni(r, stub)) {
            if release_applies(r) || objects::needs_wait(client, &stub).await.map_err(fail)? {
                out.push(ready(&stub));
            }
        }
        if d.releases.iter().any(|r| r.cni) {
            out.extend(self.nodes_not_ready(client).await?);
        }
        for obj in d.controllers.iter().filter(|o| o["kind"] == "Deployment") {
            if applies(obj) || objects::needs_wait(client, obj).await.map_err(fail)? {
                out.push(ready(obj));
            }
        }
        for (r, stub) in d.workloads().filter(|(r, stub)| !cni(r, stub)) {
            if release_applies(r) || objects::needs_wait(client, &stub).await.map_err(fail)? {
                out.push(ready(&stub));
            }
        }
        for obj in d
            .releases
            .iter()
            .flat_map(|r| &r.objects)
            .filter(|o| o["kind"] == "HelmRelease")
        {
            if applies(obj) || objects::needs_wait(client, obj).await.map_err(fail)? {
                out.push(ready(obj));
            }
        }
        Ok(out)
    }

    /// Every node of the cluster whose Node is missing or not Ready, by name.
    async fn nodes_not_ready(&self, client: Option<&Client>) -> Result<Vec<Step>, PhaseError> {
        let mut live = std::collections::BTreeMap::new();
        if let Some(client) = client {
            let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.kube().clone());
            let params = kube::api::ListParams::default();
            let list = client
                .retry()
                .run("list nodes", || api.list(&params))
                .await
                .map_err(|e| self.failed(client.api_error("list", "nodes", &e)))?;
            for n in list.items {
                live.insert(
                    n.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(&n).unwrap_or_default(),
                );
            }
        }
        let mut names: Vec<&str> = self.run.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        Ok(names
            .into_iter()
            .filter(|n| live.get(*n).is_none_or(|v| !objects::is_ready("Node", v)))
            .map(|n| Step::AwaitReady {
                object: ObjectRef::new("v1", "Node", None, n),
            })
            .collect())
    }
}

/// The wait for `obj` to be ready.
fn ready(obj: &Value) -> Step {
    Step::AwaitReady {
        object: ObjectRef::of(obj),
    }
}

#[async_trait::async_trait]
impl Phase for Core {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase 2: core services")
    }

    /// Flux and the releases applied, the waits, then (once Cilium's
    /// operator has registered their CRDs) the load-balancer pool and BGP.
    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let d = self.desired()?;
        let client = objects::client_if_up(&self.run, ctx).await?;
        let c = client.as_ref();
        let pending = |objs: Vec<Value>| async move { objects::changes(c, objs).await.map_err(|e| self.failed(e)) };
        let first = pending(d.first()).await?;
        let mut actions = objects::actions(PHASE, &first);
        let waits = self.waits(c, &d, &first).await?;
        actions.extend(waits.into_iter().map(|s| Action::new(PHASE, CLUSTER, s)));
        let cilium = pending(d.cilium.clone()).await?;
        if !cilium.is_empty() {
            for crd in network::crds_of(&d.cilium) {
                if objects::needs_wait(c, &objects::crd_stub(&crd))
                    .await
                    .map_err(|e| self.failed(e))?
                {
                    actions.push(Action::new(PHASE, CLUSTER, Step::AwaitEstablished { crd }));
                }
            }
            actions.extend(objects::actions(PHASE, &cilium));
        }
        Ok(actions)
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        execute::run(&self.run, ctx, PHASE, plan).await?;
        ctx.record(PHASE, CLUSTER, "ready").await?;
        Ok(())
    }
}

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
use super::{ClusterRun, catalog, chart_context, flux, network, objects};
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx, Step};
use crate::inventory::Cluster;
use crate::k8s::{Client, wait};

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

    /// Objects to watch until ready, as stubs for [`objects::get`]: the
    /// controllers, each release's workloads, each HelmRelease.
    fn readiness(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .controllers
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .cloned()
            .collect();
        for r in &self.releases {
            for (kind, name) in &r.waits {
                out.push(json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": r.namespace}}));
            }
            out.extend(r.objects.iter().filter(|o| o["kind"] == "HelmRelease").cloned());
        }
        out
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

    /// What exists but is not ready yet.
    async fn not_ready(&self, client: &Client, d: &Desired) -> Result<Vec<String>, PhaseError> {
        let mut out = vec![];
        for stub in d.readiness() {
            if let Some(live) = objects::get(client, &stub).await.map_err(|e| self.failed(e))?
                && !objects::is_ready(&live)
            {
                out.push(objects::describe(&stub));
            }
        }
        if d.releases.iter().any(|r| r.cni) {
            let nodes = crate::k8s::Client::kube(client).clone();
            let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(nodes);
            let params = kube::api::ListParams::default();
            let list = client
                .retry()
                .run("list nodes", || api.list(&params))
                .await
                .map_err(|e| self.failed(client.api_error("list", "nodes", &e)))?;
            for n in list.items {
                let v = serde_json::to_value(&n).unwrap_or_default();
                if !objects::is_ready(&v) {
                    out.push(format!("Node {}", n.metadata.name.unwrap_or_default()));
                }
            }
        }
        Ok(out)
    }

    async fn wait_ready(&self, ctx: &RunCtx, client: &Client, d: &Desired) -> Result<(), PhaseError> {
        let t = self.run.timeouts.workload;
        let fail = |e: crate::k8s::Error| self.failed(e);
        let workload = |ns: String, kind: String, name: String| async move {
            match kind.as_str() {
                "DaemonSet" => wait::daemonset_rolled_out(client, &ns, &name, t).await,
                _ => wait::deployment_available(client, &ns, &name, t).await,
            }
        };
        // The network first: nothing else schedules before Nodes are Ready.
        for r in d.releases.iter().filter(|r| r.cni) {
            ctx.step(PHASE, CLUSTER, &format!("waiting for the CNI ({})", r.name));
            for (kind, name) in r.waits.iter().filter(|(k, _)| k == "DaemonSet") {
                workload(r.namespace.clone(), kind.clone(), name.clone())
                    .await
                    .map_err(fail)?;
            }
            ctx.step(PHASE, CLUSTER, "waiting for Nodes to be Ready");
            let names: Vec<&str> = self.run.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            wait::nodes_ready(client, &names, t).await.map_err(fail)?;
        }
        ctx.step(PHASE, CLUSTER, "waiting for core workloads");
        let mut waits = vec![];
        for o in d.controllers.iter().filter(|o| o["kind"] == "Deployment") {
            let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            waits.push((manifests::FLUX_NAMESPACE.to_owned(), "Deployment".to_owned(), name));
        }
        for r in &d.releases {
            for (kind, name) in &r.waits {
                waits.push((r.namespace.clone(), kind.clone(), name.clone()));
            }
        }
        let results = futures::future::join_all(waits.into_iter().map(|(ns, k, n)| workload(ns, k, n))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>().map_err(fail)?;
        ctx.step(PHASE, CLUSTER, "waiting for HelmReleases to be Ready");
        let releases = d.releases.iter().map(|r| {
            wait::ready_condition(
                client,
                "helm.toolkit.fluxcd.io/v2",
                "HelmRelease",
                Some(r.namespace.as_str()),
                &r.name,
                t,
            )
        });
        let results = futures::future::join_all(releases).await;
        results.into_iter().collect::<Result<Vec<()>, _>>().map_err(fail)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Phase for Core {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase 2: core services")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let d = self.desired()?;
        let (client, mut actions) = objects::plan(&self.run, ctx, PHASE, d.objects()).await?;
        let Some(client) = client else {
            // No API yet: the nodes will register NotReady until the CNI runs
            // (kubelet's NetworkNotReady), listed as the API lists them, by name.
            if d.releases.iter().any(|r| r.cni) {
                let mut names: Vec<&str> = self.run.nodes().map(|n| n.name.as_str()).collect();
                names.sort_unstable();
                actions.extend(names.into_iter().map(|n| {
                    Action::new(
                        PHASE,
                        CLUSTER,
                        Step::AwaitReady {
                            what: format!("Node {n}"),
                        },
                    )
                }));
            }
            return Ok(actions);
        };
        for what in self.not_ready(&client, &d).await? {
            actions.push(Action::new(PHASE, CLUSTER, Step::AwaitReady { what }));
        }
        Ok(actions)
    }

    async fn apply(&self, ctx: &RunCtx, _plan: &[Action]) -> Result<(), PhaseError> {
        let d = self.desired()?;
        let client = self.run.kube(ctx).await?;
        ctx.step(PHASE, CLUSTER, "comparing Flux controllers and releases");
        let pending = objects::pending(&client, d.first()).await.map_err(|e| self.failed(e))?;
        ctx.step(PHASE, CLUSTER, &format!("applying {} object(s)", pending.len()));
        objects::apply(&client, &pending, self.run.timeouts.workload)
            .await
            .map_err(|e| self.failed(e))?;
        ctx.record(PHASE, CLUSTER, "applied").await?;
        self.wait_ready(ctx, &client, &d).await?;
        if !d.cilium.is_empty() {
            ctx.step(PHASE, CLUSTER, "applying the load-balancer pool and BGP (Cilium)");
            network::apply_cilium_objects(&client, &d.cilium, self.run.timeouts.workload)
                .await
                .map_err(|e| self.failed(e))?;
        }
        ctx.record(PHASE, CLUSTER, "ready").await?;
        Ok(())
    }
}

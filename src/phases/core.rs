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

    /// The releases' HelmReleases.
    fn helm_releases(&self) -> impl Iterator<Item = &Value> {
        self.releases
            .iter()
            .flat_map(|r| &r.objects)
            .filter(|o| o["kind"] == "HelmRelease")
    }

    /// Every object a plan may wait for but the Nodes: the releases'
    /// workloads, Flux's controllers, the HelmReleases, Cilium's CRDs.
    fn waited(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self.workloads().map(|(_, stub)| stub).collect();
        out.extend(self.controllers.iter().filter(|o| o["kind"] == "Deployment").cloned());
        out.extend(self.helm_releases().cloned());
        out.extend(network::crds_of(&self.cilium).iter().map(|c| objects::crd_stub(c)));
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

    /// Every node of the cluster whose Node is Ready, as the plan's
    /// readiness reads it (reads only).
    async fn ready_nodes(&self, client: &Client) -> Result<Vec<ObjectRef>, PhaseError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.kube().clone());
        let params = kube::api::ListParams::default();
        let list = client
            .retry()
            .run("list nodes", || api.list(&params))
            .await
            .map_err(|e| self.failed(client.api_error("list", "nodes", &e)))?;
        Ok(list
            .items
            .into_iter()
            .map(|n| serde_json::to_value(&n).unwrap_or_default())
            .filter(|n| objects::is_ready("Node", n))
            .map(|n| ObjectRef::of(&n))
            .collect())
    }

    /// What differs, and which of the objects the plan may wait for (the
    /// releases' workloads, the HelmReleases, Flux's controllers, Cilium's
    /// CRDs, the Nodes) are ready. Reads only.
    async fn observe(&self, client: Option<&Client>, d: &Desired) -> Result<objects::Observed, PhaseError> {
        let mut observed = objects::observe(client, d.objects(), d.waited())
            .await
            .map_err(|e| self.failed(e))?;
        if let Some(client) = client {
            observed.ready.extend(self.ready_nodes(client).await?);
        }
        Ok(observed)
    }
}

/// Phase 2's plan, pure. The applies (but Cilium's), then the waits in the
/// order they are carried out: the CNI's DaemonSets, every Node of `nodes`
/// (nothing else schedules before they are Ready), Flux's controllers, the
/// releases' workloads and the HelmReleases. A target is waited for when it
/// is applied now (a release's workloads when the release is), missing, or
/// not ready. Then, when Cilium's pool or BGP objects change, Cilium's CRDs
/// Established and those objects.
fn decide(d: &Desired, nodes: &[&str], observed: &objects::Observed) -> Vec<Action> {
    let release_applies = |r: &ReleaseObjects| r.objects.iter().any(|o| observed.applies(o));
    let cni = |r: &ReleaseObjects, stub: &Value| r.cni && stub["kind"] == "DaemonSet";
    let mut waits = vec![];
    for (r, stub) in d.workloads().filter(|(r, stub)| cni(r, stub)) {
        if release_applies(r) || observed.needs_wait(&stub) {
            waits.push(ready(&stub));
        }
    }
    if d.releases.iter().any(|r| r.cni) {
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        // Nodes are never applied here: only their readiness counts.
        let node = |name: &str| ObjectRef::new("v1", "Node", None, name);
        let not_ready = nodes.into_iter().map(node).filter(|n| !observed.ready.contains(n));
        waits.extend(not_ready.map(|object| Step::AwaitReady { object }));
    }
    for obj in d.controllers.iter().filter(|o| o["kind"] == "Deployment") {
        if observed.needs_wait(obj) {
            waits.push(ready(obj));
        }
    }
    for (r, stub) in d.workloads().filter(|(r, stub)| !cni(r, stub)) {
        if release_applies(r) || observed.needs_wait(&stub) {
            waits.push(ready(&stub));
        }
    }
    waits.extend(d.helm_releases().filter(|o| observed.needs_wait(o)).map(ready));
    let mut actions = observed.actions(PHASE, Some(&d.first()));
    actions.extend(waits.into_iter().map(|s| Action::new(PHASE, CLUSTER, s)));
    let cilium = observed.actions(PHASE, Some(&d.cilium));
    if !cilium.is_empty() {
        for crd in network::crds_of(&d.cilium) {
            if observed.needs_wait(&objects::crd_stub(&crd)) {
                actions.push(Action::new(PHASE, CLUSTER, Step::AwaitEstablished { crd }));
            }
        }
        actions.extend(cilium);
    }
    actions
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
        let observed = self.observe(client.as_ref(), &d).await?;
        let nodes: Vec<&str> = self.run.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        Ok(decide(&d, &nodes, &observed))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        execute::run(&self.run, ctx, PHASE, plan).await?;
        ctx.record(PHASE, CLUSTER, "ready").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::example;
    use crate::phases::no_api;

    /// Each action as one letter: A apply, C the CNI's DaemonSet, N a Node,
    /// F a Flux controller, W another workload, H a HelmRelease, E a CRD
    /// Established, L a Cilium pool/BGP apply.
    fn shape(d: &Desired, plan: &[Action]) -> String {
        let cni: Vec<ObjectRef> = d
            .workloads()
            .filter(|(r, s)| r.cni && s["kind"] == "DaemonSet")
            .map(|(_, s)| ObjectRef::of(&s))
            .collect();
        let letter = |a: &Action| match &a.step {
            Step::ApplyObject { object, .. } if d.cilium.contains(object.object()) => 'L',
            Step::ApplyObject { .. } => 'A',
            Step::AwaitReady { object } if cni.contains(object) => 'C',
            Step::AwaitReady { object } => match object.kind.as_str() {
                "Node" => 'N',
                "HelmRelease" => 'H',
                _ if object.namespace.as_deref() == Some("flux-system") => 'F',
                _ => 'W',
            },
            Step::AwaitEstablished { .. } => 'E',
            other => panic!("phase 2 plans no {other:?}"),
        };
        let mut out: Vec<char> = plan.iter().map(letter).collect();
        out.dedup();
        out.into_iter().collect()
    }

    fn converged(c: &Cluster, d: &Desired) -> objects::Observed {
        let nodes = c.nodes.iter().map(|n| ObjectRef::new("v1", "Node", None, &n.name));
        objects::Observed {
            changes: vec![],
            ready: d.waited().iter().map(ObjectRef::of).chain(nodes).collect(),
        }
    }

    fn names(c: &Cluster) -> Vec<&str> {
        c.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn a_fresh_cluster_gets_every_object_then_the_waits_in_the_order_they_are_carried_out() {
        let c = example("simulated.toml");
        let d = desired(&c).unwrap();
        let plan = decide(&d, &names(&c), &no_api(&d.objects()));
        assert_eq!(shape(&d, &plan), "ACNFWHEL");
        let applies = plan.iter().filter(|a| matches!(a.step, Step::ApplyObject { .. }));
        assert_eq!(applies.count(), d.objects().len(), "every object created");
        let nodes: Vec<String> = plan
            .iter()
            .filter_map(|a| match &a.step {
                Step::AwaitReady { object } if object.kind == "Node" => Some(object.name.clone()),
                _ => None,
            })
            .collect();
        let mut want = names(&c);
        want.sort_unstable();
        assert_eq!(nodes, want, "every Node, by name");
    }

    #[test]
    fn a_converged_cluster_plans_nothing_and_a_changed_release_waits_for_its_own_workloads() {
        let c = example("simulated.toml");
        let d = desired(&c).unwrap();
        let mut observed = converged(&c, &d);
        assert!(decide(&d, &names(&c), &observed).is_empty());

        let release = d.releases.iter().find(|r| !r.cni && !r.waits.is_empty()).unwrap();
        let hr = release.objects.iter().find(|o| o["kind"] == "HelmRelease").unwrap();
        observed.changes.push(objects::Pending {
            obj: hr.clone(),
            what: "update HelmRelease (spec.values)".into(),
        });
        let plan = decide(&d, &names(&c), &observed);
        assert_eq!(shape(&d, &plan), "AWH");
        let waited: Vec<&str> = plan
            .iter()
            .filter_map(|a| match &a.step {
                Step::AwaitReady { object } => object.namespace.as_deref(),
                _ => None,
            })
            .collect();
        assert!(waited.iter().all(|ns| *ns == release.namespace), "{waited:?}");
    }

    #[test]
    fn cilium_objects_wait_only_for_crds_that_are_not_established() {
        let c = example("simulated.toml");
        let d = desired(&c).unwrap();
        let mut observed = converged(&c, &d);
        observed.changes.push(objects::Pending::create(d.cilium[0].clone()));
        assert_eq!(shape(&d, &decide(&d, &names(&c), &observed)), "L");
        let crd = network::crds_of(&d.cilium).remove(0);
        observed.ready.remove(&ObjectRef::of(&objects::crd_stub(&crd)));
        let plan = decide(&d, &names(&c), &observed);
        assert_eq!(shape(&d, &plan), "EL");
        assert_eq!(plan[0].step, Step::AwaitEstablished { crd });
    }
}

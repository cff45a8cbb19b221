//! The Day-2 executor: carries out one typed [`Step`] on one node, and a
//! plan as stages (nodes of one stage work concurrently under the run's
//! slots, stages one after the other). Every change a Day-2 operation makes
//! to a node, to etcd or to the API is made here; each completed step is
//! recorded in the state (`<to>: <kind>`), which is what a resumed run reads.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{is_member, snapshot, talos_client};
use crate::engine::slots::{self, Check};
use crate::engine::{Action, CLUSTER, PhaseError, RunCtx, Step};
use crate::inventory::{Cluster, DiskSelector, Node, Role};
use crate::phases::KUBECONFIG;
use crate::talos::TalosCredentials;
use crate::talos::proto::machine::apply_configuration_request::Mode;

/// What the executor works with.
pub struct Env {
    pub cluster: Cluster,
    pub kube: crate::k8s::Client,
    /// How long one node may take to come back from a reboot or wipe.
    pub node_timeout: Duration,
    pub access: Access,
}

/// How the executor reaches the nodes of one distribution.
pub enum Access {
    /// The machine API: the secrets bundle (a Kubernetes upgrade re-renders
    /// machine configs) and the cluster's talosconfig credentials.
    Talos {
        bundle: crate::render::TalosBundle,
        creds: TalosCredentials,
    },
    /// SSH, through phase -1's installer: it renders and installs exactly what `up` does.
    K3s(super::k3s::K3sAccess),
}

impl Env {
    /// The Talos material, or why this cluster has none.
    pub fn talos(&self) -> Result<(&crate::render::TalosBundle, &TalosCredentials), String> {
        match &self.access {
            Access::Talos { bundle, creds } => Ok((bundle, creds)),
            Access::K3s(_) => Err(format!("cluster {} is a k3s cluster, not Talos", self.cluster.name)),
        }
    }

    /// The cluster's Talos credentials (see [`Env::talos`]).
    pub fn creds(&self) -> Result<&TalosCredentials, String> {
        self.talos().map(|(_, c)| c)
    }

    /// The k3s installer, or why this cluster has none.
    pub fn k3s(&self) -> Result<&super::k3s::K3sAccess, String> {
        match &self.access {
            Access::K3s(k) => Ok(k),
            Access::Talos { .. } => Err(format!("cluster {} is a Talos cluster, not k3s", self.cluster.name)),
        }
    }
}

/// How many workers are upgraded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// This many workers.
    Count(usize),
    /// This share of the workers, rounded up.
    Percent(u8),
}

impl std::str::FromStr for Batch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--batch `{s}`: expected a count (1, 2, ...) or a share of the workers (10%)");
        let b = match s.strip_suffix('%') {
            Some(p) => Batch::Percent(p.parse().map_err(|_| bad())?),
            None => Batch::Count(s.parse().map_err(|_| bad())?),
        };
        match b {
            Batch::Count(0) | Batch::Percent(0) => Err(format!("--batch `{s}`: must be at least 1 (or 1%)")),
            Batch::Percent(p) if p > 100 => Err(format!("--batch `{s}`: a share is at most 100%")),
            b => Ok(b),
        }
    }
}

impl Batch {
    /// Workers per batch out of `workers` (at least 1).
    pub fn size(self, workers: usize) -> usize {
        match self {
            Batch::Count(n) => n,
            Batch::Percent(p) => (workers * usize::from(p)).div_ceil(100),
        }
        .max(1)
    }
}

/// Runs `plan` (a Day-2 phase's apply): [`stages`] with workers `batch` at
/// a time, then [`run`].
pub async fn apply(
    ctx: &RunCtx,
    env: &Env,
    phase: &str,
    to: &str,
    plan: &[Action],
    batch: Batch,
) -> Result<(), PhaseError> {
    let workers = env.cluster.nodes.iter().filter(|n| n.role == Role::Worker).count();
    run(ctx, env, phase, to, stages(&env.cluster, plan, batch.size(workers))).await
}

/// A stage: nodes worked on together, each with its steps in order.
pub type Stage = Vec<(String, Vec<Step>)>;

/// The error of a Day-2 phase that refuses to start (`message` says why and
/// that nothing was changed).
pub fn refusal(phase: &str, message: String) -> PhaseError {
    PhaseError::Failed {
        phase: phase.into(),
        message,
    }
}

/// Groups `plan` into stages: cluster-wide steps first, then control planes
/// one at a time, then workers `batch` at a time (targets in plan order).
pub fn stages(cluster: &Cluster, plan: &[Action], batch: usize) -> Vec<Stage> {
    let mut order: Vec<String> = Vec::new();
    let mut steps: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for a in plan {
        if !steps.contains_key(&a.target) {
            order.push(a.target.clone());
        }
        steps.entry(a.target.clone()).or_default().push(a.step.clone());
    }
    let role = |t: &str| cluster.node(t).map(|n| n.role);
    let mut out: Vec<Stage> = Vec::new();
    let take = |t: &String| (t.clone(), steps.get(t).cloned().unwrap_or_default());
    if order.iter().any(|t| t == CLUSTER) {
        out.push(vec![take(&CLUSTER.to_owned())]);
    }
    for t in order.iter().filter(|t| role(t) == Some(Role::Controlplane)) {
        out.push(vec![take(t)]);
    }
    let workers: Vec<&String> = order.iter().filter(|t| role(t) == Some(Role::Worker)).collect();
    for chunk in workers.chunks(batch.max(1)) {
        out.push(chunk.iter().map(|t| take(t)).collect());
    }
    out
}

/// Runs `stages` in order; a failed node stops the run after its stage (the
/// nodes beside it finish), and Ctrl-C starts no new node.
pub async fn run(ctx: &RunCtx, env: &Env, phase: &str, to: &str, stages: Vec<Stage>) -> Result<(), PhaseError> {
    for stage in stages {
        if ctx.cancelled() {
            return Err(PhaseError::Interrupted);
        }
        ctx.for_each(phase, stage, |target, steps| async move {
            for step in &steps {
                ctx.step(phase, &target, &step.to_string());
                carry_out(ctx, env, &target, step).await?;
                ctx.record(phase, &target, &progress(to, step))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// The progress label a completed `step` leaves in the state.
pub fn progress(to: &str, step: &Step) -> String {
    let kind = serde_json::to_value(step)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{to}: {kind}")
}

async fn carry_out(ctx: &RunCtx, env: &Env, target: &str, step: &Step) -> Result<(), String> {
    let node = || {
        env.cluster
            .node(target)
            .ok_or_else(|| format!("{target} is not in the inventory"))
    };
    let kube = &env.kube;
    match step {
        Step::Snapshot { .. } => {
            let access = match &env.access {
                Access::Talos { creds, .. } => snapshot::Access::Talos(creds),
                Access::K3s(k) => snapshot::Access::K3s(k.installer.pool()),
            };
            let mut store = ctx.state.lock_mut().await;
            let taken = snapshot::take(&env.cluster, access, &mut store, None, None, "upgrade").await;
            drop(store);
            ctx.state.save().await.map_err(|e| e.to_string())?;
            let (record, _) = taken?;
            ctx.step(
                "snapshot",
                target,
                &format!(
                    "{} ({} bytes, sha256 {})",
                    record.path.display(),
                    record.size,
                    record.sha256
                ),
            );
            Ok(())
        }
        Step::Cordon => crate::k8s::drain::cordon(kube, target, true)
            .await
            .map_err(|e| e.to_string()),
        Step::Uncordon => crate::k8s::drain::cordon(kube, target, false)
            .await
            .map_err(|e| e.to_string()),
        Step::Drain { timeout_secs } => {
            // Waiting on a budget is waiting: the slot goes back meanwhile.
            slots::idle(crate::k8s::drain::drain(
                kube,
                target,
                Duration::from_secs(*timeout_secs),
            ))
            .await
            .map(drop)
            .map_err(|e| format!("drain stopped: {e}"))
        }
        Step::UpgradeTalos { image, .. } => {
            let single = env.cluster.control_planes().count() == 1;
            let n = node()?;
            talos_client(n, env.creds()?, Duration::from_secs(60))?
                .upgrade(image, single && n.role == Role::Controlplane)
                .await
                .map_err(|e| e.to_string())
        }
        Step::AwaitUpgraded { version } => await_upgraded(env, node()?, version).await,
        Step::UpgradeKubernetes { to, .. } => apply_kubernetes(ctx, env, node()?, to).await,
        Step::AwaitKubelet { version } => await_kubelet(env, node()?, version).await,
        Step::RemoveEtcdMember { via } => remove_member(env, node()?, via).await,
        Step::WipeNode { .. } => match &env.access {
            // Not graceful: cordon, drain and the etcd member removal were steps of their own.
            Access::Talos { creds, .. } => talos_client(node()?, creds, Duration::from_secs(60))?
                .reset(false)
                .await
                .map_err(|e| e.to_string()),
            Access::K3s(k) => super::k3s::uninstall(k.installer.pool(), node()?).await,
        },
        Step::UpgradeK3s { .. } => {
            let path = ctx.state.lock().await.artifact(KUBECONFIG).map(|p| p.to_path_buf());
            let path = path.ok_or("no kubeconfig in the state dir")?;
            let kubeconfig = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            env.k3s()?.installer.reinstall(ctx, node()?, &kubeconfig).await
        }
        Step::DeleteNode => crate::k8s::drain::delete_node(kube, target)
            .await
            .map_err(|e| e.to_string()),
        other => Err(format!("{other}: not a Day-2 step")),
    }
}

/// The node went down, came back on mTLS running `version` (not the old one:
/// Talos falls back to the previous boot entry when the new one fails),
/// etcd has every control plane as a healthy member, and its Node is Ready.
async fn await_upgraded(env: &Env, node: &Node, version: &str) -> Result<(), String> {
    let once = talos_client(node, env.creds()?, Duration::ZERO)?;
    let budget = env.node_timeout;
    let went_down = std::sync::atomic::AtomicBool::new(false);
    slots::poll_until(
        &format!("{} running {version}", node.name),
        budget,
        || false, // an in-flight node finishes after Ctrl-C
        || async {
            use std::sync::atomic::Ordering::SeqCst;
            match once.version().await {
                Ok(v) if super::tag(&v) == version => Check::Met(()),
                Ok(v) if went_down.load(SeqCst) => Check::Fail(format!(
                    "{} rebooted but runs {}, not {version}: the new boot entry failed and Talos fell back to the previous one (see `talosctl dmesg`); the run stops here",
                    node.name, super::tag(&v)
                )),
                Ok(v) => Check::Not(format!("still running {} (the upgrade has not rebooted it yet)", super::tag(&v))),
                Err(e) => {
                    went_down.store(true, SeqCst);
                    Check::Not(e.to_string())
                }
            }
        },
    )
    .await?;
    if node.role == Role::Controlplane {
        let want: Vec<&Node> = env.cluster.control_planes().collect();
        slots::poll_until(
            &format!(
                "etcd healthy with all {} members after {}'s upgrade",
                want.len(),
                node.name
            ),
            budget,
            || false,
            || async {
                let members = match once.etcd_members().await {
                    Ok(m) => m,
                    Err(e) => return Check::Not(e.to_string()),
                };
                let missing = crate::talos::not_members(&members, want.iter().map(|n| (n.name.as_str(), n.ip)));
                if !missing.is_empty() {
                    return Check::Not(format!("not members: {}", missing.join(", ")));
                }
                match once.service_list().await {
                    Ok(s)
                        if s.iter()
                            .any(|s| s.id == "etcd" && s.health.as_ref().is_some_and(|h| h.healthy)) =>
                    {
                        Check::Met(())
                    }
                    Ok(_) => Check::Not(format!("etcd on {} not healthy", node.name)),
                    Err(e) => Check::Not(e.to_string()),
                }
            },
        )
        .await?;
    }
    slots::poll_until(
        &format!("Node {} Ready", node.name),
        budget,
        || false,
        || async {
            match crate::k8s::drain::node_status(&env.kube, &node.name).await {
                Ok(Some((_, true))) => Check::Met(()),
                Ok(Some((_, false))) => Check::Not("NotReady".into()),
                Ok(None) => Check::Not("no Node object".into()),
                Err(e) => Check::Not(e.to_string()),
            }
        },
    )
    .await
}

/// Re-applies `node`'s machine config rendered for Kubernetes `to` (the
/// install disk its selector resolved to kept), without a reboot, and records
/// its sha256 as `up` does.
async fn apply_kubernetes(ctx: &RunCtx, env: &Env, node: &Node, to: &str) -> Result<(), String> {
    if to != env.cluster.versions.kubernetes {
        return Err(format!(
            "Kubernetes {to} is not the inventory's version: the configs are rendered from it"
        ));
    }
    let mut node = node.clone();
    if let Some(path) = ctx.state.lock().await.state().install_disks.get(&node.name) {
        node.install_disk = Some(DiskSelector {
            path: Some(path.clone()),
            ..DiskSelector::default()
        });
    }
    let (bundle, creds) = env.talos()?;
    let config = crate::render::talos::machine_config(&env.cluster, &node, bundle)
        .map_err(|e| format!("rendering its machine config: {e:#}"))?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(config.as_bytes()));
    talos_client(&node, creds, Duration::from_secs(60))?
        .apply_configuration(config.as_bytes(), Mode::NoReboot)
        .await
        .map_err(|e| e.to_string())?;
    ctx.state
        .write(|s| s.record_applied(&node.name, &sha256))
        .await
        .map_err(|e| e.to_string())
}

/// Condition: the node's kubelet reports `version` and its Node is Ready.
async fn await_kubelet(env: &Env, node: &Node, version: &str) -> Result<(), String> {
    slots::poll_until(
        &format!("kubelet {version} on {}", node.name),
        env.node_timeout,
        || false, // an in-flight node finishes after Ctrl-C
        || async {
            match crate::k8s::drain::node_status(&env.kube, &node.name).await {
                Ok(Some((v, true))) if v == version => Check::Met(()),
                Ok(Some((v, ready))) => Check::Not(format!("kubelet {v}, Ready={ready}")),
                Ok(None) => Check::Not("no Node object".into()),
                Err(e) => Check::Not(e.to_string()),
            }
        },
    )
    .await
}

/// Removes `node`'s etcd member through control plane `via`.
async fn remove_member(env: &Env, node: &Node, via: &str) -> Result<(), String> {
    let via = env
        .cluster
        .node(via)
        .ok_or_else(|| format!("{via} is not in the inventory"))?;
    let client = talos_client(via, env.creds()?, Duration::from_secs(60))?;
    let members = client.etcd_members().await.map_err(|e| e.to_string())?;
    match members.iter().find(|m| is_member(m, node)) {
        Some(m) => client.etcd_remove_member(m.id).await.map_err(|e| e.to_string()),
        None => Ok(()), // already gone: a resumed run
    }
}

//! The phases of `up`, in order: -1 nodes (Talos or k3s), 0 prerequisites,
//! 1 CRDs, 2 core services, 3 GitOps takeover. Each is a [`Phase`] built over
//! one shared [`ClusterRun`]: the cluster from the inventory plus what this run
//! was asked to do (node limit, artifact directory, timeouts).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::artifacts::ArtifactStore;
use crate::engine::{Phase, PhaseError, RunCtx};
use crate::inventory::{Cluster, Distribution, Node};

/// Name of the kubeconfig artifact in the state dir (written by phase -1).
pub const KUBECONFIG: &str = "kubeconfig";
/// Name of the talosconfig artifact in the state dir.
pub const TALOSCONFIG: &str = "talosconfig";

/// How long phases wait for things to become ready.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A node answering (after apply-config, a reboot, an install).
    pub node: Duration,
    /// The Kubernetes API answering after etcd bootstrap / first server install.
    pub api: Duration,
    /// CRDs Established, Deployments Available, DaemonSets rolled out.
    pub workload: Duration,
    /// The GitOps root reporting Ready.
    pub gitops: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            node: Duration::from_secs(600),
            api: Duration::from_secs(600),
            workload: Duration::from_secs(900),
            gitops: Duration::from_secs(900),
        }
    }
}

/// One cluster's run: what every phase of it reads.
pub struct ClusterRun {
    /// The cluster, validated, from the inventory.
    pub cluster: Cluster,
    /// The inventory file's directory (relative paths in it resolve from here).
    pub inventory_dir: PathBuf,
    /// The state root (`--state-dir`); this cluster's files live in `<root>/<cluster>/`.
    pub state_root: PathBuf,
    /// Where pinned artifacts (CRDs, binaries) are found or cached.
    pub artifacts: ArtifactStore,
    /// `--limit`: only these nodes (empty: all).
    pub limit: BTreeSet<String>,
    /// `--merge-kubeconfig`: also merge the kubeconfig into `~/.kube/config`.
    pub merge_kubeconfig: bool,
    pub timeouts: Timeouts,
    /// `--accept-new`: record SSH host keys of hosts never seen before.
    pub accept_new: bool,
    /// `--require-identity`: refuse a Talos node whose identity nothing (inventory `uuid`/`serial`, BMC) vouches for.
    pub require_identity: bool,
    /// `reset`: bootstrap etcd from this snapshot instead of empty.
    pub restore: Option<PathBuf>,
    /// `--force-unlock`: offer to take over locks other runs hold (typed confirmation).
    pub force_unlock: bool,
}

impl ClusterRun {
    /// This cluster's state directory.
    pub fn cluster_dir(&self) -> PathBuf {
        self.state_root.join(&self.cluster.name)
    }

    /// Whether `node` is part of this run (`--limit`).
    pub fn selected(&self, node: &Node) -> bool {
        self.limit.is_empty() || self.limit.contains(&node.name)
    }

    /// The nodes of this run, in inventory order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.cluster.nodes.iter().filter(|n| self.selected(n))
    }

    /// `phase` failed for this cluster because of `message`.
    pub fn failed(&self, phase: &str, message: impl std::fmt::Display) -> PhaseError {
        PhaseError::Failed {
            phase: phase.into(),
            message: format!("cluster {}: {message}", self.cluster.name),
        }
    }

    /// A Kubernetes client from the kubeconfig phase -1 stored in the state dir.
    pub async fn kube(&self, ctx: &RunCtx) -> Result<crate::k8s::Client, PhaseError> {
        let path = ctx.state.lock().await.artifact(KUBECONFIG).map(Path::to_path_buf);
        let path = path.ok_or_else(|| PhaseError::Failed {
            phase: "kubernetes".into(),
            message: format!(
                "cluster {}: no kubeconfig in the state dir yet (phase -1 writes it); run `up` without --limit first",
                self.cluster.name
            ),
        })?;
        crate::k8s::Client::from_kubeconfig(&path)
            .await
            .map_err(|e| PhaseError::Failed {
                phase: "kubernetes".into(),
                message: e.to_string(),
            })
    }
}

/// The phases of `up` for this cluster, in order.
pub fn all(run: Arc<ClusterRun>) -> Vec<Box<dyn Phase>> {
    let nodes: Box<dyn Phase> = match run.cluster.distribution {
        Distribution::Talos => Box::new(talos_nodes::TalosNodes::new(run.clone())),
        Distribution::K3s => Box::new(k3s_nodes::K3sNodes::new(run.clone())),
    };
    std::iter::once(nodes).chain(kubernetes(run)).collect()
}

/// Phases 0-3, which work through the Kubernetes API phase -1 made.
pub fn kubernetes(run: Arc<ClusterRun>) -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(prerequisites::Prerequisites::new(run.clone())),
        Box::new(crds::Crds::new(run.clone())),
        Box::new(core::Core::new(run.clone())),
        Box::new(gitops::Gitops::new(run)),
    ]
}

/// What a plan observes while there is no API yet: every object created.
#[cfg(test)]
fn no_api(desired: &[serde_json::Value]) -> objects::Observed {
    objects::Observed {
        changes: desired.iter().cloned().map(objects::Pending::create).collect(),
        ready: Default::default(),
    }
}

pub mod catalog;
pub mod chart_context;
pub mod checkout;
pub mod core;
pub mod crds;
pub mod execute;
pub mod export;
pub mod flux;
pub mod flux_patches;
pub mod git_host;
pub mod gitops;
pub mod k3s_nodes;
pub mod manifests;
pub mod merge_kubeconfig;
pub mod network;
pub mod objects;
pub mod prerequisites;
pub mod talos_identity;
pub mod talos_nodes;

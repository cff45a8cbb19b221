//! Phase -1: k3s nodes.

use std::sync::Arc;

use super::ClusterRun;
use crate::engine::{Action, Phase, PhaseError, RunCtx};

/// Phase -1: k3s nodes.
pub struct K3sNodes {
    run: Arc<ClusterRun>,
}

impl K3sNodes {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }
}

#[async_trait::async_trait]
impl Phase for K3sNodes {
    fn name(&self) -> &'static str {
        "nodes"
    }

    fn title(&self) -> &'static str {
        "Phase -1: k3s nodes"
    }

    async fn plan(&self, _ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        Err(PhaseError::Failed {
            phase: self.name().into(),
            message: format!(
                "cluster {}: this phase is not built yet; nothing was done",
                self.run.cluster.name
            ),
        })
    }

    async fn apply(&self, _ctx: &RunCtx, _plan: &[Action]) -> Result<(), PhaseError> {
        self.plan(_ctx).await.map(|_| ())
    }
}

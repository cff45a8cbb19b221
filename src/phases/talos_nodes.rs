//! Phase -1: Talos nodes.

use std::sync::Arc;

use super::ClusterRun;
use crate::engine::{Action, Phase, PhaseError, RunCtx};

/// Phase -1: Talos nodes.
pub struct TalosNodes {
    run: Arc<ClusterRun>,
}

impl TalosNodes {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }
}

#[async_trait::async_trait]
impl Phase for TalosNodes {
    fn name(&self) -> &'static str {
        "nodes"
    }

    fn title(&self) -> &'static str {
        "Phase -1: Talos nodes"
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

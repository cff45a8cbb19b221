//! Phase 2: core services.

use std::sync::Arc;

use super::ClusterRun;
use crate::engine::{Action, Phase, PhaseError, RunCtx};

/// Phase 2: core services.
pub struct Core {
    run: Arc<ClusterRun>,
}

impl Core {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }
}

#[async_trait::async_trait]
impl Phase for Core {
    fn name(&self) -> &'static str {
        "core"
    }

    fn title(&self) -> &'static str {
        "Phase 2: core services"
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

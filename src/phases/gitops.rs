//! Phase 3: GitOps takeover.

use std::sync::Arc;

use super::ClusterRun;
use crate::engine::{Action, Phase, PhaseError, RunCtx};

/// Phase 3: GitOps takeover.
pub struct Gitops {
    run: Arc<ClusterRun>,
}

impl Gitops {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self { run }
    }
}

#[async_trait::async_trait]
impl Phase for Gitops {
    fn name(&self) -> &'static str {
        "gitops"
    }

    fn title(&self) -> &'static str {
        "Phase 3: GitOps takeover"
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

//! The phase engine: each phase is a small type that plans (compares desired
//! with observed state and lists actions) and applies its plan. The runner
//! takes phases in order, skips converged ones, bounds concurrency, stops
//! starting new work when interrupted, and records progress in the state dir.

pub mod progress;
pub mod shared_state;
pub mod slots;
pub mod step;

pub use shared_state::SharedState;
pub use step::{Manifest, ObjectRef, Step};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::state::StateError;
use progress::{Event, Reporter};

/// Target name for cluster-wide actions (not tied to one node).
pub const CLUSTER: &str = "cluster";

/// One thing a phase will do to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub phase: String,
    /// A node name, or [`CLUSTER`].
    pub target: String,
    pub step: Step,
}

impl Action {
    /// `step` of `phase` on `target`.
    pub fn new(phase: &str, target: &str, step: Step) -> Self {
        Self {
            phase: phase.to_owned(),
            target: target.to_owned(),
            step,
        }
    }
}

/// JSON: phase, target, the typed step (`kind` and its fields) and its text (`what`).
impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Action", 4)?;
        st.serialize_field("phase", &self.phase)?;
        st.serialize_field("target", &self.target)?;
        st.serialize_field("step", &self.step)?;
        st.serialize_field("what", &self.step.to_string())?;
        st.end()
    }
}

/// Why a phase (or the run) failed.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    /// Some targets failed; the others finished.
    #[error("phase {phase}: {} target(s) failed: {}", failures.len(), failures.iter().map(|(t, e)| format!("{t}: {e}")).collect::<Vec<_>>().join("; "))]
    Targets {
        phase: String,
        failures: Vec<(String, String)>,
    },
    /// A cluster-wide step failed.
    #[error("phase {phase}: {message}")]
    Failed { phase: String, message: String },
    /// Ctrl-C: in-flight steps finished, no new ones were started.
    #[error("interrupted: in-flight steps finished and state was recorded; run `up` again to resume")]
    Interrupted,
    #[error(transparent)]
    State(#[from] StateError),
}

/// A phase of `up`.
#[async_trait::async_trait]
pub trait Phase: Send + Sync {
    /// Its short name, used in state and events (`nodes`, `crds`, ...), and
    /// the heading shown to the operator (`Phase 1: CRDs`).
    fn id(&self) -> (&'static str, &'static str);
    /// The short name.
    fn name(&self) -> &'static str {
        self.id().0
    }
    /// The heading.
    fn title(&self) -> &'static str {
        self.id().1
    }
    /// Observes the cluster and lists what remains to do; empty when converged.
    /// Makes no mutating call.
    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError>;
    /// Carries out `plan`.
    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError>;
}

/// What every phase gets: progress, state, limits and the interrupt flag.
pub struct RunCtx {
    pub reporter: Arc<Reporter>,
    pub state: SharedState,
    /// Most targets worked on at once.
    pub concurrency: usize,
    /// Set on Ctrl-C: start nothing new.
    pub cancel: Arc<AtomicBool>,
}

impl RunCtx {
    /// True once the run was interrupted.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Shows that `target` is at `step`.
    pub fn step(&self, phase: &str, target: &str, step: &str) {
        self.reporter.emit(Event::Step {
            phase: phase.into(),
            target: target.into(),
            step: step.into(),
        });
    }

    /// Records that `target` completed `step` (saved atomically).
    pub async fn record(&self, phase: &str, target: &str, step: &str) -> Result<(), StateError> {
        self.state.write(|s| s.record_step(phase, target, step)).await
    }

    /// Runs `work` for every target with at most `concurrency` working at
    /// once ([`slots`]: a target waiting in [`slots::idle`] or
    /// [`slots::poll_until`] holds no slot). A failure on one target does not
    /// stop the others; once interrupted, no new target is started. Errors
    /// name the target.
    pub async fn for_each<T, F, Fut>(&self, phase: &str, items: Vec<(String, T)>, work: F) -> Result<(), PhaseError>
    where
        F: Fn(String, T) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let slots = slots::Slots::new(self.concurrency);
        let work = &work;
        // Every target is queued at once; the slots decide who works. Each
        // target's outcome is reported as soon as it is known.
        let results: Vec<(String, Option<Result<(), String>>)> =
            futures::future::join_all(items.into_iter().map(|(target, item)| {
                let slots = slots.clone();
                async move {
                    let start = || (!self.cancelled()).then(|| work(target.clone(), item));
                    let r = slots.run(start).await;
                    match &r {
                        Some(Ok(())) => self.reporter.emit(Event::TargetDone {
                            phase: phase.into(),
                            target: target.clone(),
                        }),
                        Some(Err(error)) => self.reporter.emit(Event::TargetFailed {
                            phase: phase.into(),
                            target: target.clone(),
                            error: error.clone(),
                        }),
                        None => {}
                    }
                    (target, r)
                }
            }))
            .await;
        let mut failures = Vec::new();
        let mut skipped = false;
        for (target, r) in results {
            match r {
                Some(Ok(())) => {}
                Some(Err(error)) => failures.push((target, error)),
                None => skipped = true,
            }
        }
        if !failures.is_empty() {
            failures.sort();
            return Err(PhaseError::Targets {
                phase: phase.into(),
                failures,
            });
        }
        if skipped {
            return Err(PhaseError::Interrupted);
        }
        Ok(())
    }
}

/// Plans every phase in order without changing anything.
pub async fn plan_all(phases: &[Box<dyn Phase>], ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
    let mut all = Vec::new();
    for p in phases {
        all.extend(p.plan(ctx).await?);
    }
    Ok(all)
}

/// Runs phases in order: plan, skip when converged, apply, record. Stops at
/// the first failed phase (later phases depend on it).
pub async fn run(phases: &[Box<dyn Phase>], ctx: &RunCtx) -> Result<(), PhaseError> {
    run_with(phases, ctx, |_| async { Ok(()) }).await
}

/// [`run`], calling `before_apply(phase)` before a phase with something to
/// do is applied (converged phases never call it): where `up` takes its
/// cluster-side lock, so a run that changes nothing writes nothing.
pub async fn run_with<F, Fut>(phases: &[Box<dyn Phase>], ctx: &RunCtx, mut before_apply: F) -> Result<(), PhaseError>
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Result<(), PhaseError>>,
{
    for p in phases {
        if ctx.cancelled() {
            return Err(PhaseError::Interrupted);
        }
        let plan = p.plan(ctx).await?;
        if plan.is_empty() {
            ctx.reporter.emit(Event::PhaseConverged {
                phase: p.name().into(),
                title: p.title().into(),
            });
            ctx.state.write(|s| s.set_phase_done(p.name(), true)).await?;
            continue;
        }
        before_apply(p.name()).await?;
        ctx.reporter.emit(Event::PhaseStarted {
            phase: p.name().into(),
            title: p.title().into(),
            actions: plan.len(),
            plan: plan.clone(),
        });
        let started = Instant::now();
        let result = p.apply(ctx, &plan).await;
        let ok = result.is_ok();
        ctx.reporter.emit(Event::PhaseFinished {
            phase: p.name().into(),
            ok,
            seconds: started.elapsed().as_secs_f64(),
        });
        ctx.state.write(|s| s.set_phase_done(p.name(), ok)).await?;
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use progress::Style;
    use std::sync::atomic::AtomicUsize;

    fn ctx(dir: &std::path::Path, concurrency: usize) -> RunCtx {
        RunCtx {
            reporter: Arc::new(Reporter::new(Style::Silent)),
            state: SharedState::new(crate::state::StateStore::open(dir, "t").unwrap()),
            concurrency,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn for_each_bounds_concurrency_and_isolates_failures() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), 3);
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let items: Vec<(String, usize)> = (0..12).map(|i| (format!("n{i}"), i)).collect();
        let done = Arc::new(AtomicUsize::new(0));
        let r = ctx
            .for_each("nodes", items, |_, i| {
                let (now, max, done) = (now.clone(), max.clone(), done.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    if i == 4 { Err("unreachable".to_owned()) } else { Ok(()) }
                }
            })
            .await;
        assert_eq!(max.load(Ordering::SeqCst), 3, "never more than the limit at once");
        assert_eq!(done.load(Ordering::SeqCst), 12, "the failure did not stop the others");
        match r {
            Err(PhaseError::Targets { failures, .. }) => {
                assert_eq!(failures, vec![("n4".to_owned(), "unreachable".to_owned())])
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn once_interrupted_no_new_target_starts() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path(), 1);
        let started = Arc::new(AtomicUsize::new(0));
        let items: Vec<(String, ())> = (0..5).map(|i| (format!("n{i}"), ())).collect();
        let cancel = ctx.cancel.clone();
        let r = ctx
            .for_each("nodes", items, |_, ()| {
                let (started, cancel) = (started.clone(), cancel.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst); // Ctrl-C arrives during the first step
                    Ok(())
                }
            })
            .await;
        assert!(matches!(r, Err(PhaseError::Interrupted)), "{r:?}");
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the in-flight step finished, nothing new began"
        );
    }
}

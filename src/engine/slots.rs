//! The one primitive for bounded parallelism: `--concurrency` slots bound the
//! work in flight (connections and calls), not the waiting. A target holds a
//! slot while it works; while it waits for a reboot or a condition
//! ([`idle`], [`poll_until`]) it gives the slot back, and each check made
//! while waiting takes a slot only for that one call ([`call`]).
//!
//! The slot a target holds is kept in a task-local, so code deep in a phase
//! can go idle without every function in between passing a handle along.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one bounded fan-out and the permit the current target holds.
struct Held {
    slots: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

tokio::task_local! {
    static HELD: Held;
}

/// Slots shared by the targets of one fan-out.
#[derive(Clone)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    /// `limit` slots (at least one).
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit.max(1))))
    }

    /// Waits for a slot, then runs `start()`'s future holding it; `None`
    /// when `start` declines (the run was interrupted while queued).
    pub async fn run<F, Fut>(&self, start: F) -> Option<Fut::Output>
    where
        F: FnOnce() -> Option<Fut>,
        Fut: Future,
    {
        let permit = self.0.clone().acquire_owned().await.expect("slots are never closed");
        let fut = start()?;
        let held = Held {
            slots: self.0.clone(),
            permit: Mutex::new(Some(permit)),
        };
        Some(HELD.scope(held, fut).await)
    }
}

/// Runs `fut` without holding the current target's slot (a wait), and takes
/// a slot again before returning. Outside a fan-out it only runs `fut`.
pub async fn idle<F: Future>(fut: F) -> F::Output {
    let Ok(slots) = HELD.try_with(|h| {
        h.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
        h.slots.clone()
    }) else {
        return fut.await;
    };
    let out = fut.await;
    let permit = slots.acquire_owned().await.expect("slots are never closed");
    let _ = HELD.try_with(|h| *h.permit.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit));
    out
}

/// Runs one call: inside [`idle`] it takes a slot for the call's duration;
/// while the target holds its slot, or outside a fan-out, it only runs `fut`.
pub async fn call<F: Future>(fut: F) -> F::Output {
    let need = HELD
        .try_with(|h| {
            let holding = h.permit.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            (!holding).then(|| h.slots.clone())
        })
        .ok()
        .flatten();
    let _permit = match need {
        Some(slots) => Some(slots.acquire_owned().await.expect("slots are never closed")),
        None => None,
    };
    fut.await
}

/// What one check of a condition saw.
pub enum Check<T> {
    /// The condition holds.
    Met(T),
    /// Not yet; what was seen instead (quoted in the timeout error).
    Not(String),
    /// It never will (a refusal, not a transient error): stop waiting and
    /// return this, as the error, unchanged.
    Fail(String),
}

/// Waits until `check` reports [`Check::Met`] or `budget` runs out; holds no
/// slot between checks, each check is one [`call`], and the pause between
/// checks grows from 100 ms to 1 s. The timeout error names `what` and the
/// last thing seen. `stop` is checked between attempts (Ctrl-C).
pub async fn poll_until<T, F, Fut>(what: &str, budget: Duration, stop: impl Fn() -> bool, check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T>>,
{
    poll_every(what, budget, Duration::from_secs(1), stop, check).await
}

/// [`poll_until`] with the pause between checks growing to `cap` only: for
/// a wait whose end should be seen at once (a node back from its reboot),
/// where a check of a node that is down costs a refused connection.
pub async fn poll_every<T, F, Fut>(
    what: &str,
    budget: Duration,
    cap: Duration,
    stop: impl Fn() -> bool,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T>>,
{
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(100).min(cap);
    idle(async {
        loop {
            let last = match call(check()).await {
                Check::Met(t) => return Ok(t),
                Check::Not(last) => last,
                Check::Fail(why) => return Err(why),
            };
            if Instant::now() >= deadline {
                return Err(format!("{what}: not after {budget:?}; last seen: {last}"));
            }
            if stop() {
                return Err(format!("{what}: interrupted while waiting; last seen: {last}"));
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(cap);
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Work in flight is bounded; waiting is not: 8 targets with 2 slots all
    /// reach a barrier inside `idle` together (holding their slots they
    /// could not: only 2 would ever get there), and calls stay bounded.
    #[tokio::test]
    async fn waiting_targets_hold_no_slot_and_calls_stay_bounded() {
        let slots = Slots::new(2);
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let work = |now: Arc<AtomicUsize>, max: Arc<AtomicUsize>| async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            now.fetch_sub(1, Ordering::SeqCst);
        };
        let targets = (0..8).map(|_| {
            let (slots, now, max, barrier) = (slots.clone(), now.clone(), max.clone(), barrier.clone());
            async move {
                slots
                    .run(|| {
                        Some(async {
                            work(now.clone(), max.clone()).await;
                            idle(async {
                                barrier.wait().await;
                                // A check while waiting takes a slot for the call only.
                                call(work(now.clone(), max.clone())).await;
                            })
                            .await;
                            work(now.clone(), max.clone()).await;
                        })
                    })
                    .await
            }
        });
        let all = tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(targets)).await;
        assert!(
            all.is_ok(),
            "targets waiting in `idle` kept their slots: the barrier was never reached by all 8"
        );
        assert_eq!(max.load(Ordering::SeqCst), 2, "never more calls in flight than slots");
    }

    #[tokio::test]
    async fn poll_until_reports_what_it_last_saw() {
        let tries = AtomicUsize::new(0);
        let r: Result<(), String> = poll_until(
            "etcd has 3 members",
            Duration::from_secs(1),
            || false,
            || {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                async move { Check::Not(format!("{} members", n.min(2))) }
            },
        )
        .await;
        assert_eq!(r.unwrap_err(), "etcd has 3 members: not after 1s; last seen: 2 members");
        let met = poll_until("x", Duration::from_secs(3), || false, || async { Check::Met(7) }).await;
        assert_eq!(met, Ok(7));
    }
}

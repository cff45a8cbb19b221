//! Bounded concurrency across hosts: every host gets its own result, a failure
//! on one never stops the others, and every error names its host and step.

use std::future::Future;

use futures::StreamExt;

use super::{Error, Pool, Session, Target};

/// The outcome on one host.
#[derive(Debug)]
pub struct NodeResult<R> {
    /// The target's name.
    pub name: String,
    pub result: Result<R, Error>,
}

/// Connects to each target through `pool` (at most `concurrency` at once) and
/// runs `f` with its session. Results come back in the order of `targets`.
pub async fn fanout<R, F, Fut>(pool: &Pool, targets: &[Target], concurrency: usize, f: F) -> Vec<NodeResult<R>>
where
    F: Fn(Session) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
{
    let f = &f;
    let mut results: Vec<(usize, NodeResult<R>)> = futures::stream::iter(targets.iter().enumerate())
        .map(|(i, t)| async move {
            let result = match pool.session(t).await {
                Ok(s) => f(s).await,
                Err(e) => Err(e),
            };
            (
                i,
                NodeResult {
                    name: t.name.clone(),
                    result,
                },
            )
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

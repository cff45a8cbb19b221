//! Deadlines and retry with exponential backoff for Talos calls.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::Code;

use super::error::TalosError;

/// How long calls may take and how UNAVAILABLE (a rebooting node) is retried.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Deadline of one unary attempt.
    pub deadline: Duration,
    /// Deadline of one streaming attempt (kubeconfig, snapshot, recover).
    pub stream_deadline: Duration,
    /// Budget for all attempts of one call, retries and backoff included.
    pub retry_budget: Duration,
    /// First backoff; doubled after each retry up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest backoff between two attempts.
    pub max_backoff: Duration,
}

impl CallPolicy {
    /// Retries for at most `budget`, each attempt at most 10 s (and at most
    /// the budget), backing off up to 1 s: what polls and probes use.
    pub fn within(budget: Duration) -> Self {
        Self {
            deadline: Duration::from_secs(10).min(budget.max(Duration::from_secs(1))),
            retry_budget: budget,
            max_backoff: Duration::from_secs(1),
            ..Self::default()
        }
    }
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            stream_deadline: Duration::from_secs(600),
            retry_budget: Duration::from_secs(300),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl TalosError {
    /// Whether a poll should try again: what [`with_retry_tls`] retries
    /// (when `server_tls`) or [`with_retry`] retries, or a missed deadline.
    pub fn is_transient(&self, server_tls: bool) -> bool {
        matches!(self, TalosError::Deadline { .. }) || retryable(self, &[], server_tls)
    }
}

/// Whether an error means "try again later": the node is unreachable or
/// rebooting (UNAVAILABLE, connection refused/reset), or one of `also`.
fn retryable(err: &TalosError, also: &[Code], server_tls: bool) -> bool {
    match err {
        TalosError::Connect { .. } => true,
        TalosError::Tls {
            server_certificate: true,
            ..
        } => server_tls,
        TalosError::Rpc { code, .. } => *code == Code::Unavailable || also.contains(code),
        _ => false,
    }
}

/// Runs `attempt` with a per-attempt `deadline`, retrying retryable failures
/// with jittered exponential backoff until `policy.retry_budget` is spent.
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &CallPolicy,
    node: &str,
    rpc: &'static str,
    deadline: Duration,
    also_retry: &[Code],
    attempt: F,
) -> Result<T, TalosError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TalosError>>,
{
    retry_loop(policy, node, rpc, deadline, also_retry, false, attempt).await
}

/// [`with_retry`] that also retries node certificates we reject (a node still
/// in maintenance mode right after ApplyConfiguration).
pub(crate) async fn with_retry_tls<T, F, Fut>(
    policy: &CallPolicy,
    node: &str,
    rpc: &'static str,
    deadline: Duration,
    attempt: F,
) -> Result<T, TalosError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TalosError>>,
{
    retry_loop(policy, node, rpc, deadline, &[], true, attempt).await
}

async fn retry_loop<T, F, Fut>(
    policy: &CallPolicy,
    node: &str,
    rpc: &'static str,
    deadline: Duration,
    also_retry: &[Code],
    server_tls: bool,
    mut attempt: F,
) -> Result<T, TalosError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TalosError>>,
{
    let started = Instant::now();
    let mut backoff = policy.initial_backoff;
    loop {
        let result = match tokio::time::timeout(deadline, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(TalosError::Deadline {
                node: node.to_owned(),
                rpc,
                after: deadline,
            }),
        };
        match result {
            Err(err)
                if retryable(&err, also_retry, server_tls) && started.elapsed() + backoff < policy.retry_budget =>
            {
                tracing::debug!(node, rpc, error = %err, ?backoff, "retrying");
                let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 4);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(policy.max_backoff);
            }
            other => return other,
        }
    }
}

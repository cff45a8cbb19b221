//! Retries for API calls on 429 and 5xx answers and on dropped connections,
//! with exponential backoff that honours the server's Retry-After (which
//! kube-rs exposes as `details.retryAfterSeconds` of the `Status`). kube-rs's
//! own retry layer is switched off in [`crate::k8s::Client`] so there is one policy.

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Upper bound on a server-requested Retry-After.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Whether an error is worth retrying, and the server's wait hint if it gave one.
pub fn retryable(e: &kube::Error) -> Option<Option<Duration>> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 429 | 500 | 502 | 503 | 504) => Some(
            s.details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => Some(None),
        _ => None,
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay)
    }

    /// Runs `op` until it succeeds, fails for good, or attempts run out.
    /// `what` (no secret values) names the call in debug logs.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Some(hint) = retryable(&e) else {
                        return Err(e);
                    };
                    if attempt >= self.attempts {
                        return Err(e);
                    }
                    let delay = hint.map_or_else(|| self.backoff(attempt), |h| h.min(self.max_retry_after));
                    tracing::debug!(
                        call = what,
                        attempt,
                        of = self.attempts,
                        ?delay,
                        reason = %short(&e),
                        "retrying Kubernetes API call"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// A one-line reason: the HTTP code and reason for API errors, else the error text.
pub fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        other => other.to_string(),
    }
}

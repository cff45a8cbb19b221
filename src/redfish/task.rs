//! Long-running operations: a `202 Accepted` answer carries a task monitor
//! in `Location`, polled until the task is done or the deadline passes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;
use tracing::debug;

use super::client::Response;
use super::{Client, ErrorKind, Result};

/// After an action or PATCH: returns at once unless the answer is a 202
/// with a task monitor, which is then waited for.
pub async fn follow(client: &Client, r: &Response, step: &str, timeout: Duration) -> Result<()> {
    if r.status != StatusCode::ACCEPTED {
        return Ok(());
    }
    let monitor = r
        .location()
        .or_else(|| r.body.get("@odata.id").and_then(Value::as_str).map(str::to_owned));
    match monitor {
        Some(m) => wait(client, &m, step, timeout).await,
        // Accepted without a monitor: nothing to follow; callers poll the
        // resource they changed.
        None => Ok(()),
    }
}

/// Polls a task monitor (or Task resource) until it completes. A monitor
/// answers 202 while running and the final result after; a Task resource
/// carries `TaskState`.
pub async fn wait(client: &Client, monitor: &str, step: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(500);
    loop {
        let r = client.get(monitor, &format!("{step}: polling task {monitor}")).await?;
        let state = r.body.get("TaskState").and_then(Value::as_str).map(str::to_owned);
        debug!(node = client.node(), monitor, status = %r.status, state = ?state, "task");
        let running = r.status == StatusCode::ACCEPTED
            || matches!(
                state.as_deref(),
                Some("New" | "Starting" | "Running" | "Pending" | "Stopping" | "Suspended" | "Service")
            );
        if !running {
            return match state.as_deref() {
                Some("Exception" | "Killed" | "Cancelled" | "Interrupted") => {
                    Err(client.err(ErrorKind::Protocol(format!(
                        "{step}: task {monitor} ended {}: {}",
                        state.unwrap_or_default(),
                        task_messages(&r.body)
                    ))))
                }
                _ => Ok(()),
            };
        }
        if Instant::now() + interval > deadline {
            return Err(client.err(ErrorKind::Timeout(format!(
                "{step}: task {monitor} still running after {timeout:?}"
            ))));
        }
        let retry_after = r
            .headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
        tokio::time::sleep(retry_after.unwrap_or(interval).min(Duration::from_secs(10))).await;
        interval = (interval * 2).min(Duration::from_secs(5));
    }
}

fn task_messages(body: &Value) -> String {
    let msgs: Vec<&str> = body
        .get("Messages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("Message").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if msgs.is_empty() {
        "no message".into()
    } else {
        msgs.join("; ")
    }
}

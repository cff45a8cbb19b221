//! The cluster-side lock of `up` and `add-node`: a Lease taken once the
//! Kubernetes API answers (before phase -1 when a kubeconfig from an earlier
//! run reaches it, else right after phase -1), renewed while the run lasts,
//! released at its end. The local state-dir lock stops two runs on one
//! workstation; this one stops two workstations.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::engine::PhaseError;
use crate::k8s::lease::{self, Held, LockError};

/// A held lease and the task renewing it.
pub struct ClusterLock {
    stop: tokio::sync::oneshot::Sender<()>,
    renewer: tokio::task::JoinHandle<Option<Held>>,
}

fn failed(message: String) -> PhaseError {
    PhaseError::Failed {
        phase: "lock".into(),
        message,
    }
}

/// Takes the lease through `kubeconfig`. `Ok(None)` when the API does not
/// answer and `required` is false (a first run: phase -1 makes the API).
pub async fn take(
    kubeconfig: &Path,
    cluster: &str,
    force_unlock: bool,
    required: bool,
    cancel: Arc<AtomicBool>,
) -> Result<Option<ClusterLock>, PhaseError> {
    let client = match crate::k8s::Client::from_kubeconfig(kubeconfig).await {
        Ok(c) => c,
        Err(e) if !required => {
            tracing::debug!("cluster lock: no client yet: {e}");
            return Ok(None);
        }
        Err(e) => return Err(failed(format!("cluster {cluster}: taking the cluster lock: {e}"))),
    };
    let me = lease::identity();
    let held = match lease::acquire(&client, &me, false).await {
        Ok(h) => h,
        Err(LockError::Held { holder, since, renewed }) if force_unlock => {
            confirm_takeover(cluster, &holder, &since, &renewed)?;
            lease::acquire(&client, &me, true)
                .await
                .map_err(|e| failed(format!("cluster {cluster}: {e}")))?
        }
        Err(e @ LockError::Held { .. }) => return Err(failed(format!("cluster {cluster}: {e}; nothing was changed"))),
        Err(LockError::Api(e)) if !required => {
            tracing::debug!("cluster lock: API not answering yet: {e}");
            return Ok(None);
        }
        Err(e) => return Err(failed(format!("cluster {cluster}: taking the cluster lock: {e}"))),
    };
    tracing::info!(cluster, holder = %me, "took the cluster lock (Lease {}/{})", lease::NAMESPACE, lease::NAME);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let renewer = tokio::spawn(async move {
        let mut held = held;
        loop {
            tokio::select! {
                _ = &mut stopped => return Some(held),
                _ = tokio::time::sleep(lease::DURATION / 4) => {}
            }
            if let Err(e) = held.renew().await {
                // Taken over (or gone): finish what is in flight, start nothing new.
                tracing::error!("lost the cluster lock: {e}; stopping after the steps in flight");
                cancel.store(true, Ordering::SeqCst);
                return None;
            }
        }
    });
    Ok(Some(ClusterLock { stop, renewer }))
}

impl ClusterLock {
    /// Stops renewing and deletes the lease (if still ours).
    pub async fn release(self) {
        let _ = self.stop.send(());
        if let Ok(Ok(Some(held))) = tokio::time::timeout(Duration::from_secs(10), self.renewer).await {
            held.release().await;
        }
    }
}

/// `--force-unlock`: the cluster's name, typed on stdin, or nothing is taken over.
fn confirm_takeover(cluster: &str, holder: &str, since: &str, renewed: &str) -> Result<(), PhaseError> {
    let detail = format!("since {since}, renewed {renewed}");
    if crate::holder::confirm_takeover(cluster, &format!("cluster {cluster}"), holder, &detail) {
        Ok(())
    } else {
        Err(failed(format!(
            "cluster {cluster}: lock held by {holder} not taken over (confirmation not typed); nothing was changed"
        )))
    }
}

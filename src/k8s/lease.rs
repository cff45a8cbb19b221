//! A cluster-side lock that holds across workstations: a
//! `coordination.k8s.io/v1` Lease (`kube-system/bootstrap`) naming who runs
//! and since when, renewed while the run lasts and deleted at its end. It is
//! what client-go's leader election uses (holderIdentity, renewTime,
//! leaseDurationSeconds; an expired lease may be taken over), with optimistic
//! concurrency on `resourceVersion` so two takers cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};

use super::{Client, Error};

/// Namespace and name of the lock.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "bootstrap";
/// How long a lease stays valid without renewal.
pub const DURATION: Duration = Duration::from_secs(60);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds a lease that has not expired.
    #[error(
        "the cluster is locked by {holder} since {since} (Lease {NAMESPACE}/{NAME}, renewed {renewed}; it expires 60 s after its last renewal, at once when its process on this host is gone); wait for that run to finish, or take the lock over with --force-unlock"
    )]
    Held {
        holder: String,
        since: String,
        renewed: String,
    },
    #[error(transparent)]
    Api(#[from] Error),
}

/// The lease this run holds.
pub struct Held {
    client: Client,
    lease: Lease,
}

use crate::holder::dead_here;
pub use crate::holder::identity;

fn api(client: &Client) -> Api<Lease> {
    Api::namespaced(client.kube().clone(), NAMESPACE)
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether `lease` is held by someone else and still valid at `at`.
fn held_by_other(lease: &Lease, me: &str, at: Timestamp) -> Option<(String, String, String)> {
    let spec = lease.spec.as_ref()?;
    let holder = spec
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty() && h != me && !dead_here(h))?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(DURATION.as_secs() as i32));
    let expires = renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
        .ok()?;
    let since = spec
        .acquire_time
        .as_ref()
        .map_or("an unknown time".into(), |t| t.0.to_string());
    (expires > at).then(|| (holder, since, renewed.to_string()))
}

/// Takes the lock as `me`: creates the lease, or takes over an expired one
/// (or any one, with `force`). Refuses while another run's lease is valid.
pub async fn acquire(client: &Client, me: &str, force: bool) -> Result<Held, LockError> {
    let leases = api(client);
    let what = format!("Lease {NAMESPACE}/{NAME}");
    let fail = |step, e: &kube::Error| LockError::Api(client.api_error(step, &what, e));
    // 409 (AlreadyExists on create, Conflict on replace): another taker won just now.
    let raced = |step, e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 409 => LockError::Held {
            holder: "another run".into(),
            since: "just now".into(),
            renewed: "just now".into(),
        },
        e => fail(step, &e),
    };
    let spec = LeaseSpec {
        holder_identity: Some(me.to_owned()),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        ..LeaseSpec::default()
    };
    let existing = leases.get_opt(NAME).await.map_err(|e| fail("get", &e))?;
    let lease = match existing {
        None => {
            let new = Lease {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    namespace: Some(NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &new)
                .await
                .map_err(|e| raced("create", e))?
        }
        Some(mut old) => {
            if !force && let Some((holder, since, renewed)) = held_by_other(&old, me, Timestamp::now()) {
                return Err(LockError::Held { holder, since, renewed });
            }
            old.spec = Some(spec);
            // resourceVersion kept: a taker that raced us gets 409 Conflict.
            leases
                .replace(NAME, &PostParams::default(), &old)
                .await
                .map_err(|e| raced("replace", e))?
        }
    };
    Ok(Held {
        client: client.clone(),
        lease,
    })
}

impl Held {
    /// Renews the lease; an error means the lock was lost (taken over).
    pub async fn renew(&mut self) -> Result<(), Error> {
        let leases = api(&self.client);
        let mut lease = self.lease.clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        let what = format!("Lease {NAMESPACE}/{NAME}");
        self.lease = leases
            .replace(NAME, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.client.api_error("renew", &what, &e))?;
        Ok(())
    }

    /// Deletes the lease if it is still ours (precondition on its uid and
    /// resourceVersion).
    pub async fn release(self) {
        let leases = api(&self.client);
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: self.lease.metadata.uid.clone(),
                resource_version: self.lease.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = leases.delete(NAME, &dp).await {
            tracing::warn!("releasing Lease {NAMESPACE}/{NAME}: {}", super::retry::short(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                acquire_time: Some(MicroTime(renewed)),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(secs),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_valid_lease_of_another_run_is_held_an_expired_or_own_one_is_not() {
        let t: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let later = |s| t.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(s)).unwrap();
        let l = lease("ana@ws1 pid 7", t, 60);
        let (holder, since, _) = held_by_other(&l, "bob@ws2 pid 9", later(30)).expect("held");
        assert_eq!(holder, "ana@ws1 pid 7");
        assert_eq!(since, "2026-12-02T10:00:00Z");
        assert!(held_by_other(&l, "bob@ws2 pid 9", later(61)).is_none(), "expired");
        assert!(held_by_other(&l, "ana@ws1 pid 7", later(30)).is_none(), "our own");
        let here = |pid: u32| format!("ana@{} pid {pid}", crate::holder::hostname());
        let alive = lease(&here(std::process::id()), t, 60);
        assert!(
            held_by_other(&alive, "bob@ws2 pid 9", later(30)).is_some(),
            "a live run here holds it"
        );
        let dead = lease(&here(u32::MAX - 1), t, 60);
        assert!(
            held_by_other(&dead, "bob@ws2 pid 9", later(30)).is_none(),
            "a dead run here does not"
        );
    }
}

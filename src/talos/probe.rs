//! What a Talos node answers, classified within a few seconds: ours (mTLS
//! with the cluster's credentials), a fresh node in maintenance mode,
//! another cluster's, or not answering. Phase -1 plans from it; `reset`
//! checks identity with it.

use std::net::SocketAddr;
use std::time::Duration;

use super::{CallPolicy, TalosClient, TalosCredentials, TalosError};
use crate::engine::slots;

/// What a node answered when probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Configured with this cluster's credentials; `etcd`: its etcd runs.
    Ours { etcd: bool },
    /// Fresh node in maintenance mode, waiting for a configuration.
    Maintenance,
    /// Serves a certificate of another cluster: refused.
    Foreign(String),
    /// Not answering (powered off, rebooting, no route).
    Unreachable(String),
}

/// Classifies a node by what it answers, within a few seconds. A node seen
/// as another cluster's is asked once more a second later: one that was
/// rebooting from maintenance into its configuration while we looked (its
/// certificate changed between two connection attempts, or it already asked
/// for a client certificate) answers as ours then.
pub async fn probe(name: &str, addr: SocketAddr, control_plane: bool, creds: Option<&TalosCredentials>) -> Seen {
    match probe_once(name, addr, control_plane, creds).await {
        Seen::Foreign(_) => {
            slots::idle(tokio::time::sleep(Duration::from_secs(1))).await;
            probe_once(name, addr, control_plane, creds).await
        }
        seen => seen,
    }
}

async fn probe_once(name: &str, addr: SocketAddr, control_plane: bool, creds: Option<&TalosCredentials>) -> Seen {
    let quick = CallPolicy::within(Duration::from_secs(2));
    if let Some(creds) = creds {
        let client = match TalosClient::configured_with(name, addr, creds, quick.clone()) {
            Ok(c) => c,
            Err(e) => return Seen::Unreachable(e.to_string()),
        };
        match client.version().await {
            Ok(_) => {
                let etcd = control_plane
                    && client
                        .service_list()
                        .await
                        .is_ok_and(|s| s.iter().any(|s| s.id == "etcd" && s.state == "Running"));
                return Seen::Ours { etcd };
            }
            Err(e @ (TalosError::Connect { .. } | TalosError::Deadline { .. })) => {
                return Seen::Unreachable(e.to_string());
            }
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => return Seen::Unreachable(e.to_string()),
            Err(_) => {} // not our certificate: maintenance or foreign, asked next
        }
    }
    let answer = match TalosClient::maintenance_with(name, addr, None, quick).await {
        Ok((client, _)) => client.version().await.map(drop),
        Err(e) => Err(e),
    };
    match answer {
        Ok(()) => Seen::Maintenance,
        Err(e @ (TalosError::Connect { .. } | TalosError::Deadline { .. })) => Seen::Unreachable(e.to_string()),
        Err(e) if e.code() == Some(tonic::Code::Unavailable) => Seen::Unreachable(e.to_string()),
        Err(e) => Seen::Foreign(e.to_string()),
    }
}

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

/// Which answer a probe asks for first; the other is asked only when the
/// first does not fit (a fresh rack's nodes are in maintenance mode: asking
/// for mTLS first would cost each a refused handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ours,
    Maintenance,
}

/// Classifies a node by what it answers, within a few seconds. A node seen
/// as another cluster's is asked once more a second later: one that was
/// rebooting from maintenance into its configuration while we looked (its
/// certificate changed between two connection attempts, or it already asked
/// for a client certificate) answers as ours then.
pub async fn probe(name: &str, addr: SocketAddr, control_plane: bool, creds: Option<&TalosCredentials>) -> Seen {
    probe_expecting(name, addr, control_plane, creds, Expect::Ours).await
}

/// [`probe`], asking first for what `expect` names.
pub async fn probe_expecting(
    name: &str,
    addr: SocketAddr,
    control_plane: bool,
    creds: Option<&TalosCredentials>,
    expect: Expect,
) -> Seen {
    probe_keeping(name, addr, control_plane, creds, expect).await.0
}

/// [`probe_expecting`], keeping the connection that found the node in
/// maintenance mode, with the certificate fingerprint it recorded (for
/// reads that must see the same machine).
pub async fn probe_keeping(
    name: &str,
    addr: SocketAddr,
    control_plane: bool,
    creds: Option<&TalosCredentials>,
    expect: Expect,
) -> (Seen, Option<(TalosClient, String)>) {
    let node = Target {
        name,
        addr,
        control_plane,
    };
    match probe_once(&node, creds, expect).await {
        (Seen::Foreign(_), _) => {
            slots::idle(tokio::time::sleep(Duration::from_secs(1))).await;
            probe_once(&node, creds, expect).await
        }
        seen => seen,
    }
}

/// The node a probe asks.
struct Target<'a> {
    name: &'a str,
    addr: SocketAddr,
    control_plane: bool,
}

fn quick() -> CallPolicy {
    CallPolicy::within(Duration::from_secs(2))
}

fn unreachable(e: &TalosError) -> bool {
    matches!(e, TalosError::Connect { .. } | TalosError::Deadline { .. }) || e.code() == Some(tonic::Code::Unavailable)
}

async fn probe_once(
    node: &Target<'_>,
    creds: Option<&TalosCredentials>,
    expect: Expect,
) -> (Seen, Option<(TalosClient, String)>) {
    let creds = match (creds, expect) {
        (Some(creds), Expect::Ours) => match ours(node, creds).await {
            Some(seen) => return (seen, None),
            None => None, // not our certificate: maintenance or foreign, asked next
        },
        (creds, _) => creds,
    };
    let seen = match maintenance(node).await {
        Ok(kept) => return (Seen::Maintenance, Some(kept)),
        Err(e) if unreachable(&e) => Seen::Unreachable(e.to_string()),
        Err(e) => match creds {
            Some(creds) => ours(node, creds).await.unwrap_or_else(|| Seen::Foreign(e.to_string())),
            None => Seen::Foreign(e.to_string()),
        },
    };
    (seen, None)
}

/// Asks over mTLS: ours or unreachable, `None` when the node does not take
/// our credentials.
async fn ours(node: &Target<'_>, creds: &TalosCredentials) -> Option<Seen> {
    let client = match TalosClient::configured_with(node.name, node.addr, creds, quick()) {
        Ok(c) => c,
        Err(e) => return Some(Seen::Unreachable(e.to_string())),
    };
    match client.version().await {
        Ok(_) => {
            let etcd = node.control_plane
                && client
                    .service_list()
                    .await
                    .is_ok_and(|s| s.iter().any(|s| s.id == "etcd" && s.state == "Running"));
            Some(Seen::Ours { etcd })
        }
        Err(e) if unreachable(&e) => Some(Seen::Unreachable(e.to_string())),
        Err(_) => None,
    }
}

/// Asks without credentials, as a node in maintenance mode answers; the
/// connection and the fingerprint it recorded.
async fn maintenance(node: &Target<'_>) -> Result<(TalosClient, String), TalosError> {
    let (client, fingerprint) = TalosClient::maintenance_with(node.name, node.addr, None, quick()).await?;
    client.version().await?;
    Ok((client, fingerprint))
}

//! Typed errors of the Talos client; every variant names the node, and
//! per-call variants the RPC. Secrets never appear in them.

use std::time::Duration;

/// A Talos client failure.
#[derive(Debug, thiserror::Error)]
pub enum TalosError {
    /// TCP or TLS connection to the node failed.
    #[error("node {node} ({addr}): cannot connect to the Talos API: {message}")]
    Connect {
        node: String,
        addr: String,
        message: String,
    },
    /// The node answered the RPC with a gRPC error status.
    #[error("node {node}: {rpc} failed: {code:?}: {message}")]
    Rpc {
        node: String,
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// TLS refused: certificate rejected by either side, or a maintenance
    /// node's key changed. Never retried.
    #[error("node {node}: {rpc}: TLS failure: {message}")]
    Tls {
        node: String,
        rpc: &'static str,
        message: String,
        /// We rejected the node's certificate (as opposed to the node
        /// refusing ours): right after ApplyConfiguration this means the node
        /// still serves its maintenance certificate.
        server_certificate: bool,
    },
    /// A response message carried `metadata.error` (the node failed behind the API).
    #[error("node {node}: {rpc} failed on {hostname}: {message}")]
    Node {
        node: String,
        rpc: &'static str,
        hostname: String,
        message: String,
    },
    /// The call did not finish within its deadline (retries included).
    #[error("node {node}: {rpc} did not answer within {after:?}")]
    Deadline {
        node: String,
        rpc: &'static str,
        after: Duration,
    },
    /// The response was well-formed gRPC but not what the protocol promises.
    #[error("node {node}: {rpc}: unexpected response: {message}")]
    Protocol {
        node: String,
        rpc: &'static str,
        message: String,
    },
    /// Reading or writing a local file for the call failed.
    #[error("node {node}: {rpc}: {path}: {source}")]
    Io {
        node: String,
        rpc: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Client credentials (talosconfig, PEM) are unusable.
    #[error("Talos credentials: {0}")]
    Credentials(String),
}

impl TalosError {
    /// The gRPC status code, when the node answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn rpc(node: &str, rpc: &'static str, status: &tonic::Status) -> Self {
        if let Some((message, server_certificate)) = tls_failure(status) {
            return Self::Tls {
                node: node.to_owned(),
                rpc,
                message,
                server_certificate,
            };
        }
        // A status with a source was made up by the client from a broken
        // connection (a node going down mid-call), not sent by the node.
        let transport = std::error::Error::source(status).is_some();
        let code = match status.code() {
            tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::Cancelled if transport => {
                tonic::Code::Unavailable
            }
            code => code,
        };
        Self::Rpc {
            node: node.to_owned(),
            rpc,
            code,
            message: status.message().to_owned(),
        }
    }
}

/// The rustls error somewhere in `err`'s source chain, if any, and whether it
/// is our verdict on the node's certificate: a TLS failure is a verdict on
/// certificates, not a node that is still rebooting.
pub(crate) fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<(String, bool)> {
    let verdict = |tls: &rustls::Error| {
        let ours = matches!(tls, rustls::Error::InvalidCertificate(_) | rustls::Error::General(_));
        (tls.to_string(), ours)
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(verdict(tls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(verdict(tls));
        }
        current = e.source();
    }
    None
}

//! Kubernetes apply/wait layer on `kube` (kube-rs) and `k8s-openapi`: a client
//! from a kubeconfig ([`client`]), server-side apply of multi-document YAML
//! through discovery ([`apply`]), plan mode ([`diff`]), typed waits with
//! deadlines ([`wait`]), retries on 429/5xx ([`retry`]), and redaction of
//! Secret values from everything that is logged or returned ([`redact`]).

pub mod apply;
pub mod client;
pub mod diff;
pub mod drain;
pub mod lease;
pub mod redact;
pub mod retry;
pub mod wait;

use std::time::Duration;

pub use apply::{Action, ApplyOpts, Change, apply_manifests, parse_manifests};
pub use client::Client;
pub use retry::RetryPolicy;

/// What went wrong talking to a cluster. Messages name the API server and the
/// step, and never carry Secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {origin}: {message}")]
    Kubeconfig { origin: String, message: String },
    /// A manifest document is not a Kubernetes object.
    #[error("manifest document {index}: {message}")]
    Manifest { index: usize, message: String },
    /// The API server refused or failed a request (after retries).
    #[error("{server}: {step} {object}: {message}")]
    Api {
        server: String,
        step: &'static str,
        object: String,
        message: String,
        /// HTTP status, when the server answered.
        code: Option<u16>,
    },
    /// The server does not serve this kind (CRD missing or not Established).
    #[error(
        "{server}: {object}: the server does not serve {api_version} {kind} (is its CRD installed and Established?)"
    )]
    UnknownKind {
        server: String,
        object: String,
        api_version: String,
        kind: String,
    },
    /// A wait reached its deadline.
    #[error("{server}: timed out after {waited:?} waiting for {what}; last seen: {last_seen}")]
    Timeout {
        server: String,
        what: String,
        waited: Duration,
        last_seen: String,
    },
}

impl Error {
    /// The HTTP status of an API error, if any.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }
}

//! A [`Client`]: a `kube::Client` built from a kubeconfig, remembering which
//! API server it talks to (for error messages) and how to retry.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::redact::scrub_kubeconfig;
use super::{Error, RetryPolicy};

/// A connection to one cluster's API server.
#[derive(Clone)]
pub struct Client {
    kube: kube::Client,
    server: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Reads a kubeconfig file and connects with its current context.
    pub async fn from_kubeconfig(path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Kubeconfig {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_kubeconfig_yaml(&text, &origin).await
    }

    /// Connects with a kubeconfig given as YAML text; `origin` names it in errors.
    pub async fn from_kubeconfig_yaml(yaml: &str, origin: &str) -> Result<Self, Error> {
        crate::tls::install_crypto_provider();
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::Kubeconfig {
            origin: origin.to_owned(),
            message: scrub_kubeconfig(&format!("{what}: {e}"), yaml),
        };
        let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|e| fail("cannot parse", &e))?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| fail("unusable", &e))?;
        // One retry policy, ours (it covers 5xx and dropped connections too).
        config.default_retry = false;
        let server = config.cluster_url.to_string().trim_end_matches('/').to_owned();
        let kube = kube::Client::try_from(config).map_err(|e| fail("cannot build a client", &e))?;
        Ok(Self {
            kube,
            server,
            retry: RetryPolicy::default(),
        })
    }

    /// Wraps an existing `kube::Client`; `server` names it in errors.
    pub fn new(kube: kube::Client, server: &str) -> Self {
        Self {
            kube,
            server: server.to_owned(),
            retry: RetryPolicy::default(),
        }
    }

    /// Uses another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The underlying kube-rs client.
    pub fn kube(&self) -> &kube::Client {
        &self.kube
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The retry policy in use.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The server's version (`/version`), retried like every call.
    pub async fn server_version(&self) -> Result<String, Error> {
        let v = self
            .retry
            .run("GET /version", || self.kube.apiserver_version())
            .await
            .map_err(|e| self.api_error("get", "/version", &e))?;
        Ok(v.git_version)
    }

    /// An [`Error::Api`] for a failed call on `object`.
    pub(crate) fn api_error(&self, step: &'static str, object: &str, e: &kube::Error) -> Error {
        let (message, code) = match e {
            kube::Error::Api(s) => (format!("{} (HTTP {} {})", s.message, s.code, s.reason), Some(s.code)),
            other => (other.to_string(), None),
        };
        Error::Api {
            server: self.server.clone(),
            step,
            object: object.to_owned(),
            message,
            code,
        }
    }
}

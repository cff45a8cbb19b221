//! Out-of-band control of a node through its BMC's Redfish API: sessions,
//! system discovery and identity, power, boot source override, virtual media
//! and task monitors. Every error names the node and the BMC URL; the BMC
//! password never appears in an error or a log line.

pub mod boot;
pub mod client;
pub mod media;
pub mod power;
pub mod system;
pub mod task;

use std::fmt;

pub use boot::BootTarget;
pub use client::{Client, ClientOptions};
pub use power::{PowerState, ResetType};
pub use system::System;

/// What went wrong talking to a BMC, and with which node and BMC.
#[derive(Debug)]
pub struct Error {
    /// The inventory node.
    pub node: String,
    /// The BMC's Redfish base URL, as in the inventory.
    pub bmc: String,
    pub kind: ErrorKind,
}

/// The kinds of BMC failures.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// No connection (refused, DNS, TLS handshake, timeout).
    #[error("cannot reach the BMC during {step}: {detail}")]
    Unreachable { step: String, detail: String },
    /// The BMC refused the credentials (HTTP 401/403).
    #[error(
        "the BMC refused the credentials of user `{user}` during {step} (HTTP {status}): check the user and the password reference"
    )]
    Unauthorized { user: String, step: String, status: u16 },
    /// Any other unexpected HTTP status.
    #[error("{request} answered HTTP {status}: {message}")]
    Http {
        /// `METHOD /path`.
        request: String,
        status: u16,
        message: String,
    },
    /// The BMC answered something that is not the Redfish we expect.
    #[error("{0}")]
    Protocol(String),
    /// The BMC's system is not the machine the inventory describes.
    #[error("identity check failed, refusing to act: {0}")]
    Identity(String),
    /// The BMC does not offer what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// A deadline passed while waiting.
    #[error("{0}")]
    Timeout(String),
    /// The inventory's BMC settings cannot be used.
    #[error("{0}")]
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (BMC {}): {}", self.node, self.bmc, self.kind)
    }
}

impl std::error::Error for Error {}

/// Result of BMC operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_node_and_bmc_and_urls_lose_their_credentials() {
        let e = Error {
            node: "cp-1".into(),
            bmc: client::shown_url("https://root:calvin@10.0.0.5/"),
            kind: ErrorKind::Timeout("system 1 is still Off".into()),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("node cp-1 (BMC https://10.0.0.5/): system 1"),
            "{text}"
        );
        assert!(!text.contains("calvin"), "{text}");
        assert_eq!(client::shown_url("http://127.0.0.1:8101"), "http://127.0.0.1:8101");
        assert_eq!(PowerState::parse(Some("PoweringOn")), PowerState::PoweringOn);
        assert_eq!(PowerState::parse(None).to_string(), "(not reported)");
    }
}

//! SSH transport (russh): verified host keys, key/agent authentication, one
//! reused connection per host ([`Pool`]), commands with timeouts and sudo
//! ([`Session::exec`]), atomic SFTP uploads ([`Session::upload`]) and bounded
//! fan-out across hosts ([`fanout`]).
//!
//! Nothing here reads global state implicitly: where known_hosts, ssh config and
//! the agent live comes from [`Options`] ([`Options::from_user_env`] for the CLI),
//! so tests point the transport at their own files.

pub mod auth;
pub mod config;
pub mod download;
pub mod fanout;
pub mod host_lock;
pub mod known_hosts;
mod proxy;
pub mod scan;
pub mod session;
pub mod upload;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use download::Downloaded;
pub use fanout::{NodeResult, fanout};
pub use known_hosts::fingerprint;
pub use session::{ExecOpts, Output, Session};
pub use upload::{Source, UploadOpts};

use crate::inventory::{JumpHost, Node};
use crate::secret::SecretRef;

/// Where the transport finds its files and how it behaves. No field is read
/// from the environment after construction.
#[derive(Debug, Clone)]
pub struct Options {
    /// known_hosts files consulted, in order; accepted new keys go to the first.
    pub known_hosts: Vec<PathBuf>,
    /// Record host keys of hosts never seen before instead of refusing them.
    /// Changed keys are refused regardless.
    pub accept_new: bool,
    /// An ssh config file (`~/.ssh/config`), if any.
    pub ssh_config: Option<PathBuf>,
    /// The ssh-agent socket, if any.
    pub agent_socket: Option<PathBuf>,
    /// Keys tried after the agent when a host names no key (`~/.ssh/id_*`).
    pub default_identities: Vec<PathBuf>,
    /// Ask on the terminal for the passphrase of an encrypted key that has no reference.
    pub prompt_passphrase: bool,
    /// TCP connect + handshake + authentication limit.
    pub connect_timeout: Duration,
    /// Keepalive interval (three missed replies drop the connection).
    pub keepalive: Duration,
}

impl Options {
    /// The user's OpenSSH setup: `~/.ssh/known_hosts`, `/etc/ssh/ssh_known_hosts`,
    /// `~/.ssh/config`, `$SSH_AUTH_SOCK`, `~/.ssh/id_{ed25519,ecdsa,rsa}`.
    pub fn from_user_env() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/root".into());
        let dot = home.join(".ssh");
        Self {
            known_hosts: vec![dot.join("known_hosts"), "/etc/ssh/ssh_known_hosts".into()],
            accept_new: false,
            ssh_config: Some(dot.join("config")),
            agent_socket: std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
            default_identities: ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|k| dot.join(k))
                .collect(),
            prompt_passphrase: true,
            connect_timeout: Duration::from_secs(20),
            keepalive: Duration::from_secs(15),
        }
    }

    /// Only this known_hosts file: no ssh config, no agent, no default keys, no prompts.
    pub fn isolated(known_hosts: PathBuf) -> Self {
        Self {
            known_hosts: vec![known_hosts],
            accept_new: false,
            ssh_config: None,
            agent_socket: None,
            default_identities: Vec::new(),
            prompt_passphrase: false,
            connect_timeout: Duration::from_secs(20),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// A host to connect to, usually built from an inventory node.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name used in logs and errors (the node name).
    pub name: String,
    /// Address or host name (ssh config `Host` blocks match on it).
    pub host: String,
    /// Port; ssh config or 22 when `None`.
    pub port: Option<u16>,
    /// Login user; ssh config or `root` when `None`.
    pub user: Option<String>,
    /// Explicit private key, tried first.
    pub key: Option<PathBuf>,
    /// Passphrase of that key.
    pub passphrase: Option<SecretRef>,
    /// Pinned host key fingerprint, `SHA256:...`.
    pub host_key: Option<String>,
    /// Jump host (the inventory's bastion); ssh config `ProxyJump` otherwise.
    pub jump: Option<JumpHost>,
    /// Password for sudo, fed on stdin.
    pub sudo_password: Option<SecretRef>,
}

impl Target {
    /// A target with nothing but a name and an address.
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            host: host.into(),
            port: None,
            user: None,
            key: None,
            passphrase: None,
            host_key: None,
            jump: None,
            sudo_password: None,
        }
    }

    /// The SSH access of an inventory node.
    pub fn from_node(node: &Node) -> Self {
        let mut t = Self::new(&node.name, node.ip.to_string());
        if let Some(s) = &node.ssh {
            t.port = Some(s.port);
            t.user = Some(s.user.clone());
            t.key = s.key.clone();
            t.passphrase = s.passphrase.clone();
            t.host_key = s.host_key.clone();
            t.jump = s.bastion.clone();
            t.sudo_password = s.sudo_password.clone();
        }
        t
    }

    /// `name (host)` or just `host`, for messages.
    pub fn label(&self) -> String {
        if self.name == self.host || self.name.is_empty() {
            self.host.clone()
        } else {
            format!("{} ({})", self.name, self.host)
        }
    }
}

/// The step an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    HostKey,
    Auth,
    Jump,
    Exec,
    Upload,
    Download,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::HostKey => "host key check",
            Step::Auth => "authentication",
            Step::Jump => "proxy jump",
            Step::Exec => "exec",
            Step::Upload => "upload",
            Step::Download => "download",
        })
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("host key {fingerprint} is not known (looked in {files}); re-run with --accept-new to trust and record it")]
    UnknownHost { fingerprint: String, files: String },
    #[error(
        "HOST KEY CHANGED: expected {expected}, presented {presented}; refusing to connect (possible man-in-the-middle). If the host was really reinstalled, remove its old entry from known_hosts"
    )]
    HostKeyChanged { expected: String, presented: String },
    #[error("host key {fingerprint} is marked @revoked")]
    Revoked { fingerprint: String },
    #[error("no key was accepted for user {user} (tried: {tried})")]
    AuthRejected { user: String, tried: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Closed(String),
    #[error("{0}")]
    Other(String),
}

/// An error naming the host and the step.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host}: {step}: {kind}")]
pub struct Error {
    pub host: String,
    pub step: Step,
    pub kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(host: impl Into<String>, step: Step, kind: ErrorKind) -> Self {
        Self {
            host: host.into(),
            step,
            kind,
        }
    }

    pub(crate) fn other(host: impl Into<String>, step: Step, msg: impl fmt::Display) -> Self {
        Self::new(host, step, ErrorKind::Other(msg.to_string()))
    }
}

/// One connection per host, opened on first use and reused for every command.
pub struct Pool {
    opts: Arc<Options>,
    conns: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Session>>>>>,
    /// ssh config and known_hosts, parsed once for all connections.
    files: Arc<session::Files>,
}

impl Pool {
    /// A pool with these options.
    pub fn new(opts: Options) -> Self {
        Self {
            opts: Arc::new(opts),
            conns: Default::default(),
            files: Default::default(),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The session to `target`: the open one, or a new connection (also when
    /// the previous one was lost).
    pub async fn session(&self, target: &Target) -> Result<Session, Error> {
        let key = format!(
            "{}@{}:{}",
            target.user.as_deref().unwrap_or(""),
            target.host,
            target.port.unwrap_or(0)
        );
        let slot = self.conns.lock().await.entry(key).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = session::connect(target, &self.opts, &self.files).await?;
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Closes every connection.
    pub async fn close_all(&self) {
        let conns: Vec<_> = self.conns.lock().await.drain().map(|(_, v)| v).collect();
        for c in conns {
            if let Some(s) = c.lock().await.take() {
                s.close().await;
            }
        }
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

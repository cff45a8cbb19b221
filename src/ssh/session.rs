//! One SSH connection: host-key verification during the handshake, optional
//! jump host or proxy command, authentication, then commands over channels of that connection.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};

use super::config::{ConfigError, Proxy, Query, SshConfig};
use super::known_hosts::{KnownHosts, Verdict, key_fingerprint};
use super::{Error, ErrorKind, Options, Step, Target, auth, proxy, shell_quote};
use crate::inventory::JumpHost;

/// Verifies the server's host key during the handshake.
pub(crate) struct Client {
    host: String,
    port: u16,
    pinned: Option<String>,
    known: Arc<KnownHosts>,
    files: Vec<PathBuf>,
    /// Told when a key is recorded, so the pool reads known_hosts again.
    shared: Arc<Files>,
    accept_new: bool,
    /// Why the key was refused, read after the handshake fails.
    refusal: Arc<Mutex<Option<ErrorKind>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let (verdict, plain) = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                (self.known.verify_key(&self.host, self.port, key), key.clone())
            }
            PublicKeyOrCertificate::Certificate(c) => (
                self.known.verify_cert(&self.host, self.port, c),
                PublicKey::from(c.public_key().clone()),
            ),
        };
        let presented = key_fingerprint(&plain);
        let verdict = match &self.pinned {
            Some(pin) if *pin == presented => Verdict::Trusted,
            Some(pin) => Verdict::Changed {
                expected: vec![pin.clone()],
            },
            None => verdict,
        };
        let refusal = match verdict {
            Verdict::Trusted => return Ok(true),
            Verdict::Unknown if self.accept_new => {
                let file = self.files.first().cloned().unwrap_or_default();
                match KnownHosts::record(&file, &self.host, self.port, &plain) {
                    Ok(()) => {
                        self.shared.forget_known_hosts();
                        tracing::warn!("{}: recorded new host key {presented} in {}", self.host, file.display());
                        return Ok(true);
                    }
                    Err(e) => ErrorKind::Other(format!("cannot record the host key in {}: {e}", file.display())),
                }
            }
            Verdict::Unknown => ErrorKind::UnknownHost {
                fingerprint: presented,
                files: self
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            Verdict::Changed { expected } => ErrorKind::HostKeyChanged {
                expected: expected.join(" or "),
                presented,
            },
            Verdict::Revoked => ErrorKind::Revoked { fingerprint: presented },
        };
        *self.refusal.lock().expect("refusal lock") = Some(refusal);
        Ok(false)
    }
}

struct Inner {
    name: String,
    label: String,
    user: String,
    handle: Handle<Client>,
    sudo_password: Option<crate::secret::SecretRef>,
    /// Keeps the jump connection open as long as this one.
    _jump: Option<Session>,
    /// The ProxyCommand carrying this connection, killed with it.
    _proxy: Option<proxy::ProxyChild>,
    pub(crate) sftp: tokio::sync::Mutex<Option<Arc<russh_sftp::client::SftpSession>>>,
}

/// An authenticated connection to one host; cheap to clone, channels are
/// opened per command.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// Options of [`Session::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    /// Run through `sudo` when the login user is not root (password from the
    /// target's `sudo_password` fed on stdin, else `sudo -n`).
    pub sudo: bool,
    /// Abandon the command (and signal it) after this long.
    pub timeout: Option<Duration>,
    /// Bytes written to the command's stdin (then EOF).
    pub stdin: Option<Vec<u8>>,
    /// The output holds secrets (a token, a kubeconfig): never log its lines.
    pub secret_output: bool,
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status, `None` when killed by a signal.
    pub status: Option<u32>,
    /// The signal that ended it, if any.
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// True on exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last `n` lines of stderr, joined with ` | ` (what a failed
    /// command's error quotes: scripts print what failed last, and no secrets).
    pub fn stderr_tail(&self, n: usize) -> String {
        let err = self.stderr_str();
        let lines: Vec<&str> = err.lines().collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }

    /// Ok when the command succeeded; else `<what> failed (<status>): <the
    /// last `lines` of stderr>`.
    pub fn succeeded(&self, what: &str, lines: usize) -> Result<(), String> {
        if self.success() {
            return Ok(());
        }
        Err(format!(
            "{what} failed ({}): {}",
            self.describe(),
            self.stderr_tail(lines)
        ))
    }

    /// `exit status N` / `killed by SIGNAL`.
    pub fn describe(&self) -> String {
        match (&self.status, &self.signal) {
            (Some(s), _) => format!("exit status {s}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "no exit status".into(),
        }
    }
}

/// Resolved connection parameters of a target (inventory, then ssh config).
struct Resolved {
    host: String,
    port: u16,
    user: String,
    keys: Vec<PathBuf>,
    certificates: Vec<PathBuf>,
    identities_only: bool,
    jumps: Vec<JumpHost>,
    /// `ProxyCommand`, tokens expanded (never together with `jumps`).
    proxy_command: Option<String>,
}

fn resolve(target: &Target, cfg: &SshConfig) -> Result<Resolved, ConfigError> {
    let c = cfg.resolve(&Query {
        host: &target.host,
        port: target.port,
        user: target.user.as_deref(),
        default_user: "root",
    })?;
    let mut keys: Vec<PathBuf> = target.key.iter().cloned().collect();
    keys.extend(
        c.identity_files
            .iter()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let (jumps, proxy_command) = match (&target.jump, c.proxy) {
        (Some(j), _) => (vec![j.clone()], None),
        (None, Some(Proxy::Jump(hops))) => (hops.iter().filter_map(|j| j.parse::<JumpHost>().ok()).collect(), None),
        (None, Some(Proxy::Command(cmd))) => (Vec::new(), Some(cmd)),
        (None, Some(Proxy::None) | None) => (Vec::new(), None),
    };
    Ok(Resolved {
        host: c.hostname.unwrap_or_else(|| target.host.clone()),
        port: c.port.unwrap_or(22),
        user: c.user.unwrap_or_else(|| "root".into()),
        keys,
        certificates: c.certificate_files,
        identities_only: c.identities_only.unwrap_or(false),
        jumps,
        proxy_command,
    })
}

/// How a connection reaches its host.
enum Via {
    Tcp,
    Jump(Session),
    Command(String),
}

fn russh_config(opts: &Options, want_certs: bool) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::default();
    if want_certs {
        preferred.host_key_certificates = std::borrow::Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
            Algorithm::Rsa {
                hash: Some(russh::keys::HashAlg::Sha512),
            },
        ]);
    }
    Arc::new(client::Config {
        keepalive_interval: Some(opts.keepalive),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        preferred,
        ..Default::default()
    })
}

/// The files every connection of a pool reads, parsed once per pool rather
/// than once per connection: the ssh config, and known_hosts (read again
/// after a connection recorded a new key).
#[derive(Default)]
pub(crate) struct Files {
    config: std::sync::OnceLock<Result<Arc<SshConfig>, ConfigError>>,
    known: Mutex<Option<Arc<KnownHosts>>>,
}

impl Files {
    fn config(&self, opts: &Options) -> Result<Arc<SshConfig>, ConfigError> {
        self.config
            .get_or_init(|| match &opts.ssh_config {
                Some(p) => SshConfig::load(p).map(Arc::new),
                None => Ok(Arc::default()),
            })
            .clone()
    }

    fn known_hosts(&self, opts: &Options) -> Arc<KnownHosts> {
        self.known
            .lock()
            .expect("known_hosts lock")
            .get_or_insert_with(|| Arc::new(KnownHosts::load(&opts.known_hosts)))
            .clone()
    }

    fn forget_known_hosts(&self) {
        *self.known.lock().expect("known_hosts lock") = None;
    }
}

/// Connects, verifies the host key and authenticates (through jump hosts or
/// a proxy command when configured).
pub(crate) async fn connect(target: &Target, opts: &Options, shared: &Arc<Files>) -> Result<Session, Error> {
    let label = target.label();
    let config_err = |e: ConfigError| Error::other(&label, Step::Connect, format!("ssh config: {e}"));
    let cfg = shared.config(opts).map_err(config_err)?;
    let r = resolve(target, &cfg).map_err(config_err)?;
    let known = shared.known_hosts(opts);
    // Each hop (jump hosts first) is its own verified, authenticated session;
    // the first hop may itself be reached through its own ProxyCommand.
    let mut via = match &r.proxy_command {
        Some(cmd) => Via::Command(cmd.clone()),
        None => Via::Tcp,
    };
    for (i, hop) in r.jumps.iter().enumerate() {
        let mut t = Target::new(format!("{} via jump host {}", target.name, hop.host), hop.host.clone());
        t.port = Some(hop.port);
        let hop_user = cfg
            .resolve(&Query {
                host: &hop.host,
                default_user: "root",
                ..Default::default()
            })
            .map_err(config_err)?
            .user;
        t.user = hop.user.clone().or(hop_user).or(Some(r.user.clone()));
        t.key = target.key.clone();
        t.passphrase = target.passphrase.clone();
        let hr = resolve(&t, &cfg).map_err(config_err)?;
        let hop_via = match (i, &hr.proxy_command) {
            (0, Some(cmd)) => Via::Command(cmd.clone()),
            _ => via,
        };
        let s = connect_one(&t, hr, opts, &known, shared, hop_via).await.map_err(|e| {
            Error::new(
                &label,
                Step::Jump,
                ErrorKind::Other(format!("hop {} failed: {e}", i + 1)),
            )
        })?;
        via = Via::Jump(s);
    }
    connect_one(target, r, opts, &known, shared, via).await
}

async fn connect_one(
    target: &Target,
    r: Resolved,
    opts: &Options,
    known: &Arc<KnownHosts>,
    shared: &Arc<Files>,
    via: Via,
) -> Result<Session, Error> {
    let label = target.label();
    let refusal = Arc::new(Mutex::new(None));
    let handler = Client {
        host: r.host.clone(),
        port: r.port,
        pinned: target.host_key.clone(),
        known: known.clone(),
        files: opts.known_hosts.clone(),
        shared: shared.clone(),
        accept_new: opts.accept_new,
        refusal: refusal.clone(),
    };
    let config = russh_config(opts, known.has_ca_for(&r.host, r.port) && target.host_key.is_none());
    let mut proxy_child = None;
    let mut jump = None;
    let handshake = match via {
        Via::Tcp => {
            let addr = (r.host.as_str(), r.port);
            let connect = async {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| Error::other(&label, Step::Connect, format!("TCP to {}:{}: {e}", r.host, r.port)))?;
                let _ = tcp.set_nodelay(true);
                Ok::<_, Error>(client::connect_stream(config, tcp, handler).await)
            };
            tokio::time::timeout(opts.connect_timeout, connect).await
        }
        Via::Command(cmd) => {
            let (stream, child) = proxy::spawn(&cmd).map_err(|e| {
                Error::other(
                    &label,
                    Step::Connect,
                    format!("ProxyCommand `{cmd}`: cannot start: {e}"),
                )
            })?;
            proxy_child = Some(child);
            tokio::time::timeout(opts.connect_timeout, async {
                Ok(client::connect_stream(config, stream, handler).await)
            })
            .await
        }
        Via::Jump(j) => {
            let open = j
                .inner
                .handle
                .channel_open_direct_tcpip(r.host.clone(), r.port as u32, "127.0.0.1", 0);
            let ch = tokio::time::timeout(opts.connect_timeout, open)
                .await
                .map_err(|_| Error::new(&label, Step::Jump, ErrorKind::Timeout(opts.connect_timeout)))?
                .map_err(|e| {
                    Error::other(
                        &label,
                        Step::Jump,
                        format!(
                            "jump host {} could not open a tunnel to {}:{}: {e}",
                            j.inner.label, r.host, r.port
                        ),
                    )
                })?;
            jump = Some(j);
            tokio::time::timeout(opts.connect_timeout, async {
                Ok(client::connect_stream(config, ch.into_stream(), handler).await)
            })
            .await
        }
    };
    let mut handle = match handshake {
        Err(_) => {
            return Err(Error::new(
                &label,
                Step::Connect,
                ErrorKind::Timeout(opts.connect_timeout),
            ));
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(e))) => {
            let note = match proxy_child.as_mut() {
                Some(c) => match c.stderr().await {
                    s if s.is_empty() => String::new(),
                    s => format!(" (ProxyCommand stderr: {s})"),
                },
                None => String::new(),
            };
            let refused = refusal.lock().expect("refusal lock").take();
            return Err(match refused {
                Some(kind) => Error::new(&label, Step::HostKey, kind),
                None => Error::other(
                    &label,
                    Step::Connect,
                    format!("SSH handshake with {}:{}: {e}{note}", r.host, r.port),
                ),
            });
        }
        Ok(Ok(Ok(h))) => h,
    };
    let keys: Vec<(PathBuf, Option<crate::secret::SecretRef>)> = r
        .keys
        .iter()
        .map(|k| {
            let pass = if Some(k) == target.key.as_ref() {
                target.passphrase.clone()
            } else {
                None
            };
            (k.clone(), pass)
        })
        .collect();
    tokio::time::timeout(
        opts.connect_timeout,
        auth::authenticate(
            &mut handle,
            &label,
            &r.user,
            &keys,
            &r.certificates,
            r.identities_only,
            opts,
        ),
    )
    .await
    .map_err(|_| Error::new(&label, Step::Auth, ErrorKind::Timeout(opts.connect_timeout)))??;
    tracing::debug!("{label}: connected as {}", r.user);
    Ok(Session {
        inner: Arc::new(Inner {
            name: target.name.clone(),
            label,
            user: r.user,
            handle,
            sudo_password: target.sudo_password.clone(),
            _jump: jump,
            _proxy: proxy_child,
            sftp: tokio::sync::Mutex::new(None),
        }),
    })
}

impl Session {
    /// The target's name (the inventory node name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `name (address)` of the host.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The login user.
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self
            .inner
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    pub(crate) fn handle(&self) -> &Handle<Client> {
        &self.inner.handle
    }

    pub(crate) fn sftp_slot(&self) -> &tokio::sync::Mutex<Option<Arc<russh_sftp::client::SftpSession>>> {
        &self.inner.sftp
    }

    /// Wraps `command` for sudo when asked and not root; returns the command
    /// line and the bytes to put before the caller's stdin.
    pub(crate) fn sudo_wrap(&self, command: &str, sudo: bool, step: Step) -> Result<(String, Vec<u8>), Error> {
        if !sudo || self.inner.user == "root" {
            return Ok((command.to_owned(), Vec::new()));
        }
        match &self.inner.sudo_password {
            Some(r) => {
                let pw = r
                    .resolve()
                    .map_err(|e| Error::other(&self.inner.label, step, format!("sudo password: {e}")))?;
                let mut pre = pw.expose().as_bytes().to_vec();
                pre.push(b'\n');
                Ok((format!("sudo -S -p '' -- sh -c {}", shell_quote(command)), pre))
            }
            None => Ok((format!("sudo -n -- sh -c {}", shell_quote(command)), Vec::new())),
        }
    }

    /// Runs `command` and returns its exit status and output (a non-zero exit
    /// is not an error here; see [`Session::run`]). Output lines are also
    /// logged at debug level as they arrive.
    pub async fn exec(&self, command: &str, opts: ExecOpts) -> Result<Output, Error> {
        let label = &self.inner.label;
        let (line, mut input) = self.sudo_wrap(command, opts.sudo, Step::Exec)?;
        if let Some(s) = &opts.stdin {
            input.extend_from_slice(s);
        }
        let mut ch = self
            .inner
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(Step::Exec, format!("opening a channel: {e}")))?;
        ch.exec(true, line.as_bytes())
            .await
            .map_err(|e| self.lost(Step::Exec, format!("starting `{command}`: {e}")))?;
        if !input.is_empty() {
            ch.data(&input[..])
                .await
                .map_err(|e| self.lost(Step::Exec, format!("writing stdin: {e}")))?;
        }
        ch.eof()
            .await
            .map_err(|e| self.lost(Step::Exec, format!("closing stdin: {e}")))?;

        let mut out = Output::default();
        let (mut lo, mut le) = (0usize, 0usize);
        let collect = async {
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        out.stdout.extend_from_slice(&data);
                        if !opts.secret_output {
                            log_lines(label, "stdout", &out.stdout, &mut lo);
                        }
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data);
                        log_lines(label, "stderr", &out.stderr, &mut le);
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => out.signal = Some(format!("{signal_name:?}")),
                    _ => {}
                }
            }
        };
        match opts.timeout {
            Some(t) => {
                if tokio::time::timeout(t, collect).await.is_err() {
                    let _ = ch.signal(russh::Sig::KILL).await;
                    let _ = ch.close().await;
                    return Err(Error::new(label, Step::Exec, ErrorKind::Timeout(t)));
                }
            }
            None => collect.await,
        }
        if out.status.is_none() && out.signal.is_none() {
            return Err(self.lost(Step::Exec, format!("`{command}` ended without an exit status")));
        }
        Ok(out)
    }

    /// Like [`Session::exec`], but a non-zero exit is an error carrying stderr.
    pub async fn run(&self, command: &str, opts: ExecOpts) -> Result<Output, Error> {
        let out = self.exec(command, opts).await?;
        if !out.success() {
            return Err(Error::other(
                &self.inner.label,
                Step::Exec,
                format!("`{command}` failed ({}): {}", out.describe(), out.stderr_str().trim()),
            ));
        }
        Ok(out)
    }

    pub(crate) fn lost(&self, step: Step, msg: String) -> Error {
        if self.is_closed() {
            Error::new(&self.inner.label, step, ErrorKind::Closed(msg))
        } else {
            Error::other(&self.inner.label, step, msg)
        }
    }
}

/// Logs the complete lines of `buf` from `*from` on.
fn log_lines(host: &str, stream: &str, buf: &[u8], from: &mut usize) {
    while let Some(nl) = buf[*from..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&buf[*from..*from + nl]);
        tracing::debug!(target: "bootstrap::ssh::output", "{host} {stream}: {line}");
        *from += nl + 1;
    }
}

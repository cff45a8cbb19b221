//! Test support for the Redfish client: a real BMC emulator (`sushy-tools`
//! from PyPI, run with its fake systems driver) in a cached virtualenv, a
//! loopback HTTP server for virtual-media images, and TLS material.
//!
//! `cargo xtask test` creates the venv ([`ensure_venv`]); tests only use it
//! ([`venv`]) and never download anything.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The sushy-tools release the tests are written against.
pub const SUSHY_TOOLS_VERSION: &str = "2.2.0";

/// The official Python Kubernetes client (PyPI `kubernetes`) the simulator's
/// conformance tests drive it with; installed into the same venv.
pub const KUBERNETES_CLIENT_VERSION: &str = "37.0.2";

/// Where the cached virtualenv lives (`target/sushy-venv` of the workspace).
pub fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("sushy-venv")
}

fn stamp(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".sushy-tools-{SUSHY_TOOLS_VERSION}-kubernetes-{KUBERNETES_CLIENT_VERSION}"
    ))
}

/// Creates the venv with sushy-tools (and bcrypt) and the Python Kubernetes
/// client unless it is already there.
/// Needs `python3` with the `venv` module and PyPI; used by `cargo xtask test`.
pub fn ensure_venv() -> anyhow::Result<PathBuf> {
    let dir = venv_dir();
    if stamp(&dir).exists() && dir.join("bin/sushy-emulator").exists() {
        return Ok(dir);
    }
    eprintln!(
        "+ python3 -m venv {} && pip install sushy-tools=={SUSHY_TOOLS_VERSION} bcrypt kubernetes=={KUBERNETES_CLIENT_VERSION}",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .context("running python3 -m venv (is python3 with venv installed?)")?
        .success();
    if !ok {
        bail!("python3 -m venv {} failed", dir.display());
    }
    let ok = Command::new(dir.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .arg(format!("sushy-tools=={SUSHY_TOOLS_VERSION}"))
        .arg("bcrypt")
        .arg(format!("kubernetes=={KUBERNETES_CLIENT_VERSION}"))
        .status()
        .context("running pip in the sushy venv")?
        .success();
    if !ok {
        bail!("pip install sushy-tools=={SUSHY_TOOLS_VERSION} kubernetes=={KUBERNETES_CLIENT_VERSION} failed");
    }
    std::fs::write(stamp(&dir), "")?;
    Ok(dir)
}

/// `cargo xtask test`'s step: create the venv. A failure stops CI
/// (`CI=true`); elsewhere the emulator tests skip and say why.
pub fn prepare() -> anyhow::Result<()> {
    match ensure_venv() {
        Ok(_) => Ok(()),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => Err(e.context("preparing the Redfish emulator")),
        Err(e) => {
            eprintln!("note: no Redfish emulator ({e:#}); the tests needing it will skip");
            Ok(())
        }
    }
}

/// The prepared venv, or why there is none. Never installs anything.
pub fn venv() -> Result<PathBuf, String> {
    let dir = venv_dir();
    if stamp(&dir).exists() && dir.join("bin/sushy-emulator").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "the sushy-tools emulator is not installed in {} (run `cargo xtask test` once to create it)",
            dir.display()
        ))
    }
}

/// For tests: the venv, or `None` after printing why the test skips. In CI
/// (`CI=true`) a missing emulator is a failure, not a skip.
pub fn venv_or_skip(test: &str) -> Option<PathBuf> {
    match venv() {
        Ok(d) => Some(d),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {why}; CI must run this test")
        }
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

/// One emulated machine (sushy's fake driver).
#[derive(Debug, Clone)]
pub struct FakeSystem {
    pub uuid: String,
    pub name: String,
    /// Initial power state: `true` for On.
    pub powered_on: bool,
    /// NIC MAC addresses (`aa:bb:...`).
    pub macs: Vec<String>,
}

impl FakeSystem {
    /// A powered-off system with one NIC.
    pub fn new(uuid: &str, name: &str, mac: &str) -> Self {
        Self {
            uuid: uuid.into(),
            name: name.into(),
            powered_on: false,
            macs: vec![mac.into()],
        }
    }

    /// The same system, initially powered on.
    pub fn on(mut self) -> Self {
        self.powered_on = true;
        self
    }
}

/// How to run one emulator.
#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {
    pub systems: Vec<FakeSystem>,
    /// Require HTTP basic auth with this user and password.
    pub auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate for 127.0.0.1 from a fresh test CA.
    pub tls: bool,
    /// Listen on this loopback port (default: a free one).
    pub port: Option<u16>,
}

/// TLS material of an HTTPS emulator.
#[derive(Debug, Clone)]
pub struct EmulatorTls {
    /// The CA that signed the server certificate (PEM file).
    pub ca_file: PathBuf,
    /// SHA-256 of the server certificate (DER), lowercase hex.
    pub fingerprint: String,
}

/// A running `sushy-emulator`, killed on drop.
pub struct Emulator {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT` (or https).
    pub url: String,
    pub port: u16,
    pub tls: Option<EmulatorTls>,
    pub config: EmulatorConfig,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn py_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

impl Emulator {
    /// Starts an emulator on a free loopback port with a fresh state dir and
    /// waits until it answers.
    pub fn start(venv: &Path, config: EmulatorConfig) -> anyhow::Result<Self> {
        let mut last = None;
        // A port taken between probing and binding is retried on another one.
        for _ in 0..3 {
            let mut emu = Self::spawn(venv, config.clone())?;
            match emu.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(emu),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Starts several emulators at once (Python start-up overlaps) and waits
    /// for all; one that fails to come up is started again on another port.
    pub fn start_many(venv: &Path, configs: Vec<EmulatorConfig>) -> anyhow::Result<Vec<Self>> {
        let spawned: Vec<anyhow::Result<Self>> = configs.iter().map(|c| Self::spawn(venv, c.clone())).collect();
        let mut out = Vec::new();
        for (emu, config) in spawned.into_iter().zip(configs) {
            let ready = emu.and_then(|mut e| e.wait_ready(Duration::from_secs(60)).map(|()| e));
            out.push(match ready {
                Ok(e) => e,
                Err(_) => Self::start(venv, config)?,
            });
        }
        Ok(out)
    }

    /// Starts an emulator without waiting; call [`Emulator::wait_ready`].
    pub fn spawn(venv: &Path, config: EmulatorConfig) -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bootstrap-sushy-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state"))?;
        let port = match config.port {
            Some(p) => p,
            None => free_port()?,
        };

        let systems: Vec<String> = config
            .systems
            .iter()
            .map(|s| {
                let nics: Vec<String> = s.macs.iter().map(|m| format!("{{'mac': {}}}", py_str(m))).collect();
                format!(
                    "{{'uuid': {}, 'name': {}, 'power_state': {}, 'nics': [{}]}}",
                    py_str(&s.uuid),
                    py_str(&s.name),
                    py_str(if s.powered_on { "On" } else { "Off" }),
                    nics.join(", ")
                )
            })
            .collect();
        let mut conf = format!(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\nSUSHY_EMULATOR_STATE_DIR = {}\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n",
            py_str(&dir.join("state").to_string_lossy()),
            systems.join(",\n  ")
        );
        if let Some((user, password)) = &config.auth {
            let line = htpasswd_line(venv, user, password)?;
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{line}\n"))?;
            conf.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = {}\n",
                py_str(&file.to_string_lossy())
            ));
        }
        let mut tls = None;
        if config.tls {
            let (material, cert, key) = tls_material(&dir)?;
            conf.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = {}\nSUSHY_EMULATOR_SSL_KEY = {}\n",
                py_str(&cert.to_string_lossy()),
                py_str(&key.to_string_lossy())
            ));
            tls = Some(material);
        }
        let conf_file = dir.join("emulator.conf");
        std::fs::write(&conf_file, conf)?;
        let log = std::fs::File::create(dir.join("emulator.log"))?;
        let child = Command::new(venv.join("bin/sushy-emulator"))
            .arg("--config")
            .arg(&conf_file)
            // Downloaded virtual-media images land in TMPDIR: keep them in `dir`.
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sushy-emulator")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            child,
            dir,
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            tls,
            config,
        })
    }

    /// Waits until the emulator accepts connections (and, over plain HTTP,
    /// answers the service root).
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("sushy-emulator on port {} exited ({status}): {}", self.port, self.log());
            }
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                if self.tls.is_some() {
                    return Ok(());
                }
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 16];
                if s.write_all(b"GET /redfish/v1/ HTTP/1.0\r\n\r\n").is_ok()
                    && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 200"))
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "sushy-emulator on port {} did not answer within {timeout:?}: {}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The emulator's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("emulator.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT/redfish/v1/Systems/<uuid>`.
    pub fn system_url(&self, uuid: &str) -> String {
        format!("{}/redfish/v1/Systems/{uuid}", self.url)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One htpasswd line with a bcrypt hash, made with the venv's bcrypt (the
/// password goes through stdin, not the command line).
fn htpasswd_line(venv: &Path, user: &str, password: &str) -> anyhow::Result<String> {
    let mut child = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys, bcrypt; print(bcrypt.hashpw(sys.stdin.buffer.read(), bcrypt.gensalt(4)).decode())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running the venv's python for bcrypt")?;
    child.stdin.take().expect("piped").write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("bcrypt hashing failed");
    }
    Ok(format!("{user}:{}", String::from_utf8(out.stdout)?.trim()))
}

/// A test CA and a server certificate for 127.0.0.1, written into `dir`.
fn tls_material(dir: &Path) -> anyhow::Result<(EmulatorTls, PathBuf, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bootstrap test BMC CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer)?;
    let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("bmc.pem"), dir.join("bmc.key"));
    std::fs::write(&ca_file, ca.pem())?;
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    let fingerprint = sha256_hex(cert.der());
    Ok((EmulatorTls { ca_file, fingerprint }, cert_file, key_file))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A loopback HTTP server that serves one file at `/<name>` (the image a
/// BMC downloads on InsertMedia) and counts the requests for it.
pub struct ImageServer {
    /// `http://127.0.0.1:PORT/<name>`.
    pub url: String,
    hits: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ImageServer {
    /// Starts serving `body` as `/<name>`.
    pub fn start(name: &str, body: Vec<u8>) -> anyhow::Result<Self> {
        Self::start_on(0, name, body)
    }

    /// Starts serving `body` as `/<name>` on loopback `port` (0: any).
    pub fn start_on(port: u16, name: &str, body: Vec<u8>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/{name}", listener.local_addr()?);
        let hits = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (h, path) = (hits.clone(), format!("/{name}"));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let body = bytes_of(body);
                let app = axum::Router::new().route(
                    &path,
                    axum::routing::get(move || {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = body.clone();
                        async move { body }
                    }),
                );
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            url,
            hits,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// How many times the file was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `cargo xtask bmc-sim`: the BMCs of `inventory/bmc-sim.toml` (three
/// emulators on 127.0.0.1:8101-8103, the installer image on :8180) until
/// Ctrl-C. The password is `$BMC_SIM_PASSWORD` (default `sim-password`).
pub fn run_bmc_sim() -> anyhow::Result<()> {
    let venv = ensure_venv()?;
    let password = std::env::var("BMC_SIM_PASSWORD").unwrap_or_else(|_| "sim-password".into());
    let nodes = [
        ("5a1d0000-0000-4000-8000-000000000001", "metal-1", "02:00:7f:02:00:0b"),
        ("5a1d0000-0000-4000-8000-000000000002", "metal-2", "02:00:7f:02:00:0c"),
        ("5a1d0000-0000-4000-8000-000000000003", "metal-3", "02:00:7f:02:00:0d"),
    ];
    let _image = ImageServer::start_on(8180, "talos-metal-amd64.iso", vec![0; 1 << 20])?;
    let mut emulators = Vec::new();
    for (i, (uuid, name, mac)) in nodes.iter().enumerate() {
        let config = EmulatorConfig {
            systems: vec![FakeSystem::new(uuid, name, mac)],
            auth: Some(("admin".into(), password.clone())),
            tls: false,
            port: Some(8101 + i as u16),
        };
        let mut emu = Emulator::spawn(&venv, config)?;
        emu.wait_ready(Duration::from_secs(60))?;
        eprintln!("{name}: BMC {} (user admin)", emu.url);
        emulators.push(emu);
    }
    eprintln!("BMC_SIM_PASSWORD={password} bootstrap -i inventory/bmc-sim.toml power status   # Ctrl-C stops the BMCs");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    Ok(())
}

//! `k3s-standin`: installed on test-rack nodes in place of the k3s binary, so
//! phase -1 for k3s runs end to end over real SSH without a real k3s.
//!
//! - `k3s server` reads `/etc/rancher/k3s/config.yaml`, keeps a cluster CA in
//!   `/var/lib/rancher/k3s/server/tls/`, writes the node token
//!   (`K10<ca sha256>::server:<token>`) and `/etc/rancher/k3s/k3s.yaml`
//!   (admin, `https://127.0.0.1:6443`, as k3s does), and serves the Kubernetes
//!   API simulator ([`crate::kube_sim`], TLS, client certificates) on
//!   `0.0.0.0:6443`, with its own Node registered. A joining server (one with
//!   `server:`) does the same and registers through the first server.
//! - `k3s server --cluster-reset --cluster-reset-restore-path=FILE` restores
//!   the embedded etcd's data dir (`server/db/etcd`, kept across restarts)
//!   from a snapshot and exits, as k3s does; the next start serves the
//!   restored objects.
//! - `k3s agent` registers its Node in the server's API through the server's
//!   stand-in supervisor port ([`SUPERVISOR_PORT`]), proving the cluster
//!   token (its sha256), then stays up like the real agent.
//!
//! Every start is appended to [`CALL_LOG`]; [`SYSTEMCTL`] is the `systemctl`
//! a rack node needs for the install script (nodes run no systemd). Test
//! tooling only: never part of the `bootstrap` product.

mod agent;
pub mod config;
mod server;
mod snapshot;

use std::path::Path;

use anyhow::{Context, Result};

/// A `systemctl` shell script for rack nodes (install it on their PATH).
pub const SYSTEMCTL: &str = include_str!("systemctl.sh");
/// Where the stand-in server takes joins (plain TCP, one line each way).
pub const SUPERVISOR_PORT: u16 = 6444;
/// One line per start (and per join of this node), on each node.
pub const CALL_LOG: &str = "/var/lib/rancher/k3s/standin-calls.log";
/// The k3s version the stand-in reports when nothing else names one: the
/// version an inventory gets by default, so `up` installs what it expects.
pub const DEFAULT_VERSION: &str = bootstrap::inventory::DEFAULT_K3S_VERSION;
/// Where `k3s etcd-snapshot save` writes by default (k3s docs, cli/etcd-snapshot:
/// `${data-dir}/server/db/snapshots`).
pub const SNAPSHOT_DIR: &str = "/var/lib/rancher/k3s/server/db/snapshots";
/// Marks the last line of a stand-in binary built for a version by
/// [`binary_for_version`].
const VERSION_TRAILER: &str = "\nk3s-standin-version=";

/// The version this stand-in plays: `K3S_STANDIN_VERSION`, else the version
/// its own executable carries ([`binary_for_version`]), else [`DEFAULT_VERSION`].
pub fn version() -> String {
    std::env::var("K3S_STANDIN_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::current_exe().ok().and_then(|p| carried_version(&p)))
        .unwrap_or_else(|| DEFAULT_VERSION.to_owned())
}

/// The version a stand-in binary carries at its end, if any.
fn carried_version(exe: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(exe).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(128))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let v = tail.rsplit_once(VERSION_TRAILER)?.1.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// Writes to `dest` a copy of the stand-in binary `exe` that plays k3s
/// `version`: the version appended after the ELF image (which the loader
/// ignores), so each version is a binary of its own, with its own sha256, as
/// k3s release binaries are.
pub fn binary_for_version(exe: &Path, version: &str, dest: &Path) -> Result<()> {
    std::fs::copy(exe, dest).with_context(|| format!("copying {} to {}", exe.display(), dest.display()))?;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(dest)?;
    writeln!(f, "{VERSION_TRAILER}{version}")?;
    Ok(())
}

/// What `k3s --version` prints (k3s's format: version and commit, then the Go version).
pub fn version_text() -> String {
    format!("k3s version {} (standin)\ngo version go1.24.6", version())
}

/// True when this process was started as `k3s` (a multi-call binary can
/// then hand over to [`main`]).
pub fn invoked_as_k3s() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|f| f == "k3s"))
        .unwrap_or(false)
}

/// Runs the stand-in with this process's arguments; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("k3s-standin: {e:#}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let rest = &args[args.len().min(1)..];
    let config_path = rest
        .windows(2)
        .find(|w| w[0] == "--config" || w[0] == "-c")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| config::DEFAULT_PATH.to_owned());
    match cmd {
        "--version" | "-v" | "version" => {
            println!("{}", version_text());
            Ok(())
        }
        "etcd-snapshot" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(snapshot::run(rest, &config_path))
        }
        "server" | "agent" => {
            let mut cfg = config::Config::load(Path::new(&config_path))?;
            cfg.apply_flags(rest)?;
            if cmd == "server" && (cfg.cluster_reset || cfg.cluster_reset_restore_path.is_some()) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                return rt.block_on(server::cluster_reset(&cfg));
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                if cmd == "server" {
                    server::run(cfg).await
                } else {
                    agent::run(cfg).await
                }
            })
        }
        other => anyhow::bail!(
            "unsupported command {other:?} (the stand-in knows server, agent, etcd-snapshot save, --version)"
        ),
    }
}

/// Appends `what` to [`CALL_LOG`].
fn log_call(what: &str) {
    use std::io::Write;
    let _ = std::fs::create_dir_all("/var/lib/rancher/k3s");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(CALL_LOG) {
        let _ = writeln!(f, "{secs} {what} pid={}", std::process::id());
    }
}

/// The `sha256` a joining node proves the token with.
fn token_proof(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("k3s-standin-join:{token}").as_bytes()))
}

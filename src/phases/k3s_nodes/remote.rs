//! What phase -1 does on a k3s node over SSH: connect (retrying while the node
//! does not answer), observe what is installed (read-only), stage the files
//! the install script needs, run it, and read files k3s writes. Secrets
//! (the config, the node token, the kubeconfig) never reach an error message.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::slots::{self, Check};
use crate::ssh::{ErrorKind, ExecOpts, Pool, Session, Step, Target, UploadOpts, shell_quote};

/// Where the install files are uploaded (kept between runs, 0700).
pub const STAGE_DIR: &str = "/var/lib/bootstrap/k3s-install";
/// What the install script records after a successful install.
pub const INSTALL_STATE: &str = "/var/lib/bootstrap/k3s-install.state";
/// The installed binary.
pub const BINARY: &str = "/usr/local/bin/k3s";
/// The installed configuration.
pub const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// The admin kubeconfig a k3s server writes.
pub const K3S_YAML: &str = "/etc/rancher/k3s/k3s.yaml";
/// The join token a k3s server writes.
pub const NODE_TOKEN: &str = "/var/lib/rancher/k3s/server/node-token";

/// What is installed on a node, as far as plan needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The install script's record (`version=... role=... binary=... config=... script=...`), or empty.
    pub state: String,
    /// sha256 of the installed config, or empty.
    pub config_sha256: String,
    /// sha256 of the installed binary, or empty.
    pub binary_sha256: String,
    /// The service runs.
    pub active: bool,
}

/// The read-only command behind [`Observed`].
fn observe_command(unit: &str) -> String {
    format!(
        r#"echo "state=$(cat {INSTALL_STATE} 2>/dev/null)"
echo "config=$(sha256sum {CONFIG} 2>/dev/null | cut -d' ' -f1)"
echo "binary=$(sha256sum {BINARY} 2>/dev/null | cut -d' ' -f1)"
echo "active=$(systemctl is-active {unit} 2>/dev/null)"
"#
    )
}

/// Parses the output of the observe command.
pub fn parse_observed(stdout: &str) -> Observed {
    let mut o = Observed::default();
    for line in stdout.lines() {
        match line.split_once('=') {
            Some(("state", v)) => o.state = v.trim().to_owned(),
            Some(("config", v)) => o.config_sha256 = v.trim().to_owned(),
            Some(("binary", v)) => o.binary_sha256 = v.trim().to_owned(),
            Some(("active", v)) => o.active = v.trim() == "active",
            _ => {}
        }
    }
    o
}

fn opts(sudo: bool, timeout: Duration) -> ExecOpts {
    ExecOpts {
        sudo,
        timeout: Some(timeout),
        ..ExecOpts::default()
    }
}

/// For commands that print a secret: their output is never logged.
fn secret_opts(sudo: bool, timeout: Duration) -> ExecOpts {
    ExecOpts {
        secret_output: true,
        ..opts(sudo, timeout)
    }
}

/// True for errors that retrying cannot fix (host key, authentication).
fn is_final(e: &crate::ssh::Error) -> bool {
    matches!(e.step, Step::HostKey | Step::Auth)
        || matches!(
            e.kind,
            ErrorKind::UnknownHost { .. }
                | ErrorKind::HostKeyChanged { .. }
                | ErrorKind::Revoked { .. }
                | ErrorKind::AuthRejected { .. }
        )
}

/// Connects, retrying until `deadline` while the node does not answer.
pub async fn connect(
    pool: &Pool,
    target: &Target,
    deadline: Instant,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Session, String> {
    let budget = deadline.saturating_duration_since(Instant::now());
    let what = format!("unreachable over SSH: {}", target.label());
    slots::poll_until(&what, budget, cancelled, || async {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, pool.session(target)).await {
            Ok(Ok(s)) => Check::Met(s),
            Ok(Err(e)) if is_final(&e) => Check::Fail(e.to_string()),
            Ok(Err(e)) => Check::Not(e.to_string()),
            Err(_) => Check::Not(format!("{}: connect: timed out after {left:?}", target.label())),
        }
    })
    .await
}

/// Observes what is installed (read-only).
pub async fn observe(s: &Session, unit: &str, sudo: bool) -> Result<Observed, String> {
    let out = s
        .run(&observe_command(unit), opts(sudo, Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(parse_observed(&out.stdout_str()))
}

/// Runs the preflight command; `(stdout, local clock at mid round trip, half the round trip)`.
pub async fn preflight_facts(s: &Session, sudo: bool) -> Result<(String, f64, f64), String> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    let t0 = now();
    let out = s
        .run(super::preflight::COMMAND, opts(sudo, Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())?;
    let t1 = now();
    Ok((out.stdout_str(), (t0 + t1) / 2.0, (t1 - t0) / 2.0))
}

/// The files of one node's install, uploaded into [`STAGE_DIR`].
pub struct Staged<'a> {
    pub config: &'a str,
    pub script: &'a str,
    pub binary_sha256: &'a str,
    /// The binary, when the node's installed one differs.
    pub binary: Option<&'a Path>,
}

/// Uploads the install files (the config 0600: it holds the cluster token).
pub async fn stage(s: &Session, files: &Staged<'_>, sudo: bool) -> Result<(), String> {
    s.run(
        &format!("install -d -m 0700 {STAGE_DIR}"),
        opts(sudo, Duration::from_secs(60)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let up = |mode: u32| UploadOpts {
        mode,
        owner: None,
        sudo,
    };
    let dest = |f: &str| format!("{STAGE_DIR}/{f}");
    s.upload(files.config.as_bytes(), &dest("config.yaml"), up(0o600))
        .await
        .map_err(|e| e.to_string())?;
    s.upload(files.script.as_bytes(), &dest("install.sh"), up(0o700))
        .await
        .map_err(|e| e.to_string())?;
    s.upload(
        format!("{}  k3s\n", files.binary_sha256).as_bytes(),
        &dest("k3s.sha256"),
        up(0o644),
    )
    .await
    .map_err(|e| e.to_string())?;
    if let Some(bin) = files.binary {
        s.upload(bin.to_path_buf(), &dest("k3s"), up(0o755))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the staged install script, then drops the staged binary copy.
pub async fn install(s: &Session, sudo: bool, timeout: Duration) -> Result<String, String> {
    let script = shell_quote(&format!("{STAGE_DIR}/install.sh"));
    let out = s
        .exec(&format!("bash {script}"), opts(sudo, timeout))
        .await
        .map_err(|e| e.to_string())?;
    // The script prints no secrets; its last lines say what failed.
    out.succeeded("install.sh", 5)?;
    s.run(&format!("rm -f {STAGE_DIR}/k3s"), opts(sudo, Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(out.stdout_str().trim().to_owned())
}

/// Starts the (installed) service.
pub async fn start(s: &Session, unit: &str, sudo: bool) -> Result<(), String> {
    s.run(
        &format!("systemctl start {}", shell_quote(unit)),
        opts(sudo, Duration::from_secs(120)),
    )
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Where a snapshot to restore from is uploaded (0700; the file 0600, removed after the restore).
pub const RESTORE_DIR: &str = "/var/lib/bootstrap/k3s-restore";

/// Restores the (installed, started) first server's embedded etcd from the
/// local `snapshot`, as k3s documents it (docs.k3s.io, "k3s etcd-snapshot",
/// restoring a cluster from a snapshot): stop the service, run `k3s server
/// --cluster-reset --cluster-reset-restore-path=<file>` (it restores into a
/// new data dir, moving the old one to `server/db/etcd-old-*`, then exits
/// asking for a restart without the flags), start the service again.
pub async fn restore(s: &Session, unit: &str, snapshot: &Path, sudo: bool, timeout: Duration) -> Result<(), String> {
    s.run(
        &format!("install -d -m 0700 {RESTORE_DIR}"),
        opts(sudo, Duration::from_secs(60)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let dest = format!("{RESTORE_DIR}/etcd.snapshot");
    s.upload(
        snapshot.to_path_buf(),
        &dest,
        UploadOpts {
            mode: 0o600,
            owner: None,
            sudo,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    s.run(
        &format!("systemctl stop {}", shell_quote(unit)),
        opts(sudo, Duration::from_secs(120)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let out = s
        .exec(
            &format!(
                "{BINARY} server --cluster-reset --cluster-reset-restore-path={}",
                shell_quote(&dest)
            ),
            opts(sudo, timeout),
        )
        .await
        .map_err(|e| e.to_string())?;
    out.succeeded("`k3s server --cluster-reset --cluster-reset-restore-path`", 5)?;
    s.run(
        &format!("rm -f {}", shell_quote(&dest)),
        opts(sudo, Duration::from_secs(60)),
    )
    .await
    .map_err(|e| e.to_string())?;
    start(s, unit, sudo).await
}

/// Reads a file if it exists (`None` when it does not). The content never
/// appears in an error.
pub async fn read_if_present(s: &Session, path: &str, sudo: bool) -> Result<Option<Vec<u8>>, String> {
    let p = shell_quote(path);
    let out = s
        .exec(
            &format!("if [ -e {p} ]; then cat {p}; else exit 3; fi"),
            secret_opts(sudo, Duration::from_secs(60)),
        )
        .await
        .map_err(|e| e.to_string())?;
    match out.status {
        Some(0) => Ok(Some(out.stdout)),
        Some(3) => Ok(None),
        _ => Err(format!("reading {path} on {}: {}", s.label(), out.describe())),
    }
}

/// Reads a file k3s writes, waiting until `deadline` for it to appear.
/// The content never appears in an error.
pub async fn read_when_present(
    s: &Session,
    path: &str,
    sudo: bool,
    deadline: Instant,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<u8>, String> {
    let cmd = format!("cat {}", shell_quote(path));
    let budget = deadline.saturating_duration_since(Instant::now());
    let what = format!("{path} appearing on {}", s.label());
    slots::poll_until(&what, budget, cancelled, || async {
        match s.exec(&cmd, secret_opts(sudo, Duration::from_secs(60))).await {
            Ok(out) if out.success() && !out.stdout.is_empty() => Check::Met(out.stdout),
            Ok(out) => Check::Not(out.describe()),
            Err(e) => Check::Fail(e.to_string()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_is_installed() {
        let o = parse_observed(
            "state=version=v1 role=server binary=ab config=cd script=ef\nconfig=cd\nbinary=ab\nactive=active\n",
        );
        assert_eq!(o.state, "version=v1 role=server binary=ab config=cd script=ef");
        assert_eq!(
            (o.config_sha256.as_str(), o.binary_sha256.as_str(), o.active),
            ("cd", "ab", true)
        );
        let none = parse_observed("state=\nconfig=\nbinary=\nactive=inactive\n");
        assert_eq!(none, Observed::default());
    }
}

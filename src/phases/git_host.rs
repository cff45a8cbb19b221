//! The Git host's SSH key, for the `known_hosts` of the deploy-key Secret
//! (source-controller refuses an `ssh://` repository without it). From the
//! inventory (`[cluster.gitops] known_hosts`: lines used as given, or a
//! `SHA256:` fingerprint the scanned key must have), else scanned with the
//! policy of node host keys: a key pinned in the state dir
//! (`<state>/<cluster>/git_known_hosts`) must match, a changed key is always
//! refused, an unknown one is refused unless `--accept-new` (then phase 0's
//! plan holds a step pinning it, and its fingerprint is printed when pinned).

use std::path::Path;
use std::time::Duration;

use crate::inventory::{Cluster, GitKnownHosts};
use crate::ssh::known_hosts::{KnownHosts, Verdict, host_entry_name, key_fingerprint, known_hosts_line};

/// File in the cluster's state dir holding the pinned Git host key.
pub const PINNED: &str = "git_known_hosts";

/// How long a scan may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(20);

/// What the Git host's key check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The known_hosts text for the deploy-key Secret.
    pub text: String,
    /// A key accepted new (`--accept-new`), not pinned yet.
    pub accepted: Option<Accepted>,
}

/// A key accepted new: its known_hosts line and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub line: String,
    pub fingerprint: String,
}

/// The Git host's key for the cluster, or `None` when the repository is not
/// reached over SSH. Reads only: an accepted new key is returned, and
/// [`pin`] records it.
pub async fn known_hosts(cluster: &Cluster, cluster_dir: &Path, accept_new: bool) -> Result<Option<HostKey>, String> {
    let Some(g) = &cluster.gitops else { return Ok(None) };
    let Some((host, port)) = g.ssh_host() else {
        return Ok(None);
    };
    let name = host_entry_name(&host, port);
    let what = format!("Git host {name} ([cluster.gitops] repository)");
    if let Some(GitKnownHosts::Lines(text)) = &g.known_hosts {
        let k = KnownHosts::parse(text).map_err(|(l, e)| format!("[cluster.gitops] known_hosts line {l}: {e}"))?;
        if !k.knows(&host, port) {
            return Err(format!("[cluster.gitops] known_hosts: no line names {what}"));
        }
        return Ok(Some(HostKey {
            text: text.clone(),
            accepted: None,
        }));
    }
    let key = crate::ssh::scan::host_key(&host, port, SCAN_TIMEOUT)
        .await
        .map_err(|e| format!("{what}: scanning its SSH host key: {e}"))?;
    let presented = key_fingerprint(&key);
    let line = known_hosts_line(&host, port, &key);
    let found = |accepted| {
        Ok(Some(HostKey {
            text: format!("{line}\n"),
            accepted,
        }))
    };
    if let Some(GitKnownHosts::Fingerprint(pin)) = &g.known_hosts {
        if *pin != presented {
            return Err(format!(
                "{what}: HOST KEY MISMATCH: presented {presented}, [cluster.gitops] known_hosts pins {pin}; refusing it (possible man-in-the-middle)"
            ));
        }
        return found(None);
    }
    let file = cluster_dir.join(PINNED);
    match KnownHosts::load(std::slice::from_ref(&file)).verify_key(&host, port, &key) {
        Verdict::Trusted => found(None),
        Verdict::Changed { expected } => Err(format!(
            "{what}: HOST KEY CHANGED: pinned {} in {}, presented {presented}; refusing it (possible man-in-the-middle). If the host really got a new key, remove the pin",
            expected.join(" or "),
            file.display()
        )),
        Verdict::Revoked => Err(format!("{what}: host key {presented} is revoked")),
        Verdict::Unknown if !accept_new => Err(format!(
            "{what}: host key {presented} is not known (not pinned in {} nor in [cluster.gitops] known_hosts); re-run with --accept-new to trust and pin it",
            file.display()
        )),
        Verdict::Unknown => found(Some(Accepted {
            line: line.clone(),
            fingerprint: presented,
        })),
    }
}

/// Pins an accepted key `line` in the cluster's state dir (the executor's
/// `PinGitHostKey` step).
pub fn pin(cluster_dir: &Path, line: &str, fingerprint: &str) -> Result<(), String> {
    let file = cluster_dir.join(PINNED);
    KnownHosts::record_line(&file, line)
        .map_err(|e| format!("cannot pin the Git host key in {}: {e}", file.display()))?;
    tracing::warn!("accepted new Git host key {fingerprint}, pinned in {}", file.display());
    Ok(())
}

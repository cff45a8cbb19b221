//! The Git host's SSH key, for the `known_hosts` of the deploy-key Secret
//! (source-controller refuses an `ssh://` repository without it). From the
//! inventory (`[cluster.gitops] known_hosts`: lines used as given, or a
//! `SHA256:` fingerprint the scanned key must have), else scanned with the
//! policy of node host keys: a key pinned in the state dir
//! (`<state>/<cluster>/git_known_hosts`) must match, a changed key is always
//! refused, an unknown one is refused unless `--accept-new` (then its
//! fingerprint is printed and pinned).

use std::path::Path;
use std::time::Duration;

use crate::inventory::{Cluster, GitKnownHosts};
use crate::ssh::known_hosts::{KnownHosts, Verdict, host_entry_name, key_fingerprint, known_hosts_line};

/// File in the cluster's state dir holding the pinned Git host key.
pub const PINNED: &str = "git_known_hosts";

/// How long a scan may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(20);

/// The known_hosts text for the cluster's Git host, or `None` when the
/// repository is not reached over SSH. `record`: pin an accepted new key
/// (apply; a plan records nothing).
pub async fn known_hosts(
    cluster: &Cluster,
    cluster_dir: &Path,
    accept_new: bool,
    record: bool,
) -> Result<Option<String>, String> {
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
        return Ok(Some(text.clone()));
    }
    let key = crate::ssh::scan::host_key(&host, port, SCAN_TIMEOUT)
        .await
        .map_err(|e| format!("{what}: scanning its SSH host key: {e}"))?;
    let presented = key_fingerprint(&key);
    let line = known_hosts_line(&host, port, &key);
    if let Some(GitKnownHosts::Fingerprint(pin)) = &g.known_hosts {
        if *pin != presented {
            return Err(format!(
                "{what}: HOST KEY MISMATCH: presented {presented}, [cluster.gitops] known_hosts pins {pin}; refusing it (possible man-in-the-middle)"
            ));
        }
        return Ok(Some(format!("{line}\n")));
    }
    let file = cluster_dir.join(PINNED);
    match KnownHosts::load(std::slice::from_ref(&file)).verify_key(&host, port, &key) {
        Verdict::Trusted => Ok(Some(format!("{line}\n"))),
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
        Verdict::Unknown => {
            if record {
                KnownHosts::record(&file, &host, port, &key)
                    .map_err(|e| format!("{what}: cannot pin the host key in {}: {e}", file.display()))?;
                tracing::warn!(
                    "{what}: accepted new host key {presented}, pinned in {}",
                    file.display()
                );
                eprintln!(
                    "{what}: accepted new host key {presented}, pinned in {}",
                    file.display()
                );
            }
            Ok(Some(format!("{line}\n")))
        }
    }
}

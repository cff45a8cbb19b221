//! A k3s etcd snapshot, over SSH: on one server, `k3s etcd-snapshot save
//! --name bootstrap-<ms>`, the file it wrote found in the snapshot directory,
//! then streamed to the workstation (0600, atomic, sha256 on the way).
//!
//! Upstream (k3s docs, "k3s etcd-snapshot", docs.k3s.io/cli/etcd-snapshot):
//! `save` takes an on-demand snapshot; `--name` sets its base name (default
//! `on-demand`) and the file is `<name>-<node name>-<unix time>` (`.zip` with
//! `--etcd-snapshot-compress`); files go to `--etcd-snapshot-dir`, default
//! `${data-dir}/server/db/snapshots` with data-dir `/var/lib/rancher/k3s`.
//! Our rendered config sets neither, so the default directory holds it. The
//! file is found by listing that directory for the unique name prefix, not by
//! parsing k3s's log lines (their format differs between releases).
//! The node keeps its copy, as k3s keeps every on-demand snapshot (no
//! retention applies to them; `k3s etcd-snapshot prune` or `delete` removes them).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::inventory::Node;
use crate::phases::k3s_nodes::remote;
use crate::ssh::{Downloaded, ExecOpts, Pool, Target, shell_quote};

/// k3s's default snapshot directory (`${data-dir}/server/db/snapshots`).
pub const SNAPSHOT_DIR: &str = "/var/lib/rancher/k3s/server/db/snapshots";

/// The base name of the snapshot bootstrap asks for at `ms` (milliseconds
/// since the epoch): unique per request, so the file is found by prefix.
pub fn snapshot_name(ms: u128) -> String {
    format!("bootstrap-{ms}")
}

/// Picks the one file of `listing` (one name per line) that `k3s etcd-snapshot
/// save --name <name>` wrote: `<name>-<node>-<time>` (maybe `.zip`).
pub fn find_written(listing: &str, name: &str) -> Result<String, String> {
    let prefix = format!("{name}-");
    let found: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix) && !l.contains('/'))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(format!(
            "k3s etcd-snapshot save reported success, but no {prefix}* file is in {SNAPSHOT_DIR}"
        )),
        many => Err(format!(
            "more than one snapshot named {prefix}* in {SNAPSHOT_DIR}: {}",
            many.join(", ")
        )),
    }
}

/// Takes a snapshot on `server` and streams it to `out`.
pub async fn take(pool: &Pool, server: &Node, out: &Path, budget: Duration) -> Result<Downloaded, String> {
    let sudo = server.ssh.as_ref().is_some_and(|s| s.sudo);
    let deadline = Instant::now() + Duration::from_secs(15).min(budget);
    let s = remote::connect(pool, &Target::from_node(server), deadline, &|| false).await?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let name = snapshot_name(ms);
    let opts = ExecOpts {
        sudo,
        timeout: Some(budget),
        ..ExecOpts::default()
    };
    let saved = s
        .exec(
            &format!("{} etcd-snapshot save --name {}", remote::BINARY, shell_quote(&name)),
            opts.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
    saved.succeeded("`k3s etcd-snapshot save`", 3)?;
    let listing = s
        .run(&format!("ls -1 {SNAPSHOT_DIR}"), opts)
        .await
        .map_err(|e| e.to_string())?;
    let file = find_written(&listing.stdout_str(), &name)?;
    let remote_path = format!("{SNAPSHOT_DIR}/{file}");
    let got = s.download(&remote_path, out, sudo).await.map_err(|e| e.to_string())?;
    if got.size == 0 {
        let _ = std::fs::remove_file(out);
        return Err(format!("{remote_path} is empty"));
    }
    tracing::info!(node = %server.name, file = %remote_path, size = got.size, "k3s etcd snapshot fetched");
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_one_file_save_wrote() {
        let listing = "on-demand-rack-1-1700000000\nbootstrap-17-rack-1-1700000001\nbootstrap-170-rack-1-1700000002\n";
        assert_eq!(
            find_written(listing, "bootstrap-17").unwrap(),
            "bootstrap-17-rack-1-1700000001"
        );
        assert_eq!(
            find_written("bootstrap-5-n-1.zip\n", "bootstrap-5").unwrap(),
            "bootstrap-5-n-1.zip"
        );
        assert!(
            find_written(listing, "bootstrap-9")
                .unwrap_err()
                .contains("no bootstrap-9-*")
        );
        let two = "bootstrap-5-a-1\nbootstrap-5-b-2\n";
        assert!(find_written(two, "bootstrap-5").unwrap_err().contains("more than one"));
    }
}

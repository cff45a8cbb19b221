//! `k3s etcd-snapshot save [--name N] [--dir D]`: an on-demand snapshot of
//! the server's embedded etcd (a real etcd member the stand-in server runs
//! on 127.0.0.1:2379 with `cluster-init`), written as `<name>-<node>-<unix
//! time>`. Upstream: k3s docs, cli/etcd-snapshot ("k3s etcd-snapshot save").

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::config::Config;

/// The embedded etcd's client URL (k3s: `https://127.0.0.1:2379`; plain HTTP here).
pub const LOCAL_ETCD: &str = "http://127.0.0.1:2379";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{name}="))
            .map(str::to_owned)
            .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// Runs `etcd-snapshot <args>`.
pub async fn run(args: &[String], config_path: &str) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("save") => {}
        other => anyhow::bail!("etcd-snapshot: unsupported subcommand {other:?} (the stand-in knows save)"),
    }
    let args = &args[1..];
    let node = match Config::load(Path::new(config_path)) {
        Ok(cfg) => cfg.node_name,
        Err(_) => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into()),
    };
    let name = flag(args, "--name").unwrap_or_else(|| "on-demand".into());
    let dir = PathBuf::from(flag(args, "--dir").unwrap_or_else(|| super::SNAPSHOT_DIR.into()));
    let client = crate::etcd::EtcdClient::new(LOCAL_ETCD);
    anyhow::ensure!(
        client.healthy().await,
        "etcd datastore is not running on this node (the stand-in runs etcd with cluster-init)"
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let file = format!("{name}-{node}-{secs}");
    let path = dir.join(&file);
    let out = tokio::process::Command::new(crate::etcd::member::ETCDCTL)
        .arg(format!("--endpoints={LOCAL_ETCD}"))
        .args(["snapshot", "save"])
        .arg(&path)
        .env("ETCDCTL_API", "3")
        .output()
        .await
        .context("running etcdctl")?;
    anyhow::ensure!(
        out.status.success(),
        "etcd-snapshot save: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    super::log_call(&format!("etcd-snapshot save {file}"));
    println!("Snapshot {file} saved.");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_in_both_spellings() {
        let args: Vec<String> = ["--name", "pre-upgrade", "--dir=/tmp/x"].map(String::from).to_vec();
        assert_eq!(super::flag(&args, "--name").as_deref(), Some("pre-upgrade"));
        assert_eq!(super::flag(&args, "--dir").as_deref(), Some("/tmp/x"));
        assert_eq!(super::flag(&args, "--other"), None);
    }
}

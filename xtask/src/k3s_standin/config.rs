//! The part of `/etc/rancher/k3s/config.yaml` the stand-in reads.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use yaml_serde::Value;

/// Where k3s reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/rancher/k3s/config.yaml";

/// A node's k3s configuration (keys are k3s CLI flags).
#[derive(Clone)]
pub struct Config {
    pub token: String,
    /// `server`: the server to join (agents, joining servers).
    pub server: Option<String>,
    pub cluster_init: bool,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub tls_san: Vec<String>,
    /// `key=value` node labels.
    pub node_labels: Vec<String>,
    /// `key=value:Effect` (or `key:Effect`) node taints.
    pub node_taints: Vec<String>,
    /// `flannel-backend: none`: Nodes wait for a CNI (Cilium) to be Ready.
    pub external_cni: bool,
    /// `cluster-reset` (config key or `--cluster-reset`).
    pub cluster_reset: bool,
    /// `cluster-reset-restore-path` (config key or `--cluster-reset-restore-path`).
    pub cluster_reset_restore_path: Option<String>,
}

/// `key=value:Effect` or `key:Effect` (k3s `--node-taint`, kubelet `--register-with-taints`) as `(key, value, effect)`.
pub fn parse_taint(t: &str) -> Option<(String, String, String)> {
    let (kv, effect) = t.rsplit_once(':')?;
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    Some((k.to_owned(), v.to_owned(), effect.to_owned()))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("node_name", &self.node_name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses a config document.
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value = yaml_serde::from_str(text).context("not YAML")?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let list = |k: &str| -> Vec<String> {
            match v.get(k) {
                Some(Value::Sequence(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                Some(Value::String(one)) => vec![one.clone()],
                _ => Vec::new(),
            }
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        Ok(Self {
            token: s("token").context("no `token`")?,
            server: s("server"),
            cluster_init: v.get("cluster-init").and_then(Value::as_bool).unwrap_or(false),
            node_name: s("node-name").unwrap_or(hostname),
            node_ip: s("node-ip").map(|ip| ip.parse()).transpose().context("node-ip")?,
            tls_san: list("tls-san"),
            node_labels: list("node-label"),
            node_taints: list("node-taint"),
            external_cni: s("flannel-backend").is_some_and(|b| b == "none"),
            cluster_reset: v.get("cluster-reset").and_then(Value::as_bool).unwrap_or(false),
            cluster_reset_restore_path: s("cluster-reset-restore-path"),
        })
    }

    /// Command-line flags over the config file, as k3s takes them (k3s CLI:
    /// flags win over `config.yaml`). Only the flags the stand-in acts on.
    pub fn apply_flags(&mut self, args: &[String]) -> Result<()> {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--cluster-reset" | "--cluster-reset=true" => self.cluster_reset = true,
                "--cluster-reset=false" => self.cluster_reset = false,
                "--cluster-reset-restore-path" => {
                    let v = it.next().context("--cluster-reset-restore-path needs a value")?;
                    self.cluster_reset_restore_path = Some(v.clone());
                }
                other => {
                    if let Some(v) = other.strip_prefix("--cluster-reset-restore-path=") {
                        self.cluster_reset_restore_path = Some(v.to_owned());
                    }
                }
            }
        }
        Ok(())
    }

    /// The server to join as `host` (from `https://host:6443`).
    pub fn server_host(&self) -> Option<String> {
        let url = self.server.as_deref()?;
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned(),
        };
        Some(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_agent_config() {
        let c = Config::parse(
            "token: \"t0k\"\nserver: \"https://198.18.0.11:6443\"\nnode-name: \"rack-2\"\nnode-ip: \"198.18.0.12\"\nnode-label:\n  - \"a=b\"\n",
        )
        .unwrap();
        assert_eq!(c.token, "t0k");
        assert_eq!(c.server_host().as_deref(), Some("198.18.0.11"));
        assert_eq!(c.node_name, "rack-2");
        assert_eq!(c.node_labels, vec!["a=b"]);
        assert!(!c.cluster_init && !c.external_cni);
        let mut c = c;
        c.apply_flags(&["--cluster-reset".into(), "--cluster-reset-restore-path=/x/s".into()])
            .unwrap();
        assert!(c.cluster_reset);
        assert_eq!(c.cluster_reset_restore_path.as_deref(), Some("/x/s"));
    }
}

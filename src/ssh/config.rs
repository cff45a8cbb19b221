//! The subset of `~/.ssh/config` the transport honours: `Host` blocks (glob
//! patterns, `!` negation), `HostName`, `User`, `Port`, `IdentityFile`,
//! `IdentitiesOnly`, `ProxyJump`. As in OpenSSH the first value obtained for a
//! keyword wins (IdentityFile accumulates). `Match` blocks are skipped.
//! Hand-written: the crates that parse ssh_config bring much more than this
//! subset and differ from OpenSSH on first-match-wins.

use std::path::{Path, PathBuf};

use super::known_hosts::match_pattern_list;

/// Settings for one host after applying the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: Option<bool>,
    /// `ProxyJump` hops, `[user@]host[:port]`, first hop first (`none` clears).
    pub proxy_jump: Option<Vec<String>>,
}

/// A parsed ssh config file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    /// (patterns, keyword lower-case, value) in file order; `None` patterns = global.
    lines: Vec<(Option<Vec<String>>, String, String)>,
}

impl SshConfig {
    /// Reads a config file; a missing file is an empty config.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Self {
        let mut lines = Vec::new();
        let mut current: Option<Vec<String>> = None;
        let mut skipping = false;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
                Some((k, v)) => (k.to_ascii_lowercase(), v.trim_start_matches([' ', '\t', '=']).trim()),
                None => (line.to_ascii_lowercase(), ""),
            };
            let value = value.trim_matches('"').to_owned();
            match key.as_str() {
                "host" => {
                    current = Some(value.split_whitespace().map(str::to_owned).collect());
                    skipping = false;
                }
                "match" => skipping = true,
                _ if skipping => {}
                _ => lines.push((current.clone(), key, value)),
            }
        }
        Self { lines }
    }

    /// The settings that apply to `host` (the name as given, before HostName).
    pub fn resolve(&self, host: &str) -> HostConfig {
        let mut c = HostConfig::default();
        for (patterns, key, value) in &self.lines {
            if let Some(p) = patterns
                && !match_pattern_list(p.iter().map(String::as_str), host)
            {
                continue;
            }
            match key.as_str() {
                "hostname" if c.hostname.is_none() => c.hostname = Some(value.replace("%h", host)),
                "user" if c.user.is_none() => c.user = Some(value.clone()),
                "port" if c.port.is_none() => c.port = value.parse().ok(),
                "identityfile" => c.identity_files.push(expand_home(value)),
                "identitiesonly" if c.identities_only.is_none() => c.identities_only = Some(value == "yes"),
                "proxyjump" if c.proxy_jump.is_none() => {
                    c.proxy_jump = Some(if value == "none" {
                        Vec::new()
                    } else {
                        value.split(',').map(|s| s.trim().to_owned()).collect()
                    })
                }
                _ => {}
            }
        }
        c
    }
}

/// Expands a leading `~/` to `$HOME`.
pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_and_patterns_match() {
        let cfg = SshConfig::parse(
            "# comment\nHost bastion\n  HostName 198.18.0.11\n  User ops\nHost node-* !node-9\n  User admin\n  Port 2222\n  IdentityFile /keys/a\n  IdentitiesOnly yes\n  ProxyJump bastion\nMatch all\n  User nobody\nHost *\n  User root\n  Port=22\n  IdentityFile /keys/b\n",
        );
        let n = cfg.resolve("node-1");
        assert_eq!(n.user.as_deref(), Some("admin"));
        assert_eq!(n.port, Some(2222));
        assert_eq!(
            n.identity_files,
            vec![PathBuf::from("/keys/a"), PathBuf::from("/keys/b")]
        );
        assert_eq!(n.identities_only, Some(true));
        assert_eq!(n.proxy_jump, Some(vec!["bastion".to_owned()]));
        let nine = cfg.resolve("node-9");
        assert_eq!(nine.user.as_deref(), Some("root"));
        assert_eq!(nine.proxy_jump, None);
        assert_eq!(cfg.resolve("bastion").hostname.as_deref(), Some("198.18.0.11"));
    }
}

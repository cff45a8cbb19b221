//! Host-key verification: `known_hosts` files (plain and hashed names, wildcard
//! patterns, `@cert-authority` and `@revoked` lines) and fingerprints pinned in
//! the inventory. ssh-key parses the lines; the matching rules are OpenSSH's.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{Certificate, HashAlg, PublicKey, certificate::CertType};

/// `SHA256:...` fingerprint of an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`).
pub fn fingerprint(openssh_key: &str) -> Result<String, String> {
    let key = PublicKey::from_openssh(openssh_key.trim()).map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    Ok(key_fingerprint(&key))
}

/// `SHA256:...` fingerprint of a public key.
pub fn key_fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The known_hosts line for `host:port` with `key` (no comment), as
/// `ssh-keyscan` and `flux bootstrap` write it.
pub fn known_hosts_line(host: &str, port: u16, key: &PublicKey) -> String {
    let plain = PublicKey::new(key.key_data().clone(), "");
    let text = plain.to_openssh().unwrap_or_default();
    format!("{} {}", host_entry_name(host, port), text.trim())
}

/// The name a host is recorded under: `host`, or `[host]:port` off port 22.
pub fn host_entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The outcome of checking a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Known and matching (or signed by a trusted host CA).
    Trusted,
    /// No entry names this host.
    Unknown,
    /// The host is known with other key(s): possible man in the middle.
    Changed {
        /// Fingerprints on record (or pinned).
        expected: Vec<String>,
    },
    /// The key is marked `@revoked`.
    Revoked,
}

/// The entries of every `known_hosts` file consulted.
#[derive(Debug, Default, Clone)]
pub struct KnownHosts {
    entries: Vec<(PathBuf, Entry)>,
}

impl KnownHosts {
    /// Reads these files; missing files are skipped, unparsable lines ignored
    /// with a warning (as OpenSSH does).
    pub fn load(files: &[PathBuf]) -> Self {
        let mut entries = Vec::new();
        for f in files {
            let Ok(text) = std::fs::read_to_string(f) else { continue };
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match line.parse::<Entry>() {
                    Ok(e) => entries.push((f.clone(), e)),
                    Err(e) => tracing::warn!("{}:{}: ignoring unparsable known_hosts line: {e}", f.display(), n + 1),
                }
            }
        }
        Self { entries }
    }

    /// Parses known_hosts text (from the inventory); the first bad line is an
    /// error naming its 1-based line number.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let e = line.parse::<Entry>().map_err(|e| (n + 1, e.to_string()))?;
            entries.push((PathBuf::new(), e));
        }
        Ok(Self { entries })
    }

    /// True when some plain (not `@revoked`/`@cert-authority`) line names the host.
    pub fn knows(&self, host: &str, port: u16) -> bool {
        let name = host_entry_name(host, port);
        self.entries
            .iter()
            .any(|(_, e)| e.marker().is_none() && matches_host(e.host_patterns(), &name))
    }

    /// True when some `@cert-authority` line covers the host (so asking the
    /// server for its certificate makes sense).
    pub fn has_ca_for(&self, host: &str, port: u16) -> bool {
        let name = host_entry_name(host, port);
        self.entries
            .iter()
            .any(|(_, e)| e.marker() == Some(&Marker::CertAuthority) && matches_host(e.host_patterns(), &name))
    }

    /// Checks a plain host key.
    pub fn verify_key(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = host_entry_name(host, port);
        // `@revoked` applies whatever the host patterns say, and wins.
        if self
            .entries
            .iter()
            .any(|(_, e)| e.marker() == Some(&Marker::Revoked) && e.public_key().key_data() == key.key_data())
        {
            return Verdict::Revoked;
        }
        let mut expected = Vec::new();
        for (_, e) in &self.entries {
            if e.marker().is_some() || !matches_host(e.host_patterns(), &name) {
                continue;
            }
            if e.public_key().key_data() == key.key_data() {
                return Verdict::Trusted;
            }
            expected.push(key_fingerprint(e.public_key()));
        }
        if expected.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Changed { expected }
        }
    }

    /// Checks a host certificate: trusted when signed by a `@cert-authority`
    /// for this host, valid now and naming the host; otherwise its key is
    /// checked like a plain key (OpenSSH's fallback).
    pub fn verify_cert(&self, host: &str, port: u16, cert: &Certificate) -> Verdict {
        let name = host_entry_name(host, port);
        let revoked = self.entries.iter().any(|(_, e)| {
            e.marker() == Some(&Marker::Revoked)
                && (e.public_key().key_data() == cert.signature_key() || e.public_key().key_data() == cert.public_key())
        });
        if revoked {
            return Verdict::Revoked;
        }
        let cas: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.marker() == Some(&Marker::CertAuthority) && matches_host(e.host_patterns(), &name))
            .map(|(_, e)| e.public_key().fingerprint(HashAlg::Sha256))
            .collect();
        let names_host = cert.valid_principals().is_empty() || cert.valid_principals().iter().any(|p| p == host);
        if !cas.is_empty() && cert.cert_type() == CertType::Host && names_host && cert.validate(cas.iter()).is_ok() {
            return Verdict::Trusted;
        }
        self.verify_key(host, port, &PublicKey::from(cert.public_key().clone()))
    }

    /// Appends `host key` to `file` (created 0600, its directory 0700).
    pub fn record(file: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
        Self::record_line(file, &known_hosts_line(host, port, key))
    }

    /// Appends a known_hosts `line` to `file` (created 0600, its directory 0700).
    pub fn record_line(file: &Path, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file)?;
        writeln!(f, "{line}")
    }
}

/// OpenSSH host matching: a hashed name, or comma-separated glob patterns
/// where a matching `!pattern` vetoes the line.
fn matches_host(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.finalize().into_bytes().as_slice() == hash.as_slice()
        }
        HostPatterns::Patterns(list) => match_pattern_list(list.iter().map(String::as_str), name),
    }
}

/// True when some pattern matches `name` and no negated one does.
pub fn match_pattern_list<'a>(patterns: impl IntoIterator<Item = &'a str>, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut hit = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(&neg.to_ascii_lowercase(), &name) {
                return false;
            }
        } else if glob(&p.to_ascii_lowercase(), &name) {
            hit = true;
        }
    }
    hit
}

/// `*` and `?` wildcards.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHjlA6uKuP/JoP4hxGN2qNDREjC5doAKuXbJKu0+B9W";

    fn hosts(text: &str) -> (tempfile::TempDir, KnownHosts) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("known_hosts");
        std::fs::write(&p, text).unwrap();
        let k = KnownHosts::load(&[p]);
        (d, k)
    }

    #[test]
    fn globs_and_negation() {
        assert!(glob("198.18.0.*", "198.18.0.11"));
        assert!(glob("n?de-*", "node-12"));
        assert!(!glob("198.18.0.1", "198.18.0.11"));
        assert!(match_pattern_list(["*.lan", "!bad.lan"], "good.lan"));
        assert!(!match_pattern_list(["*.lan", "!bad.lan"], "bad.lan"));
    }

    #[test]
    fn plain_hashed_changed_and_port_entries() {
        let key = PublicKey::from_openssh(KEY_A).unwrap();
        // `ssh-keygen -H` form of "node1" with salt "salt".
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"salt").unwrap();
        mac.update(b"node1");
        let hash = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.finalize().into_bytes());
        let salt = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"salt");
        let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKJyYdUUSiWQWsCnKmDVQ1VqzBl1XL8KsBhQZEs1jOHW";
        let (_d, k) = hosts(&format!(
            "|1|{salt}|{hash} {KEY_A}\n[node2]:2222 {KEY_A}\nnode3 {other}\n"
        ));
        assert_eq!(k.verify_key("node1", 22, &key), Verdict::Trusted);
        assert_eq!(k.verify_key("node2", 2222, &key), Verdict::Trusted);
        assert_eq!(k.verify_key("node2", 22, &key), Verdict::Unknown);
        assert_eq!(
            k.verify_key("node3", 22, &key),
            Verdict::Changed {
                expected: vec![fingerprint(other).unwrap()]
            }
        );
    }

    #[test]
    fn revoked_wins() {
        let key = PublicKey::from_openssh(KEY_A).unwrap();
        let (_d, k) = hosts(&format!("node1 {KEY_A}\n@revoked * {KEY_A}\n"));
        assert_eq!(k.verify_key("node1", 22, &key), Verdict::Revoked);
    }

    #[test]
    fn recorded_entries_are_found_again() {
        let key = PublicKey::from_openssh(KEY_A).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/known_hosts");
        KnownHosts::record(&p, "10.0.0.1", 2200, &key).unwrap();
        assert_eq!(
            KnownHosts::load(&[p]).verify_key("10.0.0.1", 2200, &key),
            Verdict::Trusted
        );
    }
}

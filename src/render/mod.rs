//! Rendering: a pure function of cluster + secrets + templates to the files
//! every node needs, as a map `relative path → bytes`; then either written
//! to a directory or compared with it (`render --check`).
//!
//! Layout under the output directory:
//! - Talos: `<cluster>/<node>.yaml` (machine config), `<cluster>/talosconfig`;
//! - k3s: `<cluster>/<node>/config.yaml`, `<cluster>/<node>/install.sh`, and
//!   `<cluster>/<node>/registries.yaml` when the cluster has mirrors or runs
//!   k3s's embedded registry (the install script carries the same file);
//! - both, added by the `render` command: `<cluster>/manifests/<n>-<phase>.yaml`,
//!   the objects phases 0-3 apply (Secret values as placeholders), built by
//!   `phases::export` (passed in, so rendering never depends on the phases).
//!
//! Files holding secrets (machine configs, talosconfig, k3s configs) are
//! written 0600; a diff never shows secret values.

pub mod k3s;
pub mod patch;
pub mod pki;
pub mod registries;
pub mod secrets;
pub mod talos;
pub mod templates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use sha2::Digest;

pub use secrets::{K3sSecrets, SecretsBundle, TalosBundle, TalosSecrets};

use crate::inventory::{Cluster, Distribution};

/// One rendered file.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub bytes: Vec<u8>,
    /// Unix mode: 0600 for files holding secrets, 0755 for scripts.
    pub mode: u32,
}

impl RenderedFile {
    /// True when the file holds secrets (written 0600, redacted in diffs).
    pub fn is_secret(&self) -> bool {
        self.mode == 0o600
    }
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RenderedFile({} bytes, mode {:o})", self.bytes.len(), self.mode)
    }
}

/// Everything rendered for one or more clusters: path relative to the output directory → file.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub files: BTreeMap<PathBuf, RenderedFile>,
}

impl Rendered {
    /// Adds (or replaces) one file.
    pub fn add(&mut self, path: PathBuf, text: String, mode: u32) {
        self.files.insert(
            path,
            RenderedFile {
                bytes: text.into_bytes(),
                mode,
            },
        );
    }
}

/// Renders every file of `cluster` (paths start with the cluster name).
pub fn render_cluster(cluster: &Cluster, secrets: &SecretsBundle) -> Result<Rendered> {
    let mut out = Rendered::default();
    let dir = PathBuf::from(&cluster.name);
    match cluster.distribution {
        Distribution::Talos => {
            let r = talos::TalosRenderer::new(cluster, secrets.talos()?)?;
            let configs = par_map(&cluster.nodes, |n| r.machine_config(n))?;
            for (n, text) in cluster.nodes.iter().zip(configs) {
                out.add(dir.join(format!("{}.yaml", n.name)), text, 0o600);
            }
            out.add(dir.join("talosconfig"), r.talosconfig()?, 0o600);
        }
        Distribution::K3s => {
            let r = k3s::K3sRenderer::new(cluster, secrets.k3s()?)?;
            let files = par_map(&cluster.nodes, |n| Ok((r.node_config(n)?, r.install_script(n)?)))?;
            for (n, (config, script)) in cluster.nodes.iter().zip(files) {
                out.add(dir.join(&n.name).join("config.yaml"), config, 0o600);
                out.add(dir.join(&n.name).join("install.sh"), script, 0o755);
                if let Some(yaml) = r.registries_yaml() {
                    out.add(dir.join(&n.name).join("registries.yaml"), yaml.to_owned(), 0o644);
                }
            }
        }
    }
    Ok(out)
}

/// Maps `f` over `items` on all cores, keeping order; the first error wins.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads <= 1 || items.len() < 16 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Result<Vec<R>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().expect("render worker panicked")?);
        }
        Ok(out)
    })
}

/// Writes rendered files under `out` (atomic; 0600 for secrets).
pub fn write(out: &Path, rendered: &Rendered) -> Result<()> {
    for (rel, f) in &rendered.files {
        let p = out.join(rel);
        crate::fsutil::write_atomic(&p, &f.bytes, f.mode).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Compares `out` with what would be rendered: `None` when identical, else a
/// unified diff (secret values redacted) plus the files only one side has.
/// Only the directories of the rendered clusters are compared.
pub fn check(out: &Path, rendered: &Rendered) -> Result<Option<String>> {
    let mut report = String::new();
    for (rel, f) in &rendered.files {
        let p = out.join(rel);
        let old = match std::fs::read(&p) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        if old.as_deref() == Some(&f.bytes[..]) {
            continue;
        }
        let new_text = String::from_utf8_lossy(&f.bytes);
        let old_text = old.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        let (old_text, new_text) = if f.is_secret() {
            (redact(&old_text), redact(&new_text))
        } else {
            (old_text.into_owned(), new_text.into_owned())
        };
        let a = if old.is_some() {
            format!("a/{}", rel.display())
        } else {
            "/dev/null".to_owned()
        };
        let b = format!("b/{}", rel.display());
        let diff = similar::TextDiff::from_lines(&old_text, &new_text);
        let body = diff.unified_diff().context_radius(3).header(&a, &b).to_string();
        if body.is_empty() {
            // Only redacted values differ.
            report.push_str(&format!(
                "--- {a}\n+++ b/{}\n (secret values differ; not shown)\n",
                rel.display()
            ));
        } else {
            report.push_str(&body);
        }
    }
    let dirs: std::collections::BTreeSet<&Path> = rendered
        .files
        .keys()
        .filter_map(|p| p.components().next().map(|c| Path::new(c.as_os_str())))
        .collect();
    for d in dirs {
        for extra in walk(&out.join(d))? {
            let rel = extra.strip_prefix(out).unwrap_or(&extra).to_path_buf();
            if !rendered.files.contains_key(&rel) {
                report.push_str(&format!(
                    "Only in {}: {} (not rendered)\n",
                    out.display(),
                    rel.display()
                ));
            }
        }
    }
    Ok((!report.is_empty()).then_some(report))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// YAML keys whose values are secret (or certificate blobs) in rendered files.
const SECRET_KEYS: &[&str] = &[
    "token",
    "key",
    "crt",
    "ca",
    "id",
    "secret",
    "secretboxEncryptionSecret",
    "aescbcEncryptionSecret",
    "bootstraptoken",
];

/// Replaces secret values by a short fingerprint, line by line, so a diff
/// shows which secret changed but never its value. Block scalars under a
/// secret key and any PEM body are redacted too.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut block_indent: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(bi) = block_indent {
            if indent > bi || line.trim().is_empty() {
                continue;
            }
            block_indent = None;
        }
        let t = line.trim_start();
        let body = t.strip_prefix("- ").unwrap_or(t);
        if let Some((k, v)) = body.split_once(':') {
            let k = k.trim().trim_matches('"');
            let v = v.trim();
            if SECRET_KEYS.contains(&k) && !v.is_empty() {
                let colon = line.find(':').unwrap_or(0);
                let prefix = format!("{} ", &line[..=colon]);
                if v.starts_with('|') || v.starts_with('>') {
                    block_indent = Some(indent);
                    out.push_str(&format!("{prefix}<redacted block>\n"));
                } else {
                    out.push_str(&format!("{prefix}{}\n", fingerprint(v)));
                }
                continue;
            }
        }
        if t.contains("PRIVATE KEY") || (t.len() >= 40 && is_base64ish(t)) {
            out.push_str(&format!("{}{}\n", &line[..indent], fingerprint(t)));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_base64ish(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

fn fingerprint(v: &str) -> String {
    let h = sha2::Sha256::digest(v.as_bytes());
    format!("<redacted sha256:{}>", &hex::encode(h)[..12])
}

/// Reads patch files in order.
pub(crate) fn load_patches(paths: &[PathBuf]) -> Result<Vec<patch::Patch>> {
    paths.iter().map(|p| patch::Patch::load(p)).collect()
}

/// Parses a multi-document YAML text, skipping empty documents.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<yaml_serde::Value>> {
    let mut docs = Vec::new();
    for d in yaml_serde::Deserializer::from_str(text) {
        let v = yaml_serde::Value::deserialize(d)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Serialises documents as one multi-document YAML text.
pub(crate) fn serialize_documents(docs: &[yaml_serde::Value]) -> String {
    docs.iter()
        .map(|d| yaml_serde::to_string(d).expect("YAML values serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_values_but_shows_which_changed() {
        let a = "machine:\n  token: abc.def\n  ca:\n    crt: TUlJQmFzZTY0\n    key: |\n      -----BEGIN EC PRIVATE KEY-----\n      AAAA\n  type: worker\n";
        let r = redact(a);
        assert!(
            !r.contains("abc.def") && !r.contains("TUlJQmFzZTY0") && !r.contains("AAAA"),
            "{r}"
        );
        assert!(r.contains("type: worker"));
        assert_ne!(redact("token: one\n"), redact("token: two\n"));
    }
}

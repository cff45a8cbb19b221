//! What the nodes' container runtime needs for registry mirrors and Spegel,
//! per distribution. Each choice names the upstream statement it rests on;
//! the facts are collected in `../shared/spegel.md`.
//!
//! - **Talos** (v1.13): registry mirrors are `RegistryMirrorConfig` documents
//!   and per-host TLS `RegistryTLSConfig` documents (the v1alpha1
//!   `machine.registries` field is gone from the v1.13 config schema). Talos
//!   writes them as `hosts.toml` under `/etc/cri/conf.d/hosts`, containerd's
//!   `config_path` on Talos (talos `internal/pkg/containers/cri/containerd`).
//!   Its base CRI config sets `discard_unpacked_layers = true`
//!   (talos `hack/cri-plugin.part`), and Spegel exits when layers are
//!   discarded (spegel website, "Compatibility"), so every machine config
//!   carries the CRI customisation Talos merges from
//!   `/etc/cri/conf.d/20-customization.part` (siderolabs docs `spegel.mdx`,
//!   step 1; the `machine.files` form, before v1.14).
//! - **k3s**: from the releases where it is GA (v1.29.12, v1.30.8, v1.31.4;
//!   k3s docs `registry-mirror.md`), k3s's embedded Spegel replaces the chart
//!   (spegel website, "K3S and RKE2"): `embedded-registry: true` on servers
//!   and `/etc/rancher/k3s/registries.yaml` on every node listing what to
//!   share. Older k3s gets the chart with k3s's own containerd paths.
//!   Mirror endpoints go to `registries.yaml` (`mirrors.<registry>.endpoint`,
//!   `configs.<host>.tls.ca_file`; k3s docs `private-registry.md`); k3s has no
//!   `override_path` key but sets it when an endpoint has a path other than
//!   `/v2` (k3s `pkg/agent/containerd/config.go`, `normalizeEndpointAddress`),
//!   so a path kept without `override_path` gets `/v2` appended here, which is
//!   what containerd would request.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::inventory::{Cluster, Distribution, Registry};

/// The CRI fragment Talos merges into its containerd config (siderolabs docs `spegel.mdx`).
pub const TALOS_CRI_CUSTOMIZATION_PATH: &str = "/etc/cri/conf.d/20-customization.part";
/// Keeps unpacked layers, so each node can serve every layer of its images to peers
/// (spegel website, "Compatibility": `discard_unpacked_layers = false`).
pub const TALOS_CRI_CUSTOMIZATION: &str =
    "[plugins.\"io.containerd.cri.v1.images\"]\n  discard_unpacked_layers = false\n";
/// `registries.yaml` on every k3s node (k3s docs `private-registry.md`).
pub const K3S_REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// Where registry CA files are installed on k3s nodes (`registries.yaml` names them).
pub const K3S_REGISTRY_CA_DIR: &str = "/etc/rancher/k3s/registry-ca";

/// The containerd paths the Spegel chart is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Containerd {
    pub sock: &'static str,
    pub registry_config_path: &'static str,
    pub content_path: &'static str,
}

/// containerd as each distribution runs it.
pub fn containerd(d: Distribution) -> Containerd {
    match d {
        // Talos keeps containerd's socket and content store; only config_path
        // differs (siderolabs docs `spegel.mdx`, spegel website "Talos").
        Distribution::Talos => Containerd {
            sock: "/run/containerd/containerd.sock",
            registry_config_path: "/etc/cri/conf.d/hosts",
            content_path: "/var/lib/containerd/io.containerd.content.v1.content",
        },
        // k3s runs its own containerd: state /run/k3s/containerd, root
        // <data-dir>/agent/containerd, hosts directory <data-dir>/agent/etc/containerd/certs.d
        // (k3s `pkg/agent/config`, docs "Configuring containerd").
        Distribution::K3s => Containerd {
            sock: "/run/k3s/containerd/containerd.sock",
            registry_config_path: "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
            content_path: "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content",
        },
    }
}

/// Whether this k3s release has the embedded registry mirror as a GA feature:
/// v1.29.12+k3s1, v1.30.8+k3s1, v1.31.4+k3s1 and every later minor
/// (k3s docs `registry-mirror.md`; the experimental releases are not used).
pub fn k3s_embedded_registry(version: &str) -> bool {
    let v = version.trim_start_matches('v');
    let core = v.split(['+', '-']).next().unwrap_or("");
    let n: Vec<u32> = core.split('.').filter_map(|p| p.parse().ok()).collect();
    let [major, minor, patch] = n[..] else { return false };
    match (major, minor) {
        (1, 29) => patch >= 12,
        (1, 30) => patch >= 8,
        (1, 31) => patch >= 4,
        (1, m) => m >= 32,
        (m, _) => m > 1,
    }
}

/// True when `cluster` runs k3s's embedded Spegel instead of the chart.
pub fn uses_k3s_embedded_registry(cluster: &Cluster) -> bool {
    cluster.distribution == Distribution::K3s && k3s_embedded_registry(&cluster.versions.k3s)
}

/// The CA file of a registry, checked to hold PEM certificates.
fn ca_pem(cluster: &Cluster, r: &Registry) -> Result<Option<String>> {
    let Some(path) = &r.ca else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cluster {}: registry `{}`: CA file {}",
            cluster.name,
            r.name,
            path.display()
        )
    })?;
    let blocks = pem::parse_many(&text).unwrap_or_default();
    if blocks.is_empty() || blocks.iter().any(|b| b.tag() != "CERTIFICATE") {
        bail!(
            "cluster {}: registry `{}`: CA file {} is not PEM certificates (-----BEGIN CERTIFICATE-----)",
            cluster.name,
            r.name,
            path.display()
        );
    }
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(Some(text))
}

/// Talos documents for the inventory's mirrors: one `RegistryMirrorConfig`
/// per registry with mirrors, one `RegistryTLSConfig` per mirror host with a CA.
pub fn talos_documents(cluster: &Cluster) -> Result<Vec<Value>> {
    let mut mirrors = vec![];
    let mut tls: Vec<Value> = vec![];
    for r in &cluster.registries {
        if !r.mirrors.is_empty() {
            let endpoints: Vec<Value> = r
                .mirrors
                .iter()
                .map(|m| {
                    let mut e = json!({"url": m.url});
                    if r.override_path {
                        e["overridePath"] = json!(true);
                    }
                    e
                })
                .collect();
            mirrors.push(json!({"apiVersion": "v1alpha1", "kind": "RegistryMirrorConfig",
                                "name": r.name, "endpoints": endpoints}));
        }
        if let Some(ca) = ca_pem(cluster, r)? {
            for m in r.mirrors.iter().filter(|m| m.url.starts_with("https://")) {
                if !tls.iter().any(|t| t["name"] == m.host.as_str()) {
                    tls.push(json!({"apiVersion": "v1alpha1", "kind": "RegistryTLSConfig",
                                    "name": m.host, "ca": ca}));
                }
            }
        }
    }
    mirrors.extend(tls);
    Ok(mirrors)
}

/// What a k3s node gets: `registries.yaml` and the CA files it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3sRegistries {
    pub yaml: String,
    /// `(path on the node, PEM)`.
    pub ca_files: Vec<(String, String)>,
}

/// The node path of the CA file for mirror host `host`.
fn k3s_ca_path(host: &str) -> String {
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{K3S_REGISTRY_CA_DIR}/{safe}.pem")
}

/// A mirror URL as k3s must be given it to request what containerd (and
/// Talos) request for the same inventory entry.
fn k3s_endpoint(r: &Registry, url: &str, path: &str) -> String {
    if r.override_path || path == "/" {
        url.to_owned()
    } else {
        format!("{url}/v2")
    }
}

/// `registries.yaml` for every node of a k3s cluster; `None` when there is
/// nothing to say (no mirrors and no embedded registry).
pub fn k3s_registries(cluster: &Cluster) -> Result<Option<K3sRegistries>> {
    let embedded = uses_k3s_embedded_registry(cluster);
    if cluster.registries.is_empty() && !embedded {
        return Ok(None);
    }
    let mut mirrors = serde_json::Map::new();
    if embedded {
        // Listed registries are shared through the embedded mirror; "*" shares all
        // (k3s docs `registry-mirror.md`, "Enabling Registry Mirroring").
        mirrors.insert("*".into(), json!({}));
    }
    let mut configs = serde_json::Map::new();
    let mut ca_files: Vec<(String, String)> = vec![];
    for r in &cluster.registries {
        let endpoint: Vec<String> = r.mirrors.iter().map(|m| k3s_endpoint(r, &m.url, &m.path)).collect();
        let entry = if endpoint.is_empty() {
            json!({})
        } else {
            json!({"endpoint": endpoint})
        };
        mirrors.insert(r.name.clone(), entry);
        if let Some(ca) = ca_pem(cluster, r)? {
            for m in r.mirrors.iter().filter(|m| m.url.starts_with("https://")) {
                let path = k3s_ca_path(&m.host);
                if !ca_files.iter().any(|(p, _)| *p == path) {
                    ca_files.push((path.clone(), ca.clone()));
                    configs.insert(m.host.clone(), json!({"tls": {"ca_file": path}}));
                }
            }
        }
    }
    let mut doc = json!({"mirrors": mirrors});
    if !configs.is_empty() {
        doc["configs"] = Value::Object(configs);
    }
    let yaml = yaml_serde::to_string(&doc).context("registries.yaml")?;
    Ok(Some(K3sRegistries { yaml, ca_files }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_registry_is_ga_from_the_december_2024_releases() {
        for (v, want) in [
            ("v1.29.11+k3s1", false),
            ("v1.29.12+k3s1", true),
            ("v1.30.7+k3s1", false),
            ("v1.30.8+k3s1", true),
            ("v1.31.4+k3s1", true),
            ("v1.31.3+k3s2", false),
            ("v1.28.15+k3s1", false),
            ("v1.34.2+k3s1", true),
            ("garbage", false),
        ] {
            assert_eq!(k3s_embedded_registry(v), want, "{v}");
        }
    }
}

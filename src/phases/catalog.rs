//! The data of phases 0-2, from `phases/*.toml` (compiled in): namespaces and
//! seed secrets, pinned CRD sources, and the core releases with the Flux
//! controller images that install them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::artifacts::Pinned;
use crate::inventory::{Cluster, Cni, Distribution, GitopsEngine};

const PREREQUISITES: &str = include_str!("../../phases/prerequisites.toml");
const CRDS: &str = include_str!("../../phases/crds.toml");
const CORE: &str = include_str!("../../phases/core.toml");

/// `phases/prerequisites.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisites {
    /// Namespaces created before anything else.
    pub namespaces: Vec<String>,
    /// Seed secrets, each from one inventory reference.
    #[serde(rename = "secret", default)]
    pub secrets: Vec<SeedSecret>,
}

/// A Secret whose one key is filled from an inventory reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecret {
    /// The inventory reference: `sops_age_key`, `onepassword_token`,
    /// `vault_token` (`[cluster.secrets]`) or `deploy_key` (`[cluster.gitops]`).
    pub from: String,
    pub namespace: String,
    pub name: String,
    /// The key in the Secret's data.
    pub key: String,
    /// Also store the value's OpenSSH public key (an SSH private key) under this key.
    pub public_key: Option<String>,
    /// Also store the Git host's known_hosts under this key (SSH repositories).
    pub known_hosts: Option<String>,
}

/// `phases/crds.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crds {
    #[serde(rename = "source")]
    pub sources: Vec<CrdSource>,
}

/// One pinned CRD file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdSource {
    /// The project it comes from (`gateway-api`).
    pub name: String,
    pub version: String,
    /// File name in the artifact cache and in `--artifacts DIR`.
    pub file: String,
    pub url: Option<String>,
    pub sha256: String,
}

impl CrdSource {
    /// The artifact to fetch; without a URL when `offline` (air-gapped runs never download).
    pub fn pinned(&self, offline: bool) -> Pinned {
        Pinned {
            file: self.file.clone(),
            url: if offline { None } else { self.url.clone() },
            sha256: self.sha256.clone(),
        }
    }
}

/// `phases/core.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Core {
    pub flux: FluxVersion,
    #[serde(rename = "release")]
    pub releases: Vec<Release>,
}

/// The Flux release phase 2 installs; its objects and images come from the
/// pinned upstream manifest (`phases/flux.toml`), which must be this version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluxVersion {
    pub version: String,
}

/// One Helm release of phase 2, with its defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    /// `https://...` or `oci://...` Helm repository.
    pub repository: String,
    pub chart: String,
    pub version: String,
    /// The CNI: Nodes become Ready once its DaemonSet runs.
    #[serde(default)]
    pub cni: bool,
    /// Distributions (`talos`, `k3s`) that run this themselves.
    #[serde(default)]
    pub skip_on: Vec<String>,
    /// A component k3s ships: installed on k3s only when `[cluster.k3s] disable` lists it.
    pub k3s_builtin: Option<String>,
    /// Only for this GitOps engine (`flux`, `argocd`).
    pub only_for_engine: Option<String>,
    /// A component k3s embeds from some release on (`embedded-registry`): not
    /// installed where the cluster's k3s runs it.
    pub k3s_embeds: Option<String>,
    /// Labels of the release namespace, which phase 2 then creates itself.
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
    /// Workloads (`Kind/name`, in the release namespace) that must be ready.
    #[serde(default)]
    pub wait: Vec<String>,
    /// Helm values (YAML) with `{{ api_host }}`, `{{ api_port }}`, `{{ dns_ip }}`
    /// and what [`super::chart_context::values_context`] adds.
    #[serde(default)]
    pub values: String,
}

impl Release {
    /// Whether `cluster` gets this release.
    pub fn wanted(&self, cluster: &Cluster) -> bool {
        let dist = distribution_name(cluster.distribution);
        if self.skip_on.iter().any(|d| d == dist) {
            return false;
        }
        if let Some(builtin) = &self.k3s_builtin
            && cluster.distribution == Distribution::K3s
            && !cluster.k3s.disable.iter().any(|d| d == builtin)
        {
            return false;
        }
        if self.cni && cluster.cni != Cni::Cilium {
            return false;
        }
        if self.k3s_embeds.as_deref() == Some("embedded-registry")
            && crate::render::registries::uses_k3s_embedded_registry(cluster)
        {
            return false;
        }
        match &self.only_for_engine {
            None => true,
            Some(engine) => cluster
                .gitops
                .as_ref()
                .is_some_and(|g| engine_name(g.engine) == engine.as_str()),
        }
    }

    /// The wait list as `(kind, name)`.
    pub fn waits(&self) -> Vec<(String, String)> {
        self.wait
            .iter()
            .filter_map(|w| w.split_once('/'))
            .map(|(k, n)| (k.to_owned(), n.to_owned()))
            .collect()
    }
}

/// `talos` or `k3s`.
pub fn distribution_name(d: Distribution) -> &'static str {
    match d {
        Distribution::Talos => "talos",
        Distribution::K3s => "k3s",
    }
}

/// `flux` or `argocd`.
pub fn engine_name(e: GitopsEngine) -> &'static str {
    match e {
        GitopsEngine::Flux => "flux",
        GitopsEngine::Argocd => "argocd",
    }
}

fn parse<T: for<'de> Deserialize<'de>>(file: &str, text: &str) -> T {
    // Compiled-in data, covered by the tests below: a parse error is a build defect.
    toml::from_str(text).unwrap_or_else(|e| panic!("phases/{file} is invalid: {e}"))
}

/// Phase 0's data.
pub fn prerequisites() -> Prerequisites {
    parse("prerequisites.toml", PREREQUISITES)
}

/// Phase 1's data.
pub fn crds() -> Crds {
    parse("crds.toml", CRDS)
}

/// Phase 2's data.
pub fn core() -> Core {
    parse("core.toml", CORE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_data_parses_and_is_pinned() {
        let p = prerequisites();
        assert!(p.namespaces.contains(&"flux-system".to_owned()));
        assert!(p.secrets.iter().any(|s| s.from == "deploy_key"));
        let c = crds();
        assert!(c.sources.iter().all(|s| s.sha256.len() == 64));
        let core = core();
        assert!(core.releases.iter().filter(|r| r.cni).count() == 1);
        assert!(core.releases.iter().all(|r| !r.waits().is_empty()));
        assert_eq!(
            core.flux.version,
            super::super::flux::pin().version,
            "phases/core.toml wants another Flux than phases/flux.toml pins: run `cargo xtask codegen flux`"
        );
        assert!(
            c.sources.iter().all(|s| !s.name.starts_with("flux")),
            "Flux CRDs come from phases/flux/"
        );
    }
}

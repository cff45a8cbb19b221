//! Flux as upstream installs it: the pinned release manifest
//! (`phases/flux/install.yaml`, written by `cargo xtask codegen flux` with its
//! pin `phases/flux.toml`), compiled in. Phase 0 applies its Namespace, phase 1
//! its CRDs, phase 2 everything else, each object through
//! [`flux_patches::apply`](super::flux_patches::apply) (the only changes).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::flux_patches;
use crate::inventory::Cluster;

/// The upstream manifest, byte for byte.
pub const INSTALL_YAML: &str = include_str!("../../phases/flux/install.yaml");
const PIN: &str = include_str!("../../phases/flux.toml");

/// `phases/flux.toml`: what the embedded manifest is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Flux release (`v2.9.0`).
    pub version: String,
    /// Where the codegen read it (a path or a release URL).
    pub source: String,
    /// sha256 of [`INSTALL_YAML`].
    pub sha256: String,
    /// Object count per kind.
    pub kinds: BTreeMap<String, usize>,
    /// Controller (Deployment) name → image.
    pub images: BTreeMap<String, String>,
}

/// The pin of the embedded manifest.
pub fn pin() -> Pin {
    // Compiled-in data covered by tests: a parse error is a build defect.
    toml::from_str(PIN).unwrap_or_else(|e| panic!("phases/flux.toml is invalid: {e}"))
}

/// Every upstream object, in manifest order, unpatched.
pub fn upstream() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        crate::k8s::parse_manifests(INSTALL_YAML).unwrap_or_else(|e| panic!("phases/flux/install.yaml is invalid: {e}"))
    })
}

fn patched(pick: impl Fn(&Value) -> bool, cluster: &Cluster) -> Vec<Value> {
    upstream()
        .iter()
        .filter(|o| pick(o))
        .map(|o| flux_patches::apply(o.clone(), cluster))
        .collect()
}

/// The Namespace (with upstream's labels), for phase 0.
pub fn namespace(cluster: &Cluster) -> Vec<Value> {
    patched(|o| o["kind"] == "Namespace", cluster)
}

/// The CustomResourceDefinitions, for phase 1.
pub fn crds(cluster: &Cluster) -> Vec<Value> {
    patched(|o| o["kind"] == "CustomResourceDefinition", cluster)
}

/// Everything else (quota, RBAC, Services, controllers, NetworkPolicies), for phase 2.
pub fn components(cluster: &Cluster) -> Vec<Value> {
    patched(
        |o| o["kind"] != "Namespace" && o["kind"] != "CustomResourceDefinition",
        cluster,
    )
}

/// The namespace the manifest installs into.
pub fn namespace_name() -> &'static str {
    upstream()
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or("flux-system")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_embedded_manifest_matches_its_pin() {
        let pin = pin();
        assert_eq!(hex::encode(sha2::Sha256::digest(INSTALL_YAML.as_bytes())), pin.sha256);
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for o in upstream() {
            *kinds.entry(o["kind"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        assert_eq!(kinds, pin.kinds);
        assert_eq!(namespace_name(), "flux-system");
    }
}

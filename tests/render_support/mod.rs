//! Helpers shared by the `render_*` integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bootstrap::inventory::{self, Cluster, Distribution, Inventory};
use bootstrap::render::{K3sSecrets, SecretsBundle, TalosBundle};

/// A path inside the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Loads and validates an inventory of the repository.
pub fn load(rel: &str) -> Inventory {
    match inventory::load(&repo(rel)) {
        Ok(l) => l.inventory,
        Err(d) => panic!("{rel} does not validate: {d:?}"),
    }
}

/// The committed TEST-ONLY secrets for a cluster of this distribution.
pub fn fixture_secrets(c: &Cluster) -> SecretsBundle {
    match c.distribution {
        Distribution::Talos => SecretsBundle::Talos(
            TalosBundle::load(&repo("tests/fixtures/talos"))
                .unwrap()
                .expect("tests/fixtures/talos/secrets.yaml"),
        ),
        Distribution::K3s => SecretsBundle::K3s(
            K3sSecrets::load(&repo("tests/fixtures/k3s"))
                .unwrap()
                .expect("tests/fixtures/k3s/secrets.yaml"),
        ),
    }
}

/// The Talos v1.13 machine-config schema from ../shared.
pub fn talos_schema() -> jsonschema::Validator {
    // `shared/` sits beside the repository (CI) or higher up (a worktree).
    let rel = "shared/talos/config.schema.v1.13.json";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join(rel))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{rel} not found beside or above the repository"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::options()
        .build(&schema)
        .expect("the Talos schema compiles")
}

/// Every YAML document of `text`, as JSON.
pub fn documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The document of `kind` (`None`: the v1alpha1 one).
pub fn doc<'a>(docs: &'a [serde_json::Value], kind: Option<&str>) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == kind)
        .unwrap_or_else(|| panic!("no document of kind {kind:?}"))
}

/// Decodes a base64-of-PEM field to DER.
pub fn pem_der(b64: &str) -> (String, Vec<u8>) {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let p = pem::parse(text).unwrap();
    (p.tag().to_owned(), p.contents().to_vec())
}

//! The HelmReleases and HelmRepositories of a local GitOps checkout
//! (`[cluster.gitops] checkout`): phase 2 installs the releases the repository
//! defines (same chart, version and values), so Flux adopts them later
//! instead of fighting them. Files that are not YAML objects (templates,
//! SOPS-encrypted data, docs) are skipped.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The Flux Helm objects found in a checkout.
#[derive(Debug, Default, Clone)]
pub struct Checkout {
    /// `(file, HelmRelease)`.
    pub releases: Vec<(PathBuf, Value)>,
    /// `(file, HelmRepository)`.
    pub repositories: Vec<(PathBuf, Value)>,
}

fn is_kind(o: &Value, group: &str, kind: &str) -> bool {
    o["kind"] == kind
        && o["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("{group}/")))
}

fn namespace_matches(o: &Value, namespace: &str) -> bool {
    // Kustomize often sets the namespace; a file without one matches any.
    o["metadata"]["namespace"].as_str().is_none_or(|ns| ns == namespace)
}

impl Checkout {
    /// Reads every `*.yaml`/`*.yml` under `dir` (skipping hidden directories).
    pub fn read(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!("GitOps checkout {} is not a directory", dir.display()));
        }
        let mut out = Self::default();
        let mut files = vec![];
        collect(dir, &mut files).map_err(|e| format!("GitOps checkout {}: {e}", dir.display()))?;
        files.sort();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for doc in yaml_serde::Deserializer::from_str(&text) {
                let Ok(v) = yaml_serde::Value::deserialize(doc) else {
                    break;
                };
                let Ok(o) = serde_json::to_value(&v) else { continue };
                if is_kind(&o, "helm.toolkit.fluxcd.io", "HelmRelease") {
                    out.releases.push((file.clone(), o));
                } else if is_kind(&o, "source.toolkit.fluxcd.io", "HelmRepository") {
                    out.repositories.push((file.clone(), o));
                }
            }
        }
        Ok(out)
    }

    /// The HelmRelease called `name` for `namespace`.
    pub fn release(&self, name: &str, namespace: &str) -> Option<&(PathBuf, Value)> {
        self.releases
            .iter()
            .find(|(_, o)| o["metadata"]["name"] == name && namespace_matches(o, namespace))
    }

    /// The HelmRepository called `name` for `namespace`.
    pub fn repository(&self, name: &str, namespace: &str) -> Option<&(PathBuf, Value)> {
        self.repositories
            .iter()
            .find(|(_, o)| o["metadata"]["name"] == name && namespace_matches(o, namespace))
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let ty = entry.file_type()?;
        if ty.is_dir() && !hidden {
            collect(&path, out)?;
        } else if ty.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_releases_and_repositories_in_nested_multi_document_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("infra/cilium")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(
            dir.path().join("infra/cilium/release.yaml"),
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {name: cilium, namespace: flux-system}\nspec: {url: https://helm.cilium.io}\n---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: cilium}\nspec: {chart: {spec: {chart: cilium, version: 1.18.9}}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".git/x.yaml"), "kind: HelmRelease\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "# not yaml").unwrap();
        let c = Checkout::read(dir.path()).unwrap();
        assert_eq!(c.releases.len(), 1);
        assert!(c.release("cilium", "kube-system").is_some());
        assert!(c.repository("cilium", "flux-system").is_some());
        assert!(c.repository("cilium", "other").is_none());
    }
}

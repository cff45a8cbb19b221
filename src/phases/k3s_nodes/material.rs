//! What phase -1 installs on each k3s node, rendered locally: `config.yaml`
//! and `install.sh` per node, the record the install script keeps once it
//! installed exactly those files, and the k3s binary (a local path, or
//! `binary_url` pinned by sha256 through the artifact store).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::super::ClusterRun;
use super::PHASE;
use crate::artifacts::{Pinned, sha256_file};
use crate::engine::PhaseError;
use crate::inventory::Role;
use crate::render::SecretsBundle;
use crate::render::k3s::K3sRenderer;

fn failed(run: &ClusterRun, message: impl std::fmt::Display) -> PhaseError {
    PhaseError::Failed {
        phase: PHASE.into(),
        message: format!("cluster {}: {message}", run.cluster.name),
    }
}

/// One node's rendered install.
pub(super) struct NodeFiles {
    pub(super) unit: &'static str,
    pub(super) config: String,
    pub(super) script: String,
    /// What the install script records once it installed exactly these files.
    pub(super) record: String,
    pub(super) config_sha256: String,
}

/// Everything rendered for the run's nodes.
pub(super) struct Material {
    pub(super) files: BTreeMap<String, NodeFiles>,
    pub(super) binary_sha256: String,
    /// The local binary (apply only).
    pub(super) binary: Option<PathBuf>,
    /// The cluster token (never logged, never in an error).
    pub(super) token: String,
}

/// The k3s binary: its sha256, and (when `fetch`) a verified local path.
async fn binary(run: &ClusterRun, fetch: bool) -> Result<(String, Option<PathBuf>), PhaseError> {
    let k = &run.cluster.k3s;
    let pinned = k.binary_sha256.as_ref().map(|s| s.to_ascii_lowercase());
    if let Some(path) = &k.binary {
        let actual = sha256_file(path).map_err(|e| failed(run, format!("the k3s binary {}: {e}", path.display())))?;
        if let Some(p) = &pinned
            && *p != actual
        {
            return Err(failed(
                run,
                format!(
                    "the k3s binary {} has sha256 {actual}, but binary_sha256 pins {p}",
                    path.display()
                ),
            ));
        }
        return Ok((actual, fetch.then(|| path.clone())));
    }
    let (Some(url), Some(sha)) = (&k.binary_url, pinned) else {
        return Err(failed(
            run,
            "no k3s binary: set [cluster.k3s] binary (a local path) or binary_url with binary_sha256",
        ));
    };
    if !fetch {
        return Ok((sha, None));
    }
    let file = format!("k3s-{}", run.cluster.versions.k3s.replace('+', "-"));
    let path = run
        .artifacts
        .get(&Pinned {
            file,
            url: Some(url.clone()),
            sha256: sha.clone(),
        })
        .await
        .map_err(|e| failed(run, e))?;
    Ok((sha, Some(path)))
}

/// Renders every node of the run. `generate`: create the cluster token on
/// first use (apply); plan never writes, so `None` means nothing exists yet.
pub(super) async fn load(run: &ClusterRun, generate: bool) -> Result<Option<Material>, PhaseError> {
    let (root, cluster) = (&run.state_root, &run.cluster);
    let bundle = if generate {
        Some(SecretsBundle::load_or_generate(root, cluster).map_err(|e| failed(run, format!("{e:#}")))?)
    } else {
        SecretsBundle::load(root, cluster).map_err(|e| failed(run, format!("{e:#}")))?
    };
    let Some(bundle) = bundle else { return Ok(None) };
    let secrets = bundle.k3s().map_err(|e| failed(run, e))?;
    let (binary_sha256, binary) = binary(run, generate).await?;
    let r = K3sRenderer::new(cluster, secrets).map_err(|e| failed(run, format!("{e:#}")))?;
    let mut files = BTreeMap::new();
    for node in run.nodes() {
        let config = r.node_config(node).map_err(|e| failed(run, format!("{e:#}")))?;
        let script = r.install_script(node).map_err(|e| failed(run, format!("{e:#}")))?;
        let (role, unit) = match node.role {
            Role::Controlplane => ("server", "k3s"),
            Role::Worker => ("agent", "k3s-agent"),
        };
        let config_sha256 = hex::encode(Sha256::digest(config.as_bytes()));
        let record = format!(
            "version={} role={role} binary={binary_sha256} config={config_sha256} script={}",
            cluster.versions.k3s,
            hex::encode(Sha256::digest(script.as_bytes())),
        );
        files.insert(
            node.name.clone(),
            NodeFiles {
                unit,
                config,
                script,
                record,
                config_sha256,
            },
        );
    }
    Ok(Some(Material {
        files,
        binary_sha256,
        binary,
        token: secrets.k3s.token.clone(),
    }))
}

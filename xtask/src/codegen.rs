//! `cargo xtask codegen flux [--manifest PATH]`: pins the upstream Flux
//! release manifest as product data. The input is read unchanged (by default
//! `../shared/flux/v2.9.0/install.yaml` beside the workspace, or a release
//! asset fetched once and verified against `--sha256`), checked for the
//! objects a Flux installation consists of, and written to
//! `phases/flux/install.yaml` with `phases/flux.toml` (version, source,
//! sha256, controller images read from the manifest). The product embeds both;
//! moving to a newer Flux is running this against a newer manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::Digest;

/// `cargo xtask codegen ...`.
#[derive(clap::Subcommand)]
pub enum CodegenCmd {
    /// Pin an upstream Flux installation manifest under `phases/`.
    Flux(FluxArgs),
}

/// Options of `cargo xtask codegen flux`.
#[derive(clap::Args)]
pub struct FluxArgs {
    /// The upstream manifest (`install.yaml` of a Flux release).
    #[arg(long, value_name = "PATH", conflicts_with = "download")]
    pub manifest: Option<PathBuf>,
    /// Flux version the manifest is (default: the `vX.Y.Z` directory it sits in).
    #[arg(long)]
    pub version: Option<String>,
    /// Fetch the release asset `install.yaml` of `--version` from GitHub instead (needs `--sha256`).
    #[arg(long, requires_all = ["version", "sha256"])]
    pub download: bool,
    /// Expected sha256 of the input (required with `--download`, checked when given).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Where to write (default: the workspace's `phases/`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The default input: the v2.9.0 manifest in `../shared/` beside the workspace.
pub const DEFAULT_MANIFEST: &str = "../shared/flux/v2.9.0/install.yaml";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Runs `cargo xtask codegen`.
pub fn run(cmd: CodegenCmd) -> Result<()> {
    match cmd {
        CodegenCmd::Flux(a) => {
            let out = a.out.clone().unwrap_or_else(|| workspace().join("phases"));
            let (bytes, source) = read_input(&a)?;
            let version = match &a.version {
                Some(v) => v.clone(),
                None => version_from_path(Path::new(&source))?,
            };
            let pin = flux(&bytes, &version, &source, &out)?;
            println!(
                "Flux {version}: {} objects from {source} (sha256 {}) written to {}",
                pin.objects,
                pin.sha256,
                out.display()
            );
            Ok(())
        }
    }
}

fn read_input(a: &FluxArgs) -> Result<(Vec<u8>, String)> {
    if a.download {
        let version = a.version.as_deref().unwrap_or_default();
        let sha = a.sha256.clone().unwrap_or_default();
        let url = format!("https://github.com/fluxcd/flux2/releases/download/{version}/install.yaml");
        let store = bootstrap::artifacts::ArtifactStore {
            offline: None,
            cache: workspace().join("target/codegen-cache"),
        };
        let pinned = bootstrap::artifacts::Pinned {
            file: format!("flux-{version}-install.yaml"),
            url: Some(url.clone()),
            sha256: sha,
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let path = rt
            .block_on(store.get(&pinned))
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        return Ok((std::fs::read(&path)?, url));
    }
    let (path, shown) = match &a.manifest {
        Some(p) => (p.clone(), p.display().to_string()),
        None => (workspace().join(DEFAULT_MANIFEST), DEFAULT_MANIFEST.to_owned()),
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(want) = &a.sha256 {
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        if !want.eq_ignore_ascii_case(&got) {
            bail!("{shown}: sha256 {got}, expected {want}");
        }
    }
    Ok((bytes, shown))
}

/// `v2.9.0` from `.../v2.9.0/install.yaml`.
fn version_from_path(p: &Path) -> Result<String> {
    p.parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with('v') && n[1..].split('.').count() == 3)
        .with_context(|| format!("{}: say which Flux version it is with --version", p.display()))
}

/// What was pinned.
pub struct Pin {
    pub sha256: String,
    pub objects: usize,
}

/// Checks `bytes` is a Flux installation and writes it with its pin file under `out`.
pub fn flux(bytes: &[u8], version: &str, source: &str, out: &Path) -> Result<Pin> {
    let text = std::str::from_utf8(bytes).context("the manifest is not UTF-8")?;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    let mut objects = 0;
    for doc in yaml_serde::Deserializer::from_str(text) {
        let v = yaml_serde::Value::deserialize(doc).context("the manifest is not YAML")?;
        if v.is_null() {
            continue;
        }
        objects += 1;
        let kind = v["kind"].as_str().context("an object without kind")?.to_owned();
        if kind == "Deployment" {
            let name = v["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let image = v["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .with_context(|| format!("Deployment {name} has no image"))?;
            images.insert(name, image.to_owned());
        }
        *kinds.entry(kind).or_default() += 1;
    }
    for (kind, min) in [("Namespace", 1), ("CustomResourceDefinition", 1), ("Deployment", 1)] {
        if kinds.get(kind).copied().unwrap_or(0) < min {
            bail!("{source} is not a Flux installation: it has no {kind}");
        }
    }
    let sha256 = hex::encode(sha2::Sha256::digest(bytes));
    let mut toml = format!(
        "# Generated by `cargo xtask codegen flux`; do not edit. The pinned upstream Flux\n\
         # installation the product embeds (phases/flux/install.yaml, byte for byte the\n\
         # input below). Moving Flux = running the codegen against a newer manifest.\n\
         version = \"{version}\"\nsource = \"{source}\"\nsha256 = \"{sha256}\"\n\n\
         # Objects by kind, and the controller images, as the manifest has them.\n[kinds]\n"
    );
    for (k, n) in &kinds {
        toml.push_str(&format!("{k} = {n}\n"));
    }
    toml.push_str("\n[images]\n");
    for (name, image) in &images {
        toml.push_str(&format!("{name} = \"{image}\"\n"));
    }
    std::fs::create_dir_all(out.join("flux"))?;
    std::fs::write(out.join("flux/install.yaml"), bytes)?;
    std::fs::write(out.join("flux.toml"), toml)?;
    Ok(Pin { sha256, objects })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_manifest_is_regenerated_byte_for_byte() {
        let input = workspace().join(DEFAULT_MANIFEST);
        let Ok(bytes) = std::fs::read(&input) else {
            assert!(std::env::var_os("CI").is_none(), "{} missing", input.display());
            return;
        };
        let out = tempfile::tempdir().unwrap();
        flux(&bytes, "v2.9.0", DEFAULT_MANIFEST, out.path()).unwrap();
        for f in ["flux.toml", "flux/install.yaml"] {
            let want = std::fs::read(workspace().join("phases").join(f)).unwrap();
            assert_eq!(
                std::fs::read(out.path().join(f)).unwrap(),
                want,
                "phases/{f} is stale: run `cargo xtask codegen flux`"
            );
        }
    }

    #[test]
    fn a_manifest_without_controllers_is_refused() {
        let out = tempfile::tempdir().unwrap();
        let err = flux(
            b"apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
            "v0.0.1",
            "x.yaml",
            out.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("not a Flux installation"), "{err}");
    }
}

//! Pinned artifacts (CRD files, binaries): found in `--artifacts DIR`, in the
//! local cache, or downloaded once with reqwest; always checked against their
//! sha256 before use. Nothing unpinned is ever fetched.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An artifact pinned by checksum.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Pinned {
    /// File name in the cache and in `--artifacts DIR`.
    pub file: String,
    /// Where to fetch it when it is not found locally.
    pub url: Option<String>,
    /// Expected SHA-256 (hex).
    pub sha256: String,
}

/// Why an artifact could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {file}: checksum mismatch ({origin}): expected sha256 {expected}, got {actual}")]
    Checksum {
        file: String,
        origin: String,
        expected: String,
        actual: String,
    },
    #[error("artifact {file}: not in {dirs} and it has no URL to fetch it from")]
    NotFound { file: String, dirs: String },
    #[error("artifact {file}: fetching {url} failed: {reason}")]
    Fetch { file: String, url: String, reason: String },
    #[error("artifact {file}: {path}: {source}")]
    Io {
        file: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where artifacts are looked up and cached.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    /// Operator-provided directory (air-gapped runs); searched first.
    pub offline: Option<PathBuf>,
    /// Download cache (`<state-dir>/artifacts`).
    pub cache: PathBuf,
}

impl ArtifactStore {
    /// The local, verified path of `a`, or `None` when it would have to be
    /// fetched (read-only: for `plan`).
    pub fn local(&self, a: &Pinned) -> Result<Option<PathBuf>, ArtifactError> {
        for dir in self.offline.iter().chain(std::iter::once(&self.cache)) {
            let path = dir.join(&a.file);
            if path.is_file() {
                verify(a, &path, &path.display().to_string())?;
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Returns a local, verified path for `a`, downloading it into the cache if
    /// it is nowhere local.
    pub async fn get(&self, a: &Pinned) -> Result<PathBuf, ArtifactError> {
        for dir in self.offline.iter().chain(std::iter::once(&self.cache)) {
            let path = dir.join(&a.file);
            if path.is_file() {
                verify(a, &path, &path.display().to_string())?;
                return Ok(path);
            }
        }
        let Some(url) = &a.url else {
            let mut dirs: Vec<String> = self.offline.iter().map(|d| d.display().to_string()).collect();
            dirs.push(self.cache.display().to_string());
            return Err(ArtifactError::NotFound {
                file: a.file.clone(),
                dirs: dirs.join(" or "),
            });
        };
        let bytes = fetch(url).await.map_err(|reason| ArtifactError::Fetch {
            file: a.file.clone(),
            url: url.clone(),
            reason,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&a.sha256) {
            return Err(ArtifactError::Checksum {
                file: a.file.clone(),
                origin: url.clone(),
                expected: a.sha256.clone(),
                actual,
            });
        }
        let path = self.cache.join(&a.file);
        crate::fsutil::write_atomic(&path, &bytes, 0o644).map_err(|source| ArtifactError::Io {
            file: a.file.clone(),
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

fn verify(a: &Pinned, path: &Path, origin: &str) -> Result<(), ArtifactError> {
    let actual = sha256_file(path).map_err(|source| ArtifactError::Io {
        file: a.file.clone(),
        path: path.to_path_buf(),
        source,
    })?;
    if actual.eq_ignore_ascii_case(&a.sha256) {
        Ok(())
    } else {
        Err(ArtifactError::Checksum {
            file: a.file.clone(),
            origin: origin.to_owned(),
            expected: a.sha256.clone(),
            actual,
        })
    }
}

/// SHA-256 of a file, hex, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string())
}

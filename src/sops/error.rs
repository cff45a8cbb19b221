//! Why a SOPS file could not be decrypted. Every message names the file and
//! what failed; none carries a decrypted value or key material (recipients are
//! public keys, key names are clear text in SOPS files anyway).

use std::fmt;
use std::path::{Path, PathBuf};

/// A failure to decrypt one SOPS file, with the file it concerns.
#[derive(Debug)]
pub struct SopsError {
    /// The SOPS file.
    pub path: PathBuf,
    /// What failed.
    pub kind: ErrorKind,
}

/// What failed while decrypting a SOPS file.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("not valid {format}: {message}")]
    Parse { format: &'static str, message: String },
    #[error("not a SOPS file: no `sops` metadata found")]
    NotSops,
    #[error("bad SOPS metadata: {0}")]
    Metadata(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(
        "the data key is wrapped only for {kinds}, which bootstrap does not decrypt; add an age recipient (`sops updatekeys` with an age key in .sops.yaml, or `sops -r -i --add-age age1...`)"
    )]
    NoAgeRecipient { kinds: String },
    #[error("no age identity found (looked in {searched}); the file is encrypted for {recipients}")]
    NoIdentity { searched: String, recipients: String },
    #[error("no age identity matches the file's recipients {recipients} (identities from {searched})")]
    NoMatchingIdentity { searched: String, recipients: String },
    #[error("age identity: {0}")]
    Identity(String),
    #[error("data key: {0}")]
    DataKey(String),
    #[error("value at `{path}` cannot be decrypted: {why}")]
    Value { path: String, why: String },
    #[error("MAC mismatch: the file was changed after it was encrypted (or not by sops)")]
    MacMismatch,
    #[error("the MAC cannot be decrypted (lastmodified or mac was changed): {0}")]
    MacUndecryptable(String),
    #[error("key path `{key}` is not in the file{}", list_keys(.available))]
    KeyAbsent { key: String, available: Vec<String> },
    #[error("key path `{key}` holds {what}, not a single value")]
    NotScalar { key: String, what: &'static str },
    #[error("a secret needs one value: name a key with `#KEY`{}", list_keys(.available))]
    NeedsKey { available: Vec<String> },
    #[error("key path `{0}` holds a value that is not UTF-8 text")]
    NotText(String),
}

fn list_keys(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!(" (top-level keys: {})", keys.join(", "))
    }
}

impl SopsError {
    /// An error about `path`.
    pub fn new(path: &Path, kind: ErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
        }
    }
}

impl fmt::Display for SopsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for SopsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

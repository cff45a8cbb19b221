//! Secret references (`env:`, `file:`, `sops:`) and the [`Secret`] value type
//! whose `Debug`/`Display` never show the value.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret comes from. The inventory holds only these, never values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub enum SecretRef {
    /// `env:NAME`: an environment variable.
    Env(String),
    /// `file:PATH`: a file's content (a trailing newline is dropped).
    File(PathBuf),
    /// `sops:PATH[#key.path]`: a SOPS file with age recipients, decrypted
    /// in-process ([`crate::sops`]); the key path names one value of it.
    Sops { path: PathBuf, key: Option<String> },
}

/// Why a string is not a secret reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretRefError {
    #[error("a secret must be a reference (`env:NAME`, `file:PATH` or `sops:PATH`), never a literal value")]
    Literal,
    #[error("`env:` needs a variable name of letters, digits and `_`")]
    BadEnvName,
    #[error("`{0}:` needs a path")]
    EmptyPath(&'static str),
}

/// Why a referenced secret could not be read. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {reference}: environment variable {name} is not set")]
    EnvMissing { reference: String, name: String },
    #[error("secret {reference}: cannot read {path}: {source}")]
    File {
        reference: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret {reference}: {}", .source.kind)]
    Sops {
        reference: String,
        source: crate::sops::SopsError,
    },
}

impl SecretRef {
    /// Parses a reference; relative file paths are taken from `base`.
    pub fn parse(s: &str, base: &Path) -> Result<Self, SecretRefError> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            return if ok {
                Ok(Self::Env(name.to_owned()))
            } else {
                Err(SecretRefError::BadEnvName)
            };
        }
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(SecretRefError::EmptyPath("file"));
            }
            return Ok(Self::File(resolve_path(base, p)));
        }
        if let Some(rest) = s.strip_prefix("sops:") {
            let (p, key) = match rest.split_once('#') {
                Some((p, k)) => (p, Some(k.to_owned())),
                None => (rest, None),
            };
            if p.is_empty() {
                return Err(SecretRefError::EmptyPath("sops"));
            }
            return Ok(Self::Sops {
                path: resolve_path(base, p),
                key,
            });
        }
        Err(SecretRefError::Literal)
    }

    /// Reads the secret.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            Self::Env(name) => std::env::var(name)
                .map(Secret::new)
                .map_err(|_| SecretError::EnvMissing {
                    reference: self.to_string(),
                    name: name.clone(),
                }),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret::new(s.strip_suffix('\n').unwrap_or(&s).to_owned()))
                .map_err(|source| SecretError::File {
                    reference: self.to_string(),
                    path: path.clone(),
                    source,
                }),
            Self::Sops { path, key } => crate::sops::secret(path, key.as_deref(), &crate::sops::KeySources::from_env())
                .map(|s| Secret::new(age::secrecy::ExposeSecret::expose_secret(&s).to_owned()))
                .map_err(|source| SecretError::Sops {
                    reference: self.to_string(),
                    source,
                }),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(n) => write!(f, "env:{n}"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Sops { path, key: None } => write!(f, "sops:{}", path.display()),
            Self::Sops { path, key: Some(k) } => write!(f, "sops:{}#{k}", path.display()),
        }
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> Self {
        r.to_string()
    }
}

/// A secret value. `Debug` and `Display` print `***`; use [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Resolves `p` against `base`, expanding a leading `~/`.
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_refuses_literals() {
        let base = Path::new("/inv");
        assert_eq!(
            SecretRef::parse("env:TOKEN_1", base),
            Ok(SecretRef::Env("TOKEN_1".into()))
        );
        assert_eq!(
            SecretRef::parse("file:k.txt", base),
            Ok(SecretRef::File("/inv/k.txt".into()))
        );
        assert_eq!(
            SecretRef::parse("sops:s.yaml#token", base),
            Ok(SecretRef::Sops {
                path: "/inv/s.yaml".into(),
                key: Some("token".into())
            })
        );
        assert_eq!(SecretRef::parse("hunter2", base), Err(SecretRefError::Literal));
        assert_eq!(SecretRef::parse("env:1X", base), Err(SecretRefError::BadEnvName));
    }

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}

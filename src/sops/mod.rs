//! SOPS-encrypted files decrypted in-process, for `sops:PATH[#KEY]` secret
//! references: no `sops` binary needed.
//!
//! - **Stores**: YAML, JSON, dotenv, INI and binary, chosen by file name as
//!   sops does (`stores.rs`).
//! - **Data key**: unwrapped from the file's `age` stanzas (X25519 identities,
//!   the `age` crate), one key group or several combined with Shamir
//!   (`datakey.rs`). Files wrapped only for PGP, KMS or Vault are refused with
//!   a message saying so.
//! - **Identities**: `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY_CMD`,
//!   then `<user config dir>/sops/age/keys.txt` (`keys.rs`).
//! - **Integrity**: every value is decrypted and the MAC verified before any
//!   value is handed out; a mismatch is an error (`mac.rs`). The encryption
//!   rules (`unencrypted_suffix`, `encrypted_suffix`, `unencrypted_regex`,
//!   `encrypted_regex`) and `mac_only_encrypted` are honoured; the comment
//!   rules are refused.
//! - **Which value**: `#a.b.c` names a key path (map keys joined by `.`, list
//!   items by index, e.g. `#users.0.password`; a key containing dots is
//!   matched whole first; INI: `#section.key`; dotenv: `#KEY`). Without a key
//!   path the file must hold exactly one top-level key with a single value
//!   (a dotenv file with one line, a YAML `token: ...`), or be a binary-store
//!   file, whose whole decrypted content is the value.
//!
//! Errors name the file and what failed; they never carry a decrypted value
//! or key material.

mod cipher;
mod datakey;
pub mod error;
pub mod keys;
mod mac;
mod metadata;
mod shamir;
mod stores;
mod tree;

use std::path::Path;

pub use error::{ErrorKind, SopsError};
pub use keys::KeySources;
pub use stores::Format;

use age::secrecy::SecretString;
use tree::{Branch, Value};

/// A decrypted, MAC-verified SOPS file. `Debug` shows its shape, no values.
#[derive(Debug)]
pub struct Decrypted {
    format: Format,
    branches: Vec<Branch>,
}

/// Reads, decrypts and verifies `path` with the identities of `sources`.
pub fn decrypt_file(path: &Path, sources: &KeySources) -> Result<Decrypted, SopsError> {
    let err = |kind| SopsError::new(path, kind);
    let bytes = std::fs::read(path).map_err(|e| err(ErrorKind::Read(e)))?;
    let format = Format::for_path(path);
    let loaded = stores::load(&bytes, format).map_err(err)?;
    let meta = metadata::Metadata::parse(&loaded.metadata).map_err(err)?;
    let key = datakey::unwrap(&meta, sources).map_err(err)?;
    let mut branches = loaded.branches;
    mac::decrypt_and_verify(&mut branches, &meta, &key).map_err(err)?;
    Ok(Decrypted { format, branches })
}

/// The secret a `sops:PATH[#KEY]` reference names.
pub fn secret(path: &Path, key: Option<&str>, sources: &KeySources) -> Result<SecretString, SopsError> {
    decrypt_file(path, sources)?
        .value(key)
        .map_err(|kind| SopsError::new(path, kind))
}

impl Decrypted {
    /// The value at key path `key`, or the file's single value (see the module doc).
    pub fn value(&self, key: Option<&str>) -> Result<SecretString, ErrorKind> {
        let (name, value) = match key {
            Some(k) => (
                k.to_owned(),
                tree::lookup(&self.branches, k).ok_or_else(|| ErrorKind::KeyAbsent {
                    key: k.to_owned(),
                    available: self.top_level_keys(),
                })?,
            ),
            None => {
                let entries: Vec<&(String, Value)> = self.branches.iter().flatten().collect();
                match entries.as_slice() {
                    [(k, v)] => (k.clone(), v),
                    _ => {
                        return Err(ErrorKind::NeedsKey {
                            available: self.top_level_keys(),
                        });
                    }
                }
            }
        };
        text(&name, value).map(SecretString::from)
    }

    /// The store the file was read with.
    pub fn format(&self) -> Format {
        self.format
    }

    fn top_level_keys(&self) -> Vec<String> {
        self.branches.iter().flatten().map(|(k, _)| k.clone()).collect()
    }
}

/// A single value as text: strings as they are, numbers as sops prints
/// them, booleans `true`/`false`.
fn text(name: &str, v: &Value) -> Result<String, ErrorKind> {
    Ok(match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => cipher::go_float(*f),
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) => String::from_utf8(b.clone()).map_err(|_| ErrorKind::NotText(name.to_owned()))?,
        Value::Map(_) | Value::List(_) | Value::Null => {
            return Err(ErrorKind::NotScalar {
                key: name.to_owned(),
                what: v.kind(),
            });
        }
    })
}

#[cfg(test)]
mod tests;

//! Decrypting the tree and checking its MAC (`sops.go` Tree.Decrypt and
//! `cmd/sops/common/common.go` DecryptTree): values are visited depth-first in
//! document order; an encrypted one is opened with its key path joined by `:`
//! plus a trailing `:` as additional data (list items add no index); every
//! value (or, with `mac_only_encrypted`, every encrypted one after the
//! SHA-256 of "sops") feeds a SHA-512 whose upper-case hex must equal the
//! file's `mac`, itself decrypted with `lastmodified` as additional data.

use sha2::{Digest, Sha512};

use super::cipher;
use super::error::ErrorKind;
use super::metadata::Metadata;
use super::tree::{Branch, Value};

/// SHA-256("sops"): the first bytes hashed with `mac_only_encrypted`
/// (`sops.go` MACOnlyEncryptedInitialization).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Decrypts every branch in place and verifies the MAC.
pub fn decrypt_and_verify(branches: &mut [Branch], meta: &Metadata, key: &[u8; 32]) -> Result<(), ErrorKind> {
    let mut walk = Walk {
        meta,
        key,
        hash: Sha512::new(),
        path: Vec::new(),
    };
    if meta.mac_only_encrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    for branch in branches.iter_mut() {
        walk.branch(branch)?;
    }
    let computed = hex::encode_upper(walk.hash.finalize());
    let stored = match cipher::decrypt(&meta.mac, key, &meta.lastmodified) {
        Ok(Value::Str(s)) => s,
        Ok(_) => return Err(ErrorKind::MacUndecryptable("`mac` is not a string value".into())),
        Err(why) => return Err(ErrorKind::MacUndecryptable(why)),
    };
    if stored != computed {
        return Err(ErrorKind::MacMismatch);
    }
    Ok(())
}

struct Walk<'a> {
    meta: &'a Metadata,
    key: &'a [u8; 32],
    hash: Sha512,
    path: Vec<String>,
}

impl Walk<'_> {
    fn branch(&mut self, branch: &mut Branch) -> Result<(), ErrorKind> {
        for (k, v) in branch.iter_mut() {
            self.path.push(k.clone());
            let r = self.value(v);
            self.path.pop();
            r?;
        }
        Ok(())
    }

    fn value(&mut self, v: &mut Value) -> Result<(), ErrorKind> {
        match v {
            Value::Map(m) => self.branch(m),
            Value::List(items) => items.iter_mut().try_for_each(|item| self.value(item)),
            // A null is left alone and not hashed (`walkValue`).
            Value::Null => Ok(()),
            leaf => self.leaf(leaf),
        }
    }

    fn leaf(&mut self, v: &mut Value) -> Result<(), ErrorKind> {
        let keys: Vec<&str> = self.path.iter().map(String::as_str).collect();
        let encrypted = self.meta.rule.encrypts(&keys);
        if encrypted {
            let aad = format!("{}:", keys.join(":"));
            let failed = |why: String| ErrorKind::Value {
                path: keys.join("."),
                why,
            };
            let Value::Str(enc) = &*v else {
                return Err(failed(format!("expected an encrypted string, found {}", v.kind())));
            };
            *v = cipher::decrypt(enc, self.key, &aad).map_err(failed)?;
        }
        if (!self.meta.mac_only_encrypted || encrypted)
            && let Some(bytes) = cipher::mac_bytes(v)
        {
            self.hash.update(bytes);
        }
        Ok(())
    }
}

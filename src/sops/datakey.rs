//! The data key: unwrapped from the file's age stanzas with the `age` crate.
//! Each stanza's `enc` is an armored age file holding the 32-byte key (or,
//! with several key groups, that group's Shamir share). Per group the
//! stanzas are tried in order with every identity found, and the first that
//! opens wins (`sops.go` decryptKeyGroup); with several groups, `threshold`
//! shares are combined (`GetDataKeyWithKeyServices`).

use std::io::Read;

use super::error::ErrorKind;
use super::keys::KeySources;
use super::metadata::{AgeStanza, Metadata};
use super::shamir;

/// The file's data key.
pub fn unwrap(meta: &Metadata, sources: &KeySources) -> Result<[u8; 32], ErrorKind> {
    let recipients = meta.recipients();
    if recipients.is_empty() {
        let mut kinds: Vec<&str> = meta.groups.iter().flat_map(|g| g.other.iter().copied()).collect();
        kinds.dedup();
        return Err(ErrorKind::NoAgeRecipient {
            kinds: kinds.join(", "),
        });
    }
    let found = sources.load()?;
    let mut problems = found.problems.clone();
    let mut tried_any = !found.ids.is_empty();
    let mut parts = Vec::new();
    for group in &meta.groups {
        for stanza in &group.age {
            let mut ids = found.ids.clone();
            match sources.from_cmd(&stanza.recipient) {
                Ok(more) => ids.extend(more),
                Err(e) => problems.push(e),
            }
            if ids.is_empty() {
                continue;
            }
            tried_any = true;
            match open(stanza, &ids) {
                Ok(part) => {
                    parts.push(part);
                    break;
                }
                Err(Open::NoMatch) => {}
                Err(Open::Broken(why)) => problems.push(format!("stanza for {}: {why}", stanza.recipient)),
            }
        }
    }
    let key = if meta.groups.len() == 1 && parts.len() == 1 {
        parts.pop()
    } else if meta.groups.len() > 1 && parts.len() >= meta.threshold {
        Some(shamir::combine(&parts).map_err(|e| ErrorKind::DataKey(format!("Shamir shares: {e}")))?)
    } else {
        None
    };
    let searched = with_problems(found.searched.join(", "), &problems);
    let recipients = recipients.join(", ");
    match key {
        Some(k) => <[u8; 32]>::try_from(k.as_slice())
            .map_err(|_| ErrorKind::DataKey(format!("expected 32 bytes, the stanza held {}", k.len()))),
        None if !tried_any => Err(ErrorKind::NoIdentity { searched, recipients }),
        None if meta.groups.len() > 1 => Err(ErrorKind::DataKey(format!(
            "only {} of the {} key groups needed could be opened (recipients {recipients}; identities from {searched})",
            parts.len(),
            meta.threshold
        ))),
        None => Err(ErrorKind::NoMatchingIdentity { searched, recipients }),
    }
}

fn with_problems(searched: String, problems: &[String]) -> String {
    if problems.is_empty() {
        searched
    } else {
        format!("{searched}; {}", problems.join("; "))
    }
}

enum Open {
    NoMatch,
    Broken(String),
}

fn open(stanza: &AgeStanza, ids: &[age::x25519::Identity]) -> Result<Vec<u8>, Open> {
    let armored = age::armor::ArmoredReader::new(stanza.enc.as_bytes());
    let decryptor = age::Decryptor::new(armored).map_err(|e| Open::Broken(format!("not an age file: {e}")))?;
    let mut reader = decryptor
        .decrypt(ids.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Open::NoMatch,
            e => Open::Broken(e.to_string()),
        })?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| Open::Broken(format!("age payload: {e}")))?;
    Ok(out)
}

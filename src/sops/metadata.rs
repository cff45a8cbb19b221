//! The `sops` metadata a decrypting client needs (`stores/stores.go`
//! `metadata` and `ToInternal`): key groups with their age stanzas, the
//! Shamir threshold, `lastmodified`, the encrypted MAC and the one rule that
//! decides which values are encrypted.

use regex::Regex;

use super::error::ErrorKind;
use super::tree::Value;

/// One age entry: a recipient and the data key (or Shamir share) wrapped for it.
#[derive(Debug, Clone)]
pub struct AgeStanza {
    pub recipient: String,
    /// An ASCII-armored age file.
    pub enc: String,
}

/// The master keys that each wrap the same data key (or share).
#[derive(Debug, Default)]
pub struct KeyGroup {
    pub age: Vec<AgeStanza>,
    /// The other master-key kinds present (`pgp`, `kms`, ...): not decrypted here.
    pub other: Vec<&'static str>,
}

/// Which values are encrypted (`sops.go` Tree.shouldBeEncrypted).
#[derive(Debug)]
pub enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl Rule {
    /// Whether a value at `path` (its map keys) is encrypted.
    pub fn encrypts(&self, path: &[&str]) -> bool {
        match self {
            Self::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Self::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Self::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Self::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

/// The metadata of one SOPS file.
#[derive(Debug)]
pub struct Metadata {
    pub groups: Vec<KeyGroup>,
    /// Groups needed to rebuild the data key (only with several groups).
    pub threshold: usize,
    /// `lastmodified` as sops formats it for the MAC's additional data.
    pub lastmodified: String,
    pub mac: String,
    pub rule: Rule,
    pub mac_only_encrypted: bool,
}

/// Master-key kinds other than age (`stores/stores.go` metadata fields).
const OTHER_KINDS: [&str; 6] = ["pgp", "kms", "gcp_kms", "hckms", "azure_kv", "hc_vault"];

impl Metadata {
    /// Reads the metadata map.
    pub fn parse(m: &Value) -> Result<Self, ErrorKind> {
        let bad = |why: String| ErrorKind::Metadata(why);
        let text = |key: &str| -> Result<Option<String>, ErrorKind> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Str(s)) if s.is_empty() => Ok(None),
                Some(Value::Str(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("`{key}` is {}, not a string", other.kind()))),
            }
        };
        let lastmodified = text("lastmodified")?.ok_or_else(|| bad("`lastmodified` is missing".into()))?;
        let lastmodified =
            go_rfc3339(&lastmodified).ok_or_else(|| bad("`lastmodified` is not an RFC 3339 time".into()))?;
        let mac = text("mac")?.unwrap_or_default();

        // At most one rule; none means `unencrypted_suffix: _unencrypted` (ToInternal).
        let regex = |key: &str, s: String| {
            Regex::new(&s).map_err(|e| bad(format!("`{key}` is not a valid regular expression: {e}")))
        };
        let mut rules = Vec::new();
        for key in [
            "unencrypted_suffix",
            "encrypted_suffix",
            "unencrypted_regex",
            "encrypted_regex",
            "unencrypted_comment_regex",
            "encrypted_comment_regex",
        ] {
            if let Some(v) = text(key)? {
                rules.push((key, v));
            }
        }
        if rules.len() > 1 {
            return Err(bad(format!(
                "more than one of {} is set",
                rules.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            )));
        }
        let rule = match rules.pop() {
            None => Rule::UnencryptedSuffix("_unencrypted".into()),
            Some(("unencrypted_suffix", s)) => Rule::UnencryptedSuffix(s),
            Some(("encrypted_suffix", s)) => Rule::EncryptedSuffix(s),
            Some((k @ "unencrypted_regex", s)) => Rule::UnencryptedRegex(regex(k, s)?),
            Some((k @ "encrypted_regex", s)) => Rule::EncryptedRegex(regex(k, s)?),
            Some((k, _)) => {
                return Err(ErrorKind::Unsupported(format!(
                    "`{k}` (rules decided by comments); decrypt this file with sops"
                )));
            }
        };

        let top = group(m)?;
        let groups = if !top.age.is_empty() || !top.other.is_empty() {
            vec![top]
        } else {
            match m.get("key_groups") {
                Some(Value::List(gs)) if !gs.is_empty() => gs.iter().map(group).collect::<Result<_, _>>()?,
                _ => return Err(bad("no master keys (age, pgp, kms, ...) in the file".into())),
            }
        };
        let threshold = match weak_int(m.get("shamir_threshold")) {
            Some(0) | None => groups.len(),
            Some(t) => t,
        };
        Ok(Self {
            groups,
            threshold,
            lastmodified,
            mac,
            rule,
            mac_only_encrypted: weak_bool(m.get("mac_only_encrypted")),
        })
    }

    /// Every age recipient of the file, for messages.
    pub fn recipients(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| g.age.iter().map(|a| a.recipient.clone()))
            .collect()
    }
}

fn group(m: &Value) -> Result<KeyGroup, ErrorKind> {
    let mut g = KeyGroup::default();
    for kind in OTHER_KINDS {
        if matches!(m.get(kind), Some(Value::List(l)) if !l.is_empty()) {
            g.other.push(kind);
        }
    }
    match m.get("age") {
        None | Some(Value::Null) => {}
        Some(Value::List(entries)) => {
            for (i, e) in entries.iter().enumerate() {
                let field = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| ErrorKind::Metadata(format!("age entry {i}: `{k}` is missing")))
                };
                g.age.push(AgeStanza {
                    recipient: field("recipient")?,
                    enc: field("enc")?,
                });
            }
        }
        Some(other) => return Err(ErrorKind::Metadata(format!("`age` is {}, not a list", other.kind()))),
    }
    Ok(g)
}

/// mapstructure's WeaklyTypedInput: flattened stores hold numbers and
/// booleans as strings.
fn weak_int(v: Option<&Value>) -> Option<usize> {
    match v? {
        Value::Int(i) => usize::try_from(*i).ok(),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn weak_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Str(s)) => matches!(s.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"),
        Some(Value::Int(i)) => *i != 0,
        _ => false,
    }
}

/// `lastmodified` the way the MAC's additional data is formed: sops parses it
/// as RFC 3339 and formats it back with `time.RFC3339` (`cmd/sops/common`
/// DecryptTree), which drops fractional seconds and writes a zero offset as `Z`.
fn go_rfc3339(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    if !shape {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let zone = match rest {
        "Z" | "+00:00" | "-00:00" => "Z",
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':'
            && z[1..3].bytes().chain(z[4..].bytes()).all(|c| c.is_ascii_digit()) =>
        {
            z
        }
        _ => return None,
    };
    Some(format!("{}{zone}", &s[..19]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lastmodified_is_formatted_as_sops_does() {
        assert_eq!(
            go_rfc3339("2022-03-15T22:11:15Z").as_deref(),
            Some("2022-03-15T22:11:15Z")
        );
        assert_eq!(
            go_rfc3339("2022-03-15T22:11:15.123Z").as_deref(),
            Some("2022-03-15T22:11:15Z")
        );
        assert_eq!(
            go_rfc3339("2022-03-15T22:11:15+00:00").as_deref(),
            Some("2022-03-15T22:11:15Z")
        );
        assert_eq!(
            go_rfc3339("2022-03-15T23:11:15+01:00").as_deref(),
            Some("2022-03-15T23:11:15+01:00")
        );
        assert_eq!(go_rfc3339("yesterday"), None);
    }

    #[test]
    fn rules_test_each_key_of_the_path() {
        let r = Rule::UnencryptedSuffix("_unencrypted".into());
        assert!(r.encrypts(&["a", "b"]));
        assert!(!r.encrypts(&["list_unencrypted", "b"]));
        let r = Rule::EncryptedRegex(Regex::new("^(data|stringData)$").unwrap());
        assert!(r.encrypts(&["data", "password"]));
        assert!(!r.encrypts(&["metadata", "name"]));
    }

    #[test]
    fn one_rule_at_most_and_no_comment_rules() {
        let meta = |extra: &str| {
            let y = format!("lastmodified: '2022-03-15T22:11:15Z'\nmac: x\nage: [{{recipient: r, enc: e}}]\n{extra}");
            Metadata::parse(&yaml_serde::from_str(&y).unwrap())
        };
        assert!(matches!(meta("").unwrap().rule, Rule::UnencryptedSuffix(s) if s == "_unencrypted"));
        assert!(matches!(
            meta("encrypted_suffix: _secret\nunencrypted_regex: x\n"),
            Err(ErrorKind::Metadata(_))
        ));
        assert!(matches!(
            meta("encrypted_comment_regex: sops:enc\n"),
            Err(ErrorKind::Unsupported(_))
        ));
        assert!(meta("mac_only_encrypted: 'true'\n").unwrap().mac_only_encrypted);
    }
}

//! The inventory: one TOML file describing clusters and nodes.
//!
//! Flow: text → [`raw`] (serde, unknown keys refused) → [`validate`] (every
//! rule, every finding) → [`model::Inventory`]. Findings are located with a
//! span index ([`locate`]) and reported as [`Diagnostic`]s naming file, line,
//! column and field path. Nothing here touches the network.

pub mod diagnostic;
pub mod locate;
pub mod model;
pub mod path;
pub mod raw;
mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use model::*;
pub use validate::{is_dns_label, is_dns_name};

use locate::SpanIndex;
use path::FieldPath;

/// A validated inventory and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub inventory: Inventory,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates an inventory file.
pub fn load(file: &Path) -> Result<Loaded, Diagnostics> {
    match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str(&text, file),
            Err(_) => Err(single(file, "the file is not UTF-8 text")),
        },
        Err(e) => Err(single(file, &format!("cannot read the inventory: {e}"))),
    }
}

/// Validates inventory `text` as if read from `file` (relative paths in it are
/// taken from `file`'s directory). Never panics, whatever the input.
pub fn load_str(text: &str, file: &Path) -> Result<Loaded, Diagnostics> {
    let index = SpanIndex::build(text);
    let raw: raw::RawInventory = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(Diagnostics(vec![serde_error(&e, &index, file)])),
    };
    let (model, findings) = validate::validate(&raw, file);
    let mut diags: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| {
            let key = f.path.index_key();
            let at = if f.at_key {
                index.locate_key(&key)
            } else {
                index.locate(&key)
            };
            Diagnostic::new(f.severity, file.to_path_buf(), at, &f.path, f.message)
        })
        .collect();
    diags.sort_by_key(|d| (d.line, d.column));
    match model {
        Some(inventory) => Ok(Loaded {
            inventory,
            warnings: diags,
        }),
        None => Err(Diagnostics(diags)),
    }
}

fn single(file: &Path, message: &str) -> Diagnostics {
    Diagnostics(vec![Diagnostic::new(
        Severity::Error,
        file.to_path_buf(),
        None,
        &FieldPath::root(),
        message.to_owned(),
    )])
}

/// A TOML syntax or shape error, located, with a did-you-mean for unknown keys
/// and variants.
fn serde_error(e: &toml::de::Error, index: &SpanIndex, file: &Path) -> Diagnostic {
    let (at, path) = match e.span() {
        Some(span) => {
            let at = index.line_col(span.start);
            let path = index
                .key_at(span.start)
                .map(|k| FieldPath::from_index_key(&k, |elem| index.name_of(elem)))
                .unwrap_or_default();
            (Some(at), path)
        }
        None => (None, FieldPath::root()),
    };
    let mut message = e.message().trim().replace('\n', " ");
    if let Some(hint) = did_you_mean(&message) {
        message.push_str(&format!(" (did you mean `{hint}`?)"));
    }
    Diagnostic::new(Severity::Error, file.to_path_buf(), at, &path, message)
}

/// From serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant"), the closest expected name.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (got, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (strsim::damerau_levenshtein(got, cand), cand))
        .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
        .min()
        .map(|(_, c)| c.to_owned())
}

/// The first cluster of the example `inventory/<file>`, for unit tests.
#[cfg(test)]
pub(crate) fn example(file: &str) -> Cluster {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory").join(file);
    let loaded = load(&path).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    loaded.inventory.clusters.into_iter().next().expect("a cluster")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_name() {
        assert_eq!(
            did_you_mean("unknown field `ipp`, expected one of `name`, `role`, `ip`, `mac`").as_deref(),
            Some("ip")
        );
        assert_eq!(
            did_you_mean("unknown variant `talso`, expected `talos` or `k3s`").as_deref(),
            Some("talos")
        );
        assert_eq!(did_you_mean("unknown field `zzzzzzzz`, expected `name`"), None);
    }
}

//! Reading a SOPS file into its data branches and its metadata, per store
//! (getsops/sops `stores/`): the format follows the file name as
//! `cmd/sops/formats/formats.go` decides it (`.yaml`/`.yml`, `.json`, `.env`,
//! `.ini`, anything else binary). YAML and JSON keep the metadata under a
//! top-level `sops` map; dotenv flattens it into `sops_`-prefixed keys and INI
//! into a `[sops]` section (`stores/metadata.go` ExtractMetadata, unflattened
//! as `stores/flatten.go` does). Comments are skipped: they never feed the MAC.

use std::collections::BTreeMap;

use super::error::ErrorKind;
use super::tree::{Branch, Value};

/// A SOPS store (file format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Ini,
    /// A JSON document `{"data": ENC[...], "sops": {...}}` holding a whole file.
    Binary,
}

impl Format {
    /// The store sops uses for `path` (`formats.FormatForPath`).
    pub fn for_path(path: &std::path::Path) -> Self {
        let name = path.to_string_lossy();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            Self::Yaml
        } else if name.ends_with(".json") {
            Self::Json
        } else if name.ends_with(".env") {
            Self::Dotenv
        } else if name.ends_with(".ini") {
            Self::Ini
        } else {
            Self::Binary
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
            Self::Dotenv => "dotenv",
            Self::Ini => "INI",
            Self::Binary => "JSON (binary store)",
        }
    }
}

/// The data branches (one per YAML document) and the metadata map.
pub struct Loaded {
    pub branches: Vec<Branch>,
    pub metadata: Value,
}

/// Parses `bytes` as `format` and takes the metadata out of the data.
pub fn load(bytes: &[u8], format: Format) -> Result<Loaded, ErrorKind> {
    let parse = |message: String| ErrorKind::Parse {
        format: format.name(),
        message,
    };
    match format {
        Format::Yaml => {
            let mut branches = Vec::new();
            for doc in yaml_serde::Deserializer::from_slice(bytes) {
                match <Value as serde::Deserialize>::deserialize(doc).map_err(|e| parse(e.to_string()))? {
                    Value::Map(m) => branches.push(m),
                    // An empty document (`---` alone) is an empty branch.
                    Value::Null => branches.push(Vec::new()),
                    other => {
                        return Err(parse(format!(
                            "a document is {}; SOPS supports only maps at the top level",
                            other.kind()
                        )));
                    }
                }
            }
            nested(branches)
        }
        Format::Json | Format::Binary => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Map(m)) => nested(vec![m]),
            Ok(other) => Err(parse(format!("the document is {}, not an object", other.kind()))),
            Err(e) => Err(parse(e.to_string())),
        },
        Format::Dotenv => {
            let text = std::str::from_utf8(bytes).map_err(|e| parse(e.to_string()))?;
            let mut branch = dotenv(text).map_err(parse)?;
            let meta: Branch = take_prefixed(&mut branch, "sops_");
            if meta.is_empty() {
                return Err(ErrorKind::NotSops);
            }
            Ok(Loaded {
                branches: vec![branch],
                metadata: unflatten(meta)?,
            })
        }
        Format::Ini => {
            let text = std::str::from_utf8(bytes).map_err(|e| parse(e.to_string()))?;
            let mut branch = ini(text).map_err(parse)?;
            let Some(i) = branch.iter().position(|(k, _)| k == "sops") else {
                return Err(ErrorKind::NotSops);
            };
            let (_, Value::Map(section)) = branch.remove(i) else {
                unreachable!("INI sections are maps")
            };
            branch.retain(|(k, _)| k != "sops");
            // The INI store escapes newlines in metadata values (EscapeNewlines).
            let section = section
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Str(s) => (k, Value::Str(s.replace("\\n", "\n"))),
                    v => (k, v),
                })
                .collect();
            Ok(Loaded {
                branches: vec![branch],
                metadata: unflatten(section)?,
            })
        }
    }
}

/// YAML/JSON: the `sops` key of the first branch is the metadata; the key is
/// removed from every branch (`ExtractMetadata` with MetadataFlattenNone).
fn nested(mut branches: Vec<Branch>) -> Result<Loaded, ErrorKind> {
    let mut metadata = None;
    for (i, branch) in branches.iter_mut().enumerate() {
        let found: Vec<Value> = take_exact(branch, "sops");
        if i == 0 {
            if found.len() > 1 {
                return Err(ErrorKind::Metadata("duplicate `sops` entry".into()));
            }
            metadata = found.into_iter().next();
        }
    }
    match metadata {
        None => Err(ErrorKind::NotSops),
        Some(m @ Value::Map(_)) => Ok(Loaded { branches, metadata: m }),
        Some(other) => Err(ErrorKind::Metadata(format!("`sops` is {}, not a map", other.kind()))),
    }
}

fn take_exact(branch: &mut Branch, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    branch.retain_mut(|(k, v)| {
        if k == key {
            out.push(std::mem::replace(v, Value::Null));
            false
        } else {
            true
        }
    });
    out
}

fn take_prefixed(branch: &mut Branch, prefix: &str) -> Branch {
    let mut out = Vec::new();
    branch.retain_mut(|(k, v)| match k.strip_prefix(prefix) {
        Some(rest) => {
            out.push((rest.to_owned(), std::mem::replace(v, Value::Null)));
            false
        }
        None => true,
    });
    out
}

/// dotenv as `stores/dotenv/store.go` LoadPlainFile reads it: one `KEY=VALUE`
/// per line, split at the first `=`, `\n` in values standing for a newline,
/// `#` lines comments, empty lines skipped.
fn dotenv(text: &str) -> Result<Branch, String> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=VALUE", n + 1));
        };
        out.push((key.to_owned(), Value::Str(value.replace("\\n", "\n"))));
    }
    Ok(out)
}

/// INI as sops reads it through go-ini (`stores/ini/store.go`): one map per
/// section in file order (keys before the first section go to `DEFAULT`),
/// `key = value` split at the first `=` or `:`, both sides trimmed, quotes
/// around a value removed, an inline `#`/`;` comment cut from an unquoted
/// value, `#`/`;` lines comments.
fn ini(text: &str) -> Result<Branch, String> {
    let mut sections: Branch = vec![("DEFAULT".to_owned(), Value::Map(Vec::new()))];
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let Some(name) = name.strip_suffix(']') else {
                return Err(format!("line {}: unclosed section header", n + 1));
            };
            sections.push((name.trim().to_owned(), Value::Map(Vec::new())));
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            return Err(format!("line {}: not `key = value`", n + 1));
        };
        let key = line[..at].trim().to_owned();
        let value = ini_value(line[at + 1..].trim());
        if let Some((_, Value::Map(m))) = sections.last_mut() {
            m.push((key, Value::Str(value)));
        }
    }
    // An empty DEFAULT section holds no value: leaving it out changes nothing.
    if matches!(&sections[0].1, Value::Map(m) if m.is_empty()) {
        sections.remove(0);
    }
    Ok(sections)
}

fn ini_value(v: &str) -> String {
    for q in ["\"\"\"", "\"", "'", "`"] {
        if v.len() >= 2 * q.len()
            && let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q))
        {
            return inner.to_owned();
        }
    }
    match v.find(['#', ';']) {
        Some(i) => v[..i].trim().to_owned(),
        None => v.to_owned(),
    }
}

/// A node of the unflattening trie (`stores/flatten.go` node).
#[derive(Default)]
struct Node {
    value: Option<Value>,
    keys: BTreeMap<String, Node>,
    items: BTreeMap<usize, Node>,
}

/// Rebuilds nested metadata from flattened keys such as
/// `age__list_0__map_enc` (`stores/flatten.go` tokenize/place/convert: maps
/// come out with sorted keys, lists must be complete).
fn unflatten(entries: Branch) -> Result<Value, ErrorKind> {
    let bad = |k: &str, why: &str| ErrorKind::Metadata(format!("flattened key `{k}`: {why}"));
    let mut root = Node::default();
    for (key, value) in entries {
        let mut node = &mut root;
        for token in tokenize(&key) {
            node = match token {
                Token::Map(k) => node.keys.entry(k.to_owned()).or_default(),
                Token::List(i) => {
                    let i = i
                        .parse::<usize>()
                        .map_err(|_| bad(&key, "list index is not a number"))?;
                    node.items.entry(i).or_default()
                }
            };
        }
        if node.value.replace(value).is_some() {
            return Err(bad(&key, "duplicate value"));
        }
    }
    convert(root).map_err(|why| ErrorKind::Metadata(format!("flattened metadata: {why}")))
}

enum Token<'a> {
    Map(&'a str),
    List(&'a str),
}

const MAP_SEP: &str = "__map_";
const LIST_SEP: &str = "__list_";

fn tokenize(path: &str) -> Vec<Token<'_>> {
    let token = |list: bool, s| if list { Token::List(s) } else { Token::Map(s) };
    let mut out = Vec::new();
    let mut rest = path;
    let mut list = false;
    loop {
        let next = [(rest.find(MAP_SEP), MAP_SEP), (rest.find(LIST_SEP), LIST_SEP)]
            .into_iter()
            .filter_map(|(i, sep)| i.map(|i| (i, sep)))
            .min_by_key(|(i, _)| *i);
        let Some((i, sep)) = next else {
            out.push(token(list, rest));
            return out;
        };
        out.push(token(list, &rest[..i]));
        list = sep == LIST_SEP;
        rest = &rest[i + sep.len()..];
    }
}

fn convert(node: Node) -> Result<Value, String> {
    let kinds =
        usize::from(node.value.is_some()) + usize::from(!node.keys.is_empty()) + usize::from(!node.items.is_empty());
    if kinds > 1 {
        return Err("a key is both a value and a map or list".into());
    }
    if let Some(v) = node.value {
        return Ok(v);
    }
    if !node.items.is_empty() {
        if node.items.keys().copied().ne(0..node.items.len()) {
            return Err("incomplete list".into());
        }
        return node
            .items
            .into_values()
            .map(convert)
            .collect::<Result<_, _>>()
            .map(Value::List);
    }
    node.keys
        .into_iter()
        .map(|(k, n)| convert(n).map(|v| (k, v)))
        .collect::<Result<_, _>>()
        .map(Value::Map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_file_name() {
        for (name, f) in [
            ("a.yaml", Format::Yaml),
            ("a.sops.yml", Format::Yaml),
            ("a.json", Format::Json),
            ("x/.env", Format::Dotenv),
            ("a.ini", Format::Ini),
            ("a.txt", Format::Binary),
        ] {
            assert_eq!(Format::for_path(std::path::Path::new(name)), f, "{name}");
        }
    }

    #[test]
    fn unflattens_lists_and_maps() {
        let entries = vec![
            ("age__list_1__map_recipient".to_owned(), Value::Str("r1".into())),
            ("age__list_0__map_recipient".to_owned(), Value::Str("r0".into())),
            ("age__list_0__map_enc".to_owned(), Value::Str("e0".into())),
            ("age__list_1__map_enc".to_owned(), Value::Str("e1".into())),
            ("lastmodified".to_owned(), Value::Str("t".into())),
        ];
        let m = unflatten(entries).unwrap();
        let Some(Value::List(age)) = m.get("age") else {
            panic!("age list: {m:?}")
        };
        assert_eq!(age[0].get("recipient").and_then(Value::as_str), Some("r0"));
        assert_eq!(age[1].get("enc").and_then(Value::as_str), Some("e1"));
        assert!(
            unflatten(vec![("age__list_1".to_owned(), Value::Null)]).is_err(),
            "incomplete list"
        );
    }

    #[test]
    fn dotenv_and_ini_read_like_sops() {
        let Loaded { branches, metadata } = load(
            b"# comment\nA=one\\ntwo\nB=x=y\nsops_version=3.9.0\nsops_age__list_0__map_recipient=age1x\n",
            Format::Dotenv,
        )
        .unwrap();
        assert_eq!(branches[0].len(), 2);
        assert_eq!(branches[0][0].1, Value::Str("one\ntwo".into()));
        assert_eq!(branches[0][1].1, Value::Str("x=y".into()));
        assert_eq!(metadata.get("version").and_then(Value::as_str), Some("3.9.0"));

        let b = ini("top = 1\n[s]\nk = \"quoted # kept\"\nc = v ; cut\n[s]\nk: again\n").unwrap();
        let names: Vec<&str> = b.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["DEFAULT", "s", "s"]);
        assert_eq!(b[1].1.get("k").and_then(Value::as_str), Some("quoted # kept"));
        assert_eq!(b[1].1.get("c").and_then(Value::as_str), Some("v"));
        assert_eq!(b[2].1.get("k").and_then(Value::as_str), Some("again"));
    }

    #[test]
    fn a_file_without_metadata_is_not_sops() {
        for (bytes, f) in [
            (&b"a: 1\n"[..], Format::Yaml),
            (b"{\"a\": 1}", Format::Json),
            (b"A=1\n", Format::Dotenv),
            (b"[s]\na = 1\n", Format::Ini),
        ] {
            assert!(matches!(load(bytes, f), Err(ErrorKind::NotSops)), "{f:?}");
        }
    }
}

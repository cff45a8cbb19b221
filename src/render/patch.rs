//! Config patches, as Talos understands them: a file holding a YAML/JSON list
//! is an RFC 6902 JSON patch (applied to the main document); anything else is
//! a strategic-merge patch of one or more YAML documents, each merged into
//! the document of the same `kind` (and `name`), or the main v1alpha1
//! document when it has no `kind`; unmatched documents are appended.
//!
//! Merge rules: mappings merge key by key, lists are appended, scalars are
//! replaced, and a mapping `{$patch: delete}` removes its key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use yaml_serde::{Mapping, Value};

/// A loaded patch file.
#[derive(Debug, Clone)]
pub struct Patch {
    pub path: PathBuf,
    pub kind: PatchKind,
}

/// What a patch file holds.
#[derive(Debug, Clone)]
pub enum PatchKind {
    /// Strategic-merge documents.
    Merge(Vec<Value>),
    /// RFC 6902 operations.
    Json(json_patch::Patch),
}

impl Patch {
    /// Reads and classifies a patch file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading patch {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Classifies patch text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut docs = Vec::new();
        for d in yaml_serde::Deserializer::from_str(text) {
            let v = Value::deserialize(d).with_context(|| format!("patch {} is not valid YAML", path.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        let is_json = matches!(docs.as_slice(), [Value::Sequence(_)]);
        let kind = match is_json {
            true => {
                let ops: json_patch::Patch = yaml_serde::from_value(docs.remove(0))
                    .with_context(|| format!("patch {} is a list but not RFC 6902 operations", path.display()))?;
                PatchKind::Json(ops)
            }
            false => {
                if let Some(i) = docs.iter().position(|d| !d.is_mapping()) {
                    bail!(
                        "patch {}: document {} is neither a mapping nor a list of operations",
                        path.display(),
                        i + 1
                    );
                }
                PatchKind::Merge(docs)
            }
        };
        Ok(Self {
            path: path.to_owned(),
            kind,
        })
    }

    /// Applies the patch to `docs` (the first one is the main document).
    pub fn apply(&self, docs: &mut Vec<Value>) -> Result<()> {
        match &self.kind {
            PatchKind::Json(ops) => {
                let main = docs.first_mut().context("no document to patch")?;
                let mut json: serde_json::Value = yaml_serde::from_value(main.clone())
                    .with_context(|| format!("patch {}: the document is not JSON-compatible", self.path.display()))?;
                json_patch::patch(&mut json, ops)
                    .with_context(|| format!("applying JSON patch {}", self.path.display()))?;
                *main = yaml_serde::to_value(&json).expect("JSON converts to YAML");
            }
            PatchKind::Merge(pdocs) => {
                for p in pdocs {
                    let key = doc_key(p);
                    match docs.iter_mut().find(|d| doc_key(d) == key) {
                        Some(target) => merge(target, p),
                        None => docs.push(strip_directives(p.clone())),
                    }
                }
            }
        }
        Ok(())
    }
}

/// (kind, name) of a document; the v1alpha1 document has neither.
fn doc_key(v: &Value) -> (Option<&str>, Option<&str>) {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    (s("kind"), s("kind").and(s("name")))
}

fn is_delete(v: &Value) -> bool {
    v.as_mapping()
        .and_then(|m| m.get("$patch"))
        .and_then(Value::as_str)
        .is_some_and(|s| s == "delete")
}

/// Strategic merge of `patch` into `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Mapping(t), Value::Mapping(p)) => merge_maps(t, p),
        (Value::Sequence(t), Value::Sequence(p)) => t.extend(p.iter().cloned().map(strip_directives)),
        (t, p) => *t = strip_directives(p.clone()),
    }
}

fn merge_maps(t: &mut Mapping, p: &Mapping) {
    for (k, v) in p {
        if is_delete(v) {
            t.remove(k);
            continue;
        }
        match t.get_mut(k) {
            Some(existing) => merge(existing, v),
            None => {
                t.insert(k.clone(), strip_directives(v.clone()));
            }
        }
    }
}

/// Removes `$patch: delete` entries from a value that is inserted whole.
fn strip_directives(v: Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .filter(|(_, v)| !is_delete(v))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(s: &str) -> Vec<Value> {
        yaml_serde::Deserializer::from_str(s)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    #[test]
    fn strategic_merge_merges_appends_and_deletes() {
        let mut d = docs(
            "machine:\n  certSANs: [a]\n  kubelet: {image: x}\n  install: {wipe: false}\n---\nkind: HostnameConfig\nhostname: n1\n",
        );
        let p = Patch::parse(
            Path::new("p.yaml"),
            "machine:\n  certSANs: [b]\n  kubelet: {extraArgs: {v: '2'}}\n  install: {$patch: delete}\n---\nkind: HostnameConfig\nhostname: n2\n---\nkind: ResolverConfig\nnameservers: []\n",
        )
        .unwrap();
        p.apply(&mut d).unwrap();
        let m = &d[0]["machine"];
        assert_eq!(m["certSANs"], yaml_serde::to_value(["a", "b"]).unwrap());
        assert_eq!(m["kubelet"]["image"], Value::from("x"));
        assert_eq!(m["kubelet"]["extraArgs"]["v"], Value::from("2"));
        assert!(m.get("install").is_none());
        assert_eq!(d[1]["hostname"], Value::from("n2"));
        assert_eq!(d.len(), 3, "unmatched document appended");
    }

    #[test]
    fn json_patch_applies_to_the_main_document_and_reports_failures() {
        let mut d = docs("machine:\n  type: worker\n");
        let p = Patch::parse(
            Path::new("j.yaml"),
            "- op: add\n  path: /machine/sysctls\n  value: {a: '1'}\n",
        )
        .unwrap();
        p.apply(&mut d).unwrap();
        assert_eq!(d[0]["machine"]["sysctls"]["a"], Value::from("1"));
        let bad = Patch::parse(Path::new("bad.yaml"), "- op: remove\n  path: /nope\n").unwrap();
        let err = format!("{:#}", bad.apply(&mut d).unwrap_err());
        assert!(err.contains("bad.yaml"), "{err}");
    }
}

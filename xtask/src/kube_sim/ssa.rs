//! Server-side apply, kept simple: a manager owns the leaf paths of what it
//! applied (lists are atomic, as for `x-kubernetes-list-type: atomic`); fields
//! it applied before and no longer applies are removed; other Apply managers'
//! differing values are conflicts unless `force`. Also JSON merge patch.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

type Path = Vec<String>;

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource; `status` is ignored when the type has a status subresource.
    Main { status_subresource: bool },
    /// The `/status` subresource: only `status` is taken.
    Status,
}

/// Fields a write may never own: identity and server-maintained metadata.
fn is_reserved(path: &[String]) -> bool {
    match path {
        [top] => top == "apiVersion" || top == "kind",
        [m, f, ..] if m == "metadata" => matches!(
            f.as_str(),
            "name" | "namespace" | "uid" | "resourceVersion" | "generation" | "creationTimestamp" | "managedFields"
        ),
        _ => false,
    }
}

/// Keeps only the part of `body` a write to `part` may change.
pub fn scope(body: &Value, part: Part) -> Value {
    let mut out = body.clone();
    if let Some(o) = out.as_object_mut() {
        match part {
            Part::Main {
                status_subresource: true,
            } => {
                o.remove("status");
            }
            Part::Main { .. } => {}
            Part::Status => o.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind" || k == "metadata"),
        }
        if part == Part::Status
            && let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.retain(|k, _| k == "name" || k == "namespace");
        }
    }
    out
}

fn leaf_paths(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() && !is_reserved(prefix) => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

fn owned_paths(applied: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaf_paths(applied, &mut vec![], &mut out);
    out
}

fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p {
            node = node
                .entry(format!("f:{seg}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("field set nodes are objects");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let children: Vec<_> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, c)| Some((k.strip_prefix("f:")?, c)))
        .collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, c) in children {
        prefix.push(k.to_owned());
        from_fields_v1(c, prefix, out);
        prefix.pop();
    }
}

fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, seg| v.get(seg))
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = v;
    for seg in parents {
        match node.get_mut(seg) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(o) = node.as_object_mut() {
        o.remove(last);
    }
}

fn merge(target: &mut Value, src: &Value) {
    match (target, src) {
        (Value::Object(t), Value::Object(s)) => {
            for (k, v) in s {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, s) => *t = s.clone(),
    }
}

struct Entry {
    raw: Value,
    paths: BTreeSet<Path>,
}

fn entries(live: Option<&Value>) -> Vec<Entry> {
    live.and_then(|l| l.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|raw| {
            let mut paths = BTreeSet::new();
            from_fields_v1(&raw["fieldsV1"], &mut vec![], &mut paths);
            Entry {
                raw: raw.clone(),
                paths,
            }
        })
        .collect()
}

fn subresource_name(part: Part) -> &'static str {
    match part {
        Part::Status => "status",
        Part::Main { .. } => "",
    }
}

/// Applies `applied` (already [`scope`]d) for `manager` on top of `live`.
/// Returns the new object, or the conflicting fields when not forced.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    part: Part,
    time: &str,
) -> Result<Value, Vec<String>> {
    let new_paths = owned_paths(applied);
    let mut managers = entries(live);
    let sub = subresource_name(part);
    let is_mine = |e: &Entry| {
        e.raw["manager"] == manager
            && e.raw["operation"] == "Apply"
            && e.raw["subresource"].as_str().unwrap_or("") == sub
    };

    if !force {
        let mut conflicts = vec![];
        for e in managers.iter().filter(|e| !is_mine(e) && e.raw["operation"] == "Apply") {
            for p in new_paths.intersection(&e.paths) {
                if live.and_then(|l| get(l, p)) != get(applied, p) {
                    conflicts.push(format!(
                        "conflict with \"{}\": .{}",
                        e.raw["manager"].as_str().unwrap_or(""),
                        p.join(".")
                    ));
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
    }

    let mut object = live
        .cloned()
        .unwrap_or_else(|| json!({"apiVersion": applied["apiVersion"], "kind": applied["kind"], "metadata": {}}));
    let old_paths = managers
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.paths.clone())
        .unwrap_or_default();
    for p in old_paths.difference(&new_paths) {
        let shared = managers.iter().any(|e| !is_mine(e) && e.paths.contains(p));
        if !shared {
            remove(&mut object, p);
        }
    }
    merge(&mut object, applied);
    if force {
        for e in managers.iter_mut().filter(|e| !is_mine(e)) {
            e.paths.retain(|p| !new_paths.contains(p));
        }
    }
    managers.retain(|e| !is_mine(e) && !e.paths.is_empty());
    let mut mine = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied["apiVersion"],
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&new_paths),
    });
    if !sub.is_empty() {
        mine["subresource"] = Value::String(sub.to_owned());
    }
    let mut out: Vec<Value> = managers
        .into_iter()
        .map(|mut e| {
            e.raw["fieldsV1"] = to_fields_v1(&e.paths);
            e.raw
        })
        .collect();
    out.push(mine);
    object["metadata"]["managedFields"] = Value::Array(out);
    Ok(object)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The object without per-write bookkeeping (resourceVersion, managedFields
/// times), to tell a no-op write from a change.
pub fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn reapply_without_a_field_removes_it_and_keeps_others_fields() {
        let main = Part::Main {
            status_subresource: true,
        };
        let a = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"1","b":"2"}});
        let o = apply(None, &a, "me", true, main, T).unwrap();
        let mut o2 = o.clone();
        merge_patch(&mut o2, &json!({"data":{"c":"3"}}));
        let a2 = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"1"}});
        let o3 = apply(Some(&o2), &a2, "me", true, main, T).unwrap();
        assert_eq!(o3["data"], json!({"a":"1","c":"3"}));
    }

    #[test]
    fn other_appliers_differing_value_conflicts_unless_forced() {
        let main = Part::Main {
            status_subresource: true,
        };
        let a = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"1"}});
        let o = apply(None, &a, "one", false, main, T).unwrap();
        let b = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"2"}});
        let err = apply(Some(&o), &b, "two", false, main, T).unwrap_err();
        assert_eq!(err, vec!["conflict with \"one\": .data.a".to_string()]);
        let forced = apply(Some(&o), &b, "two", true, main, T).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        assert_eq!(forced["metadata"]["managedFields"].as_array().unwrap().len(), 1);
    }
}

//! Strategic merge patch for built-in kinds: a JSON merge patch in which lists
//! with a patch merge key are merged element by element, lists with
//! `patchStrategy: merge` and no key are merged as sets, and the `$patch`,
//! `$retainKeys`, `$deleteFromPrimitiveList/` and `$setElementOrder/`
//! directives are honoured.
//!
//! Sources: kubernetes/community `contributors/devel/sig-api-machinery/strategic-merge-patch.md`
//! (directives and semantics); apimachinery `pkg/util/strategicpatch/patch.go`;
//! the merge keys are the `patchMergeKey`/`patchStrategy` struct tags of
//! kubernetes/api `core/v1/types.go`, `apps/v1/types.go` and apimachinery
//! `pkg/apis/meta/v1/types.go` (the same tags feed the published OpenAPI's
//! `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy`).
//! The types of nested fields come from the OpenAPI component schemas.

use serde_json::{Map, Value};

/// (schema, field) → (merge key, or "" for a list of primitives; strategy).
const MERGE_KEYS: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "",
        "merge",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
        "merge",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "name", "merge"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "name", "merge"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "name", "merge"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "name", "merge,retainKeys"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "name", "merge"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip", "merge"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "name",
        "merge,retainKeys",
    ),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "name", "merge"),
    ("io.k8s.api.core.v1.Container", "ports", "containerPort", "merge"),
    ("io.k8s.api.core.v1.Container", "env", "name", "merge"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "mountPath", "merge"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "devicePath", "merge"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "port", "merge"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "name", "merge"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "type", "merge"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "type", "merge"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "type", "merge"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "type", "merge"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "", "retainKeys"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "type", "merge"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "type", "merge"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "type", "merge"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "type", "merge"),
];

/// The merge key ("" for primitives) and strategy of a field, if it has one.
pub fn merge_key(schema: &str, field: &str) -> Option<(&'static str, &'static str)> {
    MERGE_KEYS
        .iter()
        .find(|(s, f, _, _)| *s == schema && *f == field)
        .map(|(_, _, k, st)| (*k, *st))
}

/// Every (schema, field, key, strategy) known, to annotate the OpenAPI documents.
pub fn all_merge_keys() -> impl Iterator<Item = (&'static str, &'static str, &'static str, &'static str)> {
    MERGE_KEYS.iter().copied()
}

fn ref_name(s: &Value) -> Option<&str> {
    let r = s
        .get("$ref")
        .or_else(|| s.get("allOf")?.get(0)?.get("$ref"))?
        .as_str()?;
    r.rsplit('/').next()
}

/// The component schema of a field's value (for lists: of its elements).
fn child_schema<'a>(defs: &'a Map<String, Value>, schema: Option<&str>, field: &str) -> Option<&'a str> {
    let prop = defs.get(schema?)?.get("properties")?.get(field)?;
    ref_name(prop)
        .or_else(|| ref_name(prop.get("items")?))
        .or_else(|| ref_name(prop.get("additionalProperties")?))
}

/// Applies a strategic merge patch to `live` (an object of the kind whose
/// component schema is `schema`).
pub fn apply(live: &mut Value, patch: &Value, schema: Option<&str>, defs: &Map<String, Value>) -> Result<(), String> {
    let Some(p) = patch.as_object() else {
        *live = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut v = patch.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("$patch");
            }
            *live = v;
            return Ok(());
        }
        Some("delete") => {
            *live = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other:?}")),
    }
    if !live.is_object() {
        *live = Value::Object(Map::new());
    }
    let retain = p.get("$retainKeys").and_then(Value::as_array).cloned();
    for (k, v) in p {
        if k == "$retainKeys" || k == "$patch" || k.starts_with("$setElementOrder/") {
            continue;
        }
        let target = live.as_object_mut().expect("made an object above");
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|e| !doomed.contains(e));
            }
            continue;
        }
        if v.is_null() {
            target.remove(k);
            continue;
        }
        let sub = child_schema(defs, schema, k);
        let strategy = schema.and_then(|s| merge_key(s, k));
        match (v, strategy) {
            (Value::Array(items), Some((key, st))) if st.contains("merge") => {
                let cur = target.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                merge_list(cur.as_array_mut().expect("array"), items, key, sub, defs)?;
            }
            (Value::Object(_), _) => {
                let cur = target.entry(k.clone()).or_insert(Value::Null);
                apply(cur, v, sub, defs)?;
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(keys) = retain {
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        if let Some(o) = live.as_object_mut() {
            o.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    Ok(())
}

fn merge_list(
    cur: &mut Vec<Value>,
    items: &[Value],
    key: &str,
    schema: Option<&str>,
    defs: &Map<String, Value>,
) -> Result<(), String> {
    if key.is_empty() {
        // A set of primitives: union, keeping the live order first.
        for i in items {
            if !cur.contains(i) {
                cur.push(i.clone());
            }
        }
        return Ok(());
    }
    for item in items {
        let Some(id) = item.get(key) else {
            return Err(format!("map: {item} does not contain declared merge key: {key}"));
        };
        let pos = cur.iter().position(|e| e.get(key) == Some(id));
        match (item.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                cur.remove(i);
            }
            (Some("delete"), None) => {}
            (Some("replace"), pos) => {
                let mut v = item.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("$patch");
                }
                match pos {
                    Some(i) => cur[i] = v,
                    None => cur.push(v),
                }
            }
            (_, Some(i)) => apply(&mut cur[i], item, schema, defs)?,
            (_, None) => {
                let mut v = Value::Object(Map::new());
                apply(&mut v, item, schema, defs)?;
                cur.push(v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defs() -> Map<String, Value> {
        let d = json!({
            "io.k8s.api.apps.v1.Deployment": {"properties": {"spec": {"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}}},
            "io.k8s.api.apps.v1.DeploymentSpec": {"properties": {"template": {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}}},
            "io.k8s.api.core.v1.PodTemplateSpec": {"properties": {"spec": {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}}},
            "io.k8s.api.core.v1.PodSpec": {"properties": {"containers": {"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}}}},
            "io.k8s.api.core.v1.Container": {"properties": {"env": {"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.EnvVar"}}}},
        });
        d.as_object().unwrap().clone()
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}]}}}});
        apply(&mut live, &patch, Some("io.k8s.api.apps.v1.Deployment"), &defs()).unwrap();
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                   {"name": "c", "image": "c:1"}])
        );
    }

    #[test]
    fn lists_without_a_key_are_replaced_and_nulls_delete() {
        let mut live = json!({"spec": {"args": ["a", "b"], "keep": 1, "drop": 2}});
        apply(
            &mut live,
            &json!({"spec": {"args": ["c"], "drop": null}}),
            None,
            &defs(),
        )
        .unwrap();
        assert_eq!(live, json!({"spec": {"args": ["c"], "keep": 1}}));
    }
}

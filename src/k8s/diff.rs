//! Plan-mode comparison: which fields of a live object a server-side apply
//! (dry-run or real) changed, ignoring server bookkeeping and status. Paths
//! name fields only, never values, so Secret content cannot leak through them.

use serde_json::Value;

/// Metadata the server maintains on every write.
const BOOKKEEPING: &[&str] = &[
    "resourceVersion",
    "managedFields",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// The object without status and server bookkeeping.
pub fn normalize(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in BOOKKEEPING {
                m.remove(*k);
            }
            if m.get("annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| a.is_empty())
            {
                m.remove("annotations");
            }
        }
    }
    v
}

/// Dotted paths (e.g. `spec.replicas`, `data.password`) whose values differ
/// between `before` and `after`, after [`normalize`]. Lists compare whole.
pub fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let mut out = vec![];
    walk(&normalize(before), &normalize(after), &mut String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.truncate(len);
            }
        }
        (x, y) if x != y => out.push(if path.is_empty() { ".".into() } else { path.clone() }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ignores_bookkeeping_and_status_and_names_changed_paths() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1"}, "spec": {"replicas": 1, "a": [1]}, "status": {"x": 1}});
        let b = json!({"metadata": {"name": "x", "resourceVersion": "2"}, "spec": {"replicas": 2, "a": [1]}, "status": {"x": 2}});
        assert_eq!(changed_fields(&a, &b), vec!["spec.replicas"]);
        assert!(changed_fields(&a, &a).is_empty());
    }
}

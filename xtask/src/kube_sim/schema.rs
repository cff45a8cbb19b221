//! Custom resources against their CRD's structural `openAPIV3Schema`, as
//! apiextensions-apiserver treats them: unknown fields pruned (reported for
//! `fieldValidation`), `null` in non-nullable fields dropped, defaults applied,
//! then validated with kube-openapi's messages, turned into field errors as
//! `kubeOpenAPIResultToFieldErrors` does
//! (k8s.io/apiextensions-apiserver/pkg/apiserver/validation/validation.go).
//!
//! A small walker rather than the `jsonschema` crate: structural schemas are
//! OpenAPI v3 with Kubernetes extensions JSON Schema validators do not know
//! (`nullable`, `x-kubernetes-int-or-string`, `-preserve-unknown-fields`,
//! `-embedded-resource`, `-list-type`), pruning and defaulting are not
//! validation at all, and the error texts must be kube-openapi's.
//! Sources: the Kubernetes docs "Extend the Kubernetes API with
//! CustomResourceDefinitions" (sections "Specifying a structural schema",
//! "Field pruning", "Defaulting", "Defaulting and Nullable"), and
//! k8s.io/kube-openapi/pkg/validation/errors/schema.go for the messages.
//! Not evaluated: CEL `x-kubernetes-validations` rules.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value, json};

use super::field::{ErrorType, FieldError, go_quote};

/// The `ObjectMeta` fields (k8s.io/apimachinery/pkg/apis/meta/v1 types.go); other keys under a
/// resource's `metadata` are unknown fields.
pub const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// The schema a CRD declares for one version, if any.
pub fn version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v["name"] == version)?
        .pointer("/schema/openAPIV3Schema")
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn preserves_unknown(s: &Value) -> bool {
    flag(s, "x-kubernetes-preserve-unknown-fields")
}

/// Drops fields the schema does not declare, returning their paths
/// (`spec.ports[0].unknownNested`). `root` marks the object as a resource:
/// `apiVersion`, `kind` and `metadata` are kept, and `metadata` is pruned to
/// `ObjectMeta`; embedded resources (`x-kubernetes-embedded-resource`) likewise.
pub fn prune(v: &mut Value, s: &Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let resource = root || flag(s, "x-kubernetes-embedded-resource");
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let p = child(path, &k);
                if resource && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if resource && k == "metadata" {
                    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                        let extra: Vec<String> = meta
                            .keys()
                            .filter(|f| !OBJECT_META_FIELDS.contains(&f.as_str()))
                            .cloned()
                            .collect();
                        for f in extra {
                            meta.remove(&f);
                            unknown.push(child(&p, &f));
                        }
                    }
                    continue;
                }
                let sub = props.and_then(|ps| ps.get(&k)).or(additional);
                match sub {
                    Some(sub) => prune(m.get_mut(&k).expect("key listed above"), sub, &p, false, unknown),
                    None if preserves_unknown(s) => {}
                    None => {
                        m.remove(&k);
                        unknown.push(p);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, is, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default`s where a field is absent, after dropping `null` from
/// fields that are not `nullable` (docs: "Defaulting and Nullable").
pub fn apply_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if m.get(k).is_some_and(Value::is_null) && !flag(ps, "nullable") {
                        m.remove(k);
                    }
                    if !m.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, c) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        apply_defaults(c, ps);
                    }
                }
            } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for c in m.values_mut() {
                    apply_defaults(c, a);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for item in items {
                    apply_defaults(item, is);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `%v` of a float64 bound (`1`, `0.5`).
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

thread_local! {
    static PATTERNS: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// Whether `s` matches a schema `pattern` (RE2 syntax upstream; Rust's regex is its sibling).
fn matches_pattern(pattern: &str, s: &str) -> bool {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let re = cache
            .entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(pattern).ok());
        re.as_ref().is_none_or(|re| re.is_match(s))
    })
}

/// The string formats apiextensions keeps (others are stripped and never checked:
/// k8s.io/apiextensions-apiserver/pkg/apiserver/validation/formats.go), with kube-openapi's checks
/// (k8s.io/kube-openapi/pkg/validation/strfmt/default.go), some simplified.
fn format_ok(format: &str, s: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    fn re(p: &str, s: &str) -> bool {
        matches_pattern(p, s)
    }
    match format {
        "uri" => !s.is_empty() && (s.starts_with('/') || re(r"^[A-Za-z][A-Za-z0-9+.-]*:", s)) && !s.contains(' '),
        "email" => re(r"^[^@\s]+@[^@\s]+$", s),
        "hostname" => {
            s.len() <= 255
                && s.split('.').all(|p| p.len() <= 63)
                && re(
                    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
                    s,
                )
        }
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s
            .split_once('/')
            .is_some_and(|(ip, bits)| match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            }),
        "mac" => re(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$", s),
        "uuid" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
            s,
        ),
        "uuid3" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
            s,
        ),
        "uuid4" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
            s,
        ),
        "uuid5" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
            s,
        ),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "date" => re(r"^\d{4}-\d{2}-\d{2}$", s),
        "date-time" | "datetime" => re(
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
            s,
        ),
        // strfmt.ParseDuration: Go durations, plus "<n> <unit>" forms.
        "duration" => re(
            r"^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h|d|w))+$|^[0-9]+\s*(ns|us|µs|ms|s|m|h|d|w|[a-z]+)$",
            s,
        ),
        _ => true,
    }
}

/// Validates a whole resource against its schema, appending field errors with
/// kube-openapi's texts; `apiVersion`, `kind` and `metadata` are the API server's, not the schema's.
pub fn validate_resource(v: &Value, s: &Value, errs: &mut Vec<FieldError>) {
    validate_at(v, s, "", true, errs);
}

fn validate_at(v: &Value, s: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let shown = if path.is_empty() { "." } else { path };
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    let ty = s.get("type").and_then(Value::as_str);
    let actual = type_name(v);
    if v.is_null() && (flag(s, "nullable") || (ty.is_none() && !int_or_string)) {
        return;
    }
    let wanted = if int_or_string { Some("integer,string") } else { ty };
    if let Some(want) = wanted {
        let ok = match want {
            "integer,string" => actual == "integer" || actual == "string",
            "number" => actual == "number" || actual == "integer",
            w => w == actual,
        };
        if !ok {
            errs.push(FieldError::new(
                ErrorType::TypeInvalid,
                path,
                Some(json!(actual)),
                format!("{shown} in body must be of type {want}: {}", go_quote(actual)),
            ));
            return;
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        let supported: Vec<String> = values
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect();
        let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, v.clone(), &refs));
    }
    match v {
        Value::String(st) => {
            let len = st.chars().count() as u64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errs.push(FieldError::new(
                    ErrorType::TooLong,
                    path,
                    Some(v.clone()),
                    format!("may not be longer than {max}"),
                ));
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{shown} in body should be at least {min} chars long"),
                ));
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str)
                && !matches_pattern(p, st)
            {
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{shown} in body should match '{p}'"),
                ));
            }
            if let Some(f) = s.get("format").and_then(Value::as_str)
                && !format_ok(f, st)
            {
                errs.push(FieldError::new(
                    ErrorType::TypeInvalid,
                    path,
                    Some(v.clone()),
                    format!("{shown} in body must be of type {f}: {}", go_quote(st)),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                let excl = flag(s, "exclusiveMinimum");
                if x < min || (excl && x == min) {
                    let op = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(FieldError::invalid(
                        path,
                        v.clone(),
                        format!("{shown} in body should be {op} {}", num(&s["minimum"])),
                    ));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                let excl = flag(s, "exclusiveMaximum");
                if x > max || (excl && x == max) {
                    let op = if excl { "less than" } else { "less than or equal to" };
                    errs.push(FieldError::invalid(
                        path,
                        v.clone(),
                        format!("{shown} in body should be {op} {}", num(&s["maximum"])),
                    ));
                }
            }
            if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
                && m > 0.0
                && (x / m).fract() != 0.0
            {
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{shown} in body should be a multiple of {}", num(&s["multipleOf"])),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(item, is, &format!("{path}[{i}]"), false, errs);
                }
            }
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                errs.push(FieldError::invalid(
                    path,
                    json!(n),
                    format!("{shown} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                errs.push(FieldError::new(
                    ErrorType::TooMany,
                    path,
                    Some(json!(n)),
                    format!("must have at most {max} items"),
                ));
            }
            list_type(items, s, path, errs);
        }
        Value::Object(m) => validate_object(m, s, path, root, errs),
        _ => {}
    }
    combinators(v, s, path, errs);
}

fn validate_object(m: &Map<String, Value>, s: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let shown = if path.is_empty() { "." } else { path };
    if flag(s, "x-kubernetes-embedded-resource") {
        // apiextensions: embedded resources need apiVersion and kind (objectmeta validation).
        for k in ["apiVersion", "kind"] {
            if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(child(path, k), "must not be empty"));
            }
        }
    }
    for k in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.contains_key(k) {
            errs.push(FieldError::required(child(path, k), ""));
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (k, c) in m {
        if (root || flag(s, "x-kubernetes-embedded-resource"))
            && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
        {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
            validate_at(c, sub, &child(path, k), false, errs);
        }
    }
    let n = m.len() as u64;
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        errs.push(FieldError::new(
            ErrorType::TooMany,
            path,
            Some(json!(n)),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        errs.push(FieldError::invalid(
            path,
            json!(n),
            format!("{shown} in body should have at least {min} properties"),
        ));
    }
}

/// `x-kubernetes-list-type: set|map` uniqueness
/// (k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype/validation.go).
fn list_type(items: &[Value], s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errs.push(FieldError::duplicate(format!("{path}[{i}]"), item.clone()));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let key_of = |item: &Value| -> Value {
                Value::Object(
                    keys.iter()
                        .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                        .collect(),
                )
            };
            for (i, item) in items.iter().enumerate() {
                let k = key_of(item);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    errs.push(FieldError::duplicate(format!("{path}[{i}]"), k));
                }
            }
        }
        _ => {}
    }
}

/// `allOf`, `anyOf`, `oneOf`, `not`: their failures are not field errors upstream, so
/// `kubeOpenAPIResultToFieldErrors` reports them on the nil path (`<nil>`) with an empty value.
fn combinators(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let shown = if path.is_empty() { "." } else { path };
    let check = |sub: &Value| {
        let mut e = vec![];
        validate_at(v, sub, path, false, &mut e);
        e
    };
    for sub in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        errs.extend(check(sub));
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let results: Vec<Vec<FieldError>> = any.iter().map(check).collect();
        if !results.iter().any(Vec::is_empty) {
            errs.push(FieldError::invalid(
                "<nil>",
                json!(""),
                format!("{} must validate at least one schema (anyOf)", go_quote(shown)),
            ));
            if let Some(first) = results.into_iter().next() {
                errs.extend(first);
            }
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let valid = one.iter().filter(|sub| check(sub).is_empty()).count();
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_owned()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errs.push(FieldError::invalid(
                "<nil>",
                json!(""),
                format!(
                    "{} must validate one and only one schema (oneOf). {found}",
                    go_quote(shown)
                ),
            ));
        }
    }
    if let Some(not) = s.get("not")
        && check(not).is_empty()
    {
        errs.push(FieldError::invalid(
            "<nil>",
            json!(""),
            format!("{} must not validate the schema (not)", go_quote(shown)),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prune, default, validate: the order admission uses.
    struct Outcome {
        unknown: Vec<String>,
        errors: Vec<FieldError>,
    }

    fn admit(obj: &mut Value, s: &Value) -> Outcome {
        let mut unknown = vec![];
        prune(obj, s, "", true, &mut unknown);
        apply_defaults(obj, s);
        let mut errors = vec![];
        validate_resource(obj, s, &mut errors);
        Outcome { unknown, errors }
    }

    fn schema() -> Value {
        serde_json::from_str(
            r#"{"type":"object","properties":{"spec":{"type":"object","required":["sourceRef"],"properties":{
                "replicas":{"type":"integer","minimum":0,"maximum":5},
                "force":{"type":"boolean","default":false},
                "mode":{"type":"string","enum":["a","b"]},
                "name":{"type":"string","pattern":"^[a-z]+$","maxLength":5},
                "url":{"type":"string","format":"uri"},
                "port":{"x-kubernetes-int-or-string":true},
                "note":{"type":"string","nullable":true},
                "sourceRef":{"type":"object","properties":{"kind":{"type":"string"}}},
                "free":{"type":"object","x-kubernetes-preserve-unknown-fields":true},
                "ports":{"type":"array","x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["port"],
                         "items":{"type":"object","properties":{"port":{"type":"integer"}}}}}}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_unless_preserved() {
        let mut o = json!({"apiVersion":"x/v1","kind":"X","metadata":{"name":"a","bogus":1},
                           "spec":{"sourceRef":{"kind":"G","extra":1},"free":{"any":{"thing":1}},"zzz":true}});
        let out = admit(&mut o, &schema());
        assert_eq!(out.unknown, ["metadata.bogus", "spec.sourceRef.extra", "spec.zzz"]);
        assert_eq!(o["spec"]["free"]["any"]["thing"], 1);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }

    #[test]
    fn embedded_resources_keep_their_type_meta_and_prune_their_metadata() {
        let s = json!({"type":"object","properties":{"spec":{"type":"object","properties":{
            "template":{"type":"object","x-kubernetes-embedded-resource":true,
                        "properties":{"spec":{"type":"object"}}}}}}});
        let mut o = json!({"spec":{"template":{"metadata":{"name":"a","junk":1},"spec":{}}}});
        let out = admit(&mut o, &s);
        assert_eq!(out.unknown, ["spec.template.metadata.junk"]);
        let msgs: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty"
            ]
        );
    }

    #[test]
    fn defaults_fill_absent_fields_and_nulls_of_non_nullable_ones() {
        let mut o = json!({"spec":{"sourceRef":{},"force":null,"note":null}});
        admit(&mut o, &schema());
        assert_eq!(o["spec"]["force"], false);
        assert!(o["spec"]["note"].is_null() && o["spec"].get("note").is_some());
    }

    #[test]
    fn violations_carry_kube_openapi_messages() {
        let mut o = json!({"spec":{"replicas":"3","mode":"c","name":"ABCDEFG","url":"not a uri","port":true,
                                   "ports":[{"port":1},{"port":1}]}});
        let out = admit(&mut o, &schema());
        let msgs: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "spec.sourceRef: Required value",
                r#"spec.mode: Unsupported value: "c": supported values: "a", "b""#,
                "spec.name: Too long: may not be longer than 5",
                r#"spec.name: Invalid value: "ABCDEFG": spec.name in body should match '^[a-z]+$'"#,
                r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#,
                r#"spec.ports[1]: Duplicate value: {"port":1}"#,
                r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
                r#"spec.url: Invalid value: "not a uri": spec.url in body must be of type uri: "not a uri""#,
            ]
        );
        assert_eq!(out.errors[0].kind.reason(), "FieldValueRequired");
        assert_eq!(out.errors[1].kind.reason(), "FieldValueNotSupported");
        let mut o = json!({"spec":{"sourceRef":{},"replicas":9}});
        let out = admit(&mut o, &schema());
        assert_eq!(
            out.errors[0].to_string(),
            "spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5"
        );
    }
}

//! The decode-and-validate step of every write, in kube-apiserver's order:
//! strict decoding (duplicate and unknown fields, per `fieldValidation`), then
//! defaulting, then validation (422 Invalid with causes), immutable fields on
//! update. Custom resources go through their CRD's structural schema
//! ([`super::schema`]), built-in kinds through their typed model ([`super::validate`]).

use serde_json::Value;

use super::decode::FieldValidation;
use super::field::{self, FieldError};
use super::lifecycle;
use super::resources::{GroupResource, ResourceType};
use super::schema;
use super::store::Store;
use super::validate;

/// The kind of write, which decides how unknown fields are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// POST, PUT and JSON/merge patches: strict decoding of the resulting object.
    Write,
    /// Server-side apply: the applied configuration is converted to a typed value.
    Apply,
}

/// A refusal: the HTTP code and the `Status` body.
pub type Refusal = (u16, Value);

/// One write to admit.
pub struct Write<'a> {
    pub t: &'a ResourceType,
    pub verb: Verb,
    pub validation: FieldValidation,
    /// Repeated keys of the request body, by path.
    pub duplicates: &'a [String],
    /// A built-in kind (typed model) rather than a custom resource (CRD schema).
    pub builtin: bool,
}

/// The schema a custom resource is served with, `None` for built-ins and schemaless CRDs.
pub fn cr_schema(store: &Store, t: &ResourceType) -> Option<Value> {
    let crds = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    store
        .list(&crds, None)
        .find(|c| {
            c.pointer("/spec/group") == Some(&Value::from(t.group.as_str()))
                && c.pointer("/spec/names/plural") == Some(&Value::from(t.plural.as_str()))
        })
        .and_then(|c| schema::version_schema(c, &t.version))
        .cloned()
}

/// `transformDecodeError` (k8s.io/apiserver/pkg/endpoints/handlers/rest.go): 400 BadRequest.
fn cannot_handle(t: &ResourceType, why: &str) -> Refusal {
    let message = format!(
        "{kind} in version {} cannot be handled as a {kind}: {why}",
        field::go_quote(&t.version),
        kind = t.kind
    );
    (400, field::status_body(400, "BadRequest", &message, None))
}

/// Decodes, defaults and validates `obj` in place; returns the `Warning` texts to send.
pub fn admit(store: &Store, w: &Write, live: Option<&Value>, obj: &mut Value) -> Result<Vec<String>, Refusal> {
    let t = w.t;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let cr = if w.builtin { None } else { cr_schema(store, t) };

    // Unknown fields, found by pruning (custom resources) or by the typed round trip (built-ins).
    let unknown = match &cr {
        Some(s) => {
            let mut unknown = vec![];
            schema::prune(obj, s, "", true, &mut unknown);
            unknown
        }
        None if w.builtin => match validate::decode_builtin(&t.kind, obj) {
            Ok(u) => u.unwrap_or_default(),
            Err(e) => return Err(cannot_handle(t, &e.0)),
        },
        // A CRD without a schema (apiextensions.k8s.io/v1beta1 leftovers): nothing to prune against.
        None => vec![],
    };
    let mut warnings = vec![];
    let dup_msgs = w
        .duplicates
        .iter()
        .map(|d| format!("duplicate field {}", field::go_quote(d)));
    match w.verb {
        Verb::Apply => {
            if let Some(first) = unknown.first() {
                // structured-merge-diff refuses fields the schema does not declare; upstream answers
                // a plain error, hence 500 with no reason (kubernetes/kubernetes#122480, #139253).
                let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
                let gvk = format!("{}/{}, Kind={}", t.group, t.version, t.kind);
                let message = format!(
                    "failed to create typed patch object ({ns}/{name}; {gvk}): .{first}: field not declared in schema"
                );
                return Err((500, field::status_body(500, "", &message, None)));
            }
            // patch.go applyPatcher: duplicates come from yaml.UnmarshalStrict of the patch.
            let dups: Vec<String> = dup_msgs.collect();
            match w.validation {
                FieldValidation::Strict if !dups.is_empty() => {
                    let message = format!("error strict decoding YAML: {}", dups.join(", "));
                    return Err((400, field::status_body(400, "BadRequest", &message, None)));
                }
                FieldValidation::Warn => warnings.extend(dups),
                _ => {}
            }
        }
        Verb::Write => {
            // Duplicates first (the JSON decoder), then the pruned unknown fields, as for CRs upstream.
            let all: Vec<String> = dup_msgs
                .chain(unknown.iter().map(|u| format!("unknown field {}", field::go_quote(u))))
                .collect();
            match w.validation {
                FieldValidation::Strict if !all.is_empty() => {
                    return Err(cannot_handle(t, &format!("strict decoding error: {}", all.join(", "))));
                }
                FieldValidation::Warn => warnings.extend(all),
                _ => {}
            }
        }
    }

    let mut errs: Vec<FieldError> = vec![];
    match &cr {
        Some(s) => {
            schema::apply_defaults(obj, s);
            // Custom resource names are DNS-1123 subdomains whatever their kind is called.
            errs.extend(validate::name_errors("", &name));
            errs.extend(validate::metadata_errors(obj));
            schema::validate_resource(obj, s, &mut errs);
        }
        None => {
            if t.kind == "Service"
                && let Some(l) = live
            {
                preserve_cluster_ip(l, obj);
            }
            errs.extend(validate::rules(&t.kind, obj));
        }
    }
    if let Some(l) = live {
        errs.extend(validate::immutable(&t.kind, l, obj));
        errs.extend(lifecycle::finalizer_errors(l, obj));
    }
    if !errs.is_empty() {
        return Err((422, field::invalid(&t.kind, &t.group, &name, &errs)));
    }
    Ok(warnings)
}

/// An update that leaves `spec.clusterIP` out keeps the allocated one
/// (pkg/registry/core/service/storage `patchAllocatedValues`).
fn preserve_cluster_ip(live: &Value, obj: &mut Value) {
    let old = live.pointer("/spec/clusterIP").cloned();
    if obj
        .pointer("/spec/clusterIP")
        .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
        && let Some(ip) = old
        && obj["spec"].is_object()
    {
        obj["spec"]["clusterIP"] = ip;
        if let Some(ips) = live.pointer("/spec/clusterIPs").cloned() {
            obj["spec"]["clusterIPs"] = ips;
        }
    }
}

/// Defaults applied on read, as apiextensions does for objects stored before a default existed.
pub fn default_on_read(schema: Option<&Value>, mut obj: Value) -> Value {
    if let Some(s) = schema {
        schema::apply_defaults(&mut obj, s);
    }
    obj
}

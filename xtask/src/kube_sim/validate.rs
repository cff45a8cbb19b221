//! Built-in kinds as kube-apiserver admits them: decoded into k8s-openapi's
//! typed structs (generated from the upstream OpenAPI spec), which finds type
//! errors and, by comparing the body with its typed round trip, unknown fields;
//! then object names, labels and the rules of upstream's `pkg/apis/*/validation`
//! that matter here, and immutable fields on update.

use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::field::FieldError;

/// A body the typed decoder refuses (400 BadRequest upstream).
#[derive(Debug, PartialEq)]
pub struct DecodeError(pub String);

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, DecodeError> {
    let typed: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        DecodeError(format!(
            "json: cannot unmarshal into Go struct field .{path}: {}",
            e.inner()
        ))
    })?;
    serde_json::to_value(&typed).map_err(|e| DecodeError(e.to_string()))
}

/// The typed round trip of a built-in kind, `None` for kinds without a typed model here.
fn typed(kind: &str, v: &Value) -> Option<Result<Value, DecodeError>> {
    use k8s_openapi::api::{
        admissionregistration, apps, batch, coordination, core, networking, policy, rbac, scheduling, storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    Some(match kind {
        "Namespace" => roundtrip::<core::v1::Namespace>(v),
        "Node" => roundtrip::<core::v1::Node>(v),
        "Secret" => roundtrip::<core::v1::Secret>(v),
        "ConfigMap" => roundtrip::<core::v1::ConfigMap>(v),
        "ServiceAccount" => roundtrip::<core::v1::ServiceAccount>(v),
        "Service" => roundtrip::<core::v1::Service>(v),
        "Pod" => roundtrip::<core::v1::Pod>(v),
        "Endpoints" => roundtrip::<core::v1::Endpoints>(v),
        "Event" => roundtrip::<core::v1::Event>(v),
        "PersistentVolumeClaim" => roundtrip::<core::v1::PersistentVolumeClaim>(v),
        "Deployment" => roundtrip::<apps::v1::Deployment>(v),
        "DaemonSet" => roundtrip::<apps::v1::DaemonSet>(v),
        "StatefulSet" => roundtrip::<apps::v1::StatefulSet>(v),
        "ReplicaSet" => roundtrip::<apps::v1::ReplicaSet>(v),
        "Job" => roundtrip::<batch::v1::Job>(v),
        "CronJob" => roundtrip::<batch::v1::CronJob>(v),
        "CustomResourceDefinition" => roundtrip::<apiext::CustomResourceDefinition>(v),
        "Role" => roundtrip::<rbac::v1::Role>(v),
        "RoleBinding" => roundtrip::<rbac::v1::RoleBinding>(v),
        "ClusterRole" => roundtrip::<rbac::v1::ClusterRole>(v),
        "ClusterRoleBinding" => roundtrip::<rbac::v1::ClusterRoleBinding>(v),
        "ValidatingAdmissionPolicy" => roundtrip::<admissionregistration::v1::ValidatingAdmissionPolicy>(v),
        "ValidatingAdmissionPolicyBinding" => {
            roundtrip::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(v)
        }
        "ValidatingWebhookConfiguration" => roundtrip::<admissionregistration::v1::ValidatingWebhookConfiguration>(v),
        "MutatingWebhookConfiguration" => roundtrip::<admissionregistration::v1::MutatingWebhookConfiguration>(v),
        "StorageClass" => roundtrip::<storage::v1::StorageClass>(v),
        "NetworkPolicy" => roundtrip::<networking::v1::NetworkPolicy>(v),
        "Ingress" => roundtrip::<networking::v1::Ingress>(v),
        "IngressClass" => roundtrip::<networking::v1::IngressClass>(v),
        "PodDisruptionBudget" => roundtrip::<policy::v1::PodDisruptionBudget>(v),
        "Lease" => roundtrip::<coordination::v1::Lease>(v),
        "PriorityClass" => roundtrip::<scheduling::v1::PriorityClass>(v),
        _ => return None,
    })
}

/// Removes from `input` what its typed round trip lost, returning those paths
/// (`spec.template.spec.containers[0].unknownNested`); `null`s are never unknown.
fn prune_unknown(input: &mut Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(m), Value::Object(t)) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let p = child(path, &k);
                match t.get(&k) {
                    _ if m[&k].is_null() => {}
                    None => {
                        m.remove(&k);
                        out.push(p);
                    }
                    // Free-form JSON (CRD `default`/`example`, `fieldsV1`) round-trips whole.
                    Some(tv) => prune_unknown(m.get_mut(&k).expect("listed above"), tv, &p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(t)) => {
            for (i, (item, ti)) in a.iter_mut().zip(t).enumerate() {
                prune_unknown(item, ti, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes a built-in object: unknown fields are removed and returned; `Ok(None)`
/// for kinds this simulator has no typed model of.
pub fn decode_builtin(kind: &str, obj: &mut Value) -> Result<Option<Vec<String>>, DecodeError> {
    if kind == "Secret" {
        secret_base64(obj)?;
    }
    let Some(rt) = typed(kind, obj) else {
        return Ok(None);
    };
    let rt = rt?;
    let mut unknown = vec![];
    prune_unknown(obj, &rt, "", &mut unknown);
    Ok(Some(unknown))
}

/// Secret `data` values are base64 (Go's `encoding/base64` message).
fn secret_base64(obj: &Value) -> Result<(), DecodeError> {
    for v in obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values())
    {
        let Some(s) = v.as_str() else { continue };
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode(s) {
            let at = match e {
                base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                base64::DecodeError::InvalidLength(n) => n,
                base64::DecodeError::InvalidPadding => s.len(),
            };
            return Err(DecodeError(format!("illegal base64 data at input byte {at}")));
        }
    }
    Ok(())
}

// ---- names and metadata (k8s.io/apimachinery/pkg/util/validation/validation.go) ----

/// `validation.RegexError`: the message with examples and the regex, double space included.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

fn is_label(s: &str, first: fn(char) -> bool) -> bool {
    let inner = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let end = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.chars().next().is_some_and(first) && s.chars().all(inner) && s.chars().last().is_some_and(end)
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `IsDNS1123Label`.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut e = vec![];
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_owned());
    }
    if !is_label(s, lower_alnum) {
        e.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    e
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut e = vec![];
    if s.len() > 253 {
        e.push("must be no more than 253 characters".to_owned());
    }
    if s.is_empty() || !s.split('.').all(|p| is_label(p, lower_alnum)) {
        e.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    e
}

/// `IsDNS1035Label`.
fn dns1035_label(s: &str) -> Vec<String> {
    let mut e = vec![];
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_owned());
    }
    if !is_label(s, |c| c.is_ascii_lowercase()) {
        e.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    e
}

fn qualified_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// `IsQualifiedName` (label and annotation keys).
fn qualified_name(s: &str) -> Vec<String> {
    let mut e = vec![];
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                e.push("prefix part must be non-empty".to_owned());
            } else {
                e.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            e.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return e;
        }
    };
    if name.is_empty() {
        e.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        e.push("name part must be no more than 63 characters".to_owned());
    }
    if !name.is_empty() && !qualified_part(name) {
        e.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    e
}

/// `IsValidLabelValue`.
fn label_value(s: &str) -> Vec<String> {
    let mut e = vec![];
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_owned());
    }
    if !s.is_empty() && !qualified_part(s) {
        e.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    e
}

/// `IsConfigMapKey` (ConfigMap and Secret data keys).
fn config_key(s: &str) -> Vec<String> {
    let mut e = vec![];
    if s.len() > 253 {
        e.push("must be no more than 253 characters".to_owned());
    }
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        e.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        e.push("must not be '.'".to_owned());
    } else if s == ".." {
        e.push("must not be '..'".to_owned());
    } else if s.starts_with("..") {
        e.push("must not start with '..'".to_owned());
    }
    e
}

/// The name rule of each kind: Namespaces are DNS-1123 labels
/// (pkg/apis/core/validation `ValidateNamespaceName`), Services DNS-1035 labels
/// (`ValidateServiceName`), RBAC objects path segments (pkg/apis/rbac/validation
/// `ValidateRBACName`), everything else, custom resources included, DNS-1123 subdomains.
pub fn name_errors(kind: &str, name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )];
    }
    let msgs = match kind {
        "Namespace" => dns1123_label(name),
        "Service" => dns1035_label(name),
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            // path.IsValidPathSegmentName
            match name {
                "." | ".." => vec![format!("may not be '{name}'")],
                _ => ["/", "%"]
                    .iter()
                    .filter(|c| name.contains(**c))
                    .map(|c| format!("may not contain '{c}'"))
                    .collect(),
            }
        }
        _ => dns1123_subdomain(name),
    };
    msgs.into_iter()
        .map(|m| FieldError::invalid("metadata.name", json!(name), m))
        .collect()
}

/// Labels and annotations (`ValidateObjectMeta`: `ValidateLabels`, `ValidateAnnotations`).
pub fn metadata_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    for (k, v) in obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for m in qualified_name(k) {
            errs.push(FieldError::invalid("metadata.labels", json!(k), m));
        }
        let s = v.as_str().unwrap_or_default();
        for m in label_value(s) {
            errs.push(FieldError::invalid("metadata.labels", json!(s), m));
        }
    }
    for k in obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        for m in qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", json!(k), m));
        }
    }
    errs
}

// ---- kind rules (pkg/apis/{apps,batch,core}/validation/validation.go) ----

fn containers(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let list = spec.get("containers").and_then(Value::as_array);
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        errs.push(FieldError::required(child(path, "containers"), ""));
        return;
    };
    let mut seen: Vec<&str> = vec![];
    for (i, c) in list.iter().enumerate() {
        let p = format!("{}[{i}]", child(path, "containers"));
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            for m in dns1123_label(name) {
                errs.push(FieldError::invalid(child(&p, "name"), json!(name), m));
            }
            if seen.contains(&name) {
                errs.push(FieldError::duplicate(child(&p, "name"), json!(name)));
            }
            seen.push(name);
        }
        if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(FieldError::required(child(&p, "image"), ""));
        }
        for (j, port) in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let pp = format!("{p}.ports[{j}].containerPort");
            match port.get("containerPort").and_then(Value::as_i64) {
                None | Some(0) => errs.push(FieldError::required(pp, "")),
                Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                    pp,
                    json!(n),
                    "must be between 1 and 65535, inclusive",
                )),
                _ => {}
            }
        }
    }
}

fn restart_policy(spec: &Value, path: &str, allowed: &[&str], errs: &mut Vec<FieldError>) {
    // Defaulted to Always when absent (pkg/apis/core/v1/defaults.go SetDefaults_PodSpec).
    let r = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if !allowed.contains(&r) {
        errs.push(FieldError::not_supported(
            child(path, "restartPolicy"),
            json!(r),
            allowed,
        ));
    }
}

/// A workload's selector and pod template (`ValidateDeploymentSpec`, `ValidateDaemonSetSpec`, ...).
fn workload(obj: &Value, what: &str, errs: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.replicas",
            json!(r),
            "must be greater than or equal to 0",
        ));
    }
    match spec.get("selector").filter(|s| s.is_object()) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|m| m.is_empty());
            if empty {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel.clone(),
                    format!("empty selector is invalid for {what}"),
                ));
            } else if !selector_matches(sel, &spec["template"]["metadata"]["labels"]) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    spec["template"]["metadata"]["labels"].clone(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    containers(&spec["template"]["spec"], "spec.template.spec", errs);
    restart_policy(&spec["template"]["spec"], "spec.template.spec", &["Always"], errs);
}

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let ml = sel.get("matchLabels").and_then(Value::as_object);
    let labels_ok = ml.into_iter().flatten().all(|(k, v)| get(k) == v.as_str());
    let exprs_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            }
        });
    labels_ok && exprs_ok
}

fn job_template(tmpl: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let spec = &tmpl["spec"]["template"]["spec"];
    let p = format!("{path}.spec.template.spec");
    containers(spec, &p, errs);
    restart_policy(spec, &p, &["OnFailure", "Never"], errs);
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", json!(ty), TYPES));
    }
    let ports = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names: Vec<&str> = vec![];
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else if !name.is_empty() {
            for m in dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{path}.name"), json!(name), m));
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(format!("{path}.name"), json!(name)));
            }
            names.push(name);
        }
        match p.get("port").and_then(Value::as_i64) {
            None | Some(0) => errs.push(FieldError::required(format!("{path}.port"), "")),
            Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                format!("{path}.port"),
                json!(n),
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
        const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !PROTOCOLS.contains(&proto)
        {
            errs.push(FieldError::not_supported(
                format!("{path}.protocol"),
                json!(proto),
                PROTOCOLS,
            ));
        }
    }
}

fn data_keys(obj: &Value, errs: &mut Vec<FieldError>) {
    let data = obj.get("data").and_then(Value::as_object);
    let binary = obj.get("binaryData").and_then(Value::as_object);
    for (field, map) in [("data", data), ("binaryData", binary)] {
        for k in map.into_iter().flat_map(|m| m.keys()) {
            for m in config_key(k) {
                errs.push(FieldError::invalid(format!("{field}[{k}]"), json!(k), m));
            }
        }
    }
    for k in data.into_iter().flat_map(|m| m.keys()) {
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                format!("data[{k}]"),
                json!(k),
                "duplicate of key present in binaryData",
            ));
        }
    }
}

/// Keys a Secret of a given type must hold (`ValidateSecret`).
fn secret_type(obj: &Value, errs: &mut Vec<FieldError>) {
    let has = |k: &str| obj.pointer("/data").and_then(|d| d.get(k)).is_some();
    let need: &[&str] = match obj.get("type").and_then(Value::as_str).unwrap_or("Opaque") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in need {
        if !has(k) {
            errs.push(FieldError::required(format!("data[{k}]"), ""));
        }
    }
}

fn crd(obj: &Value, errs: &mut Vec<FieldError>) {
    const SCOPES: &[&str] = &["Cluster", "Namespaced"];
    let scope = obj.pointer("/spec/scope").and_then(Value::as_str).unwrap_or_default();
    if scope.is_empty() {
        errs.push(FieldError::required("spec.scope", ""));
    } else if !SCOPES.contains(&scope) {
        errs.push(FieldError::not_supported("spec.scope", json!(scope), SCOPES));
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    } else if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
}

/// The rules of a built-in kind, names and metadata included.
pub fn rules(kind: &str, obj: &Value) -> Vec<FieldError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut errs = name_errors(kind, name);
    errs.extend(metadata_errors(obj));
    match kind {
        "Deployment" => workload(obj, "deployment", &mut errs),
        "DaemonSet" => workload(obj, "daemonset", &mut errs),
        "StatefulSet" => workload(obj, "statefulset", &mut errs),
        "ReplicaSet" => workload(obj, "replicaset", &mut errs),
        "Job" => job_template(obj, "", &mut errs),
        "CronJob" => {
            if obj
                .pointer("/spec/schedule")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required("spec.schedule", ""));
            }
            job_template(&obj["spec"]["jobTemplate"], "spec.jobTemplate", &mut errs);
        }
        "Pod" => {
            containers(&obj["spec"], "spec", &mut errs);
            restart_policy(&obj["spec"], "spec", &["Always", "OnFailure", "Never"], &mut errs);
        }
        "Service" => service(obj, &mut errs),
        "ConfigMap" => data_keys(obj, &mut errs),
        "Secret" => {
            data_keys(obj, &mut errs);
            secret_type(obj, &mut errs);
        }
        "CustomResourceDefinition" => crd(obj, &mut errs),
        _ => {}
    }
    // `Job` paths start at the root (`spec.template...`), not at `.spec`.
    for e in &mut errs {
        if let Some(rest) = e.field.strip_prefix('.') {
            e.field = rest.to_owned();
        }
    }
    errs
}

const IMMUTABLE: &str = "field is immutable";

fn immutable_field(old: &Value, new: &Value, pointer: &str, field: &str, errs: &mut Vec<FieldError>) {
    let (o, n) = (old.pointer(pointer), new.pointer(pointer));
    if o != n {
        errs.push(FieldError::invalid(field, n.cloned().unwrap_or(Value::Null), IMMUTABLE));
    }
}

/// Fields an update may not change (`ValidateImmutableField`, "field is immutable", and the
/// kind-specific rules): Deployment/DaemonSet/ReplicaSet `spec.selector` (apps/v1), StatefulSet
/// spec outside the updatable fields, Job selector and template, CRD `spec.scope`, Service
/// `clusterIP` once set, Secret `type`, Secret/ConfigMap contents once `immutable: true`.
pub fn immutable(kind: &str, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    match kind {
        "Deployment" | "DaemonSet" | "ReplicaSet" => {
            immutable_field(old, new, "/spec/selector", "spec.selector", &mut errs);
        }
        "StatefulSet" => {
            let strip = |v: &Value| {
                let mut s = v["spec"].clone();
                if let Some(m) = s.as_object_mut() {
                    for k in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        m.remove(k);
                    }
                }
                s
            };
            if strip(old) != strip(new) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        "Job" => {
            immutable_field(old, new, "/spec/selector", "spec.selector", &mut errs);
            immutable_field(old, new, "/spec/template", "spec.template", &mut errs);
        }
        "CustomResourceDefinition" => immutable_field(old, new, "/spec/scope", "spec.scope", &mut errs),
        "Service" => {
            let ip = |v: &Value| {
                v.pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let (o, n) = (ip(old), ip(new));
            if !o.is_empty() && !n.is_empty() && o != n {
                // validateUpgradeDowngradeClusterIPs (pkg/apis/core/validation).
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    json!(n),
                    "may not change once set",
                ));
            }
        }
        "Secret" | "ConfigMap" => {
            if kind == "Secret" {
                let ty = |v: &Value| v.get("type").cloned().unwrap_or(json!("Opaque"));
                if ty(old) != ty(new) {
                    errs.push(FieldError::invalid("type", ty(new), IMMUTABLE));
                }
            }
            if old.get("immutable") == Some(&json!(true)) {
                const WHY: &str = "field is immutable when `immutable` is set";
                if new.get("immutable") != Some(&json!(true)) {
                    errs.push(FieldError::forbidden("immutable", WHY));
                }
                for f in ["data", "binaryData"] {
                    if old.get(f) != new.get(f) {
                        errs.push(FieldError::forbidden(f, WHY));
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
               "spec":{"selector":{"matchLabels":{"app":"web"}},
                       "template":{"metadata":{"labels":{"app":"web"}},
                                   "spec":{"containers":[{"name":"web","image":"nginx"}]}}}})
    }

    #[test]
    fn typed_round_trip_finds_unknown_fields_and_drops_them() {
        let mut d = deployment();
        d["spec"]["bogus"] = json!(1);
        d["spec"]["template"]["spec"]["containers"][0]["unknownNested"] = json!("x");
        d["spec"]["paused"] = Value::Null;
        let unknown = decode_builtin("Deployment", &mut d).unwrap().unwrap();
        assert_eq!(
            unknown,
            ["spec.bogus", "spec.template.spec.containers[0].unknownNested"]
        );
        assert!(d["spec"].get("bogus").is_none());
        assert!(rules("Deployment", &d).is_empty(), "{:?}", rules("Deployment", &d));
    }

    #[test]
    fn type_errors_and_bad_base64_are_decode_errors() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!("3");
        let e = decode_builtin("Deployment", &mut d).unwrap_err();
        assert!(e.0.contains("spec.replicas"), "{e:?}");
        let mut s = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"k":"no!"}});
        assert_eq!(
            decode_builtin("Secret", &mut s).unwrap_err(),
            DecodeError("illegal base64 data at input byte 2".into())
        );
    }

    #[test]
    fn deployment_rules_read_as_upstream() {
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        let msgs: Vec<String> = rules("Deployment", &d).iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                r#"spec.template.metadata.labels: Invalid value: {"app":"other"}: `selector` does not match template `labels`"#,
                "spec.template.spec.containers[0].image: Required value",
            ]
        );
        let mut d = deployment();
        d["spec"].as_object_mut().unwrap().remove("selector");
        assert_eq!(rules("Deployment", &d)[0].to_string(), "spec.selector: Required value");
    }

    #[test]
    fn names_follow_each_kinds_rule() {
        assert!(name_errors("ConfigMap", "a.b-c").is_empty());
        assert_eq!(
            name_errors("Namespace", "a.b")[0].to_string(),
            "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        assert!(name_errors("Service", "1abc")[0].detail.starts_with("a DNS-1035 label"));
        assert!(
            name_errors("ConfigMap", "Bad_Name")[0]
                .detail
                .starts_with("a lowercase RFC 1123 subdomain")
        );
        assert!(name_errors("ClusterRole", "system:admin").is_empty());
    }

    #[test]
    fn service_and_data_key_rules() {
        let svc =
            json!({"metadata":{"name":"s"},"spec":{"ports":[{"port":80},{"port":70000,"name":"b","protocol":"HTTP"}]}});
        let msgs: Vec<String> = rules("Service", &svc).iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "spec.ports[0].name: Required value",
                "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                r#"spec.ports[1].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP""#,
            ]
        );
        let cm = json!({"metadata":{"name":"c"},"data":{"bad key":"v"}});
        assert!(
            rules("ConfigMap", &cm)[0]
                .to_string()
                .starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key")
        );
    }

    #[test]
    fn immutable_fields_are_refused() {
        let old = deployment();
        let mut new = deployment();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        let e = immutable("Deployment", &old, &new);
        assert_eq!(e[0].field, "spec.selector");
        assert!(e[0].to_string().ends_with("field is immutable"));
        let crd_old = json!({"spec":{"scope":"Namespaced"}});
        let crd_new = json!({"spec":{"scope":"Cluster"}});
        assert_eq!(
            immutable("CustomResourceDefinition", &crd_old, &crd_new)[0].to_string(),
            "spec.scope: Invalid value: \"Cluster\": field is immutable"
        );
        let cm = json!({"immutable":true,"data":{"a":"1"}});
        let cm2 = json!({"immutable":true,"data":{"a":"2"}});
        assert_eq!(
            immutable("ConfigMap", &cm, &cm2)[0].to_string(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
    }
}

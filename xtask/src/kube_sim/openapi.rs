//! OpenAPI v3 discovery: `/openapi/v3` (the index of group-versions, each
//! with a content hash) and one document per group-version with the paths,
//! operations and component schemas of every kind served, CRDs included.
//!
//! What clients read from it, and so what this must get right:
//! - kubectl's query-param verifier (kubernetes/cli-runtime
//!   `pkg/resource/query_param_verifier_v3.go`): a PATCH operation carrying
//!   `x-kubernetes-group-version-kind` of the kind and a `fieldValidation`
//!   query parameter means the server validates, so kubectl skips client-side
//!   validation (which would fetch `/openapi/v2`);
//! - kubectl apply's patcher (kubernetes/kubectl `pkg/cmd/apply/patcher.go`):
//!   a PATCH accepting `application/strategic-merge-patch+json` means a
//!   strategic merge patch, built from the component schema whose
//!   `x-kubernetes-group-version-kind` list names the kind, with its
//!   `x-kubernetes-patch-merge-key`/`-strategy` extensions;
//! - `kubectl explain` (kubernetes/kubectl `pkg/explain/v2`): the same schemas.
//!
//! Document shape: kube-openapi `pkg/handler3` (index `paths` →
//! `serverRelativeURL` with `?hash=`) and the documents kube-apiserver
//! publishes. Built-in schemas are not typed here: they come from k8s-openapi's
//! `schemars` implementations, which k8s-openapi generates from the upstream
//! Kubernetes OpenAPI spec (v1.34). CRD schemas are their `openAPIV3Schema`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::resources::ResourceType;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// Component schemas of every built-in kind (and what they reference), and
/// the schema name of each built-in (group, kind).
struct Builtins {
    defs: Map<String, Value>,
    names: BTreeMap<(String, String), String>,
}

macro_rules! register {
    ($gen:expr, $names:expr; $( $group:literal $kind:literal => $ty:ty ),* $(,)?) => {
        $(
            let _ = $gen.subschema_for::<$ty>();
            $names.insert(($group.to_owned(), $kind.to_owned()), <$ty as JsonSchema>::schema_name().into_owned());
        )*
    };
}

fn builtins() -> &'static Builtins {
    static B: OnceLock<Builtins> = OnceLock::new();
    B.get_or_init(|| {
        use k8s_openapi::api::{
            admissionregistration::v1 as adm, apps::v1 as apps, batch::v1 as batch, coordination::v1 as coord,
            core::v1 as core, networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac,
            scheduling::v1 as sched, storage::v1 as storage,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
        let mut names = BTreeMap::new();
        register!(generator, names;
            "" "Namespace" => core::Namespace,
            "" "Node" => core::Node,
            "" "Secret" => core::Secret,
            "" "ConfigMap" => core::ConfigMap,
            "" "ServiceAccount" => core::ServiceAccount,
            "" "Service" => core::Service,
            "" "Pod" => core::Pod,
            "" "Endpoints" => core::Endpoints,
            "" "Event" => core::Event,
            "" "PersistentVolumeClaim" => core::PersistentVolumeClaim,
            "apps" "Deployment" => apps::Deployment,
            "apps" "DaemonSet" => apps::DaemonSet,
            "apps" "StatefulSet" => apps::StatefulSet,
            "apps" "ReplicaSet" => apps::ReplicaSet,
            "batch" "Job" => batch::Job,
            "batch" "CronJob" => batch::CronJob,
            "apiextensions.k8s.io" "CustomResourceDefinition" => ext::CustomResourceDefinition,
            "rbac.authorization.k8s.io" "Role" => rbac::Role,
            "rbac.authorization.k8s.io" "RoleBinding" => rbac::RoleBinding,
            "rbac.authorization.k8s.io" "ClusterRole" => rbac::ClusterRole,
            "rbac.authorization.k8s.io" "ClusterRoleBinding" => rbac::ClusterRoleBinding,
            "admissionregistration.k8s.io" "ValidatingAdmissionPolicy" => adm::ValidatingAdmissionPolicy,
            "admissionregistration.k8s.io" "ValidatingAdmissionPolicyBinding" => adm::ValidatingAdmissionPolicyBinding,
            "admissionregistration.k8s.io" "ValidatingWebhookConfiguration" => adm::ValidatingWebhookConfiguration,
            "admissionregistration.k8s.io" "MutatingWebhookConfiguration" => adm::MutatingWebhookConfiguration,
            "storage.k8s.io" "StorageClass" => storage::StorageClass,
            "networking.k8s.io" "NetworkPolicy" => net::NetworkPolicy,
            "networking.k8s.io" "Ingress" => net::Ingress,
            "networking.k8s.io" "IngressClass" => net::IngressClass,
            "policy" "PodDisruptionBudget" => policy::PodDisruptionBudget,
            "coordination.k8s.io" "Lease" => coord::Lease,
            "scheduling.k8s.io" "PriorityClass" => sched::PriorityClass,
        );
        let _ = generator.subschema_for::<meta::ObjectMeta>();
        let _ = generator.subschema_for::<meta::DeleteOptions>();
        let _ = generator.subschema_for::<meta::Status>();
        let mut defs = generator.take_definitions(true);
        defs.insert(
            PATCH.into(),
            json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}),
        );
        for ((group, kind), name) in &names {
            if let Some(s) = defs.get_mut(name).and_then(Value::as_object_mut) {
                // Every built-in the simulator serves is at v1.
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "version": "v1", "kind": kind}]),
                );
            }
        }
        for (schema, field, key, strategy) in super::smp::all_merge_keys() {
            if let Some(p) = defs
                .get_mut(schema)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(field))
                .and_then(Value::as_object_mut)
            {
                if !key.is_empty() {
                    p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                }
                p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            }
        }
        Builtins { defs, names }
    })
}

/// The component schemas of the built-in kinds, for strategic merge patch.
pub fn builtin_defs() -> &'static Map<String, Value> {
    &builtins().defs
}

/// The component schema name of a built-in kind.
pub fn builtin_schema(group: &str, kind: &str) -> Option<&'static str> {
    builtins()
        .names
        .get(&(group.to_owned(), kind.to_owned()))
        .map(String::as_str)
}

/// `api/v1` or `apis/<group>/<version>`: a document's key in the index.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(n) = r.strip_prefix("#/components/schemas/")
            {
                out.insert(n.to_owned());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// Adds `roots` and every schema they reach from `defs` to `out`.
fn closure(roots: &[&str], defs: &Map<String, Value>, out: &mut Map<String, Value>) {
    let mut todo: Vec<String> = roots.iter().map(|s| (*s).to_owned()).collect();
    while let Some(n) = todo.pop() {
        if out.contains_key(&n) {
            continue;
        }
        let Some(s) = defs.get(&n) else { continue };
        let mut refs = BTreeSet::new();
        collect_refs(s, &mut refs);
        out.insert(n, s.clone());
        todo.extend(refs);
    }
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ),
        query(
            "fieldManager",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.",
        ),
    ];
    if patch {
        p.push(query("force", "boolean", "Force is going to \"force\" Apply requests."));
    }
    p
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query(n, t, ""))
    .collect()
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn ok(schema: &Value) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}})
}

/// One served type's paths.
fn paths_of(t: &ResourceType, schema: &str, custom: bool, paths: &mut Map<String, Value>) {
    let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
    let prefix = format!("/{}", gv_path(&t.group, &t.version));
    let (coll, item) = if t.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural),
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural),
        )
    } else {
        (
            format!("{prefix}/{}", t.plural),
            format!("{prefix}/{}/{{name}}", t.plural),
        )
    };
    let id = |verb: &str, suffix: &str| {
        let group: String = t
            .group
            .split('.')
            .next()
            .unwrap_or("core")
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
            .collect();
        let scope = if t.namespaced { "Namespaced" } else { "" };
        let group = if group.is_empty() { "Core".into() } else { group };
        format!("{verb}{group}{}{scope}{}{suffix}", t.version.to_uppercase(), t.kind)
    };
    let op = |verb: &str, action: &str, suffix: &str, params: Vec<Value>, body: Option<Value>, resp: Value| {
        let mut o = json!({
            "operationId": id(verb, suffix),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": {"200": resp, "401": {"description": "Unauthorized"}},
        });
        if let Some(b) = body {
            o["requestBody"] = json!({"content": b, "required": true});
        }
        o
    };
    let obj = reference(schema);
    let mut patch_types = Map::new();
    for ct in [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ] {
        patch_types.insert(ct.into(), json!({"schema": reference(PATCH)}));
    }
    if !custom {
        patch_types.insert(
            "application/strategic-merge-patch+json".into(),
            json!({"schema": reference(PATCH)}),
        );
    }
    let patch_body = Value::Object(patch_types);
    let body = json!({"*/*": {"schema": obj}});
    let ns_param: Vec<Value> = if t.namespaced {
        vec![path_param("namespace")]
    } else {
        vec![]
    };
    let list_schema = json!({"type": "object", "properties": {"items": {"type": "array", "items": obj}}});
    paths.insert(
        coll.clone(),
        json!({
            "get": op("list", "list", "", list_params(), None, ok(&list_schema)),
            "post": op("create", "post", "", write_params(false), Some(body.clone()), ok(&obj)),
            "delete": op("deletecollection", "deletecollection", "", list_params(), None, ok(&reference(STATUS))),
            "parameters": ns_param,
        }),
    );
    let mut item_params = vec![path_param("name")];
    item_params.extend(ns_param.iter().cloned());
    paths.insert(
        item.clone(),
        json!({
            "get": op("read", "get", "", vec![], None, ok(&obj)),
            "put": op("replace", "put", "", write_params(false), Some(body.clone()), ok(&obj)),
            "patch": op("patch", "patch", "", write_params(true), Some(patch_body.clone()), ok(&obj)),
            "delete": op("delete", "delete", "", vec![query("dryRun", "string", "")],
                         Some(json!({"*/*": {"schema": reference(DELETE_OPTIONS)}})), ok(&reference(STATUS))),
            "parameters": item_params,
        }),
    );
    if t.status_subresource {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": op("read", "get", "Status", vec![], None, ok(&obj)),
                "put": op("replace", "put", "Status", write_params(false), Some(body), ok(&obj)),
                "patch": op("patch", "patch", "Status", write_params(true), Some(patch_body), ok(&obj)),
                "parameters": item_params,
            }),
        );
    }
    if t.namespaced {
        let all = format!("{prefix}/{}", t.plural);
        paths.insert(
            all,
            json!({"get": op("list", "list", "ForAllNamespaces", list_params(), None, ok(&list_schema))}),
        );
    }
}

/// The component schema of a custom resource: the CRD version's
/// `openAPIV3Schema` with apiVersion, kind and metadata, as kube-apiserver
/// publishes it (apiextensions-apiserver `pkg/controller/openapi/builder`).
fn custom_schema(crd: &Value, t: &ResourceType) -> Value {
    let version = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["name"] == t.version.as_str()));
    let mut s = version
        .and_then(|v| v.pointer("/schema/openAPIV3Schema"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    s["type"] = json!("object");
    let props = s
        .as_object_mut()
        .expect("made an object")
        .entry("properties")
        .or_insert_with(|| json!({}));
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    props["metadata"] = json!({"allOf": [reference(OBJECT_META)], "description": "Standard object's metadata."});
    s["x-kubernetes-group-version-kind"] = json!([{"group": t.group, "version": t.version, "kind": t.kind}]);
    s
}

/// Schema name of a custom kind: its reversed group then version and kind, as upstream names them.
fn custom_name(t: &ResourceType) -> String {
    let group: Vec<&str> = t.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), t.version, t.kind)
}

/// The document of one group-version, or `None` when nothing is served there.
/// `crd_of` finds the CRD defining a custom type.
pub fn document(
    types: &[ResourceType],
    group: &str,
    version: &str,
    crd_of: &dyn Fn(&ResourceType) -> Option<Value>,
) -> Option<Value> {
    let served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let b = builtins();
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut roots: Vec<&str> = vec![OBJECT_META, DELETE_OPTIONS, STATUS, PATCH];
    for t in &served {
        if let Some(name) = builtin_schema(&t.group, &t.kind) {
            roots.push(name);
            paths_of(t, name, false, &mut paths);
        } else if let Some(crd) = crd_of(t) {
            let name = custom_name(t);
            schemas.insert(name.clone(), custom_schema(&crd, t));
            paths_of(t, &name, true, &mut paths);
        }
    }
    closure(&roots, &b.defs, &mut schemas);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The `/openapi/v3` index: every served group-version with a hash of its document.
pub fn index(types: &[ResourceType], crd_of: &dyn Fn(&ResourceType) -> Option<Value>) -> Value {
    let gvs: BTreeSet<(String, String)> = types.iter().map(|t| (t.group.clone(), t.version.clone())).collect();
    let mut paths = Map::new();
    for (g, v) in gvs {
        let Some(doc) = document(types, &g, &v, crd_of) else {
            continue;
        };
        let hash = hex::encode(Sha256::digest(serde_json::to_vec(&doc).expect("JSON values serialise")));
        let key = gv_path(&g, &v);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash.to_uppercase())}),
        );
    }
    json!({"paths": paths})
}

/// The (group, version) of an `/openapi/v3/...` path, if it names one.
pub fn parse_path(rest: &[&str]) -> Option<(String, String)> {
    match rest {
        ["api", v] => Some((String::new(), (*v).to_owned())),
        ["apis", g, v] => Some(((*g).to_owned(), (*v).to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_come_from_k8s_openapi_with_gvk_and_merge_keys() {
        let d = builtin_defs();
        let cm = &d["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(cm["x-kubernetes-group-version-kind"][0]["kind"], "ConfigMap");
        assert!(cm["properties"]["data"].is_object());
        assert_eq!(
            d["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
    }

    #[test]
    fn core_document_has_patch_with_field_validation() {
        let types = super::super::resources::builtins();
        let doc = document(&types, "", "v1", &|_| None).unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
        let idx = index(&types, &|_| None);
        assert!(
            idx["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
        assert!(idx["paths"]["apis/apps/v1"].is_object());
    }
}

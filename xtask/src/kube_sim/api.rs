//! The Kubernetes REST API over the store: discovery, GET/LIST/WATCH,
//! create/replace/patch/server-side apply (with `dryRun`), DELETE, and the
//! status subresource. Errors are `Status` objects as the apiserver sends them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use base64::Engine;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use super::Shared;
use super::admit::{self, Verb};
use super::decode::{self, FieldValidation};
use super::faults::{FaultKind, RequestRecord};
use super::field;
use super::lifecycle;
use super::negotiate::{self, Input, Output, PatchType};
use super::resources::{self, GroupResource, ResourceType};
use super::selector::Selector;
use super::ssa::{self, Part};
use super::store::{Gone, Store, now_rfc3339};
use super::table::{self, Printer};
use super::{openapi, protobuf, smp};

/// Largest request body accepted (the biggest upstream CRDs are ~0.5 MB).
const MAX_BODY: usize = 8 << 20;

/// Marker: close the connection without a response (fault injection).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

type Reply = Response<Body>;

fn json_response(code: StatusCode, v: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(v).expect("JSON values serialise")))
        .expect("static response parts are valid")
}

/// A `Status` failure response.
fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> Reply {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &body,
    )
}

fn resource_label(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn not_found(t: &ResourceType, name: &str) -> Reply {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", resource_label(t)),
        Some(json!({"name": name, "group": t.group, "kind": t.plural})),
    )
}

fn bad_request(message: String) -> Reply {
    status(400, "BadRequest", message, None)
}

fn invalid(t: &ResourceType, name: &str, errs: &[field::FieldError]) -> Reply {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &field::invalid(&t.kind, &t.group, name, errs),
    )
}

/// Where a request goes.
enum Route {
    Version,
    /// `/readyz`, `/livez`, `/healthz`: `ok` as text, like the apiserver.
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    /// `/openapi/v3`: the index of group-version documents.
    OpenApiIndex,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`.
    OpenApiDoc(String, String),
    Resource {
        group: String,
        version: String,
        namespace: Option<String>,
        resource: String,
        name: Option<String>,
        sub: Option<String>,
    },
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["readyz" | "livez" | "healthz"] => return Some(Route::Health),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => return Some(Route::Group((*g).into())),
        ["api", v] => return Some(Route::GroupVersion(String::new(), (*v).into())),
        ["apis", g, v] => return Some(Route::GroupVersion((*g).into(), (*v).into())),
        ["openapi", "v3"] => return Some(Route::OpenApiIndex),
        ["openapi", "v3", rest @ ..] => {
            return openapi::parse_path(rest).map(|(g, v)| Route::OpenApiDoc(g, v));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let namespaced =
        rest.len() >= 3 && rest[0] == "namespaces" && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(Route::Resource {
        group: group.into(),
        version: version.into(),
        namespace,
        resource: rest[0].into(),
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn parse_query(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// Every type the API serves now: built-ins plus established CRDs' kinds.
pub fn served_types(shared: &Shared, store: &Store) -> Vec<ResourceType> {
    let mut types = shared.builtins.clone();
    for crd in store.list(
        &GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
        None,
    ) {
        if resources::crd_established(crd) {
            types.extend(resources::from_crd(crd));
        }
    }
    types
}

/// Handles one request, recording it in the request log.
pub async fn handle(shared: Arc<Shared>, req: Request<Body>, user: Arc<str>) -> Result<Reply, DropConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query_str = req.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&query_str);
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let write = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let mut record = RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query_str,
        mutating: write && !dry_run,
        dry_run: write && dry_run,
        watch: truthy(&query, "watch"),
        status: 0,
        fault: None,
        user: user.to_string(),
    };
    let fault = shared.faults.lock().expect("faults lock").take(method.as_str(), &path);
    record.fault = fault.clone();
    let reply = match fault {
        Some(FaultKind::Drop) => {
            tracing::debug!(target: "kube_sim", %method, %path, "fault: dropping the connection");
            shared.requests.lock().expect("log lock").push(record);
            return Err(DropConnection);
        }
        Some(FaultKind::Status(code)) => status(
            code,
            "InternalError",
            format!("injected fault: HTTP {code} for {method} {path}"),
            None,
        ),
        Some(FaultKind::TooManyRequests { retry_after_secs }) => {
            let mut r = status(
                429,
                "TooManyRequests",
                "injected fault: too many requests, please try again later".into(),
                Some(json!({"retryAfterSeconds": retry_after_secs})),
            );
            r.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
            r
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            dispatch(&shared, req, &query, dry_run).await
        }
        None => dispatch(&shared, req, &query, dry_run).await,
    };
    record.status = reply.status().as_u16();
    // An acknowledged write is in etcd (kube-apiserver answers after etcd's commit).
    if record.mutating
        && let Some(p) = &shared.persist
    {
        let rv = shared.store.lock().expect("store lock").resource_version();
        p.flushed(rv).await;
    }
    tracing::debug!(target: "kube_sim", %method, %path, status = record.status, "request");
    shared.requests.lock().expect("log lock").push(record);
    Ok(reply)
}

async fn dispatch(shared: &Arc<Shared>, req: Request<Body>, query: &HashMap<String, String>, dry_run: bool) -> Reply {
    let Some(route) = route(req.uri().path()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    };
    let method = req.method().clone();
    if method != Method::GET && !matches!(route, Route::Resource { .. }) {
        return status(405, "MethodNotAllowed", format!("{method} is not allowed here"), None);
    }
    let types = {
        let store = shared.store.lock().expect("store lock");
        served_types(shared, &store)
    };
    match route {
        Route::Health => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("ok"))
            .expect("static response parts are valid"),
        Route::Version => {
            // version.Info (k8s.io/apimachinery/pkg/version): major and minor as strings.
            let git = shared.server_version.lock().expect("version lock").clone();
            let mut parts = git.trim_start_matches('v').split('.');
            let (major, minor) = (
                parts.next().unwrap_or("1").to_owned(),
                parts.next().unwrap_or("34").to_owned(),
            );
            json_response(
                StatusCode::OK,
                &json!({
                    "major": major, "minor": minor, "gitVersion": git, "gitCommit": "kube-sim",
                    "gitTreeState": "clean", "buildDate": "2025-09-09T00:00:00Z", "goVersion": "go1.24.6",
                    "compiler": "gc", "platform": "linux/amd64",
                }),
            )
        }
        Route::CoreVersions => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        ),
        Route::Groups => {
            let mut names: Vec<&str> = types
                .iter()
                .filter(|t| !t.group.is_empty())
                .map(|t| t.group.as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            let groups: Vec<Value> = names.iter().map(|g| resources::api_group(g, &types)).collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Route::Group(g) => {
            if types.iter().any(|t| t.group == g) {
                json_response(StatusCode::OK, &resources::api_group(&g, &types))
            } else {
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    None,
                )
            }
        }
        Route::GroupVersion(g, v) => {
            let served: Vec<&ResourceType> = types.iter().filter(|t| t.group == g && t.version == v).collect();
            if served.is_empty() {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    None,
                );
            }
            let gv = if g.is_empty() { v } else { format!("{g}/{v}") };
            json_response(StatusCode::OK, &resources::resource_list(&gv, &served))
        }
        Route::OpenApiIndex => {
            let lookup = |t: &ResourceType| crd_of(shared, t);
            json_response(StatusCode::OK, &openapi::index(&types, &lookup))
        }
        Route::OpenApiDoc(g, v) => {
            let lookup = |t: &ResourceType| crd_of(shared, t);
            match openapi::document(&types, &g, &v, &lookup) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    None,
                ),
            }
        }
        Route::Resource {
            group,
            version,
            namespace,
            resource,
            name,
            sub,
        } => {
            let Some(t) = types
                .iter()
                .find(|t| t.group == group && t.version == version && t.plural == resource)
                .cloned()
            else {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    None,
                );
            };
            if (!t.namespaced && namespace.is_some()) || (t.namespaced && namespace.is_none() && name.is_some()) {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    None,
                );
            }
            let part = match sub.as_deref() {
                None => Part::Main {
                    status_subresource: t.status_subresource,
                },
                Some("status") if t.status_subresource => Part::Status,
                Some("eviction") if t.group.is_empty() && t.plural == "pods" => {
                    return evict(shared, req, namespace.as_deref().unwrap_or_default(), name.as_deref()).await;
                }
                Some(_) => {
                    return status(
                        404,
                        "NotFound",
                        "the server could not find the requested resource".into(),
                        None,
                    );
                }
            };
            let ns = namespace.unwrap_or_default();
            let output = match negotiate::output(req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok())) {
                Ok(o) => o,
                Err(m) => return status(406, "NotAcceptable", m, None),
            };
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
                Ok(b) => b,
                Err(e) => return bad_request(format!("cannot read the request body: {e}")),
            };
            let validation = match FieldValidation::from_query(query) {
                Ok(v) => v,
                Err(m) if matches!(method, Method::POST | Method::PUT | Method::PATCH) => return bad_request(m),
                Err(_) => FieldValidation::Warn,
            };
            let custom = !shared
                .builtins
                .iter()
                .any(|b| b.group == t.group && b.plural == t.plural);
            // Only Tables need the CRD (its printer columns); CRDs can be large.
            let crd = if custom && matches!(output, Output::Table(_)) {
                crd_of(shared, &t)
            } else {
                None
            };
            let ctx = Ctx {
                shared,
                t: &t,
                ns: &ns,
                query,
                dry_run,
                validation,
                duplicates: RefCell::default(),
                warnings: RefCell::default(),
                output,
                custom,
                crd,
            };
            let reply = match (method, name) {
                (Method::GET, Some(name)) => ctx.get(&name),
                (Method::GET, None) if truthy(query, "watch") => ctx.watch(),
                (Method::GET, None) => ctx.list(),
                (Method::POST, None) => ctx.create(&content_type, &body),
                (Method::PUT, Some(name)) => ctx.replace(&name, part, &content_type, &body),
                (Method::PATCH, Some(name)) => ctx.patch(&name, part, &content_type, &body),
                (Method::DELETE, Some(name)) if part != Part::Status => ctx.delete(&name),
                (Method::DELETE, None) => ctx.delete_collection(),
                (m, _) => status(
                    405,
                    "MethodNotAllowed",
                    format!("{m} is not supported on this path"),
                    None,
                ),
            };
            ctx.with_warnings(reply)
        }
    }
}

/// `POST /api/v1/namespaces/{ns}/pods/{name}/eviction` (policy/v1 Eviction; [`super::eviction`]).
async fn evict(shared: &Arc<Shared>, req: Request<Body>, ns: &str, name: Option<&str>) -> Reply {
    let Some(name) = name.filter(|_| req.method() == Method::POST) else {
        return status(
            405,
            "MethodNotAllowed",
            "eviction takes POST on a named pod".into(),
            None,
        );
    };
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return bad_request(format!("cannot read the request body: {e}")),
    };
    let eviction: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the Eviction is not valid JSON: {e}")),
    };
    let result = {
        let mut store = shared.store.lock().expect("store lock");
        super::eviction::evict(&mut store, ns, name, &eviction)
    };
    match result {
        Ok(body) => json_response(StatusCode::CREATED, &body),
        Err((code, reason, message, details)) => {
            let retry = details.as_ref().and_then(|d| d["retryAfterSeconds"].as_u64());
            let mut r = status(code, reason, message, details);
            if let Some(secs) = retry {
                r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            r
        }
    }
}

/// The CRD that defines a custom type, if it is one.
fn crd_of(shared: &Shared, t: &ResourceType) -> Option<Value> {
    let store = shared.store.lock().expect("store lock");
    store
        .get(
            &GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
            "",
            &format!("{}.{}", t.plural, t.group),
        )
        .cloned()
}

/// One resource request's context.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    t: &'a ResourceType,
    ns: &'a str,
    query: &'a HashMap<String, String>,
    dry_run: bool,
    /// `fieldValidation` of this request.
    validation: FieldValidation,
    /// Repeated keys of the request body.
    duplicates: RefCell<Vec<String>>,
    /// `Warning` header texts for the response.
    warnings: RefCell<Vec<String>>,
    /// The representation the client accepts.
    output: Output,
    /// A custom resource (defined by a CRD), not a built-in kind.
    custom: bool,
    /// The defining CRD of a custom resource, when the output is a Table.
    crd: Option<Value>,
}

/// Sets apiVersion/kind to the version the client asked for.
fn as_served(t: &ResourceType, mut v: Value) -> Value {
    v["apiVersion"] = Value::String(t.api_version());
    v["kind"] = Value::String(t.kind.clone());
    v
}

fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

impl Ctx<'_> {
    fn gr(&self) -> GroupResource {
        self.t.group_resource()
    }

    /// Parses a body, remembering its repeated keys for field validation.
    fn parse_body(&self, body: &Bytes) -> Result<Value, String> {
        let d = decode::parse(body)?;
        *self.duplicates.borrow_mut() = d.duplicates;
        Ok(d.value)
    }

    /// A create/update body in its declared format; a 415 for formats (or
    /// protobuf kinds) that cannot be decoded, as kube-apiserver answers
    /// custom resources.
    fn decode_body(&self, content_type: &str, body: &Bytes) -> Result<Value, Box<Reply>> {
        let unsupported = |m: String| Box::new(status(415, "UnsupportedMediaType", m, None));
        match negotiate::input(content_type).map_err(unsupported)? {
            Input::Yaml => self.parse_body(body).map_err(|e| Box::new(bad_request(e))),
            Input::Protobuf if !self.custom && protobuf::supported(&self.t.group, &self.t.kind) => {
                protobuf::decode(body).map_err(|e| Box::new(bad_request(e)))
            }
            Input::Protobuf => Err(unsupported(format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                negotiate::PRODUCED.join(", ")
            ))),
        }
    }

    /// Adds the collected `Warning` headers to a reply.
    fn with_warnings(&self, mut reply: Reply) -> Reply {
        for w in self.warnings.borrow().iter() {
            if let Ok(v) = header::HeaderValue::from_str(&field::warning_header(w)) {
                reply.headers_mut().append(header::WARNING, v);
            }
        }
        reply
    }

    /// Custom resources are defaulted on read too; `None` for built-ins.
    fn read_schema(&self, store: &Store) -> Option<Value> {
        (!self.builtin()).then(|| admit::cr_schema(store, self.t)).flatten()
    }

    fn builtin(&self) -> bool {
        self.shared
            .builtins
            .iter()
            .any(|b| b.group == self.t.group && b.plural == self.t.plural)
    }

    fn conflict(&self, name: &str) -> Box<Reply> {
        Box::new(json_response(
            StatusCode::CONFLICT,
            &field::conflict(&self.t.group, &self.t.plural, name),
        ))
    }

    /// Writes objects (one, or a list's items) in the negotiated representation.
    fn respond(&self, code: StatusCode, v: &Value, list: bool) -> Reply {
        match self.output {
            Output::Json => json_response(code, v),
            Output::Yaml => Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "application/yaml")
                .body(Body::from(yaml_serde::to_string(v).unwrap_or_default()))
                .expect("static response parts are valid"),
            Output::Table(version) => {
                let items = if list {
                    v["items"].as_array().cloned().unwrap_or_default()
                } else {
                    vec![v.clone()]
                };
                json_response(code, &self.table(&items, v, version))
            }
            Output::Metadata(version) => {
                let meta = |o: &Value| json!({"kind": "PartialObjectMetadata", "apiVersion": version.api_version(), "metadata": o["metadata"]});
                if list {
                    let items: Vec<Value> = v["items"].as_array().into_iter().flatten().map(meta).collect();
                    json_response(
                        code,
                        &json!({"kind": "PartialObjectMetadataList", "apiVersion": version.api_version(),
                                "metadata": v["metadata"], "items": items}),
                    )
                } else {
                    json_response(code, &meta(v))
                }
            }
        }
    }

    fn table(&self, items: &[Value], whole: &Value, version: negotiate::MetaVersion) -> Value {
        let printer = Printer::new(self.t, self.crd.as_ref());
        let rv = whole
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let include = self.query.get("includeObject").map_or("Metadata", String::as_str);
        table::table(&printer, items, rv, version, include)
    }

    fn selectors(&self) -> Result<(Selector, Selector), Box<Reply>> {
        let labels = Selector::labels(self.query.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| Box::new(bad_request(e)))?;
        let fields = Selector::fields(self.query.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| Box::new(bad_request(e)))?;
        Ok((labels, fields))
    }

    fn get(&self, name: &str) -> Reply {
        let store = self.shared.store.lock().expect("store lock");
        let schema = self.read_schema(&store);
        match store.get(&self.gr(), self.ns, name) {
            Some(v) => self.respond(
                StatusCode::OK,
                &admit::default_on_read(schema.as_ref(), as_served(self.t, v.clone())),
                false,
            ),
            None => not_found(self.t, name),
        }
    }

    fn list(&self) -> Reply {
        let (labels, fields) = match self.selectors() {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let store = self.shared.store.lock().expect("store lock");
        let schema = self.read_schema(&store);
        let ns = (!self.ns.is_empty()).then_some(self.ns);
        let items: Vec<Value> = store
            .list(&self.gr(), ns)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| admit::default_on_read(schema.as_ref(), as_served(self.t, o.clone())))
            .collect();
        self.respond(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", self.t.kind),
                "apiVersion": self.t.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": items,
            }),
            true,
        )
    }

    fn watch(&self) -> Reply {
        let (labels, fields) = match self.selectors() {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let gr = self.gr();
        let ns = (!self.ns.is_empty()).then(|| self.ns.to_owned());
        let rv = self.query.get("resourceVersion").cloned().unwrap_or_default();
        let bookmarks = truthy(self.query, "allowWatchBookmarks");
        let timeout = self
            .query
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(Duration::from_secs(1800), Duration::from_secs);
        let t = self.t.clone();
        // Each event's object in the negotiated shape (a one-row Table for `kubectl get -w`).
        let shape: Arc<dyn Fn(Value) -> Value + Send + Sync> = match self.output {
            Output::Table(version) => {
                let (tt, crd) = (self.t.clone(), self.crd.clone());
                let include = self
                    .query
                    .get("includeObject")
                    .cloned()
                    .unwrap_or_else(|| "Metadata".into());
                Arc::new(move |o: Value| {
                    let rv = o
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    table::table(&Printer::new(&tt, crd.as_ref()), &[o], &rv, version, &include)
                })
            }
            _ => Arc::new(|o| o),
        };
        let line = move |kind: &str, object: Value| {
            let object = if matches!(kind, "ERROR" | "BOOKMARK") {
                object
            } else {
                shape(object)
            };
            let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON values serialise");
            s.push(b'\n');
            Bytes::from(s)
        };
        let (initial, rx) = {
            let store = self.shared.store.lock().expect("store lock");
            if rv.is_empty() || rv == "0" {
                let initial: Vec<Bytes> = store
                    .list(&gr, ns.as_deref())
                    .filter(|o| labels.matches(o) && fields.matches(o))
                    .map(|o| line("ADDED", as_served(&t, o.clone())))
                    .collect();
                (initial, store.subscribe())
            } else {
                let Ok(from) = rv.parse::<u64>() else {
                    return bad_request(format!("resourceVersion {rv:?} is not valid"));
                };
                match store.watch_from(&gr, ns.as_deref(), from) {
                    Ok((past, rx)) => {
                        let initial = past
                            .iter()
                            .filter(|e| labels.matches(&e.object) && fields.matches(&e.object))
                            .map(|e| line(e.kind.as_str(), as_served(&t, Value::clone(&e.object))))
                            .collect();
                        (initial, rx)
                    }
                    Err(Gone) => {
                        let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
                        let body = Body::from(line("ERROR", gone));
                        return Response::builder()
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(body)
                            .expect("static response parts are valid");
                    }
                }
            }
        };
        let shared = self.shared.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let live = futures::stream::unfold(rx, move |mut rx| {
            let (gr, ns, labels, fields, t, shared, line) = (
                gr.clone(),
                ns.clone(),
                labels.clone(),
                fields.clone(),
                t.clone(),
                shared.clone(),
                line.clone(),
            );
            async move {
                loop {
                    let idle = tokio::time::Instant::now() + Duration::from_secs(1);
                    let wake = idle.min(deadline);
                    match tokio::time::timeout_at(wake, rx.recv()).await {
                        Ok(Ok(e)) => {
                            if e.gr != gr || ns.as_ref().is_some_and(|n| n != &e.namespace) {
                                continue;
                            }
                            if !(labels.matches(&e.object) && fields.matches(&e.object)) {
                                continue;
                            }
                            let kind = e.kind.as_str();
                            return Some((
                                Ok::<_, std::io::Error>(line(kind, as_served(&t, Value::clone(&e.object)))),
                                rx,
                            ));
                        }
                        // Lagged or closed: end the watch; the client resumes from its last resourceVersion.
                        Ok(Err(_)) => return None,
                        Err(_) if tokio::time::Instant::now() >= deadline => return None,
                        Err(_) if bookmarks => {
                            let rv = shared.store.lock().expect("store lock").resource_version();
                            let obj = json!({"kind": t.kind, "apiVersion": t.api_version(),
                                             "metadata": {"resourceVersion": rv.to_string()}});
                            return Some((Ok(line("BOOKMARK", obj)), rx));
                        }
                        Err(_) => continue,
                    }
                }
            }
        });
        let first = futures::stream::iter(initial.into_iter().map(Ok));
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures::StreamExt::chain(first, live)))
            .expect("static response parts are valid")
    }

    /// Validates and completes an object about to be written; stores it unless dry-run
    /// or a no-op. `created` tells the status code.
    fn commit(
        &self,
        store: &mut Store,
        live: Option<&Value>,
        mut obj: Value,
        verb: Verb,
    ) -> Result<(Value, bool), Box<Reply>> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        obj = as_served(self.t, obj);
        if self.t.namespaced {
            obj["metadata"]["namespace"] = Value::String(self.ns.to_owned());
            let ns_gr = GroupResource::new("", "namespaces");
            if live.is_none() && store.get(&ns_gr, "", self.ns).is_none() {
                return Err(Box::new(status(
                    404,
                    "NotFound",
                    format!("namespaces \"{}\" not found", self.ns),
                    Some(json!({"name": self.ns, "kind": "namespaces"})),
                )));
            }
            if live.is_none() && lifecycle::namespace_terminating(store, self.ns) {
                let body = lifecycle::terminating_refusal(&self.t.group, &self.t.plural, &name, self.ns);
                return Err(Box::new(json_response(StatusCode::FORBIDDEN, &body)));
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        match self.t.kind.as_str() {
            "Secret" => {
                if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                    let b64 = base64::engine::general_purpose::STANDARD;
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or_default();
                        obj["data"][k] = Value::String(b64.encode(s));
                    }
                }
            }
            "Namespace" => {
                if obj.pointer("/status/phase").is_none() {
                    obj["status"]["phase"] = json!("Active");
                }
                if obj.pointer("/spec/finalizers").is_none() {
                    obj["spec"]["finalizers"] = json!(["kubernetes"]);
                }
            }
            "CustomResourceDefinition" => {
                let want = format!(
                    "{}.{}",
                    obj.pointer("/spec/names/plural")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default()
                );
                if name != want {
                    return Err(Box::new(invalid(
                        self.t,
                        &name,
                        &[field::FieldError::invalid(
                            "metadata.name",
                            json!(name),
                            "must be spec.names.plural+\".\"+spec.group",
                        )],
                    )));
                }
            }
            _ => {}
        }
        let duplicates = self.duplicates.borrow().clone();
        let write = admit::Write {
            t: self.t,
            verb,
            validation: self.validation,
            duplicates: &duplicates,
            builtin: self.builtin(),
        };
        match admit::admit(store, &write, live, &mut obj) {
            Ok(w) => self.warnings.borrow_mut().extend(w),
            Err((code, body)) => {
                let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Err(Box::new(json_response(code, &body)));
            }
        }
        let generation = match live {
            None => 1,
            Some(l) => {
                let g = l.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                if spec_part(l) == spec_part(&obj) { g } else { g + 1 }
            }
        };
        obj["metadata"]["generation"] = json!(generation);
        if let Some(l) = live {
            for k in ["uid", "creationTimestamp", "resourceVersion"] {
                obj["metadata"][k] = l["metadata"][k].clone();
            }
            if ssa::comparable(l) == ssa::comparable(&obj) {
                return Ok((as_served(self.t, l.clone()), false));
            }
        }
        if self.dry_run {
            return Ok((obj, live.is_none()));
        }
        let stored = store.put(&self.gr(), obj).clone();
        // The last finalizer of an object being deleted is gone: it goes now.
        let stored = lifecycle::finish_if_done(store, &self.gr(), &stored).unwrap_or(stored);
        Ok((stored, live.is_none()))
    }

    fn reply(&self, result: Result<(Value, bool), Box<Reply>>) -> Reply {
        match result {
            Ok((v, created)) => self.respond(if created { StatusCode::CREATED } else { StatusCode::OK }, &v, false),
            Err(r) => *r,
        }
    }

    fn create(&self, content_type: &str, body: &Bytes) -> Reply {
        let mut obj = match self.decode_body(content_type, body) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        generate_name(&mut obj);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let mut store = self.shared.store.lock().expect("store lock");
        if store.get(&self.gr(), self.ns, &name).is_some() {
            return status(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource_label(self.t)),
                Some(json!({"name": name, "group": self.t.group, "kind": self.t.plural})),
            );
        }
        let mut obj = ssa::scope(
            &obj,
            Part::Main {
                status_subresource: self.t.status_subresource,
            },
        );
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        let r = self.commit(&mut store, None, obj, Verb::Write);
        self.reply(r)
    }

    fn replace(&self, name: &str, part: Part, content_type: &str, body: &Bytes) -> Reply {
        let obj = match self.decode_body(content_type, body) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let mut store = self.shared.store.lock().expect("store lock");
        let Some(live) = store.get(&self.gr(), self.ns, name).cloned() else {
            return not_found(self.t, name);
        };
        if stale(&obj, &live) {
            return *self.conflict(name);
        }
        let mut new = match part {
            Part::Status => {
                let mut n = live.clone();
                n["status"] = obj["status"].clone();
                n
            }
            Part::Main { status_subresource } => {
                let mut n = ssa::scope(&obj, part);
                if status_subresource {
                    n["status"] = live["status"].clone();
                }
                n["metadata"]["managedFields"] = live["metadata"]["managedFields"].clone();
                n
            }
        };
        new["metadata"]["name"] = Value::String(name.to_owned());
        let r = self.commit(&mut store, Some(&live), new, Verb::Write);
        self.reply(r)
    }

    fn patch(&self, name: &str, part: Part, content_type: &str, body: &Bytes) -> Reply {
        let patch_type = match negotiate::patch_type(content_type, self.custom) {
            Ok(p) => p,
            Err(m) => return status(415, "UnsupportedMediaType", m, None),
        };
        let patch = match self.parse_body(body) {
            Ok(v) => v,
            Err(e) => return bad_request(e),
        };
        let mut store = self.shared.store.lock().expect("store lock");
        let live = store.get(&self.gr(), self.ns, name).cloned();
        // A resourceVersion in a patch is a precondition (k8s.io/apiserver handlers/patch.go).
        if let Some(l) = &live
            && stale(&patch, l)
        {
            return *self.conflict(name);
        }
        let verb = if patch_type == PatchType::Apply {
            Verb::Apply
        } else {
            Verb::Write
        };
        let new = if verb == Verb::Apply {
            let Some(manager) = self.query.get("fieldManager").filter(|m| !m.is_empty()) else {
                return bad_request("PATCH with application/apply-patch+yaml requires a fieldManager".into());
            };
            if patch["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return bad_request(format!("the name in the body does not match the URL name {name:?}"));
            }
            if patch["kind"].as_str() != Some(self.t.kind.as_str())
                || patch["apiVersion"] != json!(self.t.api_version())
            {
                return bad_request(format!(
                    "the body's apiVersion/kind do not match {} {}",
                    self.t.api_version(),
                    self.t.kind
                ));
            }
            if part == Part::Status && live.is_none() {
                return not_found(self.t, name);
            }
            let scoped = ssa::scope(&patch, part);
            match ssa::apply(
                live.as_ref(),
                &scoped,
                manager,
                truthy(self.query, "force"),
                part,
                &now_rfc3339(),
            ) {
                Ok(mut v) => {
                    v["metadata"]["name"] = Value::String(name.to_owned());
                    v
                }
                Err(conflicts) => {
                    return status(
                        409,
                        "Conflict",
                        format!(
                            "Apply failed with {} conflict(s): {}",
                            conflicts.len(),
                            conflicts.join("; ")
                        ),
                        None,
                    );
                }
            }
        } else {
            let Some(live) = live.as_ref() else {
                return not_found(self.t, name);
            };
            match self.patched(live, &patch, patch_type, part) {
                Ok(v) => v,
                Err(r) => return *r,
            }
        };
        let r = self.commit(&mut store, live.as_ref(), new, verb);
        self.reply(r)
    }

    /// `live` after a JSON, merge or strategic merge patch, keeping what the
    /// addressed part may not change (status or everything but status).
    fn patched(&self, live: &Value, patch: &Value, patch_type: PatchType, part: Part) -> Result<Value, Box<Reply>> {
        let mut v = as_served(self.t, live.clone());
        match patch_type {
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| Box::new(bad_request(format!("error decoding patch: {e}"))))?;
                // A patch that does not apply is 422 (apiserver handlers/patch.go, applyJSPatch).
                json_patch::patch(&mut v, &ops).map_err(|e| Box::new(status(422, "Invalid", e.to_string(), None)))?;
            }
            PatchType::Merge => ssa::merge_patch(&mut v, patch),
            PatchType::Strategic => {
                let schema = openapi::builtin_schema(&self.t.group, &self.t.kind);
                smp::apply(&mut v, patch, schema, openapi::builtin_defs()).map_err(|e| Box::new(bad_request(e)))?;
            }
            PatchType::Apply => unreachable!("server-side apply is handled by the caller"),
        }
        // Only the addressed part changes: the main resource keeps the live
        // status (status subresource), /status keeps everything but status.
        Ok(match part {
            Part::Status => {
                let mut n = live.clone();
                n["status"] = v["status"].clone();
                n
            }
            Part::Main { status_subresource } => {
                if status_subresource {
                    v["status"] = live["status"].clone();
                }
                for k in ["name", "namespace", "uid", "managedFields"] {
                    match live["metadata"].get(k) {
                        Some(x) => v["metadata"][k] = x.clone(),
                        None => {
                            if let Some(m) = v["metadata"].as_object_mut() {
                                m.remove(k);
                            }
                        }
                    }
                }
                v
            }
        })
    }

    fn delete(&self, name: &str) -> Reply {
        let mut store = self.shared.store.lock().expect("store lock");
        let gr = self.gr();
        let Some(live) = store.get(&gr, self.ns, name).cloned() else {
            return not_found(self.t, name);
        };
        if self.dry_run {
            return json_response(StatusCode::OK, &live);
        }
        cascade(&mut store, &gr, &live);
        let answered = lifecycle::delete(&mut store, &gr, live);
        json_response(StatusCode::OK, &as_served(self.t, answered))
    }

    fn delete_collection(&self) -> Reply {
        let (labels, fields) = match self.selectors() {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let mut store = self.shared.store.lock().expect("store lock");
        let gr = self.gr();
        let ns = (!self.ns.is_empty()).then_some(self.ns);
        let doomed: Vec<Value> = store
            .list(&gr, ns)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .cloned()
            .collect();
        let mut items = vec![];
        for o in doomed {
            if self.dry_run {
                items.push(o);
                continue;
            }
            cascade(&mut store, &gr, &o);
            items.push(as_served(self.t, lifecycle::delete(&mut store, &gr, o)));
        }
        json_response(
            StatusCode::OK,
            &json!({"kind": format!("{}List", self.t.kind), "apiVersion": self.t.api_version(),
                    "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": items}),
        )
    }
}

/// Whether a body's `metadata.resourceVersion`, when given, differs from the live object's.
fn stale(body: &Value, live: &Value) -> bool {
    body.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| Some(rv) != live.pointer("/metadata/resourceVersion").and_then(Value::as_str))
}

/// `metadata.generateName` without a name: the prefix plus five random characters
/// (k8s.io/apiserver/pkg/storage/names `SimpleNameGenerator`).
fn generate_name(obj: &mut Value) {
    let has_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if let (false, Some(prefix)) = (
        has_name,
        obj.pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(str::to_owned),
    ) {
        obj["metadata"]["name"] = Value::String(format!("{prefix}{}", name_suffix()));
    }
}

/// Five random characters from k8s.io/apiserver/pkg/storage/names' alphabet (also what a
/// controller's `generateName` pods end in).
pub(super) fn name_suffix() -> String {
    use rand::Rng;
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHANUMS[rng.random_range(0..ALPHANUMS.len())] as char)
        .collect()
}

/// Deleting a CRD deletes its objects (a namespace's content goes through [`lifecycle`]).
fn cascade(store: &mut Store, gr: &GroupResource, obj: &Value) {
    let victims: Vec<(GroupResource, String, String)> =
        if *gr == GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions") {
            let crd_gr = GroupResource::new(
                obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default(),
                obj.pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            store
                .list(&crd_gr, None)
                .map(|o| {
                    (
                        crd_gr.clone(),
                        o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                        o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        } else {
            vec![]
        };
    for (g, ns, n) in victims {
        store.remove(&g, &ns, &n);
    }
}

//! A Redfish front for the emulator that adds what sushy-tools lacks but
//! real BMCs do: a SessionService (`X-Auth-Token`, logout by DELETE), ETags
//! on ComputerSystems with `If-Match` required on PATCH (412 when stale,
//! 428 when missing), InsertMedia answered `202 Accepted` with a task
//! monitor, a `SerialNumber` on each system ([`serial_of`]), and virtual
//! media reachable only through the manager (the system's link is removed,
//! as some vendors do). Everything else is forwarded to a running [`Emulator`] over
//! HTTP with its basic-auth credentials. Loopback only; test support.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Digest;

use crate::sushy::Emulator;

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// Counters a test can assert on.
#[derive(Default)]
pub struct FrontStats {
    /// Sessions created.
    pub logins: AtomicUsize,
    /// Sessions deleted.
    pub logouts: AtomicUsize,
    /// PATCHes whose `If-Match` matched the current ETag.
    pub if_match_ok: AtomicUsize,
    /// PATCHes refused for a stale or missing `If-Match`.
    pub if_match_refused: AtomicUsize,
    /// Task monitors polled while still running.
    pub task_polls: AtomicUsize,
}

enum TaskState {
    Running,
    Done { status: StatusCode, body: Value },
}

struct Front {
    backend: String,
    backend_auth: String,
    http: Client<HttpConnector, Body>,
    sessions: Mutex<HashMap<String, String>>,
    tasks: Mutex<HashMap<usize, TaskState>>,
    next: AtomicUsize,
    stats: Arc<FrontStats>,
}

/// A running front, stopped on drop.
pub struct RedfishFront {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub stats: Arc<FrontStats>,
    front: Arc<Front>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl RedfishFront {
    /// Starts a front for `backend` (which must use basic auth, over HTTP).
    pub fn start(backend: &Emulator) -> anyhow::Result<Self> {
        let (user, password) = backend
            .config
            .auth
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the front needs an emulator with auth"))?;
        anyhow::ensure!(backend.tls.is_none(), "the front forwards over plain HTTP");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let stats = Arc::new(FrontStats::default());
        let front = Arc::new(Front {
            backend: backend.url.clone(),
            backend_auth: basic(&user, &password),
            http: Client::builder(TokioExecutor::new()).build_http(),
            sessions: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(1),
            stats: stats.clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let f = front.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(handle).with_state(f);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            url,
            stats,
            front,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Sessions currently open.
    pub fn open_sessions(&self) -> usize {
        self.front.sessions.lock().expect("lock").len()
    }
}

impl Drop for RedfishFront {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"code": "Base.1.0.GeneralError", "message": message}}),
    )
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(body))[..16])
}

/// The serial number the front gives the system with this id.
pub fn serial_of(id: &str) -> String {
    format!("SN-{}", id.chars().take(8).collect::<String>().to_uppercase())
}

/// A system as the front shows it: with a serial, without VirtualMedia.
fn system_view(bytes: &[u8]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return Bytes::copy_from_slice(bytes);
    };
    let id = v["Id"].as_str().unwrap_or_default().to_owned();
    if let Some(o) = v.as_object_mut() {
        o.insert("SerialNumber".into(), Value::String(serial_of(&id)));
        o.remove("VirtualMedia");
    }
    Bytes::from(v.to_string())
}

fn is_system(path: &str) -> bool {
    path.strip_prefix("/redfish/v1/Systems/")
        .is_some_and(|rest| !rest.trim_end_matches('/').contains('/') && !rest.is_empty())
}

impl Front {
    /// Forwards one request to the emulator with its credentials.
    async fn forward(&self, method: Method, path: &str, body: Bytes) -> (StatusCode, HeaderMap, Bytes) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.backend))
            .header(header::AUTHORIZATION, &self.backend_auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        match self.http.request(req).await {
            Ok(r) => {
                let (parts, body) = r.into_parts();
                let bytes = axum::body::to_bytes(Body::new(body), 64 << 20)
                    .await
                    .unwrap_or_default();
                (parts.status, parts.headers, bytes)
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                HeaderMap::new(),
                Bytes::from(format!("{{\"error\":{{\"message\":\"backend: {e}\"}}}}")),
            ),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
            return self.sessions.lock().expect("lock").contains_key(token);
        }
        // Basic auth is passed to the emulator, which checks it.
        headers.contains_key(header::AUTHORIZATION)
    }
}

async fn handle(State(f): State<Arc<Front>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let root = path.trim_end_matches('/') == "/redfish/v1";

    if root && method == Method::GET {
        let (status, _, bytes) = f.forward(Method::GET, "/redfish/v1/", Bytes::new()).await;
        let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        v["SessionService"] = json!({"@odata.id": "/redfish/v1/SessionService"});
        v["Links"] = json!({"Sessions": {"@odata.id": SESSIONS}});
        return json_response(status, v);
    }
    if method == Method::POST && path.trim_end_matches('/') == SESSIONS {
        let creds: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (user, password) = (
            creds["UserName"].as_str().unwrap_or_default(),
            creds["Password"].as_str().unwrap_or_default(),
        );
        // The emulator decides whether the credentials are right.
        let check = axum::http::Request::builder()
            .uri(format!("{}/redfish/v1/Systems", f.backend))
            .header(header::AUTHORIZATION, basic(user, password))
            .body(Body::empty())
            .expect("request");
        let ok = matches!(f.http.request(check).await, Ok(r) if r.status().is_success());
        if !ok {
            return error(StatusCode::UNAUTHORIZED, "invalid credentials");
        }
        let n = f.next.fetch_add(1, Ordering::SeqCst);
        let token = hex::encode(sha2::Sha256::digest(format!("{n}:{:?}", std::time::SystemTime::now())));
        f.sessions.lock().expect("lock").insert(token.clone(), format!("{n}"));
        f.stats.logins.fetch_add(1, Ordering::SeqCst);
        let location = format!("{SESSIONS}/{n}");
        let mut r = json_response(
            StatusCode::CREATED,
            json!({"@odata.id": location, "Id": n.to_string(), "UserName": user}),
        );
        r.headers_mut()
            .insert("x-auth-token", HeaderValue::from_str(&token).expect("hex"));
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(&location).expect("path"));
        return r;
    }
    if !f.authorized(&parts.headers) {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    if method == Method::DELETE
        && let Some(id) = path.strip_prefix(&format!("{SESSIONS}/"))
    {
        let mut sessions = f.sessions.lock().expect("lock");
        let before = sessions.len();
        sessions.retain(|_, v| v != id);
        if sessions.len() == before {
            return error(StatusCode::NOT_FOUND, "no such session");
        }
        f.stats.logouts.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NO_CONTENT.into_response();
    }
    if let Some(n) = path.strip_prefix("/taskmon/").and_then(|n| n.parse::<usize>().ok()) {
        let tasks = f.tasks.lock().expect("lock");
        return match tasks.get(&n) {
            None => error(StatusCode::NOT_FOUND, "no such task"),
            Some(TaskState::Running) => {
                f.stats.task_polls.fetch_add(1, Ordering::SeqCst);
                let mut r = json_response(
                    StatusCode::ACCEPTED,
                    json!({"Id": n.to_string(), "TaskState": "Running"}),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Some(TaskState::Done { status, body }) => {
                let (state, messages) = if status.is_success() {
                    ("Completed", json!([]))
                } else {
                    let msg = body["error"]["message"].as_str().unwrap_or("failed").to_owned();
                    ("Exception", json!([{"Message": msg}]))
                };
                json_response(
                    StatusCode::OK,
                    json!({"Id": n.to_string(), "TaskState": state, "Messages": messages}),
                )
            }
        };
    }
    if method == Method::POST && path.ends_with("/Actions/VirtualMedia.InsertMedia") {
        let n = f.next.fetch_add(1, Ordering::SeqCst);
        f.tasks.lock().expect("lock").insert(n, TaskState::Running);
        let f2 = f.clone();
        tokio::spawn(async move {
            // Real BMCs take a while to fetch the image.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let (status, _, bytes) = f2.forward(Method::POST, &path, body).await;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            f2.tasks
                .lock()
                .expect("lock")
                .insert(n, TaskState::Done { status, body });
        });
        let mut r = StatusCode::ACCEPTED.into_response();
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&format!("/taskmon/{n}")).expect("path"),
        );
        return r;
    }
    if method == Method::PATCH && is_system(&path) {
        let (_, _, current) = f.forward(Method::GET, &path, Bytes::new()).await;
        match parts.headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
            None => {
                f.stats.if_match_refused.fetch_add(1, Ordering::SeqCst);
                return error(StatusCode::PRECONDITION_REQUIRED, "If-Match is required");
            }
            Some(tag) if tag != etag_of(&system_view(&current)) => {
                f.stats.if_match_refused.fetch_add(1, Ordering::SeqCst);
                return error(StatusCode::PRECONDITION_FAILED, "the ETag is stale");
            }
            Some(_) => {
                f.stats.if_match_ok.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let (status, headers, mut bytes) = f.forward(method.clone(), &path, body).await;
    if method == Method::GET && is_system(&path) && status.is_success() {
        bytes = system_view(&bytes);
    }
    let mut r = Response::builder().status(status);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        r = r.header(header::CONTENT_TYPE, ct);
    }
    if method == Method::GET && is_system(&path) && status.is_success() {
        r = r.header(header::ETAG, etag_of(&bytes));
    }
    r.body(Body::from(bytes)).expect("response")
}

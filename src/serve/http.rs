//! HTTP for the boot chain (axum): per-MAC iPXE scripts, the cluster's Talos
//! kernel and initramfs (verified artifacts, streamed from disk), and each
//! node's one-shot machine config. Requests are logged with the node's name,
//! never with a body or a token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::configs::{Configs, Take};
use super::ipxe;
use crate::inventory::Provision;

/// What the HTTP side serves.
pub struct HttpState {
    /// `http://address:port`.
    pub base: String,
    pub cluster: String,
    /// MAC in URL form (`52-54-00-..`) → node name.
    pub nodes: HashMap<String, String>,
    pub configs: Configs,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The virtual-media ISO, when the inventory pins one.
    pub iso: Option<PathBuf>,
    pub kernel_args: Vec<String>,
    pub log: super::Log,
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/ipxe/{mac}", get(script))
        .route("/boot/{cluster}/{file}", get(boot_file))
        .route("/config/{token}", get(config))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn script(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
) -> Response {
    let mac = mac.to_ascii_lowercase();
    let Some(node) = s.nodes.get(&mac) else {
        (s.log)(&format!("http: {peer}: no iPXE script for unknown MAC {mac}"));
        return text(StatusCode::NOT_FOUND, "not a node of this inventory\n".into());
    };
    if s.configs.is_served(node) {
        (s.log)(&format!(
            "http: {peer}: node {node} was provisioned already: script exits to the next boot device"
        ));
        return text(StatusCode::OK, ipxe::done_script(node));
    }
    let token = s.configs.token(node).expect("every node with a MAC has a token");
    let url = format!("{}/config/{token}", s.base);
    (s.log)(&format!("http: {peer}: iPXE script for node {node}"));
    text(
        StatusCode::OK,
        ipxe::boot_script(node, &s.base, &s.cluster, &url, &s.kernel_args),
    )
}

/// A pinned boot file, with `Range` and `HEAD` (tower-http's `ServeFile`):
/// BMCs read virtual-media ISOs in ranges as the machine boots.
async fn boot_file(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((cluster, file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let path = match (cluster == s.cluster, file.as_str(), &s.iso) {
        (true, "vmlinuz", _) => &s.kernel,
        (true, "initramfs.xz", _) => &s.initramfs,
        (true, Provision::ISO_FILE, Some(iso)) => iso,
        _ => return text(StatusCode::NOT_FOUND, "no such boot file\n".into()),
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    (s.log)(&format!(
        "http: {peer}: {} {file}{range} for cluster {cluster}",
        req.method()
    ));
    match ServeFile::new(path).oneshot(req).await {
        Ok(res) => res.map(Body::new),
        Err(never) => match never {},
    }
}

async fn config(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    match s.configs.take(&token) {
        Ok(Take::Config { node, body }) => {
            (s.log)(&format!(
                "http: {peer}: machine config for node {node} served (one-shot: refused from now on)"
            ));
            ([(header::CONTENT_TYPE, "application/yaml")], body.to_owned()).into_response()
        }
        Ok(Take::Served(node)) => {
            (s.log)(&format!(
                "http: {peer}: machine config for node {node} refused: served already (re-provision with --reprovision {node})"
            ));
            text(StatusCode::GONE, "this config URL was used already\n".into())
        }
        Ok(Take::Unknown) => {
            (s.log)(&format!("http: {peer}: refused a config URL that is no node's"));
            text(StatusCode::NOT_FOUND, "no such config\n".into())
        }
        Err(e) => {
            (s.log)(&format!("http: {peer}: config not served: {e:#}"));
            text(StatusCode::INTERNAL_SERVER_ERROR, "config not served\n".into())
        }
    }
}

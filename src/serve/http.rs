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
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;

use super::configs::{Configs, Take};
use super::ipxe;

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

async fn boot_file(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((cluster, file)): Path<(String, String)>,
) -> Response {
    let path = match (cluster == s.cluster, file.as_str()) {
        (true, "vmlinuz") => &s.kernel,
        (true, "initramfs.xz") => &s.initramfs,
        _ => return text(StatusCode::NOT_FOUND, "no such boot file\n".into()),
    };
    let f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            (s.log)(&format!("http: {peer}: {file}: {}: {e}", path.display()));
            return text(StatusCode::INTERNAL_SERVER_ERROR, "boot file unreadable\n".into());
        }
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    (s.log)(&format!("http: {peer}: {file} for cluster {cluster} ({len} bytes)"));
    let stream = futures::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
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

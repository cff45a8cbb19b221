//! The HTTP side of Redfish: TLS set-up (system roots, a pinned CA or a
//! pinned certificate fingerprint), session login with `X-Auth-Token` and
//! logout, basic auth as the fallback, and status codes mapped to [`ErrorKind`]s
//! that name the step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use sha2::Digest;
use tracing::debug;

use super::{Error, ErrorKind, Result, System};
use crate::inventory::{Bmc, Node};
use crate::secret::Secret;

/// Timeouts of one BMC client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Time to establish a TCP + TLS connection.
    pub connect_timeout: Duration,
    /// Time for one request, answer included (some BMCs are slow).
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

enum Auth {
    /// Not logged in yet: requests use basic auth.
    Basic,
    /// A Redfish session: `X-Auth-Token`, deleted at logout.
    Session { token: Secret, location: Option<String> },
}

/// A Redfish client for one node's BMC.
pub struct Client {
    http: reqwest::Client,
    origin: String,
    /// The BMC URL for messages (credentials, if any, removed).
    shown_url: String,
    bmc: Bmc,
    node: String,
    password: Secret,
    auth: Mutex<Auth>,
}

/// One answer from the BMC.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
}

impl Response {
    /// The resource's ETag (header, else `@odata.etag`).
    pub fn etag(&self) -> Option<String> {
        self.headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.body.get("@odata.etag").and_then(Value::as_str).map(str::to_owned))
    }

    /// The `Location` header (task monitors, sessions).
    pub fn location(&self) -> Option<String> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl Client {
    /// A client for `node`'s `[bmc]`, with its password resolved.
    pub fn for_node(node: &Node, opts: ClientOptions) -> Result<Self> {
        let Some(bmc) = &node.bmc else {
            return Err(Error {
                node: node.name.clone(),
                bmc: "(none)".into(),
                kind: ErrorKind::Config("the node has no [bmc] in the inventory".into()),
            });
        };
        let password = bmc.password.resolve().map_err(|e| Error {
            node: node.name.clone(),
            bmc: shown_url(&bmc.url),
            kind: ErrorKind::Config(format!("BMC password: {e}")),
        })?;
        Self::new(&node.name, bmc, password, opts)
    }

    /// A client for `bmc` on behalf of `node`.
    pub fn new(node: &str, bmc: &Bmc, password: Secret, opts: ClientOptions) -> Result<Self> {
        let config_err = |msg: String| Error {
            node: node.to_owned(),
            bmc: shown_url(&bmc.url),
            kind: ErrorKind::Config(msg),
        };
        let url = reqwest::Url::parse(&bmc.url).map_err(|e| config_err(format!("the BMC URL is not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(config_err(
                "the BMC URL must not carry credentials: use `user` and `password`".into(),
            ));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(config_err("the BMC URL must be http(s)://host[:port]".into()));
        }
        let origin = url.origin().ascii_serialization();
        let http = build_http(bmc, opts).map_err(config_err)?;
        Ok(Self {
            http,
            origin,
            shown_url: shown_url(&bmc.url),
            bmc: bmc.clone(),
            node: node.to_owned(),
            password,
            auth: Mutex::new(Auth::Basic),
        })
    }

    /// The node this client works for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The BMC URL as shown in messages.
    pub fn bmc_url(&self) -> &str {
        &self.shown_url
    }

    /// The BMC settings from the inventory.
    pub fn bmc(&self) -> &Bmc {
        &self.bmc
    }

    /// An error about this node and BMC.
    pub fn err(&self, kind: ErrorKind) -> Error {
        Error {
            node: self.node.clone(),
            bmc: self.shown_url.clone(),
            kind,
        }
    }

    /// The absolute URL of a Redfish path (`/redfish/v1/...`).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else if path.starts_with('/') {
            format!("{}{path}", self.origin)
        } else {
            format!("{}/{path}", self.origin)
        }
    }

    /// Logs in: a Redfish session when the service offers one, else basic
    /// auth on every request. Wrong credentials fail here when sessions are
    /// used, on the first request otherwise.
    pub async fn login(&self) -> Result<()> {
        let root = self.request(
            Method::GET,
            "/redfish/v1/",
            None,
            None,
            false,
            "reading the service root",
        );
        let root = match root.await {
            Ok(r) => r.body,
            // Some BMCs want credentials even for the root: stay on basic auth.
            Err(Error {
                kind: ErrorKind::Unauthorized { .. },
                ..
            }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sessions = root
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                root.get("SessionService")
                    .map(|_| "/redfish/v1/SessionService/Sessions".to_owned())
            });
        let Some(sessions) = sessions else {
            debug!(node = %self.node, bmc = %self.shown_url, "no SessionService: using basic auth");
            return Ok(());
        };
        let body = serde_json::json!({"UserName": self.bmc.user, "Password": self.password.expose()});
        let answer = self
            .http
            .post(self.url(&sessions))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_err("creating a session", &e))?;
        let status = answer.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.err(ErrorKind::Unauthorized {
                user: self.bmc.user.clone(),
                step: "creating a session".into(),
                status: status.as_u16(),
            }));
        }
        let token = answer
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(|t| Secret::new(t.to_owned()));
        let location = answer
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match (status.is_success(), token) {
            (true, Some(token)) => {
                debug!(node = %self.node, bmc = %self.shown_url, "Redfish session created");
                *self.auth.lock().expect("auth lock") = Auth::Session { token, location };
            }
            _ => {
                debug!(node = %self.node, bmc = %self.shown_url, %status, "session creation failed: using basic auth");
            }
        }
        Ok(())
    }

    /// Deletes the session, if any. Failures are only logged: the BMC expires
    /// sessions on its own.
    pub async fn logout(&self) {
        let auth = std::mem::replace(&mut *self.auth.lock().expect("auth lock"), Auth::Basic);
        if let Auth::Session {
            token,
            location: Some(location),
        } = auth
        {
            let r = self
                .http
                .delete(self.url(&location))
                .header("x-auth-token", token.expose())
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => debug!(node = %self.node, "Redfish session deleted"),
                Ok(r) => debug!(node = %self.node, status = %r.status(), "session logout refused"),
                Err(e) => debug!(node = %self.node, error = %e, "session logout failed"),
            }
        }
    }

    /// True when a Redfish session (not basic auth) is in use.
    pub fn has_session(&self) -> bool {
        matches!(*self.auth.lock().expect("auth lock"), Auth::Session { .. })
    }

    /// GET a resource.
    pub async fn get(&self, path: &str, step: &str) -> Result<Response> {
        self.request(Method::GET, path, None, None, true, step).await
    }

    /// PATCH a resource, with `If-Match` when an ETag is known.
    pub async fn patch(&self, path: &str, body: &Value, etag: Option<&str>, step: &str) -> Result<Response> {
        self.request(Method::PATCH, path, Some(body), etag, true, step).await
    }

    /// POST an action or a new member.
    pub async fn post(&self, path: &str, body: &Value, step: &str) -> Result<Response> {
        self.request(Method::POST, path, Some(body), None, true, step).await
    }

    /// One request. Non-success statuses become errors naming `step`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        auth: bool,
        step: &str,
    ) -> Result<Response> {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .header(header::ACCEPT, "application/json");
        if auth {
            req = match &*self.auth.lock().expect("auth lock") {
                Auth::Basic => req.basic_auth(&self.bmc.user, Some(self.password.expose())),
                Auth::Session { token, .. } => req.header("x-auth-token", token.expose()),
            };
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(tag) = if_match {
            req = req.header(header::IF_MATCH, tag);
        }
        let answer = req.send().await.map_err(|e| self.transport_err(step, &e))?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let text = answer.text().await.map_err(|e| self.transport_err(step, &e))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.err(ErrorKind::Unauthorized {
                user: self.bmc.user.clone(),
                step: step.to_owned(),
                status: status.as_u16(),
            }));
        }
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(self.err(ErrorKind::Http {
                request: format!("{method} {path}"),
                status: status.as_u16(),
                message: format!("{step}: {}", error_message(&json, &text)),
            }));
        }
        Ok(Response {
            status,
            headers,
            body: json,
        })
    }

    fn transport_err(&self, step: &str, e: &reqwest::Error) -> Error {
        let mut detail = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            String::new()
        };
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = source {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&s.to_string());
            source = s.source();
        }
        if detail.is_empty() {
            detail = e.to_string();
        }
        self.err(ErrorKind::Unreachable {
            step: step.to_owned(),
            detail,
        })
    }

    /// Refuses when the system is not the machine the inventory names
    /// (`uuid` / `serial` of `[bmc]`, when given). Call before anything that
    /// changes power or boot.
    pub fn check_identity(&self, sys: &System) -> Result<()> {
        if let Some(want) = &self.bmc.uuid {
            match &sys.uuid {
                Some(got) if got.eq_ignore_ascii_case(want) => {}
                Some(got) => {
                    return Err(self.err(ErrorKind::Identity(format!(
                        "system {} has UUID {got}, the inventory expects {want}",
                        sys.id
                    ))));
                }
                None => {
                    return Err(self.err(ErrorKind::Identity(format!(
                        "system {} reports no UUID, the inventory expects {want}",
                        sys.id
                    ))));
                }
            }
        }
        if let Some(want) = &self.bmc.serial {
            match &sys.serial {
                Some(got) if got.trim() == want.trim() => {}
                Some(got) => {
                    return Err(self.err(ErrorKind::Identity(format!(
                        "system {} has serial number {got}, the inventory expects {want}",
                        sys.id
                    ))));
                }
                None => {
                    return Err(self.err(ErrorKind::Identity(format!(
                        "system {} reports no serial number, the inventory expects {want}",
                        sys.id
                    ))));
                }
            }
        }
        Ok(())
    }
}

/// `url` without any user or password in it, for messages.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparsable BMC URL)".to_owned(),
    }
}

/// The message of a Redfish error body, else the start of the text.
fn error_message(json: &Value, text: &str) -> String {
    let msg = json
        .pointer("/error/@Message.ExtendedInfo/0/Message")
        .or_else(|| json.pointer("/error/message"))
        .and_then(Value::as_str);
    match msg {
        Some(m) => m.to_owned(),
        None => {
            let t = text.trim();
            if t.is_empty() {
                "(empty answer)".to_owned()
            } else {
                t.chars().take(300).collect()
            }
        }
    }
}

/// The reqwest client: TLS per the inventory, no proxies (BMCs live on
/// management networks), no redirects to other hosts.
fn build_http(bmc: &Bmc, opts: ClientOptions) -> std::result::Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bootstrap/", env!("CARGO_PKG_VERSION")));
    if let Some(fp) = &bmc.fingerprint {
        b = b.tls_backend_preconfigured(pinned_tls_config(fp)?);
    } else if let Some(ca) = &bmc.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read the BMC CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the BMC CA file {} is not PEM: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("the BMC CA file {} holds no certificate", ca.display()));
        }
        b = b.tls_certs_only(certs);
    } else if !bmc.verify_tls {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A rustls config that accepts exactly the server certificate whose SHA-256
/// (of the DER) is `fingerprint` (lowercase hex). Written by hand because no
/// maintained crate offers fingerprint pinning for rustls; the handshake
/// signature is still verified, so the server must hold the pinned key.
fn pinned_tls_config(fingerprint: &str) -> std::result::Result<rustls::ClientConfig, String> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = PinnedCert {
        sha256: fingerprint.to_ascii_lowercase(),
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// SHA-256 of a DER certificate, lowercase hex (the inventory's fingerprint form).
pub fn cert_fingerprint(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

#[derive(Debug)]
struct PinnedCert {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = cert_fingerprint(end_entity);
        if got == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the BMC certificate's SHA-256 fingerprint {got} is not the pinned {}",
                self.sha256
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

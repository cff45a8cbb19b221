//! rustls client configurations for the two Talos connection modes, and the
//! connector that feeds them to tonic.
//!
//! tonic's `ClientTlsConfig` cannot take a custom certificate verifier, so the
//! channel is built with `Endpoint::connect_with_connector` and a connector that
//! does TCP + tokio-rustls (ALPN h2) itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::credentials::TalosCredentials;
use super::error::TalosError;

/// Lower-case hex SHA-256 of a certificate's SubjectPublicKeyInfo (DER).
pub fn spki_sha256(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("cannot parse server certificate: {e}"))?;
    Ok(hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw)))
}

/// Accepts a maintenance-mode node's throwaway certificate, records its SPKI
/// fingerprint, and (when pinned) refuses any other key. Handshake signatures
/// are still verified, so the peer proves it holds the recorded key.
#[derive(Debug)]
struct FingerprintVerifier {
    seen: Arc<Mutex<Option<String>>>,
    pinned: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = spki_sha256(end_entity).map_err(rustls::Error::General)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Trust on first use: once a key was seen, reconnections must present it again.
        if let Some(expected) = self.pinned.as_ref().or(seen.as_ref())
            && !expected.eq_ignore_ascii_case(&fingerprint)
        {
            return Err(rustls::Error::General(format!(
                "server key fingerprint {fingerprint} does not match the expected {expected}"
            )));
        }
        *seen = Some(fingerprint);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    crate::tls::install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Maintenance mode: no client certificate, any server certificate accepted
/// (or only the `pinned` SPKI fingerprint); the fingerprint seen is written to
/// the returned slot.
pub fn maintenance_tls_config(pinned: Option<String>) -> (ClientConfig, Arc<Mutex<Option<String>>>) {
    let seen = Arc::new(Mutex::new(None));
    let verifier = FingerprintVerifier {
        seen: seen.clone(),
        pinned,
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    (config, seen)
}

/// Configured mode: mTLS with the talosconfig client certificate; the server
/// certificate must chain to the OS CA and name the node's address.
pub fn mtls_config(creds: &TalosCredentials) -> Result<ClientConfig, TalosError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| TalosError::Credentials(format!("{what}: {e}"));
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| bad("OS CA certificate is not valid PEM", &e))?;
        roots.add(ca).map_err(|e| bad("OS CA certificate is unusable", &e))?;
    }
    if roots.is_empty() {
        return Err(TalosError::Credentials(
            "no OS CA certificate in the talosconfig".into(),
        ));
    }
    let chain = CertificateDer::pem_slice_iter(creds.crt_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("client certificate is not valid PEM", &e))?;
    if chain.is_empty() {
        return Err(TalosError::Credentials(
            "no client certificate in the talosconfig".into(),
        ));
    }
    let key = parse_private_key(creds.key_pem.expose())?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("client certificate and key do not match or are unsupported", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Parses a PEM private key; Talos writes Ed25519 keys under the non-standard
/// label `ED25519 PRIVATE KEY` with a PKCS#8 body, which is relabelled here.
pub(crate) fn parse_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TalosError> {
    let pem = pem
        .replace("-----BEGIN ED25519 PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----")
        .replace("-----END ED25519 PRIVATE KEY-----", "-----END PRIVATE KEY-----");
    // The error text of a key parser could quote key material: keep it out.
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| TalosError::Credentials("client key is not a PEM private key (PKCS#8, SEC1 or PKCS#1)".into()))
}

/// A tower service dialling `addr` over TCP + TLS, for `connect_with_connector`.
/// The URI tonic passes is ignored: the node is always dialled directly.
pub(crate) fn connector(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    addr: SocketAddr,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<Prefetched<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_uri: tonic::transport::Uri| {
        let config = config.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            // With TLS 1.3 the server judges our certificate only after our
            // handshake completed; its verdict (an alert) would surface later
            // as a bare "operation was canceled". An HTTP/2 server speaks
            // first (SETTINGS), so read its first bytes here: a refusal then
            // fails the connection with the TLS alert.
            let mut first = vec![0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(&mut tls, &mut first).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the node closed the connection after the TLS handshake",
                ));
            }
            first.truncate(n);
            Ok(hyper_util::rt::TokioIo::new(Prefetched {
                prefix: first,
                pos: 0,
                inner: tls,
            }))
        }
    })
}

/// A stream whose first bytes were already read: replays them, then reads on.
pub(crate) struct Prefetched<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefetched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefetched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

//! Certificates and TLS server configurations of simulated nodes: the
//! maintenance-mode throwaway certificate, the apid-style certificate signed
//! by the OS CA, client-certificate checks and the admin kubeconfig.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PKCS_ED25519, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

/// Loads a PEM private key into rcgen, accepting the labels Talos bundles use:
/// `ED25519 PRIVATE KEY` (PKCS#8 body), `PRIVATE KEY`, and `EC PRIVATE KEY`
/// (SEC1, re-wrapped as PKCS#8 because rcgen on ring only reads PKCS#8).
pub fn load_key(pem_text: &str) -> Result<KeyPair, String> {
    let pem_text = pem_text.replace("ED25519 PRIVATE KEY-----", "PRIVATE KEY-----");
    if pem_text.contains("-----BEGIN EC PRIVATE KEY-----") {
        let body: String = pem_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let sec1 = STANDARD.decode(body).map_err(|_| "EC key is not base64".to_owned())?;
        let der = sec1_p256_to_pkcs8(&sec1);
        return KeyPair::try_from(der.as_slice()).map_err(|e| format!("unusable EC key: {e}"));
    }
    KeyPair::from_pem(&pem_text).map_err(|e| format!("unusable private key: {e}"))
}

/// Wraps a SEC1 `ECPrivateKey` for P-256 in a PKCS#8 `PrivateKeyInfo`. Hand
/// written: a fixed DER prefix plus length encoding, no crate needed for it.
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    fn len(n: usize) -> Vec<u8> {
        match n {
            0..=0x7f => vec![n as u8],
            0x80..=0xff => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }
    // version 0, AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07,
    ]);
    body.push(0x04);
    body.extend(len(sec1.len()));
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    out.extend(len(body.len()));
    out.extend(body);
    out
}

fn server_config(
    cert: CertificateDer<'static>,
    key: &KeyPair,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig, String> {
    bootstrap::tls::install_crypto_provider();
    let builder = ServerConfig::builder();
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = builder
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("server certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Maintenance mode: a throwaway self-signed Ed25519 certificate, no client
/// certificate requested.
pub fn maintenance_server_config(ip: IpAddr) -> Result<ServerConfig, String> {
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, "talos");
    params.subject_alt_names = vec![SanType::IpAddress(ip)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    server_config(cert.der().clone(), &key, None)
}

/// Configured mode: a server certificate signed by the OS CA (SANs: node
/// address, `machine.certSANs`, hostname), and mandatory client certificates
/// chaining to that CA with extended key usage exactly clientAuth.
pub fn configured_server_config(
    ip: IpAddr,
    hostname: &str,
    cert_sans: &[String],
    os_ca_crt: &str,
    os_ca_key: &str,
) -> Result<ServerConfig, String> {
    let ca_key = load_key(os_ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(os_ca_crt, ca_key).map_err(|e| format!("machine.ca: {e}"))?;
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, hostname);
    let mut sans = vec![SanType::IpAddress(ip)];
    for san in cert_sans.iter().map(String::as_str).chain([hostname]) {
        sans.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.try_into().map_err(|_| format!("bad certSAN {san:?}"))?),
        });
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;

    let mut roots = RootCertStore::empty();
    for ca in rustls::pki_types::pem::PemObject::pem_slice_iter(os_ca_crt.as_bytes()) {
        let ca: CertificateDer<'static> = ca.map_err(|e| format!("machine.ca.crt: {e}"))?;
        roots.add(ca).map_err(|e| format!("machine.ca.crt: {e}"))?;
    }
    let inner = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    server_config(cert.der().clone(), &key, Some(Arc::new(ClientAuthOnly(inner))))
}

/// WebPKI client verification plus Talos's rule that client certificates
/// carry extended key usage exactly `[clientAuth]`.
#[derive(Debug)]
struct ClientAuthOnly(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ClientAuthOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let eku = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| e.value.clone())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ))?;
        let only_client_auth = eku.client_auth
            && !(eku.any || eku.server_auth || eku.code_signing || eku.email_protection || eku.time_stamping)
            && !eku.ocsp_signing
            && eku.other.is_empty();
        if !only_client_auth {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The Talos roles (`os:*` Subject O values) of a verified client certificate.
pub fn roles(cert: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    cert.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter(|o| o.starts_with("os:"))
        .map(str::to_owned)
        .collect()
}

/// An admin kubeconfig for `cluster_name` at `server`, with a client
/// certificate (O=system:masters, ECDSA P-256) signed by the Kubernetes CA.
pub fn admin_kubeconfig(
    cluster_name: &str,
    server: &str,
    k8s_ca_crt: &str,
    k8s_ca_key: &str,
) -> Result<String, String> {
    let ca_key = load_key(k8s_ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(k8s_ca_crt, ca_key).map_err(|e| format!("cluster.ca: {e}"))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "admin");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let user = format!("admin@{cluster_name}");
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster_name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\ncontexts:\n- name: {user}\n  context:\n    cluster: {cluster_name}\n    namespace: default\n    user: {user}\ncurrent-context: {user}\n",
        ca = STANDARD.encode(k8s_ca_crt),
        crt = STANDARD.encode(cert.pem()),
        key = STANDARD.encode(key.serialize_pem()),
    ))
}

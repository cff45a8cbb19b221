//! Certificates for the simulator: a CA that verifies client certificates and
//! signs the server certificate, admin client certificates, and kubeconfigs.

use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The simulator's TLS material, all PEM.
#[derive(Clone)]
pub struct SimTls {
    /// CA that client certificates must chain to, and that signed the server certificate.
    pub ca_cert_pem: String,
    /// The CA key, when known: needed to issue client certificates (the admin kubeconfig).
    pub ca_key_pem: Option<String>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTls").finish_non_exhaustive()
    }
}

/// A client certificate and its key, PEM.
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl SimTls {
    /// Generates a CA and a server certificate valid for `sans` (DNS names or IP addresses).
    pub fn generate(sans: &[String]) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "kubernetes");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        Self::with_ca(&ca_cert.pem(), &ca_key.serialize_pem(), sans)
    }

    /// A server certificate for `sans` signed by an existing CA (PEM), e.g.
    /// the cluster CA from a Talos machine configuration, so kubeconfigs
    /// issued elsewhere under that CA are accepted.
    pub fn with_ca(ca_cert_pem: &str, ca_key_pem: &str, sans: &[String]) -> Result<Self> {
        // Talos bundles carry SEC1 `EC PRIVATE KEY`s, which rcgen does not parse itself.
        let ca_key =
            crate::talos_sim::pki::load_key(ca_key_pem).map_err(|e| anyhow::anyhow!("parsing the CA key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, &ca_key).context("parsing the CA certificate")?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_cert_pem: ca_cert_pem.to_owned(),
            ca_key_pem: Some(ca_key_pem.to_owned()),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        })
    }

    /// Issues a client certificate with `CN=cn` and `O=org`, signed by the CA.
    pub fn issue_client_cert(&self, cn: &str, org: Option<&str>) -> Result<ClientCert> {
        let ca_key_pem = self
            .ca_key_pem
            .as_deref()
            .context("the simulator was given a CA without its key, so it cannot issue client certificates")?;
        let ca_key =
            crate::talos_sim::pki::load_key(ca_key_pem).map_err(|e| anyhow::anyhow!("parsing the CA key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &ca_key).context("parsing the CA certificate")?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The rustls server configuration: client certificates required, chained to the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        bootstrap::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(self.ca_cert_pem.as_bytes()) {
            roots.add(der.context("parsing the client CA PEM")?)?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .context("building the client certificate verifier")?;
        let chain = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parsing the server certificate PEM")?;
        let key =
            PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).context("parsing the server key PEM")?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("server certificate and key do not match")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A kubeconfig (YAML) for `server` trusting `ca_pem` and authenticating with `client`.
pub fn kubeconfig(cluster: &str, server: &str, ca_pem: &str, user: &str, client: &ClientCert) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(&client.cert_pem),
            "client-key-data": b64(&client.key_pem),
        }}],
        "contexts": [{"name": format!("{user}@{cluster}"), "context": {"cluster": cluster, "user": user}}],
        "current-context": format!("{user}@{cluster}"),
    });
    yaml_serde::to_string(&doc).expect("a JSON value always serialises to YAML")
}

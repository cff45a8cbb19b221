//! Test support: a minimal but valid v1alpha1 secrets set and machine
//! configurations, shaped like `talosctl gen secrets` / `gen config` output
//! (OS CA Ed25519 O=talos with the `ED25519 PRIVATE KEY` label, Kubernetes
//! CA ECDSA P-256 with `EC PRIVATE KEY`, admin certificate Ed25519
//! O=os:admin, EKU clientAuth only). Stands in for the real renderer in tests.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use bootstrap::secret::Secret;
use bootstrap::talos::TalosCredentials;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SerialNumber,
};

/// A certificate authority: PEM certificate and PEM key (Talos labels).
#[derive(Debug, Clone)]
pub struct Ca {
    /// Certificate PEM.
    pub crt: String,
    /// Key PEM.
    pub key: String,
}

/// The secrets of one test cluster.
#[derive(Debug, Clone)]
pub struct TestSecrets {
    /// `cluster.id`.
    pub cluster_id: String,
    /// `cluster.clusterName`.
    pub cluster_name: String,
    /// `cluster.controlPlane.endpoint`.
    pub endpoint: String,
    /// OS CA (Ed25519, O=talos).
    pub os_ca: Ca,
    /// Kubernetes CA (ECDSA P-256, O=kubernetes).
    pub k8s_ca: Ca,
    /// Admin client certificate and key (O=os:admin, EKU clientAuth).
    pub admin: Ca,
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn ca(org: &str, key: KeyPair) -> (Ca, KeyPair) {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, org);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).expect("CA parameters are valid");
    (
        Ca {
            crt: cert.pem(),
            key: String::new(),
        },
        key,
    )
}

/// Talos writes Ed25519 keys as PKCS#8 under this non-standard label.
fn ed25519_pem(key: &KeyPair) -> String {
    key.serialize_pem()
        .replace("PRIVATE KEY-----", "ED25519 PRIVATE KEY-----")
}

/// Reads one DER TLV: (content, rest).
fn der_tlv(input: &[u8]) -> (&[u8], &[u8]) {
    let (len, header) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (input[2] as usize, 3),
        _ => (((input[2] as usize) << 8) | input[3] as usize, 4),
    };
    (&input[header..header + len], &input[header + len..])
}

/// The SEC1 `EC PRIVATE KEY` PEM of a P-256 key rcgen holds as PKCS#8.
fn ec_sec1_pem(key: &KeyPair) -> String {
    let pkcs8 = key.serialize_der();
    let (info, _) = der_tlv(&pkcs8);
    let (_, rest) = der_tlv(info); // version
    let (_, rest) = der_tlv(rest); // algorithm identifier
    let (sec1, _) = der_tlv(rest); // privateKey OCTET STRING
    pem_text("EC PRIVATE KEY", sec1)
}

fn pem_text(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

/// A client certificate signed by `ca` with Subject O = `orgs` and the given EKUs.
pub fn client_cert(ca: &Ca, orgs: &[&str], ekus: Vec<ExtendedKeyUsagePurpose>) -> Ca {
    let ca_key = KeyPair::from_pem(&ca.key.replace("ED25519 PRIVATE KEY-----", "PRIVATE KEY-----"))
        .expect("fixture CA key loads");
    let issuer = Issuer::from_ca_cert_pem(&ca.crt, ca_key).expect("fixture CA certificate loads");
    let key = KeyPair::generate_for(&PKCS_ED25519).expect("ed25519 key generation");
    let mut params = CertificateParams::default();
    for org in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *org);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.serial_number = Some(random_serial());
    let cert = params
        .signed_by(&key, &issuer)
        .expect("client certificate parameters are valid");
    Ca {
        crt: cert.pem(),
        key: ed25519_pem(&key),
    }
}

impl TestSecrets {
    /// Fresh secrets for `cluster_name` behind `endpoint` (`https://HOST:6443`).
    pub fn generate(cluster_name: &str, endpoint: &str) -> Self {
        let os_key = KeyPair::generate_for(&PKCS_ED25519).expect("ed25519 key generation");
        let (mut os_ca, os_key) = ca("talos", os_key);
        os_ca.key = ed25519_pem(&os_key);
        let k8s_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("p256 key generation");
        let (mut k8s_ca, k8s_key) = ca("kubernetes", k8s_key);
        k8s_ca.key = ec_sec1_pem(&k8s_key);
        let admin = client_cert(&os_ca, &["os:admin"], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        Self {
            cluster_id: URL_SAFE.encode(rand::random::<[u8; 32]>()),
            cluster_name: cluster_name.to_owned(),
            endpoint: endpoint.to_owned(),
            os_ca,
            k8s_ca,
            admin,
        }
    }

    /// talosconfig-style credentials of the admin certificate.
    pub fn credentials(&self) -> TalosCredentials {
        TalosCredentials::from_pem(&self.os_ca.crt, &self.admin.crt, Secret::new(self.admin.key.clone()))
    }

    /// Credentials with another client certificate signed by this OS CA.
    pub fn credentials_for(&self, client: &Ca) -> TalosCredentials {
        TalosCredentials::from_pem(&self.os_ca.crt, &client.crt, Secret::new(client.key.clone()))
    }

    /// A control-plane configuration (v1alpha1 + HostnameConfig document).
    pub fn controlplane_config(&self, hostname: &str) -> String {
        self.config("controlplane", hostname, true)
    }

    /// A worker configuration: CA certificates only, no keys.
    pub fn worker_config(&self, hostname: &str) -> String {
        self.config("worker", hostname, false)
    }

    fn config(&self, machine_type: &str, hostname: &str, with_keys: bool) -> String {
        let b64 = |s: &str| STANDARD.encode(s);
        let key_line = |key: &str| {
            if with_keys {
                format!("\n    key: {}", b64(key))
            } else {
                String::new()
            }
        };
        let cp_only = if with_keys {
            format!(
                "  secretboxEncryptionSecret: {}\n  apiServer:\n    certSANs:\n      - {host}\n  proxy:\n    disabled: true\n",
                STANDARD.encode(rand::random::<[u8; 32]>()),
                host = endpoint_host(&self.endpoint),
            )
        } else {
            String::new()
        };
        format!(
            "version: v1alpha1
debug: false
persist: true
machine:
  type: {machine_type}
  token: {machine_token}
  ca:
    crt: {os_crt}{os_key}
  certSANs: []
  kubelet:
    image: ghcr.io/siderolabs/kubelet:v1.34.1
  install:
    disk: /dev/sda
    image: ghcr.io/siderolabs/installer:v1.13.9
    wipe: false
  features:
    rbac: true
cluster:
  id: {id}
  secret: {secret}
  controlPlane:
    endpoint: {endpoint}
  clusterName: {name}
  network:
    dnsDomain: cluster.local
    podSubnets:
      - 10.244.0.0/16
    serviceSubnets:
      - 10.96.0.0/12
    cni:
      name: none
  token: {cluster_token}
  ca:
    crt: {k8s_crt}{k8s_key}
{cp_only}  discovery:
    enabled: false
---
apiVersion: v1alpha1
kind: HostnameConfig
hostname: {hostname}
",
            machine_token = token(),
            os_crt = b64(&self.os_ca.crt),
            os_key = key_line(&self.os_ca.key),
            id = self.cluster_id,
            secret = STANDARD.encode(rand::random::<[u8; 32]>()),
            endpoint = self.endpoint,
            name = self.cluster_name,
            cluster_token = token(),
            k8s_crt = b64(&self.k8s_ca.crt),
            k8s_key = key_line(&self.k8s_ca.key),
        )
    }
}

fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint.trim_start_matches("https://");
    rest.rsplit_once(':').map_or(rest, |(host, _)| host)
}

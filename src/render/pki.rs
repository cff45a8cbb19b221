//! Certificate authorities and certificates of a Talos cluster, with the
//! algorithms and PEM labels `talosctl gen secrets` uses: Ed25519 OS CA,
//! ECDSA P-256 Kubernetes/etcd/aggregator CAs, RSA-4096 service-account key,
//! and the Ed25519 `os:admin` client certificate of `talosconfig`.

use anyhow::{Context, Result, bail};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SerialNumber, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};

/// Validity of every CA (10 years, as Talos).
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of the `talosconfig` admin client certificate.
pub const ADMIN_VALIDITY: Duration = Duration::days(365);

/// A certificate and its private key, both PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKey {
    pub crt: String,
    pub key: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertKey { crt, key: *** }")
    }
}

/// The key algorithm of a CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Ed25519 (the Talos OS CA); key PEM label `ED25519 PRIVATE KEY`.
    Ed25519,
    /// ECDSA P-256 (Kubernetes, etcd, aggregator); key PEM label `EC PRIVATE KEY`.
    P256,
}

/// Encodes DER as PEM text with LF line endings.
pub fn pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[0] &= 0x7f; // a positive 128-bit integer
    SerialNumber::from_slice(&b)
}

fn now() -> OffsetDateTime {
    // Whole seconds: X.509 times carry no fractions.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Generates a self-signed CA: random 128-bit serial, CA:TRUE, key usage
/// certSign + digitalSignature, EKU serverAuth + clientAuth, 10 years.
pub fn generate_ca(kind: CaKind, subject: &[(DnType, &str)]) -> Result<CertKey> {
    let alg: &'static SignatureAlgorithm = match kind {
        CaKind::Ed25519 => &PKCS_ED25519,
        CaKind::P256 => &PKCS_ECDSA_P256_SHA256,
    };
    let key = KeyPair::generate_for(alg).context("generating a CA key")?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    for (t, v) in subject {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(random_serial());
    p.not_before = now();
    p.not_after = p.not_before + CA_VALIDITY;
    let cert = p.self_signed(&key).context("self-signing a CA certificate")?;
    let key_pem = match kind {
        CaKind::Ed25519 => pem("ED25519 PRIVATE KEY", &ed25519_pkcs8_v1(&key.serialize_der())?),
        CaKind::P256 => pem(
            "EC PRIVATE KEY",
            &p256_pkcs8_to_sec1(&key.serialize_der(), key.public_key_raw())?,
        ),
    };
    Ok(CertKey {
        crt: cert.pem(),
        key: key_pem,
    })
}

/// Issues the `talosconfig` client certificate: Ed25519, O=os:admin,
/// extended key usage clientAuth only, signed by the OS CA.
pub fn admin_client_cert(os_ca: &CertKey) -> Result<CertKey> {
    let ca_key = load_key(&os_ca.key).context("reading the OS CA key (certs.os.key)")?;
    let issuer =
        Issuer::from_ca_cert_pem(&os_ca.crt, ca_key).context("reading the OS CA certificate (certs.os.crt)")?;
    let key = KeyPair::generate_for(&PKCS_ED25519).context("generating the admin client key")?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "os:admin");
    p.distinguished_name.push(DnType::CommonName, "admin");
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(random_serial());
    p.not_before = now();
    p.not_after = p.not_before + ADMIN_VALIDITY;
    let cert = p
        .signed_by(&key, &issuer)
        .context("signing the admin client certificate")?;
    Ok(CertKey {
        crt: cert.pem(),
        key: pem("ED25519 PRIVATE KEY", &ed25519_pkcs8_v1(&key.serialize_der())?),
    })
}

/// Generates the RSA-4096 service-account key as PKCS#1 PEM (`RSA PRIVATE KEY`).
pub fn generate_service_account_key() -> Result<String> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 4096).context("generating an RSA-4096 key")?;
    let pem = key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .context("encoding the RSA key as PKCS#1")?;
    Ok(String::from(pem.as_str()))
}

/// Loads a PKCS#8 Ed25519 or ECDSA P-256 private key from PEM, accepting the
/// labels Talos writes (`ED25519 PRIVATE KEY`, `EC PRIVATE KEY`, `PRIVATE KEY`).
pub fn load_key(pem_text: &str) -> Result<KeyPair> {
    let p = pem::parse(pem_text).context("not PEM")?;
    match p.tag() {
        "ED25519 PRIVATE KEY" | "PRIVATE KEY" => KeyPair::try_from(p.contents()).context("not a PKCS#8 private key"),
        "EC PRIVATE KEY" => bail!("SEC1 EC keys cannot sign here: only the Ed25519 OS CA key is used for signing"),
        other => bail!("unexpected PEM label `{other}`"),
    }
}

// rcgen (through ring) only emits PKCS#8 v2 documents; Talos and Go's
// crypto/x509 expect SEC1 `EC PRIVATE KEY` with the named curve for ECDSA, and
// write Ed25519 keys as PKCS#8 v1. No maintained crate compatible with our
// rand/ring versions converts between the two, so these two small DER
// rewrites use yasna (rcgen's own DER library).

const OID_ED25519: &[u64] = &[1, 3, 101, 112];
const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_PRIME256V1: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];

/// (algorithm OID, parameter OID if any, privateKey octets) of a PKCS#8 key.
type Pkcs8Parts = (Vec<u64>, Option<Vec<u64>>, Vec<u8>);

/// Reads a PKCS#8 PrivateKeyInfo.
fn read_pkcs8(der: &[u8]) -> Result<Pkcs8Parts> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let (alg, param) = r.next().read_sequence(|r| {
                let alg = r.next().read_oid()?;
                let param = r.read_optional(|r| r.read_oid())?;
                Ok((alg, param))
            })?;
            let key = r.next().read_bytes()?;
            // Attributes [0] and publicKey [1] (PKCS#8 v2) are not needed.
            let _ = r.read_optional(|r| r.read_der())?;
            let _ = r.read_optional(|r| r.read_der())?;
            Ok((alg.components().to_vec(), param.map(|p| p.components().to_vec()), key))
        })
    })
    .map_err(|e| anyhow::anyhow!("malformed PKCS#8 key: {e}"))
}

/// Rewrites an Ed25519 PKCS#8 (v1 or v2) as PKCS#8 v1 (no public key), as Go writes it.
fn ed25519_pkcs8_v1(der: &[u8]) -> Result<Vec<u8>> {
    let (alg, _, key) = read_pkcs8(der)?;
    if alg != OID_ED25519 {
        bail!("not an Ed25519 key");
    }
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(OID_ED25519))
            });
            w.next().write_bytes(&key);
        })
    }))
}

/// Converts a P-256 PKCS#8 key to SEC1 `ECPrivateKey` with the named curve and public key.
fn p256_pkcs8_to_sec1(der: &[u8], public: &[u8]) -> Result<Vec<u8>> {
    let (alg, param, inner) = read_pkcs8(der)?;
    if alg != OID_EC_PUBLIC_KEY || param.as_deref() != Some(OID_PRIME256V1) {
        bail!("not an ECDSA P-256 key");
    }
    let scalar = yasna::parse_der(&inner, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let k = r.next().read_bytes()?;
            let _ = r.read_optional(|r| r.read_der())?;
            let _ = r.read_optional(|r| r.read_der())?;
            Ok(k)
        })
    })
    .map_err(|e| anyhow::anyhow!("malformed EC private key: {e}"))?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_bytes(&scalar);
            w.next().write_tagged(yasna::Tag::context(0), |w| {
                w.write_oid(&yasna::models::ObjectIdentifier::from_slice(OID_PRIME256V1))
            });
            w.next().write_tagged(yasna::Tag::context(1), |w| {
                w.write_bitvec_bytes(public, public.len() * 8)
            });
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_use_talos_labels_and_admin_cert_chains_to_os_ca() {
        let os = generate_ca(CaKind::Ed25519, &[(DnType::OrganizationName, "talos")]).unwrap();
        assert!(os.key.starts_with("-----BEGIN ED25519 PRIVATE KEY-----\n"));
        assert!(load_key(&os.key).is_ok(), "our Ed25519 PKCS#8 v1 loads back");
        let k8s = generate_ca(CaKind::P256, &[(DnType::OrganizationName, "kubernetes")]).unwrap();
        assert!(k8s.key.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        let sec1 = pem::parse(&k8s.key).unwrap();
        // SEC1 ECPrivateKey: version 1, 32-byte scalar, [0] prime256v1, [1] public key.
        let (scalar, curve) = yasna::parse_der(sec1.contents(), |r| {
            r.read_sequence(|r| {
                assert_eq!(r.next().read_u8()?, 1);
                let k = r.next().read_bytes()?;
                let c = r.next().read_tagged(yasna::Tag::context(0), |r| r.read_oid())?;
                let _ = r.next().read_der()?;
                Ok((k, c))
            })
        })
        .unwrap();
        assert_eq!(scalar.len(), 32);
        assert_eq!(curve.components().as_slice(), OID_PRIME256V1);
        let admin = admin_client_cert(&os).unwrap();
        assert!(admin.crt.starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}

//! Secrets bundle generation: `talosctl gen secrets` layout and algorithms,
//! generated once per cluster into the state dir (0600), stable afterwards.

mod render_support;

use std::os::unix::fs::PermissionsExt;

use bootstrap::render::SecretsBundle;
use render_support::*;
use x509_parser::prelude::*;

fn cert(b64: &str) -> Vec<u8> {
    let (label, der) = pem_der(b64);
    assert_eq!(label, "CERTIFICATE");
    der
}

#[test]
fn talos_bundle_is_generated_once_with_talos_algorithms() {
    let inv = load("inventory/simulated.toml");
    let c = &inv.clusters[0];
    let state = tempfile::tempdir().unwrap();
    let b = SecretsBundle::load_or_generate(state.path(), c).unwrap();
    let path = state.path().join("sim/secrets.yaml");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(state.path().join("sim/talos-admin.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let before = std::fs::read(&path).unwrap();
    let again = SecretsBundle::load_or_generate(state.path(), c).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before, "generated once");
    let (SecretsBundle::Talos(b), SecretsBundle::Talos(again)) = (b, again) else {
        panic!("talos bundle")
    };
    assert_eq!(b.secrets.to_yaml(), again.secrets.to_yaml());
    assert_eq!(
        b.admin.crt, again.admin.crt,
        "admin certificate is stored, not re-issued"
    );
    assert!(!format!("{:?}", SecretsBundle::Talos(b.clone())).contains(&b.secrets.certs.os.key));

    // The YAML layout of `talosctl gen secrets`.
    let y: yaml_serde::Value = yaml_serde::from_slice(&before).unwrap();
    for key in ["cluster", "secrets", "trustdinfo", "certs"] {
        assert!(y.get(key).is_some(), "missing {key}");
    }
    let token_re = |s: &str| {
        let (a, b) = s.split_once('.').unwrap();
        a.len() == 6
            && b.len() == 16
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
    };
    assert!(token_re(&b.secrets.secrets.bootstraptoken) && token_re(&b.secrets.trustdinfo.token));
    let s = &b.secrets.certs;
    let check_ca = |field: &str, crt: &str, key: &str, key_label: &str, alg: &str| {
        let der = cert(crt);
        let (_, x) = X509Certificate::from_der(&der).unwrap();
        assert!(x.is_ca(), "{field} is a CA");
        assert_eq!(x.public_key().algorithm.algorithm.to_id_string(), alg, "{field}");
        let serial = x.tbs_certificate.raw_serial().len();
        assert!(
            (12..=16).contains(&serial),
            "{field}: random positive 128-bit serial, {serial} bytes"
        );
        let ku = x.key_usage().unwrap().unwrap();
        assert!(
            ku.critical && ku.value.key_cert_sign() && ku.value.digital_signature(),
            "{field}"
        );
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth, "{field}");
        let years = (x.validity().not_after.timestamp() - x.validity().not_before.timestamp()) / (365 * 86400);
        assert_eq!(years, 10, "{field}: 10 years");
        assert_eq!(pem_der(key).0, key_label, "{field}.key label");
        x.subject().to_string()
    };
    assert_eq!(
        check_ca("os", &s.os.crt, &s.os.key, "ED25519 PRIVATE KEY", "1.3.101.112"),
        "O=talos"
    );
    assert_eq!(
        check_ca("k8s", &s.k8s.crt, &s.k8s.key, "EC PRIVATE KEY", "1.2.840.10045.2.1"),
        "O=kubernetes"
    );
    assert_eq!(
        check_ca("etcd", &s.etcd.crt, &s.etcd.key, "EC PRIVATE KEY", "1.2.840.10045.2.1"),
        "O=etcd"
    );
    assert_eq!(
        check_ca(
            "k8saggregator",
            &s.k8saggregator.crt,
            &s.k8saggregator.key,
            "EC PRIVATE KEY",
            "1.2.840.10045.2.1"
        ),
        "CN=front-proxy"
    );
    let (label, der) = pem_der(&s.k8sserviceaccount.key);
    assert_eq!(label, "RSA PRIVATE KEY");
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    assert_eq!(rsa::RsaPrivateKey::from_pkcs1_der(&der).unwrap().size() * 8, 4096);
}

#[test]
fn k3s_token_is_generated_once_and_age_recipients_are_refused_clearly() {
    let mut inv = load("inventory/rack-k3s.toml");
    let state = tempfile::tempdir().unwrap();
    let c = &inv.clusters[0];
    let SecretsBundle::K3s(a) = SecretsBundle::load_or_generate(state.path(), c).unwrap() else {
        panic!()
    };
    let SecretsBundle::K3s(b) = SecretsBundle::load_or_generate(state.path(), c).unwrap() else {
        panic!()
    };
    assert_eq!(a.k3s.token, b.k3s.token);
    assert_eq!(a.k3s.token.len(), 64);
    let c = &mut inv.clusters[0];
    c.secrets.age_recipients = vec!["age1example".into()];
    let err = format!("{:#}", SecretsBundle::load_or_generate(state.path(), c).unwrap_err());
    assert!(err.contains("age") && err.contains("not implemented"), "{err}");
}

#[test]
fn a_malformed_bundle_is_rejected_without_echoing_values() {
    let text = std::fs::read_to_string(repo("tests/fixtures/talos/secrets.yaml")).unwrap();
    let b = bootstrap::render::TalosSecrets::parse(&text).unwrap();
    let broken = text.replace(&b.certs.os.key, "bm90LXBlbQ==");
    let err = format!("{:#}", bootstrap::render::TalosSecrets::parse(&broken).unwrap_err());
    assert!(err.contains("certs.os.key"), "{err}");
    assert!(!err.contains("bm90LXBlbQ=="), "{err}");
}

//! `sops:` references against files whose data key the real `age` CLI
//! wrapped: an upstream fixture re-wrapped for a fresh `age-keygen` identity,
//! and dotenv/YAML files sealed at test time (encryption rules,
//! `mac_only_encrypted`, Shamir key groups), plus their tampered copies.

mod sops_support;

use std::path::{Path, PathBuf};

use bootstrap::sops::{self, ErrorKind, KeySources};
use sops_support::{Identity, Writer, age_cli, keygen, shared, unwrap, wrap};

fn file_key(id: &Identity) -> KeySources {
    KeySources {
        age_key_file: Some(id.file.clone()),
        ..KeySources::default()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn value(path: &Path, key: Option<&str>, keys: &KeySources) -> Result<String, sops::SopsError> {
    sops::secret(path, key, keys).map(|s| age::secrecy::ExposeSecret::expose_secret(&s).to_owned())
}

#[test]
fn an_upstream_file_rewrapped_by_the_age_cli_decrypts_with_the_new_identity() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut doc: yaml_serde::Mapping =
        yaml_serde::from_str(&std::fs::read_to_string(shared("sops/example.yaml")).unwrap()).unwrap();
    let sops_meta = doc.get_mut("sops").unwrap().as_mapping_mut().unwrap();
    let stanza = sops_meta["age"][0]["enc"].as_str().unwrap().to_owned();
    // The real CLI opens the upstream stanza with the upstream identity ...
    let data_key = unwrap(&stanza, &shared("sops/keys.txt"));
    assert_eq!(data_key.len(), 32);
    // ... and wraps the same data key for a fresh identity.
    let fresh = keygen(dir.path(), "fresh.txt");
    let mut entry = yaml_serde::Mapping::new();
    entry.insert("recipient".into(), fresh.recipient.as_str().into());
    entry.insert("enc".into(), wrap(&data_key, &fresh.recipient).into());
    sops_meta.insert("age".into(), yaml_serde::Value::Sequence(vec![entry.into()]));
    let path = write(dir.path(), "rewrapped.yaml", &yaml_serde::to_string(&doc).unwrap());

    assert_eq!(
        value(&path, Some("app2.db.password"), &file_key(&fresh)).unwrap(),
        "c4r1b0u"
    );
    assert_eq!(value(&path, Some("number"), &file_key(&fresh)).unwrap(), "1234568000");

    // The upstream identities are no longer recipients: the error lists the one that is.
    let upstream = KeySources {
        age_key_file: Some(shared("sops/keys.txt")),
        ..KeySources::default()
    };
    let e = value(&path, Some("myapp1"), &upstream).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NoMatchingIdentity { .. }), "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains(&fresh.recipient) && shown.contains("rewrapped.yaml"),
        "{shown}"
    );
}

#[test]
fn a_dotenv_file_gives_one_key_or_its_only_value() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ops = keygen(dir.path(), "ops.txt");
    let w = Writer::new(&[&ops]);
    let path = write(
        dir.path(),
        "tokens.env",
        &w.dotenv(&[("VAULT_TOKEN", "hvs.s3cr3t"), ("MULTI", "line one\nline two")]),
    );
    assert_eq!(
        value(&path, Some("VAULT_TOKEN"), &file_key(&ops)).unwrap(),
        "hvs.s3cr3t"
    );
    assert_eq!(
        value(&path, Some("MULTI"), &file_key(&ops)).unwrap(),
        "line one\nline two"
    );
    let e = value(&path, None, &file_key(&ops)).unwrap_err();
    assert!(e.to_string().contains("VAULT_TOKEN, MULTI"), "{e}");

    let single = write(dir.path(), "single.env", &w.dotenv(&[("TOKEN", "only-one")]));
    assert_eq!(value(&single, None, &file_key(&ops)).unwrap(), "only-one");

    // Swapping the two lines keeps each value decryptable (`KEY:` data) but not the MAC.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let swapped = [lines[1], lines[0]]
        .into_iter()
        .chain(lines[2..].iter().copied())
        .collect::<Vec<_>>();
    let tampered = write(dir.path(), "swapped.env", &(swapped.join("\n") + "\n"));
    let e = value(&tampered, Some("VAULT_TOKEN"), &file_key(&ops)).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::MacMismatch), "{e}");
    assert!(!e.to_string().contains("hvs.s3cr3t"));
}

const MANIFEST: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: c2VjcmV0\nstringData:\n  user: admin\n";

#[test]
fn encryption_rules_decide_what_is_sealed() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ops = keygen(dir.path(), "ops.txt");
    for rule in [
        ("encrypted_regex", "^(data|stringData)$"),
        ("unencrypted_regex", "^(apiVersion|kind|metadata)$"),
        ("encrypted_suffix", "Data"),
        ("unencrypted_suffix", "_unencrypted"),
    ] {
        let mut w = Writer::new(&[&ops]);
        w.rule = rule;
        let text = w.yaml(MANIFEST);
        let sealed = text.contains("user: ENC[");
        assert!(sealed, "{rule:?} seals stringData.user:\n{text}");
        let path = write(dir.path(), "secret.sops.yaml", &text);
        assert_eq!(
            value(&path, Some("stringData.user"), &file_key(&ops)).unwrap(),
            "admin",
            "{rule:?}"
        );
        assert_eq!(
            value(&path, Some("metadata.name"), &file_key(&ops)).unwrap(),
            "db",
            "{rule:?}"
        );
    }
}

#[test]
fn mac_only_encrypted_leaves_clear_values_out_of_the_mac() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ops = keygen(dir.path(), "ops.txt");
    let mut w = Writer::new(&[&ops]);
    w.rule = ("encrypted_regex", "^(data|stringData)$");
    w.mac_only_encrypted = true;
    let text = w.yaml(MANIFEST);
    let renamed = write(dir.path(), "renamed.yaml", &text.replace("name: db", "name: other"));
    assert_eq!(
        value(&renamed, Some("data.password"), &file_key(&ops)).unwrap(),
        "c2VjcmV0"
    );

    let mut all = Writer::new(&[&ops]);
    all.key = w.key;
    all.groups = w.groups.clone();
    all.rule = w.rule;
    let covered = write(
        dir.path(),
        "covered.yaml",
        &all.yaml(MANIFEST).replace("name: db", "name: other"),
    );
    let e = value(&covered, Some("data.password"), &file_key(&ops)).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::MacMismatch),
        "without mac_only_encrypted the name is covered: {e}"
    );
}

#[test]
fn shamir_key_groups_need_the_threshold() {
    if !age_cli() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (keygen(dir.path(), "a.txt"), keygen(dir.path(), "b.txt"));
    let w = Writer::shamir(&[&a, &b], 2);
    let path = write(dir.path(), "split.yaml", &w.yaml("token: t0k3n\n"));
    let both = KeySources {
        age_key: Some(format!("{} {}", a.secret(), b.secret())),
        ..KeySources::default()
    };
    assert_eq!(value(&path, None, &both).unwrap(), "t0k3n");
    let e = value(&path, None, &file_key(&a)).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::DataKey(_)), "{e}");
    assert!(e.to_string().contains("1 of the 2 key groups"), "{e}");
}

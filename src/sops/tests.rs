//! The upstream fixtures in `../shared/sops/` (written by sops 3.7.1, age
//! recipients, with their identities in `keys.txt`) against the plaintext
//! their README records, and tampered copies of them.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use serde_json::json;

use super::*;

fn shared(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|s| s.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()))
}

fn with_key_file() -> KeySources {
    KeySources {
        age_key_file: Some(shared("sops/keys.txt")),
        ..KeySources::default()
    }
}

/// The identity lines of keys.txt.
fn identities() -> Vec<String> {
    std::fs::read_to_string(shared("sops/keys.txt"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .map(str::to_owned)
        .collect()
}

/// The file's top-level keys are `order`, and every leaf of `expected`
/// (README plaintext) reads back by its key path.
fn assert_plaintext(d: &Decrypted, order: &[&str], expected: &serde_json::Value) {
    assert_eq!(d.top_level_keys(), order, "keys in file order");
    let serde_json::Value::Object(top) = expected else {
        panic!()
    };
    assert_eq!(top.len(), order.len());
    fn walk(d: &Decrypted, path: String, v: &serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(d, format!("{path}.{k}"), v)),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(d, format!("{path}.{i}"), v)),
            leaf => {
                let want = match leaf {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let key = &path[1..];
                assert_eq!(d.value(Some(key)).unwrap().expose_secret(), want, "value at {key}");
            }
        }
    }
    walk(d, String::new(), expected);
}

const RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBPAIBAAJBAPTMNIyHuZtpLYc7VsHQtwOkWYobkUblmHWRmbXzlAX6K8tMf3Wf\nImcbNkqAKnELzFAPSBeEMhrBN0PyOC9lYlMCAwEAAQJBALXD4sjuBn1E7Y9aGiMz\nbJEBuZJ4wbhYxomVoQKfaCu+kH80uLFZKoSz85/ySauWE8LgZcMLIBoiXNhDKfQL\nvHECIQD6tCG9NMFWor69kgbX8vK5Y+QL+kRq+9HK6yZ9a+hsLQIhAPn4Ie6HGTjw\nfHSTXWZpGSan7NwTkIu4U5q2SlLjcZh/AiEA78NYRRBwGwAYNUqzutGBqyXKUl4u\nErb0xAEyVV7e8J0CIQC8VBY8f8yg+Y7Kxbw4zDYGyb3KkXL10YorpeuZR4LuQQIg\nbKGPkMM4w5blyE1tqGN0T7sJwEx+EUOgacRNqM2ljVA=\n-----END RSA PRIVATE KEY-----\n";

fn yaml_plaintext() -> serde_json::Value {
    json!({"myapp1": "t00m4nys3cr3tzupdated",
     "app2": {"db": {"user": "eve", "password": "c4r1b0u"}, "key": RSA_KEY},
     "number": 1234568000,
     "an_array": ["secretuser1", "secretuser2", "somelongvalueAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "some other value"],
     "somebooleans": [true, false],
     "this": {"is": {"a": {"nested": {"value": "with something secret in it"}}}},
     "somelist_unencrypted": ["all elements of this list", "remain in clear text", "because of the _encrypted suffix in the key"],
     "nested_unencrypted": {"this": {"is": {"all": "going to remain in clear text"}}}})
}

#[test]
fn yaml_fixture_decrypts_to_its_recorded_plaintext() {
    let d = decrypt_file(&shared("sops/example.yaml"), &with_key_file()).unwrap();
    assert_eq!(d.format(), Format::Yaml);
    let order = [
        "myapp1",
        "app2",
        "number",
        "an_array",
        "somebooleans",
        "this",
        "somelist_unencrypted",
        "nested_unencrypted",
    ];
    assert_plaintext(&d, &order, &yaml_plaintext());
}

#[test]
fn json_fixture_decrypts_to_its_recorded_plaintext() {
    let d = decrypt_file(&shared("sops/example.json"), &with_key_file()).unwrap();
    assert_plaintext(
        &d,
        &[
            "firstName",
            "lastName",
            "age",
            "address",
            "phoneNumbers",
            "anEmptyValue",
        ],
        &json!({"firstName": "John", "lastName": "Smith", "age": 25.4,
         "address": {"city": "New York", "postalCode": "10021-3100", "state": "NY", "streetAddress": "21 2nd Street"},
         "phoneNumbers": [{"number": "212 555-1234", "type": "home"}, {"number": "646 555-4567", "type": "office"}],
         "anEmptyValue": ""}),
    );
}

#[test]
fn ini_fixture_decrypts_to_its_recorded_plaintext() {
    let d = decrypt_file(&shared("sops/example.ini"), &with_key_file()).unwrap();
    assert_plaintext(
        &d,
        &["name", "address", "phoneNumbers", "not private"],
        &json!({"name": {"firstName": "John", "lastName": "Smith", "age": "25.4"},
         "address": {"city": "New York", "postalCode": "10021-3100", "state": "NY", "streetAddress": "21 2nd Street"},
         "phoneNumbers": {"home": "212 555-1234", "office": "646 555-4567"},
         "not private": {"notsecret_unencrypted": "hi there!"}}),
    );
}

#[test]
fn binary_fixture_is_one_value() {
    let d = decrypt_file(&shared("sops/example.txt"), &with_key_file()).unwrap();
    let want = "Welcome to SOPS!\n\nSOPS is a manager of encrypted files designed to help distribute secrets.\nCheck it out, it's on github: https://github.com/mozilla/sops\n\n";
    assert_eq!(d.value(None).unwrap().expose_secret(), want);
    assert_eq!(d.value(Some("data")).unwrap().expose_secret(), want);
}

#[test]
fn each_identity_alone_opens_its_stanza() {
    let ids = identities();
    assert_eq!(ids.len(), 2);
    for id in ids {
        let sources = KeySources {
            age_key: Some(id),
            ..KeySources::default()
        };
        let s = secret(&shared("sops/example.yaml"), Some("app2.db.password"), &sources).unwrap();
        assert_eq!(s.expose_secret(), "c4r1b0u");
    }
}

#[test]
fn the_user_config_dir_keys_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sops/age")).unwrap();
    std::fs::copy(shared("sops/keys.txt"), dir.path().join("sops/age/keys.txt")).unwrap();
    let sources = KeySources {
        config_dir: Some(dir.path().to_path_buf()),
        ..KeySources::default()
    };
    assert_eq!(
        secret(&shared("sops/example.json"), Some("firstName"), &sources)
            .unwrap()
            .expose_secret(),
        "John"
    );
}

/// A copy of `fixture` with `edit` applied, under a temp dir.
fn tampered(fixture: &str, edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(fixture);
    let text = std::fs::read_to_string(shared(&format!("sops/{fixture}"))).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed the file");
    std::fs::write(&path, edited).unwrap();
    (dir, path)
}

fn failure(path: &Path, sources: &KeySources) -> SopsError {
    let e = decrypt_file(path, sources).expect_err("decryption must fail");
    let shown = e.to_string();
    assert!(shown.contains(&path.display().to_string()), "names the file: {shown}");
    for plain in ["c4r1b0u", "t00m4nys3cr3tzupdated", "secretuser1", "John"] {
        assert!(!shown.contains(plain), "no plaintext in {shown}");
    }
    for id in identities() {
        assert!(!shown.contains(&id), "no key material in {shown}");
    }
    e
}

#[test]
fn reordered_list_items_fail_the_mac() {
    // Both items have the additional data `an_array:`, so each still decrypts:
    // only the MAC notices that their order changed.
    let (_d, path) = tampered("example.yaml", |t| {
        let lines: Vec<&str> = t.lines().collect();
        let i = lines.iter().position(|l| *l == "an_array:").unwrap() + 1;
        let mut lines = lines.clone();
        lines.swap(i, i + 1);
        lines.join("\n") + "\n"
    });
    assert!(matches!(failure(&path, &with_key_file()).kind, ErrorKind::MacMismatch));
}

#[test]
fn a_changed_clear_text_value_fails_the_mac() {
    let (_d, path) = tampered("example.yaml", |t| {
        t.replace("going to remain in clear text", "changed")
    });
    assert!(matches!(failure(&path, &with_key_file()).kind, ErrorKind::MacMismatch));
    let (_d, path) = tampered("example.ini", |t| t.replace("hi there!", "hi here!"));
    assert!(matches!(failure(&path, &with_key_file()).kind, ErrorKind::MacMismatch));
}

#[test]
fn a_changed_lastmodified_leaves_the_mac_undecryptable() {
    let (_d, path) = tampered("example.json", |t| {
        t.replace("2022-03-15T22:12:12Z", "2022-03-15T22:12:13Z")
    });
    assert!(matches!(
        failure(&path, &with_key_file()).kind,
        ErrorKind::MacUndecryptable(_)
    ));
}

#[test]
fn a_value_moved_to_another_key_fails_to_decrypt_there() {
    let (_d, path) = tampered("example.yaml", |t| {
        let user = t
            .lines()
            .find(|l| l.trim_start().starts_with("user: "))
            .unwrap()
            .to_owned();
        let password = t
            .lines()
            .find(|l| l.trim_start().starts_with("password: "))
            .unwrap()
            .to_owned();
        let moved = password.replacen("password: ", "user: ", 1);
        t.replace(&user, &moved)
    });
    match failure(&path, &with_key_file()).kind {
        ErrorKind::Value { path, .. } => assert_eq!(path, "app2.db.user"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_foreign_identity_lists_the_recipients() {
    use age::secrecy::ExposeSecret;
    let foreign = age::x25519::Identity::generate();
    let sources = KeySources {
        age_key: Some(foreign.to_string().expose_secret().to_owned()),
        ..KeySources::default()
    };
    let path = shared("sops/example.yaml");
    let e = failure(&path, &sources);
    let shown = e.to_string();
    assert!(matches!(e.kind, ErrorKind::NoMatchingIdentity { .. }), "{shown}");
    assert!(
        shown.contains("age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw"),
        "{shown}"
    );
    assert!(
        shown.contains("age1tmaae3ld5vpevmsh5yacsauzx8jetg300mpvc4ugp5zr5l6ssq9sla97ep"),
        "{shown}"
    );
    assert!(!shown.contains(foreign.to_string().expose_secret()), "{shown}");
    assert!(shown.contains("SOPS_AGE_KEY"), "says where it looked: {shown}");

    let e = failure(&path, &KeySources::default());
    assert!(matches!(e.kind, ErrorKind::NoIdentity { .. }), "{e}");
}

#[test]
fn a_plain_file_is_not_sops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.yaml");
    std::fs::write(&path, "token: hunter2\n").unwrap();
    let e = decrypt_file(&path, &with_key_file()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotSops));
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn pgp_only_files_say_why_they_are_refused() {
    let (_d, path) = tampered("example.yaml", |t| {
        let start = t.find("    age:\n").unwrap();
        let end = t.find("    lastmodified:").unwrap();
        let pgp = "    pgp:\n        - created_at: \"2022-03-15T22:11:15Z\"\n          enc: x\n          fp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4\n";
        format!("{}{pgp}{}", &t[..start], &t[end..]).replace("    pgp: []\n", "")
    });
    let e = failure(&path, &with_key_file());
    assert!(matches!(e.kind, ErrorKind::NoAgeRecipient { .. }), "{e}");
    assert!(e.to_string().contains("pgp"), "{e}");
}

#[test]
fn key_paths_select_one_value() {
    let d = decrypt_file(&shared("sops/example.yaml"), &with_key_file()).unwrap();
    assert_eq!(d.value(Some("somebooleans.1")).unwrap().expose_secret(), "false");
    assert!(matches!(
        d.value(Some("app2.db.nope")),
        Err(ErrorKind::KeyAbsent { .. })
    ));
    assert!(matches!(
        d.value(Some("app2")),
        Err(ErrorKind::NotScalar { what: "a map", .. })
    ));
    let e = d.value(None).unwrap_err();
    assert!(matches!(e, ErrorKind::NeedsKey { .. }));
    assert!(e.to_string().contains("myapp1, app2"), "{e}");
}

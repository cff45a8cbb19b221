//! SOPS files made at test time. The data key is wrapped (and unwrapped) by
//! the real `age` CLI (Debian package `age`); the values and the MAC are
//! sealed here the way getsops/sops writes them (`aes/cipher.go` Encrypt,
//! `sops.go` Tree.Encrypt, `cmd/sops/common` EncryptTree), independently of
//! the product's reader: the fixture tests hold that reader to real sops
//! output.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aes_gcm::aead::array::Array;
use aes_gcm::aead::array::typenum::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{AesGcm, aes::Aes256};
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};
use yaml_serde::{Mapping, Value};

/// `../shared/<rel>` beside the repository (or beside a worktree's parent).
pub fn shared(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|s| s.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()))
}

/// Whether the real age CLI is here; skips (with a reason) outside CI, fails in CI.
pub fn age_cli() -> bool {
    let ok = ["age", "age-keygen"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "the age CLI is not installed: `cargo xtask test` installs it (apt package age)"
        );
        eprintln!("SKIP: the age CLI is not installed (run `cargo xtask test` as root to install it)");
    }
    ok
}

/// An identity file made by `age-keygen` and its recipient.
pub struct Identity {
    pub file: PathBuf,
    pub recipient: String,
}

impl Identity {
    /// The `AGE-SECRET-KEY-1...` line of the file.
    pub fn secret(&self) -> String {
        std::fs::read_to_string(&self.file)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .unwrap()
            .to_owned()
    }
}

/// `age-keygen -o DIR/NAME`, then `age-keygen -y` for the recipient.
pub fn keygen(dir: &Path, name: &str) -> Identity {
    let file = dir.join(name);
    let out = Command::new("age-keygen").arg("-o").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "age-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("age-keygen").arg("-y").arg(&file).output().unwrap();
    assert!(out.status.success());
    Identity {
        file,
        recipient: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    }
}

fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// `age -a -r RECIPIENT`: `data` as an armored age file.
pub fn wrap(data: &[u8], recipient: &str) -> String {
    String::from_utf8(pipe(Command::new("age").args(["-a", "-r", recipient]), data)).unwrap()
}

/// `age -d -i IDENTITY`.
pub fn unwrap(armored: &str, identity: &Path) -> Vec<u8> {
    pipe(
        Command::new("age").arg("-d").arg("-i").arg(identity),
        armored.as_bytes(),
    )
}

/// Splits `secret` into `n` Shamir shares needing `threshold` of them, as
/// `shamir/shamir.go` Split does: per byte a random polynomial whose
/// intercept is the byte, evaluated at x = 1..=n; the share ends with x.
pub fn shamir_split(secret: &[u8], n: u8, threshold: usize) -> Vec<Vec<u8>> {
    fn mult(a: u8, b: u8) -> u8 {
        // Carry-less product reduced by x^8 + x^4 + x^3 + x + 1.
        let (mut a, mut b, mut p) = (a, b, 0u8);
        while b != 0 {
            if b & 1 == 1 {
                p ^= a;
            }
            a = (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 };
            b >>= 1;
        }
        p
    }
    let polys: Vec<Vec<u8>> = secret
        .iter()
        .map(|&s| {
            std::iter::once(s)
                .chain((1..threshold).map(|_| rand::random::<u8>()))
                .collect()
        })
        .collect();
    (1..=n)
        .map(|x| {
            let mut share: Vec<u8> = polys
                .iter()
                .map(|c| c.iter().rev().fold(0, |acc, &k| mult(acc, x) ^ k))
                .collect();
            share.push(x);
            share
        })
        .collect()
}

/// Which values a file encrypts: one of sops's rules, as (metadata key, value).
pub type Rule = (&'static str, &'static str);

/// Seals SOPS files with one data key.
pub struct Writer {
    pub key: [u8; 32],
    pub rule: Rule,
    pub mac_only_encrypted: bool,
    /// Key groups of age stanzas (recipient, armored enc); one group = no Shamir.
    pub groups: Vec<Vec<(String, String)>>,
    pub lastmodified: &'static str,
}

impl Writer {
    /// A fresh data key wrapped for each identity (one group) by the age CLI.
    pub fn new(recipients: &[&Identity]) -> Self {
        let key: [u8; 32] = rand::random();
        let stanzas = recipients
            .iter()
            .map(|r| (r.recipient.clone(), wrap(&key, &r.recipient)))
            .collect();
        Self {
            key,
            rule: ("unencrypted_suffix", "_unencrypted"),
            mac_only_encrypted: false,
            groups: vec![stanzas],
            lastmodified: "2026-12-01T21:00:00Z",
        }
    }

    /// A fresh data key split across one key group per identity (threshold
    /// `threshold`), each share wrapped by the age CLI.
    pub fn shamir(groups: &[&Identity], threshold: usize) -> Self {
        let key: [u8; 32] = rand::random();
        let shares = shamir_split(&key, groups.len() as u8, threshold);
        let mut w = Self::new(&[]);
        w.key = key;
        w.groups = groups
            .iter()
            .zip(shares)
            .map(|(id, share)| vec![(id.recipient.clone(), wrap(&share, &id.recipient))])
            .collect();
        w
    }

    fn encrypts(&self, path: &[String]) -> bool {
        let (kind, v) = self.rule;
        let re = regex::Regex::new(v).unwrap();
        match kind {
            "unencrypted_suffix" => !path.iter().any(|k| k.ends_with(v)),
            "encrypted_suffix" => path.iter().any(|k| k.ends_with(v)),
            "unencrypted_regex" => !path.iter().any(|k| re.is_match(k)),
            "encrypted_regex" => path.iter().any(|k| re.is_match(k)),
            other => panic!("rule {other}"),
        }
    }

    /// `ENC[AES256_GCM,...]` of `plain` with a random 32-byte iv.
    pub fn seal(&self, plain: &[u8], aad: &str, kind: &str) -> String {
        let iv: [u8; 32] = rand::random();
        let cipher = AesGcm::<Aes256, U32>::new(&Array::from(self.key));
        let out = cipher
            .encrypt(
                &Array::from(iv),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap();
        let (data, tag) = out.split_at(out.len() - 16);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
            b64(data),
            b64(&iv),
            b64(tag)
        )
    }

    /// Encrypts the values of `doc` in place; returns the MAC's hex digest.
    fn encrypt(&self, doc: &mut Mapping) -> String {
        let mut hash = Sha512::new();
        if self.mac_only_encrypted {
            hash.update(Sha256::digest(b"sops"));
        }
        fn walk(w: &Writer, v: &mut Value, path: &mut Vec<String>, hash: &mut Sha512) {
            let (kind, bytes) = match v {
                Value::Mapping(m) => {
                    for (k, v) in m.iter_mut() {
                        path.push(k.as_str().unwrap().to_owned());
                        walk(w, v, path, hash);
                        path.pop();
                    }
                    return;
                }
                Value::Sequence(items) => {
                    items.iter_mut().for_each(|i| walk(w, i, path, hash));
                    return;
                }
                Value::Null => return,
                Value::String(s) => ("str", s.clone().into_bytes()),
                Value::Bool(b) => ("bool", if *b { "True" } else { "False" }.into()),
                Value::Number(n) if n.is_i64() => ("int", n.to_string().into_bytes()),
                Value::Number(n) => ("float", n.as_f64().unwrap().to_string().into_bytes()),
                Value::Tagged(_) => panic!("no tags"),
            };
            let encrypted = w.encrypts(path);
            if !w.mac_only_encrypted || encrypted {
                hash.update(&bytes);
            }
            if encrypted && !bytes.is_empty() {
                *v = Value::String(w.seal(&bytes, &format!("{}:", path.join(":")), kind));
            }
        }
        let mut root = Value::Mapping(std::mem::take(doc));
        walk(self, &mut root, &mut Vec::new(), &mut hash);
        let Value::Mapping(m) = root else { unreachable!() };
        *doc = m;
        hex::encode_upper(hash.finalize())
    }

    fn metadata(&self, mac: &str) -> Mapping {
        let stanzas = |g: &Vec<(String, String)>| {
            Value::Sequence(
                g.iter()
                    .map(|(r, e)| {
                        let mut m = Mapping::new();
                        m.insert("recipient".into(), r.as_str().into());
                        m.insert("enc".into(), e.as_str().into());
                        Value::Mapping(m)
                    })
                    .collect(),
            )
        };
        let mut m = Mapping::new();
        if let [group] = self.groups.as_slice() {
            m.insert("age".into(), stanzas(group));
        } else {
            let groups = self
                .groups
                .iter()
                .map(|g| {
                    let mut gm = Mapping::new();
                    gm.insert("age".into(), stanzas(g));
                    Value::Mapping(gm)
                })
                .collect();
            m.insert("key_groups".into(), Value::Sequence(groups));
            m.insert(
                "shamir_threshold".into(),
                Value::Number((self.groups.len() as u64).into()),
            );
        }
        m.insert("lastmodified".into(), self.lastmodified.into());
        m.insert("mac".into(), self.seal(mac.as_bytes(), self.lastmodified, "str").into());
        m.insert(self.rule.0.into(), self.rule.1.into());
        if self.mac_only_encrypted {
            m.insert("mac_only_encrypted".into(), true.into());
        }
        m.insert("version".into(), "3.13.2".into());
        m
    }

    /// A YAML SOPS file of `doc` (a YAML map in the order given).
    pub fn yaml(&self, doc: &str) -> String {
        let mut doc: Mapping = yaml_serde::from_str(doc).unwrap();
        let mac = self.encrypt(&mut doc);
        doc.insert("sops".into(), Value::Mapping(self.metadata(&mac)));
        yaml_serde::to_string(&doc).unwrap()
    }

    /// A dotenv SOPS file of `entries`, metadata flattened into `sops_` keys.
    pub fn dotenv(&self, entries: &[(&str, &str)]) -> String {
        let mut doc = Mapping::new();
        for (k, v) in entries {
            doc.insert((*k).into(), (*v).into());
        }
        let mac = self.encrypt(&mut doc);
        let mut out = String::new();
        for (k, v) in &doc {
            out += &format!("{}={}\n", k.as_str().unwrap(), v.as_str().unwrap().replace('\n', "\\n"));
        }
        fn flatten(prefix: &str, v: &Value, out: &mut String) {
            match v {
                Value::Mapping(m) => m
                    .iter()
                    .for_each(|(k, v)| flatten(&format!("{prefix}__map_{}", k.as_str().unwrap()), v, out)),
                Value::Sequence(s) => s
                    .iter()
                    .enumerate()
                    .for_each(|(i, v)| flatten(&format!("{prefix}__list_{i}"), v, out)),
                Value::String(s) => *out += &format!("{prefix}={}\n", s.replace('\n', "\\n")),
                other => *out += &format!("{prefix}={}\n", yaml_serde::to_string(other).unwrap().trim()),
            }
        }
        for (k, v) in &self.metadata(&mac) {
            flatten(&format!("sops_{}", k.as_str().unwrap()), v, &mut out);
        }
        out
    }
}

//! Cluster secrets, generated once per cluster and kept in the state dir
//! (`<state>/<cluster>/`), written atomically with mode 0600, never printed.
//!
//! Talos: `secrets.yaml` has exactly the layout of `talosctl gen secrets`
//! (so a bundle can be imported with `--secrets FILE` and used by `talosctl`),
//! and `talos-admin.yaml` holds the `talosconfig` admin client certificate,
//! issued once so that rendering is deterministic. k3s: `secrets.yaml` holds
//! the cluster token.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use rand::{Rng, RngCore};
use rcgen::DnType;
use serde::{Deserialize, Serialize};

use super::pki::{self, CaKind, CertKey};
use crate::inventory::{Cluster, Distribution};

/// File name of the secrets bundle inside `<state>/<cluster>/`.
pub const SECRETS_FILE: &str = "secrets.yaml";
/// File name of the Talos admin client certificate inside `<state>/<cluster>/`.
pub const ADMIN_FILE: &str = "talos-admin.yaml";

/// The secrets of one cluster, by distribution.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one value per cluster: its size does not matter
pub enum SecretsBundle {
    Talos(TalosBundle),
    K3s(K3sSecrets),
}

impl fmt::Debug for SecretsBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Talos(_) => "SecretsBundle::Talos(***)",
            Self::K3s(_) => "SecretsBundle::K3s(***)",
        })
    }
}

/// The Talos secrets plus the admin client certificate issued from them.
#[derive(Clone)]
pub struct TalosBundle {
    pub secrets: TalosSecrets,
    pub admin: B64CertKey,
}

/// The k3s cluster secrets (`secrets.yaml` of a k3s cluster).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSecrets {
    pub k3s: K3sToken,
}

/// The k3s cluster token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sToken {
    pub token: String,
}

/// `secrets.yaml` of `talosctl gen secrets`. Certificates and keys are base64 of PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct TalosSecrets {
    pub cluster: ClusterIds,
    pub secrets: Tokens,
    pub trustdinfo: TrustdInfo,
    pub certs: Certs,
}

/// `cluster:` of the bundle.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterIds {
    pub id: String,
    pub secret: String,
}

/// `secrets:` of the bundle.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub bootstraptoken: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretboxencryptionsecret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbcencryptionsecret: Option<String>,
}

/// `trustdinfo:` of the bundle.
#[derive(Clone, Serialize, Deserialize)]
pub struct TrustdInfo {
    pub token: String,
}

/// `certs:` of the bundle.
#[derive(Clone, Serialize, Deserialize)]
pub struct Certs {
    pub etcd: B64CertKey,
    pub k8s: B64CertKey,
    pub k8saggregator: B64CertKey,
    pub k8sserviceaccount: B64Key,
    pub os: B64CertKey,
}

/// A certificate and key, each base64 of PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct B64CertKey {
    pub crt: String,
    pub key: String,
}

/// A key alone, base64 of PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct B64Key {
    pub key: String,
}

fn b64(pem: &str) -> String {
    STANDARD.encode(pem.as_bytes())
}

fn unb64(field: &str, v: &str) -> Result<String> {
    let bytes = STANDARD
        .decode(v.trim())
        .with_context(|| format!("{field} is not base64"))?;
    String::from_utf8(bytes).with_context(|| format!("{field} is not base64 of PEM text"))
}

impl From<CertKey> for B64CertKey {
    fn from(c: CertKey) -> Self {
        Self {
            crt: b64(&c.crt),
            key: b64(&c.key),
        }
    }
}

impl B64CertKey {
    /// Decodes to PEM text.
    pub fn decode(&self, field: &str) -> Result<CertKey> {
        Ok(CertKey {
            crt: unb64(&format!("{field}.crt"), &self.crt)?,
            key: unb64(&format!("{field}.key"), &self.key)?,
        })
    }
}

/// `[a-z0-9]{n}`.
fn token_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A Kubernetes-style bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
fn bootstrap_token() -> String {
    format!("{}.{}", token_chars(6), token_chars(16))
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b
}

impl TalosSecrets {
    /// Generates a fresh bundle (includes an RSA-4096 key: takes a moment).
    pub fn generate() -> Result<Self> {
        let ca = |kind, dn: &[(DnType, &str)], what: &str| {
            pki::generate_ca(kind, dn)
                .map(B64CertKey::from)
                .with_context(|| format!("generating the {what} CA"))
        };
        Ok(Self {
            cluster: ClusterIds {
                id: URL_SAFE.encode(random32()),
                secret: STANDARD.encode(random32()),
            },
            secrets: Tokens {
                bootstraptoken: bootstrap_token(),
                secretboxencryptionsecret: Some(STANDARD.encode(random32())),
                aescbcencryptionsecret: None,
            },
            trustdinfo: TrustdInfo {
                token: bootstrap_token(),
            },
            certs: Certs {
                etcd: ca(CaKind::P256, &[(DnType::OrganizationName, "etcd")], "etcd")?,
                k8s: ca(CaKind::P256, &[(DnType::OrganizationName, "kubernetes")], "Kubernetes")?,
                k8saggregator: ca(CaKind::P256, &[(DnType::CommonName, "front-proxy")], "aggregator")?,
                k8sserviceaccount: B64Key {
                    key: b64(&pki::generate_service_account_key().context("generating the service-account key")?),
                },
                os: ca(CaKind::Ed25519, &[(DnType::OrganizationName, "talos")], "OS")?,
            },
        })
    }

    /// Parses a `talosctl gen secrets` bundle and checks every field decodes
    /// to PEM of the expected kind. Errors name the field, never its value.
    pub fn parse(text: &str) -> Result<Self> {
        let s: Self = yaml_serde::from_str(text).map_err(|e| {
            // YAML errors quote no values for missing/unknown fields, but
            // a type error may: keep only the location.
            let at = e
                .location()
                .map(|l| format!(" at line {}", l.line()))
                .unwrap_or_default();
            anyhow::anyhow!(
                "not a Talos secrets bundle (talosctl gen secrets layout){at}: {}",
                redact_serde(&e)
            )
        })?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<()> {
        let c = &self.certs;
        for (field, ck, key_labels) in [
            ("certs.etcd", &c.etcd, &["EC PRIVATE KEY"][..]),
            ("certs.k8s", &c.k8s, &["EC PRIVATE KEY"][..]),
            ("certs.k8saggregator", &c.k8saggregator, &["EC PRIVATE KEY"][..]),
            ("certs.os", &c.os, &["ED25519 PRIVATE KEY", "PRIVATE KEY"][..]),
        ] {
            let d = ck.decode(field)?;
            expect_pem(&format!("{field}.crt"), &d.crt, &["CERTIFICATE"])?;
            expect_pem(&format!("{field}.key"), &d.key, key_labels)?;
        }
        let sa = unb64("certs.k8sserviceaccount.key", &c.k8sserviceaccount.key)?;
        expect_pem(
            "certs.k8sserviceaccount.key",
            &sa,
            &["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"],
        )?;
        if self.cluster.id.is_empty() || self.cluster.secret.is_empty() {
            bail!("cluster.id and cluster.secret must be set");
        }
        Ok(())
    }

    /// The bundle as YAML, `talosctl gen secrets` layout.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("secrets bundle serialises")
    }
}

/// YAML messages for invalid types can quote the value: drop everything after the kind of error.
fn redact_serde(e: &yaml_serde::Error) -> String {
    let msg = e.to_string();
    match msg.find("invalid type") {
        Some(_) => "a field has the wrong type".into(),
        None => msg.split(" at line").next().unwrap_or(&msg).to_owned(),
    }
}

fn expect_pem(field: &str, text: &str, labels: &[&str]) -> Result<()> {
    let p = pem::parse(text).map_err(|_| anyhow::anyhow!("{field} is not PEM"))?;
    if !labels.contains(&p.tag()) {
        bail!("{field} has PEM label `{}`, expected one of {labels:?}", p.tag());
    }
    Ok(())
}

impl TalosBundle {
    /// Generates a fresh bundle and its admin certificate.
    pub fn generate() -> Result<Self> {
        Self::from_secrets(TalosSecrets::generate()?)
    }

    /// Issues the admin client certificate for an existing bundle.
    pub fn from_secrets(secrets: TalosSecrets) -> Result<Self> {
        let os = secrets.certs.os.decode("certs.os")?;
        let admin = pki::admin_client_cert(&os)?.into();
        Ok(Self { secrets, admin })
    }

    /// Reads `secrets.yaml` and `talos-admin.yaml` from `dir`; issues (and
    /// saves) the admin certificate when only the bundle is there.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SECRETS_FILE);
        let Some(text) = read_opt(&path)? else {
            return Ok(None);
        };
        let secrets = TalosSecrets::parse(&text).with_context(|| format!("reading {}", path.display()))?;
        let admin_path = dir.join(ADMIN_FILE);
        match read_opt(&admin_path)? {
            Some(a) => {
                let admin: B64CertKey = yaml_serde::from_str(&a)
                    .map_err(|e| anyhow::anyhow!("reading {}: {}", admin_path.display(), redact_serde(&e)))?;
                Ok(Some(Self { secrets, admin }))
            }
            None => {
                let b = Self::from_secrets(secrets)?;
                b.save(dir)?;
                Ok(Some(b))
            }
        }
    }

    /// Writes both files into `dir` (0600, atomic).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let header = "# Talos secrets bundle (talosctl gen secrets layout). Secret: keep private, back it up.\n";
        write(&dir.join(SECRETS_FILE), &format!("{header}{}", self.secrets.to_yaml()))?;
        let admin = format!(
            "# talosconfig admin client certificate (O=os:admin), issued from certs.os of {SECRETS_FILE}. Secret.\n{}",
            yaml_serde::to_string(&self.admin).expect("serialises")
        );
        write(&dir.join(ADMIN_FILE), &admin)
    }
}

impl K3sSecrets {
    /// A fresh random cluster token (64 hexadecimal digits).
    pub fn generate() -> Self {
        Self {
            k3s: K3sToken {
                token: hex::encode(random32()),
            },
        }
    }

    /// Reads `secrets.yaml` of a k3s cluster from `dir`.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SECRETS_FILE);
        let Some(text) = read_opt(&path)? else {
            return Ok(None);
        };
        let s: Self = yaml_serde::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "reading {}: not a k3s secrets file (`k3s: {{token: ...}}`): {}",
                path.display(),
                redact_serde(&e)
            )
        })?;
        if s.k3s.token.is_empty() {
            bail!("reading {}: k3s.token is empty", path.display());
        }
        Ok(Some(s))
    }

    /// Writes `secrets.yaml` into `dir` (0600, atomic).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = format!(
            "# k3s cluster secrets. Secret: keep private, back it up.\n{}",
            yaml_serde::to_string(self).expect("serialises")
        );
        write(&dir.join(SECRETS_FILE), &text)
    }
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    crate::fsutil::write_secret(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// `<state>/<cluster>`: where a cluster's secrets live.
pub fn cluster_dir(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join(cluster)
}

impl SecretsBundle {
    /// Loads the cluster's secrets from the state dir; `None` when there are none yet.
    pub fn load(state_dir: &Path, cluster: &Cluster) -> Result<Option<Self>> {
        refuse_age(cluster)?;
        let dir = cluster_dir(state_dir, &cluster.name);
        let r = match cluster.distribution {
            Distribution::Talos => TalosBundle::load(&dir)?.map(Self::Talos),
            Distribution::K3s => K3sSecrets::load(&dir)?.map(Self::K3s),
        };
        Ok(r)
    }

    /// Loads the cluster's secrets, generating and saving them on first use.
    pub fn load_or_generate(state_dir: &Path, cluster: &Cluster) -> Result<Self> {
        if let Some(b) = Self::load(state_dir, cluster).with_context(|| format!("cluster {}", cluster.name))? {
            return Ok(b);
        }
        let dir = cluster_dir(state_dir, &cluster.name);
        let b = match cluster.distribution {
            Distribution::Talos => {
                let b =
                    TalosBundle::generate().with_context(|| format!("cluster {}: generating secrets", cluster.name))?;
                b.save(&dir)?;
                Self::Talos(b)
            }
            Distribution::K3s => {
                let s = K3sSecrets::generate();
                s.save(&dir)?;
                Self::K3s(s)
            }
        };
        Ok(b)
    }

    /// Imports a `talosctl gen secrets` bundle for a Talos cluster into the
    /// state dir. Refuses to replace a different bundle already there.
    pub fn import(state_dir: &Path, cluster: &Cluster, file: &Path) -> Result<Self> {
        refuse_age(cluster)?;
        if cluster.distribution != Distribution::Talos {
            bail!(
                "cluster {}: --secrets imports a Talos secrets bundle, but this is a k3s cluster",
                cluster.name
            );
        }
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let secrets = TalosSecrets::parse(&text).with_context(|| format!("importing {}", file.display()))?;
        let dir = cluster_dir(state_dir, &cluster.name);
        if let Some(existing) = TalosBundle::load(&dir)? {
            if existing.secrets.to_yaml() == secrets.to_yaml() {
                return Ok(Self::Talos(existing));
            }
            bail!(
                "cluster {}: {} already holds a different secrets bundle; importing {} would replace the cluster's CAs. Move the old one away first if that is really meant",
                cluster.name,
                dir.join(SECRETS_FILE).display(),
                file.display()
            );
        }
        let b = TalosBundle::from_secrets(secrets)?;
        b.save(&dir)?;
        Ok(Self::Talos(b))
    }

    /// The Talos bundle, or an error naming the cluster.
    pub fn talos(&self) -> Result<&TalosBundle> {
        match self {
            Self::Talos(b) => Ok(b),
            Self::K3s(_) => bail!("a Talos cluster needs a Talos secrets bundle, found k3s secrets"),
        }
    }

    /// The k3s secrets, or an error.
    pub fn k3s(&self) -> Result<&K3sSecrets> {
        match self {
            Self::K3s(s) => Ok(s),
            Self::Talos(_) => bail!("a k3s cluster needs k3s secrets, found a Talos bundle"),
        }
    }
}

fn refuse_age(cluster: &Cluster) -> Result<()> {
    if !cluster.secrets.age_recipients.is_empty() {
        bail!(
            "cluster {}: encrypting the secrets bundle at rest with age recipients (secrets.age_recipients) is not implemented yet; \
             remove age_recipients to keep the bundle as a 0600 file in the state dir",
            cluster.name
        );
    }
    Ok(())
}

impl fmt::Debug for TalosSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TalosSecrets(***)")
    }
}

impl fmt::Debug for TalosBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TalosBundle(***)")
    }
}

impl fmt::Debug for K3sSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("K3sSecrets(***)")
    }
}

//! Client credentials for configured-mode (mTLS) connections, usually read
//! from a talosconfig.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::error::TalosError;
use crate::secret::Secret;

/// OS CA certificate, admin client certificate and its key, all PEM text.
#[derive(Debug, Clone)]
pub struct TalosCredentials {
    /// OS CA (`machine.ca`) certificate that signs every node's API certificate.
    pub ca_pem: String,
    /// Client certificate (Subject O = `os:admin`, EKU clientAuth).
    pub crt_pem: String,
    /// Client key; `ED25519 PRIVATE KEY` and `PRIVATE KEY` labels are accepted.
    pub key_pem: Secret,
}

#[derive(Deserialize)]
struct TalosConfigFile {
    context: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, TalosConfigContext>,
}

#[derive(Deserialize)]
struct TalosConfigContext {
    ca: Option<String>,
    crt: Option<String>,
    key: Option<String>,
}

impl TalosCredentials {
    /// Credentials from PEM text.
    pub fn from_pem(ca_pem: impl Into<String>, crt_pem: impl Into<String>, key_pem: Secret) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            crt_pem: crt_pem.into(),
            key_pem,
        }
    }

    /// Reads a talosconfig (YAML: `context`, `contexts.NAME.{ca,crt,key}` as
    /// base64 of PEM); `context` overrides the file's current context.
    pub fn from_talosconfig(yaml: &str, context: Option<&str>) -> Result<Self, TalosError> {
        let file: TalosConfigFile = yaml_serde::from_str(yaml)
            .map_err(|e| TalosError::Credentials(format!("talosconfig is not valid YAML: {e}")))?;
        let name = context
            .map(str::to_owned)
            .or(file.context)
            .ok_or_else(|| TalosError::Credentials("talosconfig names no context".into()))?;
        let ctx = file
            .contexts
            .get(&name)
            .ok_or_else(|| TalosError::Credentials(format!("talosconfig has no context {name:?}")))?;
        let field = |value: &Option<String>, key: &str| -> Result<String, TalosError> {
            let value = value
                .as_deref()
                .ok_or_else(|| TalosError::Credentials(format!("talosconfig context {name:?} has no {key}")))?;
            let bytes = STANDARD
                .decode(value.trim())
                .map_err(|_| TalosError::Credentials(format!("talosconfig context {name:?}: {key} is not base64")))?;
            String::from_utf8(bytes)
                .map_err(|_| TalosError::Credentials(format!("talosconfig context {name:?}: {key} is not PEM text")))
        };
        Ok(Self {
            ca_pem: field(&ctx.ca, "ca")?,
            crt_pem: field(&ctx.crt, "crt")?,
            key_pem: Secret::new(field(&ctx.key, "key")?),
        })
    }

    /// Renders a talosconfig with one context holding these credentials.
    pub fn to_talosconfig(&self, context: &str, endpoints: &[String]) -> String {
        let doc = yaml_serde::to_string(&yaml_serde::Value::Mapping(
            [
                ("context".into(), context.into()),
                (
                    "contexts".into(),
                    yaml_serde::Value::Mapping(
                        [(
                            context.into(),
                            yaml_serde::Value::Mapping(
                                [
                                    ("endpoints".into(), endpoints.to_vec().into()),
                                    ("nodes".into(), endpoints.to_vec().into()),
                                    ("ca".into(), STANDARD.encode(&self.ca_pem).into()),
                                    ("crt".into(), STANDARD.encode(&self.crt_pem).into()),
                                    ("key".into(), STANDARD.encode(self.key_pem.expose()).into()),
                                ]
                                .into_iter()
                                .collect(),
                            ),
                        )]
                        .into_iter()
                        .collect(),
                    ),
                ),
            ]
            .into_iter()
            .collect(),
        ));
        doc.unwrap_or_default()
    }
}

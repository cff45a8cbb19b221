//! Reading a machine configuration the way a Talos node does for what the
//! simulator models: tolerant of every field it does not use (real rendered
//! configs are much larger), strict about what real Talos rejects.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use yaml_serde::Value;

/// The role a configuration gives a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineType {
    /// Runs etcd and the Kubernetes control plane.
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

/// What the simulator takes from an applied machine configuration.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// `machine.type`.
    pub machine_type: MachineType,
    /// `cluster.id` (or, when absent, `clusterName` + endpoint): which
    /// simulated cluster (etcd) the node belongs to.
    pub cluster_id: String,
    /// `cluster.clusterName`.
    pub cluster_name: String,
    /// `cluster.controlPlane.endpoint`.
    pub endpoint: String,
    /// Hostname (HostnameConfig document or `machine.network.hostname`), if set.
    pub hostname: Option<String>,
    /// `machine.certSANs`.
    pub cert_sans: Vec<String>,
    /// OS CA certificate PEM (`machine.ca.crt`).
    pub os_ca_crt: String,
    /// OS CA key PEM (`machine.ca.key`), control planes only.
    pub os_ca_key: Option<String>,
    /// Kubernetes CA certificate PEM (`cluster.ca.crt`).
    pub k8s_ca_crt: String,
    /// Kubernetes CA key PEM (`cluster.ca.key`), control planes only.
    pub k8s_ca_key: Option<String>,
    /// The YAML as applied.
    pub raw: String,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_str(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

fn pem_field(v: &Value, path: &[&str]) -> Result<Option<String>, String> {
    let Some(b64) = get_str(v, path) else { return Ok(None) };
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| format!("{}: not base64", path.join(".")))?;
    let pem = String::from_utf8(bytes).map_err(|_| format!("{}: not PEM text", path.join(".")))?;
    if !pem.contains("-----BEGIN ") {
        return Err(format!("{}: not PEM", path.join(".")));
    }
    Ok(Some(pem))
}

/// Parses and validates a (possibly multi-document) machine configuration.
/// The error text is what the node returns with InvalidArgument.
pub fn parse(yaml: &[u8]) -> Result<MachineConfig, String> {
    let text = std::str::from_utf8(yaml).map_err(|_| "configuration is not UTF-8".to_owned())?;
    let mut main = None;
    let mut hostname_doc = None;
    for doc in yaml_serde::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| format!("failed to parse config: {e}"))?;
        if value.is_null() {
            continue;
        }
        if let Some(kind) = get_str(&value, &["kind"]) {
            // Multi-document configs: the v1alpha1 document has no `kind`.
            if kind == "HostnameConfig" {
                hostname_doc = get_str(&value, &["hostname"]);
            }
            continue;
        }
        if main.is_some() {
            return Err("duplicate v1alpha1 configuration document".into());
        }
        main = Some(value);
    }
    let v = main.ok_or("the configuration has no v1alpha1 document")?;
    match get_str(&v, &["version"]).as_deref() {
        Some("v1alpha1") => {}
        Some(other) => return Err(format!("unknown config version {other:?}: expected \"v1alpha1\"")),
        None => return Err("config version is missing".into()),
    }
    let machine_type = match get_str(&v, &["machine", "type"]).as_deref() {
        Some("controlplane") | Some("init") => MachineType::ControlPlane,
        Some("worker") => MachineType::Worker,
        Some(other) => return Err(format!("unknown machine type {other:?}")),
        None => return Err("machine.type is missing".into()),
    };
    let endpoint =
        get_str(&v, &["cluster", "controlPlane", "endpoint"]).ok_or("cluster.controlPlane.endpoint is required")?;
    if !(endpoint.starts_with("https://") && endpoint.len() > "https://".len()) {
        return Err(format!(
            "cluster.controlPlane.endpoint {endpoint:?} must be an https:// URL"
        ));
    }
    let os_ca_crt = pem_field(&v, &["machine", "ca", "crt"])?.ok_or("machine.ca.crt is required")?;
    let os_ca_key = pem_field(&v, &["machine", "ca", "key"])?;
    let k8s_ca_crt = pem_field(&v, &["cluster", "ca", "crt"])?.ok_or("cluster.ca.crt is required")?;
    let k8s_ca_key = pem_field(&v, &["cluster", "ca", "key"])?;
    match machine_type {
        MachineType::Worker if os_ca_key.is_some() => {
            return Err("machine.ca.key must not be set on a worker: the OS CA key belongs on control planes".into());
        }
        MachineType::Worker if k8s_ca_key.is_some() => {
            return Err("cluster.ca.key must not be set on a worker".into());
        }
        MachineType::ControlPlane if os_ca_key.is_none() => {
            return Err("machine.ca.key is required on a control plane".into());
        }
        MachineType::ControlPlane if k8s_ca_key.is_none() => {
            return Err("cluster.ca.key is required on a control plane".into());
        }
        _ => {}
    }
    let cluster_name = get_str(&v, &["cluster", "clusterName"]).unwrap_or_else(|| "talos".into());
    let cluster_id = get_str(&v, &["cluster", "id"]).unwrap_or_else(|| format!("{cluster_name}@{endpoint}"));
    let cert_sans = get(&v, &["machine", "certSANs"])
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok(MachineConfig {
        machine_type,
        cluster_id,
        cluster_name,
        endpoint,
        hostname: hostname_doc.or_else(|| get_str(&v, &["machine", "network", "hostname"])),
        cert_sans,
        os_ca_crt,
        os_ca_key,
        k8s_ca_crt,
        k8s_ca_key,
        raw: text.to_owned(),
    })
}

//! The kubeconfig k3s writes on its first server (`/etc/rancher/k3s/k3s.yaml`)
//! made fit for the operator: its server pointed at the cluster endpoint
//! instead of `127.0.0.1`, and its entries named after the cluster instead of
//! `default` (so merging several clusters into one file keeps them apart).
//! Also the `/readyz` wait through the Kubernetes API.

use std::time::Duration;

use crate::engine::slots::{self, Check};
use yaml_serde::Value;

/// `https://HOST:6443` for an inventory endpoint given as an address or host
/// name; an endpoint that already is a URL is kept as is.
pub fn endpoint_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.contains("://") {
        return endpoint.to_owned();
    }
    let host = match endpoint.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => endpoint.to_owned(),
    };
    if host.starts_with('[') && host.contains("]:") || !host.starts_with('[') && host.matches(':').count() == 1 {
        format!("https://{host}")
    } else {
        format!("https://{host}:6443")
    }
}

/// sha256 (hex) of the cluster CA a kubeconfig trusts (its first cluster's
/// `certificate-authority-data`, decoded): what k3s puts after `K10` in its
/// node token (the sha256 of the server CA bundle it serves as `/cacerts`).
pub fn ca_sha256(kubeconfig: &[u8]) -> Result<String, String> {
    use base64::Engine;
    use sha2::Digest;
    let doc: Value = yaml_serde::from_slice(kubeconfig).map_err(|_| "the kubeconfig is not valid YAML".to_owned())?;
    let data = doc
        .get("clusters")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("cluster"))
        .and_then(|c| c.get("certificate-authority-data"))
        .and_then(Value::as_str)
        .ok_or("the kubeconfig's first cluster has no certificate-authority-data")?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| "the kubeconfig's certificate-authority-data is not base64".to_owned())?;
    Ok(hex::encode(sha2::Sha256::digest(&pem)))
}

/// Rewrites `k3s.yaml`: every cluster's server becomes `server`; the
/// cluster, user and context are renamed `<cluster>` / `admin@<cluster>` /
/// `<cluster>`, and the current context set to it. Errors never quote the
/// document (it holds a client key).
pub fn point_at(k3s_yaml: &[u8], cluster: &str, server: &str) -> Result<String, String> {
    let mut doc: Value = yaml_serde::from_slice(k3s_yaml)
        .map_err(|e| format!("k3s.yaml is not valid YAML (line {:?})", e.location().map(|l| l.line())))?;
    let user = format!("admin@{cluster}");
    let clusters = doc
        .get_mut("clusters")
        .and_then(Value::as_sequence_mut)
        .filter(|c| !c.is_empty())
        .ok_or("k3s.yaml has no clusters")?;
    let old_cluster = clusters[0].get("name").cloned();
    for c in clusters.iter_mut() {
        let entry = c
            .get_mut("cluster")
            .and_then(Value::as_mapping_mut)
            .ok_or("k3s.yaml: a cluster entry has no `cluster` mapping")?;
        entry.insert("server".into(), server.into());
    }
    clusters.truncate(1);
    clusters[0]["name"] = cluster.into();
    let users = doc
        .get_mut("users")
        .and_then(Value::as_sequence_mut)
        .filter(|u| !u.is_empty())
        .ok_or("k3s.yaml has no users")?;
    let old_user = users[0].get("name").cloned();
    users.truncate(1);
    users[0]["name"] = user.clone().into();
    let contexts = doc
        .get_mut("contexts")
        .and_then(Value::as_sequence_mut)
        .filter(|c| !c.is_empty())
        .ok_or("k3s.yaml has no contexts")?;
    contexts.retain(|c| {
        c.get("context").and_then(|x| x.get("cluster")) == old_cluster.as_ref()
            && c.get("context").and_then(|x| x.get("user")) == old_user.as_ref()
    });
    if contexts.is_empty() {
        return Err("k3s.yaml has no context joining its cluster and user".into());
    }
    contexts.truncate(1);
    contexts[0]["name"] = cluster.into();
    contexts[0]["context"]["cluster"] = cluster.into();
    contexts[0]["context"]["user"] = user.into();
    doc["current-context"] = cluster.into();
    yaml_serde::to_string(&doc).map_err(|e| format!("serialising the kubeconfig: {e}"))
}

/// Waits until `GET /readyz` answers `ok`; the last answer or error is in the timeout message.
pub async fn wait_readyz(
    client: &crate::k8s::Client,
    timeout: Duration,
    cancelled: impl Fn() -> bool,
) -> Result<(), String> {
    let what = format!("the Kubernetes API at {} ready (GET /readyz)", client.server());
    slots::poll_until(&what, timeout, cancelled, || async {
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a static request is valid");
        match client.kube().request_text(req).await {
            Ok(body) if body.trim() == "ok" => Check::Met(()),
            Ok(body) => Check::Not(format!("answered {:?}", body.chars().take(200).collect::<String>())),
            Err(e) => Check::Not(e.to_string()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_hash_is_that_of_the_decoded_certificate() {
        use sha2::Digest;
        // Q0E= is base64 of "CA".
        assert_eq!(
            ca_sha256(K3S_YAML.as_bytes()).unwrap(),
            hex::encode(sha2::Sha256::digest(b"CA"))
        );
        let none = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://x\n  name: a\n";
        assert!(
            ca_sha256(none.as_bytes())
                .unwrap_err()
                .contains("no certificate-authority-data")
        );
        assert!(ca_sha256(b"[").unwrap_err().contains("not valid YAML"));
    }

    const K3S_YAML: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    #[test]
    fn endpoint_urls() {
        assert_eq!(endpoint_url("198.18.0.11"), "https://198.18.0.11:6443");
        assert_eq!(endpoint_url("k8s.example.org"), "https://k8s.example.org:6443");
        assert_eq!(endpoint_url("k8s.example.org:7443"), "https://k8s.example.org:7443");
        assert_eq!(endpoint_url("fd00::10"), "https://[fd00::10]:6443");
        assert_eq!(endpoint_url("https://vip:6443/"), "https://vip:6443");
    }

    #[test]
    fn points_the_server_at_the_endpoint_and_names_entries_after_the_cluster() {
        let out = point_at(K3S_YAML.as_bytes(), "rack", "https://198.18.0.11:6443").unwrap();
        let v: Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://198.18.0.11:6443");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], "Q0E=");
        assert_eq!(v["clusters"][0]["name"], "rack");
        assert_eq!(v["users"][0]["name"], "admin@rack");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "rack");
        assert_eq!(v["contexts"][0]["context"]["user"], "admin@rack");
        assert_eq!(v["current-context"], "rack");
    }

    #[test]
    fn errors_do_not_quote_the_document() {
        let e = point_at(
            b"clusters: []\nusers:\n- name: x\n  user: {client-key-data: SECRETKEY}\n",
            "c",
            "https://x:6443",
        )
        .unwrap_err();
        assert!(!e.contains("SECRETKEY"), "{e}");
        assert!(e.contains("no clusters"), "{e}");
    }
}

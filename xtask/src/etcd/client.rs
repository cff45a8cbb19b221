//! A small etcd v3 client over etcd's gRPC-JSON gateway (`POST /v3/...`,
//! keys and values base64, 64-bit integers as strings). Upstream: etcd
//! docs, "Why gRPC gateway" (v3.4 dev-guide/api_grpc_gateway). The etcd-client
//! crate would need `protoc` at build time, which this workspace avoids.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// One key as etcd returns it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

/// One member as `MemberList` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A client for one member's client URL (`http://IP:2379`).
#[derive(Clone, Debug)]
pub struct EtcdClient {
    http: reqwest::Client,
    base: String,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        v => v.as_u64().unwrap_or(0),
    }
}

/// Smallest key after every key with `prefix` (etcd's `WithPrefix` range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdClient {
    /// A client for `base` (e.g. `http://127.81.0.1:2379`).
    pub fn new(base: &str) -> Self {
        // reqwest is built without a default rustls provider: the project's one first.
        bootstrap::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("an HTTP client without TLS builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The member URL this client talks to.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("etcd {url}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.with_context(|| format!("etcd {url}: response"))?;
        if !status.is_success() || v.get("error").is_some() {
            let msg = v["message"].as_str().or(v["error"].as_str()).unwrap_or("unknown error");
            anyhow::bail!("etcd {url}: {status}: {msg}");
        }
        Ok(v)
    }

    /// Writes a key; returns the new revision.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<u64> {
        let v = self
            .call("/v3/kv/put", json!({"key": b64(key.as_bytes()), "value": b64(value)}))
            .await?;
        Ok(num(&v["header"]["revision"]))
    }

    /// Deletes a key; returns the new revision.
    pub async fn delete(&self, key: &str) -> Result<u64> {
        let v = self
            .call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(num(&v["header"]["revision"]))
    }

    /// One key, if present.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>> {
        let v = self.call("/v3/kv/range", json!({"key": b64(key.as_bytes())})).await?;
        Ok(kvs(&v)?.into_iter().next())
    }

    /// Every key under `prefix` and the store's current revision.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, u64)> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))}),
            )
            .await?;
        Ok((kvs(&v)?, num(&v["header"]["revision"])))
    }

    /// The current members.
    pub async fn member_list(&self) -> Result<Vec<MemberInfo>> {
        let v = self.call("/v3/cluster/member/list", json!({})).await?;
        Ok(members(&v["members"]))
    }

    /// Adds a member by peer URL; returns its id and the members after the change.
    pub async fn member_add(&self, peer_url: &str) -> Result<(u64, Vec<MemberInfo>)> {
        let v = self
            .call("/v3/cluster/member/add", json!({"peerURLs": [peer_url]}))
            .await?;
        Ok((num(&v["member"]["ID"]), members(&v["members"])))
    }

    /// Removes a member by id.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<MemberInfo>> {
        let v = self
            .call("/v3/cluster/member/remove", json!({"ID": id.to_string()}))
            .await?;
        Ok(members(&v["members"]))
    }

    /// Whether the member answers `/health` with a quorum behind it.
    pub async fn healthy(&self) -> bool {
        let Ok(resp) = self.http.get(format!("{}/health", self.base)).send().await else {
            return false;
        };
        resp.json::<Value>().await.is_ok_and(|v| v["health"] == "true")
    }
}

fn kvs(v: &Value) -> Result<Vec<Kv>> {
    v["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let key = B64.decode(kv["key"].as_str().unwrap_or_default())?;
            let value = B64.decode(kv["value"].as_str().unwrap_or_default())?;
            Ok(Kv {
                key: String::from_utf8(key).context("etcd key is not UTF-8")?,
                value,
                mod_revision: num(&kv["mod_revision"]),
            })
        })
        .collect()
}

fn members(v: &Value) -> Vec<MemberInfo> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| MemberInfo {
            id: num(&m["ID"]),
            name: m["name"].as_str().unwrap_or_default().to_owned(),
            peer_urls: strings(&m["peerURLs"]),
            client_urls: strings(&m["clientURLs"]),
            is_learner: m["isLearner"].as_bool().unwrap_or(false),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(super::prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(super::prefix_end(b"a\xff"), b"b".to_vec());
    }
}

//! `k3s server`: the cluster CA, node token, admin kubeconfig, the Kubernetes
//! API simulator on :6443 and the join port for agents.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::config::Config;
use super::{SUPERVISOR_PORT, log_call, token_proof};
use crate::kube_sim::{Behaviour, KubeSim, NodeRegistration, SimOptions, SimTls};

const DATA: &str = "/var/lib/rancher/k3s/server";
const K3S_YAML: &str = "/etc/rancher/k3s/k3s.yaml";
/// The embedded etcd's data dir (k3s: `${data-dir}/server/db/etcd`).
const ETCD_DATA: &str = "/var/lib/rancher/k3s/server/db/etcd";

/// `k3s server --cluster-reset --cluster-reset-restore-path=FILE`, as k3s
/// documents it (docs.k3s.io, "k3s etcd-snapshot", restoring from a snapshot;
/// k3s pkg/etcd: the old data dir is moved to `etcd-old-<unix time>`, the
/// snapshot restored into a new one as the only member, then the process
/// exits asking for a restart without the flags). Refused as k3s refuses it:
/// the restore path without `--cluster-reset`, a missing file, a running
/// datastore (the service must be stopped first), a damaged snapshot.
pub async fn cluster_reset(cfg: &Config) -> Result<()> {
    anyhow::ensure!(
        cfg.cluster_reset,
        "invalid flag use; --cluster-reset required with --cluster-reset-restore-path"
    );
    anyhow::ensure!(
        cfg.cluster_init,
        "the stand-in runs embedded etcd on its cluster-init server only: --cluster-reset is not simulated on a joining server"
    );
    let Some(path) = cfg.cluster_reset_restore_path.as_deref() else {
        anyhow::bail!(
            "the stand-in does --cluster-reset only with --cluster-reset-restore-path (a membership reset without a restore is not simulated)"
        );
    };
    anyhow::ensure!(
        crate::etcd::member::available(),
        "no embedded etcd on this node (the stand-in needs etcd and etcdctl)"
    );
    let snapshot = Path::new(path);
    anyhow::ensure!(snapshot.is_file(), "etcd: snapshot path does not exist: {path}");
    anyhow::ensure!(
        !crate::etcd::EtcdClient::new(super::snapshot::LOCAL_ETCD)
            .healthy()
            .await,
        "etcd is running on this node: stop k3s before --cluster-reset"
    );
    log_call(&format!("server cluster-reset restore {path}"));
    let db = Path::new(ETCD_DATA).parent().context("etcd data dir has a parent")?;
    std::fs::create_dir_all(db).with_context(|| format!("creating {}", db.display()))?;
    let fresh = db.join("etcd-restore-tmp");
    let _ = std::fs::remove_dir_all(&fresh);
    crate::etcd::member::restore_into(snapshot, &cfg.node_name, std::net::Ipv4Addr::LOCALHOST.into(), &fresh).await?;
    // As k3s does on a restore, the snapshot's bootstrap data must open with this token;
    // if not, the restored copy is dropped and the old data dir stays.
    if let Err(e) = restored_bootstrap_data_is_ours(cfg, &fresh).await {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e);
    }
    if Path::new(ETCD_DATA).exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let old = db.join(format!("etcd-old-{secs}"));
        std::fs::rename(ETCD_DATA, &old).with_context(|| format!("moving {ETCD_DATA} to {}", old.display()))?;
    }
    std::fs::rename(&fresh, ETCD_DATA).with_context(|| format!("moving the restored data to {ETCD_DATA}"))?;
    eprintln!(
        "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${{datadir}}/server/db on each peer etcd server and rejoin the nodes"
    );
    Ok(())
}

/// The datastore key of the bootstrap data for `token` (k3s: the first 12
/// hex digits of its sha256).
fn bootstrap_key(token: &str) -> String {
    use sha2::Digest;
    format!(
        "/bootstrap/{}",
        &hex::encode(sha2::Sha256::digest(token.as_bytes()))[..12]
    )
}

/// Starts the restored data dir `data` briefly and checks that its bootstrap
/// data (if any) is this token's.
async fn restored_bootstrap_data_is_ours(cfg: &Config, data: &Path) -> Result<()> {
    let probe = crate::etcd::EtcdCluster::default();
    probe
        .start_at(&cfg.node_name, std::net::Ipv4Addr::LOCALHOST.into(), data)
        .await
        .map_err(|e| anyhow::anyhow!("starting the restored etcd: {e}"))?;
    let client = crate::etcd::EtcdClient::new(super::snapshot::LOCAL_ETCD);
    let read = client.range_prefix("/bootstrap/").await;
    probe.destroy();
    for _ in 0..100 {
        if !client.healthy().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (kvs, _) = read.context("reading the restored bootstrap data")?;
    let ours = bootstrap_key(&cfg.token);
    anyhow::ensure!(
        kvs.is_empty() || kvs.iter().any(|kv| kv.key == ours),
        "bootstrap data already found and encrypted with different token"
    );
    Ok(())
}

/// The cluster CA through the datastore, as k3s keeps its bootstrap data
/// (k3s pkg/cluster/storage.go: certificates and keys under
/// `/bootstrap/<first 12 hex digits of sha256(token)>`, encrypted with the
/// token; here JSON, the etcd listening on the node's loopback only). A
/// datastore that holds ours (a restart, a restore) wins over the disk, so a
/// restored cluster serves the CA it had when the snapshot was taken; one
/// that holds only another token's is refused, as k3s refuses it; an empty
/// one gets `disk`.
async fn datastore_ca(etcd: &crate::etcd::EtcdClient, token: &str, disk: (String, String)) -> Result<(String, String)> {
    let key = bootstrap_key(token);
    let (kvs, _) = etcd
        .range_prefix("/bootstrap/")
        .await
        .context("reading bootstrap data")?;
    if let Some(kv) = kvs.iter().find(|kv| kv.key == key) {
        let v: serde_json::Value = serde_json::from_slice(&kv.value).context("bootstrap data is not JSON")?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("bootstrap data has no {k}"))
        };
        return Ok((field("ca_cert")?, field("ca_key")?));
    }
    anyhow::ensure!(
        kvs.is_empty(),
        "bootstrap data already found and encrypted with different token"
    );
    let value = serde_json::json!({"ca_cert": disk.0, "ca_key": disk.1});
    etcd.put(&key, value.to_string().as_bytes())
        .await
        .context("writing bootstrap data")?;
    Ok(disk)
}

/// The cluster CA (PEM cert, PEM key): `given` (from the first server, when
/// joining), else the kept one, else a new one; kept for the next start.
fn cluster_ca(given: Option<(String, String)>) -> Result<(String, String)> {
    let dir = Path::new(DATA).join("tls");
    let (cert, key) = (dir.join("server-ca.crt"), dir.join("server-ca.key"));
    let (c, k) = match given {
        Some(ca) => ca,
        None => {
            if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&cert), std::fs::read_to_string(&key)) {
                return Ok((c, k));
            }
            let fresh = SimTls::generate(&["k3s-standin".into()])?;
            let k = fresh.ca_key_pem.context("a generated CA has its key")?;
            (fresh.ca_cert_pem, k)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    bootstrap::fsutil::write_secret(&key, k.as_bytes()).with_context(|| format!("writing {}", key.display()))?;
    bootstrap::fsutil::write_atomic(&cert, c.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok((c, k))
}

fn labels(pairs: &[String]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|l| !l.starts_with("taint:"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs until killed.
pub async fn run(cfg: Config) -> Result<()> {
    log_call("server start");
    let mut own = labels(&cfg.node_labels);
    own.insert("node-role.kubernetes.io/control-plane".into(), "true".into());
    own.insert("node-role.kubernetes.io/master".into(), "true".into());
    own.insert("node-role.kubernetes.io/etcd".into(), "true".into());
    // A joining server registers in the first server's API and takes the
    // cluster CA from it (real k3s servers share it through the datastore).
    let given = match cfg.server_host() {
        Some(host) => {
            let reply = super::agent::join(&host, &cfg, "server", &own).await?;
            log_call("server joined");
            Some(decode_ca(&reply).context("the first server's join reply carries no CA")?)
        }
        None => None,
    };
    // Embedded etcd (k3s `cluster-init`): a real member on the node's loopback, keeping the
    // API's objects, so `k3s etcd-snapshot save` takes a real snapshot. Its data dir is k3s's
    // (`server/db/etcd`): kept across restarts, restored by `--cluster-reset`.
    let embedded = if cfg.cluster_init && crate::etcd::member::available() {
        let etcd = crate::etcd::EtcdCluster::default();
        // A restart may find the previous server's member still releasing its ports, and a
        // loaded machine starts etcd slowly; k3s itself keeps retrying its etcd until it runs.
        let mut attempt = 0;
        while let Err(e) = etcd
            .start_at(
                &cfg.node_name,
                std::net::Ipv4Addr::LOCALHOST.into(),
                Path::new(ETCD_DATA),
            )
            .await
        {
            attempt += 1;
            // To the service's log (/var/log/k3s.log on rack nodes), so a server that never
            // serves says why.
            eprintln!("k3s-standin: embedded etcd, attempt {attempt}: {e}");
            anyhow::ensure!(attempt < 100, "embedded etcd: {e}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        eprintln!("k3s-standin: embedded etcd running after {} attempt(s)", attempt + 1);
        Some(etcd)
    } else {
        None
    };
    let (ca_cert, ca_key) = match &embedded {
        Some(_) => {
            let client = crate::etcd::EtcdClient::new(super::snapshot::LOCAL_ETCD);
            let ca = datastore_ca(&client, &cfg.token, cluster_ca(given)?).await?;
            cluster_ca(Some(ca))?
        }
        None => cluster_ca(given)?,
    };
    let mut sans: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .map(String::from)
    .to_vec();
    sans.extend(cfg.node_ip.map(|ip| ip.to_string()));
    sans.extend(cfg.tls_san.iter().cloned());
    sans.push(cfg.node_name.clone());
    sans.sort();
    sans.dedup();
    let tls = SimTls::with_ca(&ca_cert, &ca_key, &sans)?;
    let admin = tls.issue_client_cert("system:admin", Some("system:masters"))?;
    let behaviour = Behaviour {
        cni_daemonset: if cfg.external_cni {
            Behaviour::default().cni_daemonset
        } else {
            None
        },
        ..Behaviour::default()
    };
    let etcd = match &embedded {
        Some(_) => vec![super::snapshot::LOCAL_ETCD.to_owned()],
        None => Vec::new(),
    };
    let sim = Arc::new(
        KubeSim::start(SimOptions {
            bind: SocketAddr::from(([0, 0, 0, 0], 6443)),
            tls: Some(tls.clone()),
            behaviour,
            cluster_name: "default".into(),
            etcd,
        })
        .await?,
    );
    eprintln!("k3s-standin: serving the Kubernetes API on :6443");
    use sha2::Digest;
    let ca_hash = hex::encode(sha2::Sha256::digest(ca_cert.as_bytes()));
    for f in ["node-token", "token"] {
        let p = Path::new(DATA).join(f);
        bootstrap::fsutil::write_secret(&p, format!("K10{ca_hash}::server:{}\n", cfg.token).as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let kubeconfig = crate::kube_sim::tls::kubeconfig("default", "https://127.0.0.1:6443", &ca_cert, "default", &admin)
        .replace("default@default", "default");
    std::fs::create_dir_all("/etc/rancher/k3s")?;
    bootstrap::fsutil::write_secret(Path::new(K3S_YAML), kubeconfig.as_bytes())
        .with_context(|| format!("writing {K3S_YAML}"))?;

    sim.register(NodeRegistration {
        name: cfg.node_name.clone(),
        internal_ip: cfg.node_ip,
        labels: own,
        taints: cfg
            .node_taints
            .iter()
            .filter_map(|t| super::config::parse_taint(t))
            .collect(),
        kubelet_version: Some(super::version()),
    });

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], SUPERVISOR_PORT)))
        .await
        .with_context(|| format!("binding the join port {SUPERVISOR_PORT}"))?;
    let proof = token_proof(&cfg.token);
    let _embedded = embedded;
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (sim, proof, ca) = (sim.clone(), proof.clone(), encode_ca(&ca_cert, &ca_key));
        tokio::spawn(async move {
            let (rd, mut wr) = conn.into_split();
            let mut line = String::new();
            if BufReader::new(rd).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = handle_join(&sim, &proof, &ca, &line);
            let _ = wr.write_all(reply.as_bytes()).await;
        });
    }
}

/// `CA <cert> <key>` (base64 PEM), as sent to joining servers.
fn encode_ca(cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!("CA {} {}", b64(cert), b64(key))
}

fn decode_ca(reply: &str) -> Option<(String, String)> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    match reply.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["OK", "CA", cert, key] => Some((b64(cert)?, b64(key)?)),
        _ => None,
    }
}

/// `JOIN <proof> <name> <ip|-> <role> [key=value ...]` → `OK` (servers:
/// `OK CA <cert> <key>`) or `DENIED <why>`.
fn handle_join(sim: &KubeSim, proof: &str, ca: &str, line: &str) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let ["JOIN", their_proof, name, ip, role, rest @ ..] = parts.as_slice() else {
        return "DENIED malformed join request\n".into();
    };
    if *their_proof != proof {
        return "DENIED wrong cluster token\n".into();
    }
    let (kubelet, rest): (Vec<&str>, Vec<&str>) = rest.iter().partition(|s| s.starts_with("kubelet:"));
    let rest: Vec<String> = rest.into_iter().map(str::to_owned).collect();
    let kubelet = kubelet.first().and_then(|k| k.strip_prefix("kubelet:"));
    sim.register(NodeRegistration {
        name: (*name).to_owned(),
        internal_ip: ip.parse().ok(),
        labels: labels(&rest),
        taints: rest
            .iter()
            .filter_map(|t| t.strip_prefix("taint:"))
            .filter_map(super::config::parse_taint)
            .collect(),
        kubelet_version: Some(kubelet.map_or_else(super::version, str::to_owned)),
    });
    if *role == "server" {
        format!("OK {ca}\n")
    } else {
        "OK\n".into()
    }
}

//! `k3s agent`: registers its Node through the server, then stays up.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::config::Config;
use super::{SUPERVISOR_PORT, log_call, token_proof};

/// Runs until killed.
pub async fn run(cfg: Config) -> Result<()> {
    log_call("agent start");
    let host = cfg.server_host().context("an agent needs `server` in its config")?;
    join(&host, &cfg, "agent", &BTreeMap::new()).await?;
    log_call("agent joined");
    std::future::pending::<()>().await;
    Ok(())
}

/// Registers this node with the server at `host`, retrying while it does not
/// answer; a refused token is final. Returns the server's reply (`OK ...`).
pub async fn join(host: &str, cfg: &Config, role: &str, labels: &BTreeMap<String, String>) -> Result<String> {
    let mut pairs: Vec<String> = cfg.node_labels.clone();
    pairs.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    pairs.extend(cfg.node_taints.iter().map(|t| format!("taint:{t}")));
    // The kubelet version this node registers with: its own binary's.
    pairs.push(format!("kubelet:{}", super::version()));
    let ip = cfg.node_ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    let line = format!(
        "JOIN {} {} {ip} {role} {}\n",
        token_proof(&cfg.token),
        cfg.node_name,
        pairs.join(" ")
    );
    let addr = if host.contains(':') {
        format!("[{host}]:{SUPERVISOR_PORT}")
    } else {
        format!("{host}:{SUPERVISOR_PORT}")
    };
    loop {
        match try_join(&addr, &line).await {
            Ok(reply) if reply.split_whitespace().next() == Some("OK") => return Ok(reply),
            Ok(reply) if reply.starts_with("DENIED") => {
                bail!("the server at {addr} refused the join: {}", reply.trim())
            }
            Ok(reply) => eprintln!(
                "k3s-standin: join via {addr}: unexpected reply {:?}; retrying",
                reply.trim()
            ),
            Err(e) => eprintln!("k3s-standin: join via {addr}: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn try_join(addr: &str, line: &str) -> std::io::Result<String> {
    let conn = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let (rd, mut wr) = conn.into_split();
    wr.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(rd).read_line(&mut reply).await?;
    Ok(reply)
}

//! Etcd snapshot download (streamed to a file with its SHA-256) and upload
//! for recovery.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{TalosClient, check_metadata};
use super::error::TalosError;
use super::proto::common::Data;
use super::retry::with_retry;

/// Size of the chunks EtcdRecover uploads ("a few KiB each").
const RECOVER_CHUNK: usize = 4096;

/// Whether an etcd member is the node called `hostname` at `ip` (by
/// hostname, or by the address of one of its peer URLs).
pub fn is_member(member: &super::proto::machine::EtcdMember, hostname: &str, ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    member.hostname == hostname || member.peer_urls.iter().any(|u| u.contains(&format!("//{ip}:")))
}

/// Which of `nodes` (name, address) are not among `members`.
pub fn not_members<'a>(
    members: &[super::proto::machine::EtcdMember],
    nodes: impl IntoIterator<Item = (&'a str, std::net::IpAddr)>,
) -> Vec<&'a str> {
    nodes
        .into_iter()
        .filter(|(name, ip)| !members.iter().any(|m| is_member(m, name, *ip)))
        .map(|(name, _)| name)
        .collect()
}

/// A snapshot written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

fn io_err(client: &TalosClient, rpc: &'static str, path: &Path, source: std::io::Error) -> TalosError {
    TalosError::Io {
        node: client.node().to_owned(),
        rpc,
        path: path.display().to_string(),
        source,
    }
}

/// Streams the snapshot into a 0600 temporary file beside `path`, then renames
/// it. (`fsutil::write_secret` needs the whole content in memory; a snapshot
/// can be large, so the same guarantees are kept while streaming.) A stream
/// broken by UNAVAILABLE is restarted from the beginning.
impl TalosClient {
    /// Streams an etcd snapshot into `path` (mode 0600, written atomically)
    /// and returns its size and SHA-256.
    pub async fn etcd_snapshot(&self, path: &Path) -> Result<SnapshotInfo, TalosError> {
        snapshot(self, path).await
    }

    /// Uploads a snapshot file for recovery; follow with `bootstrap(true)`.
    pub async fn etcd_recover(&self, path: &Path) -> Result<(), TalosError> {
        recover(self, path).await
    }
}

async fn snapshot(client: &TalosClient, path: &Path) -> Result<SnapshotInfo, TalosError> {
    let rpc = "EtcdSnapshot";
    let policy = client.policy().clone();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{file_name}.tmp-{}", std::process::id()));
    let result = with_retry(&policy, client.node(), rpc, policy.stream_deadline, &[], || async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(|e| io_err(client, rpc, &tmp, e))?;
        let request = super::proto::machine::EtcdSnapshotRequest {};
        let mut stream = client
            .grpc()
            .etcd_snapshot(request)
            .await
            .map_err(|s| client.status(rpc, &s))?
            .into_inner();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(data) = stream.message().await.map_err(|s| client.status(rpc, &s))? {
            check_metadata(client.node(), rpc, data.metadata.as_ref())?;
            hasher.update(&data.bytes);
            size += data.bytes.len() as u64;
            file.write_all(&data.bytes)
                .await
                .map_err(|e| io_err(client, rpc, &tmp, e))?;
        }
        file.sync_all().await.map_err(|e| io_err(client, rpc, &tmp, e))?;
        if size == 0 {
            return Err(TalosError::Protocol {
                node: client.node().to_owned(),
                rpc,
                message: "the snapshot stream was empty".into(),
            });
        }
        Ok((size, hex::encode(hasher.finalize())))
    })
    .await;
    match result {
        Ok((size, sha256)) => {
            tokio::fs::rename(&tmp, path)
                .await
                .map_err(|e| io_err(client, rpc, path, e))?;
            Ok(SnapshotInfo {
                path: path.to_owned(),
                size,
                sha256,
            })
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// Uploads `path` in [`RECOVER_CHUNK`]-byte `Data` messages, retrying while
/// the node answers FailedPrecondition (not waiting for bootstrap yet).
async fn recover(client: &TalosClient, path: &Path) -> Result<(), TalosError> {
    let rpc = "EtcdRecover";
    let policy = client.policy().clone();
    // FailedPrecondition: etcd is not waiting for bootstrap yet (node still starting).
    let retry = [tonic::Code::FailedPrecondition];
    let response = with_retry(&policy, client.node(), rpc, policy.stream_deadline, &retry, || async {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_err(client, rpc, path, e))?;
        let chunks = futures::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; RECOVER_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Data {
                            metadata: None,
                            bytes: buf,
                        },
                        Some(file),
                    ))
                }
                // A read error ends the stream early; the size check below reports it.
                Err(_) => None,
            }
        });
        let expected = tokio::fs::metadata(path)
            .await
            .map_err(|e| io_err(client, rpc, path, e))?
            .len();
        if expected == 0 {
            return Err(io_err(
                client,
                rpc,
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "the snapshot file is empty"),
            ));
        }
        client
            .grpc()
            .etcd_recover(chunks)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| client.status(rpc, &s))
    })
    .await?;
    for m in &response.messages {
        check_metadata(client.node(), rpc, m.metadata.as_ref())?;
    }
    Ok(())
}

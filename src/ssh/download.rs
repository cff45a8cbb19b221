//! File download over SFTP, streamed: the remote file is read in chunks into a
//! local temporary file beside the destination (0600 from creation), hashed
//! (sha256) on the way, fsynced, then renamed over the destination. A transfer
//! cut short leaves the destination untouched. With sudo (a login user that is
//! not root), root first copies the file to a private temp file the login user
//! owns; that copy is removed afterwards.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Error, ExecOpts, Session, Step, shell_quote};

/// What [`Session::download`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// Lowercase hex sha256 of those bytes.
    pub sha256: String,
}

impl Session {
    /// Streams the remote file `src` into the local `dest` (0600, atomic) and
    /// returns its size and sha256. The content is never logged.
    pub async fn download(&self, src: &str, dest: &Path, sudo: bool) -> Result<Downloaded, Error> {
        let via_sudo = sudo && self.user() != "root";
        let remote = if via_sudo {
            let rand: u64 = rand::random();
            let tmp = format!("/tmp/.bootstrap-download-{rand:016x}");
            let user = shell_quote(self.user());
            let cmd = format!("install -m 0600 -o {user} {} {}", shell_quote(src), shell_quote(&tmp));
            let out = self
                .exec(
                    &cmd,
                    ExecOpts {
                        sudo: true,
                        ..Default::default()
                    },
                )
                .await?;
            if !out.success() {
                return Err(Error::other(
                    self.label(),
                    Step::Download,
                    format!(
                        "{src}: copying it for the download failed ({}): {}",
                        out.describe(),
                        out.stderr_str().trim()
                    ),
                ));
            }
            Some(tmp)
        } else {
            None
        };
        let read_from = remote.as_deref().unwrap_or(src);
        let result = self.download_inner(src, read_from, dest).await;
        if let Some(tmp) = &remote
            && !self.is_closed()
        {
            let _ = self
                .exec(&format!("rm -f {}", shell_quote(tmp)), ExecOpts::default())
                .await;
        }
        result
    }

    async fn download_inner(&self, src: &str, read_from: &str, dest: &Path) -> Result<Downloaded, Error> {
        let local = |what: &str, e: &dyn std::fmt::Display| {
            Error::other(
                self.label(),
                Step::Download,
                format!("{src} → {}: {what}: {e}", dest.display()),
            )
        };
        let remote = |what: &str, e: &dyn std::fmt::Display| self.lost(Step::Download, format!("{src}: {what}: {e}"));
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| local("creating the directory", &e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rand: u64 = rand::random();
        let tmp = dir.join(format!(".{name}.download-{rand:016x}"));
        let sftp = self.sftp().await?;
        let copied = async {
            let mut from = sftp.open(read_from).await.map_err(|e| remote("opening", &e))?;
            let mut to = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .await
                .map_err(|e| local(&format!("creating {}", tmp.display()), &e))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = from.read(&mut buf).await.map_err(|e| remote("reading", &e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n]).await.map_err(|e| local("writing", &e))?;
                size += n as u64;
            }
            to.sync_all().await.map_err(|e| local("fsync", &e))?;
            Ok::<_, Error>(Downloaded {
                size,
                sha256: hex::encode(hasher.finalize()),
            })
        }
        .await;
        let done = match copied {
            Ok(d) => tokio::fs::rename(&tmp, dest)
                .await
                .map(|()| d)
                .map_err(|e| local("renaming into place", &e)),
            Err(e) => Err(e),
        };
        match done {
            Ok(d) => {
                if let Ok(f) = std::fs::File::open(dir) {
                    let _ = f.sync_all();
                }
                Ok(d)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

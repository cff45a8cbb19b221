//! File upload over SFTP, atomically: the data is streamed into a temporary
//! file beside the destination, fsynced, given its mode and owner, then renamed
//! over the destination. A transfer cut short leaves the destination untouched.

use std::path::PathBuf;
use std::sync::Arc;

use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::{Error, ExecOpts, Session, Step, shell_quote};

/// What to upload.
pub enum Source {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A local file, streamed.
    Path(PathBuf),
    /// Any byte stream.
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl From<Vec<u8>> for Source {
    fn from(b: Vec<u8>) -> Self {
        Self::Bytes(b)
    }
}

impl From<&[u8]> for Source {
    fn from(b: &[u8]) -> Self {
        Self::Bytes(b.to_vec())
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Self::Path(p)
    }
}

/// Options of [`Session::upload`].
#[derive(Debug, Clone)]
pub struct UploadOpts {
    /// Unix mode of the destination.
    pub mode: u32,
    /// `user[:group]` to own the destination (needs root or sudo).
    pub owner: Option<String>,
    /// Place the file with sudo when the login user is not root (the data
    /// goes to /tmp first, then is copied into place by root).
    pub sudo: bool,
}

impl Default for UploadOpts {
    fn default() -> Self {
        Self {
            mode: 0o644,
            owner: None,
            sudo: false,
        }
    }
}

impl Session {
    pub(crate) async fn sftp(&self) -> Result<Arc<SftpSession>, Error> {
        let mut slot = self.sftp_slot().lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let ch = self
            .handle()
            .channel_open_session()
            .await
            .map_err(|e| self.lost(Step::Upload, format!("opening the SFTP channel: {e}")))?;
        ch.request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.lost(Step::Upload, format!("starting the SFTP subsystem: {e}")))?;
        let s = Arc::new(
            SftpSession::new(ch.into_stream())
                .await
                .map_err(|e| self.lost(Step::Upload, format!("SFTP handshake: {e}")))?,
        );
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Uploads `src` to `dest` atomically with `opts.mode` (and owner);
    /// returns the number of bytes written.
    pub async fn upload(&self, src: impl Into<Source>, dest: &str, opts: UploadOpts) -> Result<u64, Error> {
        let label = self.label().to_owned();
        let (dir, name) = match dest.rsplit_once('/') {
            Some((d, n)) if !n.is_empty() => (if d.is_empty() { "/" } else { d }, n),
            _ => {
                return Err(Error::other(
                    &label,
                    Step::Upload,
                    format!("`{dest}` is not a file path"),
                ));
            }
        };
        let via_sudo = opts.sudo && self.user() != "root";
        let rand: u64 = rand::random();
        let tmp = if via_sudo {
            format!("/tmp/.bootstrap-upload-{rand:016x}")
        } else {
            format!("{}/.{name}.bootstrap-{rand:016x}", dir.trim_end_matches('/'))
        };
        let sftp = self.sftp().await?;
        let result = self.upload_inner(&sftp, src.into(), &tmp, dest, &opts, via_sudo).await;
        if result.is_err() && !self.is_closed() {
            let _ = sftp.remove_file(tmp.clone()).await;
        }
        result
    }

    async fn upload_inner(
        &self,
        sftp: &SftpSession,
        src: Source,
        tmp: &str,
        dest: &str,
        opts: &UploadOpts,
        via_sudo: bool,
    ) -> Result<u64, Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| self.lost(Step::Upload, format!("{dest}: {what}: {e}"));
        let mut reader: Box<dyn AsyncRead + Send + Unpin> = match src {
            Source::Bytes(b) => Box::new(std::io::Cursor::new(b)),
            Source::Path(p) => Box::new(
                tokio::fs::File::open(&p)
                    .await
                    .map_err(|e| fail(&format!("reading local {}", p.display()), &e))?,
            ),
            Source::Reader(r) => r,
        };
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(0o600);
        let mut file = sftp
            .open_with_flags_and_attributes(tmp, OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE, attrs)
            .await
            .map_err(|e| fail(&format!("creating {tmp}"), &e))?;
        let n = tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(|e| fail("sending data", &e))?;
        file.flush().await.map_err(|e| fail("sending data", &e))?;
        file.sync_all().await.map_err(|e| fail("fsync", &e))?;
        file.shutdown().await.map_err(|e| fail("closing", &e))?;

        let (t, d) = (shell_quote(tmp), shell_quote(dest));
        let mode = format!("{:04o}", opts.mode & 0o7777);
        let chown = opts
            .owner
            .as_ref()
            .map(|o| format!("chown {} \"$T\" && ", shell_quote(o)))
            .unwrap_or_default();
        let script = if via_sudo {
            // Root copies the staged file beside the destination, then renames.
            format!(
                "T={d}.bootstrap-$$; cp {t} \"$T\" && chmod {mode} \"$T\" && {chown}sync \"$T\" && mv -f \"$T\" {d}; rc=$?; rm -f {t}; [ $rc = 0 ] || rm -f \"$T\"; exit $rc"
            )
        } else {
            format!("T={t}; chmod {mode} \"$T\" && {chown}mv -f \"$T\" {d}")
        };
        let out = self
            .exec(
                &script,
                ExecOpts {
                    sudo: via_sudo,
                    ..Default::default()
                },
            )
            .await?;
        if !out.success() {
            return Err(Error::other(
                self.label(),
                Step::Upload,
                format!(
                    "{dest}: putting the file in place failed ({}): {}",
                    out.describe(),
                    out.stderr_str().trim()
                ),
            ));
        }
        Ok(n)
    }
}

//! `ProxyCommand`: the command runs as a child of `/bin/sh -c` (as OpenSSH
//! runs it, with `exec` so the shell does not stay), and its stdin/stdout
//! carry the SSH connection. Its stderr is kept (the last few KiB) to explain
//! a failed handshake.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, Join};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The stream over a proxy command's stdio.
pub(crate) type ProxyStream = Join<ChildStdout, ChildStdin>;

/// The running proxy command; killed when dropped (with the connection).
pub(crate) struct ProxyChild {
    _child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyChild {
    /// What the command wrote on stderr, trimmed, once it closed stderr
    /// (waiting at most a second for that).
    pub(crate) async fn stderr(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), r).await;
        }
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr lock"))
            .trim()
            .to_owned()
    }
}

/// Keep at most this much of the command's stderr.
const STDERR_KEEP: usize = 4096;

/// Starts `command` and returns the stream over its stdio.
pub(crate) fn spawn(command: &str) -> std::io::Result<(ProxyStream, ProxyChild)> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout), Some(mut err)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("proxy command without piped stdio"));
    };
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let keep = stderr.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut k = keep.lock().expect("stderr lock");
            k.extend_from_slice(&buf[..n]);
            let excess = k.len().saturating_sub(STDERR_KEEP);
            k.drain(..excess);
        }
    });
    Ok((
        tokio::io::join(stdout, stdin),
        ProxyChild {
            _child: child,
            stderr,
            reader: Some(reader),
        },
    ))
}

//! Host-key scan (what `ssh-keyscan` and `flux bootstrap` do): connect, take
//! the key the server presents in the key exchange, and hang up before any
//! authentication. Verifying the key is the caller's job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};

struct Capture(Arc<Mutex<Option<PublicKey>>>);

impl client::Handler for Capture {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.0.lock().expect("capture lock") = Some(key.clone());
        }
        // Refusing ends the handshake: nothing is authenticated or sent.
        Ok(false)
    }
}

/// The host key `host:port` presents, within `timeout`.
pub async fn host_key(host: &str, port: u16, timeout: Duration) -> Result<PublicKey, String> {
    let seen = Arc::new(Mutex::new(None));
    let config = Arc::new(client::Config::default());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("TCP to {host}:{port}: {e}"))?;
        // The handshake fails by design once the key is captured.
        let _ = client::connect_stream(config, tcp, Capture(seen.clone())).await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no SSH host key from {host}:{port} within {timeout:?}"))??;
    let key = seen.lock().expect("capture lock").take();
    key.ok_or_else(|| format!("{host}:{port} presented no plain SSH host key"))
}

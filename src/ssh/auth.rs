//! Client authentication: explicit key files first (passphrase from a secret
//! reference or a terminal prompt), each offered first with the OpenSSH user
//! certificates that certify it (`CertificateFile`, or `KEY-cert.pub` beside
//! the key, as OpenSSH loads it), then the ssh-agent, then default keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{Handle, Handler};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Certificate, PrivateKey, PrivateKeyWithHashAlg};

use super::{Error, ErrorKind, Options, Step};
use crate::secret::SecretRef;

/// Authenticates `user`, trying `keys` (path, passphrase reference) in order
/// (each with its certificates among `certificates` first), then the agent
/// (skipped with `IdentitiesOnly` when keys were given), then the default
/// identities when no key was named.
pub(crate) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    label: &str,
    user: &str,
    keys: &[(PathBuf, Option<SecretRef>)],
    certificates: &[PathBuf],
    identities_only: bool,
    opts: &Options,
) -> Result<(), Error> {
    let mut tried = Vec::new();
    let certs = load_certificates(label, certificates)?;
    let mut used = vec![false; certs.len()];
    for (path, pass) in keys {
        let key = Arc::new(load_key(label, path, pass.as_ref(), opts.prompt_passphrase)?);
        if offer(handle, label, user, path, key, &certs, &mut used, &mut tried).await? {
            return Ok(());
        }
    }
    if (!identities_only || keys.is_empty())
        && let Some(sock) = &opts.agent_socket
    {
        match agent(handle, label, user, sock).await {
            Ok((true, _)) => return Ok(()),
            Ok((false, n)) => tried.push(format!("agent {} ({n} key(s) refused)", sock.display())),
            Err(e) => tried.push(format!("agent {} (unusable: {e})", sock.display())),
        }
    }
    if keys.is_empty() {
        for path in opts.default_identities.iter().filter(|p| p.exists()) {
            let key = match load_key(label, path, None, opts.prompt_passphrase) {
                Ok(k) => k,
                Err(e) => {
                    tried.push(format!("key {} (unusable: {})", path.display(), e.kind));
                    continue;
                }
            };
            if offer(handle, label, user, path, Arc::new(key), &certs, &mut used, &mut tried).await? {
                return Ok(());
            }
        }
    }
    for ((p, _), used) in certs.iter().zip(used) {
        if !used {
            tried.push(format!("certificate {} (no IdentityFile holds its key)", p.display()));
        }
    }
    if tried.is_empty() {
        tried.push("nothing: no key given, no agent, no default key".into());
    }
    Err(Error::new(
        label,
        Step::Auth,
        ErrorKind::AuthRejected {
            user: user.to_owned(),
            tried: tried.join(", "),
        },
    ))
}

/// Offers `key`'s certificates (from `certs`, marked in `used`, then
/// `KEY-cert.pub`), then the plain key; what was refused goes to `tried`.
#[allow(clippy::too_many_arguments)]
async fn offer<H: Handler>(
    handle: &mut Handle<H>,
    label: &str,
    user: &str,
    path: &Path,
    key: Arc<PrivateKey>,
    certs: &[(PathBuf, Certificate)],
    used: &mut [bool],
    tried: &mut Vec<String>,
) -> Result<bool, Error> {
    let mine = |c: &Certificate| c.public_key() == key.public_key().key_data();
    let mut own: Vec<(Option<usize>, PathBuf, Certificate)> = certs
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| mine(c))
        .map(|(i, (p, c))| (Some(i), p.clone(), c.clone()))
        .collect();
    let beside = cert_beside(path);
    if !own.iter().any(|(_, p, _)| *p == beside)
        && let Ok(c) = russh::keys::load_openssh_certificate(&beside)
        && mine(&c)
    {
        own.push((None, beside, c));
    }
    for (i, cpath, cert) in own {
        if let Some(i) = i {
            used[i] = true;
        }
        let r = handle
            .authenticate_openssh_cert(user, key.clone(), cert)
            .await
            .map_err(|e| Error::other(label, Step::Auth, e))?;
        if r.success() {
            return Ok(true);
        }
        tried.push(format!(
            "certificate {} for key {} (refused)",
            cpath.display(),
            path.display()
        ));
    }
    if try_key(handle, label, user, key).await? {
        return Ok(true);
    }
    tried.push(format!("key {} (refused)", path.display()));
    Ok(false)
}

/// `CertificateFile`s; a file named but missing is ignored, as in OpenSSH,
/// an unreadable or malformed one is an error.
fn load_certificates(label: &str, paths: &[PathBuf]) -> Result<Vec<(PathBuf, Certificate)>, Error> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| p.exists()) {
        let c = russh::keys::load_openssh_certificate(p)
            .map_err(|e| Error::other(label, Step::Auth, format!("certificate {}: {e}", p.display())))?;
        out.push((p.clone(), c));
    }
    Ok(out)
}

/// `KEY-cert.pub`, where OpenSSH looks for a key's certificate.
fn cert_beside(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push("-cert.pub");
    PathBuf::from(s)
}

async fn try_key<H: Handler>(
    handle: &mut Handle<H>,
    label: &str,
    user: &str,
    key: Arc<PrivateKey>,
) -> Result<bool, Error> {
    let hash = if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| Error::other(label, Step::Auth, e))?
            .flatten()
    } else {
        None
    };
    let r = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(|e| Error::other(label, Step::Auth, e))?;
    Ok(r.success())
}

/// Offers every agent identity; returns (accepted, how many were offered).
async fn agent<H: Handler>(
    handle: &mut Handle<H>,
    label: &str,
    user: &str,
    sock: &Path,
) -> Result<(bool, usize), String> {
    let mut agent = AgentClient::connect_uds(sock).await.map_err(|e| e.to_string())?;
    let ids = agent.request_identities().await.map_err(|e| e.to_string())?;
    for id in &ids {
        let key = id.public_key().into_owned();
        let hash = if key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| e.to_string())?
                .flatten()
        } else {
            None
        };
        match handle.authenticate_publickey_with(user, key, hash, &mut agent).await {
            Ok(r) if r.success() => return Ok((true, ids.len())),
            Ok(_) => {}
            Err(e) => tracing::debug!("{label}: agent could not sign: {e}"),
        }
    }
    Ok((false, ids.len()))
}

/// Loads a private key, decrypting it with the passphrase from `pass` or a prompt.
pub fn load_key(label: &str, path: &Path, pass: Option<&SecretRef>, prompt: bool) -> Result<PrivateKey, Error> {
    let err = |m: String| Error::other(label, Step::Auth, format!("key {}: {m}", path.display()));
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let pw = match pass {
                Some(r) => r.resolve().map_err(|e| err(format!("passphrase: {e}")))?,
                None if prompt => crate::secret::Secret::new(
                    prompt_passphrase(&format!("Passphrase for {}: ", path.display()))
                        .map_err(|e| err(format!("encrypted and no passphrase could be read: {e}")))?,
                ),
                None => return Err(err("encrypted, and no passphrase reference is configured".into())),
            };
            russh::keys::load_secret_key(path, Some(pw.expose()))
                .map_err(|e| err(format!("cannot decrypt (wrong passphrase?): {e}")))
        }
        Err(e) => Err(err(format!("cannot read: {e}"))),
    }
}

/// Reads a passphrase from the terminal without echo. Hand-written with
/// `stty` on /dev/tty: one prompt does not justify a terminal crate.
fn prompt_passphrase(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(tty.try_clone()?)
            .status()
            .map(|_| ())
    };
    (&tty).write_all(prompt.as_bytes())?;
    stty("-echo")?;
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    stty("echo")?;
    (&tty).write_all(b"\n")?;
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

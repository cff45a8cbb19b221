//! Acceptance tests of the SSH transport against real OpenSSH rack nodes
//! (network namespaces on 198.18.0.0/24; root needed, skipped without it
//! unless CI=true). Every test has its own rack, torn down on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bootstrap::inventory::JumpHost;
use bootstrap::secret::SecretRef;
use bootstrap::ssh::{ErrorKind, ExecOpts, Options, Pool, Source, Step, Target, UploadOpts};
use xtask::rack::Rack;

fn target(rack: &Rack, i: usize) -> Target {
    let n = &rack.nodes()[i];
    let mut t = Target::new(&n.name, n.ip.to_string());
    t.key = Some(rack.client_key());
    t
}

fn pool(rack: &Rack) -> Pool {
    Pool::new(Options::isolated(rack.known_hosts()))
}

fn keygen(dir: &Path, name: &str, ty: &str, pass: &str) -> PathBuf {
    let p = dir.join(name);
    xtask::rack::ssh_keygen(&["-q", "-t", ty, "-N", pass, "-C", name, "-f", p.to_str().unwrap()]).unwrap();
    p
}

async fn sh(pool: &Pool, t: &Target, cmd: &str) -> String {
    let out = pool
        .session(t)
        .await
        .unwrap()
        .run(cmd, ExecOpts::default())
        .await
        .unwrap();
    out.stdout_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_runs_commands_over_one_reused_connection() {
    let Some(rack) = Rack::for_test(1) else { return };
    let pool = pool(&rack);
    let t = target(&rack, 0);
    let s = pool.session(&t).await.unwrap();
    let out = s
        .exec("hostname; echo oops >&2; exit 3", ExecOpts::default())
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), "rack-1");
    assert_eq!(out.stderr_str().trim(), "oops");
    assert_eq!(out.status, Some(3));
    let e = s.run("exit 4", ExecOpts::default()).await.unwrap_err();
    assert!(
        e.to_string().contains("rack-1 (198.18.0.") && e.to_string().contains("exit status 4"),
        "{e}"
    );
    // Same TCP connection (same client port) for every command of the pool.
    let a = sh(&pool, &t, "echo $SSH_CONNECTION").await;
    let b = sh(&pool, &t, "echo $SSH_CONNECTION").await;
    assert_eq!(a, b);
    let stdin = s
        .exec(
            "cat",
            ExecOpts {
                stdin: Some(b"from stdin".to_vec()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stdin.stdout, b"from stdin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_rsa_and_encrypted_keys_authenticate() {
    let Some(rack) = Rack::for_test(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ecdsa = keygen(dir.path(), "ecdsa", "ecdsa", "");
    let rsa = keygen(dir.path(), "rsa", "rsa", "");
    let locked = keygen(dir.path(), "locked", "ed25519", "sesame");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "sesame\n").unwrap();
    let mut keys = String::new();
    for k in [&ecdsa, &rsa, &locked] {
        keys.push_str(&std::fs::read_to_string(k.with_extension("pub")).unwrap());
    }
    let t = target(&rack, 0);
    sh(
        &pool(&rack),
        &t,
        &format!("printf '%s' '{keys}' >> /root/.ssh/authorized_keys"),
    )
    .await;
    for (key, passphrase) in [
        (ecdsa, None),
        (rsa, None),
        (locked.clone(), Some(SecretRef::File(pass))),
    ] {
        let mut t = target(&rack, 0);
        t.key = Some(key.clone());
        t.passphrase = passphrase;
        let out = sh(&pool(&rack), &t, "echo ok").await;
        assert_eq!(out.trim(), "ok", "{}", key.display());
    }
    // Encrypted key without a passphrase reference (and no prompt): a clear error.
    let mut t = target(&rack, 0);
    t.key = Some(locked);
    let e = pool(&rack).session(&t).await.err().expect("must fail");
    assert_eq!(e.step, Step::Auth);
    assert!(e.to_string().contains("encrypted"), "{e}");
}

/// An `ssh-agent` of the test's own, killed on drop.
struct Agent(Child, PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

fn agent_with(dir: &Path, key: &Path) -> Agent {
    let sock = dir.join("agent.sock");
    let child = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let agent = Agent(child, sock.clone());
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = Command::new("ssh-add")
        .arg(key)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "ssh-add failed");
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_auth_when_no_key_is_given() {
    let Some(rack) = Rack::for_test(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with(dir.path(), &rack.client_key());
    let mut opts = Options::isolated(rack.known_hosts());
    opts.agent_socket = Some(agent.1.clone());
    let mut t = target(&rack, 0);
    t.key = None;
    let out = sh(&Pool::new(opts), &t, "echo agent").await;
    assert_eq!(out.trim(), "agent");
    // The explicit key is tried first: a wrong explicit key still falls back to the agent.
    let mut opts = Options::isolated(rack.known_hosts());
    opts.agent_socket = Some(agent.1.clone());
    t.key = Some(keygen(dir.path(), "other", "ed25519", ""));
    assert_eq!(sh(&Pool::new(opts), &t, "echo fallback").await.trim(), "fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_naming_host_and_step() {
    let Some(rack) = Rack::for_test(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut t = target(&rack, 0);
    t.key = Some(keygen(dir.path(), "stranger", "ed25519", ""));
    let e = pool(&rack).session(&t).await.err().expect("must be refused");
    assert_eq!(e.step, Step::Auth);
    assert!(matches!(e.kind, ErrorKind::AuthRejected { .. }), "{e}");
    assert!(e.to_string().starts_with("rack-1 (198.18.0."), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_refused_then_recorded_with_accept_new() {
    let Some(rack) = Rack::for_test(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("ssh/known_hosts");
    let t = target(&rack, 0);
    let e = Pool::new(Options::isolated(kh.clone()))
        .session(&t)
        .await
        .err()
        .expect("unknown host must be refused");
    assert_eq!(e.step, Step::HostKey);
    match &e.kind {
        ErrorKind::UnknownHost { fingerprint, .. } => assert_eq!(fingerprint, &rack.nodes()[0].fingerprint),
        k => panic!("wrong error: {k}"),
    }
    assert!(e.to_string().contains("--accept-new"), "{e}");
    let mut opts = Options::isolated(kh.clone());
    opts.accept_new = true;
    assert_eq!(sh(&Pool::new(opts), &t, "echo hi").await.trim(), "hi");
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert!(
        recorded.starts_with(&format!("{} ssh-ed25519 ", rack.nodes()[0].ip)),
        "{recorded}"
    );
    // Known now: no flag needed.
    assert_eq!(
        sh(&Pool::new(Options::isolated(kh)), &t, "echo again").await.trim(),
        "again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_even_with_accept_new() {
    let Some(rack) = Rack::for_test(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let old = keygen(dir.path(), "old_host_key", "ed25519", "");
    let old_pub = std::fs::read_to_string(old.with_extension("pub")).unwrap();
    let old_fp = bootstrap::ssh::fingerprint(&old_pub).unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, format!("{} {}", rack.nodes()[0].ip, old_pub)).unwrap();
    let mut opts = Options::isolated(kh);
    opts.accept_new = true;
    let t = target(&rack, 0);
    let e = Pool::new(opts)
        .session(&t)
        .await
        .err()
        .expect("changed key must be refused");
    assert_eq!(e.step, Step::HostKey);
    assert_eq!(
        e.kind,
        ErrorKind::HostKeyChanged {
            expected: old_fp.clone(),
            presented: rack.nodes()[0].fingerprint.clone()
        }
    );
    assert!(
        e.to_string().contains("rack-1") && e.to_string().contains(&old_fp),
        "{e}"
    );
    // A fingerprint pinned in the inventory is checked the same way.
    let mut pinned = target(&rack, 0);
    pinned.host_key = Some(old_fp);
    let e = pool(&rack).session(&pinned).await.err().expect("pin mismatch");
    assert!(matches!(e.kind, ErrorKind::HostKeyChanged { .. }), "{e}");
    pinned.host_key = Some(rack.nodes()[0].fingerprint.clone());
    let empty = Options::isolated(dir.path().join("none"));
    assert_eq!(sh(&Pool::new(empty), &pinned, "echo pinned").await.trim(), "pinned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_certificate_trusted_through_cert_authority_line() {
    let Some(rack) = Rack::for_test(1) else { return };
    let t = target(&rack, 0);
    let out = sh(&Pool::new(Options::isolated(rack.known_hosts_ca())), &t, "echo ca").await;
    assert_eq!(out.trim(), "ca");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_through_one_node_to_another() {
    let Some(rack) = Rack::for_test(2) else { return };
    let (jump, dest) = (&rack.nodes()[0], &rack.nodes()[1]);
    let mut t = target(&rack, 1);
    t.jump = Some(JumpHost {
        user: Some("root".into()),
        host: jump.ip.to_string(),
        port: 22,
    });
    // sshd sees the connection coming from the jump host.
    let from = sh(&pool(&rack), &t, "echo $SSH_CONNECTION").await;
    assert!(from.starts_with(&format!("{} ", jump.ip)), "{from}");
    assert!(from.contains(&format!(" {} 22", dest.ip)), "{from}");
    // The same through ~/.ssh/config `ProxyJump`.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    std::fs::write(
        &cfg,
        format!("Host {}\n  ProxyJump root@{}\n  User root\n", dest.ip, jump.ip),
    )
    .unwrap();
    let mut opts = Options::isolated(rack.known_hosts());
    opts.ssh_config = Some(cfg);
    let mut t = target(&rack, 1);
    t.user = None;
    let from = sh(&Pool::new(opts), &t, "echo $SSH_CONNECTION").await;
    assert!(from.starts_with(&format!("{} ", jump.ip)), "{from}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_with_password_from_a_reference_and_passwordless() {
    let Some(rack) = Rack::for_test(1) else { return };
    if !Path::new("/usr/bin/sudo").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "sudo is not installed (cargo xtask test installs it)"
        );
        eprintln!("skipping: sudo is not installed");
        return;
    }
    let root = target(&rack, 0);
    let p = pool(&rack);
    sh(
        &p,
        &root,
        "set -e
         for u in deploy quick; do
           useradd -m -s /bin/sh -p '*' $u
           mkdir -m 700 /home/$u/.ssh
           cp /root/.ssh/authorized_keys /home/$u/.ssh/
           chown -R $u /home/$u/.ssh
         done
         echo 'deploy:s3cret-pw' | chpasswd
         echo 'deploy ALL=(ALL) ALL' > /etc/sudoers.d/deploy
         echo 'quick ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/quick
         chmod 440 /etc/sudoers.d/*",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let sudo = ExecOpts {
        sudo: true,
        ..Default::default()
    };

    let mut deploy = target(&rack, 0);
    deploy.user = Some("deploy".into());
    deploy.sudo_password = Some(SecretRef::File(pw));
    let s = p.session(&deploy).await.unwrap();
    assert_eq!(
        s.run("id -un", ExecOpts::default()).await.unwrap().stdout_str().trim(),
        "deploy"
    );
    let out = s
        .run(
            "id -un; cat",
            ExecOpts {
                stdin: Some(b"input after the password".to_vec()),
                ..sudo.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "root\ninput after the password");
    assert!(!out.stderr_str().contains("s3cret"), "{}", out.stderr_str());
    // Upload into a root-only place through sudo, owned by root.
    s.upload(
        b"secret: 1\n".as_slice(),
        "/etc/deploy.conf",
        UploadOpts {
            mode: 0o600,
            owner: Some("root:root".into()),
            sudo: true,
        },
    )
    .await
    .unwrap();
    let placed = s
        .run(
            "stat -c '%a %U' /etc/deploy.conf; cat /etc/deploy.conf; ls -A /etc /tmp | grep -c bootstrap || true",
            sudo.clone(),
        )
        .await
        .unwrap();
    assert_eq!(placed.stdout_str(), "600 root\nsecret: 1\n0\n");
    // And back: a root-only file downloaded through sudo, 0600 here, the node's copy for it removed.
    let local = dir.path().join("fetched/deploy.conf");
    let got = s.download("/etc/deploy.conf", &local, true).await.unwrap();
    assert_eq!(std::fs::read(&local).unwrap(), b"secret: 1\n");
    assert_eq!(got.size, 10);
    assert_eq!(got.sha256, sha256_hex(b"secret: 1\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&local).unwrap().permissions().mode() & 0o777, 0o600);
    let left = s
        .run("ls -A /tmp | grep -c bootstrap-download || true", ExecOpts::default())
        .await
        .unwrap();
    assert_eq!(left.stdout_str().trim(), "0");
    // Without sudo the login user cannot read it: an error naming the file, nothing written.
    let denied = dir.path().join("denied");
    let e = s.download("/etc/deploy.conf", &denied, false).await.unwrap_err();
    assert!(
        e.to_string().contains("/etc/deploy.conf") && e.step == Step::Download,
        "{e}"
    );
    assert!(!denied.exists());

    let mut quick = target(&rack, 0);
    quick.user = Some("quick".into());
    let out = p
        .session(&quick)
        .await
        .unwrap()
        .run("id -u", sudo.clone())
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), "0");

    // No password reference for a user that needs one: sudo -n fails, not hangs.
    let mut nopw = target(&rack, 0);
    nopw.user = Some("deploy".into());
    let out = Pool::new(Options::isolated(rack.known_hosts()))
        .session(&nopw)
        .await
        .unwrap()
        .exec("id -u", sudo)
        .await
        .unwrap();
    assert!(!out.success());
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_streams_a_large_file_atomically_with_its_sha256() {
    let Some(rack) = Rack::for_test(1) else { return };
    let p = pool(&rack);
    let s = p.session(&target(&rack, 0)).await.unwrap();
    // 5 MiB + a bit: many reads, a partial last one.
    s.run("head -c 5243001 /dev/urandom > /root/big.bin", ExecOpts::default())
        .await
        .unwrap();
    let remote_sum = s.run("sha256sum /root/big.bin", ExecOpts::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    std::fs::write(&local, b"old content").unwrap();
    let got = s.download("/root/big.bin", &local, false).await.unwrap();
    let bytes = std::fs::read(&local).unwrap();
    assert_eq!((got.size, bytes.len()), (5_243_001, 5_243_001));
    assert_eq!(got.sha256, sha256_hex(&bytes));
    assert!(
        remote_sum.stdout_str().starts_with(&got.sha256),
        "{}",
        remote_sum.stdout_str()
    );
    // A missing file: the error names it, the destination keeps its content, no temp file is left.
    let e = s.download("/root/missing.bin", &local, false).await.unwrap_err();
    assert!(e.to_string().contains("/root/missing.bin"), "{e}");
    assert_eq!(std::fs::read(&local).unwrap().len(), 5_243_001);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["big.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_kills_the_command_and_keeps_the_connection() {
    let Some(rack) = Rack::for_test(1) else { return };
    let p = pool(&rack);
    let s = p.session(&target(&rack, 0)).await.unwrap();
    let e = s
        .exec(
            "sleep 60",
            ExecOpts {
                timeout: Some(Duration::from_millis(500)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout(Duration::from_millis(500)));
    assert_eq!(e.step, Step::Exec);
    assert_eq!(
        s.run("echo still", ExecOpts::default())
            .await
            .unwrap()
            .stdout_str()
            .trim(),
        "still"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_content_mode_owner_and_streamed_file() {
    let Some(rack) = Rack::for_test(1) else { return };
    let p = pool(&rack);
    let s = p.session(&target(&rack, 0)).await.unwrap();
    s.run("mkdir -p /srv/up && echo old > /srv/up/a.conf", ExecOpts::default())
        .await
        .unwrap();
    let n = s
        .upload(
            b"key = 1\n".as_slice(),
            "/srv/up/a.conf",
            UploadOpts {
                mode: 0o640,
                owner: Some("nobody".into()),
                sudo: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(n, 8);
    let out = s
        .run(
            "stat -c '%a %U' /srv/up/a.conf; cat /srv/up/a.conf; ls -A /srv/up",
            ExecOpts::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "640 nobody\nkey = 1\na.conf\n");

    // A 24 MiB local file, streamed.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let local = Command::new("sha256sum").arg(&big).output().unwrap();
    let local = String::from_utf8_lossy(&local.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    s.upload(Source::Path(big), "/srv/up/big.bin", UploadOpts::default())
        .await
        .unwrap();
    let remote = s
        .run(
            "sha256sum /srv/up/big.bin; stat -c %a /srv/up/big.bin",
            ExecOpts::default(),
        )
        .await
        .unwrap()
        .stdout_str();
    assert!(remote.starts_with(&local) && remote.ends_with("644\n"), "{remote}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_by_a_dead_connection_leaves_the_destination_untouched() {
    use tokio::io::AsyncWriteExt;
    let Some(rack) = Rack::for_test(1) else { return };
    let t = target(&rack, 0);
    let observer = pool(&rack).session(&t).await.unwrap();
    observer
        .run(
            "mkdir -p /srv/at && echo original > /srv/at/app.bin",
            ExecOpts::default(),
        )
        .await
        .unwrap();
    let victim = pool(&rack).session(&t).await.unwrap();
    // The connection's own sshd process (parent of the command's shell).
    let sshd_pid = victim
        .run("echo $PPID", ExecOpts::default())
        .await
        .unwrap()
        .stdout_str();
    let (mut feed, reader) = tokio::io::duplex(1 << 16);
    let upload = tokio::spawn(async move {
        victim
            .upload(
                Source::Reader(Box::new(reader)),
                "/srv/at/app.bin",
                UploadOpts::default(),
            )
            .await
    });
    let chunk = vec![7u8; 1 << 16];
    for _ in 0..32 {
        feed.write_all(&chunk).await.unwrap();
    }
    // The temporary file exists and is growing: now the connection dies.
    let tmp = observer
        .run("ls -A /srv/at | grep bootstrap", ExecOpts::default())
        .await
        .unwrap();
    assert!(!tmp.stdout.is_empty());
    observer
        .run(&format!("kill -9 {}", sshd_pid.trim()), ExecOpts::default())
        .await
        .unwrap();
    let feeder = tokio::spawn(async move { while feed.write_all(&chunk).await.is_ok() {} });
    let e = upload.await.unwrap().expect_err("the upload must fail");
    feeder.abort();
    assert_eq!(e.step, Step::Upload, "{e}");
    let after = observer.run("cat /srv/at/app.bin", ExecOpts::default()).await.unwrap();
    assert_eq!(after.stdout_str(), "original\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_fails_alone() {
    let Some(mut rack) = Rack::for_test(3) else { return };
    let p = pool(&rack);
    let targets: Vec<Target> = (0..3).map(|i| target(&rack, i)).collect();
    for t in &targets {
        p.session(t).await.unwrap();
    }
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let killer = tokio::task::spawn_blocking(move || {
        let _ = started_rx.blocking_recv();
        std::thread::sleep(Duration::from_millis(300));
        rack.kill(1);
        rack
    });
    let started = std::sync::Mutex::new(Some(started_tx));
    let results = bootstrap::ssh::fanout(&p, &targets, 8, |s| {
        if let Some(tx) = started.lock().unwrap().take() {
            let _ = tx.send(());
        }
        async move {
            s.run(
                "sleep 3; hostname",
                ExecOpts {
                    timeout: Some(Duration::from_secs(60)),
                    ..Default::default()
                },
            )
            .await
        }
    })
    .await;
    let _rack = killer.await.unwrap();
    assert_eq!(results[0].result.as_ref().unwrap().stdout_str().trim(), "rack-1");
    assert_eq!(results[2].result.as_ref().unwrap().stdout_str().trim(), "rack-3");
    let e = results[1].result.as_ref().unwrap_err();
    assert_eq!(results[1].name, "rack-2");
    assert_eq!(e.step, Step::Exec);
    assert!(e.to_string().starts_with("rack-2 (198.18.0."), "{e}");
}

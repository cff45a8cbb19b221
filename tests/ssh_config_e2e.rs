//! `~/.ssh/config` end to end against real OpenSSH rack nodes: `Include`,
//! `ProxyCommand` (OpenSSH's own `ssh -W` as the command), `ProxyCommand none`,
//! and `CertificateFile` (a user CA made with ssh-keygen, trusted by an sshd
//! through `TrustedUserCAKeys`). Root needed; skipped without it unless CI=true.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bootstrap::ssh::{ErrorKind, ExecOpts, Options, Pool, Step, Target};
use xtask::rack::{Rack, ssh_keygen};

fn with_config(known_hosts: PathBuf, config: &Path) -> Pool {
    let mut opts = Options::isolated(known_hosts);
    opts.ssh_config = Some(config.to_path_buf());
    Pool::new(opts)
}

async fn run(pool: &Pool, t: &Target, cmd: &str) -> String {
    pool.session(t)
        .await
        .unwrap()
        .run(cmd, ExecOpts::default())
        .await
        .unwrap()
        .stdout_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_command_from_an_included_file_carries_the_connection() {
    let Some(rack) = Rack::for_test(2) else { return };
    let (jump, dest) = (&rack.nodes()[0], &rack.nodes()[1]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let ssh_w = format!(
        "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes -W %h:%p root@{}",
        rack.client_key().display(),
        rack.known_hosts().display(),
        jump.ip
    );
    std::fs::write(
        dir.path().join("conf.d/rack.conf"),
        format!(
            "Host dest-alias\n  HostName {}\n  ProxyCommand {ssh_w}\nHost failing\n  HostName {}\n  ProxyCommand sh -c 'echo no route to %h >&2; exit 1'\nHost {}\n  ProxyCommand none\n",
            dest.ip, dest.ip, dest.ip
        ),
    )
    .unwrap();
    let cfg = dir.path().join("config");
    std::fs::write(
        &cfg,
        "Include conf.d/*.conf\nHost *\n  ProxyCommand false\n  User root\n",
    )
    .unwrap();
    let pool = with_config(rack.known_hosts(), &cfg);

    // The destination's sshd sees the connection come from the jump host:
    // the bytes went through `ssh -W` on its stdio.
    let mut t = Target::new("dest", "dest-alias");
    t.key = Some(rack.client_key());
    let from = run(&pool, &t, "echo $SSH_CONNECTION").await;
    assert!(from.starts_with(&format!("{} ", jump.ip)), "{from}");
    assert!(from.contains(&format!(" {} 22", dest.ip)), "{from}");
    assert_eq!(run(&pool, &t, "hostname").await.trim(), dest.name);

    // `ProxyCommand none` (first obtained value) beats the later `Host *` one:
    // a direct connection, from the rack bridge.
    let mut direct = Target::new("direct", dest.ip.to_string());
    direct.key = Some(rack.client_key());
    let from = run(&pool, &direct, "echo $SSH_CONNECTION").await;
    assert!(from.starts_with("198.18.0.1 "), "{from}");

    // A failing command: the connect step fails, and says what it printed.
    let mut bad = Target::new("failing", "failing");
    bad.key = Some(rack.client_key());
    let e = pool.session(&bad).await.err().expect("must fail");
    assert_eq!(e.step, Step::Connect, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("ProxyCommand stderr: no route to {}", dest.ip)),
        "{e}"
    );

    // Host keys are still checked through the command: an empty known_hosts refuses.
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let e = with_config(empty, &cfg).session(&t).await.err().expect("must fail");
    assert_eq!(e.step, Step::HostKey, "{e}");
    assert!(matches!(e.kind, ErrorKind::UnknownHost { .. }), "{e}");
}

/// Starts a second sshd on the node (port 2222) that trusts `ca_pub` for user
/// certificates, and waits until it listens.
async fn sshd_trusting_user_ca(rack: &Rack, ca_pub: &str) -> u16 {
    let n = &rack.nodes()[0];
    let mut t = Target::new(&n.name, n.ip.to_string());
    t.key = Some(rack.client_key());
    let pool = Pool::new(Options::isolated(rack.known_hosts()));
    let script = format!(
        "printf '%s\\n' '{}' > /root/user_ca.pub && sed 's/^ListenAddress .*/ListenAddress {}:2222/' /mnt/node/sshd_config > /root/sshd_ca && echo 'TrustedUserCAKeys /root/user_ca.pub' >> /root/sshd_ca && /usr/sbin/sshd -f /root/sshd_ca",
        ca_pub.trim(),
        n.ip
    );
    run(&pool, &t, &script).await;
    let addr = SocketAddr::from((n.ip, 2222));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "sshd on :2222 did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    2222
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_file_authenticates_with_a_user_ca_certificate() {
    let Some(rack) = Rack::for_test(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "user CA", "-f", &p("user_ca")]).unwrap();
    // Neither key is in authorized_keys: only a certificate can let them in.
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "certified", "-f", &p("me")]).unwrap();
    ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "wrong principal",
        "-f",
        &p("bob"),
    ])
    .unwrap();
    let sign = |key: &str, principal: &str| {
        ssh_keygen(&[
            "-q",
            "-s",
            &p("user_ca"),
            "-I",
            "test",
            "-n",
            principal,
            "-V",
            "-5m:+1h",
            &p(&format!("{key}.pub")),
        ])
        .unwrap();
    };
    sign("me", "root");
    sign("bob", "bob");
    // Named so OpenSSH's `KEY-cert.pub` lookup would not find them: only
    // `CertificateFile` leads to them.
    std::fs::rename(p("me-cert.pub"), p("signed-for-root.pub")).unwrap();
    std::fs::rename(p("bob-cert.pub"), p("signed-for-bob.pub")).unwrap();
    let ca_pub = std::fs::read_to_string(p("user_ca.pub")).unwrap();
    let port = sshd_trusting_user_ca(&rack, &ca_pub).await;

    let n = &rack.nodes()[0];
    let target = |key: &str| {
        let mut t = Target::new(&n.name, n.ip.to_string());
        t.port = Some(port);
        t.host_key = Some(n.fingerprint.clone());
        t.key = Some(PathBuf::from(p(key)));
        t
    };
    let cfg = dir.path().join("config");
    let pool = || with_config(rack.known_hosts(), &cfg);

    // Without the certificate the key alone is refused.
    std::fs::write(&cfg, "").unwrap();
    let e = pool().session(&target("me")).await.err().expect("must fail");
    assert!(matches!(e.kind, ErrorKind::AuthRejected { .. }), "{e}");

    std::fs::write(
        &cfg,
        format!(
            "Match host {}\n  CertificateFile {}\n  CertificateFile {}\n",
            n.ip,
            p("signed-for-bob.pub"),
            p("signed-for-root.pub")
        ),
    )
    .unwrap();
    let out = run(&pool(), &target("me"), "whoami").await;
    assert_eq!(out.trim(), "root");

    // A certificate for another principal is refused by sshd, and the error says which.
    let e = pool().session(&target("bob")).await.err().expect("must fail");
    assert!(matches!(e.kind, ErrorKind::AuthRejected { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("certificate {} for key", p("signed-for-bob.pub"))),
        "{e}"
    );
}

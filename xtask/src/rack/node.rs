//! One rack node: a pid + mount + uts namespace inside the node's network
//! namespace, overlays over the system directories, a fresh `/root`, and a real
//! `sshd -D` with its own host key (and a host certificate from the rack CA).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::net;

/// Runs inside the node's namespaces: `$1` = node dir, `$2` = address, `$3` = hostname.
const BOOT: &str = r#"set -e
ip addr add "$2/24" dev eth0
ip link set lo up
ip link set eth0 up
hostname "$3"
mount -t tmpfs -o mode=0755 rack /mnt
for d in etc usr var opt srv home; do
  mkdir -p /mnt/up/$d /mnt/work/$d
  mount -t overlay overlay -o lowerdir=/$d,upperdir=/mnt/up/$d,workdir=/mnt/work/$d /$d
done
mkdir -m 0700 /mnt/node
cp -a "$1/." /mnt/node/
for d in /run /tmp /dev/shm; do mount -t tmpfs -o mode=1777 tmpfs $d; done
chmod 0755 /run
mount -t tmpfs -o mode=0700 tmpfs /root
cp -a /etc/skel/. /root/
mkdir -m 0700 /root/.ssh
cp /mnt/node/authorized_keys /root/.ssh/authorized_keys
mkdir -p -m 0755 /run/sshd
exec /usr/sbin/sshd -D -e -f /mnt/node/sshd_config
"#;

fn sshd_config(ip: Ipv4Addr) -> String {
    format!(
        "ListenAddress {ip}:22
HostKey /mnt/node/ssh_host_ed25519_key
HostCertificate /mnt/node/ssh_host_ed25519_key-cert.pub
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxStartups 500:30:1000
MaxSessions 200
UseDNS no
PidFile none
LogLevel ERROR
PrintMotd no
PrintLastLog no
AllowTcpForwarding yes
ClientAliveInterval 0
Subsystem sftp internal-sftp
"
    )
}

/// A started node.
#[derive(Debug)]
pub struct NodeProc {
    pub octet: u8,
    pub child: Option<Child>,
    pub pid: u32,
}

/// Runs `ssh-keygen` with these arguments.
pub fn ssh_keygen(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keygen (is openssh-client installed?)")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes the node's directory: host key + certificate, sshd_config, authorized_keys.
pub fn prepare(dir: &Path, ip: Ipv4Addr, ca_key: &Path, authorized: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let key = dir.join("ssh_host_ed25519_key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(dir.join("ssh_host_ed25519_key.pub"));
    let k = key.to_str().context("utf-8 path")?;
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-C", &format!("rack {ip}"), "-f", k])?;
    let ca = ca_key.to_str().context("utf-8 path")?;
    let ipn = ip.to_string();
    ssh_keygen(&[
        "-q",
        "-s",
        ca,
        "-I",
        &format!("rack-{ip}"),
        "-h",
        "-n",
        &ipn,
        &format!("{k}.pub"),
    ])?;
    std::fs::write(dir.join("sshd_config"), sshd_config(ip))?;
    std::fs::write(dir.join("authorized_keys"), authorized)?;
    Ok(key.with_extension("pub"))
}

/// Starts the node's `sshd` in its namespaces. `detach`: the node outlives
/// this process (its own process group, not a child we reap).
pub fn spawn(dir: &Path, octet: u8, hostname: &str, detach: bool) -> anyhow::Result<NodeProc> {
    use std::os::unix::process::CommandExt;
    let log = File::create(dir.join("node.log"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net::netns(octet)])
        .args([
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            BOOT,
            "bootstrap-rack-node",
        ])
        .arg(dir)
        .arg(Ipv4Addr::new(198, 18, 0, octet).to_string())
        .arg(hostname)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if detach {
        cmd.process_group(0);
    }
    let child = cmd.spawn().context("starting `ip netns exec ... unshare ... sshd`")?;
    let pid = child.id();
    Ok(NodeProc {
        octet,
        child: Some(child),
        pid,
    })
}

/// Waits until sshd accepts TCP connections on the node.
pub fn wait_ready(dir: &Path, node: &mut NodeProc, deadline: Instant) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::new(198, 18, 0, node.octet), 22));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(c) = node.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            bail!(
                "rack node 198.18.0.{} exited ({status}) while starting:\n{log}",
                node.octet
            );
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            bail!(
                "rack node 198.18.0.{}: sshd not listening after 20 s:\n{log}",
                node.octet
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

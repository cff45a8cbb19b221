//! The test rack: real OpenSSH nodes made of Linux namespaces on this machine,
//! on 198.18.0.0/24 behind the bridge `bsrack0` (198.18.0.1).
//!
//! [`Rack::start`] gives a test its own nodes (addresses leased from .100 up,
//! so racks of concurrent test binaries never collide) and tears everything
//! down on drop, panics included. `cargo xtask rack up N` starts a rack that
//! outlives the command at .11.. with its files in `/tmp/bootstrap-rack`
//! (client key `id_ed25519`, `known_hosts`, `ca.pub`), as
//! `inventory/rack-k3s.toml` expects; `cargo xtask rack down` removes it.

mod lease;
mod net;
mod node;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use node::ssh_keygen;

/// Directory of the rack started by `cargo xtask rack up`.
pub const CLI_RACK_DIR: &str = "/tmp/bootstrap-rack";

/// One node of a rack.
#[derive(Debug, Clone)]
pub struct RackNode {
    /// `rack-1`, `rack-2`, ... (also the node's hostname).
    pub name: String,
    pub ip: Ipv4Addr,
    /// The host key, `ssh-ed25519 AAAA...`.
    pub host_key: String,
    /// Its fingerprint, `SHA256:...`.
    pub fingerprint: String,
    pid: u32,
}

/// A running rack; dropping it tears every node down.
pub struct Rack {
    dir: PathBuf,
    nodes: Vec<RackNode>,
    procs: Vec<node::NodeProc>,
}

/// `subcommand` of `cargo xtask rack`.
#[derive(clap::Subcommand)]
pub enum RackCmd {
    /// Start N nodes at 198.18.0.11.. (files in /tmp/bootstrap-rack).
    Up {
        /// Number of nodes.
        #[arg(default_value_t = 3)]
        n: usize,
    },
    /// Stop the rack started by `rack up` and remove its files.
    Down,
}

/// Runs `cargo xtask rack ...`.
pub fn run(cmd: RackCmd) -> anyhow::Result<()> {
    match cmd {
        RackCmd::Up { n } => {
            let t = Instant::now();
            let rack = Rack::up(n)?;
            for node in rack.nodes() {
                println!("{} {} {}", node.name, node.ip, node.fingerprint);
            }
            println!(
                "rack of {n} node(s) up in {:.2} s; ssh -i {d}/id_ed25519 -o UserKnownHostsFile={d}/known_hosts root@{}",
                t.elapsed().as_secs_f64(),
                rack.nodes()[0].ip,
                d = CLI_RACK_DIR,
            );
            std::mem::forget(rack);
            Ok(())
        }
        RackCmd::Down => {
            let t = Instant::now();
            let n = Rack::down()?;
            println!("{n} rack node(s) down in {:.2} s", t.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

/// Why the rack cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::test::is_root() {
        return Some("the test rack needs root (network namespaces, mounts)".into());
    }
    for (bin, pkg) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
    ] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} is missing (apt-get install {pkg}, or run `cargo xtask test`)"
            ));
        }
    }
    if !Path::new("/usr/bin/unshare").exists() || !Path::new("/usr/sbin/ip").exists() && !Path::new("/bin/ip").exists()
    {
        return Some("unshare (util-linux) or ip (iproute2) is missing".into());
    }
    None
}

impl Rack {
    /// A rack for a test, or `None` (with the reason printed) where racks
    /// cannot run. Under `CI=true` a rack that cannot start fails the test.
    pub fn for_test(n: usize) -> Option<Rack> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if let Some(why) = unavailable() {
            assert!(!ci, "CI=true but the test rack cannot run: {why}");
            eprintln!("skipping: {why}");
            return None;
        }
        match Rack::start(n) {
            Ok(r) => Some(r),
            Err(e) => panic!("the test rack did not start: {e:#}"),
        }
    }

    /// Starts `n` nodes owned by this process, at free addresses from .100 up.
    pub fn start(n: usize) -> anyhow::Result<Rack> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/bootstrap-rack-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        Self::launch(n, None, dir, std::process::id(), false)
    }

    /// Starts the persistent rack of `cargo xtask rack up` at .11...
    pub fn up(n: usize) -> anyhow::Result<Rack> {
        Self::launch(n, Some(11), PathBuf::from(CLI_RACK_DIR), 0, true)
    }

    /// Stops the persistent rack; returns how many nodes were stopped.
    pub fn down() -> anyhow::Result<usize> {
        let lock = lease::lock()?;
        let mine: Vec<_> = lease::all(&lock).into_iter().filter(|l| l.owner == 0).collect();
        for l in &mine {
            net::teardown_node(l.octet, l.node_pid);
            l.remove(&lock);
        }
        lease::reclaim_stale(&lock);
        lease::release_bridge_if_unused(&lock);
        let _ = std::fs::remove_dir_all(CLI_RACK_DIR);
        Ok(mine.len())
    }

    fn launch(n: usize, first: Option<u8>, dir: PathBuf, owner: u32, detach: bool) -> anyhow::Result<Rack> {
        if n == 0 {
            bail!("a rack needs at least one node");
        }
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let client = dir.join("id_ed25519");
        let ca = dir.join("ca");
        ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "rack client", "-f", &s(&client)])?;
        ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "rack host CA", "-f", &s(&ca)])?;
        let authorized = std::fs::read_to_string(client.with_extension("pub"))?;

        let lock = lease::lock()?;
        let mut leases = lease::allocate(&lock, n, first, owner)?;
        let mut rack = Rack {
            dir: dir.clone(),
            nodes: Vec::new(),
            procs: Vec::new(),
        };
        // From here on, a failure tears down through Drop (which takes the lock again).
        let started = (|| -> anyhow::Result<()> {
            let octets: Vec<u8> = leases.iter().map(|l| l.octet).collect();
            net::create_nodes(&octets)?;
            let pubs: Vec<anyhow::Result<PathBuf>> = std::thread::scope(|sc| {
                let hs: Vec<_> = leases
                    .iter()
                    .map(|l| {
                        let (d, ca, auth) = (dir.join(format!("node-{}", l.octet)), &ca, &authorized);
                        sc.spawn(move || node::prepare(&d, l.ip(), ca, auth))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("prepare thread")).collect()
            });
            for (i, (l, p)) in leases.iter_mut().zip(pubs).enumerate() {
                let name = format!("rack-{}", i + 1);
                let p = p?;
                let host_key = std::fs::read_to_string(&p)?
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                let proc_ = node::spawn(p.parent().context("node dir")?, l.octet, &name, detach)?;
                l.node_pid = proc_.pid;
                l.save(&lock)?;
                rack.nodes.push(RackNode {
                    name,
                    ip: l.ip(),
                    fingerprint: bootstrap::ssh::fingerprint(&host_key)
                        .map_err(|e| anyhow::anyhow!("fingerprint of {}: {e}", l.ip()))?,
                    host_key,
                    pid: proc_.pid,
                });
                rack.procs.push(proc_);
            }
            Ok(())
        })();
        drop(lock);
        if let Err(e) = started {
            // Leases without a started node still need removing.
            rack.release_leases(&leases);
            return Err(e);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (i, p) in rack.procs.iter_mut().enumerate() {
            node::wait_ready(&dir.join(format!("node-{}", rack.nodes[i].ip.octets()[3])), p, deadline)?;
        }
        let known: String = rack
            .nodes
            .iter()
            .map(|n| format!("{} {}\n", n.ip, n.host_key))
            .collect();
        std::fs::write(dir.join("known_hosts"), known)?;
        let ca_pub = std::fs::read_to_string(ca.with_extension("pub"))?;
        std::fs::write(dir.join("ca.pub"), &ca_pub)?;
        std::fs::write(
            dir.join("known_hosts_ca"),
            format!("@cert-authority 198.18.0.* {}\n", ca_pub.trim()),
        )?;
        if detach {
            for p in &mut rack.procs {
                p.child = None;
            }
        }
        Ok(rack)
    }

    fn release_leases(&mut self, leases: &[lease::Lease]) {
        if let Ok(lock) = lease::lock() {
            for l in leases {
                net::teardown_node(l.octet, l.node_pid);
                l.remove(&lock);
            }
            lease::release_bridge_if_unused(&lock);
        }
        self.procs.clear();
        self.nodes.clear();
    }

    /// The nodes, in order (`rack-1` first).
    pub fn nodes(&self) -> &[RackNode] {
        &self.nodes
    }

    /// The rack's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The client private key (authorised for root on every node).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// A `known_hosts` file with every node's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// A `known_hosts` file trusting the rack host CA (`@cert-authority`).
    pub fn known_hosts_ca(&self) -> PathBuf {
        self.dir.join("known_hosts_ca")
    }

    /// Kills node `i` at once (sshd and every session on it), as a crash would.
    pub fn kill(&mut self, i: usize) {
        net::kill_node(self.nodes[i].pid);
        if let Some(c) = self.procs[i].child.as_mut() {
            let _ = c.wait();
        }
    }

    /// An inventory (k3s) naming every rack node, with this rack's key.
    pub fn inventory_toml(&self) -> String {
        let mut s = format!(
            "[defaults.ssh]\nuser = \"root\"\nkey = \"{}\"\n\n[[cluster]]\nname = \"rack\"\ndistribution = \"k3s\"\nendpoint = \"{}\"\n\n[cluster.network]\nnode_cidr = \"198.18.0.0/24\"\ngateway = \"198.18.0.1\"\npod_cidr = \"10.42.0.0/16\"\nservice_cidr = \"10.43.0.0/16\"\n",
            self.client_key().display(),
            self.nodes[0].ip
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let role = if i == 0 { "controlplane" } else { "worker" };
            s.push_str(&format!(
                "\n[[cluster.node]]\nname = \"{}\"\nrole = \"{role}\"\nip = \"{}\"\n",
                n.name, n.ip
            ));
        }
        s
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        let Ok(lock) = lease::lock() else { return };
        let all = lease::all(&lock);
        for (i, n) in self.nodes.iter().enumerate() {
            let octet = n.ip.octets()[3];
            net::teardown_node(octet, n.pid);
            if let Some(c) = self.procs.get_mut(i).and_then(|p| p.child.as_mut()) {
                let _ = c.wait();
            }
            if let Some(l) = all.iter().find(|l| l.octet == octet) {
                l.remove(&lock);
            }
        }
        lease::release_bridge_if_unused(&lock);
        drop(lock);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

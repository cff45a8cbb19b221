//! Host-side plumbing of the rack: the bridge (198.18.0.1/24), one network
//! namespace per node with a veth pair into the bridge, and teardown.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The bridge every rack node hangs off.
pub const BRIDGE: &str = "bsrack0";

/// Network namespace of the node at 198.18.0.`octet`.
pub fn netns(octet: u8) -> String {
    format!("bsrack-{octet}")
}

/// Host side of the node's veth pair.
pub fn veth(octet: u8) -> String {
    format!("bsrack{octet}h")
}

/// Runs `ip -batch -` with the given lines.
fn ip_batch(lines: &[String]) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip` (is iproute2 installed?)")?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(lines.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -batch failed: {}\ncommands:\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            lines.join("\n")
        );
    }
    Ok(())
}

fn quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates the bridge with 198.18.0.1/24 unless it exists.
pub fn ensure_bridge() -> anyhow::Result<()> {
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        return Ok(());
    }
    ip_batch(&[
        format!("link add {BRIDGE} type bridge"),
        format!("addr add 198.18.0.1/24 dev {BRIDGE}"),
        format!("link set {BRIDGE} up"),
    ])
    .context("creating the rack bridge")
}

/// Deletes the bridge.
pub fn remove_bridge() {
    quiet(&["ip", "link", "del", BRIDGE]);
}

/// Creates the namespaces and veth pairs of these nodes in one `ip` call. The
/// node side is called `eth0`; its address is set from inside the node.
pub fn create_nodes(octets: &[u8]) -> anyhow::Result<()> {
    // A namespace deleted moments ago may still hold its veth: delete explicitly.
    for &o in octets {
        if Path::new("/sys/class/net").join(veth(o)).exists() {
            quiet(&["ip", "link", "del", &veth(o)]);
        }
        if Path::new("/run/netns").join(netns(o)).exists() {
            quiet(&["ip", "netns", "del", &netns(o)]);
        }
    }
    let mut lines = Vec::new();
    for &o in octets {
        let (ns, v) = (netns(o), veth(o));
        lines.push(format!("netns add {ns}"));
        lines.push(format!("link add {v} type veth peer name eth0 netns {ns}"));
        lines.push(format!("link set {v} master {BRIDGE} up"));
    }
    ip_batch(&lines).context("creating rack node namespaces")
}

/// Kills the node's process tree, deletes its veth and namespace.
pub fn teardown_node(octet: u8, node_pid: u32) {
    kill_node(node_pid);
    if Path::new("/sys/class/net").join(veth(octet)).exists() {
        quiet(&["ip", "link", "del", &veth(octet)]);
    }
    if Path::new("/run/netns").join(netns(octet)).exists() {
        quiet(&["ip", "netns", "del", &netns(octet)]);
    }
}

/// SIGKILLs a node's `unshare` process (`--kill-child` takes sshd and every
/// session down with it; `unshare --fork` ignores SIGTERM). Checks the command
/// line first so a recycled pid is never hit.
pub fn kill_node(node_pid: u32) {
    if node_pid == 0 {
        return;
    }
    let cmdline = std::fs::read(format!("/proc/{node_pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("bootstrap-rack-node") {
        quiet(&["kill", "-KILL", &node_pid.to_string()]);
    }
}

//! Preflight of a k3s node, before anything is uploaded: Linux, a CPU
//! architecture k3s ships for that matches the binary, the tools the install
//! script uses, free space, the clock against the operator's machine, and the
//! install disk when the inventory gives a selector. One read-only command;
//! every problem is reported at once.

use std::collections::BTreeMap;

use crate::disks::{self, Disk};
use crate::inventory::{DiskSelector, Node};

/// Least free space under `/var/lib` (images, containerd, etcd), in KiB.
pub const MIN_FREE_KIB: u64 = 1024 * 1024;
/// Largest clock difference to the operator's machine (etcd, certificates).
pub const MAX_SKEW_SECS: f64 = 30.0;

/// The read-only command that gathers the facts (`key=value` lines).
pub const COMMAND: &str = r#"echo "kernel=$(uname -s)"
echo "arch=$(uname -m)"
echo "os=$( (. /etc/os-release && echo "${PRETTY_NAME:-$ID}") 2>/dev/null || echo unknown)"
d=/var/lib/rancher; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_kib=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
for t in bash sha256sum install awk cmp systemctl; do command -v "$t" >/dev/null 2>&1 || echo "missing=$t"; done
if command -v lsblk >/dev/null 2>&1; then lsblk -b -d -n -P -o PATH,SERIAL,WWN,MODEL,SIZE,TYPE,TRAN,RO,ROTA 2>/dev/null | sed 's/^/disk=/'; fi
now=$(date +%s.%N 2>/dev/null); case "$now" in *[!0-9.]* | "") now=$(date +%s) ;; esac; echo "now=$now"
"#;

/// What a node reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub kernel: String,
    pub arch: String,
    pub os: String,
    pub free_kib: Option<u64>,
    pub missing: Vec<String>,
    pub disks: Vec<BTreeMap<String, String>>,
    /// The node's clock (seconds since the epoch) when it answered.
    pub now: Option<f64>,
}

/// Parses the output of [`COMMAND`].
pub fn parse(stdout: &str) -> Facts {
    let mut f = Facts::default();
    for line in stdout.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k {
            "kernel" => f.kernel = v.trim().to_owned(),
            "arch" => f.arch = v.trim().to_owned(),
            "os" => f.os = v.trim().to_owned(),
            "free_kib" => f.free_kib = v.trim().parse().ok(),
            "missing" => f.missing.push(v.trim().to_owned()),
            "disk" => f.disks.push(lsblk_pairs(v)),
            "now" => f.now = v.trim().parse().ok(),
            _ => {}
        }
    }
    f
}

/// `KEY="value" KEY2="value 2"` (lsblk `-P`) into a map.
fn lsblk_pairs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((k, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(k.trim().to_owned(), after[..end].trim().to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// The `uname -m` names of an ELF machine number (k3s release architectures).
fn elf_arches(machine: u16) -> &'static [&'static str] {
    match machine {
        62 => &["x86_64", "amd64"],
        183 => &["aarch64", "arm64"],
        40 => &["armv7l", "armv7", "armhf"],
        22 => &["s390x"],
        243 => &["riscv64"],
        _ => &[],
    }
}

/// The ELF machine number of a binary's first bytes, if it is an ELF file.
pub fn elf_machine(head: &[u8]) -> Option<u16> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    Some(if head[5] == 2 {
        u16::from_be_bytes([head[18], head[19]])
    } else {
        u16::from_le_bytes([head[18], head[19]])
    })
}

/// Checks the facts; `local_now` is the operator's clock at the middle of the
/// round trip, `slack` half the round trip. All problems, joined.
pub fn check(node: &Node, f: &Facts, binary_machine: Option<u16>, local_now: f64, slack: f64) -> Result<(), String> {
    let mut problems = Vec::new();
    if f.kernel != "Linux" {
        problems.push(format!("not Linux (uname -s: {:?})", f.kernel));
    }
    const K3S_ARCHES: &[&str] = &["x86_64", "aarch64", "armv7l", "s390x", "riscv64"];
    if !K3S_ARCHES.contains(&f.arch.as_str()) {
        problems.push(format!("architecture {:?} has no k3s release", f.arch));
    } else if let Some(m) = binary_machine {
        let fits = elf_arches(m);
        if !fits.is_empty() && !fits.contains(&f.arch.as_str()) {
            problems.push(format!(
                "the k3s binary is built for {} but the node is {}",
                fits[0], f.arch
            ));
        }
    }
    if !f.missing.is_empty() {
        problems.push(format!("missing commands: {}", f.missing.join(", ")));
    }
    match f.free_kib {
        Some(kib) if kib < MIN_FREE_KIB => problems.push(format!(
            "only {} MiB free under /var/lib (at least {} MiB needed)",
            kib / 1024,
            MIN_FREE_KIB / 1024
        )),
        Some(_) => {}
        None => problems.push("free space under /var/lib unknown (df gave nothing)".into()),
    }
    match f.now {
        Some(remote) => {
            let skew = remote - local_now;
            if skew.abs() > MAX_SKEW_SECS + slack {
                problems.push(format!(
                    "its clock is {:.0} s {} the operator's machine (at most {MAX_SKEW_SECS:.0} s allowed): fix NTP on the node",
                    skew.abs(),
                    if skew > 0.0 { "ahead of" } else { "behind" }
                ));
            }
        }
        None => problems.push("its clock could not be read (date +%s)".into()),
    }
    if let Some(sel) = node.install_disk.as_ref().filter(|s| !s.is_empty())
        && let Err(e) = install_disk(sel, &f.disks)
    {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("preflight failed ({}): {}", f.os, problems.join("; ")))
    }
}

/// The whole disks of lsblk's `-P` lines as the shared matcher sees them:
/// candidates are `TYPE=disk` and not read-only (`TYPE=rom` is a CD-ROM).
pub fn lsblk_disks(disks: &[BTreeMap<String, String>]) -> Vec<Disk> {
    let get = |d: &BTreeMap<String, String>, k: &str| d.get(k).cloned().unwrap_or_default();
    disks
        .iter()
        .map(|d| {
            let readonly = get(d, "RO") == "1";
            let cdrom = get(d, "TYPE") == "rom";
            Disk {
                dev_path: get(d, "PATH"),
                size: get(d, "SIZE").parse().unwrap_or(0),
                model: get(d, "MODEL"),
                serial: get(d, "SERIAL"),
                wwid: get(d, "WWN"),
                transport: get(d, "TRAN"),
                rotational: get(d, "ROTA") == "1",
                readonly,
                cdrom,
                eligible: get(d, "TYPE") == "disk" && !readonly,
            }
        })
        .collect()
}

/// Exactly one whole disk matches the selector (rules of [`crate::disks`]); its path.
pub fn install_disk(sel: &DiskSelector, disks: &[BTreeMap<String, String>]) -> Result<String, String> {
    let disks = lsblk_disks(disks);
    disks::select_or_explain("install disk", sel, &disks).map(|d| d.dev_path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::SizeRange;

    const OUT: &str = "kernel=Linux\narch=x86_64\nos=Debian GNU/Linux 13 (trixie)\nfree_kib=20971520\nmissing=cmp\ndisk=PATH=\"/dev/sda\" SERIAL=\"S1\" WWN=\"0x5000c500a1b2c3d4\" MODEL=\"Samsung SSD\" SIZE=\"500107862016\" TYPE=\"disk\"\ndisk=PATH=\"/dev/sdb\" SERIAL=\"S2\" WWN=\"\" MODEL=\"Samsung SSD\" SIZE=\"2000398934016\" TYPE=\"disk\"\nnow=1700000000.25\n";

    fn node() -> Node {
        let inv = r#"
[[cluster]]
name = "c"
distribution = "k3s"
endpoint = "10.0.0.10"
[cluster.network]
node_cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
pod_cidr = "10.42.0.0/16"
service_cidr = "10.43.0.0/16"
[cluster.k3s]
binary_url = "https://example.invalid/k3s"
binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[[cluster.node]]
name = "n1"
role = "controlplane"
ip = "10.0.0.11"
ssh = { user = "root" }
"#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.toml");
        std::fs::write(&p, inv).unwrap();
        crate::inventory::load(&p).unwrap().inventory.clusters[0].nodes[0].clone()
    }

    #[test]
    fn parses_facts() {
        let f = parse(OUT);
        assert_eq!((f.kernel.as_str(), f.arch.as_str()), ("Linux", "x86_64"));
        assert_eq!(f.free_kib, Some(20971520));
        assert_eq!(f.missing, vec!["cmp"]);
        assert_eq!(f.disks.len(), 2);
        assert_eq!(f.disks[0]["MODEL"], "Samsung SSD");
        assert_eq!(f.now, Some(1700000000.25));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut n = node();
        n.install_disk = Some(DiskSelector {
            model: Some("Samsung SSD".into()),
            ..Default::default()
        });
        let f = parse(OUT);
        let e = check(&n, &f, Some(183), 1700000100.0, 0.1).unwrap_err();
        assert!(e.contains("missing commands: cmp"), "{e}");
        assert!(e.contains("built for aarch64 but the node is x86_64"), "{e}");
        assert!(e.contains("100 s behind"), "{e}");
        assert!(e.contains("matches 2 disks"), "{e}");
    }

    #[test]
    fn a_healthy_node_passes_and_a_selector_finds_its_disk() {
        let mut f = parse(OUT);
        f.missing.clear();
        let mut n = node();
        n.install_disk = Some(DiskSelector {
            wwid: Some("naa.5000C500A1B2C3D4".into()),
            size: Some(SizeRange {
                min: Some(100 << 30),
                max: None,
            }),
            ..Default::default()
        });
        check(&n, &f, Some(62), 1700000001.0, 0.1).unwrap();
        assert_eq!(
            install_disk(n.install_disk.as_ref().unwrap(), &f.disks).unwrap(),
            "/dev/sda"
        );
    }

    #[test]
    fn a_model_glob_and_both_size_bounds_select_over_lsblk() {
        let out = "disk=PATH=\"/dev/nvme0n1\" SERIAL=\"S6B0NL0T\" WWN=\"eui.002538b111b2c3d4\" MODEL=\"Samsung SSD 980 PRO 1TB\" SIZE=\"1000204886016\" TYPE=\"disk\" TRAN=\"nvme\" RO=\"0\" ROTA=\"0\"\n\
disk=PATH=\"/dev/nvme1n1\" SERIAL=\"S6B0NL9X\" WWN=\"\" MODEL=\"Samsung SSD 980 PRO 4TB\" SIZE=\"4000787030016\" TYPE=\"disk\" TRAN=\"nvme\" RO=\"0\" ROTA=\"0\"\n\
disk=PATH=\"/dev/sr0\" SERIAL=\"\" WWN=\"\" MODEL=\"Samsung SSD 980 (not really)\" SIZE=\"1000204886016\" TYPE=\"rom\" TRAN=\"sata\" RO=\"1\" ROTA=\"0\"\n";
        let f = parse(out);
        let sel = DiskSelector {
            model: Some("Samsung SSD 980*".into()),
            size: Some("400GB-2TB".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(install_disk(&sel, &f.disks).unwrap(), "/dev/nvme0n1");
        let wide = DiskSelector {
            size: Some(">= 400GB".parse().unwrap()),
            ..sel
        };
        let e = install_disk(&wide, &f.disks).unwrap_err();
        assert!(e.contains("matches 2 disks (/dev/nvme0n1, /dev/nvme1n1)"), "{e}");
    }

    #[test]
    fn elf_machine_reads_the_header() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18] = 62;
        assert_eq!(elf_machine(&h), Some(62));
        assert_eq!(elf_machine(b"#!/bin/sh\n echo not elf at all"), None);
    }
}

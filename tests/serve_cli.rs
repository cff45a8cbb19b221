//! `bootstrap serve` refuses bad input before it binds anything: a boot address
//! that is not on the interface, an interface the host lacks, a missing iPXE
//! binary, a `--dhcp` range the inventory does not allow. No root needed.

use std::path::Path;
use std::process::Command;

fn inventory(dir: &Path, interface: &str, address: &str, ipxe_dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"[[cluster]]
name = "boot"
distribution = "talos"
endpoint = "127.87.0.10"

[cluster.network]
node_cidr = "127.0.0.0/8"
gateway = "127.87.0.1"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/16"

[cluster.provision]
interface = "{interface}"
address = "{address}"
dhcp_range = "127.87.0.100-127.87.0.120"
ipxe_dir = "{}"
kernel_sha256 = "{zero}"
initramfs_sha256 = "{zero}"

[[cluster.node]]
name = "node-1"
role = "controlplane"
ip = "127.87.0.11"
mac = "52:54:00:b5:01:11"
install_disk = {{ path = "/dev/sda" }}
"#,
        ipxe_dir.display(),
        zero = "0".repeat(64),
    );
    let path = dir.join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(inv: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .arg("-i")
        .arg(inv)
        .args(["serve"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing is listening"), "{stderr}");
    stderr
}

#[test]
fn refusals_before_anything_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let ipxe = tmp.path().join("ipxe");
    std::fs::create_dir_all(&ipxe).unwrap();

    // 127.87.0.1 is routed to lo, but it is not an address lo has.
    let e = serve(&inventory(tmp.path(), "lo", "127.87.0.1", &ipxe), &[]);
    assert!(
        e.contains("cluster boot > provision > address: 127.87.0.1 is not an address of lo on this host"),
        "{e}"
    );

    let e = serve(&inventory(tmp.path(), "bs-nosuch0", "127.0.0.1", &ipxe), &[]);
    assert!(
        e.contains("provision > interface: this host has no interface bs-nosuch0"),
        "{e}"
    );

    let inv = inventory(tmp.path(), "lo", "127.0.0.1", &ipxe);
    let e = serve(&inv, &[]);
    assert!(
        e.contains("provision > ipxe_dir: iPXE binary") && e.contains("undionly.kpxe is missing"),
        "{e}"
    );

    let e = serve(&inv, &["--dhcp", "127.87.0.90-127.87.0.100"]);
    assert!(
        e.contains("outside cluster boot's dhcp_range 127.87.0.100-127.87.0.120"),
        "{e}"
    );
    let e = serve(&inv, &["--dhcp", "nonsense"]);
    assert!(e.contains("not an IPv4 range"), "{e}");

    // With the binaries in place, the next check is the pinned kernel (none to be had here).
    for f in ["undionly.kpxe", "ipxe.efi"] {
        std::fs::write(ipxe.join(f), b"ipxe").unwrap();
    }
    let empty = tmp.path().join("artifacts");
    std::fs::create_dir_all(&empty).unwrap();
    let mut kernel = std::fs::File::create(empty.join("talos-v1.13.9-vmlinuz-amd64")).unwrap();
    std::io::Write::write_all(&mut kernel, b"not the pinned kernel").unwrap();
    let e = serve(&inv, &["--artifacts", empty.to_str().unwrap()]);
    assert!(
        e.contains("provision > kernel_sha256") && e.contains("checksum mismatch"),
        "{e}"
    );
}

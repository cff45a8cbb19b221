//! The iPXE script a node chains: Talos's kernel and initramfs over HTTP, with
//! the kernel arguments of Talos's PXE documentation and the node's one-shot
//! machine-config URL as `talos.config=`.

/// Talos's kernel arguments for a metal PXE boot, as its PXE guide and the
/// Image Factory's iPXE scripts give them (`talos.platform=metal`, the KSPP
/// set, serial and VGA consoles, IMA settings).
pub const TALOS_ARGS: &[&str] = &[
    "talos.platform=metal",
    "console=tty0",
    "console=ttyS0",
    "init_on_alloc=1",
    "slab_nomerge",
    "pti=on",
    "consoleblank=0",
    "nvme_core.io_timeout=4294967295",
    "printk.devkmsg=on",
    "ima_template=ima-ng",
    "ima_appraise=fix",
    "ima_hash=sha512",
];

/// The script for a node that is to boot Talos.
pub fn boot_script(node: &str, base: &str, cluster: &str, config_url: &str, extra: &[String]) -> String {
    let mut args: Vec<&str> = TALOS_ARGS.to_vec();
    args.extend(extra.iter().map(String::as_str));
    format!(
        "#!ipxe\n\
         echo bootstrap serve: booting {node} into Talos\n\
         kernel {base}/boot/{cluster}/vmlinuz initrd=initramfs.xz {args} talos.config={config_url}\n\
         initrd --name initramfs.xz {base}/boot/{cluster}/initramfs.xz\n\
         boot\n",
        args = args.join(" "),
    )
}

/// The script for a node whose config was already served: iPXE gives up on
/// the network and the firmware goes on to its next boot device (the disk).
pub fn done_script(node: &str) -> String {
    format!(
        "#!ipxe\n\
         echo bootstrap serve: {node} was provisioned already (re-provision with `bootstrap serve --reprovision {node}`)\n\
         exit 1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_chains_kernel_initramfs_and_config() {
        let s = boot_script(
            "cp-1",
            "http://198.18.0.1:8080",
            "alpha",
            "http://198.18.0.1:8080/config/abc",
            &["net.ifnames=0".into()],
        );
        assert!(s.starts_with("#!ipxe\n"));
        let kernel = s.lines().find(|l| l.starts_with("kernel ")).unwrap();
        assert!(kernel.starts_with("kernel http://198.18.0.1:8080/boot/alpha/vmlinuz "));
        for arg in [
            "talos.platform=metal",
            "slab_nomerge",
            "pti=on",
            "console=ttyS0",
            "net.ifnames=0",
        ] {
            assert!(kernel.split(' ').any(|a| a == arg), "{arg} missing: {kernel}");
        }
        assert!(kernel.ends_with(" talos.config=http://198.18.0.1:8080/config/abc"));
        assert!(s.contains("\ninitrd --name initramfs.xz http://198.18.0.1:8080/boot/alpha/initramfs.xz\nboot\n"));
        assert!(done_script("cp-1").contains("exit 1"));
    }
}

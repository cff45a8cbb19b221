//! `cargo xtask test`: prerequisites, then fmt, clippy and the test suite.

use std::process::Command;

use anyhow::{Context, bail};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip installing prerequisites.
    #[arg(long)]
    pub no_install: bool,
    /// Skip fmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    pub rest: Vec<String>,
}

/// Debian packages the suite uses.
pub const APT_PACKAGES: &[&str] = &[
    "openssh-server",
    "openssh-client",
    "iproute2",
    "shellcheck",
    "python3-venv",
    "sudo",
    "tmux",
    // The real age CLI: wraps SOPS data keys in tests (tests/sops.rs).
    "age",
    // Real etcd members behind the simulated Talos control planes (talos_sim::etcd, the DR drill);
    // etcdctl takes and restores their snapshots.
    "etcd-server",
    "etcd-client",
    // A real PXE client for `bootstrap serve` (tests/serve_pxe.rs): QEMU with its iPXE
    // ROMs, the iPXE binaries serve hands out, and a kernel + busybox initramfs to boot.
    "qemu-system-x86",
    "ipxe-qemu",
    "ipxe",
    "linux-image-amd64",
    "busybox-static",
    "cpio",
];

/// Runs the suite.
pub fn run(args: TestArgs) -> anyhow::Result<()> {
    if !args.no_install {
        install_prerequisites()?;
        crate::sushy::prepare()?;
    }
    if !args.no_lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    }
    let mut test = vec!["test", "--workspace", "--no-fail-fast"];
    test.extend(args.rest.iter().map(String::as_str));
    let result = cargo(&test);
    if result.is_err() {
        report_resources();
    }
    result
}

/// Prints free disk and memory, so a failure caused by the machine (a linker
/// killed, a full disk) can be told from one caused by the code.
fn report_resources() {
    let _ = Command::new("df").args(["-h", "."]).status();
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        for line in meminfo
            .lines()
            .filter(|l| l.starts_with("MemTotal") || l.starts_with("MemAvailable"))
        {
            eprintln!("{line}");
        }
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("+ cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args[0]))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Installs missing apt packages when running as root; otherwise says what is
/// missing (tests that need them then skip with a reason, except in CI).
pub fn install_prerequisites() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "note: missing packages {missing:?}; not root, so not installing them (tests needing them will skip)"
        );
        return Ok(());
    }
    eprintln!("+ apt-get install {}", missing.join(" "));
    let ok = Command::new("apt-get").arg("update").arg("-qq").status()?.success()
        && Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    if !ok {
        bail!("apt-get could not install {missing:?}");
    }
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// True when running as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

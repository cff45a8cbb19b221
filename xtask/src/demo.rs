//! `cargo xtask demo`: the simulated 3 + 2 Talos rack of
//! `inventory/simulated.toml` (Talos API simulators on 127.1.0.11-22, the
//! Kubernetes API simulator on the endpoint once etcd is bootstrapped), then
//! `bootstrap up` against it end to end with live progress, then `plan` to
//! show that a converged cluster has nothing left to do. `--k3s`: the same
//! on the test rack (real OpenSSH nodes, root) with the k3s stand-in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sim_rack::{RackOptions, SimRack};

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Inventory to simulate (loopback addresses only).
    #[arg(long, default_value = "inventory/simulated.toml")]
    pub inventory: PathBuf,
    /// How long each simulated reboot takes, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub reboot_ms: u64,
    /// Keep the rack running after `up` until Ctrl-C (to try `kubectl`/`bootstrap status`).
    #[arg(long)]
    pub keep: bool,
    /// The k3s variant instead: a 1 server + 2 agent rack of real OpenSSH nodes
    /// (network namespaces, root) with the k3s stand-in as the k3s binary.
    #[arg(long)]
    pub k3s: bool,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    if args.k3s {
        return run_k3s(root, args.keep);
    }
    let inventory = root.join(&args.inventory);
    let loaded = bootstrap::inventory::load(&inventory)
        .map_err(|d| anyhow::anyhow!("{}", d.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let cluster = loaded
        .inventory
        .clusters
        .first()
        .context("the inventory has no cluster")?
        .clone();
    let state = root.join("target/demo-state");
    let _ = std::fs::remove_dir_all(&state);
    let bin = build(root, "bootstrap", "bootstrap")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let options = RackOptions {
            reboot_delay: Duration::from_millis(args.reboot_ms),
            ready_delay: Duration::from_millis(args.reboot_ms / 3),
            behaviour: crate::kube_sim::Behaviour {
                crd_established: Duration::from_millis(300),
                deployment_available: Duration::from_millis(800),
                daemonset_available: Duration::from_millis(800),
                node_ready: Duration::from_millis(500),
                flux_ready: Duration::from_millis(800),
                argo_healthy: Duration::from_millis(800),
                ..Default::default()
            },
        };
        let rack = SimRack::start(&cluster, options).await?;
        eprintln!(
            "demo: simulated rack up: {} Talos nodes in maintenance mode at {}",
            rack.talos.nodes().len(),
            rack.talos
                .addrs()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let bootstrap = |args: &[&str]| bootstrap(&bin, &inventory, &state, None, args);
        let artifacts = artifact_args(root)?;
        let artifacts: Vec<&str> = artifacts.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| {
            bootstrap(&[&["up"], &artifacts[..]].concat())?;
            bootstrap(&[&["plan"], &artifacts[..]].concat())?;
            bootstrap(&["status"])
        })?;
        eprintln!("\ndemo: state, kubeconfig and talosconfig are in {}", state.display());
        if args.keep {
            let kubeconfig = state.join(&cluster.name).join("kubeconfig");
            eprintln!(
                "demo: the rack keeps running; try `KUBECONFIG={} kubectl get nodes`",
                kubeconfig.display()
            );
            eprintln!("demo: Ctrl-C to stop");
            tokio::signal::ctrl_c().await?;
        }
        rack.stop().await;
        Ok(())
    })
}

/// `cargo xtask demo --k3s`: `bootstrap up` over SSH on the test rack, the
/// k3s stand-in serving the Kubernetes API simulator on the first server.
fn run_k3s(root: &Path, keep: bool) -> Result<()> {
    if let Some(why) = crate::rack::unavailable() {
        bail!("the k3s demo runs on the test rack: {why}");
    }
    let bin = build(root, "bootstrap", "bootstrap")?;
    let standin = build(root, "xtask", "k3s-standin")?;
    let rack = crate::rack::Rack::start(3)?;
    let state = root.join("target/demo-k3s-state");
    let _ = std::fs::remove_dir_all(&state);
    // The operator's ~/.ssh for this demo: the rack's host keys, nothing else.
    let home = state.join("home");
    std::fs::create_dir_all(home.join(".ssh"))?;
    std::fs::copy(rack.known_hosts(), home.join(".ssh/known_hosts"))?;
    let inventory = state.join("rack-k3s.toml");
    std::fs::write(
        &inventory,
        format!(
            "{}\n[cluster.k3s]\nbinary = {:?}\n\n[cluster.gitops]\nengine = \"flux\"\nrepository = \"https://git.rack.invalid/rack/gitops.git\"\npath = \"./clusters/rack\"\n",
            rack.inventory_toml(),
            standin.display().to_string()
        ),
    )?;
    let artifacts = artifact_args(root)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(install_systemctl_shim(&rack))?;
    eprintln!(
        "demo: test rack up: {} OpenSSH nodes at {} (k3s stand-in as k3s)",
        rack.nodes().len(),
        rack.nodes()
            .iter()
            .map(|n| n.ip.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let artifacts: Vec<&str> = artifacts.iter().map(String::as_str).collect();
    for cmd in ["up", "plan"] {
        bootstrap(
            &bin,
            &inventory,
            &state,
            Some(&home),
            &[&[cmd], &artifacts[..]].concat(),
        )?;
    }
    eprintln!("\ndemo: state and kubeconfig are in {}", state.display());
    if keep {
        eprintln!("demo: the rack keeps running; Ctrl-C to stop");
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    Ok(())
}

/// `--artifacts DIR` with local copies of the pinned CRDs when `shared/crds`
/// is beside the repository; otherwise none, and `bootstrap` fetches them from
/// their pinned URLs (sha256-checked), as it would on a real rack.
fn artifact_args(root: &Path) -> Result<Vec<String>> {
    match crate::sim_rack::offline_crds(&root.join("target/demo-artifacts")) {
        Ok(dir) => Ok(vec![
            "--artifacts".into(),
            dir.to_str().context("artifact dir path")?.to_owned(),
        ]),
        Err(e) => {
            eprintln!("demo: {e:#}; bootstrap fetches the pinned CRDs from their URLs (sha256-checked)");
            Ok(Vec::new())
        }
    }
}

/// Runs `bootstrap -i INVENTORY --state-dir STATE ARGS` (with `HOME` when given), echoing the command.
fn bootstrap(bin: &Path, inventory: &Path, state: &Path, home: Option<&Path>, args: &[&str]) -> Result<()> {
    eprintln!("\n$ bootstrap {}", args.join(" "));
    let mut cmd = Command::new(bin);
    cmd.arg("-i").arg(inventory).arg("--state-dir").arg(state).args(args);
    if let Some(home) = home {
        cmd.env("HOME", home);
    }
    let status = cmd.status()?;
    if !status.success() {
        bail!("bootstrap {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The rack nodes run no systemd: the stand-in's `systemctl` goes into each
/// node's own /usr/local/bin (inside the node only).
async fn install_systemctl_shim(rack: &crate::rack::Rack) -> Result<()> {
    let pool = bootstrap::ssh::Pool::new(bootstrap::ssh::Options::isolated(rack.known_hosts()));
    for n in rack.nodes() {
        let mut t = bootstrap::ssh::Target::new(&n.name, n.ip.to_string());
        t.user = Some("root".into());
        t.key = Some(rack.client_key());
        pool.session(&t)
            .await?
            .upload(
                crate::k3s_standin::SYSTEMCTL.as_bytes(),
                "/usr/local/bin/systemctl",
                bootstrap::ssh::UploadOpts {
                    mode: 0o755,
                    ..Default::default()
                },
            )
            .await?;
    }
    Ok(())
}

/// Builds binary `bin` of `package` (dev profile) and returns its path.
fn build(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--package", package, "--bin", bin])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building {bin} failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug").join(bin))
}

//! `cargo xtask demo`: the simulated 3 + 2 Talos rack of
//! `inventory/simulated.toml` (Talos API simulators on 127.1.0.11-22, the
//! Kubernetes API simulator on the endpoint once etcd is bootstrapped), then
//! `bootstrap up` against it end to end with live progress, then `plan` to
//! show that a converged cluster has nothing left to do.

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
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
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
    let bin = build_bootstrap(root)?;
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
        let bootstrap = |args: &[&str]| -> Result<()> {
            eprintln!("\n$ bootstrap {}", args.join(" "));
            let status = Command::new(&bin)
                .arg("-i")
                .arg(&inventory)
                .arg("--state-dir")
                .arg(&state)
                .args(args)
                .status()?;
            if !status.success() {
                bail!("bootstrap {} failed ({status})", args.join(" "));
            }
            Ok(())
        };
        let crds = crate::sim_rack::offline_crds(&root.join("target/demo-artifacts"))?;
        let crds = crds.to_str().context("artifact dir path")?;
        tokio::task::block_in_place(|| {
            bootstrap(&["up", "--artifacts", crds])?;
            bootstrap(&["plan", "--artifacts", crds])?;
            bootstrap(&["status"])
        })?;
        eprintln!("\ndemo: state, kubeconfig and talosconfig are in {}", state.display());
        if args.keep {
            eprintln!("demo: the rack keeps running; Ctrl-C to stop");
            tokio::signal::ctrl_c().await?;
        }
        rack.stop().await;
        Ok(())
    })
}

/// Builds the `bootstrap` binary and returns its path.
fn build_bootstrap(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--bin", "bootstrap"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building bootstrap failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug/bootstrap"))
}

//! `cargo xtask sim kube`: runs the Kubernetes API simulator standalone and
//! writes an admin kubeconfig for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Behaviour, KubeSim, SimOptions};

/// Options of `cargo xtask sim kube`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub bind: SocketAddr,
    /// Where to write the admin kubeconfig (mode 0600).
    #[arg(long, default_value = "kube-sim.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Register a Node with this name (repeatable).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// The CNI DaemonSet (`namespace/name`) Nodes wait for; `none`: Nodes get Ready on their own.
    #[arg(long, default_value = "kube-system/cilium")]
    pub cni: String,
    /// Delay of every simulated controller, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub delay_ms: u64,
    /// Nodes may pull only images under this prefix (repeatable; air-gapped rehearsals).
    #[arg(long = "allowed-image", value_name = "PREFIX")]
    pub allowed_images: Vec<String>,
    /// Upstream Flux installation the simulated Flux controllers' prerequisites are read from.
    #[arg(long, value_name = "PATH")]
    pub flux_install: Option<PathBuf>,
}

/// Runs until Ctrl-C.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.bind.ip().is_loopback(), "kube-sim binds loopback addresses only");
    let d = Duration::from_millis(args.delay_ms);
    let cni_daemonset = match args.cni.as_str() {
        "none" => None,
        s => {
            let (ns, name) = s.split_once('/').context("--cni must be namespace/name or none")?;
            Some((ns.to_owned(), name.to_owned()))
        }
    };
    let defaults = Behaviour::uniform(d);
    let behaviour = Behaviour {
        cni_daemonset,
        allowed_images: (!args.allowed_images.is_empty()).then_some(args.allowed_images),
        flux_install: args.flux_install.unwrap_or(defaults.flux_install.clone()),
        ..defaults
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let sim = KubeSim::start(SimOptions {
            bind: args.bind,
            behaviour,
            ..SimOptions::default()
        })
        .await?;
        bootstrap::fsutil::write_secret(&args.kubeconfig, sim.admin_kubeconfig().as_bytes())
            .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
        for n in &args.nodes {
            sim.register_node(n);
        }
        println!(
            "kube-sim serving {} (kubeconfig: {}); Ctrl-C stops it",
            sim.url(),
            args.kubeconfig.display()
        );
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}

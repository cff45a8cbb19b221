//! `cargo xtask sim talos`: runs a simulated fleet on loopback, has every
//! node answer Version through the real client, and prints start time and
//! memory figures; `--serve` keeps the fleet up for manual use.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Instant;

use bootstrap::talos::TalosClient;
use futures::StreamExt;

use super::{SimOptions, TalosSim};

/// `cargo xtask sim ...`
#[derive(clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    target: SimTarget,
}

#[derive(clap::Subcommand)]
enum SimTarget {
    /// N simulated Talos nodes (maintenance mode) on 127.X.Y.Z:50000; every
    /// node answers Version through the real client; prints start time and RSS.
    Talos(TalosArgs),
}

#[derive(clap::Args)]
struct TalosArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent client connections while querying Version.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// First address of the /16 block to use (default: a random free 127.X.0.0).
    #[arg(long)]
    base: Option<Ipv4Addr>,
    /// Keep serving after the measurement until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

/// Runs the `sim` subcommand.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match args.target {
            SimTarget::Talos(a) => talos(a).await,
        }
    })
}

/// A `Vm*` line of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn talos(args: TalosArgs) -> anyhow::Result<()> {
    let mut options = SimOptions::new(args.nodes);
    options.base = args.base;
    let rss_before = proc_status_kib("VmRSS:").unwrap_or(0);
    let started = Instant::now();
    let sim = TalosSim::start(options).await?;
    let start_time = started.elapsed();
    let rss_started = proc_status_kib("VmRSS:").unwrap_or(0);

    let queried = Instant::now();
    let results: Vec<_> = futures::stream::iter(sim.nodes())
        .map(|node| async move {
            let (client, fingerprint) = TalosClient::maintenance(node.name(), node.addr()).await?;
            let version = client.version().await?;
            anyhow::Ok((client, fingerprint, version))
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let query_time = queried.elapsed();
    let mut fingerprints = HashSet::new();
    let mut clients = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok((client, fingerprint, version)) => {
                anyhow::ensure!(
                    version.version.as_ref().is_some_and(|v| v.tag == "v1.13.9"),
                    "node {} reported an unexpected version",
                    client.node()
                );
                fingerprints.insert(fingerprint);
                clients.push(client);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let hwm = proc_status_kib("VmHWM:").unwrap_or(0);
    let first = sim.nodes().first().map(|n| n.addr().to_string()).unwrap_or_default();
    let last = sim.nodes().last().map(|n| n.addr().to_string()).unwrap_or_default();
    println!("talos simulator: {} nodes on {first} .. {last}", args.nodes);
    println!(
        "  start (all listeners up):          {:>8.1} ms",
        start_time.as_secs_f64() * 1e3
    );
    println!(
        "  connect + Version, every node:     {:>8.1} ms ({} ok, {} failed, concurrency {})",
        query_time.as_secs_f64() * 1e3,
        clients.len(),
        failures.len(),
        args.concurrency
    );
    println!("  distinct maintenance fingerprints: {:>8}", fingerprints.len());
    println!("  RSS before start:                  {:>8} KiB", rss_before);
    println!("  RSS after start:                   {:>8} KiB", rss_started);
    println!(
        "  peak RSS (VmHWM, with {} open client connections): {hwm} KiB",
        clients.len()
    );
    for f in failures.iter().take(5) {
        eprintln!("  failure: {f}");
    }
    if args.serve {
        println!("serving; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    drop(clients);
    sim.stop().await;
    anyhow::ensure!(failures.is_empty(), "{} nodes failed to answer Version", failures.len());
    Ok(())
}

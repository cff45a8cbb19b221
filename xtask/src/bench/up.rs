//! `cargo xtask bench up`: `bootstrap up` (release build) on a simulated
//! Talos rack of N nodes (3 control planes, the rest workers) whose reboots
//! take `--reboot-ms`, against the critical path: the same run on the
//! smallest cluster (1 control plane + 1 worker) with the same timings, which
//! is the chain of steps no concurrency can shorten. Reports wall times,
//! their ratio (target ≤ 1.2×) and the peak RSS of `bootstrap`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sim_rack::{RackOptions, SimRack};

/// Options of `cargo xtask bench up`.
#[derive(Debug, clap::Args)]
pub struct UpBenchArgs {
    /// Nodes in the large rack.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Simulated reboot time after apply-config, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub reboot_ms: u64,
    /// Runs of each size (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// A rack inventory: `cps` control planes and `workers` workers on 127.`block`.x.y.
fn inventory(dir: &Path, block: u8, cps: usize, workers: usize) -> Result<PathBuf> {
    let mut toml = format!(
        "[defaults]\ninstall_disk = {{ path = \"/dev/vda\" }}\n\n[[cluster]]\nname = \"bench\"\ndistribution = \"talos\"\nendpoint = \"127.{block}.255.1\"\n\n[cluster.network]\nnode_cidr = \"127.{block}.0.0/16\"\ngateway = \"127.{block}.255.254\"\nnameservers = [\"127.{block}.255.254\"]\npod_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.96.0.0/16\"\n"
    );
    for i in 0..cps + workers {
        let (role, name) = if i < cps {
            ("controlplane", format!("cp-{}", i + 1))
        } else {
            ("worker", format!("worker-{}", i + 1 - cps))
        };
        toml += &format!(
            "\n[[cluster.node]]\nname = \"{name}\"\nrole = \"{role}\"\nip = \"127.{block}.{}.{}\"\n",
            i / 250,
            i % 250 + 1
        );
    }
    let path = dir.join(format!("bench-{block}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// One `up` against a fresh rack: wall time.
fn one_run(bin: &Path, dir: &Path, block: u8, cps: usize, workers: usize, reboot: Duration) -> Result<Duration> {
    let inv = inventory(dir, block, cps, workers)?;
    let cluster = bootstrap::inventory::load(&inv)
        .map_err(|d| anyhow::anyhow!("bench inventory: {:?}", d.0.first().map(ToString::to_string)))?
        .inventory
        .clusters
        .remove(0);
    let state = dir.join(format!("state-{block}"));
    let crds = crate::sim_rack::offline_crds(&dir.join("artifacts"))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let rack = SimRack::start(
            &cluster,
            RackOptions {
                reboot_delay: reboot,
                ready_delay: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await?;
        let started = Instant::now();
        let status = tokio::task::block_in_place(|| {
            Command::new(bin)
                .arg("-i")
                .arg(&inv)
                .arg("--state-dir")
                .arg(&state)
                .args([
                    "--quiet",
                    "up",
                    "--concurrency",
                    "256",
                    "--timeout",
                    "300",
                    "--artifacts",
                ])
                .arg(&crds)
                .status()
        })?;
        let wall = started.elapsed();
        rack.stop().await;
        if !status.success() {
            bail!("bootstrap up on {} nodes failed ({status})", cps + workers);
        }
        Ok(wall)
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak resident set of the largest child waited for so far, in MiB.
fn children_peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

/// Runs the benchmark and prints its figures.
pub fn run(args: UpBenchArgs) -> Result<()> {
    anyhow::ensure!(args.nodes >= 4, "--nodes must be at least 4");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "bootstrap"])
        .current_dir(root)
        .status()?
        .success()
    {
        bail!("building bootstrap (release) failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release/bootstrap");
    let dir = target.join("bench-up");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let reboot = Duration::from_millis(args.reboot_ms);
    let mut small = Vec::new();
    let mut large = Vec::new();
    for i in 0..args.runs {
        let block = 200 + (i as u8) * 2;
        small.push(one_run(&bin, &dir, block, 1, 1, reboot)?);
        large.push(one_run(&bin, &dir, block + 1, 3, args.nodes - 3, reboot)?);
    }
    let rss = children_peak_rss_mib();
    let (s, l) = (median(small.clone()), median(large.clone()));
    println!(
        "bench up: {} simulated Talos nodes, {} ms reboot, {} runs each",
        args.nodes, args.reboot_ms, args.runs
    );
    println!(
        "  critical path (1 cp + 1 worker): median {:.2} s  {:?}",
        s.as_secs_f64(),
        small
    );
    println!(
        "  {} nodes (3 cp + {} workers):     median {:.2} s  {:?}",
        args.nodes,
        args.nodes - 3,
        l.as_secs_f64(),
        large
    );
    println!("  ratio: {:.2}x (target <= 1.2x)", l.as_secs_f64() / s.as_secs_f64());
    println!("  peak RSS of bootstrap: {rss:.1} MiB");
    Ok(())
}

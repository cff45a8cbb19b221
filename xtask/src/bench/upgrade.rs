//! `cargo xtask bench upgrade`: `bootstrap upgrade` (release build) of a
//! converged simulated Talos rack of N nodes (3 control planes, the rest
//! workers, `--batch P%`) whose reboots take `--reboot-ms`, against its
//! critical path: a rack with the same chain of sequential steps (3 control
//! planes, then as many one-worker batches as the large rack has batches),
//! so the ratio shows what the width of each batch costs (target: close to 1×).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::up::{inventory, load_cluster, median, release_binary, seed_secrets, wait_with_rss};
use crate::sim_rack::{RackOptions, SimRack};

/// The version the simulated nodes are upgraded to (they run `SimOptions`' default).
const TARGET: &str = "v1.14.0";

/// Options of `cargo xtask bench upgrade`.
#[derive(Debug, clap::Args)]
pub struct UpgradeBenchArgs {
    /// Nodes in the large rack.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Share of the workers upgraded together, in percent.
    #[arg(long, default_value_t = 10)]
    pub batch_percent: usize,
    /// Simulated reboot time, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub reboot_ms: u64,
    /// Runs of each size (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// `up` (not timed), then the timed `upgrade`: its wall time and peak RSS (MiB).
fn one_run(
    bin: &Path,
    dir: &Path,
    block: u8,
    workers: usize,
    batch: &str,
    reboot: Duration,
) -> Result<(Duration, f64)> {
    let inv = inventory(dir, block, 3, workers)?;
    let cluster = load_cluster(&inv)?;
    let state = dir.join(format!("state-{block}"));
    seed_secrets(bin, dir, &inv, &state.join("bench"))?;
    let crds = crate::sim_rack::offline_crds(&dir.join("artifacts"))?;
    let bootstrap = |args: &[&str], log: &str| -> Result<std::process::Child> {
        Ok(Command::new(bin)
            .arg("-i")
            .arg(&inv)
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log))?)
            .spawn()?)
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let options = RackOptions {
            reboot_delay: reboot,
            ready_delay: Duration::from_millis(200),
            ..Default::default()
        };
        let rack = SimRack::start(&cluster, options).await?;
        let crds = crds.to_string_lossy().into_owned();
        let up_log = format!("up-{block}.log");
        let up = bootstrap(
            &["up", "--concurrency", "256", "--timeout", "300", "--artifacts", &crds],
            &up_log,
        )?;
        let (status, _) = tokio::task::block_in_place(|| wait_with_rss(up))?;
        if status != 0 {
            rack.stop().await;
            bail!(
                "bootstrap up failed (wait status {status}); see {}",
                dir.join(up_log).display()
            );
        }
        let started = Instant::now();
        let log = format!("upgrade-{block}.log");
        let args = [
            "upgrade",
            "--talos",
            TARGET,
            "--batch",
            batch,
            "--concurrency",
            "256",
            "--timeout",
            "300",
        ];
        let child = bootstrap(&args, &log)?;
        let (status, rss) = tokio::task::block_in_place(|| wait_with_rss(child))?;
        let wall = started.elapsed();
        let behind = rack.talos.nodes().iter().filter(|n| n.version() != TARGET).count();
        rack.stop().await;
        if status != 0 || behind > 0 {
            bail!(
                "bootstrap upgrade of {} nodes failed (wait status {status}, {behind} nodes not at {TARGET}); see {}",
                3 + workers,
                dir.join(log).display()
            );
        }
        Ok((wall, rss))
    })
}

/// Runs the benchmark and prints its figures.
pub fn run(args: UpgradeBenchArgs) -> Result<()> {
    anyhow::ensure!(args.nodes >= 4, "--nodes must be at least 4");
    anyhow::ensure!((1..=100).contains(&args.batch_percent), "--batch-percent is 1 to 100");
    let workers = args.nodes - 3;
    let per_batch = (workers * args.batch_percent).div_ceil(100).max(1);
    let batches = workers.div_ceil(per_batch);
    let (bin, dir) = release_binary("bench-upgrade")?;
    let reboot = Duration::from_millis(args.reboot_ms);
    let (mut chain, mut large, mut rss) = (Vec::new(), Vec::new(), 0f64);
    for i in 0..args.runs {
        let block = 230 + (i as u8) * 2;
        chain.push(one_run(&bin, &dir, block, batches, "1", reboot)?.0);
        let (wall, r) = one_run(
            &bin,
            &dir,
            block + 1,
            workers,
            &format!("{}%", args.batch_percent),
            reboot,
        )?;
        large.push(wall);
        rss = rss.max(r);
    }
    let (c, l) = (median(chain.clone()), median(large.clone()));
    println!(
        "bench upgrade: {} simulated Talos nodes to {TARGET}, --batch {}% ({batches} batches of {per_batch}), {} ms reboot, {} runs each",
        args.nodes, args.batch_percent, args.reboot_ms, args.runs
    );
    println!(
        "  critical path (3 cp + {batches} workers, --batch 1): median {:.2} s  {:?}",
        c.as_secs_f64(),
        chain
    );
    println!(
        "  {} nodes (3 cp + {workers} workers):              median {:.2} s  {:?}",
        args.nodes,
        l.as_secs_f64(),
        large
    );
    println!(
        "  ratio: {:.2}x; peak RSS of bootstrap upgrade: {rss:.1} MiB; logs in {}",
        l.as_secs_f64() / c.as_secs_f64(),
        dir.display()
    );
    Ok(())
}

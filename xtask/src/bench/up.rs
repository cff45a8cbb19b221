//! `cargo xtask bench up`: `bootstrap up` (release build) on a simulated
//! Talos rack of N nodes (3 control planes, the rest workers) whose reboots
//! take `--reboot-ms`, against the critical path: the same run on the
//! smallest cluster (1 control plane + 1 worker) with the same timings, which
//! is the chain of steps no concurrency can shorten. Reports wall times,
//! their ratio (target ≤ 1.2×) and the peak RSS of `bootstrap`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
        "[defaults]\ninstall_disk = {{ path = \"/dev/vda\" }}\n\n[[cluster]]\nname = \"bench\"\ndistribution = \"talos\"\nendpoint = \"127.{block}.255.1\"\n\n[cluster.network]\nnode_cidr = \"127.{block}.0.0/16\"\ngateway = \"127.{block}.255.254\"\nnameservers = [\"127.{block}.255.254\"]\npod_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.96.0.0/16\"\n\n[cluster.gitops]\nengine = \"flux\"\nrepository = \"https://git.bench.invalid/gitops.git\"\npath = \"./clusters/bench\"\n"
    );
    for i in 0..cps + workers {
        let (role, name) = if i < cps {
            ("controlplane", format!("cp-{}", i + 1))
        } else {
            ("worker", format!("worker-{}", i + 1 - cps))
        };
        toml += &format!(
            "\n[[cluster.node]]\nname = \"{name}\"\nrole = \"{role}\"\nip = \"127.{block}.{hi}.{lo}\"\nmac = \"02:00:7f:{block:02x}:{hi:02x}:{lo:02x}\"\n",
            hi = i / 250,
            lo = i % 250 + 1
        );
    }
    let path = dir.join(format!("bench-{block}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// One `up` against a fresh rack: wall time and the peak RSS of `bootstrap`
/// (MiB). Its progress and phase timings go to `<dir>/up-<block>.log`.
fn one_run(bin: &Path, dir: &Path, block: u8, cps: usize, workers: usize, reboot: Duration) -> Result<(Duration, f64)> {
    let inv = inventory(dir, block, cps, workers)?;
    let cluster = bootstrap::inventory::load(&inv)
        .map_err(|d| anyhow::anyhow!("bench inventory: {:?}", d.0.first().map(ToString::to_string)))?
        .inventory
        .clusters
        .remove(0);
    let state = dir.join(format!("state-{block}"));
    seed_secrets(bin, dir, &inv, &state.join("bench"))?;
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
        let log = std::fs::File::create(dir.join(format!("up-{block}.log")))?;
        let child = Command::new(bin)
            .arg("-i")
            .arg(&inv)
            .arg("--state-dir")
            .arg(&state)
            .args(["up", "--concurrency", "256", "--timeout", "300", "--artifacts"])
            .arg(&crds)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let (status, rss) = tokio::task::block_in_place(|| wait_with_rss(child))?;
        let wall = started.elapsed();
        rack.stop().await;
        if status != 0 {
            bail!(
                "bootstrap up on {} nodes failed (wait status {status}); see {}",
                cps + workers,
                dir.join(format!("up-{block}.log")).display()
            );
        }
        Ok((wall, rss))
    })
}

/// Puts one pre-generated secrets bundle into the run's state dir: RSA-4096
/// key generation takes 0.3-5 s at random and is paid once per cluster, so
/// leaving it in would drown the node work being compared.
fn seed_secrets(bin: &Path, dir: &Path, inv: &Path, cluster_state: &Path) -> Result<()> {
    let seed = dir.join("seed-state");
    if !seed.join("bench/secrets.yaml").exists() {
        let status = Command::new(bin)
            .arg("-i")
            .arg(inv)
            .arg("--state-dir")
            .arg(&seed)
            .args(["--quiet", "render", "--out"])
            .arg(dir.join("seed-render"))
            .status()?;
        anyhow::ensure!(status.success(), "bootstrap render (secrets for the bench) failed");
    }
    std::fs::create_dir_all(cluster_state)?;
    for f in std::fs::read_dir(seed.join("bench"))? {
        let f = f?.path();
        std::fs::copy(&f, cluster_state.join(f.file_name().context("file name")?))?;
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits for `child` with wait4(2), which reports that process's own peak
/// resident set (std's `wait` does not; getrusage(RUSAGE_CHILDREN) would also
/// count the compiler cargo ran). Returns (wait status, peak RSS in MiB).
fn wait_with_rss(child: std::process::Child) -> Result<(i32, f64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall filling the two out-parameters we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    Ok((status, usage.ru_maxrss as f64 / 1024.0))
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
    let mut rss = (0f64, 0f64);
    for i in 0..args.runs {
        let block = 200 + (i as u8) * 2;
        let (wall, r) = one_run(&bin, &dir, block, 1, 1, reboot)?;
        small.push(wall);
        rss.0 = rss.0.max(r);
        let (wall, r) = one_run(&bin, &dir, block + 1, 3, args.nodes - 3, reboot)?;
        large.push(wall);
        rss.1 = rss.1.max(r);
    }
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
    println!(
        "  peak RSS of bootstrap: {:.1} MiB (2 nodes), {:.1} MiB ({} nodes); logs in {}",
        rss.0,
        rss.1,
        args.nodes,
        dir.display()
    );
    Ok(())
}

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
    /// After the last large run: leave its last worker out of `up`, then
    /// time `add-node` of it and `plan` of the converged cluster.
    #[arg(long)]
    pub day2: bool,
}

/// A rack inventory: `cps` control planes and `workers` workers on 127.`block`.x.y.
pub(crate) fn inventory(dir: &Path, block: u8, cps: usize, workers: usize) -> Result<PathBuf> {
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

/// Day-2 figures on the converged large cluster.
struct Day2 {
    /// `add-node` of the inventory's last worker, left out of the first `up`.
    add_node: Duration,
    /// `plan` once everything converged.
    plan: Duration,
}

/// What one `up` took: wall time, the peak RSS of `bootstrap` (MiB), and the
/// CPU seconds `bootstrap` and the simulated rack used meanwhile.
struct Took {
    wall: Duration,
    rss: f64,
    cpu_bootstrap: f64,
    cpu_rack: f64,
}

/// One `up` against a fresh rack ([`Took`]). Its progress and phase timings go to `<dir>/up-<block>.log`. With
/// `day2`, the last worker is left out of `up`, then added with `add-node`,
/// then the converged cluster is planned.
fn one_run(
    bin: &Path,
    dir: &Path,
    block: u8,
    cps: usize,
    workers: usize,
    reboot: Duration,
    day2: bool,
) -> Result<(Took, Option<Day2>)> {
    let full = inventory(dir, block, cps, workers)?;
    let inv = if day2 {
        let text = std::fs::read_to_string(&full)?;
        let without = dir.join(format!("bench-{block}-without-last.toml"));
        std::fs::write(&without, &text[..text.rfind("[[cluster.node]]").context("a node")?])?;
        without
    } else {
        full.clone()
    };
    let last = format!("worker-{workers}");
    let cluster = load_cluster(&full)?;
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
        let cpu0 = (
            super::cpu_seconds(libc::RUSAGE_CHILDREN),
            super::cpu_seconds(libc::RUSAGE_SELF),
        );
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
        let took = Took {
            wall: started.elapsed(),
            rss,
            cpu_bootstrap: super::cpu_seconds(libc::RUSAGE_CHILDREN) - cpu0.0,
            cpu_rack: super::cpu_seconds(libc::RUSAGE_SELF) - cpu0.1,
        };
        if status != 0 {
            rack.stop().await;
            bail!(
                "bootstrap up on {} nodes failed (wait status {status}); see {}",
                cps + workers,
                dir.join(format!("up-{block}.log")).display()
            );
        }
        let day2 = match day2 {
            false => None,
            true => Some(tokio::task::block_in_place(|| -> Result<Day2> {
                // Each command's progress (JSON events, with timings) goes to `<dir>/<name>-<block>.log`.
                let timed = |name: &str, args: &[&str]| -> Result<Duration> {
                    let log = dir.join(format!("{name}-{block}.log"));
                    let started = Instant::now();
                    let status = Command::new(bin)
                        .arg("-i")
                        .arg(&full)
                        .arg("--state-dir")
                        .arg(&state)
                        .args(["--output", "json"])
                        .args(args)
                        .arg("--artifacts")
                        .arg(&crds)
                        .stdout(std::fs::File::create(&log)?)
                        .stderr(Stdio::null())
                        .status()?;
                    let took = started.elapsed();
                    anyhow::ensure!(status.success(), "bootstrap {args:?} failed; see {}", log.display());
                    Ok(took)
                };
                let add_node = timed("add-node", &["add-node", &last, "--concurrency", "256"])?;
                let plan = timed("plan", &["plan", "--concurrency", "256"])?;
                Ok(Day2 { add_node, plan })
            })?),
        };
        rack.stop().await;
        Ok((took, day2))
    })
}

/// The one cluster of a bench inventory.
pub(crate) fn load_cluster(inv: &Path) -> Result<bootstrap::inventory::Cluster> {
    let loaded = bootstrap::inventory::load(inv)
        .map_err(|d| anyhow::anyhow!("bench inventory: {:?}", d.0.first().map(ToString::to_string)))?;
    loaded.inventory.clusters.into_iter().next().context("a cluster")
}

/// Puts one pre-generated secrets bundle into the run's state dir: RSA-4096
/// key generation takes 0.3-5 s at random and is paid once per cluster, so
/// leaving it in would drown the node work being compared.
pub(crate) fn seed_secrets(bin: &Path, dir: &Path, inv: &Path, cluster_state: &Path) -> Result<()> {
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

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits for `child`; returns (wait status, peak RSS in MiB). The peak is
/// `VmHWM` of /proc/PID/status, read every 20 ms while it runs (it only
/// grows, so the last reading is the peak but for the last 20 ms). Not
/// wait4's ru_maxrss: std spawns with a vfork-like clone, so the child's
/// high-water mark starts at this process's resident set (the simulated
/// rack), which is what that figure used to report.
pub(crate) fn wait_with_rss(mut child: std::process::Child) -> Result<(i32, f64)> {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status.code().unwrap_or(-1), peak_kib as f64 / 1024.0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds `bootstrap` (release); returns it and a fresh scratch dir `target/<scratch>`.
pub(crate) fn release_binary(scratch: &str) -> Result<(PathBuf, PathBuf)> {
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
    let dir = target.join(scratch);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok((target.join("release/bootstrap"), dir))
}

/// Runs the benchmark and prints its figures.
pub fn run(args: UpBenchArgs) -> Result<()> {
    anyhow::ensure!(args.nodes >= 4, "--nodes must be at least 4");
    let (bin, dir) = release_binary("bench-up")?;
    let reboot = Duration::from_millis(args.reboot_ms);
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut rss = (0f64, 0f64);
    let mut cpu = Vec::new();
    let mut day2 = None;
    for i in 0..args.runs {
        let block = 200 + (i as u8) * 2;
        let (t, _) = one_run(&bin, &dir, block, 1, 1, reboot, false)?;
        small.push(t.wall);
        rss.0 = rss.0.max(t.rss);
        let last = i + 1 == args.runs;
        let (t, d) = one_run(&bin, &dir, block + 1, 3, args.nodes - 3, reboot, last && args.day2)?;
        large.push(t.wall);
        rss.1 = rss.1.max(t.rss);
        cpu.push(t);
        day2 = day2.or(d);
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for t in cpu {
        println!(
            "  CPU of a {}-node up: bootstrap {:.1} s, simulated rack {:.1} s, of {:.1} s ({cores} cores x {:.2} s wall)",
            args.nodes,
            t.cpu_bootstrap,
            t.cpu_rack,
            cores as f64 * t.wall.as_secs_f64(),
            t.wall.as_secs_f64()
        );
    }
    if let Some(d) = day2 {
        println!(
            "  day 2 on the converged {} nodes: add-node of one worker {:.2} s (target <= 5 s), plan {:.2} s (target <= 3 s)",
            args.nodes,
            d.add_node.as_secs_f64(),
            d.plan.as_secs_f64()
        );
    }
    Ok(())
}

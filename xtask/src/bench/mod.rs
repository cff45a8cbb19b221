//! Benchmarks behind `cargo xtask bench`: not part of the test suite.

pub mod fanout;
pub mod up;
pub mod upgrade;

/// `cargo xtask bench ...`.
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// `true` on 20 rack nodes, cold connections: `bootstrap exec` (release)
    /// vs `ansible all -m command -a true -f 20` vs `xargs -P20 ssh`.
    Fanout(fanout::FanoutArgs),
    /// `bootstrap up` on 100 simulated Talos nodes (2 s reboots) against the
    /// critical path, with peak RSS.
    Up(up::UpBenchArgs),
    /// `bootstrap upgrade` of 100 simulated Talos nodes (`--batch 10%`)
    /// against a rack with the same chain of sequential steps.
    Upgrade(upgrade::UpgradeBenchArgs),
}

/// CPU seconds (user + system) from `getrusage(who)`: `RUSAGE_SELF` is this
/// process with all its threads (a simulated rack), `RUSAGE_CHILDREN` every
/// child process it has reaped.
pub(crate) fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Runs a benchmark. A debug build of xtask runs itself again as a release
/// build first: the simulated racks live in this process, and unoptimised
/// they spent twice the CPU (15.2 s against 7.5 s of a 1,000-node `up`),
/// which on 2 cores is time taken from the `bootstrap` being measured.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
            .args(std::env::args_os().skip(1))
            .status()?;
        anyhow::ensure!(status.success(), "the release build of the benchmark failed ({status})");
        return Ok(());
    }
    match cmd {
        BenchCmd::Fanout(a) => fanout::run(a),
        BenchCmd::Up(a) => up::run(a),
        BenchCmd::Upgrade(a) => upgrade::run(a),
    }
}

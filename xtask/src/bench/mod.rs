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

/// Runs a benchmark.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fanout(a) => fanout::run(a),
        BenchCmd::Up(a) => up::run(a),
        BenchCmd::Upgrade(a) => upgrade::run(a),
    }
}

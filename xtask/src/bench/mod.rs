//! Benchmarks behind `cargo xtask bench`: not part of the test suite.

pub mod fanout;
pub mod up;

/// `cargo xtask bench ...`.
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// `true` on 20 rack nodes, cold connections: `bootstrap exec` (release)
    /// vs `ansible all -m command -a true -f 20` vs `xargs -P20 ssh`.
    Fanout(fanout::FanoutArgs),
    /// `bootstrap up` on 100 simulated Talos nodes (2 s reboots) against the
    /// critical path, with peak RSS.
    Up(up::UpBenchArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fanout(a) => fanout::run(a),
        BenchCmd::Up(a) => up::run(a),
    }
}

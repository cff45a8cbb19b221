//! Benchmarks behind `cargo xtask bench`: not part of the test suite.

pub mod fanout;

/// `cargo xtask bench ...`.
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// `true` on 20 rack nodes, cold connections: `bootstrap exec` (release)
    /// vs `ansible all -m command -a true -f 20` vs `xargs -P20 ssh`.
    Fanout(fanout::FanoutArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fanout(a) => fanout::run(a),
    }
}

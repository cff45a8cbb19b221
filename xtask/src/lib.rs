//! Developer tasks behind `cargo xtask`: the test suite with its prerequisites,
//! and (in later modules) the test rack, simulators, demo and benchmarks. Never
//! linked into the `bootstrap` binary.

pub mod kube_sim;
pub mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the tests need (apt packages, a Python venv), then run
    /// formatting, lints and the whole test suite.
    Test(test::TestArgs),
    /// Run a simulator standalone.
    #[command(subcommand)]
    Sim(Sim),
}

#[derive(Subcommand)]
enum Sim {
    /// The Kubernetes API simulator, with an admin kubeconfig.
    Kube(kube_sim::cli::Args),
}

/// Entry point of the `xtask` binary.
pub fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::Test(a) => test::run(a),
        Task::Sim(Sim::Kube(a)) => kube_sim::cli::run(a),
    }
}

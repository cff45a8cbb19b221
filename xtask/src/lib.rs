//! Developer tasks behind `cargo xtask`: the test suite with its prerequisites,
//! and (in later modules) the test rack, simulators, demo and benchmarks. Never
//! linked into the `bootstrap` binary.

pub mod bench;
pub mod codegen;
pub mod demo;
pub mod etcd;
pub mod k3s_standin;
pub mod kube_sim;
pub mod rack;
pub mod redfish_front;
pub mod sim_rack;
pub mod sushy;
pub mod talos_sim;
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
    /// The test rack: real OpenSSH nodes in network namespaces (root).
    #[command(subcommand)]
    Rack(rack::RackCmd),
    /// Benchmarks (not part of the test suite).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Run the simulated BMCs of inventory/bmc-sim.toml until Ctrl-C.
    BmcSim,
    /// Run simulators (`sim talos --nodes 500`) and print their figures.
    Sim(talos_sim::cmd::SimArgs),
    /// Run the Kubernetes API simulator standalone, with an admin kubeconfig.
    KubeSim(kube_sim::cli::Args),
    /// `bootstrap up` end to end against a simulated 3 + 2 Talos rack.
    Demo(demo::DemoArgs),
    /// Generate product data from pinned upstream sources (`codegen flux`).
    #[command(subcommand)]
    Codegen(codegen::CodegenCmd),
}

/// Entry point of the `xtask` binary.
pub fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::Test(a) => test::run(a),
        Task::Rack(c) => rack::run(c),
        Task::Bench(c) => bench::run(c),
        Task::BmcSim => sushy::run_bmc_sim(),
        Task::Sim(a) => talos_sim::cmd::run(a),
        Task::KubeSim(a) => kube_sim::cli::run(a),
        Task::Demo(a) => demo::run(a),
        Task::Codegen(c) => codegen::run(c),
    }
}

//! The commands: one module each over a shared [`context`] (inventory
//! loading, cluster selection, state dir, exit codes). Each takes parsed
//! arguments, works through library modules, and returns an exit code.

pub mod context;
pub mod day2;
pub mod exec;
pub mod lock;
pub mod provision;
pub mod render;
pub mod reset;
pub mod reset_k3s;
pub mod serve;
pub mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command, Global, KubeconfigArgs, Output};
use crate::inventory::{self, Loaded};
use crate::state::StateStore;
pub use context::{EXIT_FAILURE, EXIT_INTERRUPTED};
use context::{fail, load_inventory, selected, state_dir};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let g = &cli.global;
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "bootstrap", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Check => check(g),
        Command::Up(a) => up::up(g, &a),
        Command::AddNode(a) => up::add_node(g, &a),
        Command::Reset(a) => reset::reset(g, &a),
        Command::Upgrade(a) => day2::upgrade(g, &a),
        Command::RemoveNode(a) => day2::remove_node(g, &a),
        Command::Snapshot(a) => day2::snapshot(g, &a),
        Command::Render(a) => render::run(g, &a, &crate::phases::export::manifests),
        Command::Plan(a) => up::plan(g, &a),
        Command::Status => status(g),
        Command::Kubeconfig(a) => kubeconfig(g, &a),
        Command::Exec(a) => exec::run(g, &a),
        Command::Power(a) => provision::power_command(g, &a),
        Command::Provision(a) => provision::provision_command(g, &a),
        Command::Serve(a) => serve::run(g, &a),
    }
}

fn check(g: &Global) -> ExitCode {
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let clusters = match selected(g, &loaded.inventory.clusters) {
        Ok(c) => c,
        Err(e) => {
            return fail(e);
        }
    };
    for c in clusters {
        let cps = c.control_planes().count();
        let workers = c.nodes.len() - cps;
        if g.output == Output::Json {
            let line = serde_json::json!({
                "cluster": c.name, "distribution": c.distribution, "endpoint": c.endpoint,
                "controlplanes": cps, "workers": workers,
                "node_cidr": c.network.node_cidr.to_string(), "pod_cidr": c.network.pod_cidr.to_string(),
                "service_cidr": c.network.service_cidr.to_string(),
            });
            println!("{line}");
        } else {
            let dist = match c.distribution {
                inventory::Distribution::Talos => format!("talos {}", c.versions.talos),
                inventory::Distribution::K3s => format!("k3s {}", c.versions.k3s),
            };
            let gitops = c.gitops.as_ref().map_or("no gitops".to_owned(), |g| {
                format!("{:?} {}", g.engine, g.repository).to_lowercase()
            });
            println!(
                "{}: ok, {dist}, {cps} control plane(s) + {workers} worker(s), api {}, nodes {}, pods {}, services {}, {gitops}",
                c.name,
                c.api_url(),
                c.network.node_cidr,
                c.network.pod_cidr,
                c.network.service_cidr,
            );
        }
    }
    ExitCode::SUCCESS
}

/// The inventory, the selected clusters' names and the state dir, or the exit code.
fn clusters_and_state(g: &Global) -> Result<(Loaded, Vec<String>, PathBuf), ExitCode> {
    let loaded = load_inventory(g).ok_or(ExitCode::from(EXIT_FAILURE))?;
    let names = selected(g, &loaded.inventory.clusters)
        .map_err(fail)?
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let dir = state_dir(g, &loaded.inventory.path);
    Ok((loaded, names, dir))
}

/// `status`: what the state dir records per phase and node.
fn status(g: &Global) -> ExitCode {
    let (_, names, dir) = match clusters_and_state(g) {
        Ok(x) => x,
        Err(code) => return code,
    };
    for name in names {
        match StateStore::peek(&dir, &name) {
            Ok(None) => println!(
                "{name}: nothing recorded yet (no `up` has run; state dir {})",
                dir.display()
            ),
            Ok(Some(state)) if g.output == Output::Json => {
                println!("{}", serde_json::json!({ "cluster": name, "state": state }));
            }
            Ok(Some(state)) => {
                println!("{name}:");
                for (phase, p) in &state.phases {
                    println!("  {phase}: {}", if p.done { "done" } else { "in progress" });
                    for (target, step) in &p.steps {
                        println!("    {target}: {step}");
                    }
                }
                for (artifact, path) in &state.artifacts {
                    println!("  {artifact}: {}", path.display());
                }
            }
            Err(e) => {
                return fail(e);
            }
        }
    }
    ExitCode::SUCCESS
}

/// `kubeconfig`: the cluster's kubeconfig from the state dir, to stdout or a 0600 file.
fn kubeconfig(g: &Global, a: &KubeconfigArgs) -> ExitCode {
    let (_, names, dir) = match clusters_and_state(g) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let [name] = names.as_slice() else {
        return fail("the inventory has several clusters: pick one with --cluster");
    };
    let path = match StateStore::peek(&dir, name) {
        Ok(Some(s)) => s.artifacts.get("kubeconfig").cloned(),
        Ok(None) => None,
        Err(e) => {
            return fail(e);
        }
    };
    let Some(bytes) = path.and_then(|p| std::fs::read(p).ok()) else {
        eprintln!(
            "error: no kubeconfig recorded for cluster `{name}` in {}: run `bootstrap up` first",
            dir.display()
        );
        return ExitCode::from(EXIT_FAILURE);
    };
    match &a.out {
        Some(out) => match crate::fsutil::write_secret(out, &bytes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("cannot write {}: {e}", out.display())),
        },
        None => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&bytes);
            ExitCode::SUCCESS
        }
    }
}

//! Command implementations: each takes parsed arguments, does its work through
//! library modules, and returns an exit code. Errors are printed here, once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command, Global, KubeconfigArgs, Output};
use crate::inventory::{self, Cluster, Diagnostics, Loaded};
use crate::state::StateStore;

/// Exit code for invalid input (inventory, arguments) and failed runs.
pub const EXIT_FAILURE: u8 = 1;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let g = &cli.global;
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "bootstrap", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Check => check(g),
        Command::Up(a) => crate::up::up(g, &a),
        Command::AddNode(a) => crate::up::add_node(g, &a),
        Command::Reset(a) => crate::reset::reset(g, &a),
        Command::Render(a) => crate::render::cli::run(g, &a, &crate::phases::export::manifests),
        Command::Plan(a) => crate::up::plan(g, &a),
        Command::Status => status(g),
        Command::Kubeconfig(a) => kubeconfig(g, &a),
        Command::Exec(a) => crate::exec::run(g, &a),
        Command::Power(a) => crate::provision::power_command(g, &a),
        Command::Provision(a) => crate::provision::provision_command(g, &a),
        Command::Serve(a) => crate::serve::command(g, &a),
    }
}

/// The inventory path from `-i` (required by every command but `completions`).
pub fn inventory_path(g: &Global) -> Result<PathBuf, String> {
    g.inventory
        .clone()
        .ok_or_else(|| "no inventory given: pass -i/--inventory PATH (or set BOOTSTRAP_INVENTORY)".into())
}

/// Loads and validates the inventory, printing every finding; `None` on error.
pub fn load_inventory(g: &Global) -> Option<Loaded> {
    let path = match inventory_path(g) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    match inventory::load(&path) {
        Ok(loaded) => {
            print_diagnostics(g, &Diagnostics(loaded.warnings.clone()), false);
            Some(loaded)
        }
        Err(diags) => {
            print_diagnostics(g, &diags, true);
            None
        }
    }
}

fn print_diagnostics(g: &Global, diags: &Diagnostics, summary: bool) {
    if g.output == Output::Json {
        for d in &diags.0 {
            eprintln!("{}", serde_json::to_string(d).unwrap_or_default());
        }
        return;
    }
    for d in &diags.0 {
        eprintln!("{d}");
    }
    if summary {
        eprintln!(
            "{} error(s), {} warning(s): nothing was changed on any node",
            diags.errors(),
            diags.warnings()
        );
    }
}

/// The clusters selected by `--cluster` (all when omitted).
pub fn selected<'a>(g: &Global, clusters: &'a [Cluster]) -> Result<Vec<&'a Cluster>, String> {
    match &g.cluster {
        None => Ok(clusters.iter().collect()),
        Some(name) => match clusters.iter().find(|c| &c.name == name) {
            Some(c) => Ok(vec![c]),
            None => {
                let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
                Err(format!(
                    "no cluster `{name}` in the inventory (it has: {})",
                    names.join(", ")
                ))
            }
        },
    }
}

/// The state directory: `--state-dir`, else `.bootstrap/` beside the inventory.
pub fn state_dir(g: &Global, inventory: &Path) -> PathBuf {
    g.state_dir
        .clone()
        .unwrap_or_else(|| inventory.parent().unwrap_or(Path::new(".")).join(".bootstrap"))
}

fn check(g: &Global) -> ExitCode {
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let clusters = match selected(g, &loaded.inventory.clusters) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
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
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        })?
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
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILURE);
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
        eprintln!("error: the inventory has several clusters: pick one with --cluster");
        return ExitCode::from(EXIT_FAILURE);
    };
    let path = match StateStore::peek(&dir, name) {
        Ok(Some(s)) => s.artifacts.get("kubeconfig").cloned(),
        Ok(None) => None,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
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
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", out.display());
                ExitCode::from(EXIT_FAILURE)
            }
        },
        None => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&bytes);
            ExitCode::SUCCESS
        }
    }
}

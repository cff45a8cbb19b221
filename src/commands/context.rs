//! What every command shares: the inventory (loaded, findings printed),
//! the selected clusters, the state dir and the exit codes.

use std::path::{Path, PathBuf};

use crate::cli::{Global, Output};
use crate::inventory::{self, Cluster, Diagnostics, Loaded};

/// Exit code for invalid input (inventory, arguments) and failed runs.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Prints an error for the operator: every command's errors go through here
/// (one line, `error: ` first, on stderr).
pub fn report(error: impl std::fmt::Display) {
    eprintln!("error: {error}");
}

/// [`report`]s `error` and gives the failure exit code.
pub fn fail(error: impl std::fmt::Display) -> std::process::ExitCode {
    report(error);
    std::process::ExitCode::from(EXIT_FAILURE)
}

/// The exit code of a command that succeeded or failed with `result`
/// (its error [`report`]ed).
pub fn exit<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The multi-threaded runtime a command runs its async work on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
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
            report(e);
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

/// Confirms a destructive step: `--yes`, or the cluster name typed at a
/// terminal. `what` says what is destroyed ("wipes 2 node(s) of cluster c (a, b)").
pub fn confirm(g: &Global, cluster: &str, what: &str) -> Result<(), String> {
    use std::io::{BufRead, IsTerminal, Write};
    if g.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!("this {what}: pass --yes to confirm; nothing was changed"));
    }
    eprint!("This {what}. Type the cluster name to confirm: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() == cluster {
        Ok(())
    } else {
        Err("not confirmed; nothing was changed".into())
    }
}

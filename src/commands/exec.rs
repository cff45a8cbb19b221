//! `bootstrap exec`: run one command on inventory nodes over SSH, concurrently,
//! printing each node's output prefixed with its name and a summary line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::context::{EXIT_FAILURE, fail, load_inventory, selected};
use crate::cli::{ExecArgs, Global, Output as OutputFormat};
use crate::inventory::{Node, Role};
use crate::ssh::{self, ExecOpts, Options, Pool, Target};

/// Runs `bootstrap exec`.
pub fn run(g: &Global, args: &ExecArgs) -> ExitCode {
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let nodes = match selected(g, &loaded.inventory.clusters).and_then(|cs| select_nodes(&cs, args)) {
        Ok(n) => n,
        Err(e) => {
            return fail(e);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(format!("cannot start the async runtime: {e}"));
        }
    };
    let mut opts = Options::from_user_env();
    opts.accept_new = args.accept_new;
    let failed = rt.block_on(exec_on(g, args, &nodes, opts));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// The nodes chosen by `--role` and `--nodes`, in inventory order.
fn select_nodes(clusters: &[&crate::inventory::Cluster], args: &ExecArgs) -> Result<Vec<Node>, String> {
    let role = match args.role.as_deref() {
        None => None,
        Some("controlplane") => Some(Role::Controlplane),
        Some("worker") => Some(Role::Worker),
        Some(r) => return Err(format!("--role `{r}`: roles are `controlplane` and `worker`")),
    };
    let all: Vec<&Node> = clusters.iter().flat_map(|c| c.nodes.iter()).collect();
    for n in &args.nodes {
        if !all.iter().any(|x| &x.name == n) {
            let names: Vec<&str> = all.iter().map(|x| x.name.as_str()).collect();
            return Err(format!(
                "--nodes: no node `{n}` in the inventory (it has: {})",
                names.join(", ")
            ));
        }
    }
    let chosen: Vec<Node> = all
        .into_iter()
        .filter(|n| role.is_none_or(|r| n.role == r))
        .filter(|n| args.nodes.is_empty() || args.nodes.contains(&n.name))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err("no node matches --role/--nodes".into());
    }
    if let Some(n) = chosen.iter().find(|n| n.ssh.is_none()) {
        return Err(format!(
            "node `{}` has no SSH access in the inventory (add [ssh] to it or to [defaults])",
            n.name
        ));
    }
    Ok(chosen)
}

/// Runs the command everywhere; returns how many nodes failed.
async fn exec_on(g: &Global, args: &ExecArgs, nodes: &[Node], opts: Options) -> usize {
    let started = Instant::now();
    let command = args.command.join(" ");
    let targets: Vec<Target> = nodes.iter().map(Target::from_node).collect();
    let pool = Pool::new(opts);
    let json = g.output == OutputFormat::Json;
    let print_lock = Mutex::new(());
    let timeout = Duration::from_secs(args.timeout);
    let results = ssh::fanout(&pool, &targets, args.concurrency as usize, |s| {
        let (command, print_lock) = (&command, &print_lock);
        async move {
            let out = s
                .exec(
                    command,
                    ExecOpts {
                        timeout: Some(timeout),
                        ..Default::default()
                    },
                )
                .await?;
            if !json {
                let name = s.name();
                let _g = print_lock.lock().expect("print lock");
                print_prefixed(&mut std::io::stdout().lock(), name, &out.stdout);
                print_prefixed(&mut std::io::stderr().lock(), name, &out.stderr);
            }
            Ok(out)
        }
    })
    .await;
    pool.close_all().await;

    let mut failed = Vec::new();
    for r in &results {
        match &r.result {
            Ok(out) if json => println!(
                "{}",
                serde_json::json!({"node": r.name, "status": out.status, "signal": out.signal,
                    "stdout": out.stdout_str(), "stderr": out.stderr_str()})
            ),
            Ok(out) if out.success() => {}
            Ok(out) => {
                eprintln!("{}: {}", r.name, out.describe());
                failed.push(r.name.clone());
            }
            Err(e) if json => {
                println!("{}", serde_json::json!({"node": r.name, "error": e.to_string()}));
                failed.push(r.name.clone());
            }
            Err(e) => {
                eprintln!("{}: error: {e}", r.name);
                failed.push(r.name.clone());
            }
        }
        if json && matches!(&r.result, Ok(o) if !o.success()) {
            failed.push(r.name.clone());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = results.len() - failed.len();
    let summary = if failed.is_empty() {
        format!("exec: {ok} node(s) ok, 0 failed, in {secs:.2} s")
    } else {
        format!(
            "exec: {ok} node(s) ok, {} failed ({}), in {secs:.2} s",
            failed.len(),
            failed.join(", ")
        )
    };
    if json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    failed.len()
}

fn print_prefixed(w: &mut dyn Write, name: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines() {
        let _ = writeln!(w, "{name} | {line}");
    }
}

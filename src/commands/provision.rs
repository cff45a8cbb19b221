//! `power` and `provision`: Redfish power actions and PXE / virtual-media
//! boots of the selected nodes, one line per node.

use std::process::ExitCode;
use std::time::Duration;

use super::context::{EXIT_FAILURE, fail, load_inventory, report, runtime, selected};
use crate::cli::{Global, Output, PowerAction, PowerArgs, ProvisionArgs};
use crate::inventory::{Cluster, Node};
use futures::StreamExt;

use crate::provision::{Options, power_node, provision_node};
use crate::redfish::ClientOptions;
use crate::redfish::power::Wait;

/// The (cluster, node) pairs selected by `--cluster` and `--nodes`.
fn targets<'a>(g: &Global, clusters: &'a [Cluster], names: &[String]) -> Result<Vec<(&'a Cluster, &'a Node)>, String> {
    let clusters = selected(g, clusters)?;
    let all: Vec<(&Cluster, &Node)> = clusters
        .iter()
        .flat_map(|c| c.nodes.iter().map(move |n| (*c, n)))
        .collect();
    if names.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for name in names {
        match all.iter().find(|(_, n)| &n.name == name) {
            Some(t) => out.push(*t),
            None => return Err(format!("no node `{name}` in the selected cluster(s)")),
        }
    }
    Ok(out)
}

/// The inventory's nodes `nodes` names (every node with a BMC when empty),
/// or the exit code after the error was reported.
fn load_targets(g: &Global, nodes: &[String]) -> Result<Vec<(Cluster, Node)>, ExitCode> {
    let loaded = load_inventory(g).ok_or(ExitCode::from(EXIT_FAILURE))?;
    let found = targets(g, &loaded.inventory.clusters, nodes).map_err(fail)?;
    Ok(found.into_iter().map(|(c, n)| (c.clone(), n.clone())).collect())
}

/// `bootstrap power status|on|off|cycle [--nodes ...]`: one line per node.
pub fn power_command(g: &Global, args: &PowerArgs) -> ExitCode {
    let targets = match load_targets(g, &args.nodes) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let verb = match args.action {
        PowerAction::Status => "status",
        PowerAction::On => "on",
        PowerAction::Off => "off",
        PowerAction::Cycle => "cycle",
    };
    let with_bmc: Vec<&str> = targets
        .iter()
        .filter(|(_, n)| n.bmc.is_some())
        .map(|(_, n)| n.name.as_str())
        .collect();
    if matches!(args.action, PowerAction::Off | PowerAction::Cycle) && !g.yes {
        eprintln!(
            "bootstrap power {verb} would cut the power of {} node(s) ({}): pass --yes to confirm; nothing was done",
            with_bmc.len(),
            with_bmc.join(", ")
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    let wait = Wait {
        timeout: Duration::from_secs(args.timeout),
        ..Wait::default()
    };
    let rt = runtime();
    let results: Vec<_> = rt.block_on(
        futures::stream::iter(targets.iter().map(|(_, n)| async move {
            let r = match (&n.bmc, args.nodes.is_empty()) {
                (None, true) => None,
                (None, false) => Some(Err(format!("node {}: no [bmc] in the inventory", n.name))),
                (Some(_), _) => Some(
                    power_node(n, args.action, wait, ClientOptions::default())
                        .await
                        .map_err(|e| e.to_string()),
                ),
            };
            (n, r)
        }))
        .buffered(usize::from(args.concurrency))
        .collect(),
    );
    let mut failed = 0;
    for (node, r) in results {
        let bmc = node.bmc.as_ref().map_or("", |b| b.url.as_str());
        match r {
            None => print_line(
                g,
                &node.name,
                "no BMC",
                &serde_json::json!({"node": node.name, "bmc": null}),
            ),
            Some(Ok(rep)) => {
                let text = match &rep.change {
                    None => format!("{} (system {}, BMC {bmc})", rep.state, rep.system),
                    Some(c) => format!("{} ({c}; system {}, BMC {bmc})", rep.state, rep.system),
                };
                let json = serde_json::json!({
                    "node": node.name, "bmc": bmc, "system": rep.system, "power": rep.state.to_string(),
                    "change": rep.change.as_ref().map(ToString::to_string),
                });
                print_line(g, &node.name, &text, &json);
            }
            Some(Err(e)) => {
                failed += 1;
                report(&e);
            }
        }
    }
    outcome(&format!("power {verb}"), failed)
}

/// The exit code once every node was tried: failure when `failed` of them
/// failed (each already reported), with a summary line.
fn outcome(command: &str, failed: usize) -> ExitCode {
    if failed == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("bootstrap {command}: {failed} node(s) failed");
    ExitCode::from(EXIT_FAILURE)
}

fn print_line(g: &Global, node: &str, text: &str, json: &serde_json::Value) {
    if g.output == Output::Json {
        println!("{json}");
    } else {
        println!("{node}: {text}");
    }
}

/// `bootstrap provision [--nodes ...]`: one line per provisioned node.
pub fn provision_command(g: &Global, args: &ProvisionArgs) -> ExitCode {
    let targets = match load_targets(g, &args.nodes) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if let Some((_, n)) = targets.iter().find(|(_, n)| n.bmc.is_none() && !args.nodes.is_empty()) {
        eprintln!(
            "error: node {} has no [bmc] in the inventory: it cannot be provisioned out of band",
            n.name
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    let opts = Options {
        concurrency: usize::from(args.concurrency),
        power: Wait {
            timeout: Duration::from_secs(args.timeout),
            ..Wait::default()
        },
        ready_timeout: Duration::from_secs(args.ready_timeout),
        allow_cycle: g.yes,
        client: ClientOptions::default(),
    };
    let rt = runtime();
    let results: Vec<_> = rt.block_on(
        futures::stream::iter(
            targets
                .iter()
                .filter(|(_, n)| n.bmc.is_some())
                .map(|(c, n)| async move { (n, provision_node(c, n, &opts).await) }),
        )
        .buffered(opts.concurrency.max(1))
        .collect(),
    );
    let mut failed = 0;
    for (node, r) in results {
        match r {
            Ok(o) => print_line(
                g,
                &node.name,
                &o.to_string(),
                &serde_json::json!({"node": node.name, "result": o.to_string()}),
            ),
            Err(e) => {
                failed += 1;
                report(&e);
            }
        }
    }
    outcome("provision", failed)
}

//! `power` and `provision`: Redfish power actions and PXE / virtual-media
//! boots of the selected nodes, one line per node.

use std::process::ExitCode;
use std::time::Duration;

use super::context::{EXIT_FAILURE, fail, load_inventory, report, selected};
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `bootstrap power status|on|off|cycle [--nodes ...]`: one line per node.
pub fn power_command(g: &Global, args: &PowerArgs) -> ExitCode {
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let targets = match targets(g, &loaded.inventory.clusters, &args.nodes) {
        Ok(t) => t,
        Err(e) => {
            return fail(e);
        }
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
            (*n, r)
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
    if failed > 0 {
        eprintln!("bootstrap power {verb}: {failed} node(s) failed");
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
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
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let targets = match targets(g, &loaded.inventory.clusters, &args.nodes) {
        Ok(t) => t,
        Err(e) => {
            return fail(e);
        }
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
                .map(|(c, n)| async move { (*n, provision_node(c, n, &opts).await) }),
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
    if failed > 0 {
        eprintln!("bootstrap provision: {failed} node(s) failed");
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
}

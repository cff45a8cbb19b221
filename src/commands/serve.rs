//! `bootstrap serve`: picks the cluster with `[cluster.provision]`, then
//! prepares (every check, nothing bound) and serves through [`crate::serve`].

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::context::{EXIT_FAILURE, load_inventory, report, selected, state_dir};
use crate::cli::{Global, ServeArgs};
use crate::inventory::Cluster;

/// The `serve` command: prepare, bind, serve until Ctrl-C or SIGTERM.
pub fn run(g: &Global, a: &ServeArgs) -> ExitCode {
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let state = state_dir(g, &loaded.inventory.path);
    let log: crate::serve::Log = Arc::new(|line: &str| eprintln!("{line}"));
    let result = (|| {
        let clusters = selected(g, &loaded.inventory.clusters).map_err(anyhow::Error::msg)?;
        let with: Vec<&Cluster> = clusters.into_iter().filter(|c| c.provision.is_some()).collect();
        let cluster = match with.as_slice() {
            [c] => *c,
            [] => bail!(
                "no selected cluster has a [cluster.provision] table: add one (interface, address) to serve its nodes"
            ),
            _ => bail!("several clusters have [cluster.provision]: serve one at a time with --cluster NAME"),
        };
        let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
        rt.block_on(async {
            let prepared = crate::serve::prepare(cluster, &state, a, log.clone()).await?;
            let shutdown = async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r,
                    _ = term.recv() => Ok(()),
                }
            };
            crate::serve::serve(prepared, log.clone(), shutdown).await
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(format!("serve: {e:#}"));
            eprintln!("nothing is listening; no node was answered");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

//! `reset`: the disaster-recovery drill (k3s clusters: [`super::reset_k3s`]).
//! For Talos clusters: identity first
//! (every node must answer mTLS with this cluster's credentials), then an etcd
//! snapshot, then explicit confirmation, then the wipe, then the rebuild (`up`)
//! with etcd restored from the snapshot. With `--nodes`, only those nodes are
//! wiped (gracefully, one at a time, leaving etcd first) and rebuilt.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::context::{confirm, exit, load_inventory, selected, state_dir};
use crate::cli::{Global, ResetArgs};
use crate::day2::probe;
use crate::engine::slots::{self, Check};
use crate::inventory::{Cluster, Distribution, Node, Role};
use crate::state::StateStore;
use crate::talos::Seen;
use crate::talos::TalosCredentials;

/// `bootstrap reset [--nodes A,B] [--snapshot FILE] --yes`.
pub fn reset(g: &Global, args: &ResetArgs) -> ExitCode {
    exit(run(g, args))
}

fn run(g: &Global, args: &ResetArgs) -> Result<(), String> {
    let loaded = load_inventory(g).ok_or("invalid inventory; nothing was done")?;
    let clusters = selected(g, &loaded.inventory.clusters)?;
    let [cluster] = clusters.as_slice() else {
        return Err("reset works on one cluster: pick it with --cluster; nothing was done".into());
    };
    let cluster: Cluster = (*cluster).clone();
    if !args.up.limit.is_empty() {
        return Err("reset selects nodes with --nodes, not --limit; nothing was done".into());
    }
    for n in &args.nodes {
        if cluster.node(n).is_none() {
            return Err(format!(
                "--nodes names `{n}`, which is not in cluster {}; nothing was done",
                cluster.name
            ));
        }
    }
    // The rebuild needs the seed secrets: refuse before anything is wiped.
    crate::phases::prerequisites::preflight(&cluster).map_err(|e| format!("cluster {}: {e}", cluster.name))?;
    let root = state_dir(g, &loaded.inventory.path);
    let inventory_dir = loaded.inventory.path.parent().map(PathBuf::from).unwrap_or_default();
    if cluster.distribution == Distribution::K3s {
        return super::reset_k3s::run(g, args, &cluster, &root, &inventory_dir);
    }
    let targets: Vec<Node> = cluster
        .nodes
        .iter()
        .filter(|n| args.nodes.is_empty() || args.nodes.contains(&n.name))
        .cloned()
        .collect();
    let full = targets.len() == cluster.nodes.len();
    let rt = super::context::runtime();
    rt.block_on(async {
        let mut store = StateStore::open(&root, &cluster.name).map_err(|e| e.to_string())?;
        let creds = crate::day2::talos_credentials(&root, &cluster)?;
        eprintln!("reset {}: verifying that every node is this cluster's", cluster.name);
        verify_identity(&targets, &creds).await?;
        // A snapshot before any control plane is wiped; only a full reset restores it.
        let wipes_etcd = targets.iter().any(|n| n.role == Role::Controlplane);
        let snapshot = match (&args.snapshot, wipes_etcd) {
            (Some(path), _) => {
                crate::day2::snapshot::verify(&store, path)?;
                Some(path.clone())
            }
            (None, true) => Some(
                crate::day2::snapshot::before_reset(&cluster, crate::day2::snapshot::Access::Talos(&creds), &mut store)
                    .await?,
            ),
            (None, false) => None,
        };
        let snapshot = snapshot.filter(|_| full);
        let names: Vec<&str> = targets.iter().map(|n| n.name.as_str()).collect();
        confirm(
            g,
            &cluster.name,
            &format!(
                "wipes {} node(s) of cluster {} ({})",
                names.len(),
                cluster.name,
                names.join(", ")
            ),
        )?;

        wipe(&targets, &creds, full).await?;
        store.forget_progress().map_err(|e| e.to_string())?;
        eprintln!("reset {}: nodes wiped; rebuilding", cluster.name);

        let limit: BTreeSet<String> = if full {
            BTreeSet::new()
        } else {
            names.iter().map(|s| s.to_string()).collect()
        };
        let mut run = super::up::cluster_run(cluster.clone(), &root, &inventory_dir, &args.up, limit);
        run.restore = snapshot;
        super::up::rebuild(g, &args.up, run, store)
            .await
            .map_err(|e| format!("cluster {}: rebuild: {e}", cluster.name))?;
        eprintln!(
            "reset {}: rebuilt{}",
            cluster.name,
            if full { " and etcd restored" } else { "" }
        );
        Ok(())
    })
}

async fn verify_identity(targets: &[Node], creds: &TalosCredentials) -> Result<(), String> {
    let seen = futures::future::join_all(targets.iter().map(|n| probe(n, Some(creds)))).await;
    let wrong: Vec<String> = targets
        .iter()
        .zip(seen)
        .filter(|(_, s)| !matches!(s, Seen::Ours { .. }))
        .map(|(n, s)| format!("{}: {}", n.name, describe(&s)))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to reset: these nodes do not answer as members of this cluster: {}; nothing was done",
            wrong.join("; ")
        ))
    }
}

fn describe(seen: &Seen) -> String {
    match seen {
        Seen::Ours { .. } => "ours".into(),
        Seen::Maintenance => "in maintenance mode (not configured)".into(),
        Seen::Foreign(why) => format!("belongs to another cluster ({why})"),
        Seen::Unreachable(why) => format!("unreachable ({why})"),
    }
}

/// Full wipe: every node at once (etcd goes with them). Partial: one node at
/// a time, gracefully (a control plane leaves etcd first), waiting for each
/// to come back in maintenance mode before the next.
async fn wipe(targets: &[Node], creds: &TalosCredentials, full: bool) -> Result<(), String> {
    let one = |n: &Node| {
        let n = n.clone();
        async move {
            crate::day2::talos_client(&n, creds, Duration::from_secs(60))?
                .reset(!full)
                .await
                .map_err(|e| e.to_string())?;
            wait_maintenance(&n).await
        }
    };
    if full {
        let (workers, cps): (Vec<&Node>, Vec<&Node>) = targets.iter().partition(|n| n.role == Role::Worker);
        for group in [workers, cps] {
            let results = futures::future::join_all(group.into_iter().map(one)).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(format!("wipe: {e}"));
            }
        }
    } else {
        for n in targets {
            one(n).await.map_err(|e| format!("wipe: {e}"))?;
        }
    }
    Ok(())
}

async fn wait_maintenance(node: &Node) -> Result<(), String> {
    let what = format!("{} back in maintenance mode", node.name);
    slots::poll_until(
        &what,
        Duration::from_secs(600),
        || false,
        || async {
            match probe(node, None).await {
                Seen::Maintenance => Check::Met(()),
                other => Check::Not(describe(&other)),
            }
        },
    )
    .await
}

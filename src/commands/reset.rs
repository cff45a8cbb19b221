//! `reset`: the disaster-recovery drill for Talos clusters. Identity first
//! (every node must answer mTLS with this cluster's credentials), then an etcd
//! snapshot, then explicit confirmation, then the wipe, then the rebuild (`up`)
//! with etcd restored from the snapshot. With `--nodes`, only those nodes are
//! wiped (gracefully, one at a time, leaving etcd first) and rebuilt.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::context::{EXIT_FAILURE, load_inventory, selected, state_dir};
use crate::cli::{Global, ResetArgs};
use crate::engine::progress::{Reporter, Style};
use crate::engine::slots::{self, Check};
use crate::engine::{self, RunCtx};
use crate::inventory::{Cluster, Distribution, Node, Role};
use crate::phases::talos_nodes::{Seen, probe};
use crate::render::{SecretsBundle, talos as render_talos};
use crate::state::StateStore;
use crate::talos::{CallPolicy, TalosClient, TalosCredentials};

/// `bootstrap reset [--nodes A,B] [--snapshot FILE] --yes`.
pub fn reset(g: &Global, args: &ResetArgs) -> ExitCode {
    match run(g, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(g: &Global, args: &ResetArgs) -> Result<(), String> {
    let loaded = load_inventory(g).ok_or("invalid inventory; nothing was done")?;
    let clusters = selected(g, &loaded.inventory.clusters)?;
    let [cluster] = clusters.as_slice() else {
        return Err("reset works on one cluster: pick it with --cluster; nothing was done".into());
    };
    let cluster: Cluster = (*cluster).clone();
    if cluster.distribution != Distribution::Talos {
        return Err(format!(
            "cluster {}: reset is built for Talos clusters only (k3s wipe over SSH is not implemented); nothing was done",
            cluster.name
        ));
    }
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
    let targets: Vec<Node> = cluster
        .nodes
        .iter()
        .filter(|n| args.nodes.is_empty() || args.nodes.contains(&n.name))
        .cloned()
        .collect();
    let full = targets.len() == cluster.nodes.len();
    let root = state_dir(g, &loaded.inventory.path);
    let inventory_dir = loaded.inventory.path.parent().map(PathBuf::from).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut store = StateStore::open(&root, &cluster.name).map_err(|e| e.to_string())?;
        let bundle = SecretsBundle::load(&root, &cluster)
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| {
                format!(
                    "cluster {}: no secrets in {}: the nodes' identity cannot be verified; nothing was done",
                    cluster.name,
                    root.display()
                )
            })?;
        let talosconfig = render_talos::talosconfig(&cluster, bundle.talos().map_err(|e| e.to_string())?)
            .map_err(|e| format!("{e:#}"))?;
        let creds = TalosCredentials::from_talosconfig(&talosconfig, None).map_err(|e| e.to_string())?;

        eprintln!("reset {}: verifying that every node is this cluster's", cluster.name);
        verify_identity(&targets, &creds).await?;
        let snapshot = match (&args.snapshot, full) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => Some(take_snapshot(&cluster, &creds, &mut store).await?),
            (None, false) => None,
        };
        let names: Vec<&str> = targets.iter().map(|n| n.name.as_str()).collect();
        confirm(g, &cluster.name, &names)?;

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
        let style = Style::detect(g.output == crate::cli::Output::Json, g.quiet);
        let cancel = Arc::new(AtomicBool::new(false));
        tokio::spawn(super::up::watch_interrupts(cancel.clone()));
        let ctx = RunCtx {
            reporter: Arc::new(Reporter::new(style)),
            state: tokio::sync::Mutex::new(store),
            concurrency: usize::from(args.up.concurrency),
            cancel,
        };
        let rebuilt = engine::run(&crate::phases::all(Arc::new(run)), &ctx).await;
        ctx.reporter.finish(rebuilt.is_ok());
        rebuilt.map_err(|e| format!("cluster {}: rebuild: {e}", cluster.name))?;
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

fn client(node: &Node, creds: &TalosCredentials) -> Result<TalosClient, String> {
    let policy = CallPolicy {
        retry_budget: Duration::from_secs(60),
        ..CallPolicy::default()
    };
    TalosClient::configured_with(
        &node.name,
        std::net::SocketAddr::new(node.ip, node.talos.port),
        creds,
        policy,
    )
    .map_err(|e| e.to_string())
}

/// Streams an etcd snapshot from the first control plane into the state dir.
async fn take_snapshot(cluster: &Cluster, creds: &TalosCredentials, store: &mut StateStore) -> Result<PathBuf, String> {
    let first = cluster.control_planes().next().ok_or("no control plane")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let dir = store.dir().join("snapshots");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Milliseconds: a second drill in the same second never overwrites a snapshot.
    let path = dir.join(format!("etcd-{stamp}.snapshot"));
    let info = client(first, creds)?
        .etcd_snapshot(&path)
        .await
        .map_err(|e| format!("snapshot: {e}; nothing was wiped"))?;
    eprintln!(
        "reset {}: etcd snapshot from {}: {} ({} bytes, sha256 {})",
        cluster.name,
        first.name,
        info.path.display(),
        info.size,
        info.sha256
    );
    Ok(path)
}

/// `--yes`, or the cluster name typed at a terminal.
fn confirm(g: &Global, cluster: &str, nodes: &[&str]) -> Result<(), String> {
    if g.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "reset wipes {} node(s) of cluster {cluster} ({}): pass --yes to confirm; nothing was wiped",
            nodes.len(),
            nodes.join(", ")
        ));
    }
    eprint!(
        "This wipes {} ({}). Type the cluster name to confirm: ",
        cluster,
        nodes.join(", ")
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() == cluster {
        Ok(())
    } else {
        Err("not confirmed; nothing was wiped".into())
    }
}

/// Full wipe: every node at once (etcd goes with them). Partial: one node at
/// a time, gracefully (a control plane leaves etcd first), waiting for each
/// to come back in maintenance mode before the next.
async fn wipe(targets: &[Node], creds: &TalosCredentials, full: bool) -> Result<(), String> {
    let one = |n: &Node| {
        let n = n.clone();
        async move {
            client(&n, creds)?.reset(!full).await.map_err(|e| e.to_string())?;
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

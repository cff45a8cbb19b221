//! `reset` for k3s clusters: the disaster-recovery drill over SSH, in the
//! Talos drill's order. Identity first, then an etcd snapshot (through
//! [`crate::day2::snapshot::take`]), then typed confirmation, then k3s is
//! stopped and uninstalled on every node (agents, then servers), then the
//! rebuild: `up` with the first server restored from the snapshot
//! (`k3s server --cluster-reset --cluster-reset-restore-path`) before the
//! other servers and the agents join it.
//!
//! What "ours" means for a k3s node: see [`crate::day2::k3s`]. A node with another token or another CA, or with no k3s while others run
//! it, is refused by name, and nothing is touched anywhere. When no node runs
//! k3s at all (a reset whose rebuild did not finish), `--snapshot FILE`
//! rebuilds from it without a wipe. The whole cluster is reset (every
//! server is wiped, so a snapshot is always needed: without a verified one
//! nothing is wiped: its sha256 as recorded when it was taken, and etcd's
//! own trailing checksum); `--nodes` is Talos only so far.

use std::path::Path;
use std::sync::Arc;

use super::context::confirm;
use crate::cli::{Global, ResetArgs};
use crate::day2::k3s::{cluster_ca, cluster_token, verify_identity, wipe};
use crate::inventory::{Cluster, Node};
use crate::phases::k3s_nodes::K3sNodes;
use crate::ssh::Pool;
use crate::state::StateStore;

/// The k3s drill on `cluster` (whole cluster; validated by the caller).
pub(super) fn run(
    g: &Global,
    args: &ResetArgs,
    cluster: &Cluster,
    root: &Path,
    inventory_dir: &Path,
) -> Result<(), String> {
    if !args.nodes.is_empty() {
        return Err(format!(
            "cluster {}: reset --nodes is built for Talos clusters only; a k3s reset takes the whole cluster; nothing was done",
            cluster.name
        ));
    }
    let rt = super::context::runtime();
    rt.block_on(async {
        let mut store = StateStore::open(root, &cluster.name).map_err(|e| e.to_string())?;
        let token = cluster_token(root, cluster)?;
        let ca = cluster_ca(&store, cluster)?;
        let pool = Pool::new(crate::ssh::Options::from_user_env());
        eprintln!("reset {}: verifying that every node is this cluster's", cluster.name);
        let bare = verify_identity(cluster, &pool, &token, &ca).await?;
        if bare && args.snapshot.is_none() {
            return Err(format!(
                "cluster {}: no node runs k3s (a reset whose rebuild did not finish?): there is nothing to snapshot; pass --snapshot FILE to rebuild from it; nothing was done",
                cluster.name
            ));
        }
        // Every node's lock file, taken before the snapshot and held through
        // the wipe and the rebuild (whose own takes find them ours): a run
        // from another workstation working on a node is refused by name
        // before anything is done.
        let locker = K3sNodes::with_ssh(
            Arc::new(super::up::cluster_run(
                cluster.clone(),
                root,
                inventory_dir,
                &args.up,
                Default::default(),
            )),
            crate::ssh::Options::from_user_env(),
        )
        .for_phase("reset");
        let all: Vec<&Node> = cluster.nodes.iter().collect();
        locker
            .lock_nodes(&all, usize::from(args.up.concurrency))
            .await
            .map_err(|e| format!("{e}; nothing was done"))?;
        let result = async {
        let snapshot = match &args.snapshot {
            Some(path) => {
                crate::day2::snapshot::verify(&store, path)?;
                path.clone()
            }
            None => crate::day2::snapshot::before_reset(cluster, crate::day2::snapshot::Access::K3s(&pool), &mut store).await?,
        };
        // Checked again right before the wipe: the file must still be what was recorded, and
        // an intact etcd snapshot (a file the state does not know is checked by that alone).
        crate::day2::snapshot::verify(&store, &snapshot).map_err(|e| format!("{e}; nothing was wiped"))?;
        crate::day2::snapshot::check_etcd_hash(&snapshot).map_err(|e| format!("{e}; nothing was wiped"))?;
        let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        let what = if bare {
            "installs k3s"
        } else {
            "uninstalls k3s (datastore included)"
        };
        confirm(
            g,
            &cluster.name,
            &format!(
                "{what} on {} node(s) of cluster {} ({}) and rebuilds it from {}",
                names.len(),
                cluster.name,
                names.join(", "),
                snapshot.display()
            ),
        )?;

            wipe_and_rebuild(g, args, cluster, root, inventory_dir, store, &pool, bare, &snapshot).await

        }
        .await;
        locker.release_locks().await;
        result
    })
}

/// The destructive half, once identity, snapshot, confirmation and the host
/// locks are in place.
#[allow(clippy::too_many_arguments)]
async fn wipe_and_rebuild(
    g: &Global,
    args: &ResetArgs,
    cluster: &Cluster,
    root: &Path,
    inventory_dir: &Path,
    mut store: StateStore,
    pool: &Pool,
    bare: bool,
    snapshot: &Path,
) -> Result<(), String> {
    if bare {
        eprintln!(
            "reset {}: no node runs k3s (nothing to wipe); rebuilding from the snapshot",
            cluster.name
        );
    } else {
        wipe(cluster, pool).await?;
        eprintln!("reset {}: k3s uninstalled on every node; rebuilding", cluster.name);
    }
    pool.close_all().await;
    store.forget_progress().map_err(|e| e.to_string())?;

    let mut run = super::up::cluster_run(cluster.clone(), root, inventory_dir, &args.up, Default::default());
    run.restore = Some(snapshot.to_path_buf());
    super::up::rebuild(g, &args.up, run, store).await.map_err(|e| {
            format!(
                "cluster {name}: rebuild: {e} (the snapshot stays at {path}; once the cause is fixed, `bootstrap reset --snapshot {path}` again: on nodes left without k3s it only rebuilds)",
                name = cluster.name,
                path = snapshot.display()
            )
        })?;
    eprintln!(
        "reset {}: rebuilt and etcd restored from {}",
        cluster.name,
        snapshot.display()
    );
    Ok(())
}

//! `snapshot`, `upgrade` and `remove-node`: Day-2 operations on one running
//! cluster, over the credentials and kubeconfig `up` left in the state dir.
//! Talos clusters are reached over the machine API, k3s clusters over SSH.
//! `upgrade` and `remove-node` are phases of the engine
//! ([`crate::day2`]): planned from what they observe, printed with
//! `--dry-run`, run holding the cluster-side lock.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::context::{EXIT_INTERRUPTED, confirm, exit, fail, load_inventory, runtime, selected, state_dir};
use super::lock;
use crate::cli::{Day2Args, Global, Output, RemoveNodeArgs, SnapshotArgs, UpgradeArgs};
use crate::day2::execute::{Access, Env};
use crate::day2::k3s::K3sAccess;
use crate::day2::{k3s_upgrade, kubernetes, remove, snapshot, upgrade};
use crate::engine::progress::{Reporter, Style};
use crate::engine::{self, Phase, PhaseError, RunCtx};
use crate::inventory::{Cluster, Distribution};
use crate::phases::k3s_nodes::K3sNodes;
use crate::phases::{ClusterRun, KUBECONFIG, Timeouts};
use crate::state::StateStore;

/// The one cluster a Day-2 command works on, its state dir and its inventory's directory.
fn one_cluster(g: &Global, command: &str) -> Result<(Cluster, PathBuf, PathBuf), String> {
    let loaded = load_inventory(g).ok_or("invalid inventory; nothing was done")?;
    let clusters = selected(g, &loaded.inventory.clusters)?;
    let [cluster] = clusters.as_slice() else {
        return Err(format!(
            "{command} works on one cluster: pick it with --cluster; nothing was done"
        ));
    };
    let path = &loaded.inventory.path;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(((*cluster).clone(), state_dir(g, path), dir))
}

/// `bootstrap snapshot [--out FILE] [--keep N]`.
pub fn snapshot(g: &Global, a: &SnapshotArgs) -> ExitCode {
    exit((|| -> Result<(), String> {
        let (cluster, root, _) = one_cluster(g, "snapshot")?;
        runtime().block_on(async {
            let mut store = StateStore::open(&root, &cluster.name).map_err(|e| e.to_string())?;
            let keep = a.keep.map(|k| k as usize);
            // Talos: the cluster's credentials; k3s: the operator's SSH setup, host keys
            // checked as `up` checks them (never accepting a new one here).
            let (creds, pool);
            let access = match cluster.distribution {
                Distribution::Talos => {
                    creds = crate::day2::talos_credentials(&root, &cluster)?;
                    snapshot::Access::Talos(&creds)
                }
                Distribution::K3s => {
                    pool = crate::ssh::Pool::new(crate::ssh::Options::from_user_env());
                    snapshot::Access::K3s(&pool)
                }
            };
            let (record, pruned) =
                snapshot::take(&cluster, access, &mut store, a.out.as_deref(), keep, "snapshot").await?;
            if g.output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({ "cluster": cluster.name, "snapshot": record, "pruned": pruned })
                );
            } else {
                println!(
                    "{}: etcd snapshot from {}: {} ({} bytes, sha256 {})",
                    cluster.name,
                    record.node,
                    record.path.display(),
                    record.size,
                    record.sha256
                );
                for p in pruned {
                    println!("{}: pruned {} (beyond --keep)", cluster.name, p.path.display());
                }
            }
            Ok(())
        })
    })())
}

/// Refuses `flag VALUE` unless it is what the inventory says (`field`):
/// what is installed is rendered from the inventory, so a later `up` would
/// roll back any other target.
fn same_as_inventory(flag: &str, given: Option<&String>, field: &str, inventory: &str) -> Result<(), String> {
    match given {
        Some(v) if v != inventory => Err(format!(
            "{flag} {v}: the inventory says {field} = \"{inventory}\"; what is installed is rendered from the inventory, so set it there (a later `up` would roll back otherwise); nothing was done"
        )),
        _ => Ok(()),
    }
}

/// `bootstrap upgrade [--talos V | --k3s V] [--batch N|N%]`.
pub fn upgrade(g: &Global, a: &UpgradeArgs) -> ExitCode {
    let prepared = (|| {
        let (cluster, root, dir) = one_cluster(g, "upgrade")?;
        let batch: upgrade::Batch = a.batch.parse()?;
        let other =
            |flag: &str, what: &str| format!("{flag}: cluster {} is a {what} cluster; nothing was done", cluster.name);
        match cluster.distribution {
            Distribution::Talos if a.k3s.is_some() => return Err(other("--k3s", "Talos")),
            Distribution::K3s if a.talos.is_some() => return Err(other("--talos", "k3s")),
            Distribution::K3s if a.kubernetes.is_some() => {
                return Err(other("--kubernetes", "k3s")
                    .replace("; nothing", " (its Kubernetes is the k3s version: use --k3s); nothing"));
            }
            _ => {}
        }
        same_as_inventory(
            "--kubernetes",
            a.kubernetes.as_ref(),
            "versions.kubernetes",
            &cluster.versions.kubernetes,
        )?;
        same_as_inventory("--k3s", a.k3s.as_ref(), "versions.k3s", &cluster.versions.k3s)?;
        let to = match cluster.distribution {
            Distribution::Talos => a.talos.clone().unwrap_or_else(|| cluster.versions.talos.clone()),
            Distribution::K3s => cluster.versions.k3s.clone(),
        };
        let flag = if cluster.distribution == Distribution::Talos {
            "--talos"
        } else {
            "--k3s"
        };
        upgrade::parse_version(&to)
            .ok_or_else(|| format!("{flag} `{to}`: not a version (vMAJOR.MINOR.PATCH); nothing was done"))?;
        Ok((cluster, root, dir, batch, to))
    })();
    let (cluster, root, dir, batch, to) = match prepared {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let image = cluster.talos.installer(&to);
    let drain_secs = a.day2.drain_timeout;
    run_phases(g, &a.day2, cluster, root, dir, |env| match env.access {
        Access::K3s(_) => vec![Box::new(k3s_upgrade::K3sUpgrade {
            env,
            to,
            batch,
            drain_secs,
        }) as Box<dyn Phase>],
        Access::Talos { .. } => vec![
            Box::new(upgrade::TalosUpgrade {
                env: env.clone(),
                to,
                image,
                batch,
                drain_secs,
            }),
            Box::new(kubernetes::KubernetesUpgrade { env, batch }),
        ],
    })
}

/// `bootstrap remove-node NODES`.
pub fn remove_node(g: &Global, a: &RemoveNodeArgs) -> ExitCode {
    let prepared = one_cluster(g, "remove-node").and_then(|(cluster, root, dir)| {
        match a.nodes.iter().find(|n| cluster.node(n).is_none()) {
            Some(unknown) => Err(format!(
                "remove-node: `{unknown}` is not a node of cluster {} in the inventory; nothing was done",
                cluster.name
            )),
            None => Ok((cluster, root, dir)),
        }
    });
    let (cluster, root, dir) = match prepared {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if !a.day2.dry_run {
        let what = format!(
            "drains, takes out of etcd and wipes {} node(s) of cluster {} ({})",
            a.nodes.len(),
            cluster.name,
            a.nodes.join(", ")
        );
        if let Err(e) = confirm(g, &cluster.name, &what) {
            return fail(e);
        }
    }
    run_phases(g, &a.day2, cluster, root, dir, |env| {
        vec![Box::new(remove::RemoveNodes {
            env,
            nodes: a.nodes.clone(),
            drain_secs: a.day2.drain_timeout,
        })]
    })
}

/// Plans the phases `make` builds and prints the plan (`--dry-run`), or runs
/// them holding the cluster-side lock.
fn run_phases(
    g: &Global,
    a: &Day2Args,
    cluster: Cluster,
    root: PathBuf,
    inventory_dir: PathBuf,
    make: impl FnOnce(Arc<Env>) -> Vec<Box<dyn Phase>>,
) -> ExitCode {
    let name = cluster.name.clone();
    let style = Style::detect(g.output == Output::Json, g.quiet);
    let rt = runtime();
    let result = rt.block_on(async {
        let store = if a.dry_run {
            StateStore::read_only(&root, &name)?
        } else {
            StateStore::open(&root, &name)?
        };
        let failed = |message: String| PhaseError::Failed {
            phase: "day2".into(),
            message,
        };
        let kube = crate::day2::kube_client(&store, &name).await.map_err(failed)?;
        let kubeconfig = store.artifact(KUBECONFIG).map(|p| p.to_path_buf());
        let node_timeout = Duration::from_secs(a.timeout);
        let access = match cluster.distribution {
            Distribution::Talos => {
                let (bundle, creds) = crate::day2::talos_material(&root, &cluster).map_err(failed)?;
                Access::Talos { bundle, creds }
            }
            Distribution::K3s => {
                let run = ClusterRun {
                    cluster: cluster.clone(),
                    inventory_dir,
                    state_root: root.clone(),
                    artifacts: crate::artifacts::ArtifactStore {
                        offline: None,
                        cache: root.join("artifacts"),
                    },
                    limit: Default::default(),
                    merge_kubeconfig: false,
                    timeouts: Timeouts {
                        node: node_timeout,
                        api: node_timeout,
                        ..Timeouts::default()
                    },
                    accept_new: false,
                    require_identity: false,
                    restore: None,
                    force_unlock: a.force_unlock,
                };
                // Host keys checked as `up` checks them, never accepting a new one here.
                let installer =
                    K3sNodes::with_ssh(Arc::new(run), crate::ssh::Options::from_user_env()).for_phase(upgrade::PHASE);
                Access::K3s(K3sAccess::load(installer, &root, &store, &cluster).map_err(failed)?)
            }
        };
        let env = Arc::new(Env {
            cluster,
            kube,
            node_timeout,
            access,
        });
        let phases = make(env.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        tokio::spawn(super::up::watch_interrupts(cancel.clone()));
        let ctx = RunCtx {
            reporter: Arc::new(Reporter::new(if a.dry_run { Style::Silent } else { style })),
            state: engine::SharedState::new(store),
            concurrency: usize::from(a.concurrency),
            cancel: cancel.clone(),
        };
        if a.dry_run {
            let actions = engine::plan_all(&phases, &ctx).await?;
            super::up::print_plan(&name, &actions, style == Style::Json);
            return Ok(());
        }
        let held = tokio::sync::Mutex::new(None);
        let take = |_phase: &'static str| {
            let (held, kubeconfig, cancel, name, env) = (&held, &kubeconfig, cancel.clone(), &name, &env);
            async move {
                let mut held = held.lock().await;
                if held.is_none() {
                    let k = kubeconfig.as_deref().expect("a kube client was built from it");
                    *held = lock::take(k, name, a.force_unlock, true, cancel).await?;
                    // k3s: every node's lock file too, before anything changes over SSH.
                    if let Access::K3s(k3s) = &env.access {
                        let nodes: Vec<&crate::inventory::Node> = env.cluster.nodes.iter().collect();
                        k3s.installer.lock_nodes(&nodes, usize::from(a.concurrency)).await?;
                    }
                }
                Ok(())
            }
        };
        let result = engine::run_with(&phases, &ctx, take).await;
        if let Some(h) = held.into_inner() {
            h.release().await;
        }
        if let Access::K3s(k3s) = &env.access {
            k3s.installer.release_locks().await;
        }
        ctx.reporter.finish(result.is_ok());
        if result.is_ok() && style != Style::Json && style != Style::Silent {
            eprintln!("{}", ctx.reporter.summary());
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(PhaseError::Interrupted) => {
            eprintln!(
                "cluster {name}: interrupted after the nodes in flight finished; state recorded; run the same command again to resume"
            );
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => fail(format!("cluster {name}: {e}")),
    }
}

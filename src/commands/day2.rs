//! `snapshot`, `upgrade` and `remove-node`: Day-2 operations on one running
//! cluster, over the credentials and kubeconfig `up` left in the state dir.
//! `snapshot` works on Talos (machine API) and k3s (SSH); `upgrade` and
//! `remove-node` on Talos only so far. `upgrade` and `remove-node` are phases of the engine
//! ([`crate::day2`]): planned from what they observe, printed with
//! `--dry-run`, run holding the cluster-side lock.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::context::{EXIT_INTERRUPTED, confirm, exit, fail, load_inventory, runtime, selected, state_dir};
use super::lock;
use crate::cli::{Day2Args, Global, Output, RemoveNodeArgs, SnapshotArgs, UpgradeArgs};
use crate::day2::execute::Env;
use crate::day2::{kubernetes, remove, snapshot, upgrade};
use crate::engine::progress::{Reporter, Style};
use crate::engine::{self, Phase, PhaseError, RunCtx};
use crate::inventory::{Cluster, Distribution};
use crate::phases::KUBECONFIG;
use crate::state::StateStore;

/// The one cluster a Day-2 command works on, and its state dir; a k3s
/// cluster only when the command supports k3s (`k3s_too`).
fn one_cluster(g: &Global, command: &str, k3s_too: bool) -> Result<(Cluster, std::path::PathBuf), String> {
    let loaded = load_inventory(g).ok_or("invalid inventory; nothing was done")?;
    let clusters = selected(g, &loaded.inventory.clusters)?;
    let [cluster] = clusters.as_slice() else {
        return Err(format!(
            "{command} works on one cluster: pick it with --cluster; nothing was done"
        ));
    };
    if cluster.distribution != Distribution::Talos && !k3s_too {
        return Err(format!(
            "cluster {}: {command} is built for Talos clusters only so far (k3s over SSH is not implemented); nothing was done",
            cluster.name
        ));
    }
    Ok(((*cluster).clone(), state_dir(g, &loaded.inventory.path)))
}

/// `bootstrap snapshot [--out FILE] [--keep N]`.
pub fn snapshot(g: &Global, a: &SnapshotArgs) -> ExitCode {
    exit((|| -> Result<(), String> {
        let (cluster, root) = one_cluster(g, "snapshot", true)?;
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

/// `bootstrap upgrade [--talos V] [--batch N|N%]`.
pub fn upgrade(g: &Global, a: &UpgradeArgs) -> ExitCode {
    let prepared = (|| {
        let (cluster, root) = one_cluster(g, "upgrade", false)?;
        if a.k3s.is_some() {
            return Err(
                "--k3s: upgrading k3s is not implemented yet (Talos OS and Kubernetes on Talos are); nothing was done"
                    .into(),
            );
        }
        if let Some(k) = a.kubernetes.as_ref().filter(|k| **k != cluster.versions.kubernetes) {
            return Err(format!(
                "--kubernetes {k}: the inventory says versions.kubernetes = \"{}\"; machine configs are rendered from the inventory, so set it there (a later `up` would roll back otherwise); nothing was done",
                cluster.versions.kubernetes
            ));
        }
        let batch: upgrade::Batch = a.batch.parse()?;
        let to = a.talos.clone().unwrap_or_else(|| cluster.versions.talos.clone());
        upgrade::parse_version(&to)
            .ok_or_else(|| format!("--talos `{to}`: not a version (vMAJOR.MINOR.PATCH); nothing was done"))?;
        let image = cluster.talos.installer(&to);
        Ok((cluster, root, batch, to, image))
    })();
    let (cluster, root, batch, to, image) = match prepared {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    run_phases(g, &a.day2, cluster, root, |env| {
        vec![
            Box::new(upgrade::TalosUpgrade {
                env: env.clone(),
                to: to.clone(),
                image: image.clone(),
                batch,
                drain_secs: a.day2.drain_timeout,
            }),
            Box::new(kubernetes::KubernetesUpgrade { env, batch }),
        ]
    })
}

/// `bootstrap remove-node NODES`.
pub fn remove_node(g: &Global, a: &RemoveNodeArgs) -> ExitCode {
    let prepared = one_cluster(g, "remove-node", false).and_then(|(cluster, root)| {
        match a.nodes.iter().find(|n| cluster.node(n).is_none()) {
            Some(unknown) => Err(format!(
                "remove-node: `{unknown}` is not a node of cluster {} in the inventory; nothing was done",
                cluster.name
            )),
            None => Ok((cluster, root)),
        }
    });
    let (cluster, root) = match prepared {
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
    run_phases(g, &a.day2, cluster, root, |env| {
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
    root: std::path::PathBuf,
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
        let (bundle, creds) = crate::day2::talos_material(&root, &cluster).map_err(failed)?;
        let kube = crate::day2::kube_client(&store, &name).await.map_err(failed)?;
        let kubeconfig = store.artifact(KUBECONFIG).map(|p| p.to_path_buf());
        let env = Arc::new(Env {
            cluster,
            bundle,
            creds,
            kube,
            node_timeout: Duration::from_secs(a.timeout),
        });
        let phases = make(env);
        let cancel = Arc::new(AtomicBool::new(false));
        tokio::spawn(super::up::watch_interrupts(cancel.clone()));
        let ctx = RunCtx {
            reporter: Arc::new(Reporter::new(if a.dry_run { Style::Silent } else { style })),
            state: tokio::sync::Mutex::new(store),
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
            let (held, kubeconfig, cancel, name) = (&held, &kubeconfig, cancel.clone(), &name);
            async move {
                let mut held = held.lock().await;
                if held.is_none() {
                    let k = kubeconfig.as_deref().expect("a kube client was built from it");
                    *held = lock::take(k, name, a.force_unlock, true, cancel).await?;
                }
                Ok(())
            }
        };
        let result = engine::run_with(&phases, &ctx, take).await;
        if let Some(h) = held.into_inner() {
            h.release().await;
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

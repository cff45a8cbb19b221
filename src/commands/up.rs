//! `up`, `plan` and `add-node`: load the inventory, build each cluster's
//! phases, and run (or only plan) them with progress, a per-cluster lock,
//! bounded concurrency and Ctrl-C handling.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::context::{EXIT_FAILURE, EXIT_INTERRUPTED, fail, load_inventory, report, selected, state_dir};
use super::lock;
use crate::artifacts::ArtifactStore;
use crate::cli::{AddNodeArgs, Global, UpArgs};
use crate::engine::progress::{Reporter, Style};
use crate::engine::{self, PhaseError, RunCtx};
use crate::inventory::Cluster;
use crate::phases::{self, ClusterRun, KUBECONFIG, Timeouts};
use crate::state::StateStore;

/// What to do with the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Up,
    Plan,
    AddNode,
}

/// `bootstrap up`.
pub fn up(g: &Global, args: &UpArgs) -> ExitCode {
    execute(g, args, Mode::Up)
}

/// `bootstrap plan`: every phase's actions; changes nothing.
pub fn plan(g: &Global, args: &UpArgs) -> ExitCode {
    execute(g, args, Mode::Plan)
}

/// `bootstrap add-node NODES`: `up` restricted to the new nodes of a running cluster.
pub fn add_node(g: &Global, args: &AddNodeArgs) -> ExitCode {
    let mut up = args.up.clone();
    up.limit = args.nodes.clone();
    execute(g, &up, Mode::AddNode)
}

fn execute(g: &Global, args: &UpArgs, mode: Mode) -> ExitCode {
    let Some(loaded) = load_inventory(g) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let clusters: Vec<Cluster> = match selected(g, &loaded.inventory.clusters) {
        Ok(c) => c.into_iter().cloned().collect(),
        Err(e) => return fail(e),
    };
    let limit: BTreeSet<String> = args.limit.iter().cloned().collect();
    if let Some(unknown) = limit.iter().find(|n| !clusters.iter().any(|c| c.node(n).is_some())) {
        return fail(format!(
            "--limit names node `{unknown}`, which is in no selected cluster; nothing was done"
        ));
    }
    let root = state_dir(g, &loaded.inventory.path);
    let inventory_dir = loaded
        .inventory
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let style = Style::detect(g.output == crate::cli::Output::Json, g.quiet);
    let reporter = Arc::new(Reporter::new(style));
    let cancel = Arc::new(AtomicBool::new(false));
    let rt = super::context::runtime();
    rt.spawn(watch_interrupts(cancel.clone()));
    let mut code = ExitCode::SUCCESS;
    for cluster in clusters {
        let name = cluster.name.clone();
        let cluster_limit: BTreeSet<String> = limit.iter().filter(|n| cluster.node(n).is_some()).cloned().collect();
        if !limit.is_empty() && cluster_limit.is_empty() {
            continue;
        }
        let run = Arc::new(cluster_run(cluster, &root, &inventory_dir, args, cluster_limit));
        let result = rt.block_on(run_cluster(run.clone(), args, mode, reporter.clone(), cancel.clone()));
        match result {
            Ok(()) if mode != Mode::Plan && style != Style::Json && style != Style::Silent => {
                let kubeconfig = run.cluster_dir().join(KUBECONFIG);
                eprintln!(
                    "cluster {name}: handed over to GitOps; watch it with:\n  KUBECONFIG={} {}",
                    kubeconfig.display(),
                    phases::gitops::watch_hint(&run.cluster)
                );
            }
            Ok(()) => {}
            Err(PhaseError::Interrupted) => {
                eprintln!("cluster {name}: interrupted; state recorded; run `bootstrap up` again to resume");
                return ExitCode::from(EXIT_INTERRUPTED);
            }
            Err(e) => {
                report(format!("cluster {name}: {e}"));
                code = ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    if mode != Mode::Plan {
        let summary = reporter.summary();
        if !summary.is_empty() && style != Style::Json && style != Style::Silent {
            eprintln!("{summary}");
        }
    }
    code
}

/// What the phases of one cluster's run read.
pub(crate) fn cluster_run(
    cluster: Cluster,
    root: &std::path::Path,
    inventory_dir: &std::path::Path,
    args: &UpArgs,
    limit: BTreeSet<String>,
) -> ClusterRun {
    ClusterRun {
        artifacts: ArtifactStore {
            offline: args.artifacts.clone(),
            cache: root.join("artifacts"),
        },
        cluster,
        inventory_dir: inventory_dir.to_path_buf(),
        state_root: root.to_path_buf(),
        limit,
        merge_kubeconfig: args.merge_kubeconfig,
        accept_new: args.accept_new,
        require_identity: args.require_identity,
        timeouts: timeouts(args),
        restore: None,
        force_unlock: args.force_unlock,
    }
}

fn timeouts(args: &UpArgs) -> Timeouts {
    let d = Timeouts::default();
    match args.timeout {
        Some(secs) => {
            let t = Duration::from_secs(secs);
            Timeouts {
                node: t,
                api: t,
                workload: t,
                gitops: t,
            }
        }
        None => d,
    }
}

pub(crate) async fn run_cluster(
    run: Arc<ClusterRun>,
    args: &UpArgs,
    mode: Mode,
    reporter: Arc<Reporter>,
    cancel: Arc<AtomicBool>,
) -> Result<(), PhaseError> {
    // `plan` creates nothing, takes no lock and writes nothing.
    let store = match mode {
        Mode::Plan => StateStore::read_only(&run.state_root, &run.cluster.name)?,
        _ => StateStore::open(&run.state_root, &run.cluster.name)?,
    };
    if mode == Mode::AddNode && store.artifact(KUBECONFIG).is_none() {
        return Err(PhaseError::Failed {
            phase: "add-node".into(),
            message:
                "the cluster has not been brought up yet (no kubeconfig in the state dir): run `bootstrap up` first"
                    .into(),
        });
    }
    let ctx = RunCtx {
        reporter,
        state: engine::SharedState::new(store),
        concurrency: usize::from(args.concurrency),
        cancel,
    };
    if mode != Mode::Plan {
        // Secrets first: a reference that cannot be read (a SOPS file without a
        // matching identity, a MAC mismatch) stops `up` before any node is touched.
        let failed = |message| PhaseError::Failed {
            phase: "prerequisites".into(),
            message,
        };
        phases::prerequisites::preflight(&run.cluster).map_err(failed)?;
        // The Git host's key too (read, never pinned here): an unknown or
        // changed key is refused before phase -1, not after it.
        if phases::prerequisites::needs_known_hosts(&run.cluster) {
            phases::git_host::known_hosts(&run.cluster, &run.cluster_dir(), run.accept_new)
                .await
                .map_err(|e| failed(format!("{e}; nothing was changed")))?;
        }
    }
    // Held until the run ends: nodes booting from it fetch their files late.
    let _serving = if args.provision && mode != Mode::Plan {
        let serving = serve_for_provisioning(&run, args).await?;
        provision(&run, &ctx).await?;
        serving
    } else {
        None
    };
    let phases = phases::all(run.clone());
    if mode == Mode::Plan {
        let actions = engine::plan_all(&phases, &ctx).await;
        ctx.reporter.finish(actions.is_ok());
        print_plan(&run.cluster.name, &actions?, ctx.reporter.style() == Style::Json);
        return Ok(());
    }
    let result = run_locked(&run, args, &phases, &ctx).await;
    ctx.reporter.finish(result.is_ok());
    result
}

/// Runs the phases holding the cluster-side lock from the first phase that
/// has something to do once the API answers: before phase -1 when an
/// earlier run's kubeconfig reaches it, else right after phase -1. A run
/// with nothing to do takes no lock (and writes nothing).
async fn run_locked(
    run: &ClusterRun,
    args: &UpArgs,
    phases: &[Box<dyn engine::Phase>],
    ctx: &RunCtx,
) -> Result<(), PhaseError> {
    let name = &run.cluster.name;
    let held = tokio::sync::Mutex::new(None);
    let take = |phase: &'static str| {
        let held = &held;
        async move {
            let mut held = held.lock().await;
            let kubeconfig = ctx.state.lock().await.artifact(KUBECONFIG).map(|p| p.to_path_buf());
            if held.is_some() || kubeconfig.is_none() {
                return Ok(());
            }
            // Phase -1 may run before the API answers (a first run makes it).
            let required = phase != "nodes";
            let k = kubeconfig.expect("checked above");
            *held = lock::take(&k, name, args.force_unlock, required, ctx.cancel.clone()).await?;
            Ok(())
        }
    };
    let result = engine::run_with(phases, ctx, take).await;
    if let Some(h) = held.into_inner() {
        h.release().await;
    }
    result
}

/// `up --provision` on a cluster with `[cluster.provision]`: `bootstrap
/// serve` for the rest of the run. HTTP always (the virtual-media ISO, iPXE
/// scripts, one-shot configs); DHCP and TFTP only when a node's BMC boots it
/// by PXE.
async fn serve_for_provisioning(run: &ClusterRun, args: &UpArgs) -> Result<Option<crate::serve::Serving>, PhaseError> {
    if run.cluster.provision.is_none() {
        return Ok(None);
    }
    let pxe = run.cluster.nodes.iter().any(|n| {
        n.bmc
            .as_ref()
            .is_some_and(|b| b.boot == crate::inventory::BootMethod::Pxe)
    });
    let serve_args = crate::cli::ServeArgs {
        artifacts: args.artifacts.clone(),
        http_only: !pxe,
        ..Default::default()
    };
    let log: crate::serve::Log = Arc::new(|line: &str| tracing::info!("{line}"));
    let serving = async {
        let prepared = crate::serve::prepare(&run.cluster, &run.state_root, &serve_args, log.clone()).await?;
        crate::serve::bind(prepared, log).await
    };
    serving.await.map(Some).map_err(|e| PhaseError::Failed {
        phase: "provision".into(),
        message: format!("serve: {e:#}; no node was powered or booted"),
    })
}

/// `up --provision`: boots nodes that have a BMC through it before phase -1.
async fn provision(run: &ClusterRun, ctx: &RunCtx) -> Result<(), PhaseError> {
    let opts = crate::provision::Options {
        concurrency: ctx.concurrency,
        ..Default::default()
    };
    let failures: Vec<(String, String)> = crate::provision::provision_missing(&run.cluster, &opts)
        .await
        .into_iter()
        .filter_map(|(node, r)| r.err().map(|e| (node, e.to_string())))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(PhaseError::Targets {
            phase: "provision".into(),
            failures,
        })
    }
}

pub(crate) fn print_plan(cluster: &str, actions: &[engine::Action], json: bool) {
    if json {
        for a in actions {
            println!("{}", serde_json::json!({ "cluster": cluster, "action": a }));
        }
        return;
    }
    if actions.is_empty() {
        println!("{cluster}: nothing to do: the cluster matches the inventory");
        return;
    }
    println!("{cluster}: {} action(s)", actions.len());
    let mut phase = "";
    for a in actions {
        if a.phase != phase {
            phase = &a.phase;
            println!("  {phase}:");
        }
        println!("    {}: {}", a.target, a.step);
    }
}

/// The rebuild after a wipe: `up`'s phases over `run` (its `restore`
/// snapshot bootstraps etcd), with progress and Ctrl-C handling.
pub(crate) async fn rebuild(g: &Global, args: &UpArgs, run: ClusterRun, store: StateStore) -> Result<(), PhaseError> {
    let style = Style::detect(g.output == crate::cli::Output::Json, g.quiet);
    let cancel = Arc::new(AtomicBool::new(false));
    tokio::spawn(super::up::watch_interrupts(cancel.clone()));
    let ctx = RunCtx {
        reporter: Arc::new(Reporter::new(style)),
        state: engine::SharedState::new(store),
        concurrency: usize::from(args.concurrency),
        cancel,
    };
    let rebuilt = engine::run(&crate::phases::all(Arc::new(run)), &ctx).await;
    ctx.reporter.finish(rebuilt.is_ok());
    rebuilt
}

/// First Ctrl-C: start nothing new, let in-flight steps finish. Second: exit now.
pub(crate) async fn watch_interrupts(cancel: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    cancel.store(true, Ordering::SeqCst);
    eprintln!("interrupt: finishing in-flight steps and recording state (Ctrl-C again to stop at once)");
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("interrupt: stopping now; the next `up` resumes from the recorded state");
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

//! Phase -1 for Talos: every node reached directly on its own address (never
//! the VIP), classified by what it answers (maintenance mode, one of ours,
//! another cluster's, unreachable), configured, then etcd bootstrapped once on
//! the first control plane, membership and the Kubernetes API waited for, and
//! kubeconfig + talosconfig stored in the state dir.
//!
//! A node in maintenance mode is first asked who it is and which disks it
//! has (`talos_identity`): a machine the inventory does not describe, or an
//! install disk selector that does not pick exactly one of its disks, is
//! refused before its config (on a control plane: the cluster CA keys)
//! leaves the workstation, and the certificate seen then is pinned for the apply.
//!
//! Destructive or once-only steps are guarded by observed state: etcd is
//! bootstrapped only when no control plane reports it running, and a node
//! that serves another cluster's certificate is refused, whatever the state
//! file says.

mod plan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{ClusterRun, KUBECONFIG, TALOSCONFIG, talos_identity};
use crate::engine::slots::{self, Check};
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx, Step};
use crate::inventory::{DiskSelector, Node, Role};
use crate::render::{SecretsBundle, talos as render_talos};
use crate::state::StateStore;
use crate::talos::proto::machine::apply_configuration_request::Mode;
use crate::talos::{CallPolicy, Expect, Seen, TalosClient, TalosCredentials, TalosError};

const PHASE: &str = "nodes";

/// The cluster's Talos credentials and rendered configs, from the secrets bundle.
struct Material {
    /// Made once: making one compiles the templates and loads the patches.
    renderer: render_talos::TalosRenderer,
    creds: TalosCredentials,
    talosconfig: String,
}

/// Phase -1 for Talos clusters.
pub struct TalosNodes {
    run: Arc<ClusterRun>,
    /// What `plan` found checking a maintenance node: the certificate (SPKI
    /// SHA-256) it presented and what the check resolved. The apply sends
    /// the config through a connection that must present the same one.
    checked: std::sync::Mutex<std::collections::HashMap<String, (String, talos_identity::Checked)>>,
}

impl TalosNodes {
    /// The phase for `run`.
    pub fn new(run: Arc<ClusterRun>) -> Self {
        Self {
            run,
            checked: Default::default(),
        }
    }

    /// Plan-time check of a maintenance node, over the connection that found
    /// it in maintenance mode when there is one: the install disk it resolved
    /// (`None`: not read, the apply reads it), or the refusal.
    async fn precheck(&self, node: &Node, kept: Option<(TalosClient, String)>) -> Result<Option<String>, String> {
        let policy = CallPolicy::within(Duration::from_secs(10));
        let read = match kept {
            Some((client, fingerprint)) => Ok((client.with_policy(policy), fingerprint)),
            None => TalosClient::maintenance_with(&node.name, addr(node), None, policy).await,
        };
        let Ok((client, fingerprint)) = read else {
            return Ok(None);
        };
        match talos_identity::check(node, &client, self.run.require_identity).await {
            Ok(checked) => {
                let install_disk = checked.disks.install.clone();
                self.checked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node.name.clone(), (fingerprint, checked));
                Ok(Some(install_disk))
            }
            Err(talos_identity::CheckError::Refused(why)) => Err(why),
            Err(talos_identity::CheckError::Read(_)) => Ok(None),
        }
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    /// Loads the secrets bundle (generating it on `up`, never on `plan`).
    fn material(&self, generate: bool) -> Result<Option<Material>, PhaseError> {
        let (root, cluster) = (&self.run.state_root, &self.run.cluster);
        let bundle = if generate {
            Some(SecretsBundle::load_or_generate(root, cluster).map_err(|e| self.failed(format!("{e:#}")))?)
        } else {
            SecretsBundle::load(root, cluster).map_err(|e| self.failed(format!("{e:#}")))?
        };
        let Some(bundle) = bundle else { return Ok(None) };
        let bundle = bundle.talos().map_err(|e| self.failed(e))?;
        let renderer = render_talos::TalosRenderer::new(cluster, bundle).map_err(|e| self.failed(format!("{e:#}")))?;
        let talosconfig = renderer.talosconfig().map_err(|e| self.failed(format!("{e:#}")))?;
        let creds = TalosCredentials::from_talosconfig(&talosconfig, None).map_err(|e| self.failed(e))?;
        Ok(Some(Material {
            renderer,
            creds,
            talosconfig,
        }))
    }

    fn first_control_plane(&self) -> Result<&Node, PhaseError> {
        self.run
            .cluster
            .control_planes()
            .next()
            .ok_or_else(|| self.failed("no control-plane node in the inventory"))
    }

    /// Probes every node of the run, `--concurrency` at a time; a node in
    /// maintenance mode is checked right away over the connection that found
    /// it (its identity and disks: the install disk, or the refusal).
    async fn probe_all(&self, ctx: &RunCtx, creds: Option<&TalosCredentials>) -> Vec<plan::NodeSeen> {
        use futures::StreamExt;
        let nodes: Vec<(Node, Expect)> = {
            let state = ctx.state.lock().await;
            self.run.nodes().map(|n| (n.clone(), expect(&state, n))).collect()
        };
        futures::stream::iter(nodes)
            .map(|(n, expect)| async move {
                ctx.step(PHASE, &n.name, "probing");
                let cp = n.role == Role::Controlplane;
                let (seen, kept) = crate::talos::probe_keeping(&n.name, addr(&n), cp, creds, expect).await;
                let check = match seen {
                    Seen::Maintenance => Some(self.precheck(&n, kept).await),
                    _ => None,
                };
                plan::NodeSeen {
                    name: n.name,
                    role: n.role,
                    seen,
                    check,
                    recorded: None,
                    desired: None,
                }
            })
            .buffered(ctx.concurrency.max(1))
            .collect()
            .await
    }

    /// What the plan decides from: every node probed (maintenance nodes
    /// checked), the config each of ours last accepted against the one
    /// rendered now, etcd on control planes outside the run, the state dir's
    /// credentials. Reads only.
    async fn observe(&self, ctx: &RunCtx, m: Option<&Material>) -> Result<plan::Observation, PhaseError> {
        let mut nodes = self.probe_all(ctx, m.map(|m| &m.creds)).await;
        let (applied, installs, stored) = {
            let state = ctx.state.lock().await;
            let stored = state.artifact(KUBECONFIG).is_some() && state.artifact(TALOSCONFIG).is_some();
            (
                state.state().applied.clone(),
                state.state().install_disks.clone(),
                stored,
            )
        };
        // Rendered with the state lock released.
        for n in nodes.iter_mut().filter(|n| matches!(n.seen, Seen::Ours { .. })) {
            let (Some(m), Some(recorded)) = (m, applied.get(&n.name)) else {
                continue;
            };
            let node = self.run.cluster.node(&n.name).expect("a node of the run");
            let (_, desired) = self
                .render(node, installs.get(&n.name).map(String::as_str), m)
                .map_err(|e| self.failed(format!("{}: {e}", n.name)))?;
            (n.recorded, n.desired) = (Some(recorded.clone()), Some(desired));
        }
        let etcd_seen = nodes.iter().any(|n| n.seen == Seen::Ours { etcd: true });
        let etcd_elsewhere = match m {
            Some(m) if !etcd_seen => self.etcd_running(&m.creds).await,
            _ => false,
        };
        Ok(plan::Observation {
            secrets: m.is_some(),
            nodes,
            etcd_elsewhere,
            first: self.first_control_plane()?.name.clone(),
            stored,
        })
    }

    /// True when a control plane of the cluster (any, not only this run's)
    /// reports etcd running: then etcd must never be bootstrapped again.
    async fn etcd_running(&self, creds: &TalosCredentials) -> bool {
        let checks = self.run.cluster.control_planes().map(|n| async move {
            match probe(n, Some(creds)).await {
                Seen::Ours { etcd } => etcd,
                _ => false,
            }
        });
        futures::future::join_all(checks).await.into_iter().any(|e| e)
    }

    fn client(&self, node: &Node, creds: &TalosCredentials, budget: Duration) -> Result<TalosClient, TalosError> {
        TalosClient::configured_with(&node.name, addr(node), creds, CallPolicy::within(budget))
    }

    /// Brings one node from whatever it answers to configured and serving mTLS.
    async fn configure(&self, ctx: &RunCtx, node: &Node, m: &Material) -> Result<(), String> {
        let expect = expect(&*ctx.state.lock().await, node);
        let checked = self
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node.name);
        if let Some((pin, checked)) = checked
            && self.configure_checked(ctx, node, m, pin, checked).await?
        {
            self.wait_mtls(ctx, node, &m.creds).await?;
            return ctx.record(PHASE, &node.name, "ready").await.map_err(|e| e.to_string());
        }
        // Condition: the node answers (a node that is down holds no slot).
        let what = format!("{} unreachable at {}", node.name, addr(node));
        let answered = slots::poll_every(
            &what,
            self.run.timeouts.node,
            Duration::from_millis(500),
            || ctx.cancelled(),
            || async {
                match probe_expecting(node, Some(&m.creds), expect).await {
                    Seen::Unreachable(why) => {
                        ctx.step(PHASE, &node.name, "waiting for the node to answer");
                        Check::Not(why)
                    }
                    seen => Check::Met(seen),
                }
            },
        )
        .await?;
        match answered {
            Seen::Foreign(why) => return Err(plan::refusal(&why)),
            Seen::Maintenance => self.configure_fresh(ctx, node, m).await?,
            Seen::Ours { .. } | Seen::Unreachable(_) => {}
        }
        self.wait_mtls(ctx, node, &m.creds).await?;
        ctx.record(PHASE, &node.name, "ready").await.map_err(|e| e.to_string())
    }

    /// Condition: the node answers over mTLS with the cluster's credentials
    /// (after a reboot: holding no slot while it is down).
    async fn wait_mtls(&self, ctx: &RunCtx, node: &Node, creds: &TalosCredentials) -> Result<(), String> {
        ctx.step(PHASE, &node.name, "waiting for mTLS");
        let once = self.client(node, creds, Duration::ZERO).map_err(|e| e.to_string())?;
        let what = format!("{} answering over mTLS", node.name);
        slots::poll_every(
            &what,
            self.run.timeouts.node,
            Duration::from_millis(250),
            || false, // an in-flight wait finishes after Ctrl-C
            || async {
                match once.version().await {
                    Ok(_) => Check::Met(()),
                    Err(e) if e.is_transient(true) => Check::Not(e.to_string()),
                    Err(e) => Check::Fail(e.to_string()),
                }
            },
        )
        .await
    }

    /// A maintenance connection to `node`; with `pin`, one that must present
    /// that certificate (and checks it again on every reconnect).
    async fn maintenance(&self, node: &Node, pin: Option<String>) -> Result<(TalosClient, String), TalosError> {
        let quick = CallPolicy::within(Duration::from_secs(30));
        TalosClient::maintenance_with(&node.name, addr(node), pin, quick).await
    }

    /// A maintenance connection that must present `pin`: a node presenting
    /// another certificate is refused (the outer error), any other failure
    /// is returned as it is.
    async fn pinned(&self, node: &Node, pin: String) -> Result<Result<TalosClient, TalosError>, String> {
        match self.maintenance(node, Some(pin)).await {
            Ok((client, _)) => Ok(Ok(client)),
            Err(
                e @ TalosError::Tls {
                    server_certificate: true,
                    ..
                },
            ) => Err(changed(&e)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// A node the plan checked: its config, naming the install disk the check
    /// resolved, sent through a connection that must present the certificate
    /// seen then, with no second read. `false` when the node does not answer
    /// that way (then it is probed and checked again); a changed certificate
    /// is refused.
    async fn configure_checked(
        &self,
        ctx: &RunCtx,
        node: &Node,
        m: &Material,
        pin: String,
        checked: talos_identity::Checked,
    ) -> Result<bool, String> {
        let client = match self.pinned(node, pin).await? {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(node = %node.name, "the checked connection failed ({e}); probing again");
                return Ok(false);
            }
        };
        self.send_checked(ctx, &client, node, m, &checked).await?;
        Ok(true)
    }

    /// Records the install disk, then applies the config naming it.
    async fn send_checked(
        &self,
        ctx: &RunCtx,
        client: &TalosClient,
        node: &Node,
        m: &Material,
        checked: &talos_identity::Checked,
    ) -> Result<(), String> {
        let disk = &checked.disks.install;
        if let Some(why) = &checked.trusted {
            tracing::warn!(node = %node.name, "{why}");
        }
        ctx.step(PHASE, &node.name, &format!("applying config (install disk {disk})"));
        // Recorded first: a run killed right after the apply still renders this node's config as sent.
        ctx.state
            .write(|s| s.record_install_disk(&node.name, disk))
            .await
            .map_err(|e| e.to_string())?;
        self.apply_config(ctx, client, node, Some(disk), m).await?;
        ctx.record(PHASE, &node.name, "config applied")
            .await
            .map_err(|e| e.to_string())
    }

    /// A node in maintenance mode the plan did not check: its identity and
    /// disks read and checked, then its config applied through a connection
    /// pinned to the certificate seen during the check.
    async fn configure_fresh(&self, ctx: &RunCtx, node: &Node, m: &Material) -> Result<(), String> {
        ctx.step(PHASE, &node.name, "reading hardware identity and disks");
        let (reader, fingerprint) = self.maintenance(node, None).await.map_err(|e| e.to_string())?;
        let checked = talos_identity::check(node, &reader, self.run.require_identity)
            .await
            .map_err(|e| e.to_string())?;
        let client = self.pinned(node, fingerprint).await?.map_err(|e| e.to_string())?;
        self.send_checked(ctx, &client, node, m, &checked).await
    }

    /// The node's machine config and its sha256; `install` (the disk the
    /// node's selector resolved to) replaces the selector in the config.
    fn render(&self, node: &Node, install: Option<&str>, m: &Material) -> Result<(String, String), String> {
        let mut node = node.clone();
        if let Some(path) = install {
            node.install_disk = Some(DiskSelector {
                path: Some(path.to_owned()),
                ..DiskSelector::default()
            });
        }
        let config = m
            .renderer
            .machine_config(&node)
            .map_err(|e| format!("rendering its machine config: {e:#}"))?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(config.as_bytes()));
        Ok((config, sha256))
    }

    /// Applies the node's rendered config (AUTO) through `client` and records
    /// its sha256; returns how the node applies it (with a reboot or not).
    async fn apply_config(
        &self,
        ctx: &RunCtx,
        client: &TalosClient,
        node: &Node,
        install: Option<&str>,
        m: &Material,
    ) -> Result<Mode, String> {
        let (config, sha256) = self.render(node, install, m)?;
        let outcome = client
            .apply_configuration(config.as_bytes(), Mode::Auto)
            .await
            .map_err(|e| e.to_string())?;
        for w in outcome.warnings {
            tracing::warn!(node = %node.name, "apply-config: {w}");
        }
        ctx.state
            .write(|s| s.record_applied(&node.name, &sha256))
            .await
            .map_err(|e| e.to_string())?;
        Ok(outcome.mode)
    }

    /// Re-applies changed configs to configured nodes: control planes one at a
    /// time, each back and etcd whole again before the next (quorum is never
    /// at risk), then workers in parallel.
    async fn reapply(&self, ctx: &RunCtx, m: &Arc<Material>, nodes: Vec<Node>) -> Result<(), PhaseError> {
        let (cps, workers): (Vec<Node>, Vec<Node>) = nodes.into_iter().partition(|n| n.role == Role::Controlplane);
        let one = |_: String, node: Node| {
            let m = m.clone();
            async move { self.reapply_one(ctx, &node, &m).await }
        };
        for cp in cps {
            if ctx.cancelled() {
                return Err(PhaseError::Interrupted);
            }
            ctx.for_each(PHASE, vec![(cp.name.clone(), cp)], one).await?;
            self.wait_members(ctx, m).await?;
        }
        let workers = workers.into_iter().map(|n| (n.name.clone(), n)).collect();
        ctx.for_each(PHASE, workers, one).await
    }

    async fn reapply_one(&self, ctx: &RunCtx, node: &Node, m: &Material) -> Result<(), String> {
        ctx.step(PHASE, &node.name, "re-applying config");
        let client = self
            .client(node, &m.creds, self.run.timeouts.node)
            .map_err(|e| e.to_string())?;
        let install = ctx.state.lock().await.state().install_disks.get(&node.name).cloned();
        if self.apply_config(ctx, &client, node, install.as_deref(), m).await? == Mode::Reboot {
            // Until it goes down the node still answers as before; only then wait for it.
            ctx.step(PHASE, &node.name, "rebooting");
            let once = self.client(node, &m.creds, Duration::ZERO).map_err(|e| e.to_string())?;
            let what = format!("{} going down for its reboot", node.name);
            // A node that rebooted faster than we looked is fine: the mTLS wait follows.
            let _ = slots::poll_until(
                &what,
                Duration::from_secs(60),
                || false, // an in-flight wait finishes after Ctrl-C
                || async {
                    match once.version().await {
                        Ok(_) => Check::Not("still answering".into()),
                        Err(_) => Check::Met(()),
                    }
                },
            )
            .await;
        }
        self.wait_mtls(ctx, node, &m.creds).await?;
        ctx.record(PHASE, &node.name, "ready").await.map_err(|e| e.to_string())
    }

    /// Bootstraps etcd on the first control plane unless a control plane
    /// already runs it; AlreadyExists from a bootstrap that raced counts as done.
    async fn bootstrap_etcd(&self, ctx: &RunCtx, m: &Material) -> Result<(), PhaseError> {
        let first = self.first_control_plane()?;
        if self.etcd_running(&m.creds).await {
            ctx.step(PHASE, CLUSTER, "etcd already running: not bootstrapping");
            return ctx
                .record(PHASE, CLUSTER, "etcd bootstrapped")
                .await
                .map_err(Into::into);
        }
        if !self.run.selected(first) {
            return Err(self.failed(format!(
                "etcd is not bootstrapped yet and the first control plane {} is outside --limit",
                first.name
            )));
        }
        let client = self
            .client(first, &m.creds, self.run.timeouts.api)
            .map_err(|e| self.failed(e))?;
        if let Some(snapshot) = &self.run.restore {
            ctx.step(PHASE, CLUSTER, &format!("uploading etcd snapshot to {}", first.name));
            client.etcd_recover(snapshot).await.map_err(|e| self.failed(e))?;
        }
        ctx.step(PHASE, CLUSTER, &format!("bootstrapping etcd on {}", first.name));
        match client.bootstrap(self.run.restore.is_some()).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                tracing::info!(node = %first.name, "etcd was already bootstrapped");
            }
            Err(e) => return Err(self.failed(e)),
        }
        ctx.record(PHASE, CLUSTER, "etcd bootstrapped")
            .await
            .map_err(Into::into)
    }

    /// Waits until every control plane of the cluster is an etcd member.
    async fn wait_members(&self, ctx: &RunCtx, m: &Material) -> Result<(), PhaseError> {
        let first = self.first_control_plane()?;
        let want: Vec<&Node> = self
            .run
            .cluster
            .control_planes()
            .filter(|n| self.run.selected(n))
            .collect();
        ctx.step(PHASE, CLUSTER, &format!("waiting for {} etcd members", want.len()));
        let client = self
            .client(first, &m.creds, self.run.timeouts.api)
            .map_err(|e| self.failed(e))?;
        let what = format!("{} control planes in etcd", want.len());
        slots::poll_until(
            &what,
            self.run.timeouts.api,
            || false, // an in-flight wait finishes after Ctrl-C
            || async {
                match client.etcd_members().await {
                    Ok(members) => {
                        let missing = crate::talos::not_members(&members, want.iter().map(|n| (n.name.as_str(), n.ip)));
                        if !missing.is_empty() {
                            return Check::Not(format!("not members yet: {}", missing.join(", ")));
                        }
                        // A member added is not a member started: the plan's condition is
                        // each control plane's etcd service Running, so the wait's is too.
                        let seen = futures::future::join_all(want.iter().map(|n| probe(n, Some(&m.creds)))).await;
                        let stopped: Vec<&str> = want
                            .iter()
                            .zip(seen)
                            .filter(|(_, s)| !matches!(s, Seen::Ours { etcd: true }))
                            .map(|(n, _)| n.name.as_str())
                            .collect();
                        if stopped.is_empty() {
                            Check::Met(())
                        } else {
                            Check::Not(format!("etcd not running yet on {}", stopped.join(", ")))
                        }
                    }
                    Err(e) => Check::Not(e.to_string()),
                }
            },
        )
        .await
        .map_err(|e| self.failed(e))
    }

    /// Fetches the kubeconfig from the first control plane, stores it, and
    /// waits until the API answers and the run's nodes registered.
    async fn fetch_kubeconfig(&self, ctx: &RunCtx, m: &Material) -> Result<(), PhaseError> {
        let first = self.first_control_plane()?;
        ctx.step(PHASE, CLUSTER, "fetching kubeconfig");
        let client = self
            .client(first, &m.creds, self.run.timeouts.api)
            .map_err(|e| self.failed(e))?;
        let kubeconfig = client.kubeconfig().await.map_err(|e| self.failed(e))?;
        let path = ctx
            .state
            .write(|s| s.put_artifact(KUBECONFIG, "kubeconfig", &kubeconfig))
            .await?;
        ctx.step(PHASE, CLUSTER, "waiting for the Kubernetes API");
        let kube = crate::k8s::Client::from_kubeconfig(&path)
            .await
            .map_err(|e| self.failed(e))?;
        slots::poll_until(
            "the Kubernetes API answering",
            self.run.timeouts.api,
            || ctx.cancelled(),
            || async {
                match kube.server_version().await {
                    Ok(_) => Check::Met(()),
                    Err(e) => Check::Not(e.to_string()),
                }
            },
        )
        .await
        .map_err(|e| self.failed(e))?;
        let names: Vec<&str> = self.run.nodes().map(|n| n.name.as_str()).collect();
        ctx.step(PHASE, CLUSTER, "waiting for nodes to register");
        crate::k8s::wait::nodes_registered(&kube, &names, self.run.timeouts.api)
            .await
            .map_err(|e| self.failed(e))?;
        if self.run.merge_kubeconfig {
            let merged = super::merge_kubeconfig::merge_into_home(&kubeconfig).map_err(|e| self.failed(e))?;
            ctx.step(PHASE, CLUSTER, &format!("kubeconfig merged into {}", merged.display()));
        }
        ctx.record(PHASE, CLUSTER, "kubeconfig").await.map_err(Into::into)
    }
}

#[async_trait::async_trait]
impl Phase for TalosNodes {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase -1: Talos nodes")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        let m = self.material(false)?;
        let observed = self.observe(ctx, m.as_ref()).await?;
        plan::decide(&observed).map_err(|failures| PhaseError::Targets {
            phase: PHASE.into(),
            failures,
        })
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        let m = Arc::new(self.material(true)?.ok_or_else(|| self.failed("no secrets bundle"))?);
        ctx.state
            .write(|s| s.put_artifact(TALOSCONFIG, "talosconfig", m.talosconfig.as_bytes()))
            .await?;
        let reapply: Vec<Node> = plan
            .iter()
            .filter(|a| a.step == Step::Reapply)
            .filter_map(|a| self.run.cluster.node(&a.target).cloned())
            .collect();
        let nodes: Vec<(String, Node)> = plan
            .iter()
            .filter(|a| matches!(a.step, Step::ApplyConfig { .. } | Step::AwaitNode { .. }))
            .filter_map(|a| self.run.cluster.node(&a.target).cloned())
            .map(|n| (n.name.clone(), n))
            .collect();
        // etcd is bootstrapped as soon as the first control plane is ready,
        // while the other nodes are still being configured (they join later):
        // the run's critical path does not grow with the number of nodes.
        let first = self.first_control_plane()?.name.clone();
        let first_pending = nodes.iter().any(|(name, _)| *name == first);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let ready_tx = std::sync::Mutex::new(Some(ready_tx));
        let signal_first = |name: &str| {
            if name == first
                && let Some(tx) = ready_tx.lock().expect("signal lock").take()
            {
                let _ = tx.send(());
            }
        };
        let configure_all = async {
            let result = ctx
                .for_each(PHASE, nodes, |_, node| {
                    let m = m.clone();
                    async move {
                        self.configure(ctx, &node, &m).await?;
                        signal_first(&node.name);
                        Ok(())
                    }
                })
                .await;
            // Unblocks the bootstrap below when the first control plane failed or never started.
            ready_tx.lock().expect("signal lock").take();
            result
        };
        let early_bootstrap = async {
            let first_ready = !first_pending || ready_rx.await.is_ok();
            if !first_ready || ctx.cancelled() {
                return None;
            }
            Some(self.bootstrap_etcd(ctx, &m).await)
        };
        let (configured, bootstrapped) = tokio::join!(configure_all, early_bootstrap);
        configured?;
        if ctx.cancelled() {
            return Err(PhaseError::Interrupted);
        }
        match bootstrapped {
            Some(result) => result?,
            None => self.bootstrap_etcd(ctx, &m).await?,
        }
        self.wait_members(ctx, &m).await?;
        self.reapply(ctx, &m, reapply).await?;
        if ctx.cancelled() {
            return Err(PhaseError::Interrupted);
        }
        self.fetch_kubeconfig(ctx, &m).await
    }
}

fn addr(node: &Node) -> SocketAddr {
    SocketAddr::new(node.ip, node.talos.port)
}

/// The refusal when a node's certificate is not the one its identity was checked under.
fn changed(e: &TalosError) -> String {
    format!(
        "refusing: the node's certificate changed between the identity check and the apply ({e}); nothing was sent to it"
    )
}

/// What `node` answers ([`crate::talos::probe`]).
pub async fn probe(node: &Node, creds: Option<&TalosCredentials>) -> Seen {
    probe_expecting(node, creds, Expect::Ours).await
}

async fn probe_expecting(node: &Node, creds: Option<&TalosCredentials>, expect: Expect) -> Seen {
    crate::talos::probe_expecting(&node.name, addr(node), node.role == Role::Controlplane, creds, expect).await
}

/// A node this cluster never applied a config to is expected in maintenance mode.
fn expect(state: &StateStore, node: &Node) -> Expect {
    match state.state().applied.contains_key(&node.name) {
        true => Expect::Ours,
        false => Expect::Maintenance,
    }
}

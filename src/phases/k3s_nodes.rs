//! Phase -1 for k3s: every node reached over SSH; on the nodes that need it a
//! preflight (OS, architecture, tools, free space, clock, install disk), the
//! binary + rendered `config.yaml` + `install.sh` uploaded and the script run.
//! The first server is installed first (`cluster-init`); its kubeconfig is
//! fetched, pointed at the cluster endpoint, stored as the `kubeconfig`
//! artifact and `/readyz` waited for through it; its node token is checked to
//! carry this cluster's token; then the other servers join one at a time
//! (each registered before the next: quorum-safe) and the agents in parallel.
//!
//! Plan compares what each node's install script recorded (version, binary,
//! config and script hashes) and the running service with what would be
//! rendered now: a converged cluster plans nothing, and the script itself
//! changes nothing when run again with the same inputs.
//!
//! Guarded by what the nodes report, not by the state file: a server that
//! already runs k3s with another cluster token is never reconfigured, and the
//! first server's node token must carry this cluster's token before anything
//! joins it.

mod kubeconfig;
mod material;
mod plan;
mod preflight;
pub mod remote;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ClusterRun, KUBECONFIG};
use crate::engine::{Action, CLUSTER, Phase, PhaseError, RunCtx};
use crate::inventory::{Node, Role};
use crate::ssh::host_lock::{self, HostLocks};
use crate::ssh::{self, Pool, Target};
use material::Material;
use plan::Seen;

pub use kubeconfig::{ca_sha256, endpoint_url, point_at};

const PHASE: &str = "nodes";

/// How long plan waits for one node's SSH answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Phase -1 for k3s clusters.
pub struct K3sNodes {
    run: Arc<ClusterRun>,
    pool: Pool,
    /// The phase its installs report under (Day 2 borrows them); they are
    /// recorded under phase -1's own name, as `up` records them.
    phase: &'static str,
    /// What is installed, rendered once per run (Day 2; apply loads its own).
    material: tokio::sync::OnceCell<Material>,
    /// The lock files this run holds on the nodes ([`crate::ssh::host_lock`]).
    locks: Arc<HostLocks>,
}

/// What a node has installed, as Day 2 needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The k3s version the install script recorded (empty: not installed by us).
    pub version: String,
    /// Installed exactly as rendered now.
    pub as_rendered: bool,
    /// Its binary is the one the inventory pins now.
    pub binary_current: bool,
    /// The service runs.
    pub active: bool,
}

impl K3sNodes {
    /// The phase for `run`, with the operator's SSH setup (`~/.ssh`, agent).
    pub fn new(run: Arc<ClusterRun>) -> Self {
        let opts = ssh::Options {
            accept_new: run.accept_new,
            ..ssh::Options::from_user_env()
        };
        Self::with_ssh(run, opts)
    }

    /// The phase for `run` with explicit SSH options (known_hosts, keys).
    pub fn with_ssh(run: Arc<ClusterRun>, opts: ssh::Options) -> Self {
        Self {
            run,
            pool: Pool::new(opts),
            phase: PHASE,
            material: tokio::sync::OnceCell::new(),
            locks: HostLocks::new(),
        }
    }

    /// Takes this run's lock file on each of `nodes` (`concurrency` at a
    /// time) before anything changes on them: a node another live run
    /// holds is refused by name, unless `--force-unlock` and the typed
    /// cluster name take it over.
    pub async fn lock_nodes(&self, nodes: &[&Node], concurrency: usize) -> Result<(), PhaseError> {
        use futures::StreamExt;
        let cluster = &self.run.cluster.name;
        let force = self.run.force_unlock;
        let deadline = Instant::now() + self.run.timeouts.node;
        let each: Vec<_> = nodes
            .iter()
            .map(|n| async move {
                let take_over = |held: &host_lock::Held| {
                    force
                        && crate::holder::confirm_takeover(
                            cluster,
                            &format!("node {}", n.name),
                            &held.holder,
                            &format!("its lock refreshed {} s ago", held.age_secs),
                        )
                };
                let s = remote::connect(&self.pool, &Target::from_node(n), deadline, &|| false).await;
                let r = match s {
                    Ok(s) => self.locks.take(&s, Self::sudo(n), &take_over).await,
                    Err(e) => Err(e),
                };
                r.map_err(|e| (n.name.clone(), format!("{e}; nothing was changed on it")))
            })
            .collect();
        let failures: Vec<(String, String)> = futures::stream::iter(each)
            .buffer_unordered(concurrency.max(1))
            .filter_map(|r| async move { r.err() })
            .collect()
            .await;
        if failures.is_empty() {
            return Ok(());
        }
        self.release_locks().await;
        Err(PhaseError::Targets {
            phase: self.phase.into(),
            failures,
        })
    }

    /// Removes every lock file this run holds.
    pub async fn release_locks(&self) {
        self.locks.release().await;
    }

    /// The same installer, reporting under Day-2 phase `phase`.
    pub fn for_phase(self, phase: &'static str) -> Self {
        Self { phase, ..self }
    }

    /// The SSH connections it uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn material(&self) -> Result<&Material, String> {
        self.material
            .get_or_try_init(|| async {
                material::load(&self.run, true)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no cluster secrets in the state dir".to_owned())
            })
            .await
    }

    /// What `node` has installed (Day 2: one quick SSH attempt).
    pub async fn installed(&self, node: &Node) -> Result<Installed, String> {
        let m = self.material().await?;
        let f = m.files.get(&node.name).ok_or("not a node of this run")?;
        let s = tokio::time::timeout(PROBE_TIMEOUT, self.pool.session(&Target::from_node(node)))
            .await
            .map_err(|_| format!("no SSH answer within {PROBE_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let o = remote::observe(&s, f.unit, Self::sudo(node)).await?;
        let version = o
            .state
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("version="))
            .unwrap_or_default()
            .to_owned();
        Ok(Installed {
            version,
            as_rendered: matches!(Seen::of(&o, f, m), Seen::Converged | Seen::Stopped),
            binary_current: o.binary_sha256 == m.binary_sha256,
            active: o.active,
        })
    }

    /// Installs `node` as rendered now (the inventory's version and pinned
    /// binary) and, for a server, waits for its own `/readyz` (Day 2: upgrade).
    pub async fn reinstall(&self, ctx: &RunCtx, node: &Node, kubeconfig: &str) -> Result<(), String> {
        let m = self.material().await?;
        self.install(ctx, node, m).await?;
        if node.role == Role::Controlplane {
            self.server_ready(ctx, node, kubeconfig)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn failed(&self, message: impl std::fmt::Display) -> PhaseError {
        self.run.failed(PHASE, message)
    }

    fn node_failed(&self, node: &Node, message: String) -> PhaseError {
        PhaseError::Targets {
            phase: PHASE.into(),
            failures: vec![(node.name.clone(), message)],
        }
    }

    fn first_server(&self) -> Result<&Node, PhaseError> {
        self.run
            .cluster
            .control_planes()
            .next()
            .ok_or_else(|| self.failed("no controlplane node (k3s server) in the inventory"))
    }

    fn sudo(node: &Node) -> bool {
        node.ssh.as_ref().is_some_and(|s| s.sudo)
    }

    /// Observes one node (read-only, one quick attempt).
    async fn probe(&self, node: &Node, m: Option<&Material>) -> Seen {
        let target = Target::from_node(node);
        let session = match tokio::time::timeout(PROBE_TIMEOUT, self.pool.session(&target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Seen::Unreachable(e.to_string()),
            Err(_) => return Seen::Unreachable(format!("no SSH answer within {PROBE_TIMEOUT:?}")),
        };
        let Some(f) = m.and_then(|m| m.files.get(&node.name)) else {
            return Seen::Differs("no cluster secrets yet".into());
        };
        let o = match remote::observe(&session, f.unit, Self::sudo(node)).await {
            Ok(o) => o,
            Err(e) => return Seen::Unreachable(e),
        };
        Seen::of(&o, f, m.expect("files come from the material"))
    }

    /// Brings one node to "installed as rendered, running".
    async fn install(&self, ctx: &RunCtx, node: &Node, m: &Material) -> Result<(), String> {
        let f = m
            .files
            .get(&node.name)
            .ok_or_else(|| "not part of this run's rendered files".to_owned())?;
        let sudo = Self::sudo(node);
        let cancelled = || ctx.cancelled();
        ctx.step(self.phase, &node.name, "connecting over SSH");
        let deadline = Instant::now() + self.run.timeouts.node;
        let s = remote::connect(&self.pool, &Target::from_node(node), deadline, &cancelled).await?;
        // Seen again just before acting: the node may have changed since the plan.
        let o = remote::observe(&s, f.unit, sudo).await?;
        match Seen::of(&o, f, m) {
            Seen::Differs(_) | Seen::Unreachable(_) => {}
            seen => {
                if seen == Seen::Stopped {
                    ctx.step(self.phase, &node.name, &format!("starting {}", f.unit));
                    remote::start(&s, f.unit, sudo).await?;
                }
                return ctx
                    .record(PHASE, &node.name, "installed")
                    .await
                    .map_err(|e| e.to_string());
            }
        }
        if node.role == Role::Controlplane && !o.state.is_empty() {
            // A server that already runs k3s keeps its datastore: never
            // reconfigure it with another cluster's token (lost state dir,
            // wrong address in the inventory), whatever our state file says.
            if let Some(theirs) = remote::read_if_present(&s, remote::NODE_TOKEN, sudo).await?
                && !carries_token(&String::from_utf8_lossy(&theirs), &m.token)
            {
                return Err(format!(
                    "refusing to reinstall: k3s there runs with another cluster token ({} differs); restore this cluster's secrets into the state dir, or uninstall k3s on the node first",
                    remote::NODE_TOKEN
                ));
            }
        }
        ctx.step(self.phase, &node.name, "preflight");
        let (facts, local_now, slack) = remote::preflight_facts(&s, sudo).await?;
        let machine = match &m.binary {
            Some(p) => read_head(p).as_deref().and_then(preflight::elf_machine),
            None => None,
        };
        preflight::check(node, &preflight::parse(&facts), machine, local_now, slack)?;
        ctx.record(PHASE, &node.name, "preflight ok")
            .await
            .map_err(|e| e.to_string())?;
        if ctx.cancelled() {
            return Err("interrupted before uploading".into());
        }
        let upload_binary = o.binary_sha256 != m.binary_sha256;
        ctx.step(
            self.phase,
            &node.name,
            if upload_binary {
                "uploading k3s, config and install script"
            } else {
                "uploading config and install script"
            },
        );
        let binary = if upload_binary {
            Some(m.binary.as_deref().ok_or("no local k3s binary to upload")?)
        } else {
            None
        };
        remote::stage(
            &s,
            &remote::Staged {
                config: &f.config,
                script: &f.script,
                binary_sha256: &m.binary_sha256,
                binary,
            },
            sudo,
        )
        .await?;
        ctx.record(PHASE, &node.name, "uploaded")
            .await
            .map_err(|e| e.to_string())?;
        ctx.step(self.phase, &node.name, "running install.sh");
        let said = remote::install(&s, sudo, self.run.timeouts.node).await?;
        tracing::info!(node = %node.name, "{said}");
        ctx.record(PHASE, &node.name, "installed")
            .await
            .map_err(|e| e.to_string())
    }

    /// Restores the freshly installed first server's etcd from `snapshot`
    /// (`reset`), before anything joins it.
    async fn restore(&self, ctx: &RunCtx, node: &Node, m: &Material, snapshot: &std::path::Path) -> Result<(), String> {
        let unit = m.files.get(&node.name).map_or("k3s", |f| f.unit);
        let cancelled = || ctx.cancelled();
        let deadline = Instant::now() + self.run.timeouts.node;
        let s = remote::connect(&self.pool, &Target::from_node(node), deadline, &cancelled).await?;
        ctx.step(
            PHASE,
            &node.name,
            &format!("restoring etcd from {} (k3s --cluster-reset)", snapshot.display()),
        );
        remote::restore(&s, unit, snapshot, Self::sudo(node), self.run.timeouts.node).await?;
        ctx.record(PHASE, &node.name, "etcd restored")
            .await
            .map_err(|e| e.to_string())
    }

    /// From the first server: the kubeconfig (stored, pointed at the
    /// endpoint), `/readyz`, and a check that it runs with this cluster's token.
    /// Returns the client and the kubeconfig's text.
    async fn connect_api(
        &self,
        ctx: &RunCtx,
        first: &Node,
        m: &Material,
    ) -> Result<(crate::k8s::Client, String), PhaseError> {
        let sudo = Self::sudo(first);
        let cancelled = || ctx.cancelled();
        let deadline = Instant::now() + self.run.timeouts.api;
        let s = remote::connect(&self.pool, &Target::from_node(first), deadline, &cancelled)
            .await
            .map_err(|e| self.node_failed(first, e))?;
        ctx.step(PHASE, CLUSTER, &format!("fetching the kubeconfig from {}", first.name));
        let raw = remote::read_when_present(&s, remote::K3S_YAML, sudo, deadline, &cancelled)
            .await
            .map_err(|e| self.node_failed(first, e))?;
        let server = kubeconfig::endpoint_url(&self.run.cluster.endpoint);
        let text =
            kubeconfig::point_at(&raw, &self.run.cluster.name, &server).map_err(|e| self.node_failed(first, e))?;
        let path = ctx
            .state
            .write(|s| s.put_artifact(KUBECONFIG, "kubeconfig", text.as_bytes()))
            .await?;
        ctx.step(PHASE, CLUSTER, &format!("waiting for {server}/readyz"));
        let kube = crate::k8s::Client::from_kubeconfig(&path)
            .await
            .map_err(|e| self.failed(e))?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        kubeconfig::wait_readyz(&kube, left, cancelled)
            .await
            .map_err(|e| self.failed(e))?;
        ctx.step(PHASE, CLUSTER, &format!("reading the join token on {}", first.name));
        let token = remote::read_when_present(&s, remote::NODE_TOKEN, sudo, deadline, &cancelled)
            .await
            .map_err(|e| self.node_failed(first, e))?;
        if !carries_token(&String::from_utf8_lossy(&token), &m.token) {
            return Err(self.node_failed(
                first,
                format!(
                    "its node token ({}) does not carry this cluster's token: k3s there was set up with another token (another cluster, or by hand); refusing to join nodes to it",
                    remote::NODE_TOKEN
                ),
            ));
        }
        if self.run.merge_kubeconfig {
            let merged = super::merge_kubeconfig::merge_into_home(text.as_bytes()).map_err(|e| self.failed(e))?;
            ctx.step(PHASE, CLUSTER, &format!("kubeconfig merged into {}", merged.display()));
        }
        Ok((kube, text))
    }

    /// Waits for `/readyz` on one server itself (not the endpoint), with the
    /// cluster's kubeconfig: k3s servers share the cluster CA.
    async fn server_ready(&self, ctx: &RunCtx, node: &Node, kubeconfig: &str) -> Result<(), PhaseError> {
        let url = kubeconfig::endpoint_url(&node.ip.to_string());
        let own = kubeconfig::point_at(kubeconfig.as_bytes(), &self.run.cluster.name, &url)
            .map_err(|e| self.node_failed(node, e))?;
        let client = crate::k8s::Client::from_kubeconfig_yaml(&own, &format!("the kubeconfig, for {}", node.name))
            .await
            .map_err(|e| self.node_failed(node, e.to_string()))?;
        ctx.step(self.phase, &node.name, &format!("waiting for {url}/readyz"));
        kubeconfig::wait_readyz(&client, self.run.timeouts.api, || ctx.cancelled())
            .await
            .map_err(|e| self.node_failed(node, e))
    }
}

/// The CA hash of a node token `K10<ca hash>::<user>:<password>`, if it has one.
pub fn token_ca_hash(node_token: &str) -> Option<&str> {
    let (head, _) = node_token.trim().split_once("::")?;
    head.strip_prefix("K10")
}

/// The node token is `K10<ca hash>::<user>:<password>` (or the bare token);
/// true when its password is `token`. Compared without early exit.
pub fn carries_token(node_token: &str, token: &str) -> bool {
    let node_token = node_token.trim();
    let password = match node_token.split_once("::") {
        Some((_, cred)) => cred.split_once(':').map_or(cred, |(_, p)| p),
        None => node_token,
    };
    password.len() == token.len()
        && password
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn read_head(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = vec![0u8; 64];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    head.truncate(n);
    Some(head)
}

#[async_trait::async_trait]
impl Phase for K3sNodes {
    fn id(&self) -> (&'static str, &'static str) {
        (PHASE, "Phase -1: k3s nodes")
    }

    async fn plan(&self, ctx: &RunCtx) -> Result<Vec<Action>, PhaseError> {
        use futures::StreamExt;
        let m = material::load(&self.run, false).await?;
        let nodes: Vec<Node> = self.run.nodes().cloned().collect();
        let m_ref = m.as_ref();
        let seen: Vec<plan::NodeSeen> = futures::stream::iter(nodes)
            .map(|n| async move {
                ctx.step(PHASE, &n.name, "probing over SSH");
                let seen = self.probe(&n, m_ref).await;
                plan::NodeSeen {
                    name: n.name,
                    role: n.role,
                    seen,
                }
            })
            .buffered(ctx.concurrency.max(1))
            .collect()
            .await;
        let observed = plan::Observation {
            secrets: m.is_some(),
            nodes: seen,
            stored: ctx.state.lock().await.artifact(KUBECONFIG).is_some(),
        };
        Ok(plan::decide(&observed, &self.run.cluster.versions.k3s))
    }

    async fn apply(&self, ctx: &RunCtx, plan: &[Action]) -> Result<(), PhaseError> {
        let todo: BTreeSet<&str> = plan
            .iter()
            .filter(|a| a.target != CLUSTER)
            .map(|a| a.target.as_str())
            .collect();
        // Every node this run changes is locked first (k0sctl's host lock), released at the end.
        let locked: Vec<&Node> = self.run.nodes().filter(|n| todo.contains(n.name.as_str())).collect();
        self.lock_nodes(&locked, ctx.concurrency).await?;
        let result = self.apply_locked(ctx, &todo).await;
        self.release_locks().await;
        result
    }
}

impl K3sNodes {
    async fn apply_locked(&self, ctx: &RunCtx, todo: &BTreeSet<&str>) -> Result<(), PhaseError> {
        let m = material::load(&self.run, true)
            .await?
            .ok_or_else(|| self.failed("no cluster secrets"))?;
        let first = self.first_server()?;
        if todo.contains(first.name.as_str()) {
            self.install(ctx, first, &m)
                .await
                .map_err(|e| self.node_failed(first, e))?;
            if let Some(snapshot) = &self.run.restore {
                self.restore(ctx, first, &m, snapshot)
                    .await
                    .map_err(|e| self.node_failed(first, e))?;
            }
        } else if self.run.restore.is_some() {
            return Err(self.failed(format!(
                "a restore was asked for, but the first server {} already runs k3s as rendered: it restores only into a fresh install (reset uninstalls k3s first)",
                first.name
            )));
        } else if !self.run.selected(first) && ctx.state.lock().await.artifact(KUBECONFIG).is_none() {
            return Err(self.failed(format!(
                "the first server {} is outside --limit and the cluster has no kubeconfig yet",
                first.name
            )));
        }
        if ctx.cancelled() {
            return Err(PhaseError::Interrupted);
        }
        let (kube, kubeconfig) = self.connect_api(ctx, first, &m).await?;
        // Servers one at a time: each serving and registered before the next
        // is touched, so a quorum is never restarted at once.
        for node in self
            .run
            .nodes()
            .filter(|n| n.role == Role::Controlplane && n.name != first.name && todo.contains(n.name.as_str()))
        {
            if ctx.cancelled() {
                return Err(PhaseError::Interrupted);
            }
            self.install(ctx, node, &m)
                .await
                .map_err(|e| self.node_failed(node, e))?;
            self.server_ready(ctx, node, &kubeconfig).await?;
            ctx.step(PHASE, &node.name, "waiting for the server to register");
            crate::k8s::wait::nodes_registered(&kube, &[node.name.as_str()], self.run.timeouts.api)
                .await
                .map_err(|e| self.node_failed(node, e.to_string()))?;
        }
        let agents: Vec<(String, &Node)> = self
            .run
            .nodes()
            .filter(|n| n.role == Role::Worker && todo.contains(n.name.as_str()))
            .map(|n| (n.name.clone(), n))
            .collect();
        let m = &m;
        ctx.for_each(PHASE, agents, |_, node| async move { self.install(ctx, node, m).await })
            .await?;
        let names: Vec<&str> = self.run.nodes().map(|n| n.name.as_str()).collect();
        ctx.step(PHASE, CLUSTER, "waiting for every node to register");
        crate::k8s::wait::nodes_registered(&kube, &names, self.run.timeouts.api)
            .await
            .map_err(|e| self.failed(e))?;
        ctx.record(PHASE, CLUSTER, "kubeconfig").await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_token_must_carry_the_cluster_token() {
        assert!(carries_token("K10abc::server:s3cret\n", "s3cret"));
        assert!(carries_token("s3cret", "s3cret"));
        assert!(!carries_token("K10abc::server:other", "s3cret"));
        assert!(!carries_token("K10abc::server:s3cre", "s3cret"));
        assert_eq!(token_ca_hash("K10abc::server:s3cret\n"), Some("abc"));
        assert_eq!(token_ca_hash("s3cret"), None);
    }
}

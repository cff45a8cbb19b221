//! k3s access for Day 2 and `reset`: what makes a node this cluster's
//! (identity over SSH), its uninstall, and the installer phase -1 uses,
//! borrowed so that an upgrade installs exactly what `up` would.
//!
//! What "ours" means for a k3s node: it answers SSH with the host key known
//! for it (known_hosts or the inventory's pin; an unknown key is refused, a
//! new one is never accepted here), and
//! - a server's node token (`/var/lib/rancher/k3s/server/node-token`,
//!   `K10<ca sha256>::server:<token>`) carries this cluster's token from the
//!   state dir, and its CA hash is the sha256 of the CA the state dir's
//!   kubeconfig trusts: the same token and the same cluster CA;
//! - an agent's `/etc/rancher/k3s/config.yaml` joins with this cluster's token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::inventory::{Cluster, Node, Role};
use crate::phases::KUBECONFIG;
use crate::phases::k3s_nodes::{self, Installed, K3sNodes, remote};
use crate::ssh::{ExecOpts, Pool, Target};
use crate::state::StateStore;

/// How long the identity check waits for one node's SSH answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Budget of one node's uninstall.
const UNINSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// What Day 2 works with on a k3s cluster.
pub struct K3sAccess {
    /// Phase -1's installer (its SSH pool, what it renders).
    pub installer: K3sNodes,
    /// The cluster token (never logged).
    pub token: String,
    /// sha256 of the cluster CA the state dir's kubeconfig trusts.
    pub ca: String,
}

impl K3sAccess {
    /// The access for `cluster` from its state dir.
    pub fn load(installer: K3sNodes, root: &Path, store: &StateStore, cluster: &Cluster) -> Result<Self, String> {
        Ok(Self {
            installer,
            token: cluster_token(root, cluster)?,
            ca: cluster_ca(store, cluster)?,
        })
    }

    /// Every node of `cluster`, `concurrency` at a time: whether it is ours,
    /// what it has installed, and its Node object (read-only).
    pub async fn observe(
        &self,
        cluster: &Cluster,
        kube: &crate::k8s::Client,
        concurrency: usize,
    ) -> BTreeMap<String, NodeSeen> {
        use futures::StreamExt;
        // Collected first: a lazy `map` here trips the compiler's Send check
        // of the async-trait future (rust-lang/rust#102211).
        let each: Vec<_> = cluster.nodes.iter().map(|n| self.observe_node(n, kube)).collect();
        futures::stream::iter(each)
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await
    }
}

impl K3sAccess {
    async fn observe_node(&self, n: &Node, kube: &crate::k8s::Client) -> (String, NodeSeen) {
        let ours = match identity(self.installer.pool(), n, &self.token, &self.ca).await {
            Ok(Seen::Ours) => Ok(()),
            Ok(Seen::Bare) => Err("no k3s there".to_owned()),
            Err(e) => Err(e),
        };
        let installed = match &ours {
            Ok(()) => self.installer.installed(n).await,
            Err(e) => Err(e.clone()),
        };
        let node = crate::k8s::drain::node_status(kube, &n.name)
            .await
            .map_err(|e| e.to_string());
        (n.name.clone(), NodeSeen { ours, installed, node })
    }
}

/// One k3s node as Day 2 observed it.
#[derive(Debug, Clone)]
pub struct NodeSeen {
    /// It answers as this cluster's node, or why not.
    pub ours: Result<(), String>,
    /// What it has installed.
    pub installed: Result<Installed, String>,
    /// Its Node object (kubelet version, Ready), `None` without one.
    pub node: Result<Option<(String, bool)>, String>,
}

impl NodeSeen {
    /// What keeps this node from a Day-2 step (empty: nothing).
    pub fn problems(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        match (&self.ours, &self.installed) {
            (Err(e), _) => out.push(format!("{name}: does not answer as this cluster's node ({e})")),
            (Ok(()), Err(e)) => out.push(format!("{name}: what is installed cannot be read ({e})")),
            (Ok(()), Ok(i)) if i.version.is_empty() => out.push(format!(
                "{name}: k3s there was not installed by bootstrap (no install record)"
            )),
            (Ok(()), Ok(i)) if !i.active => out.push(format!("{name}: the k3s service is not running")),
            _ => {}
        }
        match &self.node {
            Ok(Some((_, true))) => {}
            Ok(Some((_, false))) => out.push(format!("{name}: its Node is NotReady")),
            Ok(None) => out.push(format!("{name}: no Node object")),
            Err(e) => out.push(format!("{name}: its Node cannot be read ({e})")),
        }
        out
    }
}

/// Stops and removes k3s on a node. A k3s installed by upstream's
/// `install.sh` (get.k3s.io) has `k3s-uninstall.sh` (servers) or
/// `k3s-agent-uninstall.sh` (agents) and `k3s-killall.sh` (upstream
/// install.sh: `create_killall`, `create_uninstall`): run first when there.
/// Bootstrap's own install (templates/k3s/install.sh.j2) writes no such
/// scripts, so the rest removes what it installed and what upstream's
/// uninstall removes: the units, the binary, `/etc/rancher/k3s`,
/// `/var/lib/rancher/k3s` (the datastore and node-side snapshots),
/// `/var/lib/kubelet`, `/run/k3s`; as `k3s-killall.sh` does, the container
/// shims that outlive the service (`KillMode=process`; by executable, under
/// `/var/lib/rancher/k3s/data/*/bin/`) are killed and the
/// mounts under k3s's directories unmounted. Ends non-zero when k3s's files
/// are still there.
pub const UNINSTALL: &str = r#"set -u
for s in /usr/local/bin/k3s-uninstall.sh /usr/local/bin/k3s-agent-uninstall.sh; do
  if [ -x "$s" ]; then "$s" >/dev/null 2>&1 || echo "uninstall: $s failed; removing what is left" >&2; fi
done
for u in k3s k3s-agent; do
  if [ -f "/etc/systemd/system/$u.service" ]; then
    systemctl stop "$u" || echo "uninstall: systemctl stop $u failed" >&2
    systemctl disable "$u" >/dev/null 2>&1 || true
  fi
done
for d in /proc/[0-9]*; do
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case "$exe" in
    /var/lib/rancher/k3s/data/*/bin/containerd-shim*) kill -9 "${d#/proc/}" 2>/dev/null || true ;;
  esac
done
for m in $(awk '$2 ~ "^(/run/k3s|/var/lib/kubelet|/var/lib/rancher/k3s)" {print $2}' /proc/self/mounts | sort -r); do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done
rm -f /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service
systemctl daemon-reload >/dev/null 2>&1 || true
rm -rf /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/kubelet /run/k3s \
  /var/lib/bootstrap/k3s-install /var/lib/bootstrap/k3s-restore
rm -f /usr/local/bin/k3s /var/lib/bootstrap/k3s-install.state
if [ -e /usr/local/bin/k3s ] || [ -e /var/lib/rancher/k3s ] || [ -e /etc/rancher/k3s ]; then
  echo "uninstall: k3s files are still there" >&2
  exit 1
fi
echo "k3s uninstalled"
"#;

fn sudo(node: &Node) -> bool {
    node.ssh.as_ref().is_some_and(|s| s.sudo)
}

/// This cluster's k3s token, from the state dir.
pub fn cluster_token(root: &Path, cluster: &Cluster) -> Result<String, String> {
    let bundle = crate::day2::secrets(root, cluster)?;
    Ok(bundle.k3s().map_err(|e| e.to_string())?.k3s.token.clone())
}

/// sha256 of the cluster CA, from the kubeconfig `up` stored.
pub fn cluster_ca(store: &StateStore, cluster: &Cluster) -> Result<String, String> {
    let path: PathBuf = store
        .artifact(KUBECONFIG)
        .ok_or_else(|| {
            format!(
                "cluster {}: no kubeconfig in the state dir (`up` never fetched one): the servers' CA cannot be verified; nothing was done",
                cluster.name
            )
        })?
        .to_path_buf();
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}; nothing was done", path.display()))?;
    k3s_nodes::ca_sha256(&text).map_err(|e| format!("{}: {e}; nothing was done", path.display()))
}

/// What the identity check found on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// This cluster's k3s.
    Ours,
    /// No k3s at all (no config, and on a server no node token): what a
    /// reset leaves when its rebuild did not finish.
    Bare,
}

/// Ok(false) when every node is this cluster's; Ok(true) when none runs k3s
/// at all (a reset to resume: nothing to wipe); else the refusal, naming
/// each node and why.
pub async fn verify_identity(cluster: &Cluster, pool: &Pool, token: &str, ca: &str) -> Result<bool, String> {
    let seen = futures::future::join_all(cluster.nodes.iter().map(|n| identity(pool, n, token, ca))).await;
    if seen.iter().all(|s| *s == Ok(Seen::Bare)) {
        return Ok(true);
    }
    let wrong: Vec<String> = cluster
        .nodes
        .iter()
        .zip(seen)
        .filter_map(|(n, s)| match s {
            Ok(Seen::Ours) => None,
            Ok(Seen::Bare) => Some(format!("{}: no k3s there (the others run it)", n.name)),
            Err(why) => Some(format!("{}: {why}", n.name)),
        })
        .collect();
    if wrong.is_empty() {
        Ok(false)
    } else {
        Err(format!(
            "refusing to reset: these nodes do not answer as members of this cluster: {}; nothing was done",
            wrong.join("; ")
        ))
    }
}

/// Ours when `node` is this cluster's (see the module doc), Bare when it
/// runs no k3s; else why not. Secrets read from the node never reach the message.
pub async fn identity(pool: &Pool, node: &Node, token: &str, ca: &str) -> Result<Seen, String> {
    let s = match tokio::time::timeout(PROBE_TIMEOUT, pool.session(&Target::from_node(node))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("unreachable over SSH ({e})")),
        Err(_) => return Err(format!("no SSH answer within {PROBE_TIMEOUT:?}")),
    };
    let sudo = sudo(node);
    let config = remote::read_if_present(&s, remote::CONFIG, sudo).await?;
    match node.role {
        Role::Controlplane => {
            let Some(raw) = remote::read_if_present(&s, remote::NODE_TOKEN, sudo).await? else {
                if config.is_none() {
                    return Ok(Seen::Bare);
                }
                return Err(format!(
                    "k3s is configured there but no server token exists ({} is missing)",
                    remote::NODE_TOKEN
                ));
            };
            let theirs = String::from_utf8_lossy(&raw);
            if !k3s_nodes::carries_token(&theirs, token) {
                return Err(format!(
                    "k3s there runs with another cluster token ({} differs)",
                    remote::NODE_TOKEN
                ));
            }
            match k3s_nodes::token_ca_hash(&theirs) {
                Some(h) if h.eq_ignore_ascii_case(ca) => Ok(Seen::Ours),
                Some(_) => Err(format!(
                    "k3s there runs under another cluster CA (the CA hash in {} is not that of the state dir's kubeconfig)",
                    remote::NODE_TOKEN
                )),
                None => Err(format!(
                    "{} carries no CA hash (not `K10<hash>::...`)",
                    remote::NODE_TOKEN
                )),
            }
        }
        Role::Worker => {
            let Some(raw) = config else {
                return Ok(Seen::Bare);
            };
            let theirs = yaml_serde::from_slice::<yaml_serde::Value>(&raw)
                .ok()
                .and_then(|v| v.get("token").and_then(yaml_serde::Value::as_str).map(str::to_owned))
                .ok_or_else(|| format!("{} holds no `token`", remote::CONFIG))?;
            if k3s_nodes::carries_token(&theirs, token) {
                Ok(Seen::Ours)
            } else {
                Err(format!(
                    "its k3s agent joins with another cluster token ({} differs)",
                    remote::CONFIG
                ))
            }
        }
    }
}

/// Uninstalls k3s: every agent at once, then every server at once (the
/// datastore goes with the servers).
pub async fn wipe(cluster: &Cluster, pool: &Pool) -> Result<(), String> {
    let (agents, servers): (Vec<&Node>, Vec<&Node>) = cluster.nodes.iter().partition(|n| n.role == Role::Worker);
    for group in [agents, servers] {
        let results = futures::future::join_all(
            group
                .into_iter()
                .map(|n| async move { uninstall(pool, n).await.map_err(|e| format!("{}: {e}", n.name)) }),
        )
        .await;
        let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if !failed.is_empty() {
            return Err(format!("wipe: {}", failed.join("; ")));
        }
    }
    Ok(())
}

pub async fn uninstall(pool: &Pool, node: &Node) -> Result<(), String> {
    let s = pool
        .session(&Target::from_node(node))
        .await
        .map_err(|e| e.to_string())?;
    let out = s
        .exec(
            UNINSTALL,
            ExecOpts {
                sudo: sudo(node),
                timeout: Some(UNINSTALL_TIMEOUT),
                ..ExecOpts::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    out.succeeded("uninstalling k3s", 5)?;
    tracing::info!(node = %node.name, "k3s uninstalled");
    Ok(())
}

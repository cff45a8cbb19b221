//! What a plan says it will do, as typed steps: phases build them from what
//! they observed, `plan` prints them (text or JSON), and the phases' apply
//! reads them back by kind rather than by their wording.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

/// A Kubernetes object a step applies. It travels with the plan to the
/// executor but is never printed or serialised: a Secret's values are in it.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest(Arc<Value>);

impl Manifest {
    /// The object to apply.
    pub fn new(obj: Value) -> Self {
        Self(Arc::new(obj))
    }

    /// The object, for the executor.
    pub fn object(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Manifest({})", ObjectRef::of(&self.0))
    }
}

/// Which Kubernetes object a wait is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The reference to `obj` (its apiVersion, kind, namespace and name).
    pub fn of(obj: &Value) -> Self {
        // A missing kind or name shows as `?` in messages.
        let text = |v: &Value, missing: &str| v.as_str().unwrap_or(missing).to_owned();
        Self {
            api_version: text(&obj["apiVersion"], ""),
            kind: text(&obj["kind"], "?"),
            namespace: obj["metadata"]["namespace"].as_str().map(str::to_owned),
            name: text(&obj["metadata"]["name"], "?"),
        }
    }

    /// A reference from its parts.
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

/// `Kind ns/name`, or `Kind name` for a cluster-scoped object.
impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One kind of step of a plan, with what it needs to be carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// Generate the cluster's secrets bundle (none in the state dir yet).
    GenerateSecrets,
    /// Fetch a pinned artifact into the cache (`plan` never downloads).
    FetchArtifact { what: String, sha256: String },
    /// Talos: send the machine config to a node in maintenance mode;
    /// `install_disk` once its identity and disks were checked.
    ApplyConfig { install_disk: Option<String> },
    /// Talos: a configured node's rendered config changed since it accepted
    /// ours (control planes one at a time).
    Reapply,
    /// A node that does not answer yet: wait for it, then `then`.
    AwaitNode { seen: String, via: String, then: String },
    /// Talos: bootstrap etcd on `node` (no control plane runs it).
    BootstrapEtcd { node: String },
    /// Talos: wait until every control plane is an etcd member.
    AwaitEtcdMembers,
    /// Talos: store talosconfig and kubeconfig, wait for the API.
    StoreCredentials,
    /// k3s: start the installed, stopped service.
    StartService,
    /// k3s: preflight, upload and install (`why`: what differs).
    InstallK3s { version: String, role: String, why: String },
    /// k3s: fetch the kubeconfig, wait for /readyz and node registration.
    FetchKubeconfig,
    /// Pin the Git host's SSH key (accepted with `--accept-new`) in the
    /// state dir: `line` is the known_hosts line, `fingerprint` its key's.
    PinGitHostKey { line: String, fingerprint: String },
    /// Kubernetes: create or change one object (`change` says which and how,
    /// never with values); consecutive ones are applied together.
    ApplyObject {
        change: String,
        #[serde(skip)]
        object: Manifest,
    },
    /// Kubernetes: wait for a CRD to be Established.
    AwaitEstablished { crd: String },
    /// Kubernetes: wait for a workload, Node or release to be ready by its
    /// kind's convention (consecutive Nodes are waited for together).
    AwaitReady { object: ObjectRef },
    /// GitOps: wait for the root object to report Ready (Flux: its
    /// GitRepository first; Argo CD: Healthy and Synced).
    AwaitGitops { root: ObjectRef },
    /// Day 2: stream an etcd snapshot from `node` into the state dir.
    Snapshot { node: String },
    /// Day 2: mark the Node unschedulable.
    Cordon,
    /// Day 2: evict its pods through the Eviction API (budgets respected).
    Drain { timeout_secs: u64 },
    /// Day 2: Talos Upgrade RPC with `image`, from version `from` to `to`.
    UpgradeTalos { from: String, to: String, image: String },
    /// Day 2: wait until the node rebooted into `version` and is healthy again.
    AwaitUpgraded { version: String },
    /// Day 2: mark the Node schedulable again.
    Uncordon,
    /// Day 2: re-apply the node's machine config rendered for Kubernetes `to`, without a reboot.
    UpgradeKubernetes { from: String, to: String },
    /// Day 2: wait until the node's kubelet reports `version` and its Node is Ready.
    AwaitKubelet { version: String },
    /// Day 2: install the pinned k3s binary of version `to` (and the configs rendered for it) and restart k3s.
    UpgradeK3s { from: String, to: String },
    /// Day 2: remove the node's etcd member through control plane `via`.
    RemoveEtcdMember { via: String },
    /// Day 2: wipe the node (`how`: Talos reset or k3s uninstall).
    WipeNode { how: String },
    /// Day 2: delete the Node object.
    DeleteNode,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::GenerateSecrets => {
                f.write_str("generate the cluster's secrets bundle (CA keys, tokens) in the state dir")
            }
            Step::FetchArtifact { what, sha256 } => {
                write!(f, "fetch {what} (sha256 {sha256}), then apply what it holds")
            }
            Step::ApplyConfig { install_disk: None } => f.write_str("apply machine config (maintenance mode, AUTO)"),
            Step::ApplyConfig {
                install_disk: Some(disk),
            } => write!(
                f,
                "apply machine config (maintenance mode, AUTO), install disk {disk} (identity checked)"
            ),
            Step::Reapply => {
                f.write_str("re-apply machine config (the inventory changed; control planes one at a time)")
            }
            Step::AwaitNode { seen, via, then } => write!(f, "wait for {via} ({seen}), then {then}"),
            Step::BootstrapEtcd { node } => write!(f, "bootstrap etcd on {node}"),
            Step::AwaitEtcdMembers => f.write_str("wait for control planes to join etcd"),
            Step::StoreCredentials => f.write_str("store talosconfig and kubeconfig, wait for the API"),
            Step::StartService => f.write_str("start the k3s service"),
            Step::InstallK3s { version, role, why } => {
                write!(f, "preflight, upload and install k3s {version} ({role}): {why}")
            }
            Step::FetchKubeconfig => {
                f.write_str("fetch the kubeconfig, wait for /readyz and for every node to register")
            }
            Step::PinGitHostKey { fingerprint, .. } => {
                write!(
                    f,
                    "pin the Git host's key {fingerprint} (accepted new) in the state dir"
                )
            }
            Step::ApplyObject { change, .. } => f.write_str(change),
            Step::AwaitEstablished { crd } => write!(f, "wait for CustomResourceDefinition {crd} to be Established"),
            Step::AwaitReady { object } => write!(f, "wait for {object} to be ready"),
            Step::AwaitGitops { root } => write!(f, "wait for {root} to be Ready"),
            Step::Snapshot { node } => write!(f, "stream an etcd snapshot from {node} into the state dir"),
            Step::Cordon => f.write_str("cordon (mark the Node unschedulable)"),
            Step::Drain { timeout_secs } => write!(
                f,
                "drain through the Eviction API (PodDisruptionBudgets respected, at most {timeout_secs}s)"
            ),
            Step::UpgradeTalos { from, to, image } => write!(f, "upgrade Talos {from} -> {to} (installer {image})"),
            Step::AwaitUpgraded { version } => write!(
                f,
                "wait for the reboot into {version}: mTLS, etcd healthy with every member, Node Ready"
            ),
            Step::Uncordon => f.write_str("uncordon"),
            Step::UpgradeKubernetes { from, to } => write!(
                f,
                "upgrade Kubernetes {from} -> {to}: re-apply its machine config (kubelet and control-plane images), no reboot"
            ),
            Step::AwaitKubelet { version } => write!(f, "wait for its kubelet to report {version} and the Node Ready"),
            Step::UpgradeK3s { from, to } => write!(
                f,
                "upgrade k3s {from} -> {to}: upload the pinned binary, run install.sh (restarts k3s; a server is waited for on its own /readyz)"
            ),
            Step::RemoveEtcdMember { via } => write!(f, "remove its etcd member (through {via})"),
            Step::WipeNode { how } => write!(f, "wipe it: {how}"),
            Step::DeleteNode => f.write_str("delete its Node object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_print_as_text_and_serialise_with_their_kind() {
        let s = Step::InstallK3s {
            version: "v1.33.1+k3s1".into(),
            role: "server".into(),
            why: "not installed".into(),
        };
        assert_eq!(
            s.to_string(),
            "preflight, upload and install k3s v1.33.1+k3s1 (server): not installed"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["kind"], "install-k3s");
        assert_eq!(json["why"], "not installed");
        let disk = Step::ApplyConfig {
            install_disk: Some("/dev/vda".into()),
        };
        assert!(disk.to_string().ends_with("install disk /dev/vda (identity checked)"));
        assert_eq!(serde_json::to_value(&Step::Reapply).unwrap()["kind"], "reapply");
    }

    #[test]
    fn an_applied_objects_values_are_neither_printed_nor_serialised() {
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "sops-age", "namespace": "flux-system"}, "data": {"age.agekey": "c2VjcmV0"}});
        let step = Step::ApplyObject {
            change: "create Secret flux-system/sops-age".into(),
            object: Manifest::new(secret),
        };
        let json = serde_json::to_string(&step).unwrap();
        let debug = format!("{step:?}");
        for shown in [&json, &debug, &step.to_string()] {
            assert!(!shown.contains("c2VjcmV0"), "a Secret value shown: {shown}");
        }
        assert!(debug.contains("Manifest(Secret flux-system/sops-age)"), "{debug}");
        let wait = Step::AwaitReady {
            object: ObjectRef::new("apps/v1", "Deployment", Some("kube-system"), "cilium-operator"),
        };
        assert_eq!(
            wait.to_string(),
            "wait for Deployment kube-system/cilium-operator to be ready"
        );
        assert_eq!(serde_json::to_value(&wait).unwrap()["object"]["apiVersion"], "apps/v1");
    }
}

//! The only changes `bootstrap` makes to upstream Flux objects
//! (`phases/flux/install.yaml`), each with its reason. They exist because
//! phase 2 starts Flux on a cluster with no CNI yet (Flux itself installs
//! Cilium): no pod network, no Service routing, no cluster DNS, and nodes that
//! are NotReady. Every other field is upstream's, byte for byte. Once the
//! GitOps repository's own Flux manifests take over (after the CNI runs), they
//! replace these Deployments in place.
//!
//! What is deliberately *not* patched:
//! - NetworkPolicies (`allow-egress`, `allow-scraping`, `allow-webhooks`):
//!   applied unchanged. NetworkPolicy does not select host-network pods (the
//!   Kubernetes docs call their behaviour undefined; Cilium applies only host
//!   policies to them), so they neither block nor help these controllers, and
//!   they are in place for the pod-network controllers the repository installs.
//! - ResourceQuota `critical-pods`: applied unchanged. It only counts pods of
//!   priority class system-node-critical/system-cluster-critical (1000 allowed)
//!   and sets no CPU/memory hard limits, so the controllers need no requests
//!   beyond upstream's; it is what admits their `system-cluster-critical`
//!   priority on clusters that limit critical priority classes to namespaces
//!   with such a quota. notification-controller has no priority class upstream.
//! - Services: unchanged (named target ports keep working with new port numbers).

use serde_json::{Value, json};

use super::manifests::local_api;
use crate::inventory::Cluster;

/// The Deployments the patches apply to (the controllers of the manifest).
pub const CONTROLLERS: [&str; 4] = [
    "source-controller",
    "kustomize-controller",
    "helm-controller",
    "notification-controller",
];

/// Host ports per controller: `(container port name, flag that binds it, port)`.
/// Upstream gives every controller `:8080` (metrics) and `:9440` (health),
/// and source/notification-controller `:9090`; on the host network of one
/// node these collide, so each gets its own.
/// `(container port name, flag that binds it, port)`.
pub type HostPort = (&'static str, &'static str, u16);

/// Each controller's [`HostPort`]s.
pub const PORTS: [(&str, &[HostPort]); 4] = [
    (
        "source-controller",
        &[
            ("http", "--storage-addr", 9790),
            ("http-prom", "--metrics-addr", 9791),
            ("healthz", "--health-addr", 9792),
        ],
    ),
    (
        "kustomize-controller",
        &[
            ("http-prom", "--metrics-addr", 9793),
            ("healthz", "--health-addr", 9794),
        ],
    ),
    (
        "helm-controller",
        &[
            ("http-prom", "--metrics-addr", 9795),
            ("healthz", "--health-addr", 9796),
        ],
    ),
    (
        "notification-controller",
        &[
            ("http", "--events-addr", 9797),
            ("http-webhook", "--receiverAddr", 9798),
            ("http-prom", "--metrics-addr", 9799),
            ("healthz", "--health-addr", 9800),
        ],
    ),
];

/// One change to upstream objects.
pub struct Patch {
    /// Short name (for reports and tests).
    pub name: &'static str,
    /// Why a cluster without a CNI needs it.
    pub reason: &'static str,
    /// Kind and names it applies to (empty names: every object of the kind;
    /// kind `*`: every object).
    pub kind: &'static str,
    pub targets: &'static [&'static str],
    /// JSON pointers it sets, inside the object.
    pub fields: &'static [&'static str],
    /// Container args it sets or replaces (`--flag`), in the first container.
    pub flags: &'static [&'static str],
    /// Environment variables it sets in the first container.
    pub env: &'static [&'static str],
    apply: fn(&mut Value, &Cluster),
}

impl Patch {
    /// Whether the patch applies to `obj`.
    pub fn applies_to(&self, obj: &Value) -> bool {
        let kind_ok = self.kind == "*" || obj["kind"] == self.kind;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        kind_ok && (self.targets.is_empty() || self.targets.contains(&name))
    }
}

const SOURCE: &[&str] = &["source-controller"];
const EMITTERS: &[&str] = &["source-controller", "kustomize-controller", "helm-controller"];

/// Every patch, in the order applied.
pub const PATCHES: &[Patch] = &[
    Patch {
        name: "managed-by label",
        reason: "every object bootstrap applies carries app.kubernetes.io/managed-by=bootstrap, so plans and operators tell its objects from the GitOps engine's",
        kind: "*",
        targets: &[],
        fields: &["/metadata/labels/app.kubernetes.io~1managed-by"],
        flags: &[],
        env: &[],
        apply: |o, _| *o = super::objects::labelled(std::mem::take(o)),
    },
    Patch {
        name: "host network",
        reason: "no pod network exists before the CNI, which these controllers install; on the host network they run on a NotReady node",
        kind: "Deployment",
        targets: &[],
        fields: &["/spec/template/spec/hostNetwork"],
        flags: &[],
        env: &[],
        apply: |o, _| o["spec"]["template"]["spec"]["hostNetwork"] = json!(true),
    },
    Patch {
        name: "dnsPolicy Default",
        reason: "cluster DNS (CoreDNS) needs the CNI; the node's resolver reaches chart registries and Git hosts. Upstream's ClusterFirst falls back to Default on the host network anyway; said explicitly",
        kind: "Deployment",
        targets: &[],
        fields: &["/spec/template/spec/dnsPolicy"],
        flags: &[],
        env: &[],
        apply: |o, _| o["spec"]["template"]["spec"]["dnsPolicy"] = json!("Default"),
    },
    Patch {
        name: "API server address",
        reason: "the kubernetes Service's ClusterIP needs kube-proxy or the CNI; KUBERNETES_SERVICE_HOST/PORT point the client at KubePrism (Talos, localhost:7445) or the local apiserver (k3s servers, 127.0.0.1:6443)",
        kind: "Deployment",
        targets: &[],
        fields: &[],
        flags: &[],
        env: &["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"],
        apply: |o, c| {
            let (host, port) = local_api(c);
            set_env(
                o,
                "KUBERNETES_SERVICE_HOST",
                json!({"name": "KUBERNETES_SERVICE_HOST", "value": host}),
            );
            set_env(
                o,
                "KUBERNETES_SERVICE_PORT",
                json!({"name": "KUBERNETES_SERVICE_PORT", "value": port.to_string()}),
            );
        },
    },
    Patch {
        name: "tolerations",
        reason: "nodes are tainted not-ready (and Cilium's agent-not-ready, the cloud provider's uninitialized) until the CNI runs, and control planes carry their NoSchedule taint",
        kind: "Deployment",
        targets: &[],
        fields: &["/spec/template/spec/tolerations"],
        flags: &[],
        env: &[],
        apply: |o, _| {
            let spec = &mut o["spec"]["template"]["spec"];
            if !spec["tolerations"].is_array() {
                spec["tolerations"] = json!([]);
            }
            let list = spec["tolerations"].as_array_mut().expect("array");
            for key in [
                "node-role.kubernetes.io/control-plane",
                "node.kubernetes.io/not-ready",
                "node.cilium.io/agent-not-ready",
                "node.cloudprovider.kubernetes.io/uninitialized",
            ] {
                list.push(json!({"key": key, "operator": "Exists"}));
            }
        },
    },
    Patch {
        name: "control-plane placement",
        reason: "the local apiserver of k3s exists on servers only, and control planes are the nodes up first; required node affinity on node-role.kubernetes.io/control-plane",
        kind: "Deployment",
        targets: &[],
        fields: &["/spec/template/spec/affinity"],
        flags: &[],
        env: &[],
        apply: |o, _| {
            o["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}]
            }}});
        },
    },
    Patch {
        name: "distinct host ports",
        reason: "on the host network every container port is a node port: upstream's shared :8080/:9440/:9090 would collide between controllers on one node, so each binds its own (flags, container ports and the prometheus.io/port annotation agree)",
        kind: "Deployment",
        targets: &[],
        fields: &[
            "/spec/template/spec/containers/0/ports",
            "/spec/template/metadata/annotations/prometheus.io~1port",
        ],
        flags: &[
            "--storage-addr",
            "--metrics-addr",
            "--health-addr",
            "--events-addr",
            "--receiverAddr",
        ],
        env: &[],
        apply: |o, _| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let Some((_, ports)) = PORTS.iter().find(|(n, _)| *n == name) else {
                return;
            };
            for (port_name, flag, port) in ports.iter() {
                set_flag(o, flag, &format!(":{port}"));
                if let Some(list) = o
                    .pointer_mut("/spec/template/spec/containers/0/ports")
                    .and_then(Value::as_array_mut)
                {
                    for p in list.iter_mut().filter(|p| p["name"] == *port_name) {
                        p["containerPort"] = json!(port);
                    }
                }
                if *port_name == "http-prom" {
                    o["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = json!(port.to_string());
                }
            }
        },
    },
    Patch {
        name: "storage advertised on the node address",
        reason: "helm- and kustomize-controller fetch artifacts from the address source-controller advertises; upstream's Service name needs cluster DNS and Service routing, the pod IP (the node's, on the host network) does not",
        kind: "Deployment",
        targets: SOURCE,
        fields: &[],
        flags: &["--storage-adv-addr"],
        env: &["POD_IP"],
        apply: |o, _| {
            set_env(
                o,
                "POD_IP",
                json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
            );
            set_flag(o, "--storage-adv-addr", &format!("$(POD_IP):{}", storage_port()));
        },
    },
    Patch {
        name: "events address off",
        reason: "upstream posts events to notification-controller.flux-system.svc.cluster.local., which resolves only through cluster DNS and routes only through the CNI; Flux's event recorder treats an empty address as disabled instead of retrying a name that cannot resolve (Kubernetes Events are still recorded)",
        kind: "Deployment",
        targets: EMITTERS,
        fields: &[],
        flags: &["--events-addr"],
        env: &[],
        apply: |o, _| set_flag(o, "--events-addr", ""),
    },
    Patch {
        name: "Recreate strategy",
        reason: "a rolling update on a host port deadlocks on a single control plane (the new pod cannot bind the port the old one holds); source-controller is Recreate upstream already",
        kind: "Deployment",
        targets: &[],
        fields: &["/spec/strategy"],
        flags: &[],
        env: &[],
        apply: |o, _| o["spec"]["strategy"] = json!({"type": "Recreate"}),
    },
];

/// The port source-controller serves artifacts on.
pub fn storage_port() -> u16 {
    PORTS[0].1.iter().find(|(n, _, _)| *n == "http").map_or(9790, |p| p.2)
}

fn container(o: &mut Value) -> &mut Value {
    &mut o["spec"]["template"]["spec"]["containers"][0]
}

/// Replaces `--flag=...` (or `--flag`) in the first container's args, or appends it.
fn set_flag(o: &mut Value, flag: &str, value: &str) {
    let c = container(o);
    if !c["args"].is_array() {
        c["args"] = json!([]);
    }
    let args = c["args"].as_array_mut().expect("array");
    let arg = json!(format!("{flag}={value}"));
    let same = |a: &Value| {
        a.as_str()
            .is_some_and(|s| s == flag || s.starts_with(&format!("{flag}=")))
    };
    match args.iter_mut().find(|a| same(a)) {
        Some(a) => *a = arg,
        None => args.push(arg),
    }
}

/// Sets env var `name` in the first container (replacing one of that name).
fn set_env(o: &mut Value, name: &str, var: Value) {
    let c = container(o);
    if !c["env"].is_array() {
        c["env"] = json!([]);
    }
    let env = c["env"].as_array_mut().expect("array");
    match env.iter_mut().find(|e| e["name"] == name) {
        Some(e) => *e = var,
        None => env.push(var),
    }
}

/// `obj` with every patch that applies to it.
pub fn apply(mut obj: Value, cluster: &Cluster) -> Value {
    let controller = CONTROLLERS.contains(&obj["metadata"]["name"].as_str().unwrap_or_default());
    let wanted: Vec<&Patch> = PATCHES
        .iter()
        .filter(|p| p.applies_to(&obj) && (p.kind != "Deployment" || controller))
        .collect();
    for p in wanted {
        (p.apply)(&mut obj, cluster);
    }
    obj
}

//! The simulated cluster refuses what a real one refuses: each test drives the
//! controllers directly over a store (no HTTP) until the outcome settles.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::controllers::{Behaviour, Timers, reconcile};
use super::resources::GroupResource;
use super::store::Store;

struct Cluster {
    store: Store,
    b: Behaviour,
    timers: Timers,
}

fn gr_of(o: &Value) -> GroupResource {
    let api = o["apiVersion"].as_str().unwrap_or_default();
    let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = o["kind"].as_str().unwrap_or_default().to_lowercase();
    let plural = match kind.as_str() {
        k if k.ends_with('y') => format!("{}ies", &k[..k.len() - 1]),
        k if k.ends_with('s') => format!("{k}es"),
        k => format!("{k}s"),
    };
    GroupResource::new(group, &plural)
}

impl Cluster {
    fn new(b: Behaviour) -> Self {
        let mut store = Store::default();
        for ns in ["default", "kube-system", "flux-system"] {
            store.put(
                &GroupResource::new("", "namespaces"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
            );
        }
        store.put(
            &GroupResource::new("rbac.authorization.k8s.io", "clusterroles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cluster-admin"}}),
        );
        Self {
            store,
            b,
            timers: Timers::default(),
        }
    }

    /// Zero delays, Cilium as the CNI.
    fn cilium() -> Self {
        Self::new(Behaviour::uniform(Duration::ZERO))
    }

    /// Zero delays, the distribution's own CNI (k3s's flannel).
    fn flannel() -> Self {
        Self::new(Behaviour {
            cni_daemonset: None,
            ..Behaviour::uniform(Duration::ZERO)
        })
    }

    fn node(&mut self, name: &str, labels: Value) {
        let mut l = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
        for (k, v) in labels.as_object().into_iter().flatten() {
            l[k] = v.clone();
        }
        self.put(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": l}, "spec": {},
            "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.10"}]}}),
        );
    }

    fn put(&mut self, mut o: Value) {
        if o["metadata"]["generation"].is_null() {
            o["metadata"]["generation"] = json!(1);
        }
        let gr = gr_of(&o);
        self.store.put(&gr, o);
    }

    fn apply_yaml(&mut self, yaml: &str, skip: impl Fn(&Value) -> bool) {
        use serde::Deserialize;
        for doc in yaml_serde::Deserializer::from_str(yaml) {
            let v = Value::deserialize(doc).unwrap();
            if v.is_object() && !skip(&v) {
                self.put(v);
            }
        }
    }

    fn settle(&mut self) {
        for _ in 0..20 {
            reconcile(&mut self.store, &self.b, &mut self.timers, Instant::now());
        }
    }

    fn get(&self, group: &str, resource: &str, ns: &str, name: &str) -> Value {
        self.store
            .get(&GroupResource::new(group, resource), ns, name)
            .cloned()
            .unwrap_or_else(|| panic!("{resource} {ns}/{name} missing"))
    }

    fn pods_of(&self, ns: &str, owner: &str) -> Vec<Value> {
        self.store
            .list(&GroupResource::new("", "pods"), Some(ns))
            .filter(|p| p.pointer("/metadata/ownerReferences/0/name") == Some(&json!(owner)))
            .cloned()
            .collect()
    }

    fn ready(&self, o: &Value) -> bool {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    }

    fn condition(&self, o: &Value, t: &str) -> Value {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or(Value::Null)
    }

    fn event(&self, ns: &str, name: &str, reason: &str) -> Option<String> {
        super::events::message(&self.store, ns, name, reason)
    }

    /// Upstream's Flux installation, optionally without some objects.
    fn flux(&mut self, skip: impl Fn(&Value) -> bool) {
        let yaml = std::fs::read_to_string(super::flux::default_install_path()).expect("shared/flux install.yaml");
        self.apply_yaml(&yaml, skip);
    }
}

fn deployment(name: &str, pod_spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}})
}

fn cilium_ds() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "cilium", "namespace": "kube-system"},
           "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}},
                    "template": {"metadata": {"labels": {"k8s-app": "cilium"}},
                                 "spec": {"hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                                          "containers": [{"name": "agent", "image": "quay.io/cilium/cilium:v1.18.4"}]}}}})
}

fn available(d: &Value) -> bool {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Available" && c["status"] == "True"))
        && d.pointer("/status/availableReplicas") == Some(&json!(1))
}

#[test]
fn a_pod_that_does_not_tolerate_not_ready_never_runs_on_a_not_ready_node() {
    let mut c = Cluster::cilium();
    for n in ["cp-1", "cp-2", "cp-3"] {
        c.node(n, json!({}));
    }
    c.put(deployment(
        "web",
        json!({"containers": [{"name": "web", "image": "nginx"}]}),
    ));
    c.settle();
    let d = c.get("apps", "deployments", "default", "web");
    assert!(!available(&d), "{d}");
    let pods = c.pods_of("default", "web");
    assert_eq!(pods.len(), 1, "the Deployment creates its pod");
    let pod = &pods[0];
    assert!(pod.pointer("/spec/nodeName").is_none(), "{pod}");
    let msg = c.condition(pod, "PodScheduled")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.starts_with("0/3 nodes are available: 3 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."),
        "{msg}"
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        c.event("default", name, "FailedScheduling").as_deref(),
        Some(msg.as_str())
    );
    let node = c.get("", "nodes", "", "cp-1");
    assert!(!c.ready(&node), "no CNI, no Ready: {node}");
}

#[test]
fn a_cni_daemonset_makes_nodes_ready_and_lets_pods_schedule() {
    let mut c = Cluster::cilium();
    c.node("cp-1", json!({}));
    c.node("worker-1", json!({}));
    c.put(deployment(
        "web",
        json!({"containers": [{"name": "web", "image": "nginx"}]}),
    ));
    c.put(cilium_ds());
    c.settle();
    for n in ["cp-1", "worker-1"] {
        let node = c.get("", "nodes", "", n);
        assert!(c.ready(&node), "{node}");
        assert!(!node["spec"]["taints"].to_string().contains("not-ready"), "{node}");
    }
    let ds = c.get("apps", "daemonsets", "kube-system", "cilium");
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");
    assert_eq!(c.pods_of("kube-system", "cilium").len(), 2);
    let d = c.get("apps", "deployments", "default", "web");
    assert!(available(&d), "{d}");
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);
}

#[test]
fn a_daemonset_that_does_not_tolerate_not_ready_is_not_desired_on_not_ready_nodes() {
    let mut c = Cluster::cilium();
    c.node("cp-1", json!({}));
    let mut ds = cilium_ds();
    ds["spec"]["template"]["spec"]["tolerations"] = json!([]);
    c.put(ds);
    c.settle();
    let ds = c.get("apps", "daemonsets", "kube-system", "cilium");
    assert_eq!(ds["status"]["desiredNumberScheduled"], 0, "{ds}");
    assert!(!c.ready(&c.get("", "nodes", "", "cp-1")));
}

#[test]
fn a_missing_secret_is_a_create_container_config_error_until_it_exists() {
    let mut c = Cluster::flannel();
    c.node("n1", json!({}));
    let env = json!([{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]);
    c.put(deployment(
        "app",
        json!({"containers": [{"name": "app", "image": "app:1", "env": env}]}),
    ));
    c.settle();
    let pod = &c.pods_of("default", "app")[0];
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "CreateContainerConfigError", "{pod}");
    assert_eq!(waiting["message"], "secret \"db\" not found");
    assert!(!available(&c.get("apps", "deployments", "default", "app")));
    c.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"}, "data": {"other": "eA=="}}));
    c.settle();
    let pod = &c.pods_of("default", "app")[0];
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "couldn't find key password in Secret default/db"
    );
    c.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"}, "data": {"password": "eA=="}}));
    c.settle();
    assert!(available(&c.get("apps", "deployments", "default", "app")));
}

#[test]
fn a_missing_configmap_volume_keeps_the_pod_creating() {
    let mut c = Cluster::flannel();
    c.node("n1", json!({}));
    c.put(deployment(
        "app",
        json!({"containers": [{"name": "app", "image": "app:1"}],
               "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}]}),
    ));
    c.settle();
    let pod = &c.pods_of("default", "app")[0];
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        c.event("default", name, "FailedMount").as_deref(),
        Some("MountVolume.SetUp failed for volume \"cfg\" : configmap \"settings\" not found")
    );
}

#[test]
fn a_missing_service_account_refuses_the_pod() {
    let mut c = Cluster::flannel();
    c.node("n1", json!({}));
    c.put(deployment(
        "app",
        json!({"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}),
    ));
    c.settle();
    assert!(c.pods_of("default", "app").is_empty());
    let d = c.get("apps", "deployments", "default", "app");
    let failure = c.condition(&d, "ReplicaFailure");
    assert_eq!(failure["reason"], "FailedCreate", "{d}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .ends_with("is forbidden: error looking up service account default/app: serviceaccount \"app\" not found"),
        "{failure}"
    );
}

#[test]
fn images_outside_the_allowed_registries_are_not_pulled() {
    let mut c = Cluster::new(Behaviour {
        cni_daemonset: None,
        allowed_images: Some(vec!["registry.rack.internal/".into()]),
        ..Behaviour::uniform(Duration::ZERO)
    });
    c.node("n1", json!({}));
    c.put(deployment(
        "app",
        json!({"containers": [{"name": "app", "image": "docker.io/library/nginx:1"}]}),
    ));
    c.settle();
    let pod = &c.pods_of("default", "app")[0];
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ImagePullBackOff",
        "{pod}"
    );
    c.put(deployment(
        "mirrored",
        json!({"containers": [{"name": "m", "image": "registry.rack.internal/library/nginx:1"}]}),
    ));
    c.settle();
    assert!(available(&c.get("apps", "deployments", "default", "mirrored")));
}

#[test]
fn host_ports_clash_on_one_node() {
    let mut c = Cluster::flannel();
    c.node("n1", json!({}));
    let spec =
        json!({"hostNetwork": true, "containers": [{"name": "a", "image": "a:1", "ports": [{"containerPort": 9090}]}]});
    c.put(deployment("first", spec.clone()));
    c.settle();
    c.put(deployment("second", spec));
    c.settle();
    assert!(available(&c.get("apps", "deployments", "default", "first")));
    let pod = &c.pods_of("default", "second")[0];
    let msg = c.condition(pod, "PodScheduled")["message"].to_string();
    assert!(
        msg.contains("1 node(s) didn't have free ports for the requested pod ports"),
        "{msg}"
    );
}

/// A source-controller as upstream installs it, on a node with its own CNI.
fn flux_without(c: &mut Cluster, missing_crd: &str) {
    c.node("cp-1", json!({"node-role.kubernetes.io/control-plane": ""}));
    let missing = missing_crd.to_owned();
    c.flux(move |o| o["kind"] == "CustomResourceDefinition" && o["metadata"]["name"] == json!(missing));
}

#[test]
fn source_controller_without_the_bucket_crd_crash_loops_and_readies_nothing() {
    let mut c = Cluster::flannel();
    flux_without(&mut c, "buckets.source.toolkit.fluxcd.io");
    c.put(
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                 "metadata": {"name": "flux-system", "namespace": "flux-system"},
                 "spec": {"interval": "1m", "url": "https://git.example/org/repo.git"}}),
    );
    c.settle();
    let pod = &c.pods_of("flux-system", "source-controller")[0];
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff", "{pod}");
    let why = cs["lastState"]["terminated"]["message"].as_str().unwrap();
    assert!(
        why.contains("no matches for kind \"Bucket\" in version \"source.toolkit.fluxcd.io/v1\""),
        "{why}"
    );
    let repo = c.get(
        "source.toolkit.fluxcd.io",
        "gitrepositories",
        "flux-system",
        "flux-system",
    );
    assert!(!c.ready(&repo), "{repo}");
    assert!(!available(&c.get(
        "apps",
        "deployments",
        "flux-system",
        "source-controller"
    )));
    // kustomize-controller watches Buckets too (its Kustomization's sourceRef kinds).
    let pod = &c.pods_of("flux-system", "kustomize-controller")[0];
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
    // helm-controller does not: upstream watches HelmChart and OCIRepository only.
    assert!(available(&c.get(
        "apps",
        "deployments",
        "flux-system",
        "helm-controller"
    )));
}

#[test]
fn a_flux_controller_without_rbac_crash_loops() {
    let mut c = Cluster::flannel();
    c.node("cp-1", json!({}));
    c.flux(|o| o["kind"] == "ClusterRoleBinding");
    c.settle();
    let pod = &c.pods_of("flux-system", "helm-controller")[0];
    let why = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"].to_string();
    assert!(
        why.contains("system:serviceaccount:flux-system:helm-controller"),
        "{why}"
    );
}

fn ssh_repo(c: &mut Cluster, data: Value) -> Value {
    c.node("cp-1", json!({}));
    c.flux(|_| false);
    c.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flux-system", "namespace": "flux-system"}, "data": data}));
    c.put(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                 "metadata": {"name": "flux-system", "namespace": "flux-system"},
                 "spec": {"interval": "1m", "url": "ssh://git@github.com/org/gitops.git", "secretRef": {"name": "flux-system"}}}));
    c.settle();
    c.get(
        "source.toolkit.fluxcd.io",
        "gitrepositories",
        "flux-system",
        "flux-system",
    )
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn an_ssh_git_repository_needs_known_hosts_for_its_host() {
    let mut c = Cluster::flannel();
    let repo = ssh_repo(&mut c, json!({"identity": b64("-----BEGIN OPENSSH PRIVATE KEY-----")}));
    let ready = c.condition(&repo, "Ready");
    assert_eq!(ready["status"], "False", "{repo}");
    assert_eq!(ready["reason"], "AuthenticationFailed");
    assert_eq!(
        ready["message"],
        "failed to configure authentication options: invalid 'ssh' auth option: 'known_hosts' is required"
    );

    let mut c = Cluster::flannel();
    let repo = ssh_repo(
        &mut c,
        json!({"identity": b64("key"), "known_hosts": b64("gitlab.com ssh-ed25519 AAAA\n")}),
    );
    assert!(
        c.condition(&repo, "Ready")["message"]
            .to_string()
            .contains("knownhosts: key is unknown"),
        "{repo}"
    );

    let mut c = Cluster::flannel();
    let repo = ssh_repo(
        &mut c,
        json!({"identity": b64("key"), "known_hosts": b64("github.com ssh-ed25519 AAAA\n")}),
    );
    assert!(c.ready(&repo), "{repo}");
}

fn cilium_release(values: Value) -> Cluster {
    let mut c = Cluster::cilium();
    c.node("cp-1", json!({"node-role.kubernetes.io/control-plane": ""}));
    c.flux(|_| false);
    // The controllers must run before any CNI: host network, as bootstrap patches them (ports
    // dropped here: upstream's clash on one host, which bootstrap makes distinct).
    for name in [
        "source-controller",
        "kustomize-controller",
        "helm-controller",
        "notification-controller",
    ] {
        let mut d = c.get("apps", "deployments", "flux-system", name);
        d["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        d["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([]);
        d["spec"]["template"]["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        c.put(d);
    }
    c.put(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
                 "metadata": {"name": "cilium", "namespace": "flux-system"}, "spec": {"url": "https://helm.cilium.io"}}));
    c.put(json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                 "metadata": {"name": "cilium", "namespace": "kube-system"},
                 "spec": {"chart": {"spec": {"chart": "cilium", "version": "1.18.4",
                                             "sourceRef": {"kind": "HelmRepository", "name": "cilium", "namespace": "flux-system"}}},
                          "values": values}}));
    c.settle();
    c
}

#[test]
fn a_cilium_release_with_values_the_schema_refuses_is_not_installed() {
    let c = cilium_release(json!({"kubeProxyReplacement": 5}));
    let hr = c.get("helm.toolkit.fluxcd.io", "helmreleases", "kube-system", "cilium");
    let ready = c.condition(&hr, "Ready");
    assert_eq!(ready["status"], "False", "{hr}");
    let msg = ready["message"].as_str().unwrap();
    assert!(msg.contains("values don't meet the specifications of the schema(s) in the following chart(s):\ncilium:\n- kubeProxyReplacement: "), "{msg}");
    assert!(
        c.store
            .get(&GroupResource::new("apps", "daemonsets"), "kube-system", "cilium")
            .is_none()
    );
    assert!(!c.ready(&c.get("", "nodes", "", "cp-1")));
}

#[test]
fn a_valid_cilium_release_installs_the_cni_and_nodes_get_ready() {
    let c = cilium_release(json!({"kubeProxyReplacement": true, "operator": {"replicas": 1}}));
    let chart = c.get(
        "source.toolkit.fluxcd.io",
        "helmcharts",
        "flux-system",
        "kube-system-cilium",
    );
    assert!(c.ready(&chart), "{chart}");
    let hr = c.get("helm.toolkit.fluxcd.io", "helmreleases", "kube-system", "cilium");
    assert!(c.ready(&hr), "{hr}");
    assert!(c.ready(&c.get("", "nodes", "", "cp-1")));
    for sa in ["cilium", "cilium-operator", "cilium-envoy"] {
        c.get("", "serviceaccounts", "kube-system", sa);
    }
}

#[test]
fn the_argo_cd_release_creates_the_workloads_the_chart_names() {
    let mut c = Cluster::flannel();
    c.node("cp-1", json!({}));
    c.flux(|_| false);
    c.put(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}, "status": {"phase": "Active"}}),
    );
    c.put(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
                 "metadata": {"name": "argo-cd", "namespace": "flux-system"}, "spec": {"url": "https://argoproj.github.io/argo-helm"}}));
    c.put(json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                 "metadata": {"name": "argo-cd", "namespace": "argocd"},
                 "spec": {"chart": {"spec": {"chart": "argo-cd", "version": "9.1.0",
                                             "sourceRef": {"kind": "HelmRepository", "name": "argo-cd", "namespace": "flux-system"}}}}}));
    c.settle();
    let server = c.get("apps", "deployments", "argocd", "argo-cd-server");
    assert!(available(&server), "{server}");
    c.get("apps", "deployments", "argocd", "argo-cd-repo-server");
    assert!(
        c.store
            .get(&GroupResource::new("apps", "deployments"), "argocd", "argocd-server")
            .is_none()
    );
}

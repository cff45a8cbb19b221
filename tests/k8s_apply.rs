//! Apply/wait/plan against the Kubernetes API simulator over real HTTPS with
//! client-certificate auth, using real upstream CRDs (Flux, Gateway API).

use std::path::PathBuf;
use std::time::Duration;

use bootstrap::k8s::{Action, ApplyOpts, Client, apply_manifests, wait};
use xtask::kube_sim::{KubeSim, SimOptions};

const T: Duration = Duration::from_secs(10);

/// Shared reference material, from this checkout or a worktree beside it.
fn shared(rel: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|b| b.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()))
}

fn read_shared(rel: &str) -> String {
    std::fs::read_to_string(shared(rel)).unwrap()
}

async fn start() -> (KubeSim, Client, tempfile::TempDir) {
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, sim.admin_kubeconfig()).unwrap();
    let client = Client::from_kubeconfig(&path).await.unwrap();
    (sim, client, dir)
}

fn plan() -> ApplyOpts {
    ApplyOpts {
        dry_run: true,
        ..ApplyOpts::default()
    }
}

static INSTALL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

const FLUX_OBJECTS: &str = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: platform, namespace: flux-system}
spec:
  interval: 1m
  url: https://git.example.invalid/platform.git
  ref: {branch: main}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: platform, namespace: flux-system}
spec:
  interval: 10m
  path: ./clusters/prod
  prune: true
  sourceRef: {kind: GitRepository, name: platform}
---
apiVersion: v1
kind: Namespace
metadata: {name: flux-system}
"#;

#[tokio::test]
async fn upstream_crds_and_their_custom_resources_apply_establish_and_converge() {
    let (sim, client, _dir) = start().await;
    let yaml = [
        read_shared("crds/flux/source.toolkit.fluxcd.io_gitrepositories.v1.9.0.yaml"),
        read_shared("crds/flux/kustomize.toolkit.fluxcd.io_kustomizations.v1.9.0.yaml"),
        FLUX_OBJECTS.to_owned(),
    ]
    .join("\n---\n");

    // Plan on an empty cluster: everything would be created, nothing is written.
    sim.clear_requests();
    let planned = apply_manifests(&client, &yaml, &plan()).await.unwrap();
    assert_eq!(planned.len(), 5, "{planned:?}");
    assert!(planned.iter().all(|c| c.action == Action::Create));
    assert!(
        sim.requests().iter().all(|r| !r.mutating),
        "plan mode wrote to the cluster"
    );
    assert!(
        sim.object(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "gitrepositories.source.toolkit.fluxcd.io"
        )
        .is_none()
    );

    // Apply in one go: Namespace, then CRDs (waited for), then the custom resources.
    let applied = apply_manifests(&client, &yaml, &ApplyOpts::default()).await.unwrap();
    let order: Vec<String> = applied.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        order,
        [
            "create Namespace flux-system",
            "create CustomResourceDefinition gitrepositories.source.toolkit.fluxcd.io",
            "create CustomResourceDefinition kustomizations.kustomize.toolkit.fluxcd.io",
            "create GitRepository flux-system/platform",
            "create Kustomization flux-system/platform",
        ]
    );
    wait::crd_established(&client, "kustomizations.kustomize.toolkit.fluxcd.io", T)
        .await
        .unwrap();
    wait::namespace_active(&client, "flux-system", T).await.unwrap();
    let managed = sim
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "platform",
        )
        .unwrap();
    assert_eq!(managed["metadata"]["managedFields"][0]["manager"], "bootstrap");

    // The CRD's kinds are discoverable like on a real API server.
    let discovery = kube::Discovery::new(client.kube().clone()).run().await.unwrap();
    let group = discovery.get("source.toolkit.fluxcd.io").expect("group discovered");
    let (ar, _) = group.recommended_kind("GitRepository").expect("kind discovered");
    assert_eq!((ar.version.as_str(), ar.plural.as_str()), ("v1", "gitrepositories"));

    // Flux objects become Ready once Flux's controllers run: upstream's installation (its other
    // CRDs, controllers, RBAC) on a node with the distribution's own CNI.
    sim.set_behaviour(xtask::kube_sim::Behaviour {
        cni_daemonset: None,
        ..Default::default()
    });
    sim.register_node("cp-1");
    let install: Vec<&str> = INSTALL
        .get_or_init(|| read_shared("flux/v2.9.0/install.yaml"))
        .split("\n---\n")
        .filter(|d| {
            !d.contains("name: gitrepositories.source")
                && !d.contains("name: kustomizations.kustomize")
                && !d.starts_with("apiVersion: v1\nkind: Namespace\n")
        })
        .collect();
    apply_manifests(&client, &install.join("\n---\n"), &ApplyOpts::default())
        .await
        .unwrap();
    wait::ready(
        &client,
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
        Some("flux-system"),
        "platform",
        T,
    )
    .await
    .unwrap();
    wait::ready(
        &client,
        "source.toolkit.fluxcd.io/v1",
        "GitRepository",
        Some("flux-system"),
        "platform",
        T,
    )
    .await
    .unwrap();

    // Converged: plan and re-apply list nothing; plan writes nothing.
    sim.clear_requests();
    assert_eq!(apply_manifests(&client, &yaml, &plan()).await.unwrap(), vec![]);
    assert!(sim.requests().iter().all(|r| !r.mutating));
    assert!(
        sim.requests().iter().any(|r| r.dry_run),
        "plan mode must ask the server (dryRun=All)"
    );
    assert_eq!(
        apply_manifests(&client, &yaml, &ApplyOpts::default()).await.unwrap(),
        vec![]
    );

    // A changed field shows up in the plan by path, and is not applied.
    let changed = yaml.replace("interval: 10m", "interval: 5m");
    let planned = apply_manifests(&client, &changed, &plan()).await.unwrap();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].action, Action::Update);
    assert_eq!(planned[0].fields, vec!["spec.interval"]);
    let live = sim
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "platform",
        )
        .unwrap();
    assert_eq!(live["spec"]["interval"], "10m");
}

const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: apps, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: "registry.example.invalid/web:1.0"}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: cilium, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: cilium}}
  template:
    metadata: {labels: {k8s-app: cilium}}
    spec:
      hostNetwork: true
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: "quay.io/cilium/cilium:v1.18.0"}]
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: apps}
type: Opaque
stringData: {password: not-a-real-password}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: apps}
data: {token: dG9rZW4tdmFsdWU=}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: apps}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web, namespace: apps}
data: {mode: production}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"#;

#[tokio::test]
async fn namespaces_secrets_deployment_and_daemonset_apply_wait_and_converge() {
    let (sim, client, _dir) = start().await;
    sim.register_node("cp-1");
    sim.register_node("worker-1");

    // The Namespace comes last in the file but is applied first.
    let applied = apply_manifests(&client, WORKLOAD, &ApplyOpts::default()).await.unwrap();
    assert_eq!(applied.len(), 7, "{applied:?}");
    assert_eq!(applied[0].to_string(), "create Namespace apps");
    assert!(applied.iter().all(|c| c.action == Action::Create));
    let secret = sim.object("", "secrets", "apps", "db").unwrap();
    assert!(secret.get("stringData").is_none());
    assert_eq!(secret["data"]["password"], "bm90LWEtcmVhbC1wYXNzd29yZA==");

    wait::namespace_active(&client, "apps", T).await.unwrap();
    wait::ready(&client, "apps/v1", "Deployment", Some("apps"), "web", T)
        .await
        .unwrap();
    wait::ready(&client, "apps/v1", "DaemonSet", Some("kube-system"), "cilium", T)
        .await
        .unwrap();
    // Nodes get Ready once the CNI DaemonSet is available.
    wait::nodes_ready(&client, &["cp-1", "worker-1"], T).await.unwrap();

    // Converged.
    assert_eq!(apply_manifests(&client, WORKLOAD, &plan()).await.unwrap(), vec![]);
    let rv = sim.resource_version();
    assert_eq!(
        apply_manifests(&client, WORKLOAD, &ApplyOpts::default()).await.unwrap(),
        vec![]
    );
    assert_eq!(sim.resource_version(), rv, "a no-op apply must not write");

    // Changes are listed by path (Secret keys, never values), then applied.
    let changed = WORKLOAD
        .replace("replicas: 2", "replicas: 3")
        .replace("not-a-real-password", "another-fake-password");
    let planned = apply_manifests(&client, &changed, &plan()).await.unwrap();
    let shown: Vec<String> = planned.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "update Deployment apps/web (spec.replicas)",
            "update Secret apps/db (data.password)"
        ]
    );
    let applied = apply_manifests(&client, &changed, &ApplyOpts::default()).await.unwrap();
    assert_eq!(applied, planned);
    wait::ready(&client, "apps/v1", "Deployment", Some("apps"), "web", T)
        .await
        .unwrap();
    let live = sim.object("apps", "deployments", "apps", "web").unwrap();
    assert_eq!(live["metadata"]["generation"], 2);
    assert_eq!(live["status"]["availableReplicas"], 3);
}

#[tokio::test]
async fn whole_gateway_api_release_applies_and_serves_its_kinds() {
    let (_sim, client, _dir) = start().await;
    let dir = shared("crds/gateway-api-v1.6.1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut yaml = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    yaml.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: cilium}
spec: {controllerName: io.cilium/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: public}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#,
    );
    let applied = apply_manifests(&client, &yaml, &ApplyOpts::default()).await.unwrap();
    let crds = applied.iter().filter(|c| c.kind == "CustomResourceDefinition").count();
    assert_eq!(crds, 10, "{applied:?}");
    assert!(applied.iter().any(|c| c.kind == "ValidatingAdmissionPolicy"));
    assert!(applied.iter().any(|c| c.to_string() == "create HTTPRoute default/web"));
    assert!(applied.iter().any(|c| c.to_string() == "create GatewayClass cilium"));
    assert_eq!(apply_manifests(&client, &yaml, &plan()).await.unwrap(), vec![]);
}

const ARGO: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: applications.argoproj.io}
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Application, listKind: ApplicationList, plural: applications, singular: application, shortNames: [app]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: Namespace
metadata: {name: argocd}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: root, namespace: argocd}
spec:
  project: default
  source: {repoURL: "https://git.example.invalid/apps.git", path: apps, targetRevision: main}
  destination: {server: "https://kubernetes.default.svc", namespace: argocd}
"#;

#[tokio::test]
async fn argo_cd_application_becomes_healthy() {
    let (sim, client, _dir) = start().await;
    let applied = apply_manifests(&client, ARGO, &ApplyOpts::default()).await.unwrap();
    assert_eq!(applied.len(), 3, "{applied:?}");
    wait::ready(
        &client,
        "argoproj.io/v1alpha1",
        "Application",
        Some("argocd"),
        "root",
        T,
    )
    .await
    .unwrap();
    let app = sim.object("argoproj.io", "applications", "argocd", "root").unwrap();
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    // Status written by the controller survives a re-apply, which changes nothing.
    assert_eq!(
        apply_manifests(&client, ARGO, &ApplyOpts::default()).await.unwrap(),
        vec![]
    );
    let app = sim.object("argoproj.io", "applications", "argocd", "root").unwrap();
    assert_eq!(app["status"]["health"]["status"], "Healthy");
}

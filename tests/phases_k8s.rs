//! Phases 0-3 of `up` through the engine against the Kubernetes API simulator
//! (real HTTPS, client certificates, server-side apply; the simulator plays
//! kube-controller-manager, the kubelets, helm-controller and the GitOps
//! controllers), with the real upstream CRDs from `../shared/crds`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use base64::Engine;
use bootstrap::artifacts::ArtifactStore;
use bootstrap::engine::progress::{Reporter, Style};
use bootstrap::engine::{self, Phase, RunCtx};
use bootstrap::k8s::{ApplyOpts, Client, apply_manifests};
use bootstrap::phases::{ClusterRun, KUBECONFIG, Timeouts, crds, gitops, prerequisites};
use bootstrap::state::StateStore;
use serde_json::Value;
use xtask::kube_sim::{Behaviour, KubeSim, NodeRegistration, SimOptions};

const AGE_KEY: &str = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
/// TEST-ONLY deploy key (ed25519) and its public key, as `identity.pub` holds it.
const DEPLOY_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDnnpyC8o7U3BydIdjxkki2/6ZP+ohGS7EKVclQY7GvYAAAAIiGIZqmhiGa
pgAAAAtzc2gtZWQyNTUxOQAAACDnnpyC8o7U3BydIdjxkki2/6ZP+ohGS7EKVclQY7GvYA
AAAEAh7ujyAYEQ4q4EEdlhBgMLUpJOYjr3SeHKW8wo2KMg++eenILyjtTcHJ0h2PGSSLb/
pk/6iEZLsQpVyVBjsa9gAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----";
const DEPLOY_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOeenILyjtTcHJ0h2PGSSLb/pk/6iEZLsQpVyVBjsa9g\n";
/// The simulated Git host's key, given in the inventory (no scan).
const GIT_KNOWN_HOSTS: &str =
    "git.sim.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBngy5v50zFp78pZ/CYt9N4uXsiQ2woBvVRRfXmPG4+/";
const NODES: [&str; 5] = ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"];

/// Every pinned CRD file, flat, as `--artifacts DIR` holds them (copies: tests may tamper with them).
fn artifacts(dir: &Path) {
    xtask::sim_rack::offline_crds(dir).unwrap();
}

struct Env {
    sim: KubeSim,
    run: Arc<ClusterRun>,
    dir: tempfile::TempDir,
}

impl Env {
    /// The simulated rack's inventory with `engine`, extra `[cluster.gitops]`
    /// lines, and the artifacts dir prepared by `prepare`.
    async fn start(engine: &str, gitops_extra: &str, prepare: impl FnOnce(&Path)) -> Self {
        Self::start_with(engine, gitops_extra, prepare, Duration::from_secs(20)).await
    }

    /// [`Env::start`] with a given wait timeout.
    async fn start_with(engine: &str, gitops_extra: &str, prepare: impl FnOnce(&Path), t: Duration) -> Self {
        Self::start_edited(engine, gitops_extra, |text| text, prepare, t).await
    }

    /// [`Env::start_with`] with the inventory text further changed by `edit`.
    async fn start_edited(
        engine: &str,
        gitops_extra: &str,
        edit: impl FnOnce(String) -> String,
        prepare: impl FnOnce(&Path),
        t: Duration,
    ) -> Self {
        let d = Duration::from_millis(20);
        let sim = KubeSim::start(SimOptions {
            behaviour: Behaviour::uniform(d),
            ..SimOptions::default()
        })
        .await
        .unwrap();
        // As Talos' kubelets register them: control planes labelled and tainted.
        for (i, n) in NODES.into_iter().enumerate() {
            let mut reg = NodeRegistration {
                name: n.to_owned(),
                internal_ip: Some(std::net::IpAddr::from([127, 1, 0, 11 + i as u8])),
                ..Default::default()
            };
            if n.starts_with("cp-") {
                let role = "node-role.kubernetes.io/control-plane";
                reg.labels.insert(role.into(), String::new());
                reg.taints.push((role.into(), String::new(), "NoSchedule".into()));
            }
            sim.register(reg);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("age.key"), format!("{AGE_KEY}\n")).unwrap();
        std::fs::write(dir.path().join("deploy.key"), format!("{DEPLOY_KEY}\n")).unwrap();
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/simulated.toml"))
            .unwrap()
            .replace("engine = \"flux\"", &format!("engine = \"{engine}\""))
            .replace("https://git.sim.invalid/", "ssh://git@git.sim.invalid/")
            .replace(
                "path = \"./clusters/sim\"\n",
                &format!(
                    "path = \"./clusters/sim\"\ndeploy_key = \"file:deploy.key\"\nknown_hosts = {GIT_KNOWN_HOSTS:?}\n{gitops_extra}\n[cluster.secrets]\nsops_age_key = \"file:age.key\"\n"
                ),
            );
        let inv = dir.path().join("rack.toml");
        std::fs::write(&inv, edit(text)).unwrap();
        let cluster = bootstrap::inventory::load(&inv).unwrap().inventory.clusters.remove(0);
        let offline = dir.path().join("artifacts");
        std::fs::create_dir_all(&offline).unwrap();
        prepare(&offline);
        let run = Arc::new(ClusterRun {
            cluster,
            inventory_dir: dir.path().to_path_buf(),
            state_root: dir.path().join("state"),
            artifacts: ArtifactStore {
                offline: Some(offline),
                cache: dir.path().join("state/artifacts"),
            },
            limit: Default::default(),
            merge_kubeconfig: false,
            accept_new: false,
            require_identity: false,
            timeouts: Timeouts {
                node: t,
                api: t,
                workload: t,
                gitops: t,
            },
            restore: None,
            force_unlock: false,
        });
        let env = Self { sim, run, dir };
        let ctx = env.ctx();
        ctx.state
            .write(|s| s.put_artifact(KUBECONFIG, "kubeconfig", env.sim.admin_kubeconfig().as_bytes()))
            .await
            .unwrap();
        env
    }

    /// A fresh run context (the state lock is held until it is dropped).
    fn ctx(&self) -> RunCtx {
        RunCtx {
            reporter: Arc::new(Reporter::new(Style::Silent)),
            state: bootstrap::engine::SharedState::new(
                StateStore::open(&self.run.state_root, &self.run.cluster.name).unwrap(),
            ),
            concurrency: 4,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Phases 0-3.
    fn phases(&self) -> Vec<Box<dyn Phase>> {
        vec![
            Box::new(prerequisites::Prerequisites::new(self.run.clone())),
            Box::new(crds::Crds::new(self.run.clone())),
            Box::new(bootstrap::phases::core::Core::new(self.run.clone())),
            Box::new(gitops::Gitops::new(self.run.clone())),
        ]
    }

    async fn up(&self) -> Result<(), engine::PhaseError> {
        engine::run(&self.phases(), &self.ctx()).await
    }

    fn object(&self, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.sim.object(group, resource, ns, name)
    }

    fn helm_release(&self, ns: &str, name: &str) -> Option<Value> {
        self.object("helm.toolkit.fluxcd.io", "helmreleases", ns, name)
    }

    fn writes(&self) -> Vec<String> {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.mutating)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    async fn client(&self) -> Client {
        let path = self.dir.path().join("admin.kubeconfig");
        std::fs::write(&path, self.sim.admin_kubeconfig()).unwrap();
        Client::from_kubeconfig(&path).await.unwrap()
    }
}

fn objects_ready(o: &Value) -> bool {
    bootstrap::phases::objects::is_ready(o["kind"].as_str().unwrap_or_default(), o)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flux_takes_over_and_a_second_run_changes_nothing() {
    let env = Env::start("flux", "", artifacts).await;

    let plan = engine::plan_all(&env.phases(), &env.ctx()).await.unwrap();
    let plan: Vec<String> = plan.iter().map(|a| a.step.to_string()).collect();
    for want in [
        "create Namespace flux-system",
        "create Secret flux-system/sops-age",
        "create CustomResourceDefinition helmreleases.helm.toolkit.fluxcd.io",
        "create Deployment flux-system/helm-controller",
        "create Deployment flux-system/notification-controller",
        "create CustomResourceDefinition buckets.source.toolkit.fluxcd.io",
        "create CustomResourceDefinition externalartifacts.source.toolkit.fluxcd.io",
        "create ResourceQuota flux-system/critical-pods",
        "create HelmRelease kube-system/cilium",
        "create Kustomization flux-system/flux-system",
    ] {
        assert!(plan.iter().any(|p| p == want), "plan lacks {want:?}: {plan:#?}");
    }
    let text = plan.join("\n");
    assert!(!text.contains("AGE-SECRET-KEY") && !text.contains("OPENSSH PRIVATE KEY"));
    assert!(env.writes().is_empty(), "planning wrote: {:?}", env.writes());

    env.up().await.unwrap();

    let age = env
        .object("", "secrets", "flux-system", "sops-age")
        .expect("sops-age secret");
    assert_eq!(age["data"]["age.agekey"], b64(AGE_KEY));
    let key = env
        .object("", "secrets", "flux-system", "flux-system")
        .expect("deploy key secret");
    assert_eq!(key["data"]["identity"], b64(DEPLOY_KEY));
    assert_eq!(
        key["data"]["identity.pub"],
        b64(DEPLOY_PUB),
        "as `flux bootstrap` writes it"
    );
    assert_eq!(key["data"]["known_hosts"], b64(&format!("{GIT_KNOWN_HOSTS}\n")));
    assert!(
        env.object("", "secrets", "external-secrets", "vault-token").is_none(),
        "unset references are skipped"
    );
    let helm = env
        .object("apps", "deployments", "flux-system", "helm-controller")
        .unwrap();
    assert_eq!(helm["spec"]["template"]["spec"]["hostNetwork"], true);
    let cilium = env.helm_release("kube-system", "cilium").expect("cilium HelmRelease");
    assert_eq!(cilium["spec"]["chart"]["spec"]["version"], "1.18.4");
    assert_eq!(cilium["spec"]["values"]["k8sServicePort"], 7445, "KubePrism on Talos");
    assert!(
        env.helm_release("kube-system", "coredns").is_none(),
        "Talos runs its own CoreDNS"
    );
    assert!(env.helm_release("argocd", "argo-cd").is_none());
    let ds = env.object("apps", "daemonsets", "kube-system", "cilium").unwrap();
    assert!(ds["status"]["numberAvailable"].as_i64() >= Some(1), "{ds}");
    let pool = env
        .object("cilium.io", "ciliumloadbalancerippools", "", "lb-pool")
        .expect("the inventory's lb_pool as a Cilium pool");
    assert_eq!(pool["spec"]["blocks"][0]["start"], "127.1.0.200");
    let root = env
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "flux-system",
        )
        .unwrap();
    assert_eq!(root["spec"]["decryption"]["secretRef"]["name"], "sops-age");
    assert_eq!(root["status"]["conditions"][0]["status"], "True");
    let repo = env
        .object(
            "source.toolkit.fluxcd.io",
            "gitrepositories",
            "flux-system",
            "flux-system",
        )
        .unwrap();
    assert_eq!(repo["spec"]["secretRef"]["name"], "flux-system");
    assert!(gitops::watch_hint(&env.run.cluster).contains("flux get kustomizations"));

    // Converged: nothing planned, nothing written.
    env.sim.clear_requests();
    let plan = engine::plan_all(&env.phases(), &env.ctx()).await.unwrap();
    assert!(plan.is_empty(), "converged cluster, plan: {plan:#?}");
    env.up().await.unwrap();
    assert_eq!(env.writes(), Vec::<String>::new(), "the second run wrote");

    // Flux adopts the root from the repository (its label, its path): left alone.
    let adopted = r#"
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: flux-system
  namespace: flux-system
  labels: {kustomize.toolkit.fluxcd.io/name: flux-system, kustomize.toolkit.fluxcd.io/namespace: flux-system}
spec: {interval: 10m, path: ./clusters/sim/v2, prune: true, sourceRef: {kind: GitRepository, name: flux-system}}
"#;
    let opts = ApplyOpts {
        field_manager: "kustomize-controller".into(),
        ..ApplyOpts::default()
    };
    apply_manifests(&env.client().await, adopted, &opts).await.unwrap();
    env.sim.clear_requests();
    let plan = engine::plan_all(&env.phases(), &env.ctx()).await.unwrap();
    assert!(plan.is_empty(), "objects Flux manages are not planned: {plan:#?}");
    env.up().await.unwrap();
    assert_eq!(env.writes(), Vec::<String>::new());
    let root = env
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "flux-system",
        )
        .unwrap();
    assert_eq!(root["spec"]["path"], "./clusters/sim/v2", "Flux's version stays");
}

/// Runs up with a broken artifacts dir; asserts the error and that no CRD (and nothing after) was applied.
async fn broken_artifacts(prepare: impl FnOnce(&Path), file: &str, why: &str) {
    let env = Env::start("flux", "", prepare).await;
    let err = env.up().await.unwrap_err().to_string();
    assert!(err.contains(file) && err.contains(why), "{err}");
    assert!(err.contains("cluster sim") && err.contains("phase crds"), "{err}");
    let crd_writes: Vec<String> = env
        .writes()
        .into_iter()
        .filter(|w| w.contains("customresourcedefinitions") || w.contains("deployments"))
        .collect();
    assert_eq!(crd_writes, Vec::<String>::new(), "nothing of phase 1 or later applied");
    assert!(
        env.object(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "gitrepositories.source.toolkit.fluxcd.io"
        )
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_crd_artifact_fails_clearly_and_applies_nothing() {
    let file = "gateway.networking.k8s.io_httproutes.yaml";
    broken_artifacts(
        |d| {
            artifacts(d);
            std::fs::remove_file(d.join(file)).unwrap();
        },
        file,
        "not in",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_crd_artifact_fails_its_checksum_and_applies_nothing() {
    let file = "gateway.networking.k8s.io_gateways.yaml";
    broken_artifacts(
        |d| {
            artifacts(d);
            let mut text = std::fs::read_to_string(d.join(file)).unwrap();
            text.push_str("# tampered\n");
            std::fs::write(d.join(file), text).unwrap();
        },
        file,
        "checksum mismatch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn argocd_takes_over_with_a_root_application() {
    let env = Env::start("argocd", "", artifacts).await;
    env.up().await.unwrap();
    let argo = env
        .helm_release("argocd", "argo-cd")
        .expect("Argo CD installed by helm-controller");
    assert_eq!(argo["spec"]["chart"]["spec"]["chart"], "argo-cd");
    let app = env
        .object("argoproj.io", "applications", "argocd", "root")
        .expect("root Application");
    assert_eq!(app["spec"]["source"]["path"], "./clusters/sim");
    assert_eq!(app["status"]["health"]["status"], "Healthy");
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    // Phase 2 waited on the Deployments the chart renders (release `argo-cd`).
    for d in ["argo-cd-server", "argo-cd-repo-server"] {
        let dep = env
            .object("apps", "deployments", "argocd", d)
            .unwrap_or_else(|| panic!("{d}"));
        assert!(objects_ready(&dep), "{d}: {dep}");
    }
    let creds = env.object("", "secrets", "argocd", "root-repository").unwrap();
    assert_eq!(creds["data"]["sshPrivateKey"], b64(DEPLOY_KEY));
    assert!(
        env.object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "flux-system"
        )
        .is_none()
    );
    assert!(gitops::watch_hint(&env.run.cluster).contains("application root"));
    env.sim.clear_requests();
    env.up().await.unwrap();
    assert_eq!(env.writes(), Vec::<String>::new(), "the second run wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkouts_helm_release_is_the_source_of_truth() {
    let checkout = tempfile::tempdir().unwrap();
    let infra = checkout.path().join("infrastructure/cilium");
    std::fs::create_dir_all(&infra).unwrap();
    std::fs::write(
        infra.join("release.yaml"),
        r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: cilium-charts, namespace: flux-system}
spec: {interval: 1h, url: "https://charts.mirror.invalid/cilium"}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: cilium, namespace: kube-system}
spec:
  interval: 1h
  chart:
    spec:
      chart: cilium
      version: 1.18.9
      sourceRef: {kind: HelmRepository, name: cilium-charts, namespace: flux-system}
  values:
    operator: {replicas: 2}
"#,
    )
    .unwrap();
    let extra = format!("checkout = \"{}\"", checkout.path().display());
    let env = Env::start("flux", &extra, artifacts).await;
    env.up().await.unwrap();
    let cilium = env.helm_release("kube-system", "cilium").unwrap();
    assert_eq!(cilium["spec"]["chart"]["spec"]["version"], "1.18.9");
    assert_eq!(cilium["spec"]["values"]["operator"]["replicas"], 2);
    let repo = env
        .object(
            "source.toolkit.fluxcd.io",
            "helmrepositories",
            "flux-system",
            "cilium-charts",
        )
        .expect("the checkout's HelmRepository");
    assert_eq!(repo["spec"]["url"], "https://charts.mirror.invalid/cilium");
    let spegel = env.helm_release("spegel", "spegel").unwrap();
    assert_eq!(
        spegel["spec"]["chart"]["spec"]["version"], "0.3.0",
        "releases the checkout lacks keep phases/ defaults"
    );
}

/// A Deployment as a chart would leave it, never becoming Available while `hold` is "true".
fn held_operator(hold: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cilium-operator
  namespace: kube-system
  annotations: {{kube-sim.bootstrap.dev/hold: "{hold}"}}
spec:
  replicas: 1
  # The selector the cilium chart's operator Deployment has (immutable once created).
  selector: {{matchLabels: {{app.kubernetes.io/name: cilium-operator, app.kubernetes.io/instance: cilium}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: cilium-operator, app.kubernetes.io/instance: cilium}}}}
    spec: {{containers: [{{name: operator, image: sim.invalid/cilium-operator}}]}}
"#
    )
}

/// Phase 0's apply carries out the plan it is handed, not one it computes
/// again: a step taken out of the plan is not done, and what the plan holds is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phase_applies_the_plan_it_is_handed_and_nothing_else() {
    let env = Env::start("flux", "", artifacts).await;
    let ctx = env.ctx();
    let phase = prerequisites::Prerequisites::new(env.run.clone());
    let plan = phase.plan(&ctx).await.unwrap();
    let dropped = "create Secret flux-system/sops-age";
    assert!(plan.iter().any(|a| a.step.to_string() == dropped), "{plan:#?}");
    let kept: Vec<_> = plan.into_iter().filter(|a| a.step.to_string() != dropped).collect();
    phase.apply(&ctx, &kept).await.unwrap();
    assert!(
        env.object("", "namespaces", "", "flux-system").is_some(),
        "a planned object is created"
    );
    assert!(
        env.object("", "secrets", "flux-system", "sops-age").is_none(),
        "a step not in the plan is not carried out"
    );
    // Planned again, only the dropped step is left.
    let again = phase.plan(&ctx).await.unwrap();
    let again: Vec<String> = again.iter().map(|a| a.step.to_string()).collect();
    assert_eq!(again, vec![dropped.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workload_that_never_gets_ready_fails_naming_it_and_a_rerun_resumes() {
    let env = Env::start_with("flux", "", artifacts, Duration::from_secs(2)).await;
    let helm = ApplyOpts {
        field_manager: "helm".into(),
        ..ApplyOpts::default()
    };
    apply_manifests(&env.client().await, &held_operator("true"), &helm)
        .await
        .unwrap();

    let err = env.up().await.unwrap_err().to_string();
    assert!(
        err.contains("phase core")
            && err.contains("cluster sim")
            && err.contains("Deployment kube-system/cilium-operator"),
        "{err}"
    );

    // Everything was applied but the LB pool (its kind comes with the CNI);
    // only the wait remains, and the plan says so (with phase 3's objects and
    // the waits for them, which `up` carries out as well).
    let plan = engine::plan_all(&env.phases(), &env.ctx()).await.unwrap();
    let plan: Vec<String> = plan.iter().map(|a| format!("{}: {}", a.phase, a.step)).collect();
    assert!(
        plan.iter().all(|p| p.starts_with("core: wait for ")
            || p == "core: create CiliumLoadBalancerIPPool lb-pool"
            || p.starts_with("gitops: create ")
            || p.starts_with("gitops: wait for ")),
        "{plan:#?}"
    );
    assert!(
        plan.contains(&"core: wait for Deployment kube-system/cilium-operator to be ready".to_owned()),
        "{plan:#?}"
    );

    apply_manifests(&env.client().await, &held_operator("false"), &helm)
        .await
        .unwrap();
    env.up().await.unwrap();
    let root = env
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "flux-system",
        )
        .unwrap();
    assert_eq!(root["status"]["conditions"][0]["status"], "True");
}

#[test]
fn k3s_keeps_its_coredns_unless_disabled_and_charts_reach_the_api_through_the_endpoint() {
    use bootstrap::phases::{catalog, manifests};
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/rack-k3s.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let path = dir.path().join("k3s.toml");
        std::fs::write(&path, text).unwrap();
        bootstrap::inventory::load(&path).unwrap().inventory.clusters.remove(0)
    };
    let names = |c: &bootstrap::inventory::Cluster| -> Vec<String> {
        manifests::releases(&catalog::core(), c, None)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    let k3s = load(&base);
    // k3s v1.34 runs Spegel itself (embedded registry): no chart.
    assert_eq!(names(&k3s), ["cilium", "cert-manager", "external-secrets"]);
    let cilium = &manifests::releases(&catalog::core(), &k3s, None).unwrap()[0];
    let values = &cilium.objects[1]["spec"]["values"];
    assert_eq!(values["k8sServiceHost"], "198.18.0.11");
    assert_eq!(values["k8sServicePort"], 6443);

    let own_dns = base.replace(
        "[cluster.network]",
        "[cluster.k3s]\ndisable = [\"coredns\"]\n\n[cluster.network]",
    );
    let coredns = manifests::releases(&catalog::core(), &load(&own_dns), None).unwrap();
    let coredns = coredns.iter().find(|r| r.name == "coredns").expect("CoreDNS installed");
    assert_eq!(
        coredns.objects[1]["spec"]["values"]["service"]["clusterIP"], "10.43.0.10",
        "the 10th address of the service CIDR"
    );
}

/// A file of `../shared/` (beside the repository, or above a worktree).
fn shared(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared").join(rel))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("shared/{rel} not found beside or above the repository"))
}

/// The structural schema Cilium's CRD declares for `version`, as a JSON Schema.
fn crd_schema(file: &str, version: &str) -> jsonschema::Validator {
    let crd: Value =
        yaml_serde::from_str(&std::fs::read_to_string(shared(&format!("cilium/{file}"))).unwrap()).unwrap();
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} serves no {version}"));
    jsonschema::draft4::options()
        .build(&v["schema"]["openAPIV3Schema"])
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn schema_errors(schema: &jsonschema::Validator, obj: &Value) -> Vec<String> {
    schema
        .iter_errors(obj)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

const BGP_NETWORK: &str = "lb_pool = \"127.1.0.200-127.1.0.220\"\nbgp_asn = 64512\nbgp_peers = [{ address = \"127.1.0.1\", asn = 64513 }, { address = \"127.1.0.2\", asn = 64514 }]\n";

/// The inventory's lb_pool and BGP peers become Cilium objects that validate
/// against Cilium 1.18's CRDs, applied once Cilium's operator registered them;
/// every network value lands in `cluster-settings`, which the root Kustomization substitutes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inventorys_network_promises_become_cilium_objects_and_cluster_settings() {
    let edit = |t: String| t.replace("lb_pool = \"127.1.0.200-127.1.0.220\"\n", BGP_NETWORK);
    let env = Env::start_edited("flux", "", edit, artifacts, Duration::from_secs(20)).await;
    let plan = engine::plan_all(&env.phases(), &env.ctx()).await.unwrap();
    let plan: Vec<String> = plan.iter().map(|a| a.step.to_string()).collect();
    for want in [
        "create CiliumLoadBalancerIPPool lb-pool",
        "create CiliumBGPClusterConfig bgp",
        "create ConfigMap flux-system/cluster-settings",
        "create Namespace spegel",
    ] {
        assert!(plan.iter().any(|p| p == want), "plan lacks {want:?}: {plan:#?}");
    }
    env.up().await.unwrap();

    let cilium = "cilium.io";
    let pool = env
        .object(cilium, "ciliumloadbalancerippools", "", "lb-pool")
        .expect("the LB pool");
    assert_eq!(
        pool["spec"]["blocks"],
        serde_json::json!([{"start": "127.1.0.200", "stop": "127.1.0.220"}])
    );
    let cluster = env
        .object(cilium, "ciliumbgpclusterconfigs", "", "bgp")
        .expect("BGP cluster config");
    let instance = &cluster["spec"]["bgpInstances"][0];
    assert_eq!(instance["localASN"], 64512);
    let peers: Vec<(&str, i64)> = instance["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["peerAddress"].as_str().unwrap(), p["peerASN"].as_i64().unwrap()))
        .collect();
    assert_eq!(peers, [("127.1.0.1", 64513), ("127.1.0.2", 64514)]);
    let peer = env
        .object(cilium, "ciliumbgppeerconfigs", "", "bgp-peer")
        .expect("peer config");
    let adv = env
        .object(cilium, "ciliumbgpadvertisements", "", "bgp-loadbalancer")
        .expect("advertisement");
    // The peer config selects the advertisement, which advertises LoadBalancer IPs.
    let selector = &peer["spec"]["families"][0]["advertisements"]["matchLabels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(
            &adv["metadata"]["labels"][k], v,
            "the peer config selects the advertisement"
        );
    }
    assert_eq!(instance["peers"][0]["peerConfigRef"]["name"], "bgp-peer");
    let a = &adv["spec"]["advertisements"][0];
    assert_eq!(a["advertisementType"], "Service");
    assert_eq!(a["service"]["addresses"], serde_json::json!(["LoadBalancerIP"]));
    assert!(
        a.get("selector").is_some(),
        "without a selector no Service is advertised"
    );

    // Against Cilium's own structural schemas (v2, the storage version).
    for (file, obj) in [
        ("ciliumloadbalancerippools.yaml", &pool),
        ("ciliumbgpclusterconfigs.yaml", &cluster),
        ("ciliumbgppeerconfigs.yaml", &peer),
        ("ciliumbgpadvertisements.yaml", &adv),
    ] {
        assert_eq!(obj["apiVersion"], "cilium.io/v2");
        let errors = schema_errors(&crd_schema(file, "v2"), obj);
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
    let mut bad = pool.clone();
    bad["spec"]["blocks"][0]["start"] = serde_json::json!(200);
    assert!(
        !schema_errors(&crd_schema("ciliumloadbalancerippools.yaml", "v2"), &bad).is_empty(),
        "the schema check bites"
    );
    // The chart values turn the BGP control plane on, and validate against the chart's schema.
    let values = &env.helm_release("kube-system", "cilium").unwrap()["spec"]["values"];
    assert_eq!(values["bgpControlPlane"]["enabled"], true);
    let chart: Value =
        serde_json::from_str(&std::fs::read_to_string(shared("cilium/values.schema.json")).unwrap()).unwrap();
    let errors = schema_errors(&jsonschema::draft7::options().build(&chart).unwrap(), values);
    assert!(errors.is_empty(), "values.schema.json: {errors:#?}");

    let settings = env
        .object("", "configmaps", "flux-system", "cluster-settings")
        .expect("cluster-settings");
    for (k, v) in [
        ("CLUSTER_NAME", "sim"),
        ("CLUSTER_DOMAIN", "cluster.local"),
        ("CLUSTER_ENDPOINT", "127.1.0.10"),
        ("CLUSTER_VIP", "127.1.0.10"),
        ("NODE_CIDR", "127.1.0.0/24"),
        ("POD_CIDR", "10.244.0.0/16"),
        ("SERVICE_CIDR", "10.96.0.0/16"),
        ("LB_POOL", "127.1.0.200-127.1.0.220"),
        ("LB_POOL_START", "127.1.0.200"),
        ("LB_POOL_STOP", "127.1.0.220"),
        ("BGP_ASN", "64512"),
        ("BGP_PEER_2_ADDRESS", "127.1.0.2"),
        ("BGP_PEER_2_ASN", "64514"),
    ] {
        assert_eq!(settings["data"][k], v, "{k}");
    }
    let root = env
        .object(
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            "flux-system",
            "flux-system",
        )
        .unwrap();
    assert_eq!(
        root["spec"]["postBuild"]["substituteFrom"],
        // `optional: false` is the CRD's default, which the API server fills in.
        serde_json::json!([{"kind": "ConfigMap", "name": "cluster-settings", "optional": false}])
    );
    let patch: Value = yaml_serde::from_str(root["spec"]["patches"][0]["patch"].as_str().unwrap()).unwrap();
    assert_eq!(
        patch["spec"]["postBuild"]["substituteFrom"],
        serde_json::json!([{"kind": "ConfigMap", "name": "cluster-settings"}]),
        "child Kustomizations substitute too"
    );

    // Spegel: its own privileged namespace, Talos's hosts directory, nothing to prepend.
    let ns = env.object("", "namespaces", "", "spegel").expect("spegel namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let spegel = env
        .helm_release("spegel", "spegel")
        .expect("the Spegel release in its namespace");
    assert_eq!(
        spegel["spec"]["values"]["spegel"]["containerdRegistryConfigPath"],
        "/etc/cri/conf.d/hosts"
    );
    assert_eq!(spegel["spec"]["values"]["spegel"]["prependExisting"], false);

    env.sim.clear_requests();
    let plan = engine::plan_all(&env.phases(), &env.ctx()).await.unwrap();
    assert!(plan.is_empty(), "converged: {plan:#?}");
    env.up().await.unwrap();
    assert_eq!(env.writes(), Vec::<String>::new(), "the second run wrote");
}

/// The GitOps checkout's Cilium release must turn on what the inventory's BGP
/// peers need: Flux would otherwise switch it off again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bgp_peers_with_a_checkout_cilium_release_without_bgp_fail_naming_the_file() {
    let checkout = tempfile::tempdir().unwrap();
    let file = checkout.path().join("cilium.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: cilium, namespace: kube-system}
spec:
  interval: 1h
  chart: {spec: {chart: cilium, version: 1.18.4, sourceRef: {kind: HelmRepository, name: cilium, namespace: flux-system}}}
  values: {operator: {replicas: 1}}
"#,
    )
    .unwrap();
    let extra = format!("checkout = \"{}\"", checkout.path().display());
    let edit = |t: String| t.replace("lb_pool = \"127.1.0.200-127.1.0.220\"\n", BGP_NETWORK);
    let env = Env::start_edited("flux", &extra, edit, artifacts, Duration::from_secs(5)).await;
    let err = env.up().await.unwrap_err().to_string();
    assert!(
        err.contains("phase core") && err.contains("cilium.yaml") && err.contains("bgpControlPlane"),
        "{err}"
    );
    assert!(
        env.helm_release("kube-system", "cilium").is_none(),
        "nothing of phase 2 applied"
    );
}

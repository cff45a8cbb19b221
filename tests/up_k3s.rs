//! Phase -1 for k3s end to end on the test rack: real OpenSSH nodes in
//! network namespaces (root only; skipped elsewhere, failed under CI=true),
//! with the k3s stand-in in place of k3s. One server + two agents converge,
//! the kubeconfig works against the stand-in's API, a second run plans
//! nothing and touches nothing on the nodes, and a node that stays
//! unreachable fails the run by name while the rest of the state is kept.
//!
//! `harness = false`: this test binary is also the stand-in. Uploaded to the
//! nodes as the k3s binary and started there as `/usr/local/bin/k3s`, it runs
//! `xtask::k3s_standin` instead of the test.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootstrap::artifacts::ArtifactStore;
use bootstrap::engine::progress::{Reporter, Style};
use bootstrap::engine::{self, Phase, RunCtx};
use bootstrap::phases::k3s_nodes::K3sNodes;
use bootstrap::phases::{ClusterRun, KUBECONFIG, Timeouts};
use bootstrap::ssh::{self, Pool, Target, UploadOpts};
use bootstrap::state::StateStore;
use xtask::rack::Rack;

fn main() {
    if xtask::k3s_standin::invoked_as_k3s() {
        std::process::exit(xtask::k3s_standin::main());
    }
    let t = Instant::now();
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("bootstrap=debug")
        .with_writer(logs.clone())
        .init();
    // `--merge-kubeconfig` writes to $KUBECONFIG: point it at a scratch file.
    let home = tempfile::tempdir().unwrap();
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("KUBECONFIG", home.path().join("config")) };
    let Some(rack) = Rack::for_test(3) else {
        println!("test up_k3s ... skipped");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(converges_then_changes_nothing_then_names_an_unreachable_node(
        rack, &logs,
    ));
    println!(
        "test up_k3s: one server and two agents ... ok ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let rack = Rack::for_test(3).expect("a second rack");
    rt.block_on(three_servers_join_one_at_a_time_under_one_ca(rack));
    println!("test up_k3s: three servers ... ok ({:.1} s)", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let rack = Rack::for_test(2).expect("a third rack");
    rt.block_on(all_phases_reach_the_gitops_root_and_a_rerun_plans_nothing(rack));
    println!(
        "test up_k3s: phases -1 to 3 ... ok ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
}

/// Everything logged (debug, `bootstrap` targets: SSH command output included).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn ssh_options(rack: &Rack) -> ssh::Options {
    let mut o = ssh::Options::isolated(rack.known_hosts());
    o.connect_timeout = Duration::from_secs(5);
    o
}

fn run_for(
    cluster: &bootstrap::inventory::Cluster,
    dir: &Path,
    node_timeout: Duration,
    merge: bool,
) -> Arc<ClusterRun> {
    let state = dir.join("state");
    Arc::new(ClusterRun {
        cluster: cluster.clone(),
        inventory_dir: dir.to_path_buf(),
        state_root: state.clone(),
        artifacts: ArtifactStore {
            offline: None,
            cache: state.join("artifacts"),
        },
        limit: BTreeSet::new(),
        merge_kubeconfig: merge,
        accept_new: false,
        require_identity: false,
        timeouts: Timeouts {
            node: node_timeout,
            api: Duration::from_secs(30),
            workload: Duration::from_secs(30),
            gitops: Duration::from_secs(30),
        },
        restore: None,
        force_unlock: false,
    })
}

/// What a re-run must not change on a node: installed files (mtime, inode),
/// service manager calls, stand-in starts and joins.
async fn footprint(pool: &Pool, rack: &Rack) -> Vec<String> {
    let cmd = "stat -c '%n %Y %i %a' /usr/local/bin/k3s /etc/rancher/k3s/config.yaml /etc/systemd/system/k3s*.service /var/lib/bootstrap/k3s-install.state; \
               echo '--- systemctl'; cat /var/log/standin-systemctl.log; echo '--- k3s'; cat /var/lib/rancher/k3s/standin-calls.log";
    let mut out = Vec::new();
    for n in rack.nodes() {
        let s = pool.session(&target(rack, n)).await.unwrap();
        let o = s.exec(cmd, Default::default()).await.unwrap();
        out.push(format!("{}:\n{}", n.name, o.stdout_str()));
    }
    out
}

fn target(rack: &Rack, n: &xtask::rack::RackNode) -> Target {
    let mut t = Target::new(&n.name, n.ip.to_string());
    t.user = Some("root".into());
    t.key = Some(rack.client_key());
    t
}

/// Puts the stand-in's `systemctl` on every node (they run no systemd; inside
/// the node only) and writes an inventory using this binary as k3s.
async fn prepare(rack: &Rack, dir: &Path) -> (Pool, bootstrap::inventory::Cluster) {
    let pool = Pool::new(ssh_options(rack));
    for n in rack.nodes() {
        let s = pool.session(&target(rack, n)).await.unwrap();
        s.upload(
            xtask::k3s_standin::SYSTEMCTL.as_bytes(),
            "/usr/local/bin/systemctl",
            UploadOpts {
                mode: 0o755,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let inv = dir.join("rack.toml");
    std::fs::write(
        &inv,
        format!(
            "{}\n[cluster.k3s]\nbinary = {:?}\n",
            rack.inventory_toml(),
            exe.display().to_string()
        ),
    )
    .unwrap();
    let cluster = bootstrap::inventory::load(&inv).unwrap().inventory.clusters.remove(0);
    (pool, cluster)
}

fn ctx_for(run: &ClusterRun) -> RunCtx {
    RunCtx {
        reporter: Arc::new(Reporter::new(Style::Silent)),
        state: bootstrap::engine::SharedState::new(StateStore::open(&run.state_root, &run.cluster.name).unwrap()),
        concurrency: 4,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

async fn converges_then_changes_nothing_then_names_an_unreachable_node(mut rack: Rack, logs: &Captured) {
    let dir = tempfile::tempdir().unwrap();
    let (pool, cluster) = prepare(&rack, dir.path()).await;
    let names: Vec<String> = rack.nodes().iter().map(|n| n.name.clone()).collect();

    let run = run_for(&cluster, dir.path(), Duration::from_secs(20), true);
    let ctx = ctx_for(&run);
    let phases: Vec<Box<dyn Phase>> = vec![Box::new(K3sNodes::with_ssh(run.clone(), ssh_options(&rack)))];

    // Fresh nodes: every node has work, and plan changed nothing anywhere.
    let plan = phases[0].plan(&ctx).await.unwrap();
    for n in &names {
        assert!(plan.iter().any(|a| &a.target == n), "{n} missing from {plan:#?}");
    }
    assert!(ctx.state.lock().await.artifact(KUBECONFIG).is_none());

    engine::run(&phases, &ctx).await.expect("phase -1 converges");

    // The kubeconfig: private, pointed at the endpoint, working against the stand-in's API.
    let path = ctx.state.lock().await.artifact(KUBECONFIG).unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let endpoint = format!("https://{}:6443", rack.nodes()[0].ip);
    assert!(
        text.contains(&format!("server: {endpoint}")),
        "{}",
        text.lines().take(6).collect::<Vec<_>>().join("\n")
    );
    let merged = std::fs::read_to_string(std::env::var_os("KUBECONFIG").unwrap()).unwrap();
    assert!(
        merged.contains(&format!("server: {endpoint}")) && merged.contains("current-context: rack"),
        "--merge-kubeconfig"
    );
    let kube = bootstrap::k8s::Client::from_kubeconfig(&path).await.unwrap();
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(kube.kube().clone())
        .list(&Default::default())
        .await
        .unwrap();
    let mut registered: Vec<(String, String)> = nodes
        .items
        .iter()
        .map(|n| {
            let ip = n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone())
                .unwrap_or_default();
            (n.metadata.name.clone().unwrap_or_default(), ip)
        })
        .collect();
    registered.sort();
    let want: Vec<(String, String)> = rack
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.ip.to_string()))
        .collect();
    assert_eq!(registered, want, "every node registered with its address");
    {
        let state = ctx.state.lock().await;
        let steps = &state.state().phases["nodes"].steps;
        for n in &names {
            assert_eq!(steps[n], "installed", "{steps:?}");
        }
    }
    // Secrets never reach the logs, though command output is logged at debug level.
    let token = bootstrap::render::K3sSecrets::load(&dir.path().join("state/rack"))
        .unwrap()
        .unwrap()
        .k3s
        .token;
    let logged = logs.text();
    assert!(logged.contains("installed and started"), "debug logging was captured");
    assert!(!logged.contains(&token), "the cluster token was logged");
    assert!(!logged.contains("client-key-data"), "the kubeconfig was logged");
    // The config holds the cluster token: 0600 on the node.
    let s = pool.session(&target(&rack, &rack.nodes()[1])).await.unwrap();
    let mode = s
        .run("stat -c %a /etc/rancher/k3s/config.yaml", Default::default())
        .await
        .unwrap();
    assert_eq!(mode.stdout_str().trim(), "600");

    // Converged: plan lists nothing, and a second run touches nothing on the nodes.
    let before = footprint(&pool, &rack).await;
    assert!(
        before[0].contains("restart k3s") && before[0].contains("server start"),
        "{}",
        before[0]
    );
    assert!(
        before[1].contains("restart k3s-agent") && before[1].contains("agent joined"),
        "{}",
        before[1]
    );
    let plan = phases[0].plan(&ctx).await.unwrap();
    assert!(plan.is_empty(), "a converged cluster plans nothing: {plan:#?}");
    engine::run(&phases, &ctx).await.expect("second run");
    assert_eq!(
        footprint(&pool, &rack).await,
        before,
        "the second run changed something on a node"
    );

    // The install script itself is idempotent: run again with the same inputs, it changes nothing.
    let s = pool.session(&target(&rack, &rack.nodes()[1])).await.unwrap();
    let again = s
        .run("bash /var/lib/bootstrap/k3s-install/install.sh", Default::default())
        .await
        .unwrap();
    assert!(again.stdout_str().contains("no change"), "{}", again.stdout_str());
    assert_eq!(
        footprint(&pool, &rack).await,
        before,
        "install.sh changed something on a re-run"
    );

    // One node's config changes: only that node is reinstalled (and re-registers with its new label).
    let mut relabelled = cluster.clone();
    relabelled.nodes[2].labels.insert("tier".into(), "edge".into());
    let run = run_for(&relabelled, dir.path(), Duration::from_secs(20), false);
    let phases: Vec<Box<dyn Phase>> = vec![Box::new(K3sNodes::with_ssh(run, ssh_options(&rack)))];
    let plan = phases[0].plan(&ctx).await.unwrap();
    let targets: BTreeSet<&str> = plan.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, BTreeSet::from(["rack-3", "cluster"]), "{plan:#?}");
    engine::run(&phases, &ctx).await.expect("reconfiguring rack-3");
    let after = footprint(&pool, &rack).await;
    assert_eq!(after[..2], before[..2], "only rack-3 was touched");
    assert_ne!(after[2], before[2], "rack-3 was reinstalled");
    let node = kube::Api::<k8s_openapi::api::core::v1::Node>::all(kube.kube().clone())
        .get("rack-3")
        .await
        .unwrap();
    assert_eq!(
        node.metadata.labels.unwrap().get("tier").map(String::as_str),
        Some("edge")
    );

    // The state dir is lost (new cluster secrets): the first server, which runs k3s with the
    // old token, is refused by what it observes there and left untouched.
    let lost = tempfile::tempdir().unwrap();
    let run = run_for(&relabelled, lost.path(), Duration::from_secs(20), false);
    let lost_ctx = ctx_for(&run);
    let lost_phases: Vec<Box<dyn Phase>> = vec![Box::new(K3sNodes::with_ssh(run, ssh_options(&rack)))];
    let err = engine::run(&lost_phases, &lost_ctx)
        .await
        .expect_err("another token")
        .to_string();
    assert!(err.contains("rack-1") && err.contains("another cluster token"), "{err}");
    assert_eq!(footprint(&pool, &rack).await, after, "a refused run changed a node");

    // Day 2 on k3s: the stand-in reports its version, and `k3s etcd-snapshot save` takes an
    // on-demand snapshot of the first server's embedded etcd that etcdctl reads.
    let s = pool.session(&target(&rack, &rack.nodes()[0])).await.unwrap();
    let version = s.run("/usr/local/bin/k3s --version", Default::default()).await.unwrap();
    assert!(
        version.success() && version.stdout_str().starts_with("k3s version v1."),
        "{}",
        version.stdout_str()
    );
    if xtask::etcd::member::available() {
        let saved = s
            .run("/usr/local/bin/k3s etcd-snapshot save --name drill", Default::default())
            .await
            .unwrap();
        let line = saved.stdout_str();
        let file = line
            .trim()
            .strip_prefix("Snapshot ")
            .and_then(|l| l.strip_suffix(" saved."));
        let file = file.unwrap_or_else(|| panic!("k3s etcd-snapshot save printed {line:?}"));
        assert!(file.starts_with("drill-rack-1-"), "{file}");
        let status = s
            .run(
                &format!(
                    "ETCDCTL_API=3 etcdctl snapshot status {}/{file} --write-out=json",
                    xtask::k3s_standin::SNAPSHOT_DIR
                ),
                Default::default(),
            )
            .await
            .unwrap();
        assert!(
            status.success() && status.stdout_str().contains("\"totalKey\""),
            "{}",
            status.stdout_str()
        );
    }

    // A node that stays unreachable: named in the error; the others' state and the kubeconfig kept.
    rack.kill(2);
    let run = run_for(&relabelled, dir.path(), Duration::from_secs(4), false);
    let phases: Vec<Box<dyn Phase>> = vec![Box::new(K3sNodes::with_ssh(run, ssh_options(&rack)))];
    let err = engine::run(&phases, &ctx)
        .await
        .expect_err("rack-3 is gone")
        .to_string();
    assert!(err.contains("rack-3") && err.contains("unreachable"), "{err}");
    assert!(!err.contains("rack-1:") && !err.contains("rack-2:"), "{err}");
    let state = ctx.state.lock().await;
    assert!(state.artifact(KUBECONFIG).is_some(), "the kubeconfig was kept");
    let steps = &state.state().phases["nodes"].steps;
    assert_eq!(
        (steps["rack-1"].as_str(), steps["rack-2"].as_str()),
        ("installed", "installed")
    );
}

async fn three_servers_join_one_at_a_time_under_one_ca(rack: Rack) {
    let dir = tempfile::tempdir().unwrap();
    let (pool, mut cluster) = prepare(&rack, dir.path()).await;
    for n in &mut cluster.nodes {
        n.role = bootstrap::inventory::Role::Controlplane;
    }
    // rack-2's install disk is not there: its preflight fails before anything is uploaded, and
    // servers join one at a time, so rack-3 is not touched either.
    let mut no_disk = cluster.clone();
    no_disk.nodes[1].install_disk = Some(bootstrap::inventory::DiskSelector {
        serial: Some("NO-SUCH-SERIAL".into()),
        ..Default::default()
    });
    let run = run_for(&no_disk, dir.path(), Duration::from_secs(20), false);
    let ctx = ctx_for(&run);
    let phases: Vec<Box<dyn Phase>> = vec![Box::new(K3sNodes::with_ssh(run, ssh_options(&rack)))];
    let err = engine::run(&phases, &ctx)
        .await
        .expect_err("no install disk")
        .to_string();
    assert!(
        err.contains("rack-2") && err.contains("preflight failed") && err.contains("NO-SUCH-SERIAL"),
        "{err}"
    );
    let fp = footprint(&pool, &rack).await;
    assert!(fp[0].contains("server start"), "{}", fp[0]);
    assert!(!fp[1].contains("restart") && !fp[2].contains("restart"), "{fp:?}");

    let run = run_for(&cluster, dir.path(), Duration::from_secs(20), false);
    let phases: Vec<Box<dyn Phase>> = vec![Box::new(K3sNodes::with_ssh(run, ssh_options(&rack)))];
    engine::run(&phases, &ctx).await.expect("three servers converge");

    // Every server serves the API itself under the one cluster CA: the stored kubeconfig works against each.
    let path = ctx.state.lock().await.artifact(KUBECONFIG).unwrap().to_path_buf();
    let text = std::fs::read(&path).unwrap();
    for n in rack.nodes() {
        let own = bootstrap::phases::k3s_nodes::point_at(&text, "rack", &format!("https://{}:6443", n.ip)).unwrap();
        let client = bootstrap::k8s::Client::from_kubeconfig_yaml(&own, &n.name)
            .await
            .unwrap();
        let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
        assert_eq!(client.kube().request_text(req).await.unwrap(), "ok", "{}", n.name);
    }
    let kube = bootstrap::k8s::Client::from_kubeconfig(&path).await.unwrap();
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(kube.kube().clone())
        .list(&Default::default())
        .await
        .unwrap();
    let mut servers: Vec<String> = nodes
        .items
        .iter()
        .filter(|n| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("node-role.kubernetes.io/control-plane"))
                == Some(&"true".to_owned())
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    servers.sort();
    assert_eq!(servers, ["rack-1", "rack-2", "rack-3"]);
    // Each server was started once; the joining ones joined through the first.
    for (i, f) in footprint(&pool, &rack).await.iter().enumerate() {
        assert_eq!(f.matches(" restart k3s\n").count(), 1, "{f}");
        assert_eq!(f.contains("server joined"), i > 0, "{f}");
    }
    assert!(phases[0].plan(&ctx).await.unwrap().is_empty());
}

/// `up` on k3s end to end: phase -1 over SSH, then phases 0-3 against the
/// stand-in's API until the Flux root Kustomization is Ready; then every phase
/// plans nothing.
async fn all_phases_reach_the_gitops_root_and_a_rerun_plans_nothing(rack: Rack) {
    let dir = tempfile::tempdir().unwrap();
    let (_pool, _) = prepare(&rack, dir.path()).await;
    let inv = dir.path().join("rack.toml");
    let gitops = "\n[cluster.gitops]\nengine = \"flux\"\nrepository = \"https://git.rack.invalid/rack/gitops.git\"\npath = \"./clusters/rack\"\n";
    std::fs::write(&inv, std::fs::read_to_string(&inv).unwrap() + gitops).unwrap();
    let cluster = bootstrap::inventory::load(&inv).unwrap().inventory.clusters.remove(0);
    let crds = xtask::sim_rack::offline_crds(&dir.path().join("crds")).unwrap();
    let run = {
        let mut run = Arc::into_inner(run_for(&cluster, dir.path(), Duration::from_secs(20), false)).unwrap();
        run.artifacts.offline = Some(crds);
        Arc::new(run)
    };
    let ctx = ctx_for(&run);
    let phases = || -> Vec<Box<dyn Phase>> {
        std::iter::once(Box::new(K3sNodes::with_ssh(run.clone(), ssh_options(&rack))) as Box<dyn Phase>)
            .chain(bootstrap::phases::kubernetes(run.clone()))
            .collect()
    };
    engine::run(&phases(), &ctx).await.expect("phases -1 to 3 converge");
    {
        let state = ctx.state.lock().await;
        for phase in ["nodes", "prerequisites", "crds", "core", "gitops"] {
            assert!(state.state().phases[phase].done, "{phase} done");
        }
    }
    let kube = bootstrap::k8s::Client::from_kubeconfig(ctx.state.lock().await.artifact(KUBECONFIG).unwrap())
        .await
        .unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(kube.kube().clone(), "flux-system", &ar);
    let root = api.get("flux-system").await.expect("the root Kustomization exists");
    let ready = root.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "the GitOps root is Ready: {}", root.data["status"]);
    let again = engine::plan_all(&phases(), &ctx).await.unwrap();
    assert!(again.is_empty(), "a converged k3s cluster plans nothing: {again:#?}");
}

//! The real `kubectl` drives the Kubernetes API simulator, one test per
//! operation, typed as a user types it. kubectl (on PATH here and in CI) is
//! the judge: it speaks protobuf for typed creates, reads OpenAPI v3 for
//! apply, validation and explain, discovery for short names and categories,
//! and server-side Tables for `get`. Without kubectl the tests skip, except
//! under `CI=true`, where they fail.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use xtask::kube_sim::{KubeSim, NodeRegistration, SimOptions};

/// The kubectl binary, or `None` (after saying why) outside CI when it is missing.
fn kubectl_bin(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|f| f.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => panic!("{test}: kubectl is not on PATH (required under CI)"),
        None => {
            eprintln!("{test}: skipped, kubectl is not on PATH");
            None
        }
    }
}

struct Cluster {
    sim: KubeSim,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(test: &str) -> Option<Self> {
        let bin = kubectl_bin(test)?;
        let sim = KubeSim::start(SimOptions::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), sim.admin_kubeconfig()).unwrap();
        Some(Self { sim, bin, dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        c
    }

    /// Runs kubectl (stdin from `input`), returning its output whatever the exit code.
    fn run(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut c = self.command(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        tokio::task::block_in_place(|| {
            let mut child = c.spawn().expect("kubectl starts");
            let mut stdin = child.stdin.take().expect("piped stdin");
            if let Some(i) = input {
                stdin.write_all(i.as_bytes()).unwrap();
            }
            drop(stdin);
            child.wait_with_output().unwrap()
        })
    }

    /// Runs kubectl and returns stdout, failing the test unless it exits 0.
    fn ok(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl expecting failure; returns stderr.
    fn fails(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.run(args, input);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

macro_rules! cluster {
    ($name:literal) => {
        match Cluster::start($name).await {
            Some(c) => c,
            None => return,
        }
    };
}

const CM: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default, labels: {app: web}}
data: {colour: blue}
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: registry.example/app:1
          env: [{name: A, value: "1"}]
        - name: sidecar
          image: registry.example/sidecar:1
"#;

fn shared(rel: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .map(|b| b.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("shared file {rel} not found beside {}", root.display()));
    std::fs::read_to_string(path).unwrap()
}

const GITREPO_CRD: &str = "crds/flux/source.toolkit.fluxcd.io_gitrepositories.v1.9.0.yaml";

#[tokio::test(flavor = "multi_thread")]
async fn create() {
    let c = cluster!("create");
    // Typed creates: kubectl sends these bodies as protobuf.
    c.ok(&["create", "namespace", "team-a"], None);
    c.ok(
        &["create", "configmap", "cfg", "-n", "team-a", "--from-literal=k=v"],
        None,
    );
    c.ok(
        &[
            "create",
            "secret",
            "generic",
            "pw",
            "-n",
            "team-a",
            "--from-literal=password=s3cret",
        ],
        None,
    );
    c.ok(&["create", "serviceaccount", "robot", "-n", "team-a"], None);
    assert!(c.sim.object("", "namespaces", "", "team-a").is_some());
    assert_eq!(
        c.sim.object("", "configmaps", "team-a", "cfg").unwrap()["data"]["k"],
        "v"
    );
    // "s3cret" in base64.
    assert_eq!(
        c.sim.object("", "secrets", "team-a", "pw").unwrap()["data"]["password"],
        "czNjcmV0"
    );
    assert!(c.sim.object("", "serviceaccounts", "team-a", "robot").is_some());
    // From a file: JSON bodies.
    c.ok(&["create", "-f", "-"], Some(CM));
    assert!(c.sim.object("", "configmaps", "default", "settings").is_some());
    let again = c.fails(&["create", "-f", "-"], Some(CM));
    assert!(
        again.contains("AlreadyExists") || again.contains("already exists"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get() {
    let c = cluster!("get");
    c.ok(&["create", "-f", "-"], Some(CM));
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.colour}"], None),
        "blue"
    );
    let table = c.ok(&["get", "configmap", "settings"], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("settings"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_prints_the_columns_kube_apiserver_prints() {
    let c = cluster!("get_prints_the_columns_kube_apiserver_prints");
    c.sim.register(NodeRegistration {
        name: "cp-1".into(),
        labels: [("node-role.kubernetes.io/control-plane".to_owned(), String::new())].into(),
        ..Default::default()
    });
    let nodes = c.ok(&["get", "nodes"], None);
    let mut lines = nodes.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{nodes}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "cp-1");
    assert!(
        row[1] == "NotReady" || row[1] == "Ready" || row[1] == "Unknown",
        "{nodes}"
    );
    assert_eq!(row[2], "control-plane");
    assert_eq!(row[4], "v1.34.1");
    let ns = c.ok(&["get", "ns", "default"], None);
    assert_eq!(
        ns.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "AGE"]
    );
    assert!(ns.contains("Active"), "{ns}");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT));
    let deploy = c.ok(&["get", "deploy", "-A"], None);
    assert_eq!(
        deploy.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploy}"
    );
    assert!(deploy.contains("/2"), "{deploy}");
    // Categories: `all` lists deployments.
    let all = c.ok(&["get", "all", "-n", "default"], None);
    assert!(all.contains("deployment.apps/web"), "{all}");
    // CRDs print NAME and CREATED AT (the apiserver's default table convertor).
    c.ok(&["apply", "--server-side", "-f", "-"], Some(&shared(GITREPO_CRD)));
    let crds = c.ok(&["get", "crds"], None);
    assert_eq!(
        crds.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CREATED", "AT"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_by_label_selector() {
    let c = cluster!("list_by_label_selector");
    c.ok(&["create", "-f", "-"], Some(CM));
    c.ok(&["create", "configmap", "other", "--from-literal=x=y"], None);
    c.ok(&["label", "cm", "other", "app=db"], None);
    assert_eq!(
        c.ok(&["get", "cm", "-l", "app=web", "-o", "name"], None).trim(),
        "configmap/settings"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "app=db", "-o", "name"], None).trim(),
        "configmap/other"
    );
    let both = c.ok(&["get", "cm", "-l", "app in (web,db)", "-o", "name"], None);
    assert_eq!(both.lines().count(), 2, "{both}");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_server_side_create() {
    let c = cluster!("apply_server_side_create");
    let out = c.ok(&["apply", "--server-side", "-f", "-"], Some(CM));
    assert!(out.contains("configmap/settings serverside-applied"), "{out}");
    let cm = c.sim.object("", "configmaps", "default", "settings").unwrap();
    assert_eq!(cm["data"]["colour"], "blue");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "kubectl");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_server_side_update() {
    let c = cluster!("apply_server_side_update");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(CM));
    c.ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&CM.replace("blue", "green")),
    );
    assert_eq!(
        c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.colour}"], None),
        "green"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_server_side_conflict_with_another_field_manager() {
    let c = cluster!("apply_server_side_conflict_with_another_field_manager");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(CM));
    let other = CM.replace("blue", "red");
    let err = c.fails(
        &["apply", "--server-side", "--field-manager", "other", "-f", "-"],
        Some(&other),
    );
    assert!(err.to_lowercase().contains("conflict"), "{err}");
    assert_eq!(
        c.sim.object("", "configmaps", "default", "settings").unwrap()["data"]["colour"],
        "blue"
    );
    c.ok(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&other),
    );
    assert_eq!(
        c.sim.object("", "configmaps", "default", "settings").unwrap()["data"]["colour"],
        "red"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_server_side_dry_run_changes_nothing() {
    let c = cluster!("apply_server_side_dry_run_changes_nothing");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(CM));
    let rv = c.sim.resource_version();
    let out = c.ok(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&CM.replace("blue", "green")),
    );
    assert!(out.contains("(server dry run)"), "{out}");
    assert_eq!(c.sim.resource_version(), rv);
    assert_eq!(
        c.sim.object("", "configmaps", "default", "settings").unwrap()["data"]["colour"],
        "blue"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_client_side() {
    let c = cluster!("apply_client_side");
    c.ok(&["apply", "-f", "-"], Some(DEPLOYMENT));
    // A second apply computes a strategic merge patch from the OpenAPI v3 schema.
    let changed = DEPLOYMENT.replace("registry.example/app:1", "registry.example/app:2");
    c.ok(&["apply", "-f", "-"], Some(&changed));
    let d = c.sim.object("apps", "deployments", "default", "web").unwrap();
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "registry.example/app:2");
    assert!(d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn diff() {
    let c = cluster!("diff");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(CM));
    let same = c.run(&["diff", "--server-side", "-f", "-"], Some(CM));
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stderr));
    let changed = c.run(
        &["diff", "--server-side", "-f", "-"],
        Some(&CM.replace("blue", "green")),
    );
    // kubectl diff exits 1 when there are differences.
    assert_eq!(
        changed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(
        text.contains("-  colour: blue") && text.contains("+  colour: green"),
        "{text}"
    );
    assert_eq!(
        c.sim.object("", "configmaps", "default", "settings").unwrap()["data"]["colour"],
        "blue"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_merge() {
    let c = cluster!("patch_merge");
    c.ok(&["create", "-f", "-"], Some(CM));
    c.ok(
        &[
            "patch",
            "cm",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"size":"L","colour":null}}"#,
        ],
        None,
    );
    let cm = c.sim.object("", "configmaps", "default", "settings").unwrap();
    assert_eq!(cm["data"], serde_json::json!({"size": "L"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_json() {
    let c = cluster!("patch_json");
    c.ok(&["create", "-f", "-"], Some(CM));
    c.ok(
        &[
            "patch",
            "cm",
            "settings",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/data/colour","value":"teal"},{"op":"add","path":"/data/n","value":"1"}]"#,
        ],
        None,
    );
    let cm = c.sim.object("", "configmaps", "default", "settings").unwrap();
    assert_eq!(cm["data"], serde_json::json!({"colour": "teal", "n": "1"}));
    // A test operation that does not hold: 422, nothing changed.
    let err = c.fails(
        &[
            "patch",
            "cm",
            "settings",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/data/colour","value":"red"}]"#,
        ],
        None,
    );
    assert!(
        err.contains("422") || err.to_lowercase().contains("invalid") || err.contains("test"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_strategic() {
    let c = cluster!("patch_strategic");
    c.ok(&["create", "-f", "-"], Some(DEPLOYMENT));
    // The default patch type for built-ins; containers merge by name, env by name.
    c.ok(
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"B","value":"2"}]}]}}}}"#,
        ],
        None,
    );
    let d = c.sim.object("apps", "deployments", "default", "web").unwrap();
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(containers[0]["image"], "registry.example/app:1");
    let env: Vec<&str> = containers[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["A", "B"]);
    // $patch: delete removes one element by its merge key.
    c.ok(
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
        ],
        None,
    );
    let d = c.sim.object("apps", "deployments", "default", "web").unwrap();
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn label() {
    let c = cluster!("label");
    c.ok(&["create", "-f", "-"], Some(CM));
    c.ok(&["label", "configmap", "settings", "tier=backend"], None);
    let cm = c.sim.object("", "configmaps", "default", "settings").unwrap();
    assert_eq!(cm["metadata"]["labels"]["tier"], "backend");
    let err = c.fails(&["label", "configmap", "settings", "tier=frontend"], None);
    assert!(err.contains("--overwrite"), "{err}");
    c.ok(&["label", "configmap", "settings", "tier-"], None);
    let cm = c.sim.object("", "configmaps", "default", "settings").unwrap();
    assert!(cm["metadata"]["labels"].get("tier").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_crd_established() {
    let c = cluster!("wait_for_crd_established");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(&shared(GITREPO_CRD)));
    let out = c.ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
        ],
        None,
    );
    assert!(out.contains("condition met"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_custom_resource() {
    let c = cluster!("create_custom_resource");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(&shared(GITREPO_CRD)));
    c.ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
        ],
        None,
    );
    let repo = r#"
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: platform, namespace: default}
spec: {interval: 1m, url: "https://git.example.invalid/platform.git", ref: {branch: main}}
"#;
    c.ok(&["apply", "-f", "-"], Some(repo));
    assert!(
        c.sim
            .object("source.toolkit.fluxcd.io", "gitrepositories", "default", "platform")
            .is_some()
    );
    // The CRD's shortName and additionalPrinterColumns.
    let out = c.ok(&["get", "gitrepo"], None);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "URL", "AGE", "READY", "STATUS"], "{out}");
    assert!(out.contains("https://git.example.invalid/platform.git"), "{out}");
    // Custom resources take no strategic merge patch (kubectl's default for `patch`).
    let err = c.fails(
        &[
            "patch",
            "gitrepo",
            "platform",
            "--type=strategic",
            "-p",
            r#"{"spec":{"interval":"2m"}}"#,
        ],
        None,
    );
    assert!(
        err.contains("415") || err.contains("unknown format") || err.contains("not supported"),
        "{err}"
    );
    c.ok(
        &[
            "patch",
            "gitrepo",
            "platform",
            "--type=merge",
            "-p",
            r#"{"spec":{"interval":"2m"}}"#,
        ],
        None,
    );
    let o = c
        .sim
        .object("source.toolkit.fluxcd.io", "gitrepositories", "default", "platform")
        .unwrap();
    assert_eq!(o["spec"]["interval"], "2m");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain() {
    let c = cluster!("explain");
    let out = c.ok(&["explain", "deployment.spec.replicas"], None);
    assert!(out.contains("KIND:") && out.contains("Deployment"), "{out}");
    assert!(out.to_lowercase().contains("number of desired pods"), "{out}");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(&shared(GITREPO_CRD)));
    c.ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
        ],
        None,
    );
    let out = c.ok(&["explain", "gitrepositories.spec.url"], None);
    assert!(out.contains("GitRepository"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_status() {
    let c = cluster!("rollout_status");
    // Pods run only on a Ready node: one whose network is up (here the
    // distribution's built-in CNI, as k3s's flannel).
    c.sim.set_behaviour(xtask::kube_sim::Behaviour {
        cni_daemonset: None,
        ..Default::default()
    });
    c.sim.register_node("worker-1");
    c.ok(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT));
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"], None);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch() {
    let c = cluster!("watch");
    let mut child = c
        .command(&["get", "configmaps", "--watch", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Once the watch is open (its request is in the log), create and delete an object.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !c
        .sim
        .requests()
        .iter()
        .any(|r| r.watch && r.path.ends_with("/configmaps"))
    {
        assert!(std::time::Instant::now() < deadline, "kubectl never opened the watch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.ok(&["create", "configmap", "watched", "--from-literal=a=b"], None);
    c.ok(&["delete", "configmap", "watched"], None);
    let mut seen = vec![];
    while seen.len() < 2 {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("a watch event");
        // Server-side Table rows, one per event: `EVENT NAME DATA AGE`.
        if line.split_whitespace().nth(1) == Some("watched") {
            seen.push(line.split_whitespace().next().unwrap_or_default().to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, ["ADDED", "DELETED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_then_404() {
    let c = cluster!("delete_then_404");
    c.ok(&["create", "-f", "-"], Some(CM));
    let out = c.ok(&["delete", "cm", "settings"], None);
    assert!(out.contains("deleted"), "{out}");
    let err = c.fails(&["get", "cm", "settings"], None);
    assert!(
        err.contains("NotFound") && err.contains("\"settings\" not found"),
        "{err}"
    );
    assert!(c.sim.object("", "configmaps", "default", "settings").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_deletion() {
    let c = cluster!("namespace_deletion");
    c.ok(&["create", "namespace", "doomed"], None);
    c.ok(
        &["create", "configmap", "inside", "-n", "doomed", "--from-literal=a=b"],
        None,
    );
    c.ok(&["delete", "namespace", "doomed", "--timeout=60s"], None);
    let err = c.fails(&["get", "namespace", "doomed"], None);
    assert!(err.contains("NotFound"), "{err}");
    assert!(c.sim.object("", "configmaps", "doomed", "inside").is_none());
}

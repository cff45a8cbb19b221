//! Retries on 429/5xx/dropped connections, and timeouts that report the last
//! state seen, against the Kubernetes API simulator over real HTTPS.

use std::time::Duration;

use bootstrap::k8s::{ApplyOpts, Client, Error, RetryPolicy, apply_manifests, wait};
use xtask::kube_sim::{Fault, FaultKind, KubeSim, SimOptions};

async fn start() -> (KubeSim, Client) {
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let client = Client::from_kubeconfig_yaml(sim.admin_kubeconfig(), "sim admin kubeconfig")
        .await
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(2),
        });
    (sim, client)
}

const CONFIG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {level: info}
"#;

#[tokio::test]
async fn throttling_server_errors_and_dropped_connections_are_retried() {
    let (sim, client) = start().await;
    sim.inject(Fault::any(FaultKind::TooManyRequests { retry_after_secs: 1 }, 1).on_method("PATCH"));
    sim.inject(Fault::any(FaultKind::Status(503), 1).on_method("PATCH"));
    sim.inject(
        Fault::any(FaultKind::Status(500), 1)
            .on_method("GET")
            .on_path("/configmaps/"),
    );
    sim.inject(Fault::any(FaultKind::Drop, 1).on_method("GET").on_path("/configmaps/"));
    sim.inject(Fault::any(FaultKind::Delay(Duration::from_millis(200)), 1).on_method("PATCH"));

    let changes = apply_manifests(&client, CONFIG, &ApplyOpts::default()).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        sim.object("", "configmaps", "default", "settings").unwrap()["data"]["level"],
        "info"
    );

    let log = sim.requests();
    let statuses = |m: &str| -> Vec<u16> {
        log.iter()
            .filter(|r| r.method == m && r.path.ends_with("/configmaps/settings"))
            .map(|r| r.status)
            .collect()
    };
    assert_eq!(statuses("GET"), [500, 0, 404], "GET: 500, dropped, then answered");
    assert_eq!(
        statuses("PATCH"),
        [429, 503, 201],
        "PATCH: throttled, unavailable, then applied"
    );
    assert!(
        log.iter().all(|r| r.user == "admin"),
        "client certificate CN is the user"
    );
}

#[tokio::test]
async fn persistent_server_errors_fail_naming_server_step_and_object() {
    let (sim, client) = start().await;
    sim.inject(Fault::any(FaultKind::Status(500), 10).on_method("PATCH"));
    let err = apply_manifests(&client, CONFIG, &ApplyOpts::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(500));
    let msg = err.to_string();
    assert!(msg.starts_with(sim.url()), "{msg}");
    assert!(msg.contains("apply ConfigMap default/settings"), "{msg}");
    let patches = sim.requests().iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 4, "one attempt plus three retries");
}

#[tokio::test]
async fn unknown_kinds_and_missing_namespaces_are_reported() {
    let (sim, client) = start().await;
    let cr = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\n";
    let err = apply_manifests(&client, cr, &ApplyOpts::default()).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKind { .. }), "{err}");
    assert!(err.to_string().contains("Widget default/w"), "{err}");

    let orphan = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nowhere}\n";
    let err = apply_manifests(&client, orphan, &ApplyOpts::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404), "{err}");
    assert!(err.to_string().contains("namespaces \"nowhere\" not found"), "{err}");
    assert!(sim.requests().iter().all(|r| !r.mutating || r.status >= 400));
}

#[tokio::test]
async fn timeouts_report_the_last_seen_state() {
    let (sim, client) = start().await;
    let held = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
  namespace: default
  annotations: {kube-sim.bootstrap.dev/hold: "true"}
spec:
  replicas: 2
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec: {containers: [{name: c, image: "registry.example.invalid/stuck:1"}]}
"#;
    apply_manifests(&client, held, &ApplyOpts::default()).await.unwrap();
    let err = wait::ready(
        &client,
        "apps/v1",
        "Deployment",
        Some("default"),
        "stuck",
        Duration::from_millis(1500),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Deployment default/stuck to be Available"), "{msg}");
    assert!(msg.contains("0/2 replicas available"), "{msg}");
    assert!(msg.contains("Available=False (MinimumReplicasUnavailable"), "{msg}");

    // Without a CNI DaemonSet, registered nodes stay NotReady.
    sim.register_node("cp-1");
    let err = wait::nodes_ready(&client, &["cp-1", "cp-2"], Duration::from_millis(1500))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cp-1: Ready=False (KubeletNotReady"), "{msg}");
    assert!(msg.contains("cp-2: not registered"), "{msg}");

    let err = wait::crd_established(&client, "widgets.example.com", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("last seen: not found"), "{err}");
}

#[tokio::test]
async fn waits_ride_out_watch_failures() {
    let (sim, client) = start().await;
    sim.register_node("cp-1");
    // The first watch attempts fail; the watcher backs off and retries.
    sim.inject(
        Fault::any(FaultKind::Status(503), 2)
            .on_method("GET")
            .on_path("/api/v1/nodes"),
    );
    let cni = r#"
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
"#;
    apply_manifests(&client, cni, &ApplyOpts::default()).await.unwrap();
    wait::nodes_ready(&client, &["cp-1"], Duration::from_secs(15))
        .await
        .unwrap();
    let failed = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/nodes" && r.status == 503)
        .count();
    assert_eq!(failed, 2);
}

/// The SEC1 `ECPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (DER).
fn sec1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    fn header(d: &[u8]) -> (u8, usize, usize) {
        let l = usize::from(d[1]);
        if l < 0x80 {
            (d[0], 2, l)
        } else {
            let n = l & 0x7f;
            (d[0], 2 + n, d[2..2 + n].iter().fold(0, |a, b| a << 8 | usize::from(*b)))
        }
    }
    let (_, h, _) = header(der);
    let mut rest = &der[h..];
    for _ in 0..2 {
        // version INTEGER, then the algorithm SEQUENCE
        let (_, h, l) = header(rest);
        rest = &rest[h + l..];
    }
    let (tag, h, l) = header(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    rest[h..h + l].to_vec()
}

#[tokio::test]
async fn kubeconfig_with_a_sec1_ec_client_key_works() {
    use base64::Engine;
    let (sim, _) = start().await;
    let cert = sim
        .tls()
        .issue_client_cert("talos-admin", Some("system:masters"))
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = cert.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let sec1 = b64.encode(sec1_from_pkcs8(&b64.decode(body).unwrap()));
    let lines: Vec<&str> = sec1
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let key_pem = format!(
        "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let kubeconfig = sim.kubeconfig_for(
        "talos-admin",
        &xtask::kube_sim::ClientCert {
            cert_pem: cert.cert_pem,
            key_pem,
        },
    );
    assert!(kubeconfig.contains("client-key-data"));
    let client = Client::from_kubeconfig_yaml(&kubeconfig, "talos-style kubeconfig")
        .await
        .unwrap();
    assert_eq!(client.server_version().await.unwrap(), "v1.34.1");
    assert_eq!(sim.requests().last().unwrap().user, "talos-admin");
}

#[tokio::test]
async fn clients_without_a_certificate_from_the_ca_are_refused() {
    let (sim, _) = start().await;
    let other = KubeSim::start(SimOptions::default()).await.unwrap();
    // A certificate from another CA, presented to `sim`.
    let foreign = other
        .tls()
        .issue_client_cert("intruder", Some("system:masters"))
        .unwrap();
    let kubeconfig = sim.kubeconfig_for("intruder", &foreign);
    let client = Client::from_kubeconfig_yaml(&kubeconfig, "foreign")
        .await
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        });
    let err = client.server_version().await.unwrap_err();
    assert!(err.to_string().starts_with(sim.url()), "{err}");
    assert!(
        sim.requests().is_empty(),
        "the TLS handshake must fail before any request"
    );
}

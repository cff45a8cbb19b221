//! Secret values never reach logs or errors: every tracing event at TRACE
//! (ours, kube, hyper, rustls, the simulator) is captured while Secrets are
//! planned, applied, retried and refused, and searched for the values.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bootstrap::k8s::{ApplyOpts, Client, RetryPolicy, apply_manifests};
use tracing_subscriber::util::SubscriberInitExt;
use xtask::kube_sim::{Fault, FaultKind, KubeSim, SimOptions};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PLAIN: &str = "plain-Zebra-7741-value";
const ENCODED_RAW: &str = "raw-Quokka-5512-value";

fn secrets() -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ENCODED_RAW);
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: vault}}
---
apiVersion: v1
kind: Secret
metadata: {{name: plain, namespace: vault}}
stringData: {{password: {PLAIN}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: encoded, namespace: vault}}
data: {{token: {b64}}}
"#
    )
}

fn forbidden() -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        PLAIN.to_owned(),
        b64.encode(PLAIN),
        ENCODED_RAW.to_owned(),
        b64.encode(ENCODED_RAW),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_in_any_trace_line_or_error() {
    let capture = Capture::default();
    let sink = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish()
        .try_init()
        .expect("the only subscriber in this test binary");

    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let client = Client::from_kubeconfig_yaml(sim.admin_kubeconfig(), "sim")
        .await
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        });
    let yaml = secrets();
    let plan = ApplyOpts {
        dry_run: true,
        ..ApplyOpts::default()
    };
    apply_manifests(&client, &yaml, &plan).await.unwrap();
    sim.inject(
        Fault::any(FaultKind::Status(503), 1)
            .on_method("PATCH")
            .on_path("/secrets/"),
    );
    apply_manifests(&client, &yaml, &ApplyOpts::default()).await.unwrap();
    apply_manifests(&client, &yaml.replace("Zebra", "Zebrb"), &plan)
        .await
        .unwrap();

    // A failure on a Secret: the error must not carry its value either.
    sim.inject(
        Fault::any(FaultKind::Status(500), 5)
            .on_method("PATCH")
            .on_path("/secrets/"),
    );
    let err = apply_manifests(&client, &yaml.replace("Zebra", "Zebrc"), &ApplyOpts::default())
        .await
        .unwrap_err();
    let err_text = format!("{err} {err:?}");

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() > 100,
        "expected a full TRACE capture, got {} lines",
        lines.len()
    );
    for target in ["kube_client", "hyper", "rustls", "kube_sim", "bootstrap::k8s"] {
        assert!(
            text.contains(target),
            "no TRACE output from {target}: the capture is incomplete"
        );
    }
    let mut all = forbidden();
    all.extend(["plain-Zebrb-7741-value".into(), "plain-Zebrc-7741-value".into()]);
    for value in &all {
        for line in &lines {
            assert!(
                !line.contains(value.as_str()),
                "a secret value leaked into a log line: {line}"
            );
        }
        assert!(
            !err_text.contains(value.as_str()),
            "a secret value leaked into an error: {err_text}"
        );
    }
}

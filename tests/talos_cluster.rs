//! Acceptance: the Talos client against the protocol-faithful simulator
//! (gRPC + TLS on loopback), through a whole cluster lifecycle.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bootstrap::talos::proto::machine::apply_configuration_request::Mode;
use bootstrap::talos::{CallPolicy, TalosClient, TalosError};
use sha2::{Digest, Sha256};
use tonic::Code;
use xtask::talos_sim::fixtures::TestSecrets;
use xtask::talos_sim::{NodeMode, SimOptions, TalosSim};

fn policy() -> CallPolicy {
    CallPolicy {
        deadline: Duration::from_secs(10),
        stream_deadline: Duration::from_secs(20),
        retry_budget: Duration::from_secs(30),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

/// Waits (bounded) until `cond` holds; panics naming `what` otherwise.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn is_control_plane(i: usize) -> bool {
    i < 3
}

fn config_for(secrets: &TestSecrets, i: usize) -> String {
    if is_control_plane(i) {
        secrets.controlplane_config(&format!("cp-{}", i + 1))
    } else {
        secrets.worker_config(&format!("worker-{}", i - 2))
    }
}

/// Applies every node's configuration in maintenance mode; returns the fingerprints.
async fn apply_all(sim: &TalosSim, secrets: &TestSecrets) -> Vec<String> {
    let mut fingerprints = Vec::new();
    for (i, node) in sim.nodes().iter().enumerate() {
        let (client, fingerprint) = TalosClient::maintenance_with(node.name(), node.addr(), None, policy())
            .await
            .expect("maintenance connection");
        assert_eq!(fingerprint.len(), 64, "SPKI SHA-256 in hex");
        let version = client.version().await.expect("Version is allowed in maintenance mode");
        assert_eq!(version.version.unwrap().tag, "v1.13.9");
        for denied in [
            client.bootstrap(false).await.unwrap_err(),
            client.kubeconfig().await.unwrap_err(),
        ] {
            assert_eq!(denied.code(), Some(Code::PermissionDenied), "{denied}");
        }
        let outcome = client
            .apply_configuration(config_for(secrets, i).as_bytes(), Mode::Auto)
            .await
            .expect("ApplyConfiguration in maintenance mode");
        assert_eq!(outcome.mode, Mode::Reboot);
        fingerprints.push(fingerprint);
    }
    fingerprints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_control_planes_and_two_workers_through_the_whole_lifecycle() {
    let sim = TalosSim::start(SimOptions::new(5)).await.unwrap();
    let kube_url = "https://127.0.0.1:6443".to_owned();
    sim.set_kube_api_url(Some(kube_url.clone()));
    let secrets = TestSecrets::generate("lab", "https://lab.example.test:6443");
    let creds = secrets.credentials();

    let fingerprints = apply_all(&sim, &secrets).await;
    let distinct: std::collections::HashSet<_> = fingerprints.iter().collect();
    assert_eq!(distinct.len(), 5, "each node has its own throwaway key");

    let clients: Vec<TalosClient> = sim
        .nodes()
        .iter()
        .map(|n| TalosClient::configured_with(n.name(), n.addr(), &creds, policy()).unwrap())
        .collect();
    // The first call after apply meets the reboot window: retries carry it.
    for client in &clients {
        client.wait_ready().await.expect("configured node answers over mTLS");
    }
    for node in sim.nodes() {
        assert_eq!(node.mode(), NodeMode::Configured);
        let reboots = node.calls().iter().filter(|c| c.method == "ApplyConfiguration").count();
        assert_eq!(reboots, 1, "{} was configured once", node.name());
    }

    // Bootstrap once; FailedPrecondition while etcd is not ready is retried.
    clients[0].bootstrap(false).await.expect("bootstrap");
    let again = clients[1].bootstrap(false).await.unwrap_err();
    assert_eq!(again.code(), Some(Code::AlreadyExists), "{again}");
    assert!(
        again.to_string().contains("node-2") && again.to_string().contains("Bootstrap"),
        "{again}"
    );

    let members = clients[0].etcd_members().await.unwrap();
    let mut hostnames: Vec<_> = members.iter().map(|m| m.hostname.clone()).collect();
    hostnames.sort();
    assert_eq!(hostnames, ["cp-1", "cp-2", "cp-3"], "the other control planes joined");
    let services = clients[2].service_list().await.unwrap();
    let etcd = services
        .iter()
        .find(|s| s.id == "etcd")
        .expect("etcd service on a control plane");
    assert_eq!(etcd.state, "Running");
    let worker_services = clients[3].service_list().await.unwrap();
    assert!(worker_services.iter().all(|s| s.id != "etcd"), "workers run no etcd");
    let worker_members = clients[3].etcd_members().await.unwrap_err();
    assert_eq!(worker_members.code(), Some(Code::FailedPrecondition));

    // Kubeconfig: admin certificate signed by the Kubernetes CA, server overridden.
    let kubeconfig = clients[0].kubeconfig().await.expect("kubeconfig");
    let doc: yaml_serde::Value = yaml_serde::from_slice(&kubeconfig).unwrap();
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"].as_str(),
        Some(kube_url.as_str())
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca_pem = b64
        .decode(
            doc["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(String::from_utf8(ca_pem).unwrap(), secrets.k8s_ca.crt);
    let crt_pem = b64
        .decode(doc["users"][0]["user"]["client-certificate-data"].as_str().unwrap())
        .unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&crt_pem).unwrap();
    let crt = pem.parse_x509().unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(secrets.k8s_ca.crt.as_bytes()).unwrap();
    let ca = ca.parse_x509().unwrap();
    crt.verify_signature(Some(ca.public_key()))
        .expect("admin cert signed by the Kubernetes CA");
    let orgs: Vec<_> = crt
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(orgs, ["system:masters"]);
    let from_worker = clients[3].kubeconfig().await.unwrap_err();
    assert_eq!(from_worker.code(), Some(Code::FailedPrecondition), "{from_worker}");

    // Snapshot carries the data written to etcd.
    assert!(sim.etcd_put(&secrets.cluster_id, "/registry/marker", "before-reset"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.snapshot");
    let info = clients[1].etcd_snapshot(&path).await.expect("snapshot");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // Reset every node: back to maintenance, etcd data gone.
    for client in &clients {
        client.reset(false).await.expect("reset");
    }
    for node in sim.nodes() {
        eventually("nodes back in maintenance mode", || {
            node.is_up() && node.mode() == NodeMode::Maintenance
        })
        .await;
    }
    assert!(
        sim.etcd_get(&secrets.cluster_id, "/registry/marker").is_none(),
        "reset wiped etcd"
    );
    let denied = clients[0].version().await.unwrap_err();
    assert!(
        matches!(denied, TalosError::Tls { .. } | TalosError::Rpc { .. }),
        "{denied}"
    );

    // Recover: configure again, upload the snapshot, bootstrap from it.
    apply_all(&sim, &secrets).await;
    let clients: Vec<TalosClient> = sim
        .nodes()
        .iter()
        .map(|n| TalosClient::configured_with(n.name(), n.addr(), &creds, policy()).unwrap())
        .collect();
    for client in &clients {
        client.wait_ready().await.expect("configured again");
    }
    clients[0].etcd_recover(&path).await.expect("upload snapshot");
    clients[0].bootstrap(true).await.expect("bootstrap from snapshot");
    assert_eq!(
        sim.etcd_get(&secrets.cluster_id, "/registry/marker").as_deref(),
        Some("before-reset")
    );
    assert_eq!(clients[0].etcd_members().await.unwrap().len(), 3);
    let once_more = clients[0].bootstrap(true).await.unwrap_err();
    assert_eq!(once_more.code(), Some(Code::AlreadyExists), "{once_more}");

    for node in sim.nodes() {
        let calls = node.calls();
        assert!(calls.iter().any(|c| c.method == "Reset" && c.mutating));
        assert!(calls.iter().filter(|c| c.method == "Version").all(|c| !c.mutating));
    }
    sim.stop().await;
}

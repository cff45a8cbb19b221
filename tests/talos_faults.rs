//! Acceptance: refusals and faults of simulated Talos nodes, seen through the
//! real client (wrong certificates, rejected configurations, reboot windows,
//! injected UNAVAILABLE and broken streams).

use std::time::Duration;

use bootstrap::talos::proto::machine::apply_configuration_request::Mode;
use bootstrap::talos::{CallPolicy, TalosClient, TalosCredentials, TalosError};
use rcgen::ExtendedKeyUsagePurpose;
use tonic::Code;
use xtask::talos_sim::fixtures::{TestSecrets, client_cert};
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

async fn configured_control_plane(sim: &TalosSim, secrets: &TestSecrets) -> TalosClient {
    let node = sim.node(0);
    let (client, _) = TalosClient::maintenance_with(node.name(), node.addr(), None, policy())
        .await
        .unwrap();
    client
        .apply_configuration(secrets.controlplane_config("cp-1").as_bytes(), Mode::Auto)
        .await
        .unwrap();
    let client = TalosClient::configured_with(node.name(), node.addr(), &secrets.credentials(), policy()).unwrap();
    client.wait_ready().await.expect("configured node answers");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_certificates_are_refused() {
    let sim = TalosSim::start(SimOptions::new(1)).await.unwrap();
    let secrets = TestSecrets::generate("lab", "https://lab.example.test:6443");
    configured_control_plane(&sim, &secrets).await;
    let node = sim.node(0);

    // A talosconfig round trip gives working credentials.
    let talosconfig = secrets
        .credentials()
        .to_talosconfig("lab", &[node.addr().ip().to_string()]);
    let creds = TalosCredentials::from_talosconfig(&talosconfig, None).unwrap();
    let ok = TalosClient::configured_with(node.name(), node.addr(), &creds, policy()).unwrap();
    ok.service_list().await.expect("admin from talosconfig");

    // Admin certificate of another cluster's CA: refused at the TLS layer, not retried.
    let other = TestSecrets::generate("other", "https://other.example.test:6443");
    let foreign = TalosCredentials::from_pem(&secrets.os_ca.crt, &other.admin.crt, other.credentials().key_pem);
    let client = TalosClient::configured_with(node.name(), node.addr(), &foreign, policy()).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(err, TalosError::Tls { .. }),
        "foreign client certificate: {err}"
    );
    assert!(err.to_string().contains("node-1"), "{err}");

    // Right CA but EKU serverAuth + clientAuth: Talos wants exactly clientAuth.
    let both = client_cert(
        &secrets.os_ca,
        &["os:admin"],
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    );
    let client =
        TalosClient::configured_with(node.name(), node.addr(), &secrets.credentials_for(&both), policy()).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(err, TalosError::Tls { .. }),
        "EKU not exactly clientAuth: {err}"
    );

    // A reader certificate: reads work, admin RPCs are denied.
    let reader = client_cert(
        &secrets.os_ca,
        &["os:reader"],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let client =
        TalosClient::configured_with(node.name(), node.addr(), &secrets.credentials_for(&reader), policy()).unwrap();
    client.version().await.expect("reader may call Version");
    let err = client.bootstrap(false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");

    // The server is verified too: a different OS CA is not trusted.
    let wrong_ca = TalosCredentials::from_pem(&other.os_ca.crt, &secrets.admin.crt, secrets.credentials().key_pem);
    let client = TalosClient::configured_with(node.name(), node.addr(), &wrong_ca, policy()).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(err, TalosError::Tls { .. }),
        "server certificate from another CA: {err}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_are_rejected_and_the_node_stays_in_maintenance() {
    let sim = TalosSim::start(SimOptions::new(1)).await.unwrap();
    let secrets = TestSecrets::generate("lab", "https://lab.example.test:6443");
    let node = sim.node(0);
    let (client, fingerprint) = TalosClient::maintenance_with(node.name(), node.addr(), None, policy())
        .await
        .unwrap();

    let worker = secrets.worker_config("w-1");
    let os_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &secrets.os_ca.key);
    let worker_with_ca_key = worker.replacen("  ca:\n    crt: ", &format!("  ca:\n    key: {os_key}\n    crt: "), 1);
    assert_ne!(worker, worker_with_ca_key);
    let cp = secrets.controlplane_config("cp-1");
    let cases = [
        ("worker with the OS CA key", worker_with_ca_key),
        (
            "wrong version",
            cp.replacen("version: v1alpha1", "version: v1alpha2", 1),
        ),
        (
            "wrong machine type",
            cp.replacen("type: controlplane", "type: database", 1),
        ),
        (
            "missing endpoint",
            cp.replacen(
                "    endpoint: https://lab.example.test:6443\n",
                "    localAPIServerPort: 6443\n",
                1,
            ),
        ),
        ("invalid YAML", "version: v1alpha1\nmachine: [unclosed\n".to_owned()),
    ];
    for (what, config) in cases {
        let err = client
            .apply_configuration(config.as_bytes(), Mode::Auto)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{what}: {err}");
        assert!(err.to_string().contains("ApplyConfiguration"), "{what}: {err}");
    }
    assert_eq!(node.mode(), NodeMode::Maintenance);
    let applies = node
        .calls()
        .iter()
        .filter(|c| c.method == "ApplyConfiguration" && c.mutating)
        .count();
    assert_eq!(applies, 5);
    // Still the same maintenance node: the pinned fingerprint connects, another one does not.
    TalosClient::maintenance_pinned(node.name(), node.addr(), &fingerprint)
        .await
        .expect("pinned to the key seen first");
    let wrong = "00".repeat(32);
    let err = TalosClient::maintenance_pinned(node.name(), node.addr(), &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, TalosError::Tls { .. }), "{err}");

    // A valid worker configuration is accepted.
    client
        .apply_configuration(worker.as_bytes(), Mode::Auto)
        .await
        .expect("valid worker config");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_windows_and_injected_faults_are_ridden_out_by_retries() {
    let sim = TalosSim::start(SimOptions::new(1)).await.unwrap();
    let secrets = TestSecrets::generate("lab", "https://lab.example.test:6443");
    let node = sim.node(0);
    // A slow reboot after apply: the configured client retries until apid is back.
    node.update_faults(|f| f.reboot_delay = Some(Duration::from_millis(1500)));
    let client = configured_control_plane(&sim, &secrets).await;
    assert_eq!(node.mode(), NodeMode::Configured);

    // UNAVAILABLE for the next three calls: the fourth attempt succeeds.
    node.clear_calls();
    node.update_faults(|f| f.refuse_next = 3);
    client.version().await.expect("retried through injected UNAVAILABLE");
    let calls = node.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.injected.is_some()).count(), 3);

    // A stream broken after its first chunk is restarted.
    client.bootstrap(false).await.unwrap();
    node.update_faults(|f| f.drop_next_streams = 1);
    let dir = tempfile::tempdir().unwrap();
    let info = client
        .etcd_snapshot(&dir.path().join("snap.db"))
        .await
        .expect("snapshot after a dropped stream");
    assert!(info.size > 0);
    node.update_faults(|f| f.drop_next_streams = 1);
    client.kubeconfig().await.expect("kubeconfig after a dropped stream");
    for method in ["EtcdSnapshot", "Kubeconfig"] {
        let n = node.calls().iter().filter(|c| c.method == method).count();
        assert_eq!(n, 2, "{method}: one broken stream, one complete");
    }

    // Reboot RPC: down for the reboot delay, calls keep working afterwards.
    node.update_faults(|f| f.reboot_delay = Some(Duration::from_millis(500)));
    client.reboot().await.unwrap();
    client.etcd_members().await.expect("etcd member list after reboot");

    // A node that never comes back: the error names node and RPC once the budget is spent.
    node.update_faults(|f| f.fail_reboot = true);
    client.reboot().await.unwrap();
    for _ in 0..100 {
        if !node.is_up() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!node.is_up(), "the node went down for its reboot");
    let short = CallPolicy {
        retry_budget: Duration::from_millis(1500),
        ..policy()
    };
    let err = client.clone().with_policy(short).version().await.unwrap_err();
    assert!(
        err.to_string().contains("node-1") && err.to_string().contains("Version"),
        "{err}"
    );
    assert!(
        matches!(
            err,
            TalosError::Rpc {
                code: Code::Unavailable,
                ..
            }
        ),
        "{err}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cluster_identity_does_not_join_etcd() {
    let sim = TalosSim::start(SimOptions::new(2)).await.unwrap();
    let secrets = TestSecrets::generate("lab", "https://lab.example.test:6443");
    sim.node(1).update_faults(|f| f.wrong_cluster_identity = true);
    let mut clients = Vec::new();
    for (i, node) in sim.nodes().iter().enumerate() {
        let (client, _) = TalosClient::maintenance_with(node.name(), node.addr(), None, policy())
            .await
            .unwrap();
        // Maintenance mode grants reader rights only.
        assert_eq!(client.reboot().await.unwrap_err().code(), Some(Code::PermissionDenied));
        assert_eq!(
            client.reset(true).await.unwrap_err().code(),
            Some(Code::PermissionDenied)
        );
        let config = secrets.controlplane_config(&format!("cp-{}", i + 1));
        client.apply_configuration(config.as_bytes(), Mode::Auto).await.unwrap();
        let client = TalosClient::configured_with(node.name(), node.addr(), &secrets.credentials(), policy()).unwrap();
        client.wait_ready().await.unwrap();
        clients.push(client);
    }
    clients[0].bootstrap(false).await.unwrap();
    let members = clients[0].etcd_members().await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.hostname.as_str()).collect::<Vec<_>>(),
        ["cp-1"]
    );
    let err = clients[1].etcd_members().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    sim.stop().await;
}

//! Day-2 operations against the Talos simulator over real gRPC + mTLS:
//! Upgrade (new version after the reboot, installer image recorded, each
//! fault) and, with real etcd members behind the control planes, membership,
//! snapshots that etcdctl reads, removal and recovery. Addresses 127.81.x.y.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootstrap::talos::proto::machine::apply_configuration_request::Mode;
use bootstrap::talos::proto::machine::machine_service_client::MachineServiceClient;
use bootstrap::talos::proto::machine::{ServiceInfo, UpgradeRequest};
use bootstrap::talos::{CallPolicy, TalosClient, TalosCredentials};
use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};
use xtask::talos_sim::fixtures::TestSecrets;
use xtask::talos_sim::{SimOptions, TalosSim};

const OLD: &str = "v1.13.9";
const IMAGE: &str = "ghcr.io/siderolabs/installer:v1.13.10";

fn policy() -> CallPolicy {
    CallPolicy {
        deadline: Duration::from_secs(10),
        stream_deadline: Duration::from_secs(20),
        retry_budget: Duration::from_secs(30),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
    }
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Whether real etcd can run here; false skips (CI has the packages, so it fails there).
fn etcd_available() -> bool {
    if xtask::etcd::member::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "etcd-server/etcd-client are not installed (cargo xtask test installs them)"
    );
    eprintln!("skipping: /usr/bin/etcd or /usr/bin/etcdctl missing");
    false
}

fn addrs(block: u8, n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 81, block, i))).collect()
}

/// `cps` control planes then the rest workers, configured and answering mTLS.
async fn configured(sim: &TalosSim, secrets: &TestSecrets, cps: usize) -> Vec<TalosClient> {
    for (i, node) in sim.nodes().iter().enumerate() {
        let (client, _) = TalosClient::maintenance_with(node.name(), node.addr(), None, policy())
            .await
            .unwrap();
        let config = if i < cps {
            secrets.controlplane_config(&format!("cp-{}", i + 1))
        } else {
            secrets.worker_config(&format!("worker-{}", i + 1 - cps))
        };
        client.apply_configuration(config.as_bytes(), Mode::Auto).await.unwrap();
    }
    let creds = secrets.credentials();
    let clients: Vec<TalosClient> = sim
        .nodes()
        .iter()
        .map(|n| TalosClient::configured_with(n.name(), n.addr(), &creds, policy()).unwrap())
        .collect();
    for c in &clients {
        c.wait_ready().await.unwrap();
    }
    clients
}

/// A raw MachineService client over mTLS (the product has no Upgrade call yet).
async fn raw(addr: SocketAddr, creds: &TalosCredentials) -> MachineServiceClient<Channel> {
    let mut config = bootstrap::talos::mtls_config(creds).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_static("http://talos.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    MachineServiceClient::new(channel)
}

fn upgrade(image: &str, preserve: bool) -> UpgradeRequest {
    UpgradeRequest {
        image: image.into(),
        preserve,
        ..Default::default()
    }
}

async fn tag(c: &TalosClient) -> String {
    c.wait_ready().await.unwrap().version.unwrap().tag
}

async fn etcd_service(c: &TalosClient) -> ServiceInfo {
    c.service_list()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == "etcd")
        .expect("etcd service")
}

/// Waits until the node went down for its reboot and is back.
async fn rebooted(sim: &TalosSim, i: usize) {
    eventually("the reboot to start", async || !sim.node(i).is_up()).await;
    eventually("the node to come back", async || sim.node(i).is_up()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_reboots_into_the_new_version_and_each_fault_shows() {
    let sim = TalosSim::start(SimOptions {
        addresses: addrs(1, 2),
        ..SimOptions::new(2)
    })
    .await
    .unwrap();
    let secrets = TestSecrets::generate("day2", "https://127.81.1.100:6443");
    let clients = configured(&sim, &secrets, 1).await;
    let creds = secrets.credentials();
    let mut worker = raw(sim.node(1).addr(), &creds).await;

    // An image without a tag is refused and nothing reboots.
    let bad = worker
        .upgrade(upgrade("ghcr.io/siderolabs/installer", false))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
    assert!(sim.node(1).is_up());

    // Version after the reboot; the installer image recorded.
    assert_eq!(tag(&clients[1]).await, OLD);
    let ack = worker.upgrade(upgrade(IMAGE, false)).await.unwrap().into_inner();
    assert_eq!(ack.messages[0].ack, "Upgrade request received");
    rebooted(&sim, 1).await;
    assert_eq!(tag(&clients[1]).await, "v1.13.10");
    assert_eq!(sim.node(1).installer_image().as_deref(), Some(IMAGE));

    // Fault: the reboot takes longer.
    sim.node(1)
        .update_faults(|f| f.reboot_delay = Some(Duration::from_millis(1500)));
    let started = Instant::now();
    worker
        .upgrade(upgrade("ghcr.io/siderolabs/installer:v1.13.11", false))
        .await
        .unwrap();
    rebooted(&sim, 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tag(&clients[1]).await, "v1.13.11");
    sim.node(1).update_faults(|f| f.reboot_delay = None);

    // Fault: the node comes back with the old version (installer recorded all the same).
    sim.node(1).update_faults(|f| f.upgrade_keeps_old_version = true);
    let mut worker = raw(sim.node(1).addr(), &creds).await;
    worker
        .upgrade(upgrade("ghcr.io/siderolabs/installer:v1.14.0", false))
        .await
        .unwrap();
    rebooted(&sim, 1).await;
    assert_eq!(tag(&clients[1]).await, "v1.13.11", "fell back to the previous version");
    assert_eq!(
        sim.node(1).installer_image().as_deref(),
        Some("ghcr.io/siderolabs/installer:v1.14.0")
    );

    // The only control plane: the quorum guard refuses without preserve.
    clients[0].bootstrap(false).await.unwrap();
    let mut cp = raw(sim.node(0).addr(), &creds).await;
    let refused = cp.upgrade(upgrade(IMAGE, false)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("only 1 etcd member found"), "{refused}");
    assert!(sim.node(0).is_up(), "a refused upgrade does not reboot");

    // Fault: etcd unhealthy after the reboot.
    assert!(etcd_service(&clients[0]).await.health.unwrap().healthy);
    sim.node(0).update_faults(|f| f.etcd_unhealthy_after_reboot = true);
    cp.upgrade(upgrade(IMAGE, true)).await.unwrap();
    rebooted(&sim, 0).await;
    assert_eq!(tag(&clients[0]).await, "v1.13.10");
    let etcd = etcd_service(&clients[0]).await;
    assert!(
        !etcd.health.unwrap().healthy,
        "etcd reported unhealthy after the reboot"
    );
    sim.stop().await;
}

/// Key/value straight into a member's etcd (what the Kubernetes API would write).
async fn put(ip: IpAddr, key: &str, value: &str) {
    let client = xtask::etcd::EtcdClient::new(&xtask::etcd::member::client_url(ip));
    client.put(key, value.as_bytes()).await.unwrap();
}

async fn get(ip: IpAddr, key: &str) -> Option<String> {
    let client = xtask::etcd::EtcdClient::new(&xtask::etcd::member::client_url(ip));
    let kv = client.get(key).await.unwrap()?;
    Some(String::from_utf8(kv.value).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_etcd_members_snapshot_remove_and_recover() {
    if !etcd_available() {
        return;
    }
    let ips = addrs(2, 3);
    let sim = TalosSim::start(SimOptions {
        addresses: ips.clone(),
        real_etcd: true,
        ..SimOptions::new(3)
    })
    .await
    .unwrap();
    let secrets = TestSecrets::generate("day2-etcd", "https://127.81.2.100:6443");
    let clients = configured(&sim, &secrets, 3).await;
    let creds = secrets.credentials();

    clients[0].bootstrap(false).await.unwrap();
    let again = clients[1].bootstrap(false).await.unwrap_err();
    assert_eq!(again.code(), Some(Code::AlreadyExists), "{again}");
    // A member added but not started yet is listed without a name (etcd's MemberList).
    eventually("three started members", async || {
        clients[0]
            .etcd_members()
            .await
            .is_ok_and(|m| m.len() == 3 && m.iter().all(|m| !m.hostname.is_empty()))
    })
    .await;
    let members = clients[0].etcd_members().await.unwrap();
    let mut hosts: Vec<&str> = members.iter().map(|m| m.hostname.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["cp-1", "cp-2", "cp-3"]);
    for m in &members {
        assert_ne!(m.id, 0);
        let n: usize = m.hostname.trim_start_matches("cp-").parse().unwrap();
        assert_eq!(m.peer_urls, [format!("http://{}:2380", ips[n - 1])], "{m:?}");
    }
    // Every member answers for the same cluster: the same list from cp-3.
    eventually("cp-3's etcd serving", async || clients[2].etcd_members().await.is_ok()).await;
    let mut from_cp3: Vec<u64> = clients[2].etcd_members().await.unwrap().iter().map(|m| m.id).collect();
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    from_cp3.sort();
    ids.sort();
    assert_eq!(from_cp3, ids);
    for c in &clients {
        eventually("etcd Running", async || etcd_service(c).await.state == "Running").await;
    }

    // A snapshot is a real etcd snapshot: etcdctl reads it, and it carries the data.
    put(ips[0], "/registry/configmaps/default/before", "kept").await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("etcd.snapshot");
    let info = clients[1].etcd_snapshot(&snap).await.unwrap();
    assert!(
        info.size > 4096,
        "a bbolt database, not a stand-in: {} bytes",
        info.size
    );
    let (_, revision, keys) = xtask::etcd::member::snapshot_status(&snap).unwrap();
    assert!(revision >= 2 && keys >= 1, "revision {revision}, {keys} keys");
    put(ips[0], "/registry/configmaps/default/after", "lost").await;

    // The upgrade's quorum guard sees real health: cp-3 down → refused.
    let mut cp1 = raw(sim.node(0).addr(), &creds).await;
    sim.node(2).update_faults(|f| f.fail_reboot = true);
    clients[2].reboot().await.unwrap();
    eventually("cp-3 down", async || !sim.node(2).is_up()).await;
    let refused = cp1.upgrade(upgrade(IMAGE, false)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("is not healthy"), "{refused}");

    // Remove the dead member by id: two members left, and the guard says so.
    let cp3 = members.iter().find(|m| m.hostname == "cp-3").unwrap().id;
    clients[0].etcd_remove_member(cp3).await.unwrap();
    let left = clients[0].etcd_members().await.unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|m| m.id != cp3));
    let missing = clients[0].etcd_remove_member(cp3).await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    let refused = cp1.upgrade(upgrade(IMAGE, false)).await.unwrap_err();
    assert!(refused.message().contains("member count(2)"), "{refused}");

    // Wipe the two left (no graceful leave): etcd and its data are gone.
    for c in &clients[..2] {
        c.reset(false).await.unwrap();
    }
    eventually("etcd gone", async || {
        let cluster = sim.cluster(&secrets.cluster_id);
        !cluster.lock().unwrap().etcd_running()
    })
    .await;
    sim.node(2).update_faults(|f| f.fail_reboot = false);
    sim.node(2).power_on().await.unwrap();
    clients[2].reset(false).await.unwrap();
    for i in 0..3 {
        eventually("maintenance mode", async || {
            sim.node(i).mode() == xtask::talos_sim::NodeMode::Maintenance
        })
        .await;
    }
    for i in 0..3 {
        sim.node(i).power_on().await.unwrap();
    }

    // Rebuild and recover from the snapshot: the key written before it is back, the later one is not.
    let clients = configured(&sim, &secrets, 3).await;
    clients[0].etcd_recover(&snap).await.unwrap();
    clients[0].bootstrap(true).await.unwrap();
    assert_eq!(
        get(ips[0], "/registry/configmaps/default/before").await.as_deref(),
        Some("kept")
    );
    assert_eq!(get(ips[0], "/registry/configmaps/default/after").await, None);
    eventually("the others rejoin the restored cluster", async || {
        clients[0]
            .etcd_members()
            .await
            .is_ok_and(|m| m.len() == 3 && m.iter().all(|m| !m.hostname.is_empty()))
    })
    .await;
    eventually("cp-2 serves the restored data", async || {
        xtask::etcd::EtcdClient::new(&xtask::etcd::member::client_url(ips[1]))
            .get("/registry/configmaps/default/before")
            .await
            .is_ok_and(|kv| kv.is_some())
    })
    .await;
    sim.stop().await;
}

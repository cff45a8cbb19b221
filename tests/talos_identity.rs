//! Identity before secrets: `bootstrap up` reads a maintenance-mode Talos
//! node's SystemInformation and Disks over the COSI resource API, refuses a
//! machine the inventory does not describe, an install disk selector that
//! does not pick exactly one of its disks, or a certificate that changed
//! since that read; only then is the machine config (with the resolved
//! install disk) sent. Against the simulated rack; each test has its own
//! 127.B.0.0/24 block.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootstrap::talos::proto::cosi::resource::meta::ResourceDefinitionSpec;
use bootstrap::talos::proto::cosi::resource::state_client::StateClient;
use bootstrap::talos::proto::cosi::resource::{EventType, GetRequest, ListRequest, WatchOptions, WatchRequest};
use bootstrap::talos::{CallPolicy, TalosClient};
use prost::Message;
use xtask::kube_sim::Behaviour;
use xtask::sim_rack::{RackOptions, SimRack};
use xtask::talos_sim::hardware::{Hardware, SimDisk, SystemInfo};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");
const UUID: &str = "4c4c4544-0042-3510-8053-b4c04f4e3732";
const SERIAL: &str = "CZ20400ABC";
const TB: u64 = 1_000_000_000_000;

/// One control plane `cp-1` on 127.`block`.0.11 (blocks 91-99 are this file's); `node_extra` goes into its table.
fn inventory(dir: &Path, block: u8, install_disk: &str, node_extra: &str) -> PathBuf {
    let text = format!(
        r#"[[cluster]]
name = "sim"
distribution = "talos"
endpoint = "127.{block}.0.10"

[cluster.network]
node_cidr = "127.{block}.0.0/24"
gateway = "127.{block}.0.1"
nameservers = ["127.{block}.0.1"]
vip = "127.{block}.0.10"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/16"

[cluster.gitops]
engine = "flux"
repository = "https://git.sim.invalid/rack/gitops.git"
path = "./clusters/sim"

[[cluster.node]]
name = "cp-1"
role = "controlplane"
ip = "127.{block}.0.11"
mac = "02:00:7f:01:00:0b"
install_disk = {install_disk}
{node_extra}
"#
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("rack.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A Dell-like machine with two NVMe SSDs of one family (1 TB and 4 TB) and a CD-ROM.
fn machine(uuid: &str) -> Hardware {
    Hardware {
        system: SystemInfo {
            manufacturer: "Dell Inc.".into(),
            product_name: "PowerEdge R650".into(),
            serial_number: SERIAL.into(),
            uuid: uuid.into(),
            ..SystemInfo::default()
        },
        disks: vec![
            SimDisk::nvme("nvme0n1", "Samsung SSD 980 PRO 4TB", "S6B0NL0T400001", 4 * TB),
            SimDisk::nvme("nvme1n1", "Samsung SSD 980 PRO 1TB", "S6B0NL0T100001", TB),
            SimDisk::cdrom("sr0"),
        ],
    }
}

fn crds() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        xtask::sim_rack::offline_crds(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("talos-identity-crds")).unwrap()
    })
    .clone()
}

/// `bootstrap -i INV --state-dir DIR up --artifacts CRDS ARGS`: (success, stderr).
/// The cluster's secrets are the test fixture's, so no run waits for a new
/// RSA-4096 service-account key.
fn up(inv: &Path, args: &[&str]) -> (bool, String) {
    up_with(inv, args, &[])
}

/// [`up`] with extra environment variables.
fn up_with(inv: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let state = inv.parent().unwrap().join("state");
    let secrets = state.join("sim");
    if !secrets.is_dir() {
        std::fs::create_dir_all(&secrets).unwrap();
        for f in ["secrets.yaml", "talos-admin.yaml"] {
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/talos")
                .join(f);
            std::fs::copy(fixture, secrets.join(f)).unwrap();
        }
    }
    let out = Command::new(BIN)
        .arg("-i")
        .arg(inv)
        .arg("--state-dir")
        .arg(&state)
        .args(["up", "--timeout", "60", "--artifacts"])
        .arg(crds())
        .args(args)
        .env("HOME", &state)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `bootstrap plan` after [`up`]: its stdout.
fn plan(inv: &Path) -> String {
    let state = inv.parent().unwrap().join("state");
    let out = Command::new(BIN)
        .arg("-i")
        .arg(inv)
        .arg("--state-dir")
        .arg(&state)
        .args(["plan", "--artifacts"])
        .arg(crds())
        .env("HOME", &state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "plan failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn rack(inv: &Path, hardware: Hardware) -> SimRack {
    let cluster = bootstrap::inventory::load(inv).unwrap().inventory.clusters.remove(0);
    let rack = SimRack::start(
        &cluster,
        RackOptions {
            reboot_delay: Duration::from_millis(150),
            ready_delay: Duration::from_millis(50),
            behaviour: Behaviour::uniform(Duration::from_millis(30)),
        },
    )
    .await
    .unwrap();
    rack.talos.node(0).set_hardware(hardware);
    rack
}

/// The RPCs cp-1 received, in order.
fn calls(rack: &SimRack) -> Vec<&'static str> {
    rack.talos.node(0).calls().iter().map(|c| c.method).collect()
}

fn assert_nothing_applied(rack: &SimRack) {
    let calls = calls(rack);
    assert!(
        calls.contains(&"cosi.State/Get") && !calls.contains(&"ApplyConfiguration"),
        "identity read, nothing applied: {calls:?}"
    );
}

const SAMSUNG_980: &str = r#"{ model = "Samsung SSD 980*", size = "400GB-2TB" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_matching_machine_gets_its_config_with_the_one_disk_its_selector_selects() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(
        dir.path(),
        91,
        SAMSUNG_980,
        &format!("uuid = \"{}\"\nserial = \"{SERIAL}\"", UUID.to_uppercase()),
    );
    let rack = rack(&inv, machine(UUID)).await;
    tokio::task::block_in_place(|| plan(&inv));
    assert_eq!(
        rack.talos.node(0).handshakes(),
        1,
        "plan probes a fresh node and reads its identity over one connection"
    );
    rack.talos.node(0).clear_calls();
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &["--require-identity"]));
    assert!(ok, "up failed:\n{err}");
    assert!(
        !err.contains("trusting the network"),
        "the identity was checked:\n{err}"
    );
    let config = rack.talos.node(0).config().expect("cp-1 was configured");
    let v1alpha1: yaml_serde::Value = yaml_serde::Deserializer::from_str(&config.raw)
        .map(|d| <yaml_serde::Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d.get("kind").is_none())
        .unwrap();
    let install = &v1alpha1["machine"]["install"];
    assert_eq!(
        install["disk"].as_str(),
        Some("/dev/nvme1n1"),
        "the 1 TB disk: the 4 TB one is above the size range's upper bound; install: {install:?}"
    );
    assert!(
        install.get("diskSelector").is_none(),
        "a concrete disk, no selector Talos would resolve again"
    );
    let calls = calls(&rack);
    let read = calls
        .iter()
        .position(|c| *c == "cosi.State/List")
        .expect("disks listed");
    let applied = calls
        .iter()
        .position(|c| *c == "ApplyConfiguration")
        .expect("config applied");
    assert!(read < applied, "identity and disks read before the apply: {calls:?}");
    let lists = calls.iter().filter(|c| **c == "cosi.State/List").count();
    assert_eq!(
        lists, 1,
        "the plan's check is the one read: the apply sends the config through the connection pinned then: {calls:?}"
    );
    let again = tokio::task::block_in_place(|| plan(&inv));
    assert!(again.contains("nothing to do"), "after up, plan is empty:\n{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_machine_with_another_uuid_is_refused_with_both_values_and_nothing_applied() {
    let dir = tempfile::tempdir().unwrap();
    // A worker the network vouches for sits beside it: it is left alone too.
    let worker = "\n[[cluster.node]]\nname = \"worker-1\"\nrole = \"worker\"\nip = \"127.92.0.21\"\nmac = \"02:00:7f:01:00:15\"\ninstall_disk = { path = \"/dev/vda\" }\n";
    let inv = inventory(dir.path(), 92, SAMSUNG_980, &format!("uuid = \"{UUID}\"\n{worker}"));
    let other = "11111111-2222-4333-8444-555555555555";
    let rack = rack(&inv, machine(other)).await;
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &[]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("cp-1") && err.contains(other) && err.contains(UUID) && err.contains("not the machine"),
        "the refusal names the node and both UUIDs:\n{err}"
    );
    assert_nothing_applied(&rack);
    assert_eq!(
        rack.talos_mutations(),
        vec![],
        "the refusal came before any node was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expected_serial_the_node_does_not_report_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 93, SAMSUNG_980, &format!("serial = \"{SERIAL}\""));
    let mut hw = machine(UUID);
    hw.system.serial_number.clear();
    let rack = rack(&inv, hw).await;
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &[]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("reports no serial number") && err.contains(SERIAL),
        "the refusal says what was expected:\n{err}"
    );
    assert_nothing_applied(&rack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_any_identity_require_identity_refuses_and_a_plain_up_warns_once() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 94, SAMSUNG_980, "");
    let rack = rack(&inv, machine(UUID)).await;
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &["--require-identity"]));
    assert!(!ok, "--require-identity must refuse");
    assert!(
        err.contains("cp-1") && err.contains("--require-identity") && err.contains(UUID),
        "the refusal names the node, the flag and what the machine reports:\n{err}"
    );
    assert_nothing_applied(&rack);

    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &[]));
    assert!(ok, "without the flag the network is trusted:\n{err}");
    assert_eq!(
        err.matches("trusting the network").count(),
        1,
        "one warning for the one node:\n{err}"
    );
    assert!(rack.talos.node(0).config().is_some(), "cp-1 was configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_change_between_the_identity_read_and_the_apply_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 95, SAMSUNG_980, &format!("uuid = \"{UUID}\""));
    let rack = rack(&inv, machine(UUID)).await;
    // Right after the node lists its disks, another machine answers at its address.
    rack.talos
        .node(0)
        .update_faults(|f| f.swap_certificate_after = Some("cosi.State/List"));
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &[]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("cp-1") && err.contains("certificate changed") && err.contains("does not match the expected"),
        "the refusal names the node and both fingerprints:\n{err}"
    );
    assert!(calls(&rack).contains(&"cosi.State/List"));
    assert!(!calls(&rack).contains(&"ApplyConfiguration"), "{:?}", calls(&rack));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ambiguous_install_disk_selector_is_refused_listing_the_nodes_disks() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 96, SAMSUNG_980, &format!("uuid = \"{UUID}\""));
    let mut hw = machine(UUID);
    hw.disks = vec![
        SimDisk::nvme("nvme0n1", "Samsung SSD 980 1TB", "S64ANS0R100001", TB),
        SimDisk::nvme("nvme1n1", "Samsung SSD 980 1TB", "S64ANS0R100002", TB),
    ];
    let rack = rack(&inv, hw).await;
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &[]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("cp-1")
            && err.contains("matches 2 disks (/dev/nvme0n1, /dev/nvme1n1)")
            && err.contains("S64ANS0R100001")
            && err.contains("S64ANS0R100002"),
        "the refusal lists the node's disks:\n{err}"
    );
    assert_nothing_applied(&rack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_install_disk_or_data_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(
        dir.path(),
        97,
        r#"{ serial = "S6B0NL0T100001" }"#,
        r#"data_disks = [{ name = "ceph-osd", serial = "NO-SUCH-DISK", ceph = true }]"#,
    );
    let rack = rack(&inv, machine(UUID)).await;
    let (ok, err) = tokio::task::block_in_place(|| up(&inv, &[]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("cp-1")
            && err.contains("no disk matches the data disk `ceph-osd` selector")
            && err.contains("NO-SUCH-DISK")
            && err.contains("/dev/nvme0n1"),
        "the refusal lists the node's disks:\n{err}"
    );
    assert_nothing_applied(&rack);
}

/// The simulator's resource API as a client that knows only the upstream
/// protocol sees it (what `talosctl get` sends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_serves_system_information_and_disks_like_talos() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), 98, SAMSUNG_980, "");
    let rack = rack(&inv, machine(UUID)).await;
    let node = rack.talos.node(0);
    let policy = CallPolicy {
        retry_budget: Duration::from_secs(5),
        ..CallPolicy::default()
    };
    let (client, _) = TalosClient::maintenance_with("cp-1", node.addr(), None, policy)
        .await
        .unwrap();
    let info = client.system_information().await.unwrap();
    assert_eq!((info.uuid.as_str(), info.serial.as_str()), (UUID, SERIAL));
    assert_eq!(info.product, "PowerEdge R650");
    let disks = client.disks().await.unwrap();
    let paths: Vec<&str> = disks.iter().map(|d| d.dev_path.as_str()).collect();
    assert_eq!(
        paths,
        ["/dev/nvme0n1", "/dev/nvme1n1", "/dev/sr0"],
        "one per whole disk, by id"
    );
    assert!(!disks[2].eligible && disks[2].cdrom && disks[2].readonly);

    // Raw requests, as talosctl sends them after resolving its aliases.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr()))
        .unwrap()
        .connect_with_connector(insecure_connector(node.addr()))
        .await
        .unwrap();
    let mut state = StateClient::new(channel);
    let get = |namespace: &str, r#type: &str, id: &str| GetRequest {
        namespace: namespace.into(),
        r#type: r#type.into(),
        id: id.into(),
        options: None,
    };
    let r = state
        .get(get(
            "hardware",
            "SystemInformations.hardware.talos.dev",
            "systeminformation",
        ))
        .await
        .unwrap()
        .into_inner()
        .resource
        .unwrap();
    let md = r.metadata.unwrap();
    assert_eq!(
        (md.namespace.as_str(), md.id.as_str(), md.phase.as_str()),
        ("hardware", "systeminformation", "running")
    );
    let yaml = r.spec.unwrap().yaml_spec;
    assert!(
        yaml.contains(&format!("uuid: {UUID}")) && yaml.contains("serialnumber: CZ20400ABC"),
        "{yaml}"
    );
    let missing = state
        .get(get("runtime", "Disks.block.talos.dev", "sdz"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let unknown = state.get(get("runtime", "Bogus.talos.dev", "x")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::PermissionDenied, "{unknown:?}");
    assert!(unknown.message().contains("is not supported"), "{unknown:?}");
    let bad_ns = state
        .get(get("nowhere", "Disks.block.talos.dev", "sda"))
        .await
        .unwrap_err();
    assert_eq!(bad_ns.code(), tonic::Code::PermissionDenied, "{bad_ns:?}");
    // talosctl resolves `get disks` through the ResourceDefinitions.
    let mut defs = state
        .list(ListRequest {
            namespace: "meta".into(),
            r#type: "ResourceDefinitions.meta.cosi.dev".into(),
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut resolved = None;
    while let Some(m) = defs.message().await.unwrap() {
        let spec = ResourceDefinitionSpec::decode(m.resource.unwrap().spec.unwrap().proto_spec.as_slice()).unwrap();
        if spec.all_aliases.iter().any(|a| a == "disks") {
            resolved = Some((spec.resource_type, spec.default_namespace));
        }
    }
    assert_eq!(
        resolved,
        Some(("Disks.block.talos.dev".to_owned(), "runtime".to_owned()))
    );
    // `talosctl get -w`: the current contents, then BOOTSTRAPPED (api_version 1), then silence.
    let mut watch = state
        .watch(WatchRequest {
            namespace: "runtime".into(),
            r#type: "Disks.block.talos.dev".into(),
            id: None,
            options: Some(WatchOptions {
                bootstrap_contents: true,
                ..WatchOptions::default()
            }),
            api_version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let event = watch.message().await.unwrap().unwrap().event.remove(0);
        if event.event_type == EventType::Bootstrapped as i32 {
            break;
        }
        assert_eq!(event.event_type, EventType::Created as i32);
        seen.push(event.resource.unwrap().metadata.unwrap().id);
    }
    assert_eq!(seen, ["nvme0n1", "nvme1n1", "sr0"]);
    assert!(!calls(&rack).contains(&"ApplyConfiguration"));
}

/// TLS without verification (maintenance mode asks no client certificate).
fn insecure_connector(
    addr: std::net::SocketAddr,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    let (config, _) = bootstrap::talos::maintenance_tls_config(None);
    let config = std::sync::Arc::new(config);
    tower::service_fn(move |_| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// With a `[bmc]` and no identity in the inventory, the machine must be the
/// one its BMC reports (a real Redfish emulator, sushy-tools).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_bmc_reports_another_uuid_is_refused() {
    use xtask::sushy::{Emulator, EmulatorConfig, FakeSystem, venv_or_skip};
    let Some(venv) = venv_or_skip("a_node_whose_bmc_reports_another_uuid_is_refused") else {
        return;
    };
    let bmc_uuid = "0a000000-0000-4000-8000-00000000000a";
    let emu = tokio::task::block_in_place(|| {
        Emulator::start(
            &venv,
            EmulatorConfig {
                systems: vec![FakeSystem::new(bmc_uuid, "cp-1", "02:00:7f:01:00:0b").on()],
                auth: Some(("admin".into(), "bmc-password".into())),
                tls: false,
                port: None,
            },
        )
        .expect("start sushy-emulator")
    });
    let dir = tempfile::tempdir().unwrap();
    let bmc = format!(
        "[cluster.node.bmc]\nurl = \"{}\"\nuser = \"admin\"\npassword = \"env:TALOS_IDENTITY_BMC_PASSWORD\"\n",
        emu.url
    );
    let inv = inventory(dir.path(), 99, SAMSUNG_980, &bmc);
    let rack = rack(&inv, machine(UUID)).await;
    let (ok, err) =
        tokio::task::block_in_place(|| up_with(&inv, &[], &[("TALOS_IDENTITY_BMC_PASSWORD", "bmc-password")]));
    assert!(!ok, "up must refuse");
    assert!(
        err.contains("cp-1") && err.contains(UUID) && err.contains(&format!("its BMC expects {bmc_uuid}")),
        "the refusal names both UUIDs and who vouches for which:\n{err}"
    );
    assert!(!err.contains("trusting the network"), "{err}");
    assert_nothing_applied(&rack);
}

//! Virtual media from `bootstrap serve`: a BMC whose `[bmc]` says
//! `boot = "virtual-media"` without an `image_url` inserts the ISO that
//! `serve` offers (pinned in `[cluster.provision]`). The BMC is sushy-tools
//! (fake driver), which downloads the image at insert time as real BMCs do;
//! `serve` runs as the CLI (`--http-only`: no DHCP, no TFTP, no root).

mod redfish_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redfish_common::*;
use xtask::sushy::{FakeSystem, venv_or_skip};

const UUID: &str = "5a1d0000-0000-4000-8000-0000000000b1";
const MAC: &str = "02:00:7f:02:03:0b";
const NODE_IP: &str = "127.2.3.11";

/// `serve` as a child process; its stderr lines collected; killed on drop.
struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_for(&self, what: &str) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve never logged {what:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn inventory(
    dir: &std::path::Path,
    address: &str,
    bmc_port: u16,
    http_port: u16,
    talos_port: u16,
    sums: [String; 3],
) -> String {
    let password = dir.join("bmc-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let [kernel, initramfs, iso] = sums;
    format!(
        r#"[[cluster]]
name = "media"
distribution = "talos"
endpoint = "127.2.3.10"

[cluster.network]
node_cidr = "127.0.0.0/8"
gateway = "127.2.3.1"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/16"

[cluster.provision]
interface = "lo"
address = "{address}"
http_port = {http_port}
kernel_sha256 = "{kernel}"
initramfs_sha256 = "{initramfs}"
iso_sha256 = "{iso}"

[[cluster.node]]
name = "metal-1"
role = "controlplane"
ip = "{NODE_IP}"
mac = "{MAC}"
install_disk = {{ path = "/dev/vda" }}
talos = {{ port = {talos_port} }}
bmc = {{ url = "http://127.0.0.1:{bmc_port}", user = "{USER}", password = "file:{}", uuid = "{UUID}", boot = "virtual-media" }}
"#,
        password.display()
    )
}

/// A sushy BMC with one powered-off machine, the pinned boot files, and an
/// inventory whose `[cluster.provision]` binds to `address` on `lo`.
struct Rack {
    emu: xtask::sushy::Emulator,
    tmp: tempfile::TempDir,
    inv: std::path::PathBuf,
    artifacts: std::path::PathBuf,
    iso: Vec<u8>,
    http_port: u16,
    talos_port: u16,
    url: String,
}

impl Rack {
    fn new(test: &str, address: &str) -> Option<Self> {
        let venv = venv_or_skip(test)?;
        let emu = emulator(&venv, vec![FakeSystem::new(UUID, "metal-1", MAC)], false);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let artifacts = dir.join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let version = bootstrap::inventory::DEFAULT_TALOS_VERSION;
        let iso: Vec<u8> = (0..300 * 1024u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
        let files = [
            (format!("talos-{version}-vmlinuz-amd64"), b"kernel".to_vec()),
            (format!("talos-{version}-initramfs-amd64.xz"), b"initramfs".to_vec()),
            (format!("talos-{version}-metal-amd64.iso"), iso.clone()),
        ];
        let sums = files.map(|(name, bytes)| {
            let path = artifacts.join(name);
            std::fs::write(&path, bytes).unwrap();
            bootstrap::artifacts::sha256_file(&path).unwrap()
        });
        let http_port = closed_port();
        let talos_port = closed_port();
        let inv = dir.join("inventory.toml");
        let text = inventory(dir, address, emu.port, http_port, talos_port, sums);
        std::fs::write(&inv, text).unwrap();
        let url = format!("http://{address}:{http_port}/boot/media/metal-amd64.iso");
        Some(Self {
            emu,
            tmp,
            inv,
            artifacts,
            iso,
            http_port,
            talos_port,
            url,
        })
    }

    /// `bootstrap -i INV --state-dir STATE ARGS`.
    fn bootstrap(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
        c.arg("-i")
            .arg(&self.inv)
            .arg("--state-dir")
            .arg(self.tmp.path().join("state"))
            .args(args);
        c
    }

    /// The emulator's virtual CD of the machine.
    async fn cd(&self) -> serde_json::Value {
        observe(&format!("{}/VirtualMedia/Cd", self.emu.system_url(UUID))).await
    }
}

#[test]
fn a_virtual_media_bmc_inserts_the_iso_serve_offers_and_reads_it_in_ranges() {
    let Some(rack) = Rack::new(
        "a_virtual_media_bmc_inserts_the_iso_serve_offers_and_reads_it_in_ranges",
        "127.0.0.1",
    ) else {
        return;
    };
    let Rack {
        iso,
        http_port,
        talos_port,
        url,
        ..
    } = &rack;
    let (http_port, talos_port) = (*http_port, *talos_port);

    // The inventory resolves the BMC's image to serve's URL.
    let loaded = bootstrap::inventory::load(&rack.inv).unwrap_or_else(|d| panic!("{d:?}"));
    let cluster = loaded.inventory.clusters[0].clone();
    let node = cluster.nodes[0].clone();
    assert_eq!(node.bmc.as_ref().unwrap().image_url.as_deref(), Some(url.as_str()));

    let serve = Serve::start(
        rack.bootstrap(&["serve", "--http-only", "--artifacts"])
            .arg(&rack.artifacts),
    );
    serve.wait_for("HTTP only (no DHCP, no TFTP)");
    assert!(
        serve.log().contains(&format!("virtual-media ISO {url}")),
        "{}",
        serve.log()
    );

    rt().block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        // What BMCs that stream the image ask for: a range, and HEAD for its size.
        let part = http.get(url).header("Range", "bytes=1000-1999").send().await.unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.headers()["content-range"].to_str().unwrap(),
            format!("bytes 1000-1999/{}", iso.len())
        );
        assert_eq!(part.bytes().await.unwrap().as_ref(), &iso[1000..2000]);
        let head = http.head(url).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"].to_str().unwrap(),
            iso.len().to_string()
        );
        // Another cluster's ISO, or a file serve does not have: nothing.
        for other in [
            "/boot/other/metal-amd64.iso",
            "/boot/media/../inventory.toml",
            "/boot/media/secrets.yaml",
        ] {
            let r = http
                .get(format!("http://127.0.0.1:{http_port}{other}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{other}");
        }

        // The machine: its Talos maintenance port opens once it is powered on.
        let system = rack.emu.system_url(UUID);
        let machine = tokio::spawn(async move {
            while observe(&system).await["PowerState"] != "On" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            tokio::net::TcpListener::bind((NODE_IP, talos_port)).await.unwrap()
        });
        let opts = bootstrap::provision::Options {
            power: wait(),
            ready_timeout: Duration::from_secs(120),
            ..Default::default()
        };
        let outcome = bootstrap::provision::provision_node(&cluster, &node, &opts)
            .await
            .unwrap();
        match &outcome {
            bootstrap::provision::Outcome::Provisioned { boot, .. } => assert_eq!(boot, &format!("Cd {url}")),
            other => panic!("{other:?}"),
        }
        let _listener = machine.await.unwrap();
        let cd = rack.cd().await;
        assert_eq!(cd["Image"].as_str(), Some(url.as_str()), "{cd}");
        assert_eq!(cd["Inserted"], true, "{cd}");
        let seen = observe(&rack.emu.system_url(UUID)).await;
        assert_eq!(seen["Boot"]["BootSourceOverrideTarget"], "Cd");
    });
    // The BMC fetched the ISO from serve (the whole file: sushy downloads it).
    let log = serve.log();
    let fetches = log
        .lines()
        .filter(|l| l.contains("GET metal-amd64.iso for cluster media") && !l.contains("(bytes="))
        .count();
    assert!(fetches >= 1, "the BMC never fetched the ISO from serve:\n{log}");
}

/// `up --provision` serves for its run: the BMC inserts the ISO from the
/// `serve` that `up` started. A boot address this host does not have stops
/// `up` before any BMC is touched.
#[test]
fn up_provision_serves_the_iso_for_its_run_and_refuses_before_any_power_change() {
    let test = "up_provision_serves_the_iso_for_its_run_and_refuses_before_any_power_change";
    // 127.0.0.2 is routed to lo, but it is not an address lo has.
    let Some(bad) = Rack::new(test, "127.0.0.2") else {
        return;
    };
    let out = bad
        .bootstrap(&["up", "--provision", "--artifacts"])
        .arg(&bad.artifacts)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("127.0.0.2 is not an address of lo") && stderr.contains("no node was powered or booted"),
        "{stderr}"
    );
    rt().block_on(async {
        assert_eq!(observed_power(&bad.emu, UUID).await, "Off");
        assert_eq!(bad.cd().await["Inserted"], false);
    });

    let rack = Rack::new(test, "127.0.0.1").unwrap();
    let mut up = rack
        .bootstrap(&["up", "--provision", "--artifacts"])
        .arg(&rack.artifacts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rt().block_on(async {
        let start = Instant::now();
        loop {
            let cd = rack.cd().await;
            if cd["Inserted"] == true {
                assert_eq!(cd["Image"].as_str(), Some(rack.url.as_str()), "{cd}");
                break;
            }
            assert!(
                up.try_wait().unwrap().is_none(),
                "up exited before the ISO was inserted"
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the BMC never inserted the ISO: {cd}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Powered on into it; `up` now waits for the machine to answer.
        let start = Instant::now();
        while observed_power(&rack.emu, UUID).await != "On" {
            assert!(start.elapsed() < Duration::from_secs(60), "never powered on");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // serve is still up while `up` runs.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let head = http.head(&rack.url).send().await.unwrap();
        assert_eq!(head.status(), 200);
    });
    up.kill().unwrap();
    up.wait().unwrap();
}

//! The Redfish client against a real BMC emulator (sushy-tools, fake
//! driver) on loopback: discovery, power with polling, boot override,
//! virtual media, TLS pinning and the failures an operator meets.
//! Scenarios that wait on power changes run concurrently.

mod redfish_common;

use bootstrap::redfish::power::{self, Change};
use bootstrap::redfish::{BootTarget, ErrorKind, PowerState, ResetType, boot, media, system, task};
use redfish_common::*;
use xtask::sushy::{FakeSystem, ImageServer, venv_or_skip};

const A: &str = "0a000000-0000-4000-8000-00000000000a";
const B: &str = "0b000000-0000-4000-8000-00000000000b";
const C: &str = "0c000000-0000-4000-8000-00000000000c";

#[test]
fn power_on_off_and_cycle_poll_until_the_change_lands() {
    let Some(venv) = venv_or_skip("power_on_off_and_cycle_poll_until_the_change_lands") else {
        return;
    };
    let emu = emulator(
        &venv,
        vec![
            FakeSystem::new(A, "node-a", "02:00:00:00:0a:01"),
            FakeSystem::new(B, "node-b", "02:00:00:00:0b:01").on(),
            FakeSystem::new(C, "node-c", "02:00:00:00:0c:01").on(),
        ],
        false,
    );
    rt().block_on(async {
        let with_id = |id: &str| {
            let mut b = bmc(&emu.url);
            b.system_id = Some(id.into());
            b.uuid = Some(id.into());
            b
        };
        let (ca, cb, cc) = (
            client("node-a", &with_id(A)),
            client("node-b", &with_id(B)),
            client("node-c", &with_id(C)),
        );
        for c in [&ca, &cb, &cc] {
            c.login().await.unwrap();
            assert!(
                !c.has_session(),
                "sushy has no SessionService: basic auth is the fallback"
            );
        }
        let sa = system::discover(&ca, None).await.unwrap();
        let sb = system::discover(&cb, None).await.unwrap();
        let sc = system::discover(&cc, None).await.unwrap();
        assert_eq!((sa.power.clone(), sb.power.clone()), (PowerState::Off, PowerState::On));
        assert!(
            sa.reset_types.iter().any(|t| t == "ForceRestart"),
            "{:?}",
            sa.reset_types
        );

        // Only advertised reset types are sent; sushy does not offer PowerCycle.
        let e = power::reset(&ca, &sa, ResetType::PowerCycle).await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("does not offer ResetType PowerCycle"), "{e}");
        // Advertised but not implemented: the BMC's 501 is reported as such.
        let e = power::reset(&ca, &sa, ResetType::Nmi).await.unwrap_err();
        assert!(e.to_string().contains("HTTP 501"), "{e}");
        assert!(
            e.to_string().contains("node node-a") && e.to_string().contains(&emu.url),
            "{e}"
        );

        // The three changes land after random delays: wait for all at once.
        let (on, off, cycle) = tokio::join!(
            power::power_on(&ca, &sa, wait()),
            power::power_off(&cb, &sb, wait()),
            power::power_cycle(&cc, &sc, wait()),
        );
        assert_eq!(on.unwrap(), Change::Done(ResetType::On));
        assert_eq!(off.unwrap(), Change::Done(ResetType::ForceOff));
        assert_eq!(cycle.unwrap(), Change::Done(ResetType::ForceRestart));
        assert_eq!(observed_power(&emu, A).await, "On");
        assert_eq!(observed_power(&emu, B).await, "Off");
        assert_eq!(observed_power(&emu, C).await, "On");

        // Already there: nothing is sent.
        assert_eq!(
            power::power_on(&ca, &sa, wait()).await.unwrap(),
            Change::Unchanged(PowerState::On)
        );
        // Cycling a system that is off powers it on.
        assert_eq!(
            power::power_cycle(&cb, &sb, wait()).await.unwrap(),
            Change::Done(ResetType::On)
        );
        assert_eq!(observed_power(&emu, B).await, "On");
        for c in [&ca, &cb, &cc] {
            c.logout().await;
        }
    });
}

#[test]
fn discovery_pxe_override_and_virtual_media() {
    let Some(venv) = venv_or_skip("discovery_pxe_override_and_virtual_media") else {
        return;
    };
    let emu = emulator(
        &venv,
        vec![
            FakeSystem::new(A, "node-a", "02:00:00:00:0a:01"),
            FakeSystem::new(B, "node-b", "02:00:00:00:0b:01"),
        ],
        false,
    );
    let image = ImageServer::start("talos-metal-amd64.iso", vec![0x42; 64 * 1024]).unwrap();
    rt().block_on(async {
        let b = bmc(&emu.url);
        let c = client("node-b", &b);
        c.login().await.unwrap();

        // Two systems and nothing to tell them apart: refused, naming both.
        let e = system::discover(&c, None).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("2 systems") && msg.contains(A) && msg.contains(B), "{msg}");
        // Matched by MAC.
        let sys = system::discover(&c, Some("02:00:00:00:0b:01".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(sys.uuid.as_deref(), Some(B));
        assert_eq!(sys.name.as_deref(), Some("node-b"));
        let e = system::discover(&c, Some("02:00:00:00:ff:ff".parse().unwrap()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("has MAC 02:00:00:00:ff:ff"), "{e}");
        // By explicit id.
        let mut by_id = bmc(&emu.url);
        by_id.system_id = Some(A.into());
        let ca = client("node-a", &by_id);
        assert_eq!(system::discover(&ca, None).await.unwrap().id, A);

        // PXE override; sushy always reads back `Continuous` (quirk).
        let set = boot::set_override(&c, &sys, BootTarget::Pxe).await.unwrap();
        assert_eq!(set.target, BootTarget::Pxe);
        let seen = observe(&emu.system_url(B)).await;
        assert_eq!(seen["Boot"]["BootSourceOverrideTarget"], "Pxe");
        let other = observe(&emu.system_url(A)).await;
        assert_eq!(
            other["Boot"]["BootSourceOverrideTarget"], "Hdd",
            "the other system is untouched"
        );

        // Virtual media: the BMC downloads the image from our loopback server.
        let inserted = media::insert(&c, &sys, &image.url).await.unwrap();
        assert!(inserted.inserted);
        assert_eq!(inserted.image.as_deref(), Some(image.url.as_str()));
        assert!(
            inserted.path.ends_with(&format!("Systems/{B}/VirtualMedia/Cd")),
            "{}",
            inserted.path
        );
        assert!(image.hits() >= 1, "the emulator fetched the image");
        let seen = observe(&format!("{}/VirtualMedia/Cd", emu.system_url(B))).await;
        assert_eq!(
            (seen["Inserted"].as_bool(), seen["Image"].as_str()),
            (Some(true), Some(image.url.as_str()))
        );
        // Inserting the same image again is a no-op.
        let hits = image.hits();
        media::insert(&c, &sys, &image.url).await.unwrap();
        assert_eq!(image.hits(), hits);
        boot::set_override(&c, &sys, BootTarget::Cd).await.unwrap();
        assert_eq!(
            observe(&emu.system_url(B)).await["Boot"]["BootSourceOverrideTarget"],
            "Cd"
        );

        let ejected = media::eject(&c, &sys).await.unwrap();
        assert!(!ejected.inserted && ejected.image.is_none(), "{ejected:?}");
        let seen = observe(&format!("{}/VirtualMedia/Cd", emu.system_url(B))).await;
        assert_eq!(seen["Inserted"].as_bool(), Some(false));

        // An image the BMC cannot fetch: the BMC's error, with node and BMC.
        let dead = format!("http://127.0.0.1:{}/missing.iso", closed_port());
        let e = media::insert(&c, &sys, &dead).await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Http { .. }), "{e}");
        assert!(
            e.to_string().contains("node node-b") && e.to_string().contains(&emu.url),
            "{e}"
        );

        // A task resource is followed to its end state.
        task::wait(
            &c,
            "/redfish/v1/TaskService/Tasks/42",
            "test task",
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    });
}

#[test]
fn failures_name_the_node_and_bmc_and_never_the_password() {
    let Some(venv) = venv_or_skip("failures_name_the_node_and_bmc_and_never_the_password") else {
        return;
    };
    let emu = emulator(&venv, vec![FakeSystem::new(A, "node-a", "02:00:00:00:0a:01")], false);
    let tls = emulator(&venv, vec![FakeSystem::new(B, "node-b", "02:00:00:00:0b:01")], true);
    let pinned = tls.tls.clone().unwrap();
    rt().block_on(async {
        let mut errors = Vec::new();

        // Wrong password.
        let c = client_with("node-a", &bmc(&emu.url), "not-the-password");
        c.login().await.unwrap();
        let e = system::discover(&c, None).await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Unauthorized { status: 401, .. }), "{e}");
        assert!(e.to_string().contains("user `admin`"), "{e}");
        errors.push(e.to_string());

        // Unreachable BMC: a closed loopback port.
        let url = format!("http://127.0.0.1:{}", closed_port());
        let c = client("node-x", &bmc(&url));
        let e = c.login().await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Unreachable { .. }), "{e}");
        assert!(
            e.to_string().contains("node node-x") && e.to_string().contains(&url),
            "{e}"
        );
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
        errors.push(e.to_string());

        // Identity mismatch: nothing power- or boot-affecting is sent.
        let mut wrong = bmc(&emu.url);
        wrong.uuid = Some("99999999-0000-4000-8000-000000000099".into());
        let c = client("node-a", &wrong);
        let sys = system::discover(&c, None).await.unwrap();
        for e in [
            power::power_on(&c, &sys, wait()).await.unwrap_err(),
            boot::set_override(&c, &sys, BootTarget::Pxe).await.unwrap_err(),
            media::insert(&c, &sys, "http://127.0.0.1:9/x.iso").await.unwrap_err(),
        ] {
            assert!(matches!(e.kind, ErrorKind::Identity(_)), "{e}");
            assert!(e.to_string().contains(A) && e.to_string().contains("99999999"), "{e}");
            errors.push(e.to_string());
        }
        let mut wrong_serial = bmc(&emu.url);
        wrong_serial.serial = Some("SN-EXPECTED".into());
        let c = client("node-a", &wrong_serial);
        let sys = system::discover(&c, None).await.unwrap();
        let e = power::power_off(&c, &sys, wait()).await.unwrap_err();
        assert!(e.to_string().contains("reports no serial number"), "{e}");
        let seen = observe(&emu.system_url(A)).await;
        assert_eq!(seen["PowerState"], "Off");
        assert_eq!(seen["Boot"]["BootSourceOverrideTarget"], "Hdd");

        // TLS: a self-signed BMC is refused by default...
        let c = client("node-b", &bmc(&tls.url));
        let e = c.login().await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Unreachable { .. }), "{e}");
        errors.push(e.to_string());
        // ...accepted with its CA pinned, or its certificate's fingerprint...
        let mut with_ca = bmc(&tls.url);
        with_ca.ca = Some(pinned.ca_file.clone());
        let mut with_fp = bmc(&tls.url);
        with_fp.fingerprint = Some(pinned.fingerprint.clone());
        let mut unverified = bmc(&tls.url);
        unverified.verify_tls = false;
        for b in [&with_ca, &with_fp, &unverified] {
            let c = client("node-b", b);
            c.login().await.unwrap();
            assert_eq!(system::discover(&c, None).await.unwrap().id, B);
        }
        // ...and refused when the pinned fingerprint is another one.
        let mut other_fp = bmc(&tls.url);
        other_fp.fingerprint = Some("ab".repeat(32));
        let e = client("node-b", &other_fp).login().await.unwrap_err();
        assert!(e.to_string().contains("is not the pinned"), "{e}");
        errors.push(e.to_string());

        // A URL with credentials in it is refused before any request.
        let Err(e) = bootstrap::redfish::Client::new(
            "node-a",
            &bmc("http://admin:pw@127.0.0.1:1"),
            bootstrap::secret::Secret::new(PASSWORD.into()),
            Default::default(),
        ) else {
            panic!("credentials in the URL were accepted");
        };
        assert!(e.to_string().contains("must not carry credentials"), "{e}");
        assert!(!e.to_string().contains(":pw@"), "{e}");

        for e in &errors {
            assert!(!e.contains(PASSWORD), "password leaked: {e}");
        }
    });
}

/// The inventory `inventory/bmc-sim.toml`, pointed at running emulators.
fn sim_inventory(
    dir: &std::path::Path,
    bmc_ports: [u16; 3],
    talos_ports: [u16; 3],
    image_url: &str,
) -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/bmc-sim.toml");
    let mut text = std::fs::read_to_string(src).unwrap();
    let password = dir.join("bmc-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    text = text.replace("env:BMC_SIM_PASSWORD", &format!("file:{}", password.display()));
    text = text.replace("http://127.0.0.1:8180/talos-metal-amd64.iso", image_url);
    for i in 0..3 {
        text = text.replace(
            &format!("127.0.0.1:810{}", i + 1),
            &format!("127.0.0.1:{}", bmc_ports[i]),
        );
        let mac = format!("mac = \"02:00:7f:02:00:0{}\"\n", ["b", "c", "d"][i]);
        assert!(text.contains(&mac), "bmc-sim.toml changed: {mac}");
        text = text.replace(&mac, &format!("{mac}talos = {{ port = {} }}\n", talos_ports[i]));
    }
    let path = dir.join("bmc-sim.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const SIM: [&str; 3] = [
    "5a1d0000-0000-4000-8000-000000000001",
    "5a1d0000-0000-4000-8000-000000000002",
    "5a1d0000-0000-4000-8000-000000000003",
];

#[test]
fn example_bmc_inventory_is_valid() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/bmc-sim.toml"));
    let loaded = bootstrap::inventory::load(path).unwrap_or_else(|d| panic!("{d:?}"));
    let c = &loaded.inventory.clusters[0];
    assert_eq!(c.nodes.len(), 3);
    for n in &c.nodes {
        let b = n.bmc.as_ref().unwrap();
        assert!(b.url.starts_with("http://127.0.0.1:"), "loopback only: {}", b.url);
        assert!(n.ip.is_loopback());
    }
}

/// Three BMCs, one machine each. A machine "boots" (opens its Talos port)
/// only once all three report On, so provisioning must drive the three
/// BMCs at the same time to finish: sequential work would time out.
#[test]
fn three_bmcs_provisioned_concurrently_then_power_status_cli() {
    let Some(venv) = venv_or_skip("three_bmcs_provisioned_concurrently_then_power_status_cli") else {
        return;
    };
    let macs = ["02:00:7f:02:00:0b", "02:00:7f:02:00:0c", "02:00:7f:02:00:0d"];
    let configs = (0..3)
        .map(|i| xtask::sushy::EmulatorConfig {
            systems: vec![FakeSystem::new(SIM[i], &format!("metal-{}", i + 1), macs[i])],
            auth: Some((USER.into(), PASSWORD.into())),
            tls: false,
            port: None,
        })
        .collect();
    let emus = xtask::sushy::Emulator::start_many(&venv, configs).unwrap();
    let image = ImageServer::start("talos-metal-amd64.iso", vec![7; 32 * 1024]).unwrap();
    let ips = ["127.2.0.11", "127.2.0.12", "127.2.0.13"];
    let talos_ports: Vec<u16> = ips
        .iter()
        .map(|ip| {
            std::net::TcpListener::bind((*ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let inv = sim_inventory(
        dir.path(),
        [emus[0].port, emus[1].port, emus[2].port],
        [talos_ports[0], talos_ports[1], talos_ports[2]],
        &image.url,
    );
    let loaded = bootstrap::inventory::load(&inv).unwrap_or_else(|d| panic!("{d:?}"));
    let cluster = loaded.inventory.clusters[0].clone();

    rt().block_on(async {
        // The machines: each opens its Talos port once all three are On.
        let urls: Vec<String> = (0..3).map(|i| emus[i].system_url(SIM[i])).collect();
        let addrs: Vec<std::net::SocketAddr> = (0..3)
            .map(|i| format!("{}:{}", ips[i], talos_ports[i]).parse().unwrap())
            .collect();
        let machines = tokio::spawn(async move {
            loop {
                let mut on = 0;
                for u in &urls {
                    if observe(u).await["PowerState"] == "On" {
                        on += 1;
                    }
                }
                if on == 3 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            let mut listeners = Vec::new();
            for a in addrs {
                listeners.push(tokio::net::TcpListener::bind(a).await.unwrap());
            }
            listeners
        });

        let opts = bootstrap::provision::Options {
            concurrency: 3,
            power: wait(),
            ready_timeout: std::time::Duration::from_secs(120),
            ..Default::default()
        };
        let results = bootstrap::provision::provision_missing(&cluster, &opts).await;
        let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["metal-1", "metal-2", "metal-3"]);
        for (name, r) in &results {
            match r {
                Ok(bootstrap::provision::Outcome::Provisioned { boot, power, .. }) => {
                    let want = if name == "metal-3" { "Cd " } else { "Pxe" };
                    assert!(boot.starts_with(want), "{name}: {boot}");
                    assert_eq!(power, &Change::Done(ResetType::On), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let _listeners = machines.await.unwrap();
        for i in 0..3 {
            let seen = observe(&urls_of(&emus, i)).await;
            assert_eq!(seen["PowerState"], "On");
            let want = if i == 2 { "Cd" } else { "Pxe" };
            assert_eq!(seen["Boot"]["BootSourceOverrideTarget"], want, "metal-{}", i + 1);
        }
        let cd = observe(&format!("{}/VirtualMedia/Cd", urls_of(&emus, 2))).await;
        assert_eq!(cd["Image"].as_str(), Some(image.url.as_str()));
        assert!(image.hits() >= 1);

        // Nodes that answer are left alone.
        let again = bootstrap::provision::provision_missing(&cluster, &opts).await;
        for (name, r) in again {
            assert!(
                matches!(r, Ok(bootstrap::provision::Outcome::AlreadyAnswering(_))),
                "{name}: {r:?}"
            );
        }

        // The CLI: one line per node.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .arg("-i")
            .arg(&inv)
            .args(["power", "status"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        eprintln!("bootstrap power status:\n{stdout}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        for (i, l) in lines.iter().enumerate() {
            assert!(l.starts_with(&format!("metal-{}: On (system {}", i + 1, SIM[i])), "{l}");
            assert!(l.contains(&format!("127.0.0.1:{}", emus[i].port)), "{l}");
        }
        assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

        // `bootstrap provision` leaves nodes that answer alone.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .arg("-i")
            .arg(&inv)
            .args(["provision", "--concurrency", "3"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        for (i, l) in lines.iter().enumerate() {
            assert!(
                l.starts_with(&format!(
                    "metal-{}: already answers on {}",
                    i + 1,
                    addrs_of(&ips, &talos_ports, i)
                )),
                "{l}"
            );
        }

        // off and cycle want --yes; without it nothing is sent.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .arg("-i")
            .arg(&inv)
            .args(["power", "off", "--nodes", "metal-2"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--yes") && stderr.contains("metal-2"), "{stderr}");
        assert_eq!(observe(&urls_of(&emus, 1)).await["PowerState"], "On");

        // A wrong password through the CLI: the error names node and BMC.
        std::fs::write(dir.path().join("bmc-password"), "wrong\n").unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .arg("-i")
            .arg(&inv)
            .args(["power", "status", "--nodes", "metal-1"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("node metal-1") && stderr.contains(&format!("127.0.0.1:{}", emus[0].port)),
            "{stderr}"
        );
        assert!(stderr.contains("refused the credentials"), "{stderr}");
    });
}

fn urls_of(emus: &[xtask::sushy::Emulator], i: usize) -> String {
    emus[i].system_url(SIM[i])
}

/// Sessions, ETags and task monitors, which sushy lacks, through a Redfish
/// front (xtask) that adds them the way real BMCs do.
#[test]
fn session_auth_etag_and_task_monitor() {
    let Some(venv) = venv_or_skip("session_auth_etag_and_task_monitor") else {
        return;
    };
    let emu = emulator(
        &venv,
        vec![
            FakeSystem::new(A, "node-a", "02:00:00:00:0a:01"),
            FakeSystem::new(B, "node-b", "02:00:00:00:0b:01"),
        ],
        false,
    );
    let front = xtask::redfish_front::RedfishFront::start(&emu).unwrap();
    let image = ImageServer::start("installer.iso", vec![1; 4096]).unwrap();
    let stat = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::SeqCst);
    rt().block_on(async {
        // Wrong password: the session is refused at login.
        let c = client_with("node-a", &bmc(&front.url), "wrong-password");
        let e = c.login().await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Unauthorized { .. }), "{e}");
        assert!(
            e.to_string().contains("creating a session") && e.to_string().contains(&front.url),
            "{e}"
        );
        assert!(!e.to_string().contains("wrong-password"));

        // Two systems: the inventory's serial picks one, and the identity
        // check compares it before every change.
        let mut by_serial = bmc(&front.url);
        by_serial.serial = Some(xtask::redfish_front::serial_of(A));
        let c = client("node-a", &by_serial);
        c.login().await.unwrap();
        assert!(c.has_session());
        assert_eq!((stat(&front.stats.logins), front.open_sessions()), (1, 1));

        let mut sys = system::discover(&c, None).await.unwrap();
        assert_eq!(sys.id, A);
        assert!(sys.etag.is_some(), "the front serves ETags");
        assert!(sys.virtual_media.is_none(), "virtual media only under the manager here");
        boot::set_override(&c, &sys, BootTarget::Pxe).await.unwrap();
        assert_eq!(stat(&front.stats.if_match_ok), 1);
        // A stale ETag is answered 412: read again and retry once.
        sys.etag = Some("\"stale\"".into());
        boot::set_override(&c, &sys, BootTarget::Cd).await.unwrap();
        assert_eq!(stat(&front.stats.if_match_refused), 1);
        assert_eq!(stat(&front.stats.if_match_ok), 2);
        assert_eq!(
            observe(&emu.system_url(A)).await["Boot"]["BootSourceOverrideTarget"],
            "Cd"
        );
        assert_eq!(
            observe(&emu.system_url(B)).await["Boot"]["BootSourceOverrideTarget"],
            "Hdd"
        );

        // InsertMedia, found through the manager, answers 202: the task
        // monitor is followed to the end.
        let m = media::insert(&c, &sys, &image.url).await.unwrap();
        assert!(m.inserted && image.hits() >= 1, "{m:?}");
        let dead = format!("http://127.0.0.1:{}/gone.iso", closed_port());
        let e = media::insert(&c, &sys, &dead).await.unwrap_err();
        assert!(e.to_string().contains("ended Exception"), "{e}");

        c.logout().await;
        assert_eq!((stat(&front.stats.logouts), front.open_sessions()), (1, 0));
    });
}

fn addrs_of(ips: &[&str], ports: &[u16], i: usize) -> String {
    format!("{}:{}", ips[i], ports[i])
}

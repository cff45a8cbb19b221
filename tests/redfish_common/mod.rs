//! Shared set-up of the Redfish emulator tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bootstrap::inventory::{Bmc, BootMethod};
use bootstrap::redfish::power::Wait;
use bootstrap::redfish::{Client, ClientOptions};
use bootstrap::secret::{Secret, SecretRef};
use serde_json::Value;
use xtask::sushy::{Emulator, EmulatorConfig, FakeSystem};

pub const USER: &str = "admin";
/// The emulators' password; no error or output may ever contain it.
pub const PASSWORD: &str = "Pw-7f3c9e1d-never-print";

/// A multi-threaded runtime for one test.
pub fn rt() -> tokio::runtime::Runtime {
    bootstrap::tls::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An emulator with basic auth (`USER`/`PASSWORD`) and these systems.
pub fn emulator(venv: &Path, systems: Vec<FakeSystem>, tls: bool) -> Emulator {
    Emulator::start(
        venv,
        EmulatorConfig {
            systems,
            auth: Some((USER.into(), PASSWORD.into())),
            tls,
            port: None,
        },
    )
    .expect("start sushy-emulator")
}

/// `[bmc]` for `url`, verification on, nothing pinned.
pub fn bmc(url: &str) -> Bmc {
    Bmc {
        url: url.into(),
        user: USER.into(),
        password: SecretRef::Env("BMC_PASSWORD_UNUSED_IN_TESTS".into()),
        system_id: None,
        verify_tls: true,
        ca: None,
        fingerprint: None,
        boot: BootMethod::Pxe,
        image_url: None,
        uuid: None,
        serial: None,
    }
}

/// A client for `bmc` on behalf of `node`, with `password`.
pub fn client_with(node: &str, bmc: &Bmc, password: &str) -> Client {
    Client::new(node, bmc, Secret::new(password.into()), ClientOptions::default()).expect("client")
}

/// A client with the right password.
pub fn client(node: &str, bmc: &Bmc) -> Client {
    client_with(node, bmc, PASSWORD)
}

/// Generous: the emulator lands power changes 1 to 11 s later.
pub fn wait() -> Wait {
    Wait {
        timeout: Duration::from_secs(90),
        interval: Duration::from_millis(500),
    }
}

/// Reads a resource straight from the emulator (plain reqwest, not our
/// client), to observe its state independently.
pub async fn observe(url: &str) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The emulator's view of a system's power state.
pub async fn observed_power(emu: &Emulator, uuid: &str) -> String {
    observe(&emu.system_url(uuid)).await["PowerState"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

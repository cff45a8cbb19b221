//! One simulated node: its mode (maintenance or configured), its listener on
//! `IP:50000` and the "reboot" that closes and reopens it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bootstrap::talos::MAX_MESSAGE_SIZE;
use bootstrap::talos::proto::cosi::resource::state_server::StateServer;
use bootstrap::talos::proto::machine::machine_service_server::MachineServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use super::cluster::{ClusterState, ControlPlane};
use super::config::{MachineConfig, MachineType};
use super::hardware::Hardware;
use super::pki;
use super::resources::Resources;
use super::service::Service;
use super::{CallRecord, Faults, SimShared};

/// What a node is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    /// Fresh or reset: throwaway certificate, reader rights only.
    Maintenance,
    /// Running with an applied configuration, mTLS.
    Configured,
}

pub(crate) struct NodeState {
    pub config: Option<Arc<MachineConfig>>,
    /// Key of the cluster the node belongs to (set while configured).
    pub cluster: Option<String>,
    pub up: bool,
    pub booted_at: Instant,
    /// Wall-clock time of the last boot (resource timestamps).
    pub booted_wall: SystemTime,
    /// Bumped at every boot; reboot tasks of an older boot give up.
    pub generation: u64,
    pub pending_snapshot: Option<Vec<u8>>,
    /// A reboot is scheduled or under way: calls get UNAVAILABLE.
    pub rebooting: bool,
    /// The installed Talos version when it differs from [`super::SimOptions::talos_version`].
    pub version: Option<String>,
    /// The installer image of the last Upgrade.
    pub installer_image: Option<String>,
    /// etcd on this node is unhealthy (fault `etcd_unhealthy_after_reboot`).
    pub etcd_unhealthy: bool,
    /// An upgrade sequence runs (MachineStatus stage Upgrading) until its reboot.
    pub upgrading: bool,
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A simulated Talos node. Obtain through [`super::TalosSim::node`].
pub struct SimNode {
    name: String,
    addr: SocketAddr,
    pub(crate) shared: Arc<SimShared>,
    pub(crate) state: Mutex<NodeState>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) calls: Mutex<Vec<CallRecord>>,
    /// TLS handshakes completed (connections a client opened).
    handshakes: std::sync::atomic::AtomicUsize,
    hardware: Mutex<Hardware>,
    /// The TLS configuration new connections are accepted with (replaced by a re-key).
    tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimNode {
    pub(crate) fn new(name: String, addr: SocketAddr, shared: Arc<SimShared>) -> Arc<Self> {
        Arc::new(Self {
            name,
            addr,
            shared,
            state: Mutex::new(NodeState {
                config: None,
                cluster: None,
                up: false,
                booted_at: Instant::now(),
                booted_wall: SystemTime::now(),
                generation: 0,
                pending_snapshot: None,
                rebooting: false,
                version: None,
                installer_image: None,
                etcd_unhealthy: false,
                upgrading: false,
            }),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(Vec::new()),
            handshakes: std::sync::atomic::AtomicUsize::new(0),
            hardware: Mutex::new(Hardware::default_for(addr.ip())),
            tls: Mutex::new(None),
            running: tokio::sync::Mutex::new(None),
        })
    }

    /// The node's name (as used in logs and etcd membership).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `IP:port` of its Talos API.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its hostname: from the applied configuration, else derived from the IP.
    pub fn hostname(&self) -> String {
        lock(&self.state)
            .config
            .as_ref()
            .and_then(|c| c.hostname.clone())
            .unwrap_or_else(|| default_hostname(self.addr.ip()))
    }

    /// Maintenance or configured.
    pub fn mode(&self) -> NodeMode {
        match lock(&self.state).config {
            Some(_) => NodeMode::Configured,
            None => NodeMode::Maintenance,
        }
    }

    /// Whether the API is listening (false while rebooting or powered off).
    pub fn is_up(&self) -> bool {
        lock(&self.state).up
    }

    /// The Talos version the node runs (Version's tag).
    pub fn version(&self) -> String {
        lock(&self.state)
            .version
            .clone()
            .unwrap_or_else(|| self.shared.options.talos_version.clone())
    }

    /// The installer image the last Upgrade installed, if any.
    pub fn installer_image(&self) -> Option<String> {
        lock(&self.state).installer_image.clone()
    }

    /// Whether the node's etcd is reported unhealthy.
    pub fn etcd_unhealthy(&self) -> bool {
        lock(&self.state).etcd_unhealthy
    }

    /// Makes the node report its etcd unhealthy now (or healthy again), as
    /// the `etcd_unhealthy_after_reboot` fault does after a reboot.
    pub fn set_etcd_unhealthy(&self, unhealthy: bool) {
        lock(&self.state).etcd_unhealthy = unhealthy;
    }

    /// The applied configuration, if any.
    pub fn config(&self) -> Option<Arc<MachineConfig>> {
        lock(&self.state).config.clone()
    }

    /// The key of the simulated cluster the node belongs to, once configured.
    pub fn cluster_id(&self) -> Option<String> {
        lock(&self.state).cluster.clone()
    }

    /// What the node reports through the resource API (SystemInformation, Disks).
    pub fn hardware(&self) -> Hardware {
        lock(&self.hardware).clone()
    }

    /// Replaces the hardware the node reports (another machine, other disks).
    pub fn set_hardware(&self, hardware: Hardware) {
        *lock(&self.hardware) = hardware;
    }

    /// Changes the hardware the node reports.
    pub fn update_hardware(&self, change: impl FnOnce(&mut Hardware)) {
        change(&mut lock(&self.hardware));
    }

    /// Wall-clock time of the current boot.
    pub(crate) fn booted_at(&self) -> SystemTime {
        lock(&self.state).booted_wall
    }

    /// Every call received so far, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.calls).clone()
    }

    /// TLS handshakes completed so far: how many connections clients opened.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    /// Current fault knobs.
    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Changes the fault knobs.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut lock(&self.faults));
    }

    /// The shared state of the cluster the node belongs to, once configured.
    pub fn cluster(&self) -> Option<Arc<Mutex<ClusterState>>> {
        let key = lock(&self.state).cluster.clone()?;
        Some(self.shared.cluster(&key))
    }

    /// Opens the listener in the current mode. A worker waits for a control
    /// plane of its cluster to provide the OS CA (trustd), up to `wait`.
    pub(crate) async fn boot(self: &Arc<Self>, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        let tls = loop {
            match self.prepare_tls() {
                Ok(Some(tls)) => break tls,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(None) => return Err(format!("{}: no control plane provides the OS CA", self.name)),
                Err(e) => return Err(format!("{}: {e}", self.name)),
            }
        };
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|e| format!("{}: cannot listen on {}: {e}", self.name, self.addr))?;
        let generation = {
            let mut st = lock(&self.state);
            st.up = true;
            st.rebooting = false;
            st.upgrading = false;
            st.booted_at = Instant::now();
            st.booted_wall = SystemTime::now();
            st.generation += 1;
            st.generation
        };
        let running = self.serve(listener, Arc::new(tls), generation);
        *self.running.lock().await = Some(running);
        Ok(())
    }

    /// The TLS configuration for the current mode; `None` when a worker has
    /// nobody to get its certificate from yet. Registers control planes with
    /// their cluster and lets them join a running etcd.
    fn prepare_tls(&self) -> Result<Option<rustls::ServerConfig>, String> {
        let (config, cluster_key) = {
            let st = lock(&self.state);
            (st.config.clone(), st.cluster.clone())
        };
        let (Some(config), Some(cluster_key)) = (config, cluster_key) else {
            return pki::maintenance_server_config(self.addr.ip()).map(Some);
        };
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| default_hostname(self.addr.ip()));
        let cluster = self.shared.cluster(&cluster_key);
        let ca_key = {
            let mut cluster = lock(&cluster);
            match config.machine_type {
                MachineType::ControlPlane => {
                    let key = config
                        .os_ca_key
                        .clone()
                        .expect("validated: control planes carry the CA key");
                    cluster.os_ca = Some((config.os_ca_crt.clone(), key.clone()));
                    cluster.control_planes.insert(
                        self.name.clone(),
                        ControlPlane {
                            hostname: hostname.clone(),
                            ip: self.addr.ip(),
                        },
                    );
                    cluster.join(&self.name);
                    // Talos's etcd service: a control plane joins a running cluster (member add,
                    // then start with state existing) or restarts its own member after a reboot.
                    let unhealthy = lock(&self.state).etcd_unhealthy;
                    if let Some(real) = cluster.real.clone()
                        && !unhealthy
                        && (real.any_running() || real.has_member(&hostname))
                    {
                        let (name, ip) = (hostname.clone(), self.addr.ip());
                        tokio::spawn(async move {
                            if let Err(e) = real.join(&name, ip).await {
                                tracing::warn!("talos-sim: etcd on {name} did not join: {e}");
                            }
                        });
                    }
                    key
                }
                MachineType::Worker => match &cluster.os_ca {
                    Some((_, key)) => key.clone(),
                    None => return Ok(None),
                },
            }
        };
        pki::configured_server_config(self.addr.ip(), &hostname, &config.cert_sans, &config.os_ca_crt, &ca_key)
            .map(Some)
    }

    fn serve(self: &Arc<Self>, listener: TcpListener, tls: Arc<rustls::ServerConfig>, generation: u64) -> Running {
        let (stop, mut stop_rx) = watch::channel(false);
        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(64);
        *lock(&self.tls) = Some(tls);
        let node = self.clone();
        let mut accept_stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = accept_stop.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let Some(tls) = lock(&node.tls).clone() else { continue };
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                        let tx = conn_tx.clone();
                        let counted = node.clone();
                        tokio::spawn(async move {
                            // A refused client certificate ends the handshake here.
                            if let Ok(Ok(tls)) =
                                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                            {
                                counted.handshakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                            }
                        });
                    }
                }
            }
            // The listener is dropped here: the port is closed at once.
        });
        let service = MachineServiceServer::new(Service::new(self.clone(), generation))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        // The COSI State service shares the API port (machined behind apid; cosi-api.md).
        let resources = StateServer::new(Resources::new(self.clone(), generation))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.changed().await;
            };
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(resources)
                .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), shutdown)
                .await;
        });
        Running { stop, task }
    }

    /// Closes the listener and ends the server (gracefully, then by force).
    pub(crate) async fn shutdown(&self) {
        lock(&self.state).up = false;
        // The node's etcd stops with it (its data stays for the next boot).
        if let Some(cluster) = self.cluster()
            && let Some(real) = lock(&cluster).real.clone()
        {
            real.stop(&self.hostname());
        }
        if let Some(running) = self.running.lock().await.take() {
            let _ = running.stop.send(true);
            let abort = running.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), running.task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Reboots after the current response went out: down for the reboot
    /// delay (or forever with `fail_reboot`), then `change` is applied to the
    /// state and the node boots again.
    pub(crate) fn reboot_with(self: &Arc<Self>, change: impl FnOnce(&mut NodeState) + Send + 'static) {
        let node = self.clone();
        {
            let mut st = lock(&self.state);
            if st.rebooting {
                return;
            }
            st.rebooting = true;
        }
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            node.shutdown().await;
            let faults = node.faults();
            let delay = faults.reboot_delay.unwrap_or(node.shared.options.reboot_delay);
            tokio::time::sleep(delay).await;
            change(&mut lock(&node.state));
            if faults.etcd_unhealthy_after_reboot {
                node.update_faults(|f| f.etcd_unhealthy_after_reboot = false);
                lock(&node.state).etcd_unhealthy = true;
            }
            if faults.fail_reboot {
                tracing::debug!(node = node.name, "simulated failed reboot: staying down");
                return;
            }
            if let Err(e) = node.boot(Duration::from_secs(30)).await {
                tracing::warn!("simulated node did not come back: {e}");
            }
        });
    }

    /// Another machine takes over the node's address: from now on new
    /// connections get a fresh throwaway maintenance certificate (open
    /// connections keep theirs). Fault injection for certificate pinning.
    pub(crate) fn swap_certificate(&self) {
        match pki::maintenance_server_config(self.addr.ip()) {
            Ok(config) => *lock(&self.tls) = Some(Arc::new(config)),
            Err(e) => tracing::warn!("simulated certificate swap failed: {e}"),
        }
    }

    /// Boots a node that was left down (failed reboot, reset without reboot).
    pub async fn power_on(self: &Arc<Self>) -> Result<(), String> {
        if self.is_up() {
            return Ok(());
        }
        self.boot(Duration::from_secs(30)).await
    }

    pub(crate) fn record(&self, method: &'static str, mutating: bool, injected: Option<&'static str>) {
        lock(&self.calls).push(CallRecord {
            method,
            at: SystemTime::now(),
            mutating,
            mode: self.mode(),
            injected,
        });
    }
}

/// Talos-like default hostname from the address.
pub(crate) fn default_hostname(ip: IpAddr) -> String {
    format!("talos-{}", ip.to_string().replace(['.', ':'], "-"))
}

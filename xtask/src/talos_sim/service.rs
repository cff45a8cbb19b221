//! The `machine.MachineService` of a simulated node, with Talos semantics for
//! the RPCs `bootstrap` uses.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bootstrap::talos::proto::common::{Data, Metadata};
use bootstrap::talos::proto::machine::{self as pb, machine_service_server::MachineService};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::cluster::{decode_snapshot, encode_snapshot};
use super::config::{self, MachineType};
use super::node::{NodeMode, SimNode, lock};
use super::pki;
use crate::etcd::member::EtcdError;

type DataStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

/// Snapshot chunk size on the wire.
const SNAPSHOT_CHUNK: usize = 1024;

/// The rights an RPC needs (Talos roles in the client certificate's Subject O).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Reader,
    Operator,
    Admin,
    /// EtcdSnapshot: admin, operator or etcd:backup.
    Backup,
    /// ApplyConfiguration: admin, or anyone in maintenance mode.
    Apply,
}

/// Serves one boot of one node.
pub(crate) struct Service {
    node: Arc<SimNode>,
    generation: u64,
}

impl Service {
    pub(crate) fn new(node: Arc<SimNode>, generation: u64) -> Self {
        Self { node, generation }
    }

    fn metadata(&self) -> Option<Metadata> {
        Some(Metadata {
            hostname: self.node.hostname(),
            error: String::new(),
            status: None,
        })
    }

    /// Logs the call, applies injected faults and checks the caller's rights.
    pub(crate) async fn enter<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        mutating: bool,
        need: Need,
    ) -> Result<(), Status> {
        let (latency, refuse) = {
            let mut f = lock(&self.node.faults);
            let refuse = f.refuse_next > 0;
            if refuse {
                f.refuse_next -= 1;
            }
            (f.latency, refuse)
        };
        self.node.record(method, mutating, refuse.then_some("unavailable"));
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if refuse {
            return Err(Status::unavailable("simulated fault: node unavailable"));
        }
        let (generation, rebooting) = {
            let st = lock(&self.node.state);
            (st.generation, st.rebooting)
        };
        if generation != self.generation || rebooting {
            return Err(Status::unavailable("node is rebooting"));
        }
        let maintenance = self.node.mode() == NodeMode::Maintenance;
        let roles: Vec<String> = if maintenance {
            vec!["os:reader".into()]
        } else {
            let certs = req
                .peer_certs()
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            certs.first().map(|c| pki::roles(c)).unwrap_or_default()
        };
        let has = |r: &str| roles.iter().any(|x| x == r);
        let allowed = match need {
            Need::Reader => has("os:admin") || has("os:operator") || has("os:reader"),
            Need::Operator => has("os:admin") || has("os:operator"),
            Need::Admin => has("os:admin"),
            Need::Backup => has("os:admin") || has("os:operator") || has("os:etcd:backup"),
            Need::Apply => maintenance || has("os:admin"),
        };
        if allowed {
            Ok(())
        } else if maintenance {
            Err(Status::permission_denied(format!(
                "{method} is not allowed in maintenance mode"
            )))
        } else {
            Err(Status::permission_denied(format!(
                "not authorized: roles {roles:?} cannot call {method}"
            )))
        }
    }

    fn config(&self) -> Result<Arc<config::MachineConfig>, Status> {
        self.node
            .config()
            .ok_or_else(|| Status::failed_precondition("the node has no configuration"))
    }

    fn control_plane(&self, what: &str) -> Result<Arc<config::MachineConfig>, Status> {
        let config = self.config()?;
        if config.machine_type != MachineType::ControlPlane {
            return Err(Status::failed_precondition(format!(
                "{what} is only available on control plane nodes"
            )));
        }
        Ok(config)
    }

    /// FailedPrecondition until the configured node had time to start its services.
    fn ready(&self) -> Result<(), Status> {
        let booted = lock(&self.node.state).booted_at;
        if booted.elapsed() < self.node.shared.options.ready_delay {
            return Err(Status::failed_precondition("etcd is not available yet"));
        }
        Ok(())
    }

    fn cluster(&self) -> Result<Arc<std::sync::Mutex<super::cluster::ClusterState>>, Status> {
        self.node
            .cluster()
            .ok_or_else(|| Status::failed_precondition("the node belongs to no cluster"))
    }

    fn stream_chunks(&self, payload: Vec<u8>, chunk: usize) -> DataStream {
        let drop_after_first = {
            let mut f = lock(&self.node.faults);
            let drop = f.drop_next_streams > 0;
            if drop {
                f.drop_next_streams -= 1;
            }
            drop
        };
        let md = self.metadata();
        let mut items: Vec<Result<Data, Status>> = payload
            .chunks(chunk)
            .enumerate()
            .map(|(i, bytes)| {
                Ok(Data {
                    metadata: if i == 0 { md.clone() } else { None },
                    bytes: bytes.to_vec(),
                })
            })
            .collect();
        if drop_after_first {
            items.truncate(1);
            items.push(Err(Status::unavailable(
                "simulated fault: connection dropped mid-stream",
            )));
        }
        Box::pin(futures::stream::iter(items))
    }
}

fn ts(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(t))
}

fn service_info(id: &str, state: &str, healthy: bool) -> pb::ServiceInfo {
    pb::ServiceInfo {
        id: id.into(),
        state: state.into(),
        events: Some(pb::ServiceEvents {
            events: vec![pb::ServiceEvent {
                msg: format!("Service {state}"),
                state: state.into(),
                ts: ts(SystemTime::now()),
            }],
        }),
        health: Some(pb::ServiceHealth {
            unknown: !healthy && state != "Running",
            healthy,
            last_message: String::new(),
            last_change: ts(SystemTime::now()),
        }),
    }
}

/// gzip'd tar with the single entry `kubeconfig` and, like Talos, no
/// end-of-archive blocks.
fn kubeconfig_archive(kubeconfig: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut header = tar::Header::new_gnu();
    header.set_path("kubeconfig")?;
    header.set_size(kubeconfig.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(kubeconfig);
    tar.resize(512 + kubeconfig.len().div_ceil(512) * 512, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    gz.finish()
}

/// gRPC status for a failed real-etcd operation.
fn etcd_status(e: EtcdError) -> Status {
    match e {
        EtcdError::AlreadyRunning => Status::already_exists(e.to_string()),
        EtcdError::NotRunning => Status::failed_precondition(e.to_string()),
        EtcdError::Failed(m) if m.contains("member not found") => Status::not_found(m),
        EtcdError::Failed(m) => Status::internal(m),
    }
}

/// The version an installer image installs: its tag (`…/installer:v1.13.10`).
/// Upstream: Talos docs, "Upgrading Talos Linux" (`--image ghcr.io/siderolabs/installer:<version>`).
fn installer_version(image: &str) -> Option<String> {
    let (repo, tag) = image.rsplit_once(':')?;
    (!repo.is_empty() && !tag.is_empty() && !tag.contains('/')).then(|| tag.to_owned())
}

impl Service {
    /// Bootstrap against real etcd: the first member (restored from the
    /// uploaded snapshot with `recover_etcd`), then every other configured
    /// control plane joins in the background, one at a time.
    async fn bootstrap_real(
        &self,
        cluster: &Arc<std::sync::Mutex<super::cluster::ClusterState>>,
        real: Arc<crate::etcd::EtcdCluster>,
        req: &pb::BootstrapRequest,
    ) -> Result<(), Status> {
        let snapshot = if req.recover_etcd {
            let pending = lock(&self.node.state).pending_snapshot.clone();
            Some(pending.ok_or_else(|| Status::failed_precondition("no etcd snapshot was uploaded for recovery"))?)
        } else {
            None
        };
        let hostname = self.node.hostname();
        real.bootstrap(
            &hostname,
            self.node.addr().ip(),
            snapshot.as_deref(),
            req.recover_skip_hash_check,
        )
        .await
        .map_err(|e| match e {
            EtcdError::Failed(m) if req.recover_etcd => Status::invalid_argument(m),
            e => etcd_status(e),
        })?;
        lock(&self.node.state).pending_snapshot = None;
        let others: Vec<(String, std::net::IpAddr)> = lock(cluster)
            .control_planes
            .iter()
            .filter(|(n, _)| n.as_str() != self.node.name())
            .map(|(_, cp)| (cp.hostname.clone(), cp.ip))
            .collect();
        tokio::spawn(async move {
            for (name, ip) in others {
                if let Err(e) = real.join(&name, ip).await {
                    tracing::warn!("talos-sim: etcd on {name} did not join: {e}");
                }
            }
        });
        Ok(())
    }

    /// Talos's quorum guard before a control plane upgrade
    /// (internal/pkg/etcd/etcd.go, `ValidateForUpgrade`).
    async fn validate_for_upgrade(&self, preserve: bool) -> Result<(), Status> {
        let cluster = self.cluster()?;
        let (real, count) = {
            let c = lock(&cluster);
            (c.real.clone(), c.etcd.as_ref().map(|e| e.members.len()))
        };
        let members = match real {
            Some(real) => real.member_list(&self.node.hostname()).await.map_err(etcd_status)?,
            None => Vec::new(),
        };
        let n = count.unwrap_or(members.len());
        let refuse = |m: String| Err(Status::failed_precondition(m));
        if !preserve && n == 1 {
            return refuse("only 1 etcd member found; assuming this is not an HA setup and refusing to upgrade; if this is a single-node cluster, use --preserve to upgrade".into());
        }
        if n == 2 {
            return refuse(format!(
                "etcd member count({n}) is insufficient to maintain quorum if upgrade commences"
            ));
        }
        for m in &members {
            if m.name.is_empty() {
                return refuse(format!(
                    "etcd member {} is not started, all members must be running to perform an upgrade",
                    m.id
                ));
            }
            let healthy = match m.client_urls.first() {
                Some(url) => crate::etcd::EtcdClient::new(url).healthy().await,
                None => false,
            };
            if !healthy {
                return refuse(format!(
                    "etcd member {} is not healthy; all members must be healthy to perform an upgrade",
                    m.id
                ));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl MachineService for Service {
    type KubeconfigStream = DataStream;
    type EtcdSnapshotStream = DataStream;

    async fn apply_configuration(
        &self,
        request: Request<pb::ApplyConfigurationRequest>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        self.enter(&request, "ApplyConfiguration", true, Need::Apply).await?;
        let req = request.into_inner();
        let config = config::parse(&req.data).map_err(Status::invalid_argument)?;
        use pb::apply_configuration_request::Mode;
        let requested = Mode::try_from(req.mode).unwrap_or(Mode::Auto);
        let maintenance = self.node.mode() == NodeMode::Maintenance;
        if !maintenance && requested == Mode::Staged {
            return Err(Status::unimplemented("staged configuration is not simulated"));
        }
        if !maintenance
            && let Some(current) = self.node.config()
            && (current.machine_type != config.machine_type || current.cluster_id != config.cluster_id)
        {
            return Err(Status::invalid_argument(
                "machine type and cluster identity cannot change; reset the node first",
            ));
        }
        let mut mode = Mode::Reboot;
        let details;
        if req.dry_run {
            details = "Dry run: the configuration is valid".to_owned();
            mode = requested;
        } else if !maintenance && requested == Mode::NoReboot {
            lock(&self.node.state).config = Some(Arc::new(config));
            mode = Mode::NoReboot;
            details = "Applied configuration without a reboot".into();
        } else {
            let wrong_identity = lock(&self.node.faults).wrong_cluster_identity;
            let cluster_key = if wrong_identity {
                format!("{}/wrong-identity-{}", config.cluster_id, self.node.name())
            } else {
                config.cluster_id.clone()
            };
            let config = Arc::new(config);
            self.node.reboot_with(move |st| {
                st.config = Some(config);
                st.cluster = Some(cluster_key);
            });
            details = "Applied configuration with a reboot: the node installs and reboots".into();
        }
        Ok(Response::new(pb::ApplyConfigurationResponse {
            messages: vec![pb::ApplyConfiguration {
                metadata: self.metadata(),
                warnings: Vec::new(),
                mode: mode as i32,
                mode_details: details,
            }],
        }))
    }

    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapResponse>, Status> {
        self.enter(&request, "Bootstrap", true, Need::Admin).await?;
        let req = request.into_inner();
        let config = self.control_plane("bootstrap")?;
        self.ready()?;
        let cluster = self.cluster()?;
        let real = lock(&cluster).real.clone();
        if let Some(real) = real {
            self.bootstrap_real(&cluster, real, &req).await?;
            return Ok(Response::new(pb::BootstrapResponse {
                messages: vec![pb::Bootstrap {
                    metadata: self.metadata(),
                }],
            }));
        }
        if lock(&cluster).etcd.is_some() {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        let snapshot = if req.recover_etcd {
            let pending = lock(&self.node.state).pending_snapshot.clone();
            let bytes =
                pending.ok_or_else(|| Status::failed_precondition("no etcd snapshot was uploaded for recovery"))?;
            Some(decode_snapshot(&bytes, req.recover_skip_hash_check).map_err(Status::invalid_argument)?)
        } else {
            None
        };
        {
            let mut cluster = lock(&cluster);
            if cluster.etcd.is_some() {
                return Err(Status::already_exists("etcd data directory is not empty"));
            }
            let (kv, revision) = snapshot.unwrap_or_else(|| {
                let kv = [("/talos/cluster-id".to_owned(), config.cluster_id.clone())]
                    .into_iter()
                    .collect();
                (kv, 1)
            });
            cluster.start_etcd(self.node.name(), kv, revision);
        }
        lock(&self.node.state).pending_snapshot = None;
        Ok(Response::new(pb::BootstrapResponse {
            messages: vec![pb::Bootstrap {
                metadata: self.metadata(),
            }],
        }))
    }

    async fn kubeconfig(&self, request: Request<()>) -> Result<Response<Self::KubeconfigStream>, Status> {
        self.enter(&request, "Kubeconfig", false, Need::Admin).await?;
        let config = self.control_plane("kubeconfig")?;
        let server = lock(&self.node.shared.kube_api_url)
            .clone()
            .unwrap_or_else(|| config.endpoint.clone());
        let key = config.k8s_ca_key.as_deref().unwrap_or_default();
        let yaml = pki::admin_kubeconfig(&config.cluster_name, &server, &config.k8s_ca_crt, key)
            .map_err(|e| Status::internal(format!("generating kubeconfig: {e}")))?;
        let archive = kubeconfig_archive(yaml.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(self.stream_chunks(archive, usize::MAX)))
    }

    async fn reset(&self, request: Request<pb::ResetRequest>) -> Result<Response<pb::ResetResponse>, Status> {
        self.enter(&request, "Reset", true, Need::Admin).await?;
        let req = request.into_inner();
        self.config()?;
        if let Some(cluster) = self.node.cluster() {
            // Talos's reset: a graceful one leaves etcd first (`leaveEtcd`), any reset wipes
            // the member's data (machined's ResetSystemDisk sequence).
            let real = lock(&cluster).real.clone();
            if let Some(real) = real {
                real.leave(&self.node.hostname(), req.graceful).await;
            }
            let mut cluster = lock(&cluster);
            cluster.leave(self.node.name());
            cluster.control_planes.remove(self.node.name());
        }
        let wipe = |st: &mut super::node::NodeState| {
            st.config = None;
            st.cluster = None;
            st.pending_snapshot = None;
            st.etcd_unhealthy = false;
        };
        if req.reboot {
            self.node.reboot_with(wipe);
        } else {
            // Powered off after the wipe: stays down until `SimNode::power_on`.
            let node = self.node.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                node.shutdown().await;
                wipe(&mut lock(&node.state));
            });
        }
        Ok(Response::new(pb::ResetResponse {
            messages: vec![pb::Reset {
                metadata: self.metadata(),
                actor_id: format!("reset-{}", rand::random::<u32>()),
            }],
        }))
    }

    async fn etcd_snapshot(
        &self,
        request: Request<pb::EtcdSnapshotRequest>,
    ) -> Result<Response<Self::EtcdSnapshotStream>, Status> {
        self.enter(&request, "EtcdSnapshot", false, Need::Backup).await?;
        self.control_plane("etcd snapshot")?;
        let cluster = self.cluster()?;
        let real = lock(&cluster).real.clone();
        if let Some(real) = real {
            let snapshot = real.snapshot(&self.node.hostname()).await.map_err(etcd_status)?;
            return Ok(Response::new(self.stream_chunks(snapshot, SNAPSHOT_CHUNK)));
        }
        let snapshot = {
            let cluster = lock(&cluster);
            if !cluster.is_member(self.node.name()) {
                return Err(Status::failed_precondition("etcd is not running on this node"));
            }
            encode_snapshot(cluster.etcd.as_ref().expect("a member implies etcd"))
        };
        Ok(Response::new(self.stream_chunks(snapshot, SNAPSHOT_CHUNK)))
    }

    async fn etcd_recover(
        &self,
        request: Request<Streaming<Data>>,
    ) -> Result<Response<pb::EtcdRecoverResponse>, Status> {
        self.enter(&request, "EtcdRecover", true, Need::Admin).await?;
        self.control_plane("etcd recover")?;
        self.ready()?;
        let cluster = self.cluster()?;
        if lock(&cluster).etcd_running() {
            return Err(Status::failed_precondition(
                "etcd is already running: recovery needs a cluster waiting for bootstrap",
            ));
        }
        let mut stream = request.into_inner();
        let mut snapshot = Vec::new();
        while let Some(data) = stream.message().await? {
            snapshot.extend_from_slice(&data.bytes);
        }
        if snapshot.is_empty() {
            return Err(Status::invalid_argument("empty snapshot upload"));
        }
        lock(&self.node.state).pending_snapshot = Some(snapshot);
        Ok(Response::new(pb::EtcdRecoverResponse {
            messages: vec![pb::EtcdRecover {
                metadata: self.metadata(),
            }],
        }))
    }

    async fn version(&self, request: Request<()>) -> Result<Response<pb::VersionResponse>, Status> {
        self.enter(&request, "Version", false, Need::Reader).await?;
        Ok(Response::new(pb::VersionResponse {
            messages: vec![pb::Version {
                metadata: self.metadata(),
                version: Some(pb::VersionInfo {
                    tag: self.node.version(),
                    sha: "simulated".into(),
                    built: String::new(),
                    go_version: "go1.25".into(),
                    os: "linux".into(),
                    arch: "amd64".into(),
                }),
                platform: Some(pb::PlatformInfo {
                    name: "metal".into(),
                    mode: "metal".into(),
                }),
                features: Some(pb::FeaturesInfo { rbac: true }),
            }],
        }))
    }

    async fn service_list(&self, request: Request<()>) -> Result<Response<pb::ServiceListResponse>, Status> {
        self.enter(&request, "ServiceList", false, Need::Reader).await?;
        let mut services = vec![
            service_info("apid", "Running", true),
            service_info("machined", "Running", true),
        ];
        if let Some(config) = self.node.config() {
            services.push(service_info("containerd", "Running", true));
            services.push(service_info("kubelet", "Running", true));
            if config.machine_type == MachineType::ControlPlane {
                let member = self
                    .node
                    .cluster()
                    .is_some_and(|c| lock(&c).is_member(self.node.name()));
                services.push(if member && self.node.etcd_unhealthy() {
                    service_info("etcd", "Running", false)
                } else if member {
                    service_info("etcd", "Running", true)
                } else {
                    service_info("etcd", "Preparing", false)
                });
                services.push(service_info("trustd", "Running", true));
            }
        }
        services.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(pb::ServiceListResponse {
            messages: vec![pb::ServiceList {
                metadata: self.metadata(),
                services,
            }],
        }))
    }

    async fn etcd_member_list(
        &self,
        request: Request<pb::EtcdMemberListRequest>,
    ) -> Result<Response<pb::EtcdMemberListResponse>, Status> {
        self.enter(&request, "EtcdMemberList", false, Need::Reader).await?;
        if self.node.mode() == NodeMode::Maintenance {
            return Err(Status::unimplemented(
                "EtcdMemberList is not available in maintenance mode",
            ));
        }
        let cluster = self.cluster()?;
        let real = lock(&cluster).real.clone();
        if let Some(real) = real {
            let members = real
                .member_list(&self.node.hostname())
                .await
                .map_err(etcd_status)?
                .into_iter()
                .map(|m| pb::EtcdMember {
                    id: m.id,
                    hostname: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect();
            return Ok(Response::new(pb::EtcdMemberListResponse {
                messages: vec![pb::EtcdMembers {
                    metadata: self.metadata(),
                    legacy_members: Vec::new(),
                    members,
                }],
            }));
        }
        let cluster = lock(&cluster);
        let etcd = cluster
            .etcd
            .as_ref()
            .filter(|_| cluster.is_member(self.node.name()))
            .ok_or_else(|| Status::failed_precondition("etcd is not running on this node"))?;
        let members = etcd
            .members
            .iter()
            .map(|m| pb::EtcdMember {
                id: m.id,
                hostname: m.hostname.clone(),
                peer_urls: vec![m.peer_url.clone()],
                client_urls: vec![m.client_url.clone()],
                is_learner: false,
            })
            .collect();
        Ok(Response::new(pb::EtcdMemberListResponse {
            messages: vec![pb::EtcdMembers {
                metadata: self.metadata(),
                legacy_members: Vec::new(),
                members,
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        request: Request<pb::EtcdRemoveMemberByIdRequest>,
    ) -> Result<Response<pb::EtcdRemoveMemberByIdResponse>, Status> {
        self.enter(&request, "EtcdRemoveMemberByID", true, Need::Admin).await?;
        let id = request.get_ref().member_id;
        let cluster = self.cluster()?;
        let real = lock(&cluster).real.clone();
        if let Some(real) = real {
            real.remove(&self.node.hostname(), id).await.map_err(etcd_status)?;
        } else {
            let mut cluster = lock(&cluster);
            if !cluster.is_member(self.node.name()) {
                return Err(Status::failed_precondition("etcd is not running on this node"));
            }
            let etcd = cluster.etcd.as_mut().expect("a member implies etcd");
            let before = etcd.members.len();
            etcd.members.retain(|m| m.id != id);
            if etcd.members.len() == before {
                return Err(Status::not_found(format!("etcd member {id:x} not found")));
            }
        }
        Ok(Response::new(pb::EtcdRemoveMemberByIdResponse {
            messages: vec![pb::EtcdRemoveMemberById {
                metadata: self.metadata(),
            }],
        }))
    }

    async fn upgrade(&self, request: Request<pb::UpgradeRequest>) -> Result<Response<pb::UpgradeResponse>, Status> {
        self.enter(&request, "Upgrade", true, Need::Admin).await?;
        let req = request.into_inner();
        let config = self.config()?;
        let version = installer_version(&req.image)
            .ok_or_else(|| Status::invalid_argument(format!("installer image {:?} has no version tag", req.image)))?;
        if req.stage {
            return Err(Status::unimplemented("staged upgrades are not simulated"));
        }
        if config.machine_type == MachineType::ControlPlane && !req.force {
            self.validate_for_upgrade(req.preserve).await?;
        }
        let (keep_old, install, reply_delay) = {
            let mut f = lock(&self.node.faults);
            let keep_old = std::mem::take(&mut f.upgrade_keeps_old_version);
            (keep_old, f.upgrade_install.unwrap_or_default(), f.upgrade_reply_delay)
        };
        let image = req.image.clone();
        // machined's Upgrade handler starts the upgrade sequence in the background and
        // answers; the sequence runs in stage Upgrading (MachineStatus). Talos docs,
        // "Upgrading Talos Linux": the installer writes the new version to the inactive boot
        // entry and the node reboots into it (or falls back to the old one).
        lock(&self.node.state).upgrading = true;
        let node = self.node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(install).await;
            node.reboot_with(move |st| {
                st.installer_image = Some(image);
                if !keep_old {
                    st.version = Some(version);
                }
            });
        });
        if let Some(d) = reply_delay {
            tokio::time::sleep(d).await;
        }
        Ok(Response::new(pb::UpgradeResponse {
            messages: vec![pb::Upgrade {
                metadata: self.metadata(),
                ack: "Upgrade request received".into(),
                actor_id: format!("upgrade-{}", rand::random::<u32>()),
            }],
        }))
    }

    async fn reboot(&self, request: Request<pb::RebootRequest>) -> Result<Response<pb::RebootResponse>, Status> {
        self.enter(&request, "Reboot", true, Need::Operator).await?;
        self.node.reboot_with(|_| {});
        Ok(Response::new(pb::RebootResponse {
            messages: vec![pb::Reboot {
                metadata: self.metadata(),
                actor_id: format!("reboot-{}", rand::random::<u32>()),
            }],
        }))
    }
}

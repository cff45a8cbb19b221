//! [`TalosClient`]: the machine API calls `bootstrap` makes, one node per client.

use std::net::SocketAddr;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::MAX_MESSAGE_SIZE;
use super::credentials::TalosCredentials;
use super::error::{TalosError, tls_failure};
use super::kubeconfig::unpack_kubeconfig;
use super::proto::common::Metadata;
use super::proto::machine::{self as pb, machine_service_client::MachineServiceClient};
pub use super::retry::CallPolicy;
use super::retry::{with_retry, with_retry_tls};
use super::tls::{connector, maintenance_tls_config, mtls_config};

/// A connection to one Talos node's API (port 50000), dialled directly.
#[derive(Clone)]
pub struct TalosClient {
    node: String,
    addr: SocketAddr,
    channel: Channel,
    policy: CallPolicy,
}

impl std::fmt::Debug for TalosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalosClient")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Messages of a Talos response that carry per-node metadata.
pub(crate) trait HasMetadata {
    fn metadata(&self) -> Option<&Metadata>;
}

macro_rules! has_metadata {
    ($($t:ty),*) => {$(
        impl HasMetadata for $t {
            fn metadata(&self) -> Option<&Metadata> { self.metadata.as_ref() }
        }
    )*};
}
has_metadata!(
    pb::ApplyConfiguration,
    pb::Bootstrap,
    pb::Reset,
    pb::Reboot,
    pb::Upgrade,
    pb::EtcdRecover,
    pb::Version,
    pb::ServiceList,
    pb::EtcdMembers,
    pb::EtcdRemoveMemberById,
    super::proto::common::Data
);

/// Fails when a message's `metadata.error` is set (a node failed behind the API).
pub(crate) fn check_metadata(node: &str, rpc: &'static str, md: Option<&Metadata>) -> Result<(), TalosError> {
    match md {
        Some(md) if !md.error.is_empty() => Err(TalosError::Node {
            node: node.to_owned(),
            rpc,
            hostname: md.hostname.clone(),
            message: md.error.clone(),
        }),
        _ => Ok(()),
    }
}

/// The single message of a directly dialled node's response, checked.
fn single<M: HasMetadata>(node: &str, rpc: &'static str, messages: Vec<M>) -> Result<M, TalosError> {
    for m in &messages {
        check_metadata(node, rpc, m.metadata())?;
    }
    messages.into_iter().next().ok_or_else(|| TalosError::Protocol {
        node: node.to_owned(),
        rpc,
        message: "the response holds no message".into(),
    })
}

/// What ApplyConfiguration reported.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// Warnings about the configuration.
    pub warnings: Vec<String>,
    /// The mode the node used (reboot, no-reboot, ...).
    pub mode: pb::apply_configuration_request::Mode,
    /// Human-readable details of the mode.
    pub mode_details: String,
}

impl TalosClient {
    /// Connects to a node in maintenance mode (TLS, no client certificate) and
    /// returns the client with the SPKI SHA-256 fingerprint of the node's
    /// throwaway certificate. Later reconnections must present the same key.
    pub async fn maintenance(node: &str, addr: SocketAddr) -> Result<(Self, String), TalosError> {
        Self::maintenance_with(node, addr, None, CallPolicy::default()).await
    }

    /// Like [`TalosClient::maintenance`], refusing any key but `fingerprint`.
    pub async fn maintenance_pinned(node: &str, addr: SocketAddr, fingerprint: &str) -> Result<Self, TalosError> {
        let (client, _) =
            Self::maintenance_with(node, addr, Some(fingerprint.to_owned()), CallPolicy::default()).await?;
        Ok(client)
    }

    /// Maintenance-mode connection with an explicit pin and call policy.
    pub async fn maintenance_with(
        node: &str,
        addr: SocketAddr,
        pinned: Option<String>,
        policy: CallPolicy,
    ) -> Result<(Self, String), TalosError> {
        let (config, seen) = maintenance_tls_config(pinned);
        let config = Arc::new(config);
        let endpoint = endpoint(addr, &policy);
        let channel = with_retry(&policy, node, "connect", policy.deadline, &[], || {
            let connector = connector(config.clone(), ServerName::IpAddress(addr.ip().into()), addr);
            let endpoint = endpoint.clone();
            async move {
                endpoint
                    .connect_with_connector(connector)
                    .await
                    .map_err(|e| match tls_failure(&e) {
                        Some((message, server_certificate)) => TalosError::Tls {
                            node: node.to_owned(),
                            rpc: "connect",
                            message,
                            server_certificate,
                        },
                        None => TalosError::Connect {
                            node: node.to_owned(),
                            addr: addr.to_string(),
                            message: error_chain(&e),
                        },
                    })
            }
        })
        .await?;
        let fingerprint =
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or_else(|| TalosError::Protocol {
                    node: node.to_owned(),
                    rpc: "connect",
                    message: "TLS handshake finished without a server certificate".into(),
                })?;
        let client = Self {
            node: node.to_owned(),
            addr,
            channel,
            policy,
        };
        Ok((client, fingerprint))
    }

    /// A configured-mode (mTLS) client: the node's certificate must chain to
    /// the OS CA in `creds` and name `addr`'s IP. Connects lazily, so a node
    /// that is still rebooting is reached by the calls' retries.
    pub fn configured(node: &str, addr: SocketAddr, creds: &TalosCredentials) -> Result<Self, TalosError> {
        Self::configured_with(node, addr, creds, CallPolicy::default())
    }

    /// Configured-mode connection with an explicit call policy.
    pub fn configured_with(
        node: &str,
        addr: SocketAddr,
        creds: &TalosCredentials,
        policy: CallPolicy,
    ) -> Result<Self, TalosError> {
        let config = Arc::new(mtls_config(creds)?);
        let connector = connector(config, ServerName::IpAddress(addr.ip().into()), addr);
        let channel = endpoint(addr, &policy).connect_with_connector_lazy(connector);
        Ok(Self {
            node: node.to_owned(),
            addr,
            channel,
            policy,
        })
    }

    /// Replaces the call policy (deadlines, retries).
    pub fn with_policy(mut self, policy: CallPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The node name used in errors.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The dialled address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(crate) fn grpc(&self) -> MachineServiceClient<Channel> {
        MachineServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    pub(crate) fn status(&self, rpc: &'static str, status: &tonic::Status) -> TalosError {
        TalosError::rpc(&self.node, rpc, status)
    }

    /// One unary call with deadline, retries and metadata checks.
    async fn unary<Req, M, F, Fut>(
        &self,
        rpc: &'static str,
        also_retry: &[Code],
        request: Req,
        call: F,
    ) -> Result<M, TalosError>
    where
        Req: Clone,
        M: HasMetadata,
        F: Fn(MachineServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Vec<M>>, tonic::Status>>,
    {
        let messages = with_retry(&self.policy, &self.node, rpc, self.policy.deadline, also_retry, || {
            let fut = call(self.grpc(), request.clone());
            async move {
                fut.await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| self.status(rpc, &s))
            }
        })
        .await?;
        single(&self.node, rpc, messages)
    }

    /// Applies a machine configuration (YAML, possibly multi-document).
    pub async fn apply_configuration(
        &self,
        config: &[u8],
        mode: pb::apply_configuration_request::Mode,
    ) -> Result<ApplyOutcome, TalosError> {
        let request = pb::ApplyConfigurationRequest {
            data: config.to_vec(),
            mode: mode as i32,
            dry_run: false,
            try_mode_timeout: None,
        };
        let m = self
            .unary("ApplyConfiguration", &[], request, |mut c, r| async move {
                c.apply_configuration(r).await.map(|r| r.map(|r| r.messages))
            })
            .await?;
        Ok(ApplyOutcome {
            warnings: m.warnings,
            mode: pb::apply_configuration_request::Mode::try_from(m.mode).unwrap_or(mode),
            mode_details: m.mode_details,
        })
    }

    /// Bootstraps etcd on this control plane (`recover` = from an uploaded
    /// snapshot). FailedPrecondition ("not available yet") is retried within
    /// the retry budget; AlreadyExists (etcd has data) is returned as is.
    pub async fn bootstrap(&self, recover: bool) -> Result<(), TalosError> {
        let request = pb::BootstrapRequest {
            recover_etcd: recover,
            recover_skip_hash_check: false,
        };
        self.unary(
            "Bootstrap",
            &[Code::FailedPrecondition],
            request,
            |mut c, r| async move { c.bootstrap(r).await.map(|r| r.map(|r| r.messages)) },
        )
        .await
        .map(drop)
    }

    /// Waits until the node serves its configured (mTLS) API, e.g. after
    /// ApplyConfiguration: the node may keep its maintenance certificate for
    /// a moment, then reboots. Until the retry budget is spent, a node
    /// certificate we reject and UNAVAILABLE both mean "not yet".
    pub async fn wait_ready(&self) -> Result<pb::Version, TalosError> {
        let rpc = "Version";
        with_retry_tls(&self.policy, &self.node, rpc, self.policy.deadline, || async {
            let messages = self
                .grpc()
                .version(())
                .await
                .map_err(|s| self.status(rpc, &s))?
                .into_inner()
                .messages;
            single(&self.node, rpc, messages)
        })
        .await
    }

    /// The node's Talos version.
    pub async fn version(&self) -> Result<pb::Version, TalosError> {
        self.unary("Version", &[], (), |mut c, ()| async move {
            c.version(()).await.map(|r| r.map(|r| r.messages))
        })
        .await
    }

    /// The node's services and their health.
    pub async fn service_list(&self) -> Result<Vec<pb::ServiceInfo>, TalosError> {
        self.unary("ServiceList", &[], (), |mut c, ()| async move {
            c.service_list(()).await.map(|r| r.map(|r| r.messages))
        })
        .await
        .map(|m| m.services)
    }

    /// The etcd members as seen by this control plane.
    pub async fn etcd_members(&self) -> Result<Vec<pb::EtcdMember>, TalosError> {
        let request = pb::EtcdMemberListRequest { query_local: false };
        self.unary("EtcdMemberList", &[], request, |mut c, r| async move {
            c.etcd_member_list(r).await.map(|r| r.map(|r| r.messages))
        })
        .await
        .map(|m| m.members)
    }

    /// Removes an etcd member (by id) through this control plane.
    pub async fn etcd_remove_member(&self, member_id: u64) -> Result<(), TalosError> {
        let request = pb::EtcdRemoveMemberByIdRequest { member_id };
        self.unary("EtcdRemoveMemberByID", &[], request, |mut c, r| async move {
            c.etcd_remove_member_by_id(r).await.map(|r| r.map(|r| r.messages))
        })
        .await
        .map(drop)
    }

    /// Wipes the node back to maintenance mode (all partitions, then reboot).
    pub async fn reset(&self, graceful: bool) -> Result<(), TalosError> {
        let request = pb::ResetRequest {
            graceful,
            reboot: true,
            system_partitions_to_wipe: Vec::new(),
            user_disks_to_wipe: Vec::new(),
            mode: pb::reset_request::WipeMode::All as i32,
        };
        self.unary("Reset", &[], request, |mut c, r| async move {
            c.reset(r).await.map(|r| r.map(|r| r.messages))
        })
        .await
        .map(drop)
    }

    /// Installs `image` (a Talos installer) to the inactive boot entry and
    /// reboots into it. `preserve` keeps ephemeral data (a single control
    /// plane needs it: Talos refuses to upgrade the only etcd member without).
    pub async fn upgrade(&self, image: &str, preserve: bool) -> Result<(), TalosError> {
        let request = pb::UpgradeRequest {
            image: image.to_owned(),
            preserve,
            stage: false,
            force: false,
            reboot_mode: pb::upgrade_request::RebootMode::Default as i32,
        };
        self.unary("Upgrade", &[], request, |mut c, r| async move {
            c.upgrade(r).await.map(|r| r.map(|r| r.messages))
        })
        .await
        .map(drop)
    }

    /// Reboots the node.
    pub async fn reboot(&self) -> Result<(), TalosError> {
        let request = pb::RebootRequest {
            mode: pb::reboot_request::Mode::Default as i32,
        };
        self.unary("Reboot", &[], request, |mut c, r| async move {
            c.reboot(r).await.map(|r| r.map(|r| r.messages))
        })
        .await
        .map(drop)
    }

    /// Fetches the admin kubeconfig (control planes only), unpacked to YAML.
    pub async fn kubeconfig(&self) -> Result<Vec<u8>, TalosError> {
        let rpc = "Kubeconfig";
        let archive = with_retry(
            &self.policy,
            &self.node,
            rpc,
            self.policy.stream_deadline,
            &[],
            || async {
                let mut stream = self
                    .grpc()
                    .kubeconfig(())
                    .await
                    .map_err(|s| self.status(rpc, &s))?
                    .into_inner();
                let mut archive = Vec::new();
                while let Some(data) = stream.message().await.map_err(|s| self.status(rpc, &s))? {
                    check_metadata(&self.node, rpc, data.metadata.as_ref())?;
                    archive.extend_from_slice(&data.bytes);
                }
                Ok(archive)
            },
        )
        .await?;
        unpack_kubeconfig(&archive).map_err(|message| TalosError::Protocol {
            node: self.node.clone(),
            rpc,
            message,
        })
    }
}

fn endpoint(addr: SocketAddr, policy: &CallPolicy) -> Endpoint {
    // The scheme is http because the connector does TLS itself; tonic would
    // refuse an https URI without its own TLS config.
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI authority")
        .connect_timeout(policy.deadline)
        .tcp_nodelay(true)
}

/// An error and its sources, joined: tonic's top-level transport errors say
/// little ("transport error") without them.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

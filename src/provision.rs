//! Out-of-band provisioning through each node's BMC: set the boot override
//! (PXE) or insert the installer image (virtual media), power on or cycle,
//! then wait until the node answers on its provisioning endpoint (the Talos
//! maintenance API, or SSH for k3s). Work across BMCs runs concurrently,
//! bounded. Also the `power` and `provision` commands.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::slots::{self, Check};
use futures::StreamExt;
use tracing::info;

use crate::cli::PowerAction;
use crate::inventory::{BootMethod, Cluster, Distribution, Node};
use crate::redfish::power::{self, Change, Wait};
use crate::redfish::{self, BootTarget, Client, ClientOptions, ErrorKind, PowerState, System, boot, media, system};

/// How provisioning runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// BMCs worked on at once.
    pub concurrency: usize,
    /// Waiting for power changes.
    pub power: Wait,
    /// How long a node may take, once powered, to answer on its endpoint.
    pub ready_timeout: Duration,
    /// Power-cycle nodes that are already on (otherwise they are refused).
    pub allow_cycle: bool,
    pub client: ClientOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            concurrency: 32,
            power: Wait::default(),
            ready_timeout: Duration::from_secs(1800),
            allow_cycle: false,
            client: ClientOptions::default(),
        }
    }
}

/// What provisioning did to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered already: its BMC was not touched.
    AlreadyAnswering(SocketAddr),
    /// Booted through the BMC and now answers.
    Provisioned {
        /// `Pxe`, or `Cd` with the inserted image.
        boot: String,
        power: Change,
        endpoint: SocketAddr,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyAnswering(a) => write!(f, "already answers on {a}; BMC not touched"),
            Self::Provisioned { boot, power, endpoint } => {
                write!(f, "booted from {boot} ({power}), answers on {endpoint}")
            }
        }
    }
}

/// The address a freshly booted node answers on: the Talos maintenance API
/// (`talos.port`, 50000) or SSH (`ssh.port`, 22) for k3s.
pub fn endpoint(cluster: &Cluster, node: &Node) -> SocketAddr {
    let port = match cluster.distribution {
        Distribution::Talos => node.talos.port,
        Distribution::K3s => node.ssh.as_ref().map_or(22, |s| s.port),
    };
    SocketAddr::new(node.ip, port)
}

/// True when a TCP connection to `addr` succeeds within `timeout`.
pub async fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Provisions one node; its BMC session is closed whatever happens.
pub async fn provision_node(cluster: &Cluster, node: &Node, opts: &Options) -> redfish::Result<Outcome> {
    let ep = endpoint(cluster, node);
    if answers(ep, Duration::from_secs(2)).await {
        info!(node = %node.name, %ep, "already answers: not provisioning");
        return Ok(Outcome::AlreadyAnswering(ep));
    }
    let client = Client::for_node(node, opts.client)?;
    client.login().await?;
    let result = provision_with(&client, node, ep, opts).await;
    client.logout().await;
    result
}

async fn provision_with(client: &Client, node: &Node, ep: SocketAddr, opts: &Options) -> redfish::Result<Outcome> {
    let bmc = client.bmc();
    let sys = system::discover(client, node.mac).await?;
    client.check_identity(&sys)?;
    if sys.power != PowerState::Off && !opts.allow_cycle {
        return Err(client.err(ErrorKind::Config(format!(
            "system {} is {} and would be power-cycled into its installer: pass --yes to allow it",
            sys.id, sys.power
        ))));
    }
    let boot = match bmc.boot {
        BootMethod::Pxe => {
            boot::set_override(client, &sys, BootTarget::Pxe).await?;
            "Pxe".to_owned()
        }
        BootMethod::VirtualMedia => {
            let Some(image) = &bmc.image_url else {
                return Err(client.err(ErrorKind::Config(
                    "boot = \"virtual-media\" needs `image_url` in [bmc]".into(),
                )));
            };
            media::insert(client, &sys, image).await?;
            boot::set_override(client, &sys, BootTarget::Cd).await?;
            format!("Cd {image}")
        }
    };
    let power = power::power_cycle(client, &sys, opts.power).await?;
    info!(node = %node.name, %ep, "powered; waiting for the node to answer");
    let what = format!("{} answering on {ep} after booting from {boot}", node.name);
    slots::poll_until(
        &what,
        opts.ready_timeout,
        || false,
        || async {
            if answers(ep, Duration::from_secs(3)).await {
                Check::Met(())
            } else {
                Check::Not("no answer".into())
            }
        },
    )
    .await
    .map_err(|e| client.err(ErrorKind::Timeout(e)))?;
    Ok(Outcome::Provisioned {
        boot,
        power,
        endpoint: ep,
    })
}

/// Provisions `nodes` of `cluster`, at most `opts.concurrency` BMCs at once.
/// Results come back in the order of `nodes`.
pub async fn provision(cluster: &Cluster, nodes: &[&Node], opts: &Options) -> Vec<(String, redfish::Result<Outcome>)> {
    futures::stream::iter(
        nodes
            .iter()
            .map(|n| async move { (n.name.clone(), provision_node(cluster, n, opts).await) }),
    )
    .buffered(opts.concurrency.max(1))
    .collect()
    .await
}

/// For `up --provision`: provisions the cluster's nodes that have a `[bmc]`
/// and do not answer on their endpoint yet (answering ones are left alone).
pub async fn provision_missing(cluster: &Cluster, opts: &Options) -> Vec<(String, redfish::Result<Outcome>)> {
    let nodes: Vec<&Node> = cluster.nodes.iter().filter(|n| n.bmc.is_some()).collect();
    provision(cluster, &nodes, opts).await
}

/// One node's power, as `power status` reports it.
#[derive(Debug, Clone)]
pub struct PowerReport {
    pub system: String,
    pub state: PowerState,
    /// What `on`/`off`/`cycle` did (`None` for status).
    pub change: Option<Change>,
}

/// Reads or changes one node's power.
pub async fn power_node(
    node: &Node,
    action: PowerAction,
    wait: Wait,
    opts: ClientOptions,
) -> redfish::Result<PowerReport> {
    let client = Client::for_node(node, opts)?;
    client.login().await?;
    let result = async {
        let sys: System = system::discover(&client, node.mac).await?;
        // Even status: the state of another machine would mislead.
        client.check_identity(&sys)?;
        let change = match action {
            PowerAction::Status => None,
            PowerAction::On => Some(power::power_on(&client, &sys, wait).await?),
            PowerAction::Off => Some(power::power_off(&client, &sys, wait).await?),
            PowerAction::Cycle => Some(power::power_cycle(&client, &sys, wait).await?),
        };
        let state = match change {
            None => sys.power.clone(),
            Some(_) => power::state(&client, &sys).await?,
        };
        Ok::<_, redfish::Error>(PowerReport {
            system: sys.id,
            state,
            change,
        })
    }
    .await;
    client.logout().await;
    result
}

//! `bootstrap serve`: network boot for a Talos cluster's nodes, from the
//! inventory's `[cluster.provision]`. proxyDHCP (or, with `--dhcp`, a DHCP
//! server for the inventory's range) hands known MACs an iPXE binary over TFTP
//! or, to iPXE itself, an HTTP script that boots Talos's kernel and initramfs
//! with `talos.config=` pointing at the node's one-shot config URL.
//!
//! Everything is checked before the first socket is bound ([`prepare`]): the
//! range against the inventory, the boot address on the interface, the iPXE
//! binaries, the pinned boot files, the rendered configs.

pub mod configs;
pub mod dhcp;
pub mod http;
pub mod iface;
pub mod ipxe;
pub mod tftp;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::artifacts::{ArtifactStore, Pinned};
use crate::cli::ServeArgs;
use crate::inventory::{Cluster, IpRange, Provision};

/// Where event lines go (stderr in the command; collected in tests).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything `serve` needs, checked, before anything listens.
pub struct Prepared {
    pub provision: Provision,
    /// DHCP and TFTP too (not `--http-only`).
    pub pxe: bool,
    pub dhcp: dhcp::DhcpConfig,
    pub http: http::HttpState,
    pub tftp: tftp::Files,
}

/// Checks and loads everything for `cluster`; binds nothing.
pub async fn prepare(cluster: &Cluster, state: &Path, a: &ServeArgs, log: Log) -> anyhow::Result<Prepared> {
    let p = cluster
        .provision
        .clone()
        .expect("caller picked a cluster with [cluster.provision]");
    let at = |field: &str| format!("cluster {} > provision > {field}", cluster.name);
    let pool = a.dhcp.as_deref().map(|r| lease_pool(cluster, &p, r)).transpose()?;
    match iface::ipv4_addresses(&p.interface).context("listing the host's interfaces")? {
        None => bail!("{}: this host has no interface {}", at("interface"), p.interface),
        Some(addrs) if !addrs.contains(&p.address) => bail!(
            "{}: {} is not an address of {} on this host (it has: {})",
            at("address"),
            p.address,
            p.interface,
            if addrs.is_empty() {
                "none".to_owned()
            } else {
                addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            }
        ),
        Some(_) => {}
    }
    let mut files = HashMap::new();
    let binaries = if a.http_only {
        &[][..]
    } else {
        &[dhcp::BIOS_BINARY, dhcp::UEFI_BINARY][..]
    };
    for &name in binaries {
        let path = p.ipxe_dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: iPXE binary {} is missing (install Debian's `ipxe` package or point ipxe_dir at a directory with {} and {})",
                at("ipxe_dir"),
                path.display(),
                dhcp::BIOS_BINARY,
                dhcp::UEFI_BINARY
            )
        })?;
        files.insert(name.to_owned(), Arc::new(bytes));
    }
    let store = ArtifactStore {
        offline: a.artifacts.clone(),
        cache: state.join("artifacts"),
    };
    let pin = |b: &crate::inventory::BootArtifact| Pinned {
        file: b.file.clone(),
        url: Some(b.url.clone()),
        sha256: b.sha256.clone(),
    };
    let kernel = store.get(&pin(&p.kernel)).await.with_context(|| at("kernel_sha256"))?;
    let initramfs = store
        .get(&pin(&p.initramfs))
        .await
        .with_context(|| at("initramfs_sha256"))?;
    let iso = match &p.iso {
        Some(iso) => Some(store.get(&pin(iso)).await.with_context(|| at("iso_sha256"))?),
        None => None,
    };

    let bundle = crate::render::SecretsBundle::load_or_generate(state, cluster)?;
    let renderer = crate::render::talos::TalosRenderer::new(cluster, bundle.talos()?)?;
    let mut rendered = Vec::new();
    let mut macs = HashMap::new();
    let mut by_path = HashMap::new();
    for node in &cluster.nodes {
        let Some(mac) = node.mac else { continue };
        let config = renderer
            .machine_config(node)
            .with_context(|| format!("rendering node {}'s machine config", node.name))?;
        rendered.push((node.name.clone(), config));
        macs.insert(mac, node.name.clone());
        by_path.insert(dhcp::mac_path(mac), node.name.clone());
    }
    let record = crate::render::secrets::cluster_dir(state, &cluster.name).join("served-configs.json");
    let configs = configs::Configs::new(rendered, record, &a.reprovision)?;
    let base = format!("http://{}:{}", p.address, p.http_port);
    Ok(Prepared {
        dhcp: dhcp::DhcpConfig {
            server: p.address,
            http_base: base.clone(),
            nodes: macs,
            pool,
        },
        http: http::HttpState {
            base,
            cluster: cluster.name.clone(),
            nodes: by_path,
            configs,
            kernel,
            initramfs,
            iso,
            kernel_args: p.kernel_args.clone(),
            log,
        },
        tftp: Arc::new(files),
        pxe: !a.http_only,
        provision: p,
    })
}

/// `--dhcp FIRST-LAST`: inside the inventory's `dhcp_range`, so every address
/// handed out is one the inventory names.
fn lease_pool(cluster: &Cluster, p: &Provision, arg: &str) -> anyhow::Result<dhcp::LeasePool> {
    let Some(allowed) = p.dhcp_range else {
        bail!(
            "--dhcp {arg}: cluster {}'s [cluster.provision] has no dhcp_range, and serve leases only addresses the inventory names",
            cluster.name
        );
    };
    let parse = |s: &str| s.trim().parse::<Ipv4Addr>().ok();
    let (first, last) = match arg.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
        Some((Some(f), Some(l))) if f <= l => (f, l),
        _ => bail!("--dhcp {arg}: not an IPv4 range FIRST-LAST"),
    };
    let range = IpRange {
        first: IpAddr::V4(first),
        last: IpAddr::V4(last),
    };
    if !(allowed.contains(range.first) && allowed.contains(range.last)) {
        bail!(
            "--dhcp {arg}: outside cluster {}'s dhcp_range {allowed} (cluster {} > provision > dhcp_range)",
            cluster.name,
            cluster.name
        );
    }
    let net = cluster.network.node_cidr;
    let IpAddr::V4(router) = cluster.network.gateway else {
        bail!("--dhcp: the cluster's gateway {} is not IPv4", cluster.network.gateway);
    };
    let netmask = match net {
        ipnet::IpNet::V4(n) => n.netmask(),
        ipnet::IpNet::V6(_) => bail!("--dhcp: the node CIDR {net} is not IPv4"),
    };
    let dns = cluster
        .network
        .nameservers
        .iter()
        .filter_map(|n| match n {
            IpAddr::V4(v) => Some(*v),
            IpAddr::V6(_) => None,
        })
        .collect();
    Ok(dhcp::LeasePool {
        first,
        last,
        netmask,
        router,
        dns,
    })
}

/// Binds every socket (all or none), then serves until `shutdown` resolves.
pub async fn serve(
    prepared: Prepared,
    log: Log,
    shutdown: impl std::future::Future<Output = std::io::Result<()>>,
) -> anyhow::Result<()> {
    bind(prepared, log).await?.until(shutdown).await
}

/// Listeners bound and answering; dropped, they stop.
pub struct Serving {
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    log: Log,
}

impl Serving {
    /// Serves until `shutdown` resolves or a listener fails.
    pub async fn until(
        mut self,
        shutdown: impl std::future::Future<Output = std::io::Result<()>>,
    ) -> anyhow::Result<()> {
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let outcome = tokio::select! {
            r = shutdown => r.context("waiting for Ctrl-C"),
            (r, _, _) = futures::future::select_all(tasks) => match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped")),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("a listener failed")),
                Err(e) => Err(anyhow::Error::new(e).context("a listener panicked")),
            },
        };
        for a in aborts {
            a.abort();
        }
        outcome
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        (self.log)("serve: stopped");
    }
}

/// Binds every socket (all or none) and starts answering.
pub async fn bind(prepared: Prepared, log: Log) -> anyhow::Result<Serving> {
    let p = &prepared.provision;
    let bind = |what: &str, port: u16| format!("binding {what} on {}:{port}", p.address);
    let http_addr = SocketAddr::from((p.address, p.http_port));
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| bind("HTTP", p.http_port))?;
    let mut tasks = Vec::new();
    let known = prepared.dhcp.nodes.len();
    let mode = if prepared.pxe {
        let tftp = tokio::net::UdpSocket::bind((p.address, 69))
            .await
            .with_context(|| bind("TFTP", 69))?;
        let pxe = tokio::net::UdpSocket::bind((p.address, 4011))
            .await
            .with_context(|| bind("the PXE port", 4011))?;
        let dhcp_sock = dhcp::bind_dhcp(&p.interface)
            .with_context(|| format!("binding DHCP on 0.0.0.0:67 of interface {}", p.interface))?;
        let mode = match &prepared.dhcp.pool {
            Some(pool) => format!("DHCP for {}-{}", pool.first, pool.last),
            None => "proxyDHCP (no leases)".to_owned(),
        };
        let responder = Arc::new(dhcp::Responder::new(prepared.dhcp));
        tasks.push(tokio::spawn(dhcp::run(
            dhcp_sock,
            dhcp::Port::Dhcp,
            responder.clone(),
            log.clone(),
        )));
        tasks.push(tokio::spawn(dhcp::run(pxe, dhcp::Port::Pxe, responder, log.clone())));
        tasks.push(tokio::spawn(tftp::run(tftp, prepared.tftp, log.clone())));
        format!("{mode}, TFTP {}:69", p.address)
    } else {
        "HTTP only (no DHCP, no TFTP)".to_owned()
    };
    log(&format!(
        "serve: cluster {}: {} node(s) by MAC on {} ({}): {mode}, HTTP {http_addr}{}",
        prepared.http.cluster,
        known,
        p.interface,
        p.address,
        match &p.iso {
            Some(_) => format!(", virtual-media ISO {}", p.iso_url(&prepared.http.cluster)),
            None => String::new(),
        }
    ));
    let app = http::router(Arc::new(prepared.http)).into_make_service_with_connect_info::<SocketAddr>();
    tasks.push(tokio::spawn(async move { axum::serve(http, app).await }));
    Ok(Serving { tasks, log })
}

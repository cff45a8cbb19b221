//! The validated inventory: typed addresses and networks, defaults resolved,
//! paths absolute. Everything downstream (render, plan, transports) reads this.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;

pub use super::raw::{BootMethod, Cni, Distribution, GitopsEngine, Role};
use crate::secret::SecretRef;

/// Default versions when the inventory names none.
pub const DEFAULT_TALOS_VERSION: &str = "v1.13.9";
/// Default Kubernetes version for Talos clusters.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.34.2";
/// Default k3s release.
pub const DEFAULT_K3S_VERSION: &str = "v1.34.2+k3s1";

/// A validated inventory file.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    pub clusters: Vec<Cluster>,
}

impl Inventory {
    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// One cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    pub distribution: Distribution,
    pub versions: Versions,
    /// Host or address of the Kubernetes API (VIP or load balancer).
    pub endpoint: String,
    pub network: Network,
    pub gitops: Option<Gitops>,
    pub secrets: ClusterSecrets,
    pub cni: Cni,
    pub templates: Option<PathBuf>,
    pub patches: Patches,
    pub talos: TalosSettings,
    pub k3s: K3sSettings,
    /// Registry mirrors, in the inventory's order (sorted by registry name).
    pub registries: Vec<Registry>,
    /// `[cluster.provision]`: what `bootstrap serve` answers.
    pub provision: Option<Provision>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// `https://<endpoint>:6443`, with IPv6 literals bracketed.
    pub fn api_url(&self) -> String {
        match self.endpoint.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:6443"),
            _ => format!("https://{}:6443", self.endpoint),
        }
    }

    /// Control-plane nodes in inventory order; the first bootstraps etcd.
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Controlplane)
    }

    /// Worker nodes in inventory order.
    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Worker)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Versions of what a cluster runs.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub talos: String,
    pub kubernetes: String,
    pub k3s: String,
}

/// `[cluster.network]`, typed.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub node_cidr: IpNet,
    pub gateway: IpAddr,
    pub nameservers: Vec<IpAddr>,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub cluster_domain: String,
    pub vip: Option<IpAddr>,
    pub lb_pool: Option<IpRange>,
    pub bgp_asn: Option<u32>,
    /// BGP routers (only with `bgp_asn`).
    pub bgp_peers: Vec<BgpPeer>,
}

impl Network {
    /// Whether Cilium's BGP control plane is wanted: an ASN and at least one peer.
    pub fn bgp_enabled(&self) -> bool {
        self.bgp_asn.is_some() && !self.bgp_peers.is_empty()
    }
}

/// A BGP router Cilium peers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BgpPeer {
    pub address: IpAddr,
    pub asn: u32,
}

/// Where nodes pull one upstream registry's images from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registry {
    /// The upstream registry as images name it (`docker.io`, `ghcr.io:443`), or `*` for all.
    pub name: String,
    /// Mirror endpoints, tried in order before the registry itself.
    pub mirrors: Vec<Mirror>,
    /// PEM file of the CA the mirrors' certificates chain to (checked to exist).
    pub ca: Option<PathBuf>,
    /// Mirror paths are used as given, without the `/v2/` suffix.
    pub override_path: bool,
}

/// One mirror endpoint of a [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mirror {
    /// `scheme://host[:port][/path]`, as written (trailing `/` dropped).
    pub url: String,
    /// `host[:port]`: what registry TLS settings are keyed by (Talos, containerd, k3s).
    pub host: String,
    /// The path after the host (`/` when none).
    pub path: String,
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IpRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl IpRange {
    /// True when `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4() && self.first <= ip && ip <= self.last
    }

    /// True when both ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.first.is_ipv4() == other.first.is_ipv4() && self.first <= other.last && other.first <= self.last
    }

    /// The range a network covers.
    pub fn of_net(net: &IpNet) -> Self {
        Self {
            first: net.network(),
            last: net.broadcast(),
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `[cluster.gitops]`, typed.
#[derive(Debug, Clone, Serialize)]
pub struct Gitops {
    pub engine: GitopsEngine,
    pub repository: String,
    pub branch: String,
    pub path: String,
    pub deploy_key: Option<SecretRef>,
    pub checkout: Option<PathBuf>,
    /// How the Git host's SSH key is trusted (`None`: scanned and pinned in the state dir).
    pub known_hosts: Option<GitKnownHosts>,
}

impl Gitops {
    /// The SSH host and port of the repository (`ssh://[user@]host[:port]/path`
    /// or scp-like `user@host:path`); `None` for other schemes.
    pub fn ssh_host(&self) -> Option<(String, u16)> {
        ssh_host(&self.repository)
    }
}

/// See [`Gitops::ssh_host`].
pub fn ssh_host(url: &str) -> Option<(String, u16)> {
    let authority = match url.strip_prefix("ssh://") {
        Some(rest) => rest.split('/').next()?,
        None if !url.contains("://") && url.contains('@') => {
            let host = url.split_once(':')?.0;
            return Some((host.rsplit('@').next()?.to_owned(), 22));
        }
        None => return None,
    };
    let host_port = authority.rsplit('@').next()?;
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = tail.strip_prefix(':').map_or(Some(22), |p| p.parse().ok())?;
        return Some((host.to_owned(), port));
    }
    match host_port.split_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((host_port.to_owned(), 22)),
    }
    .filter(|(h, _)| !h.is_empty())
}

/// `[cluster.gitops] known_hosts`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum GitKnownHosts {
    /// OpenSSH known_hosts lines naming the Git host, used as given.
    Lines(String),
    /// A `SHA256:` fingerprint the scanned host key must have.
    Fingerprint(String),
}

/// Seed secrets for phase 0, as references.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSecrets {
    pub sops_age_key: Option<SecretRef>,
    pub onepassword_token: Option<SecretRef>,
    pub vault_token: Option<SecretRef>,
    pub age_recipients: Vec<String>,
}

/// Config patch files, applied in the order all → role → node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Patches {
    pub all: Vec<PathBuf>,
    pub controlplane: Vec<PathBuf>,
    pub worker: Vec<PathBuf>,
}

/// Talos-specific cluster settings.
#[derive(Debug, Clone, Serialize)]
pub struct TalosSettings {
    pub install_image: String,
    /// Official system extensions (`siderolabs/iscsi-tools`, ...): the
    /// installer then comes from the Image Factory schematic they make.
    pub extensions: Vec<String>,
}

/// Where the Image Factory serves installers (`factory.talos.dev/installer/<schematic>:<version>`).
pub const IMAGE_FACTORY: &str = "factory.talos.dev";

impl TalosSettings {
    /// The installer image for Talos `version`: the configured (or factory)
    /// image with its tag set to `version` (a digest pin is dropped: it names
    /// one version's image).
    pub fn installer(&self, version: &str) -> String {
        let image = self.install_image.split('@').next().unwrap_or_default();
        let repo = match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => image,
        };
        format!("{repo}:{version}")
    }
}

/// The Image Factory schematic ID of a set of official extensions: the
/// SHA-256 of the schematic as the factory marshals it (siderolabs/image-factory
/// pkg/schematic: `ID()` hashes the gopkg.in/yaml.v3 encoding, 4-space indent;
/// the empty schematic is `customization: {}` → 376567988ad3…).
pub fn schematic_id(extensions: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let yaml = if extensions.is_empty() {
        "customization: {}\n".to_owned()
    } else {
        let list: String = extensions.iter().map(|e| format!("            - {e}\n")).collect();
        format!("customization:\n    systemExtensions:\n        officialExtensions:\n{list}")
    };
    hex::encode(Sha256::digest(yaml.as_bytes()))
}

/// Network boot settings (`[cluster.provision]`), checked against the cluster's addresses.
#[derive(Debug, Clone, Serialize)]
pub struct Provision {
    pub interface: String,
    pub address: std::net::Ipv4Addr,
    pub http_port: u16,
    /// Leasable addresses (only used with `serve --dhcp`); inside the node CIDR, no node's.
    pub dhcp_range: Option<IpRange>,
    pub ipxe_dir: PathBuf,
    pub kernel: BootArtifact,
    pub initramfs: BootArtifact,
    pub kernel_args: Vec<String>,
    /// The ISO BMCs insert as virtual media, when the inventory pins one.
    pub iso: Option<BootArtifact>,
}

impl Provision {
    /// The ISO's name in `serve`'s URLs.
    pub const ISO_FILE: &str = "metal-amd64.iso";

    /// Where `serve` offers cluster `cluster`'s ISO to BMCs.
    pub fn iso_url(&self, cluster: &str) -> String {
        format!(
            "http://{}:{}/boot/{cluster}/{}",
            self.address,
            self.http_port,
            Self::ISO_FILE
        )
    }
}

/// A boot file served over HTTP: fetched once into the artifact cache, pinned by sha256.
#[derive(Debug, Clone, Serialize)]
pub struct BootArtifact {
    /// File name in the artifact cache and in `--artifacts DIR`.
    pub file: String,
    pub url: String,
    /// Lower-case hex.
    pub sha256: String,
}

/// k3s-specific cluster settings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct K3sSettings {
    pub binary: Option<PathBuf>,
    pub binary_url: Option<String>,
    pub binary_sha256: Option<String>,
    pub disable: Vec<String>,
}

/// One node, with inherited defaults applied.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    /// Expected SMBIOS system UUID (lower case), checked before any config is sent.
    pub uuid: Option<String>,
    /// Expected system serial number.
    pub serial: Option<String>,
    pub install_disk: Option<DiskSelector>,
    pub data_disks: Vec<DataDisk>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub patches: Vec<PathBuf>,
    pub ssh: Option<SshAccess>,
    pub talos: TalosAccess,
    pub bmc: Option<Bmc>,
}

/// A MAC address (EUI-48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = ();
    /// Accepts `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, ()> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Selects one disk: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskSelector {
    pub path: Option<String>,
    pub serial: Option<String>,
    pub wwid: Option<String>,
    pub model: Option<String>,
    pub size: Option<SizeRange>,
}

impl DiskSelector {
    /// True when nothing is selected on.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A data disk: which disk, and what becomes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDisk {
    pub selector: DiskSelector,
    /// Talos user volume name (mounted at `/var/mnt/<name>`); `data<N>` when not given.
    pub name: String,
    /// `xfs` or `ext4`.
    pub filesystem: String,
    /// Left raw for Ceph: only its presence and identity are checked.
    pub ceph: bool,
}

/// A disk size range in bytes (either bound optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeRange {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl SizeRange {
    /// True when `bytes` is inside the range.
    pub fn contains(&self, bytes: u64) -> bool {
        self.min.is_none_or(|m| bytes >= m) && self.max.is_none_or(|m| bytes <= m)
    }
}

impl FromStr for SizeRange {
    type Err = String;
    /// `100GB-2TB`, `>= 100GB`, `<= 2TB`, or `500GB` (exact).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let r = if let Some(rest) = s.strip_prefix(">=") {
            Self {
                min: Some(parse_size(rest)?),
                max: None,
            }
        } else if let Some(rest) = s.strip_prefix("<=") {
            Self {
                min: None,
                max: Some(parse_size(rest)?),
            }
        } else if let Some((a, b)) = s.split_once('-') {
            let (min, max) = (parse_size(a)?, parse_size(b)?);
            if min > max {
                return Err(format!(
                    "size range `{s}` is empty: {} is larger than {}",
                    a.trim(),
                    b.trim()
                ));
            }
            Self {
                min: Some(min),
                max: Some(max),
            }
        } else {
            let v = parse_size(s)?;
            Self {
                min: Some(v),
                max: Some(v),
            }
        };
        Ok(r)
    }
}

/// Parses `500GB`, `1.5TB`, `512GiB`, `1000000B` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` is not a size: use a number with B, KB, MB, GB, TB or KiB, MiB, GiB, TiB"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: it needs a number, such as 500GB"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes as u64)
}

/// A Kubernetes taint, `key[=value]:Effect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

/// SSH access to a node.
#[derive(Debug, Clone, Serialize)]
pub struct SshAccess {
    pub user: String,
    pub port: u16,
    pub key: Option<PathBuf>,
    pub passphrase: Option<SecretRef>,
    pub bastion: Option<JumpHost>,
    pub host_key: Option<String>,
    pub sudo: bool,
    pub sudo_password: Option<SecretRef>,
}

/// A jump host, `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JumpHost {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl FromStr for JumpHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
            Some(_) => return Err(format!("`{s}`: empty user before `@`")),
            None => (None, s),
        };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| format!("`{s}`: unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{s}`: no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{s}`: bad port `{p}`"))?,
            None => 22,
        };
        Ok(Self {
            user,
            host: host.to_owned(),
            port,
        })
    }
}

/// Talos API access to a node.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TalosAccess {
    pub port: u16,
}

/// A node's Redfish BMC.
#[derive(Debug, Clone, Serialize)]
pub struct Bmc {
    pub url: String,
    pub user: String,
    pub password: SecretRef,
    pub system_id: Option<String>,
    pub verify_tls: bool,
    pub ca: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub boot: BootMethod,
    pub image_url: Option<String>,
    pub uuid: Option<String>,
    pub serial: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schematic_ids_match_the_image_factory_and_installers_follow_the_target() {
        // The factory's published IDs: the empty (default) schematic, and the
        // one with only siderolabs/qemu-guest-agent (factory.talos.dev).
        assert_eq!(
            schematic_id(&[]),
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
        );
        assert_eq!(
            schematic_id(&["siderolabs/qemu-guest-agent".into()]),
            "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
        );
        let t = |image: &str| TalosSettings {
            install_image: image.into(),
            extensions: vec![],
        };
        assert_eq!(
            t("ghcr.io/siderolabs/installer:v1.13.9").installer("v1.14.0"),
            "ghcr.io/siderolabs/installer:v1.14.0"
        );
        assert_eq!(
            t("registry.local:5000/talos/installer:v1.13.9@sha256:ab12").installer("v1.14.0"),
            "registry.local:5000/talos/installer:v1.14.0"
        );
        assert_eq!(
            t("registry.local:5000/installer").installer("v1.14.0"),
            "registry.local:5000/installer:v1.14.0"
        );
    }

    #[test]
    fn ssh_hosts_of_repository_urls() {
        assert_eq!(
            ssh_host("ssh://git@github.com/org/r.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(
            ssh_host("ssh://git@127.0.0.1:2222/r.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            ssh_host("git@gitlab.example:org/r.git"),
            Some(("gitlab.example".into(), 22))
        );
        assert_eq!(ssh_host("ssh://[::1]:2200/r"), Some(("::1".into(), 2200)));
        assert_eq!(ssh_host("https://github.com/org/r.git"), None);
    }

    #[test]
    fn parses_sizes_macs_and_jump_hosts() {
        assert_eq!(
            "100GB-2TB".parse::<SizeRange>().unwrap(),
            SizeRange {
                min: Some(100_000_000_000),
                max: Some(2_000_000_000_000)
            }
        );
        assert_eq!(">= 1TiB".parse::<SizeRange>().unwrap().min, Some(1 << 40));
        assert!("2TB-1TB".parse::<SizeRange>().is_err());
        assert!("big".parse::<SizeRange>().is_err());
        assert_eq!(
            "AA-bb-cc-dd-ee-0F".parse::<MacAddr>().unwrap().to_string(),
            "aa:bb:cc:dd:ee:0f"
        );
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        let j: JumpHost = "ops@bastion:2222".parse().unwrap();
        assert_eq!(
            (j.user.as_deref(), j.host.as_str(), j.port),
            (Some("ops"), "bastion", 2222)
        );
        assert_eq!("[fd00::1]:23".parse::<JumpHost>().unwrap().host, "fd00::1");
        assert!("bastion:0".parse::<JumpHost>().is_err());
    }
}

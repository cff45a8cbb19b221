//! The inventory exactly as written: serde structs mirroring the TOML, with
//! unknown keys refused. Addresses stay strings here so that validation can
//! report every bad one at once, with its location.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    /// Inherited by every node of every cluster.
    #[serde(default)]
    pub defaults: RawNodeDefaults,
    /// `[[cluster]]` tables.
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<RawCluster>,
}

/// One `[[cluster]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: String,
    pub distribution: Distribution,
    #[serde(default)]
    pub versions: RawVersions,
    /// VIP or load-balancer address (or DNS name) of the Kubernetes API.
    pub endpoint: String,
    pub network: RawNetwork,
    pub gitops: Option<RawGitops>,
    #[serde(default)]
    pub secrets: RawClusterSecrets,
    /// CNI installed in phase 2.
    #[serde(default)]
    pub cni: Cni,
    /// Directory of user templates overlaying the bundled ones file by file.
    pub templates: Option<String>,
    #[serde(default)]
    pub patches: RawPatches,
    #[serde(default)]
    pub talos: RawTalosSettings,
    #[serde(default)]
    pub k3s: RawK3sSettings,
    /// Network boot served by `bootstrap serve`.
    pub provision: Option<RawProvision>,
    /// Registry mirrors, keyed by the upstream registry (`docker.io`, `ghcr.io`, `"*"`).
    #[serde(default)]
    pub registries: BTreeMap<String, RawRegistry>,
    /// Inherited by this cluster's nodes (over the file-level defaults).
    #[serde(default)]
    pub defaults: RawNodeDefaults,
    #[serde(default, rename = "node")]
    pub nodes: Vec<RawNode>,
}

/// The Kubernetes distribution of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Talos,
    K3s,
}

/// The CNI that phase 2 installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// Cilium, kube-proxy-free; the distribution's own CNI is disabled.
    #[default]
    Cilium,
    /// Keep the distribution's default CNI (flannel).
    Flannel,
}

/// `[cluster.versions]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawVersions {
    pub talos: Option<String>,
    pub kubernetes: Option<String>,
    pub k3s: Option<String>,
}

/// `[cluster.network]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub node_cidr: String,
    pub gateway: String,
    #[serde(default)]
    pub nameservers: Vec<String>,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub cluster_domain: Option<String>,
    /// Shared control-plane address (Talos VIP); must be in the node CIDR.
    pub vip: Option<String>,
    /// Load-balancer pool: a CIDR or `FIRST-LAST`.
    pub lb_pool: Option<String>,
    /// The cluster's own AS number (Cilium's BGP control plane).
    pub bgp_asn: Option<i64>,
    /// Routers Cilium peers with to advertise LoadBalancer addresses.
    #[serde(default)]
    pub bgp_peers: Vec<RawBgpPeer>,
}

/// One `[[cluster.network.bgp_peers]]` (or `bgp_peers = [{ address, asn }]`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBgpPeer {
    pub address: String,
    pub asn: i64,
}

/// One `[cluster.registries."<upstream registry>"]`: where nodes pull its images from.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// Mirror endpoints (`https://host[:port][/path]`), tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// PEM file of the CA that signed the mirrors' certificates (`file:PATH` or a path).
    pub ca: Option<String>,
    /// Use each mirror's path as given, without the `/v2/` suffix.
    pub override_path: Option<bool>,
}

/// `[cluster.gitops]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitops {
    #[serde(default)]
    pub engine: GitopsEngine,
    pub repository: String,
    pub branch: Option<String>,
    pub path: Option<String>,
    /// Secret reference to the deploy key (SSH private key).
    pub deploy_key: Option<String>,
    /// Local checkout of the repository: source of chart versions and values.
    pub checkout: Option<String>,
    /// The Git host's SSH key: OpenSSH known_hosts lines, or a pinned `SHA256:` fingerprint.
    pub known_hosts: Option<String>,
}

/// The GitOps engine of phase 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GitopsEngine {
    #[default]
    Flux,
    Argocd,
}

/// `[cluster.secrets]`: references only, never values.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClusterSecrets {
    pub sops_age_key: Option<String>,
    pub onepassword_token: Option<String>,
    pub vault_token: Option<String>,
    /// age recipients used to encrypt the generated secrets bundle at rest.
    #[serde(default)]
    pub age_recipients: Vec<String>,
}

/// `[cluster.patches]`: config patch files applied cluster-wide, then per role.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPatches {
    #[serde(default)]
    pub all: Vec<String>,
    #[serde(default)]
    pub controlplane: Vec<String>,
    #[serde(default)]
    pub worker: Vec<String>,
}

/// `[cluster.talos]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTalosSettings {
    /// Installer image (default: the official one for the Talos version).
    pub install_image: Option<String>,
    /// Official system extensions, installed through an Image Factory schematic.
    #[serde(default)]
    pub extensions: Vec<String>,
}

/// `[cluster.k3s]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawK3sSettings {
    /// Local path of the k3s binary to upload.
    pub binary: Option<String>,
    /// Or a URL, pinned by `binary_sha256`.
    pub binary_url: Option<String>,
    pub binary_sha256: Option<String>,
    /// Packaged components to disable (`traefik`, `servicelb`, ...).
    #[serde(default)]
    pub disable: Vec<String>,
}

/// `[cluster.provision]`: where and what `bootstrap serve` answers for network boots.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProvision {
    /// Host interface on the nodes' boot network (DHCP is bound to it).
    pub interface: String,
    /// This host's IPv4 address on that interface: TFTP, HTTP and proxyDHCP bind to it.
    pub address: String,
    /// HTTP port for iPXE scripts, kernels and machine configs (default 8080).
    pub http_port: Option<i64>,
    /// Addresses `bootstrap serve --dhcp` may lease (`FIRST-LAST` or a CIDR).
    pub dhcp_range: Option<String>,
    /// Directory holding `undionly.kpxe` and `ipxe.efi` (default /usr/lib/ipxe).
    pub ipxe_dir: Option<String>,
    /// Talos kernel (default: the release's `vmlinuz-amd64`), pinned by `kernel_sha256`.
    pub kernel_url: Option<String>,
    pub kernel_sha256: Option<String>,
    /// Talos initramfs (default: the release's `initramfs-amd64.xz`), pinned by `initramfs_sha256`.
    pub initramfs_url: Option<String>,
    pub initramfs_sha256: Option<String>,
    /// Talos ISO for `boot = "virtual-media"` BMCs without their own
    /// `image_url` (default: the release's `metal-amd64.iso`), pinned by `iso_sha256`.
    pub iso_url: Option<String>,
    pub iso_sha256: Option<String>,
    /// Kernel arguments added after Talos's own.
    #[serde(default)]
    pub kernel_args: Vec<String>,
}

/// Node fields that `[defaults]` and `[cluster.defaults]` may set.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNodeDefaults {
    pub install_disk: Option<RawDiskSelector>,
    pub data_disks: Option<Vec<RawDiskSelector>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub taints: Option<Vec<String>>,
    pub ssh: Option<RawSsh>,
    pub talos: Option<RawTalosAccess>,
    pub bmc: Option<RawBmc>,
}

/// One `[[cluster.node]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: String,
    pub role: Role,
    pub ip: String,
    pub mac: Option<String>,
    /// Expected SMBIOS system UUID (checked before a Talos node gets its config).
    pub uuid: Option<String>,
    /// Expected system serial number.
    pub serial: Option<String>,
    pub install_disk: Option<RawDiskSelector>,
    pub data_disks: Option<Vec<RawDiskSelector>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub taints: Option<Vec<String>>,
    #[serde(default)]
    pub patches: Vec<String>,
    pub ssh: Option<RawSsh>,
    pub talos: Option<RawTalosAccess>,
    pub bmc: Option<RawBmc>,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

/// Disk selector: any combination; all given must match.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDiskSelector {
    pub path: Option<String>,
    pub serial: Option<String>,
    pub wwid: Option<String>,
    pub model: Option<String>,
    /// `100GB-2TB`, `>= 100GB`, `<= 2TB` or `500GB`.
    pub size: Option<String>,
    /// Data disks only: the Talos user volume name (`/var/mnt/<name>`).
    pub name: Option<String>,
    /// Data disks only: `xfs` (default) or `ext4`.
    pub filesystem: Option<String>,
    /// Data disks only: left raw for Ceph (identity-checked, never formatted).
    pub ceph: Option<bool>,
}

/// `[ssh]`: how `bootstrap` reaches a node over SSH.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub port: Option<i64>,
    /// Private key file.
    pub key: Option<String>,
    /// Secret reference to the key's passphrase.
    pub passphrase: Option<String>,
    /// Jump host, `[user@]host[:port]`.
    pub bastion: Option<String>,
    /// Pinned host key fingerprint (`SHA256:...`).
    pub host_key: Option<String>,
    /// Run privileged commands through sudo (default: when user is not root).
    pub sudo: Option<bool>,
    /// Secret reference to the sudo password (passwordless sudo when absent).
    pub sudo_password: Option<String>,
}

/// `[talos]`: how `bootstrap` reaches a node's Talos API.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTalosAccess {
    pub port: Option<i64>,
}

/// `[bmc]`: the node's Redfish BMC.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBmc {
    pub url: Option<String>,
    pub user: Option<String>,
    /// Secret reference to the password.
    pub password: Option<String>,
    pub system_id: Option<String>,
    pub verify_tls: Option<bool>,
    /// PEM file of a CA to trust for this BMC.
    pub ca: Option<String>,
    /// Pinned SHA-256 fingerprint of the BMC's certificate.
    pub fingerprint: Option<String>,
    pub boot: Option<BootMethod>,
    pub image_url: Option<String>,
    /// Expected system UUID (identity check before power actions).
    pub uuid: Option<String>,
    /// Expected system serial number.
    pub serial: Option<String>,
}

/// How a node boots for provisioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMethod {
    Pxe,
    VirtualMedia,
}

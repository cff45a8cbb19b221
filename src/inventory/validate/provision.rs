//! Rules for `[cluster.provision]`: every address `bootstrap serve` uses is in
//! the inventory and checked here against the cluster's own (node CIDR, node
//! addresses, VIP, gateway, load-balancer pool). Whether the boot address is
//! really on this host is checked by `serve` itself, before it listens.

use std::net::{IpAddr, Ipv4Addr};

use super::super::model::{BootArtifact, Distribution, IpRange, Provision};
use super::super::path::FieldPath;
use super::super::raw::{RawCluster, RawProvision};
use super::{NodeAddrs, Validator};

/// Where Debian's `ipxe` package puts `undionly.kpxe` and `ipxe.efi`.
pub const DEFAULT_IPXE_DIR: &str = "/usr/lib/ipxe";
/// HTTP port of `bootstrap serve` when the inventory names none.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

impl Validator<'_> {
    pub(super) fn provision(
        &mut self,
        rp: &RawProvision,
        p: &FieldPath,
        rc: &RawCluster,
        talos_version: &str,
        net: &NodeAddrs,
    ) -> Option<Provision> {
        let errors_before = self.error_count();
        if rc.distribution != Distribution::Talos {
            self.error(
                p.clone(),
                "network boot serves Talos nodes (a machine config per node): k3s nodes are installed over SSH",
            );
        }
        let iface = rp.interface.trim();
        if iface.is_empty() || iface.len() > 15 || iface.chars().any(|c| c == '/' || c.is_whitespace()) {
            self.error(
                p.key("interface"),
                format!(
                    "`{}` is not a network interface name (1-15 characters, no `/` or spaces)",
                    rp.interface
                ),
            );
        }
        let nodes: Vec<(IpAddr, &str)> = rc
            .nodes
            .iter()
            .filter_map(|n| n.ip.parse().ok().map(|ip| (ip, n.name.as_str())))
            .collect();
        let address = self.boot_address(&rp.address, &p.key("address"), net, &nodes);
        let http_port = self.port(rp.http_port.map(|v| (v, p.key("http_port"))), DEFAULT_HTTP_PORT);
        let dhcp_range = rp
            .dhcp_range
            .as_ref()
            .and_then(|s| self.dhcp_range(s, &p.key("dhcp_range"), net, &nodes, address));
        let version = talos_version;
        let release = format!("https://github.com/siderolabs/talos/releases/download/{version}");
        let kernel = self.boot_artifact(
            (&rp.kernel_url, &rp.kernel_sha256),
            ("kernel_url", "kernel_sha256"),
            p,
            format!("talos-{version}-vmlinuz-amd64"),
            format!("{release}/vmlinuz-amd64"),
        );
        let initramfs = self.boot_artifact(
            (&rp.initramfs_url, &rp.initramfs_sha256),
            ("initramfs_url", "initramfs_sha256"),
            p,
            format!("talos-{version}-initramfs-amd64.xz"),
            format!("{release}/initramfs-amd64.xz"),
        );
        // Optional: only when the inventory names an ISO.
        let iso = if rp.iso_url.is_some() || rp.iso_sha256.is_some() {
            self.boot_artifact(
                (&rp.iso_url, &rp.iso_sha256),
                ("iso_url", "iso_sha256"),
                p,
                format!("talos-{version}-metal-amd64.iso"),
                format!("{release}/metal-amd64.iso"),
            )
        } else {
            None
        };
        for (i, arg) in rp.kernel_args.iter().enumerate() {
            if arg.is_empty() || arg.chars().any(char::is_whitespace) || arg.starts_with("talos.config=") {
                self.error(
                    p.key("kernel_args").elem(i, None),
                    format!("`{arg}` is not one kernel argument (no spaces; talos.config= is set by serve)"),
                );
            }
        }
        if self.error_count() > errors_before {
            return None;
        }
        Some(Provision {
            interface: iface.to_owned(),
            address: address?,
            http_port,
            dhcp_range,
            ipxe_dir: self.path(rp.ipxe_dir.as_deref().unwrap_or(DEFAULT_IPXE_DIR)),
            kernel: kernel?,
            initramfs: initramfs?,
            kernel_args: rp.kernel_args.clone(),
            iso,
        })
    }

    fn boot_address(&mut self, s: &str, p: &FieldPath, net: &NodeAddrs, nodes: &[(IpAddr, &str)]) -> Option<Ipv4Addr> {
        let ip = self.ip(s.trim(), p)?;
        let IpAddr::V4(v4) = ip else {
            self.error(p.clone(), format!("{ip} is not IPv4: PXE firmware boots over DHCPv4"));
            return None;
        };
        if let Some(cidr) = net.node_cidr.filter(|c| !c.contains(&ip)) {
            self.error(
                p.clone(),
                format!("{ip} is outside the node CIDR {cidr}: proxyDHCP only reaches the nodes' own network"),
            );
        }
        if let Some((_, name)) = nodes.iter().find(|(n, _)| *n == ip) {
            self.error(p.clone(), format!("{ip} is node `{name}`'s address"));
        }
        if net.vip == Some(ip) {
            self.error(p.clone(), format!("{ip} is the cluster's VIP"));
        }
        Some(v4)
    }

    fn dhcp_range(
        &mut self,
        s: &str,
        p: &FieldPath,
        net: &NodeAddrs,
        nodes: &[(IpAddr, &str)],
        boot: Option<Ipv4Addr>,
    ) -> Option<IpRange> {
        let range = self.ip_range(s, p)?;
        if !range.first.is_ipv4() {
            self.error(
                p.clone(),
                format!("{range} is not IPv4: PXE firmware boots over DHCPv4"),
            );
            return None;
        }
        let before = self.error_count();
        if let Some(cidr) = net.node_cidr
            && !(cidr.contains(&range.first) && cidr.contains(&range.last))
        {
            self.error(
                p.clone(),
                format!("DHCP range {range} is not inside the node CIDR {cidr}"),
            );
        }
        if let Some(cidr) = net.node_cidr
            && (range.first == cidr.network() || range.last == cidr.broadcast())
        {
            self.error(
                p.clone(),
                format!("DHCP range {range} includes the network or broadcast address of {cidr}"),
            );
        }
        for (ip, name) in nodes {
            if range.contains(*ip) {
                self.error(
                    p.clone(),
                    format!("DHCP range {range} contains node `{name}`'s address {ip}"),
                );
            }
        }
        let named = [
            ("boot address", boot.map(IpAddr::V4)),
            ("gateway", net.gateway),
            ("VIP", net.vip),
        ];
        for (what, ip) in named {
            if let Some(ip) = ip.filter(|ip| range.contains(*ip)) {
                self.error(p.clone(), format!("DHCP range {range} contains the {what} {ip}"));
            }
        }
        if let Some(pool) = net.lb_pool.filter(|pool| pool.overlaps(&range)) {
            self.error(
                p.clone(),
                format!("DHCP range {range} overlaps the load-balancer pool {pool}"),
            );
        }
        (self.error_count() == before).then_some(range)
    }

    fn boot_artifact(
        &mut self,
        (url, sha256): (&Option<String>, &Option<String>),
        (url_key, sha_key): (&str, &str),
        p: &FieldPath,
        file: String,
        default_url: String,
    ) -> Option<BootArtifact> {
        if let Some(u) = url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            self.error(p.key(url_key), format!("`{u}` is not an http(s) URL"));
        }
        let Some(sum) = sha256 else {
            self.error(
                p.clone(),
                format!(
                    "the boot files are pinned: add {sha_key} (sha256 of {})",
                    url.as_deref().unwrap_or(&default_url)
                ),
            );
            return None;
        };
        if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
            self.error(p.key(sha_key), "a sha256 is 64 hexadecimal digits");
            return None;
        }
        Some(BootArtifact {
            file,
            url: url.clone().unwrap_or(default_url),
            sha256: sum.to_ascii_lowercase(),
        })
    }
}

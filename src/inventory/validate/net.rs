//! Rules for the network promises: registry mirrors, BGP peers, and where a
//! load-balancer pool can be reached from. Checking that a registry CA file
//! exists is the one file-system access of validation (a path is all the
//! inventory holds, and a missing CA would only fail on the nodes).

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use super::super::model::{BgpPeer, IpRange, Mirror, Registry};
use super::super::path::FieldPath;
use super::super::raw::{RawBgpPeer, RawRegistry};
use super::{Validator, is_dns_name};

/// Ranges no router forwards (RFC 6890 special-purpose blocks that are not
/// globally reachable unicast): a load-balancer pool outside the node network
/// in one of these can be advertised but never reached.
const UNROUTABLE: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (RFC 791)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("::/128", "the unspecified address (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// The largest ASN a BGP speaker may use (4294967295 is reserved, RFC 7300).
const MAX_ASN: i64 = 4_294_967_294;

/// Registry names that are one registry: containerd maps `docker.io` to
/// `registry-1.docker.io` (remotes/docker `DefaultHost`), and k3s maps it back.
fn canonical_registry(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    match n.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => n,
    }
}

/// `host[:port]` with a DNS name or an IP address (IPv6 in brackets).
fn is_registry_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            a => match a.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, port)) => (Some(h), Some(port)),
            None => (Some(s), None),
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let host_ok = host.is_none_or(|h| h.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(&h.to_ascii_lowercase()));
    port_ok && host_ok
}

impl Validator<'_> {
    /// `[cluster.registries]`: names, mirror URLs, CA files, `override_path`.
    pub(super) fn registries(&mut self, raw: &BTreeMap<String, RawRegistry>, p: &FieldPath) -> Vec<Registry> {
        let mut seen: HashMap<String, FieldPath> = HashMap::new();
        // Mirror host → (CA, registry) that set it first: TLS settings are per host.
        let mut host_ca: HashMap<String, (Option<std::path::PathBuf>, String)> = HashMap::new();
        let mut out = vec![];
        for (name, r) in raw {
            let rp = p.key(name);
            if name != "*" && !is_registry_host(name) {
                self.error_at_key(
                    rp.clone(),
                    format!("`{name}` is not a registry name: use the first part of image names, host[:port] (such as docker.io or registry.example:5000), or \"*\" for every registry"),
                );
            }
            if let Some(first) = seen.insert(canonical_registry(name), rp.clone()) {
                self.error_at_key(
                    rp.clone(),
                    format!("duplicate registry `{name}`: it is the same registry as {first}"),
                );
            }
            let override_path = r.override_path.unwrap_or(false);
            let mut mirrors: Vec<Mirror> = vec![];
            for (i, m) in r.mirrors.iter().enumerate() {
                let mp = rp.key("mirrors").elem(i, None);
                let Some(mirror) = self.mirror(m, &mp) else { continue };
                if mirrors.iter().any(|o| o.url == mirror.url) {
                    self.error(mp, format!("duplicate mirror `{m}` for registry `{name}`"));
                    continue;
                }
                if override_path && mirror.path == "/" {
                    self.error(
                        mp,
                        format!("`{m}` has no path, but override_path = true uses the mirror's path instead of /v2/: give the full path (such as https://harbor.example/v2/docker.io) or drop override_path"),
                    );
                }
                mirrors.push(mirror);
            }
            let ca = r.ca.as_deref().and_then(|c| self.ca_file(c, &rp.key("ca")));
            if ca.is_some() && !mirrors.iter().any(|m| m.url.starts_with("https://")) {
                self.error(
                    rp.key("ca"),
                    format!("registry `{name}` has a CA but no https:// mirror it could verify"),
                );
            }
            for m in &mirrors {
                match host_ca.get(&m.host) {
                    Some((other_ca, other)) if *other_ca != ca => self.error(
                        rp.key("ca"),
                        format!(
                            "mirror host {} is also a mirror of registry `{other}` with another CA: nodes keep one TLS setting per host",
                            m.host
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        host_ca.insert(m.host.clone(), (ca.clone(), name.clone()));
                    }
                }
            }
            out.push(Registry {
                name: name.clone(),
                mirrors,
                ca,
                override_path,
            });
        }
        out
    }

    fn mirror(&mut self, s: &str, p: &FieldPath) -> Option<Mirror> {
        let bad = |why: &str| format!("`{s}` is not a mirror URL: {why} (expected https://host[:port][/path])");
        let url = match reqwest::Url::parse(s) {
            Ok(u) => u,
            Err(e) => {
                self.error(p.clone(), bad(&e.to_string()));
                return None;
            }
        };
        // Talos' RegistryEndpoint.url pattern is ^(http|https)://; containerd hosts.toml likewise.
        let why = if !matches!(url.scheme(), "http" | "https") {
            Some("the scheme must be https:// or http://")
        } else if url.host_str().is_none_or(str::is_empty) {
            Some("it names no host")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("credentials do not belong in a URL")
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("a query or fragment is not part of a registry endpoint")
        } else {
            None
        };
        if let Some(why) = why {
            self.error(p.clone(), bad(why));
            return None;
        }
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let path = url.path().trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        let base = format!("{}://{host}", url.scheme());
        Some(Mirror {
            url: if path == "/" { base } else { format!("{base}{path}") },
            host,
            path: path.to_owned(),
        })
    }

    fn ca_file(&mut self, s: &str, p: &FieldPath) -> Option<std::path::PathBuf> {
        let path = self.path(s.strip_prefix("file:").unwrap_or(s));
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.error(p.clone(), format!("CA file {} is not a file", path.display()));
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.error(p.clone(), format!("CA file {} does not exist", path.display()));
                None
            }
            Err(e) => {
                self.error(p.clone(), format!("CA file {}: {e}", path.display()));
                None
            }
        }
    }

    /// `bgp_peers`: addresses and AS numbers; they need the cluster's own `bgp_asn`.
    pub(super) fn bgp_peers(&mut self, raw: &[RawBgpPeer], has_asn: bool, p: &FieldPath) -> Vec<BgpPeer> {
        let bp = p.key("bgp_peers");
        if !raw.is_empty() && !has_asn {
            self.error(
                bp.clone(),
                "bgp_peers need bgp_asn, the cluster's own AS number Cilium peers with",
            );
        }
        let mut out: Vec<BgpPeer> = vec![];
        for (i, peer) in raw.iter().enumerate() {
            let pp = bp.elem(i, None);
            let address = self.ip(&peer.address, &pp.key("address"));
            if !(1..=MAX_ASN).contains(&peer.asn) {
                self.error(
                    pp.key("asn"),
                    format!("{} is not a BGP AS number (1 to {MAX_ASN})", peer.asn),
                );
                continue;
            }
            let Some(address) = address else { continue };
            if out.iter().any(|o| o.address == address) {
                self.error(pp.key("address"), format!("duplicate BGP peer {address}"));
                continue;
            }
            out.push(BgpPeer {
                address,
                asn: peer.asn as u32,
            });
        }
        out
    }

    /// Where clients reach a load-balancer pool from: inside the node network
    /// it needs no router; outside it, only BGP peers can route it, and then
    /// it must be routable unicast space apart from the pod and service ranges.
    pub(super) fn lb_pool_reach(
        &mut self,
        pool: IpRange,
        node_cidr: IpNet,
        cluster_ranges: [(&str, Option<IpNet>); 2],
        advertised: bool,
        p: &FieldPath,
    ) {
        for (field, net) in cluster_ranges {
            if let Some(net) = net.filter(|n| pool.overlaps(&IpRange::of_net(n))) {
                self.error(
                    p.clone(),
                    format!("load-balancer pool {pool} overlaps the {field} {net}"),
                );
            }
        }
        if node_cidr.contains(&pool.first) && node_cidr.contains(&pool.last) {
            return;
        }
        if !advertised {
            self.error(
                p.clone(),
                format!(
                    "load-balancer pool {pool} is not inside the node CIDR {node_cidr}, and no bgp_peers advertise it: keep it inside the node network or add bgp_peers (the routers Cilium announces it to)"
                ),
            );
            return;
        }
        for (cidr, what) in UNROUTABLE {
            let net: IpNet = cidr.parse().expect("constant CIDR");
            if pool.overlaps(&IpRange::of_net(&net)) {
                self.error(
                    p.clone(),
                    format!("load-balancer pool {pool} is outside the node CIDR {node_cidr} and in {net}, {what}: no router forwards it, so BGP cannot make it reachable"),
                );
            }
        }
    }
}

//! Raw inventory → validated [`Inventory`]. Every rule runs and every finding
//! is collected (with the field path it concerns); locations are attached by
//! the caller from the span index. No I/O happens here, beyond checking that
//! registry CA files exist ([`net`]).

mod net;
mod provision;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::diagnostic::Severity;
use super::model::*;
use super::path::FieldPath;
use super::raw::*;
use crate::secret::{SecretRef, resolve_path};

/// One finding before it is located.
#[derive(Debug)]
pub(crate) struct Finding {
    pub severity: Severity,
    pub path: FieldPath,
    pub message: String,
    /// Point at the key rather than the value (unknown or duplicate keys).
    pub at_key: bool,
}

/// Validates `raw`; `file` is the inventory's path (relative paths in it are
/// taken from its directory). The model is returned only when there is no error.
pub(crate) fn validate(raw: &RawInventory, file: &Path) -> (Option<Inventory>, Vec<Finding>) {
    let base = file.parent().unwrap_or(Path::new("."));
    let mut v = Validator {
        base,
        found: Vec::new(),
        ips: HashMap::new(),
        macs: HashMap::new(),
    };
    let root = FieldPath::root();
    if raw.clusters.is_empty() {
        v.error(
            root.clone(),
            "the inventory defines no cluster: add a [[cluster]] table",
        );
    }
    let mut names: HashMap<&str, FieldPath> = HashMap::new();
    let mut clusters = Vec::new();
    for (i, rc) in raw.clusters.iter().enumerate() {
        let cp = root.key("cluster").elem(i, Some(&rc.name));
        if let Some(first) = names.insert(&rc.name, cp.clone()) {
            v.error(
                cp.key("name"),
                format!("duplicate cluster name `{}` (first defined at {first})", rc.name),
            );
        }
        clusters.push(v.cluster(rc, &cp, &raw.defaults));
    }
    v.cross_cluster(&raw.clusters, &clusters);
    let has_error = v.found.iter().any(|f| f.severity == Severity::Error);
    let model = (!has_error).then(|| Inventory {
        path: file.to_path_buf(),
        clusters: clusters
            .into_iter()
            .map(|c| c.expect("no error means every cluster validated"))
            .collect(),
    });
    (model, v.found)
}

struct Validator<'a> {
    base: &'a Path,
    found: Vec<Finding>,
    /// Node addresses and MACs across the whole inventory, for duplicates.
    ips: HashMap<IpAddr, FieldPath>,
    macs: HashMap<MacAddr, FieldPath>,
}

/// A value and the path it came from (the node's own, or a defaults table).
type Origin<'r, T> = Option<(&'r T, FieldPath)>;

impl<'a> Validator<'a> {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.found.push(Finding {
            severity: Severity::Error,
            path,
            message: message.into(),
            at_key: false,
        });
    }

    fn warning(&mut self, path: FieldPath, message: impl Into<String>) {
        self.found.push(Finding {
            severity: Severity::Warning,
            path,
            message: message.into(),
            at_key: false,
        });
    }

    fn error_at_key(&mut self, path: FieldPath, message: impl Into<String>) {
        self.found.push(Finding {
            severity: Severity::Error,
            path,
            message: message.into(),
            at_key: true,
        });
    }

    fn path(&self, p: &str) -> PathBuf {
        resolve_path(self.base, p)
    }

    fn ip(&mut self, s: &str, path: &FieldPath) -> Option<IpAddr> {
        match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.error(path.clone(), format!("`{s}` is not an IP address"));
                None
            }
        }
    }

    fn cidr(&mut self, s: &str, path: &FieldPath) -> Option<IpNet> {
        match s.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    path.clone(),
                    format!("`{s}` has host bits set: did you mean `{}`?", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(path.clone(), format!("`{s}` is not a CIDR such as 10.0.0.0/24"));
                None
            }
        }
    }

    fn secret(&mut self, s: &Option<String>, path: FieldPath) -> Option<SecretRef> {
        let s = s.as_ref()?;
        match SecretRef::parse(s, self.base) {
            Ok(r) => Some(r),
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    fn cluster(&mut self, rc: &RawCluster, cp: &FieldPath, file_defaults: &RawNodeDefaults) -> Option<Cluster> {
        let errors_before = self.error_count();
        if !is_dns_label(&rc.name) {
            self.error(
                cp.key("name"),
                format!("`{}` is not a valid cluster name: {RFC1123_LABEL}", rc.name),
            );
        }
        let endpoint = rc.endpoint.trim().to_owned();
        if endpoint.parse::<IpAddr>().is_err() && !is_dns_name(&endpoint) {
            self.error(
                cp.key("endpoint"),
                format!("`{}` is neither an IP address nor a DNS name", rc.endpoint),
            );
        }
        let versions = Versions {
            talos: rc
                .versions
                .talos
                .clone()
                .unwrap_or_else(|| DEFAULT_TALOS_VERSION.into()),
            kubernetes: rc
                .versions
                .kubernetes
                .clone()
                .unwrap_or_else(|| DEFAULT_KUBERNETES_VERSION.into()),
            k3s: rc.versions.k3s.clone().unwrap_or_else(|| DEFAULT_K3S_VERSION.into()),
        };
        for (field, value) in [("talos", &versions.talos), ("kubernetes", &versions.kubernetes)] {
            if !is_version(value) {
                self.error(
                    cp.key("versions").key(field),
                    format!("`{value}` is not a version such as v1.13.9"),
                );
            }
        }
        let (network, addrs) = self.network(&rc.network, &cp.key("network"));
        let gitops = rc.gitops.as_ref().map(|g| self.gitops(g, &cp.key("gitops"), &rc.name));
        let sp = cp.key("secrets");
        let secrets = ClusterSecrets {
            sops_age_key: self.secret(&rc.secrets.sops_age_key, sp.key("sops_age_key")),
            onepassword_token: self.secret(&rc.secrets.onepassword_token, sp.key("onepassword_token")),
            vault_token: self.secret(&rc.secrets.vault_token, sp.key("vault_token")),
            age_recipients: rc.secrets.age_recipients.clone(),
        };
        for (i, r) in rc.secrets.age_recipients.iter().enumerate() {
            if !r.starts_with("age1") || r.len() < 20 {
                self.error(
                    sp.key("age_recipients").elem(i, None),
                    format!("`{r}` is not an age recipient (age1...)"),
                );
            }
        }
        let k3s = self.k3s(&rc.k3s, &cp.key("k3s"));
        let registries = self.registries(&rc.registries, &cp.key("registries"));
        let patches = Patches {
            all: rc.patches.all.iter().map(|p| self.path(p)).collect(),
            controlplane: rc.patches.controlplane.iter().map(|p| self.path(p)).collect(),
            worker: rc.patches.worker.iter().map(|p| self.path(p)).collect(),
        };

        let provision = rc
            .provision
            .as_ref()
            .map(|rp| self.provision(rp, &cp.key("provision"), rc, &versions.talos, &addrs));
        // What a virtual-media BMC without its own image_url inserts.
        let served_iso = provision
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|p| p.iso.is_some())
            .map(|p| p.iso_url(&rc.name));
        let mut nodes = Vec::new();
        let mut node_names: HashMap<&str, FieldPath> = HashMap::new();
        let defaults = [
            (&rc.defaults, cp.key("defaults")),
            (file_defaults, FieldPath::root().key("defaults")),
        ];
        for (j, rn) in rc.nodes.iter().enumerate() {
            let np = cp.key("node").elem(j, Some(&rn.name));
            if let Some(first) = node_names.insert(&rn.name, np.clone()) {
                self.error(
                    np.key("name"),
                    format!("duplicate node name `{}` (first defined at {first})", rn.name),
                );
            }
            nodes.push(self.node(rn, &np, &defaults, rc.distribution, &addrs, served_iso.as_deref()));
        }
        if rc.nodes.is_empty() {
            self.error(cp.clone(), "the cluster has no nodes: add [[cluster.node]] tables");
        } else {
            let cps = rc.nodes.iter().filter(|n| n.role == Role::Controlplane).count();
            if cps == 0 {
                self.error(
                    cp.clone(),
                    "the cluster has no control-plane node: give at least one node role = \"controlplane\"",
                );
            } else if cps % 2 == 0 {
                self.warning(
                    cp.clone(),
                    format!("{cps} control-plane nodes: an even etcd membership tolerates no more failures than {} (use an odd number)", cps - 1),
                );
            }
        }
        if self.error_count() > errors_before {
            return None;
        }
        Some(Cluster {
            name: rc.name.clone(),
            distribution: rc.distribution,
            talos: TalosSettings {
                install_image: rc.talos.install_image.clone().unwrap_or_else(|| {
                    if rc.talos.extensions.is_empty() {
                        format!("ghcr.io/siderolabs/installer:{}", versions.talos)
                    } else {
                        let id = super::model::schematic_id(&rc.talos.extensions);
                        format!("{}/installer/{id}:{}", super::model::IMAGE_FACTORY, versions.talos)
                    }
                }),
                extensions: rc.talos.extensions.clone(),
            },
            versions,
            endpoint,
            network: network?,
            gitops: gitops.flatten(),
            secrets,
            cni: rc.cni,
            templates: rc.templates.as_deref().map(|p| self.path(p)),
            patches,
            k3s,
            registries,
            provision: provision.flatten(),
            nodes: nodes.into_iter().collect::<Option<Vec<_>>>()?,
        })
    }

    fn error_count(&self) -> usize {
        self.found.iter().filter(|f| f.severity == Severity::Error).count()
    }

    /// The typed network (when all of it is valid) and the addresses node
    /// rules check against (those that are valid, even if others are not).
    fn network(&mut self, rn: &RawNetwork, p: &FieldPath) -> (Option<Network>, NodeAddrs) {
        let node_cidr = self.cidr(&rn.node_cidr, &p.key("node_cidr"));
        let pod_cidr = self.cidr(&rn.pod_cidr, &p.key("pod_cidr"));
        let service_cidr = self.cidr(&rn.service_cidr, &p.key("service_cidr"));
        let gateway = self.ip(&rn.gateway, &p.key("gateway"));
        let vip = rn.vip.as_ref().and_then(|s| self.ip(s, &p.key("vip")));
        let nameservers: Vec<Option<IpAddr>> = rn
            .nameservers
            .iter()
            .enumerate()
            .map(|(i, s)| self.ip(s, &p.key("nameservers").elem(i, None)))
            .collect();
        if let Some(net) = node_cidr {
            for (field, ip) in [("gateway", gateway), ("vip", vip)] {
                if let Some(ip) = ip.filter(|ip| !net.contains(ip)) {
                    self.error(p.key(field), format!("{ip} is outside the node CIDR {net}"));
                }
            }
        }
        if let (Some(g), Some(v)) = (gateway, vip)
            && g == v
        {
            self.error(p.key("vip"), format!("the VIP {v} is the gateway's address"));
        }
        let nets = [
            ("node_cidr", node_cidr),
            ("pod_cidr", pod_cidr),
            ("service_cidr", service_cidr),
        ];
        for (i, (fa, a)) in nets.iter().enumerate() {
            for (fb, b) in &nets[i + 1..] {
                if let (Some(a), Some(b)) = (a, b)
                    && nets_overlap(a, b)
                {
                    self.error(p.key(fb), format!("{fb} {b} overlaps {fa} {a}"));
                }
            }
        }
        if let Some(svc) = service_cidr {
            let (min_prefix, max_prefix) = if svc.addr().is_ipv4() { (12, 24) } else { (108, 120) };
            if svc.prefix_len() > max_prefix {
                self.error(
                    p.key("service_cidr"),
                    format!("service CIDR {svc} is too small: use /{max_prefix} or larger"),
                );
            } else if svc.prefix_len() < min_prefix {
                self.error(
                    p.key("service_cidr"),
                    format!("service CIDR {svc} is too large: the API server accepts at most /{min_prefix}"),
                );
            }
        }
        let cluster_domain = rn.cluster_domain.clone().unwrap_or_else(|| "cluster.local".into());
        if !is_dns_name(&cluster_domain) {
            self.error(
                p.key("cluster_domain"),
                format!("`{cluster_domain}` is not a DNS domain"),
            );
        }
        let lb_pool = rn.lb_pool.as_ref().and_then(|s| self.ip_range(s, &p.key("lb_pool")));
        let bgp_peers = self.bgp_peers(&rn.bgp_peers, rn.bgp_asn.is_some(), p);
        if let (Some(pool), Some(net)) = (lb_pool, node_cidr) {
            let ranges = [("pod CIDR", pod_cidr), ("service CIDR", service_cidr)];
            self.lb_pool_reach(pool, net, ranges, !rn.bgp_peers.is_empty(), &p.key("lb_pool"));
            for (what, ip) in [("gateway", gateway), ("VIP", vip)] {
                if let Some(ip) = ip.filter(|ip| pool.contains(*ip)) {
                    self.error(
                        p.key("lb_pool"),
                        format!("load-balancer pool {pool} contains the {what} {ip}"),
                    );
                }
            }
        }
        let bgp_asn = match rn.bgp_asn {
            Some(asn) if !(1..=4_294_967_294).contains(&asn) => {
                self.error(
                    p.key("bgp_asn"),
                    format!("{asn} is not a BGP AS number (1 to 4294967294)"),
                );
                None
            }
            other => other.map(|a| a as u32),
        };
        let addrs = NodeAddrs {
            node_cidr,
            gateway,
            vip,
            lb_pool,
        };
        let network = (|| {
            Some(Network {
                node_cidr: node_cidr?,
                gateway: gateway?,
                nameservers: nameservers.into_iter().collect::<Option<Vec<_>>>()?,
                pod_cidr: pod_cidr?,
                service_cidr: service_cidr?,
                cluster_domain,
                vip,
                lb_pool,
                bgp_asn,
                bgp_peers,
            })
        })();
        (network, addrs)
    }

    fn ip_range(&mut self, s: &str, p: &FieldPath) -> Option<IpRange> {
        if s.contains('/') {
            return self.cidr(s, p).map(|n| IpRange::of_net(&n));
        }
        let Some((a, b)) = s.split_once('-') else {
            self.error(p.clone(), format!("`{s}` is neither a CIDR nor a range FIRST-LAST"));
            return None;
        };
        let (first, last) = (self.ip(a.trim(), p)?, self.ip(b.trim(), p)?);
        if first.is_ipv4() != last.is_ipv4() || first > last {
            self.error(
                p.clone(),
                format!("`{s}` is an empty range: {first} comes after {last} or is of another family"),
            );
            return None;
        }
        Some(IpRange { first, last })
    }

    fn gitops(&mut self, g: &RawGitops, p: &FieldPath, cluster: &str) -> Option<Gitops> {
        let url = g.repository.trim();
        let ok = ["https://", "http://", "ssh://", "oci://", "file://"]
            .iter()
            .any(|s| url.starts_with(s))
            || (url.starts_with("git@") && url.contains(':'));
        if !ok {
            self.error(
                p.key("repository"),
                format!("`{url}` is not a repository URL (https://, ssh://, git@host:path or oci://)"),
            );
        }
        let deploy_key = self.secret(&g.deploy_key, p.key("deploy_key"));
        if deploy_key.is_none() && g.deploy_key.is_none() && ssh_host(url).is_some() {
            // Upstream: source-controller refuses an ssh:// GitRepository whose secret has no `identity`.
            self.error(
                p.key("repository"),
                format!(
                    "`{url}` is reached over SSH, which needs deploy_key (a private key reference); or use https://"
                ),
            );
        }
        let branch = g.branch.clone().unwrap_or_else(|| "main".into());
        if branch.is_empty() || branch.contains([' ', '~', '^', ':', '\\']) || branch.contains("..") {
            self.error(p.key("branch"), format!("`{branch}` is not a valid Git branch name"));
        }
        let known_hosts = g
            .known_hosts
            .as_deref()
            .and_then(|k| self.git_known_hosts(k, url, p.key("known_hosts")));
        Some(Gitops {
            engine: g.engine,
            repository: url.to_owned(),
            branch,
            path: g.path.clone().unwrap_or_else(|| format!("./clusters/{cluster}")),
            deploy_key,
            checkout: g.checkout.as_deref().map(|c| self.path(c)),
            known_hosts,
        })
    }

    /// `[cluster.gitops] known_hosts`: a `SHA256:` fingerprint, or OpenSSH
    /// known_hosts lines of which one names the repository's host.
    fn git_known_hosts(&mut self, text: &str, url: &str, p: FieldPath) -> Option<GitKnownHosts> {
        if ssh_host(url).is_none() {
            self.error(p, format!("known_hosts is for SSH repositories; `{url}` is not one"));
            return None;
        }
        let t = text.trim();
        if let Some(b64) = t.strip_prefix("SHA256:") {
            let ok = b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
            if !ok {
                self.error(
                    p,
                    format!("`{t}` is not a SHA256 fingerprint (SHA256: + 43 base64 characters)"),
                );
                return None;
            }
            return Some(GitKnownHosts::Fingerprint(t.to_owned()));
        }
        // Which lines name the host is checked where the key is used (phase 0).
        for (n, line) in t.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Err(e) = line.parse::<russh::keys::ssh_key::known_hosts::Entry>() {
                self.error(p, format!("line {} is not an OpenSSH known_hosts line: {e}", n + 1));
                return None;
            }
        }
        Some(GitKnownHosts::Lines(format!("{t}\n")))
    }

    fn k3s(&mut self, k: &RawK3sSettings, p: &FieldPath) -> K3sSettings {
        if let Some(sum) = &k.binary_sha256
            && (sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()))
        {
            self.error(p.key("binary_sha256"), "a sha256 is 64 hexadecimal digits");
        }
        if k.binary_url.is_some() && k.binary_sha256.is_none() {
            self.error(
                p.key("binary_url"),
                "a downloaded k3s binary must be pinned: add binary_sha256",
            );
        }
        if k.binary.is_some() && k.binary_url.is_some() {
            self.error(
                p.key("binary_url"),
                "give either binary (a local path) or binary_url, not both",
            );
        }
        K3sSettings {
            binary: k.binary.as_deref().map(|b| self.path(b)),
            binary_url: k.binary_url.clone(),
            binary_sha256: k.binary_sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            disable: k.disable.clone(),
        }
    }

    fn node(
        &mut self,
        rn: &RawNode,
        np: &FieldPath,
        defaults: &[(&RawNodeDefaults, FieldPath); 2],
        dist: Distribution,
        net: &NodeAddrs,
        served_iso: Option<&str>,
    ) -> Option<Node> {
        let errors_before = self.error_count();
        if !is_dns_label(&rn.name) {
            self.error(
                np.key("name"),
                format!("`{}` is not a valid hostname: {RFC1123_LABEL}", rn.name),
            );
        }
        let ip = self.ip(&rn.ip, &np.key("ip"));
        if let Some(ip) = ip {
            if let Some(cidr) = net.node_cidr.filter(|c| !c.contains(&ip)) {
                self.error(np.key("ip"), format!("{ip} is outside the node CIDR {cidr}"));
            }
            if net.gateway == Some(ip) {
                self.error(np.key("ip"), format!("{ip} is the gateway's address"));
            }
            if net.vip == Some(ip) {
                self.error(np.key("ip"), format!("{ip} is the cluster's VIP"));
            }
            if let Some(pool) = net.lb_pool.filter(|p| p.contains(ip)) {
                self.error(np.key("ip"), format!("{ip} is inside the load-balancer pool {pool}"));
            }
        }
        if let Some(ip) = ip {
            if let Some(first) = self.ips.get(&ip).cloned() {
                self.error(np.key("ip"), format!("duplicate address {ip} (also {first})"));
            } else {
                self.ips.insert(ip, np.key("ip"));
            }
        }
        let mac = match &rn.mac {
            Some(s) => match s.parse::<MacAddr>() {
                Ok(m) => {
                    if let Some(first) = self.macs.get(&m).cloned() {
                        self.error(np.key("mac"), format!("duplicate MAC {m} (also {first})"));
                    } else {
                        self.macs.insert(m, np.key("mac"));
                    }
                    Some(m)
                }
                Err(()) => {
                    self.error(
                        np.key("mac"),
                        format!("`{s}` is not a MAC address such as 52:54:00:12:34:56"),
                    );
                    None
                }
            },
            None => {
                if dist == Distribution::Talos {
                    self.error(
                        np.clone(),
                        "Talos nodes need `mac`: it selects the network interface to configure",
                    );
                }
                None
            }
        };

        let install_disk = inherit(&rn.install_disk, np, defaults, "install_disk", |d| {
            d.install_disk.as_ref()
        });
        let install_disk = match install_disk {
            Some((d, p)) => self.disk(d, &p),
            None => {
                if dist == Distribution::Talos {
                    self.error(
                        np.clone(),
                        "Talos nodes need `install_disk` (a path or a selector: serial, wwid, model, size)",
                    );
                }
                None
            }
        };
        if let Some((d, p)) = inherit(&rn.install_disk, np, defaults, "install_disk", |d| {
            d.install_disk.as_ref()
        }) {
            for (set, key) in [
                (d.name.is_some(), "name"),
                (d.filesystem.is_some(), "filesystem"),
                (d.ceph.is_some(), "ceph"),
            ] {
                if set {
                    self.error(p.key(key), format!("`{key}` is for data_disks, not the install disk"));
                }
            }
        }
        let data_disks = inherit(&rn.data_disks, np, defaults, "data_disks", |d| d.data_disks.as_ref())
            .map(|(ds, p)| {
                ds.iter()
                    .enumerate()
                    .filter_map(|(i, d)| self.data_disk(d, i, &p.elem(i, None)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut names = BTreeMap::new();
        for (i, d) in data_disks.iter().enumerate() {
            if let Some(first) = names.insert(d.name.clone(), i) {
                self.error(
                    np.key("data_disks").elem(i, None).key("name"),
                    format!("duplicate data disk name `{}` (also data_disks[{first}])", d.name),
                );
            }
        }
        let uuid = rn.uuid.as_ref().and_then(|u| {
            if is_uuid(u.trim()) {
                Some(u.trim().to_ascii_lowercase())
            } else {
                self.error(
                    np.key("uuid"),
                    format!("`{u}` is not a system UUID such as 4c4c4544-0042-3510-8053-b4c04f4e3732"),
                );
                None
            }
        });
        let serial = rn.serial.as_ref().and_then(|s| {
            if s.trim().is_empty() {
                self.error(np.key("serial"), "empty serial number: remove it or give the machine's");
                None
            } else {
                Some(s.trim().to_owned())
            }
        });
        let labels = self.labels(rn, np, defaults);
        let taints = inherit(&rn.taints, np, defaults, "taints", |d| d.taints.as_ref())
            .map(|(ts, p)| {
                ts.iter()
                    .enumerate()
                    .filter_map(|(i, t)| self.taint(t, &p.elem(i, None)))
                    .collect()
            })
            .unwrap_or_default();
        let ssh = self.ssh(rn, np, defaults);
        if dist == Distribution::K3s
            && ssh.is_none()
            && !self
                .found
                .iter()
                .any(|f| f.path.index_key().starts_with(&np.key("ssh").index_key()))
        {
            self.error(np.clone(), "k3s nodes are installed over SSH: give `[ssh]` access for this node or in [defaults]/[cluster.defaults]");
        }
        let talos_port = inherit(&rn.talos, np, defaults, "talos", |d| d.talos.as_ref())
            .and_then(|(t, p)| t.port.map(|port| (port, p.key("port"))));
        let talos = TalosAccess {
            port: self.port(talos_port, 50000),
        };
        let bmc = self.bmc(rn, np, defaults, served_iso);

        if self.error_count() > errors_before {
            return None;
        }
        Some(Node {
            name: rn.name.clone(),
            role: rn.role,
            ip: ip?,
            mac,
            uuid,
            serial,
            install_disk,
            data_disks,
            labels,
            taints,
            patches: rn.patches.iter().map(|p| self.path(p)).collect(),
            ssh,
            talos,
            bmc,
        })
    }

    fn port(&mut self, port: Option<(i64, FieldPath)>, default: u16) -> u16 {
        match port {
            None => default,
            Some((p, path)) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => {
                    self.error(path, format!("{p} is not a TCP port (1 to 65535)"));
                    default
                }
            },
        }
    }

    fn disk(&mut self, d: &RawDiskSelector, p: &FieldPath) -> Option<DiskSelector> {
        let size = match &d.size {
            Some(s) => match s.parse::<SizeRange>() {
                Ok(r) => Some(r),
                Err(e) => {
                    self.error(p.key("size"), e);
                    return None;
                }
            },
            None => None,
        };
        let sel = DiskSelector {
            path: d.path.clone(),
            serial: d.serial.clone(),
            wwid: d.wwid.clone(),
            model: d.model.clone(),
            size,
        };
        if sel.is_empty() {
            self.error(
                p.clone(),
                "empty disk selector: give at least one of path, serial, wwid, model, size",
            );
            return None;
        }
        if let Some(path) = &sel.path
            && !path.starts_with("/dev/")
        {
            self.error(p.key("path"), format!("`{path}` is not a device path under /dev/"));
        }
        Some(sel)
    }

    fn data_disk(&mut self, d: &RawDiskSelector, i: usize, p: &FieldPath) -> Option<DataDisk> {
        let selector = self.disk(d, p)?;
        let name = d.name.clone().unwrap_or_else(|| format!("data{i}"));
        // UserVolumeConfig names: 1 to 34 letters, digits and hyphens (v1.13 config schema).
        if name.is_empty() || name.len() > 34 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            self.error(
                p.key("name"),
                format!("`{name}` is not a volume name: 1 to 34 letters, digits and `-`"),
            );
        }
        let filesystem = d.filesystem.clone().unwrap_or_else(|| "xfs".into());
        if !["xfs", "ext4"].contains(&filesystem.as_str()) {
            self.error(
                p.key("filesystem"),
                format!("`{filesystem}`: Talos formats user volumes as xfs or ext4"),
            );
        }
        let ceph = d.ceph.unwrap_or(false);
        if ceph && d.filesystem.is_some() {
            self.error(p.key("filesystem"), "a disk left raw for Ceph gets no filesystem");
        }
        Some(DataDisk {
            selector,
            name,
            filesystem,
            ceph,
        })
    }

    fn labels(
        &mut self,
        rn: &RawNode,
        np: &FieldPath,
        defaults: &[(&RawNodeDefaults, FieldPath); 2],
    ) -> BTreeMap<String, String> {
        // Labels merge: file defaults, then cluster defaults, then the node's own.
        let mut out = BTreeMap::new();
        let layers = [
            (defaults[1].0.labels.as_ref(), defaults[1].1.key("labels")),
            (defaults[0].0.labels.as_ref(), defaults[0].1.key("labels")),
            (rn.labels.as_ref(), np.key("labels")),
        ];
        for (labels, p) in layers {
            for (k, v) in labels.into_iter().flatten() {
                if let Err(e) = check_label_key(k) {
                    self.error_at_key(p.key(k), format!("label key `{k}`: {e}"));
                } else if !is_label_value(v) {
                    self.error(p.key(k), format!("label value `{v}`: {LABEL_VALUE}"));
                } else {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    fn taint(&mut self, t: &str, p: &FieldPath) -> Option<Taint> {
        let bad = |m: &str| format!("taint `{t}`: {m} (expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute)");
        let Some((kv, effect)) = t.rsplit_once(':') else {
            self.error(p.clone(), bad("no effect"));
            return None;
        };
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            self.error(p.clone(), bad(&format!("unknown effect `{effect}`")));
            return None;
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv, None),
        };
        if check_label_key(key).is_err() || value.is_some_and(|v| !is_label_value(v)) {
            self.error(p.clone(), bad("bad key or value"));
            return None;
        }
        Some(Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
        })
    }

    fn ssh(
        &mut self,
        rn: &RawNode,
        np: &FieldPath,
        defaults: &[(&RawNodeDefaults, FieldPath); 2],
    ) -> Option<SshAccess> {
        let layers: Vec<(&RawSsh, FieldPath)> = [(rn.ssh.as_ref(), np.key("ssh"))]
            .into_iter()
            .chain(defaults.iter().map(|(d, p)| (d.ssh.as_ref(), p.key("ssh"))))
            .filter_map(|(s, p)| s.map(|s| (s, p)))
            .collect();
        if layers.is_empty() {
            return None;
        }
        macro_rules! field {
            ($f:ident) => {
                layers
                    .iter()
                    .find_map(|(s, p)| s.$f.as_ref().map(|v| (v, p.key(stringify!($f)))))
            };
        }
        let user = field!(user).map_or_else(|| "root".to_owned(), |(u, _)| u.clone());
        let port = self.port(field!(port).map(|(p, path)| (*p, path)), 22);
        let passphrase = field!(passphrase).and_then(|(s, p)| self.secret(&Some(s.clone()), p));
        let sudo_password = field!(sudo_password).and_then(|(s, p)| self.secret(&Some(s.clone()), p));
        let bastion = field!(bastion).and_then(|(b, p)| match b.parse::<JumpHost>() {
            Ok(j) => Some(j),
            Err(e) => {
                self.error(p, format!("bastion {e}: expected [user@]host[:port]"));
                None
            }
        });
        let host_key = field!(host_key).and_then(|(h, p)| {
            if h.starts_with("SHA256:") && h.len() > 7 {
                Some(h.clone())
            } else {
                self.error(p, format!("`{h}` is not a host key fingerprint (SHA256:...)"));
                None
            }
        });
        let sudo = field!(sudo).map_or(user != "root", |(s, _)| *s);
        Some(SshAccess {
            port,
            key: field!(key).map(|(k, _)| self.path(k)),
            passphrase,
            bastion,
            host_key,
            sudo,
            sudo_password,
            user,
        })
    }

    fn bmc(
        &mut self,
        rn: &RawNode,
        np: &FieldPath,
        defaults: &[(&RawNodeDefaults, FieldPath); 2],
        served_iso: Option<&str>,
    ) -> Option<Bmc> {
        let layers: Vec<(&RawBmc, FieldPath)> = [(rn.bmc.as_ref(), np.key("bmc"))]
            .into_iter()
            .chain(defaults.iter().map(|(d, p)| (d.bmc.as_ref(), p.key("bmc"))))
            .filter_map(|(s, p)| s.map(|s| (s, p)))
            .collect();
        if layers.is_empty() {
            return None;
        }
        macro_rules! field {
            ($f:ident) => {
                layers
                    .iter()
                    .find_map(|(s, p)| s.$f.as_ref().map(|v| (v, p.key(stringify!($f)))))
            };
        }
        let own = np.key("bmc");
        let url = match field!(url) {
            Some((u, p)) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() < 10 {
                    self.error(p, format!("`{u}` is not a Redfish URL (https://host[:port])"));
                }
                Some(u.trim_end_matches('/').to_owned())
            }
            None => {
                self.error(own.clone(), "missing `url` (the BMC's Redfish base URL)");
                None
            }
        };
        let user = field!(user).map(|(u, _)| u.clone());
        if user.is_none() {
            self.error(own.clone(), "missing `user` for the BMC");
        }
        let password = match field!(password) {
            Some((s, p)) => self.secret(&Some(s.clone()), p),
            None => {
                self.error(
                    own.clone(),
                    "missing `password` (a secret reference such as env:BMC_PASSWORD)",
                );
                None
            }
        };
        let fingerprint = field!(fingerprint).and_then(|(f, p)| {
            let hexpart: String = f.trim_start_matches("sha256:").chars().filter(|c| *c != ':').collect();
            if hexpart.len() == 64 && hexpart.chars().all(|c| c.is_ascii_hexdigit()) {
                Some(hexpart.to_ascii_lowercase())
            } else {
                self.error(
                    p,
                    "a certificate fingerprint is a SHA-256 in hex (64 digits, colons allowed)",
                );
                None
            }
        });
        let boot = field!(boot).map_or(BootMethod::Pxe, |(b, _)| *b);
        let image_url = field!(image_url).map(|(u, _)| u.clone()).or_else(|| {
            served_iso
                .filter(|_| boot == BootMethod::VirtualMedia)
                .map(str::to_owned)
        });
        if boot == BootMethod::VirtualMedia && image_url.is_none() {
            self.error(
                own.clone(),
                "boot = \"virtual-media\" needs `image_url`, or an ISO `bootstrap serve` offers (iso_sha256 in [cluster.provision])",
            );
        }
        Some(Bmc {
            url: url?,
            user: user?,
            password: password?,
            system_id: field!(system_id).map(|(s, _)| s.clone()),
            verify_tls: field!(verify_tls).is_none_or(|(v, _)| *v),
            ca: field!(ca).map(|(c, _)| self.path(c)),
            fingerprint,
            boot,
            image_url,
            uuid: field!(uuid).map(|(s, _)| s.clone()),
            serial: field!(serial).map(|(s, _)| s.clone()),
        })
    }

    /// Rules across clusters: clusters on one node network must keep their
    /// pod, service and load-balancer ranges apart.
    fn cross_cluster(&mut self, raw: &[RawCluster], clusters: &[Option<Cluster>]) {
        let nets: Vec<Option<(String, &Network)>> = clusters
            .iter()
            .map(|c| c.as_ref().map(|c| (c.name.clone(), &c.network)))
            .collect();
        for i in 0..nets.len() {
            for j in i + 1..nets.len() {
                let (Some((na, a)), Some((_, b))) = (&nets[i], &nets[j]) else {
                    continue;
                };
                if !nets_overlap(&a.node_cidr, &b.node_cidr) {
                    continue;
                }
                let bp = FieldPath::root()
                    .key("cluster")
                    .elem(j, Some(&raw[j].name))
                    .key("network");
                let ranges = |n: &Network| [("pod_cidr", n.pod_cidr), ("service_cidr", n.service_cidr)];
                for (fb, rb) in ranges(b) {
                    for (fa, ra) in ranges(a) {
                        if nets_overlap(&ra, &rb) {
                            self.error(
                                bp.key(fb),
                                format!(
                                    "{fb} {rb} overlaps {fa} {ra} of cluster `{na}`, which shares the node network {}",
                                    a.node_cidr
                                ),
                            );
                        }
                    }
                }
                if let (Some(pa), Some(pb)) = (a.lb_pool, b.lb_pool)
                    && pa.overlaps(&pb)
                {
                    self.error(
                        bp.key("lb_pool"),
                        format!("load-balancer pool {pb} overlaps pool {pa} of cluster `{na}`"),
                    );
                }
                if let (Some(vip), Some(pool)) = (b.vip, a.lb_pool)
                    && pool.contains(vip)
                {
                    self.error(
                        bp.key("vip"),
                        format!("the VIP {vip} is inside load-balancer pool {pool} of cluster `{na}`"),
                    );
                }
            }
        }
    }
}

/// The network addresses node rules are checked against.
struct NodeAddrs {
    node_cidr: Option<IpNet>,
    gateway: Option<IpAddr>,
    vip: Option<IpAddr>,
    lb_pool: Option<IpRange>,
}

/// Takes a node field from the node, else the cluster defaults, else the file defaults.
fn inherit<'r, T>(
    own: &'r Option<T>,
    np: &FieldPath,
    defaults: &'r [(&'r RawNodeDefaults, FieldPath); 2],
    field: &str,
    get: impl Fn(&'r RawNodeDefaults) -> Option<&'r T>,
) -> Origin<'r, T> {
    if let Some(v) = own {
        return Some((v, np.key(field)));
    }
    defaults.iter().find_map(|(d, p)| get(d).map(|v| (v, p.key(field))))
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

const RFC1123_LABEL: &str =
    "lower-case letters, digits and `-`, at most 63, starting and ending with a letter or digit (RFC 1123)";
const LABEL_VALUE: &str = "at most 63 characters of letters, digits, `-`, `_`, `.`, starting and ending alphanumeric";

/// `8-4-4-4-12` hex digits: an SMBIOS/Redfish system UUID.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An RFC 1123 DNS label: what Kubernetes accepts as a node name component.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name of RFC 1123 labels separated by dots.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_version(s: &str) -> bool {
    let v = s.strip_prefix('v').unwrap_or(s);
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns_name(p)
    {
        return Err(format!("prefix `{p}` is not a DNS subdomain"));
    }
    if !is_label_name(name) {
        return Err(format!("name `{name}`: {LABEL_VALUE}"));
    }
    Ok(())
}

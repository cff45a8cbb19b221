//! DHCPv4 for network boots, encoded with `dhcproto`. Two modes:
//!
//! - **proxyDHCP** (default, PXE spec 2.1 §2.2.3): answers PXE clients of known
//!   MACs with boot information only (no address, `yiaddr` 0) on port 67, and
//!   their ProxyDHCP REQUEST on port 4011; the site's DHCP server leases.
//! - **DHCP** (`serve --dhcp`): a plain server for the inventory's range, that
//!   leases to known MACs only and adds the same boot information for PXE clients.
//!
//! Unknown MACs never get an answer. Deciding ([`Responder::answer`]) is pure;
//! [`run`] only moves datagrams.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use dhcproto::v4::{Architecture, DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::inventory::MacAddr;

/// BIOS iPXE binary (chainloads over PXE's UNDI driver).
pub const BIOS_BINARY: &str = "undionly.kpxe";
/// UEFI x86-64 iPXE binary.
pub const UEFI_BINARY: &str = "ipxe.efi";
/// Lease time handed out in `--dhcp` mode.
const LEASE_SECS: u32 = 3600;

/// A lease pool (`serve --dhcp`).
#[derive(Debug, Clone)]
pub struct LeasePool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

/// What the responder knows.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    /// This host's boot address (server identifier, TFTP server).
    pub server: Ipv4Addr,
    /// `http://address:port`, where iPXE scripts are served.
    pub http_base: String,
    /// Known MACs and their node names.
    pub nodes: HashMap<MacAddr, String>,
    /// `Some` in `--dhcp` mode.
    pub pool: Option<LeasePool>,
}

/// Where a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Broadcast DHCP, port 67.
    Dhcp,
    /// PXE boot server / ProxyDHCP, port 4011.
    Pxe,
}

/// The responder's decision about one request.
#[derive(Debug)]
pub enum Answer {
    /// Send this reply; `log` says what it was, for whom.
    Reply { msg: Box<Message>, log: String },
    /// Do not answer, and say so (unknown MAC, unsupported firmware).
    Refuse(String),
    /// Not for us (another client's lease traffic, a non-PXE client in proxy mode).
    Silent,
}

/// The boot file a client is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    /// An iPXE binary over TFTP.
    Tftp(&'static str),
    /// iPXE itself is asking: the node's script over HTTP.
    Script(String),
}

impl BootFile {
    fn name(&self) -> &str {
        match self {
            BootFile::Tftp(n) => n,
            BootFile::Script(u) => u,
        }
    }
}

/// The DHCP decision logic, with the leases it handed out.
#[derive(Debug)]
pub struct Responder {
    cfg: DhcpConfig,
    leases: Mutex<HashMap<MacAddr, Ipv4Addr>>,
}

impl Responder {
    pub fn new(cfg: DhcpConfig) -> Self {
        Self {
            cfg,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Decides the answer to `req`, which arrived on `port`.
    pub fn answer(&self, req: &Message, port: Port) -> Answer {
        if req.opcode() != Opcode::BootRequest || req.htype() != HType::Eth || req.hlen() != 6 {
            return Answer::Silent;
        }
        let mac = MacAddr(req.chaddr()[..6].try_into().expect("hlen is 6"));
        let Some(kind) = req.opts().msg_type() else {
            return Answer::Silent;
        };
        if !matches!(kind, MessageType::Discover | MessageType::Request) {
            return Answer::Silent;
        }
        let pxe = is_pxe_client(req);
        if self.cfg.pool.is_none() && !pxe {
            // Proxy mode: ordinary DHCP traffic is the site server's business.
            return Answer::Silent;
        }
        let Some(node) = self.cfg.nodes.get(&mac) else {
            return Answer::Refuse(format!(
                "dhcp: no answer to {kind:?} from unknown MAC {mac}: not in the inventory"
            ));
        };
        let boot = if pxe {
            match self.boot_file(req, mac) {
                Ok(b) => Some(b),
                Err(why) => return Answer::Refuse(format!("dhcp: no answer to node {node} ({mac}): {why}")),
            }
        } else {
            None
        };
        match (&self.cfg.pool, port) {
            (None, Port::Dhcp) if kind == MessageType::Discover => {
                self.reply(req, MessageType::Offer, None, boot, node, mac)
            }
            (None, Port::Pxe) if kind == MessageType::Request => {
                self.reply(req, MessageType::Ack, None, boot, node, mac)
            }
            (None, _) => Answer::Silent,
            (Some(pool), _) => self.lease(req, kind, pool, boot, node, mac),
        }
    }

    fn lease(
        &self,
        req: &Message,
        kind: MessageType,
        pool: &LeasePool,
        boot: Option<BootFile>,
        node: &str,
        mac: MacAddr,
    ) -> Answer {
        let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        if server_id.is_some_and(|s| s != self.cfg.server) {
            return Answer::Silent; // the client took another server's offer
        }
        let Some(addr) = self.address_for(mac, pool) else {
            return Answer::Refuse(format!(
                "dhcp: no answer to node {node} ({mac}): the range {}-{} is exhausted",
                pool.first, pool.last
            ));
        };
        match kind {
            MessageType::Discover => self.reply(req, MessageType::Offer, Some((addr, pool)), boot, node, mac),
            _ => {
                let wanted = match req.opts().get(OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                    _ => req.ciaddr(),
                };
                if wanted == addr {
                    self.reply(req, MessageType::Ack, Some((addr, pool)), boot, node, mac)
                } else {
                    let mut nak = base_reply(req, self.cfg.server, MessageType::Nak);
                    nak.set_yiaddr(Ipv4Addr::UNSPECIFIED);
                    Answer::Reply {
                        msg: Box::new(nak),
                        log: format!("dhcp: NAK to node {node} ({mac}): asked for {wanted}, its lease is {addr}"),
                    }
                }
            }
        }
    }

    /// The address leased to `mac`: the one it had, else the first free one.
    fn address_for(&self, mac: MacAddr, pool: &LeasePool) -> Option<Ipv4Addr> {
        let mut leases = self.leases.lock().expect("lease table");
        if let Some(a) = leases.get(&mac) {
            return Some(*a);
        }
        let taken: std::collections::HashSet<Ipv4Addr> = leases.values().copied().collect();
        let free = (u32::from(pool.first)..=u32::from(pool.last))
            .map(Ipv4Addr::from)
            .find(|a| !taken.contains(a))?;
        leases.insert(mac, free);
        Some(free)
    }

    fn boot_file(&self, req: &Message, mac: MacAddr) -> Result<BootFile, String> {
        if is_ipxe(req) {
            return Ok(BootFile::Script(format!(
                "{}/ipxe/{}",
                self.cfg.http_base,
                mac_path(mac)
            )));
        }
        let arch = match req.opts().get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => *a,
            _ => Architecture::X86_Bios,
        };
        match arch {
            Architecture::X86_Bios => Ok(BootFile::Tftp(BIOS_BINARY)),
            Architecture::X64 | Architecture::BC => Ok(BootFile::Tftp(UEFI_BINARY)),
            other => Err(format!(
                "client architecture {} (DHCP option 93) has no iPXE binary here (BIOS and x86-64 UEFI only)",
                u16::from(other)
            )),
        }
    }

    fn reply(
        &self,
        req: &Message,
        kind: MessageType,
        lease: Option<(Ipv4Addr, &LeasePool)>,
        boot: Option<BootFile>,
        node: &str,
        mac: MacAddr,
    ) -> Answer {
        let mut msg = base_reply(req, self.cfg.server, kind);
        let mut what = Vec::new();
        if let Some((addr, pool)) = lease {
            msg.set_yiaddr(addr);
            let o = msg.opts_mut();
            o.insert(DhcpOption::SubnetMask(pool.netmask));
            o.insert(DhcpOption::Router(vec![pool.router]));
            if !pool.dns.is_empty() {
                o.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
            }
            o.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
            what.push(format!("address {addr}"));
        }
        if let Some(boot) = &boot {
            msg.set_siaddr(self.cfg.server);
            msg.set_fname_str(boot.name());
            let o = msg.opts_mut();
            o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            // PXE vendor options: discovery control 8 = boot file is in this reply.
            o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
            o.insert(DhcpOption::TFTPServerName(self.cfg.server.to_string().into_bytes()));
            o.insert(DhcpOption::BootfileName(boot.name().as_bytes().to_vec()));
            if let Some(DhcpOption::ClientMachineIdentifier(guid)) = req.opts().get(OptionCode::ClientMachineIdentifier)
            {
                o.insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
            }
            what.push(match boot {
                BootFile::Tftp(f) => format!("iPXE binary {f} over TFTP"),
                BootFile::Script(_) => "its iPXE script over HTTP".to_owned(),
            });
        }
        let mode = if self.cfg.pool.is_some() { "dhcp" } else { "proxydhcp" };
        Answer::Reply {
            msg: Box::new(msg),
            log: format!("{mode}: {kind:?} to node {node} ({mac}): {}", what.join(", ")),
        }
    }
}

fn base_reply(req: &Message, server: Ipv4Addr, kind: MessageType) -> Message {
    let mut msg = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &req.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    msg
}

/// PXE firmware and iPXE send vendor class `PXEClient:Arch:...` (PXE spec 2.1 §2.4).
fn is_pxe_client(req: &Message) -> bool {
    matches!(req.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient"))
}

/// iPXE sends user class `iPXE` (option 77; raw, or RFC 3004 length-prefixed).
fn is_ipxe(req: &Message) -> bool {
    matches!(req.opts().get(OptionCode::UserClass),
        Some(DhcpOption::UserClass(c)) if c.windows(4).any(|w| w == b"iPXE"))
}

/// A MAC as it appears in URLs: `52-54-00-12-34-56`.
pub fn mac_path(mac: MacAddr) -> String {
    mac.0.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join("-")
}

/// Decodes a datagram; `None` when it is not DHCP.
pub fn decode(buf: &[u8]) -> Option<Message> {
    Message::decode(&mut Decoder::new(buf)).ok()
}

/// Encodes a reply.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("a reply we built encodes");
    buf
}

/// A UDP socket on `0.0.0.0:67` bound to `iface` (broadcasts from clients
/// without an address reach no unicast-bound socket), allowed to broadcast.
pub fn bind_dhcp(iface: &str) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// Serves one socket until the task is dropped. Port 67 replies are broadcast
/// (the client has no address yet); port 4011 replies go back to the sender.
pub async fn run(
    sock: tokio::net::UdpSocket,
    port: Port,
    responder: Arc<Responder>,
    log: super::Log,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        let Some(req) = decode(&buf[..n]) else { continue };
        match responder.answer(&req, port) {
            Answer::Reply { msg, log: line } => {
                let to = match port {
                    Port::Dhcp if !msg.giaddr().is_unspecified() => SocketAddr::from((msg.giaddr(), 67)),
                    Port::Dhcp => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)),
                    Port::Pxe => from,
                };
                if let Err(e) = sock.send_to(&encode(&msg), to).await {
                    log(&format!("{line}: sending to {to} failed: {e}"));
                } else {
                    log(&line);
                }
            }
            Answer::Refuse(line) => log(&line),
            Answer::Silent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Flags;

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const KNOWN: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x11];
    const UNKNOWN: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];

    fn config(pool: bool) -> DhcpConfig {
        DhcpConfig {
            server: SERVER,
            http_base: "http://198.18.0.1:8080".into(),
            nodes: HashMap::from([(MacAddr(KNOWN), "cp-1".to_owned())]),
            pool: pool.then(|| LeasePool {
                first: Ipv4Addr::new(198, 18, 0, 100),
                last: Ipv4Addr::new(198, 18, 0, 101),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: SERVER,
                dns: vec![],
            }),
        }
    }

    /// A request as firmware sends it, round-tripped through the wire format.
    fn request(mac: [u8; 6], kind: MessageType, arch: Option<u16>, ipxe: bool) -> Message {
        let mut m = Message::new_with_id(
            0x1234,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.set_flags(Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        if let Some(a) = arch {
            m.opts_mut().insert(DhcpOption::ClassIdentifier(
                format!("PXEClient:Arch:{a:05}:UNDI:002001").into_bytes(),
            ));
            m.opts_mut()
                .insert(DhcpOption::ClientSystemArchitecture(Architecture::from(a)));
        }
        if ipxe {
            m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
        decode(&encode(&m)).unwrap()
    }

    fn reply(a: Answer) -> Message {
        match a {
            Answer::Reply { msg, .. } => decode(&encode(&msg)).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn bootfile(m: &Message) -> String {
        match m.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(b)) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("no boot file: {other:?}"),
        }
    }

    #[test]
    fn proxy_offers_boot_info_without_an_address_to_known_macs_only() {
        let r = Responder::new(config(false));
        let offer = reply(r.answer(&request(KNOWN, MessageType::Discover, Some(0), false), Port::Dhcp));
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxyDHCP never leases");
        assert_eq!(offer.siaddr(), SERVER);
        assert_eq!(offer.xid(), 0x1234);
        assert_eq!(&offer.chaddr()[..6], &KNOWN);
        assert!(offer.opts().get(OptionCode::SubnetMask).is_none());
        assert_eq!(
            offer.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            offer.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(bootfile(&offer), BIOS_BINARY);

        match r.answer(&request(UNKNOWN, MessageType::Discover, Some(0), false), Port::Dhcp) {
            Answer::Refuse(line) => assert!(
                line.contains("52:54:00:00:00:99") && line.contains("unknown MAC"),
                "{line}"
            ),
            other => panic!("an unknown MAC got {other:?}"),
        }
    }

    #[test]
    fn proxy_ignores_plain_dhcp_and_acks_on_the_pxe_port() {
        let r = Responder::new(config(false));
        assert!(matches!(
            r.answer(&request(KNOWN, MessageType::Discover, None, false), Port::Dhcp),
            Answer::Silent
        ));
        // The lease REQUEST on port 67 is the site server's; the ProxyDHCP REQUEST comes to 4011.
        assert!(matches!(
            r.answer(&request(KNOWN, MessageType::Request, Some(7), false), Port::Dhcp),
            Answer::Silent
        ));
        let ack = reply(r.answer(&request(KNOWN, MessageType::Request, Some(7), false), Port::Pxe));
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(bootfile(&ack), UEFI_BINARY);
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn firmware_architecture_picks_the_binary_and_ipxe_gets_its_script() {
        let r = Responder::new(config(false));
        let boot = |arch, ipxe| {
            bootfile(&reply(r.answer(
                &request(KNOWN, MessageType::Discover, Some(arch), ipxe),
                Port::Dhcp,
            )))
        };
        assert_eq!(boot(0, false), "undionly.kpxe");
        assert_eq!(boot(7, false), "ipxe.efi");
        assert_eq!(boot(9, false), "ipxe.efi");
        assert_eq!(boot(0, true), "http://198.18.0.1:8080/ipxe/52-54-00-00-00-11");
        assert_eq!(boot(7, true), "http://198.18.0.1:8080/ipxe/52-54-00-00-00-11");
        match r.answer(&request(KNOWN, MessageType::Discover, Some(0x0b), false), Port::Dhcp) {
            Answer::Refuse(line) => assert!(line.contains("architecture 11"), "{line}"),
            other => panic!("arm64 firmware got {other:?}"),
        }
    }

    #[test]
    fn dhcp_mode_leases_the_range_to_known_macs_only() {
        let r = Responder::new(config(true));
        let offer = reply(r.answer(&request(KNOWN, MessageType::Discover, Some(0), true), Port::Dhcp));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(
            offer.opts().get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert!(bootfile(&offer).ends_with("/ipxe/52-54-00-00-00-11"));
        // A non-PXE client of a known MAC (the booted kernel's own DHCP) gets a lease, no boot file.
        let plain = reply(r.answer(&request(KNOWN, MessageType::Discover, None, false), Port::Dhcp));
        assert_eq!(
            plain.yiaddr(),
            Ipv4Addr::new(198, 18, 0, 100),
            "same lease for the same MAC"
        );
        assert!(plain.opts().get(OptionCode::BootfileName).is_none());

        let mut req = request(KNOWN, MessageType::Request, None, false);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(198, 18, 0, 100)));
        req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        assert_eq!(
            reply(r.answer(&req, Port::Dhcp)).opts().msg_type(),
            Some(MessageType::Ack)
        );
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(198, 18, 0, 101)));
        assert_eq!(
            reply(r.answer(&req, Port::Dhcp)).opts().msg_type(),
            Some(MessageType::Nak)
        );
        req.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 2)));
        assert!(
            matches!(r.answer(&req, Port::Dhcp), Answer::Silent),
            "another server's offer was taken"
        );

        assert!(matches!(
            r.answer(&request(UNKNOWN, MessageType::Discover, None, false), Port::Dhcp),
            Answer::Refuse(_)
        ));
    }
}

//! Read-only TFTP for the two iPXE binaries: RFC 1350 with option negotiation
//! (RFC 2347) for `blksize` (RFC 2348) and `tsize` (RFC 2349), which iPXE and
//! PXE ROMs ask for. Written here because the Rust TFTP servers (async-tftp)
//! run on the async-std/smol executors, not tokio, and have had no release in
//! years; what a PXE boot needs is a read request, OACK and lock-step DATA/ACK.
//!
//! Only the files loaded at start are served, by their bare names; nothing on
//! disk is looked up per request, so no path can leave the directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;
/// RFC 1350 default block size.
const DEFAULT_BLKSIZE: usize = 512;
/// Largest block that fits an Ethernet frame (1500 - IP 20 - UDP 8 - TFTP 4).
const MAX_BLKSIZE: usize = 1468;
const RETRIES: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(1);

/// The files served, by name.
pub type Files = Arc<HashMap<String, Arc<Vec<u8>>>>;

/// A parsed read request.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub file: String,
    pub blksize: Option<usize>,
    pub tsize: bool,
}

/// Why a request is refused: TFTP error code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

/// Parses a request packet (RRQ only; WRQ and the rest are refused).
pub fn parse_request(pkt: &[u8]) -> Result<ReadRequest, Refusal> {
    let op = pkt.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match op {
        Some(RRQ) => {}
        Some(WRQ) => return Err(Refusal(2, "read-only server".into())),
        _ => return Err(Refusal(4, "expected a read request".into())),
    }
    let fields: Vec<&[u8]> = pkt[2..].split(|b| *b == 0).collect();
    // Fields end with a NUL, so the last split piece is empty.
    if fields.len() < 3 || !fields.last().is_some_and(|f| f.is_empty()) {
        return Err(Refusal(4, "malformed read request".into()));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let file = text(fields[0]);
    let mode = text(fields[1]).to_ascii_lowercase();
    if mode != "octet" {
        return Err(Refusal(0, format!("mode {mode} not supported (octet only)")));
    }
    let mut req = ReadRequest {
        file,
        blksize: None,
        tsize: false,
    };
    let opts = &fields[2..fields.len() - 1];
    for pair in opts.chunks(2) {
        let [name, value] = pair else { break };
        match text(name).to_ascii_lowercase().as_str() {
            "blksize" => {
                if let Ok(n) = text(value).parse::<usize>()
                    && n >= 8
                {
                    req.blksize = Some(n.min(MAX_BLKSIZE));
                }
            }
            "tsize" => req.tsize = true,
            _ => {} // RFC 2347: unknown options are left out of the OACK
        }
    }
    Ok(req)
}

/// The served file a requested name refers to: a bare name of a loaded file,
/// optionally with one leading `/`. Anything with a separator or `..` is refused.
pub fn resolve<'a>(files: &'a HashMap<String, Arc<Vec<u8>>>, name: &str) -> Result<&'a Arc<Vec<u8>>, Refusal> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.contains(['/', '\\', '\0']) || bare == "." || bare == ".." {
        return Err(Refusal(
            2,
            format!("{name}: only the iPXE binaries are served, by name"),
        ));
    }
    files
        .get(bare)
        .ok_or_else(|| Refusal(1, format!("{name}: not served (only {})", names(files))))
}

fn names(files: &HashMap<String, Arc<Vec<u8>>>) -> String {
    let mut n: Vec<&str> = files.keys().map(String::as_str).collect();
    n.sort();
    n.join(", ")
}

fn error_packet(Refusal(code, msg): &Refusal) -> Vec<u8> {
    let mut p = Vec::with_capacity(msg.len() + 5);
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// Serves read requests on `sock` (the boot address, port 69) until dropped;
/// each transfer runs on its own socket, as RFC 1350 asks.
pub async fn run(sock: UdpSocket, files: Files, log: super::Log) -> std::io::Result<()> {
    let local = sock.local_addr()?;
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).await?;
        let parsed = parse_request(&buf[..n]).and_then(|r| resolve(&files, &r.file).map(|d| (r, d.clone())));
        match parsed {
            Err(refusal) => {
                log(&format!("tftp: refused {peer}: {}", refusal.1));
                let _ = sock.send_to(&error_packet(&refusal), peer).await;
            }
            Ok((req, data)) => {
                let log = log.clone();
                tokio::spawn(async move {
                    match transfer(local, peer, &req, &data).await {
                        Ok(()) => log(&format!("tftp: sent {} ({} bytes) to {peer}", req.file, data.len())),
                        Err(e) => log(&format!("tftp: sending {} to {peer} failed: {e}", req.file)),
                    }
                });
            }
        }
    }
}

async fn transfer(local: SocketAddr, peer: SocketAddr, req: &ReadRequest, data: &[u8]) -> std::io::Result<()> {
    let sock = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    sock.connect(peer).await?;
    let blksize = req.blksize.unwrap_or(DEFAULT_BLKSIZE);
    if req.blksize.is_some() || req.tsize {
        let mut oack = OACK.to_be_bytes().to_vec();
        if let Some(b) = req.blksize {
            oack.extend_from_slice(format!("blksize\0{b}\0").as_bytes());
        }
        if req.tsize {
            oack.extend_from_slice(format!("tsize\0{}\0", data.len()).as_bytes());
        }
        exchange(&sock, &oack, 0).await?;
    }
    let mut block: u16 = 1;
    let mut offset = 0;
    loop {
        let end = (offset + blksize).min(data.len());
        let mut pkt = Vec::with_capacity(4 + end - offset);
        pkt.extend_from_slice(&DATA.to_be_bytes());
        pkt.extend_from_slice(&block.to_be_bytes());
        pkt.extend_from_slice(&data[offset..end]);
        exchange(&sock, &pkt, block).await?;
        // A block shorter than blksize (possibly empty) ends the transfer.
        if end - offset < blksize {
            return Ok(());
        }
        offset = end;
        block = block.wrapping_add(1);
    }
}

/// Sends `pkt` until the peer acknowledges `block` (retransmitting on timeout).
async fn exchange(sock: &UdpSocket, pkt: &[u8], block: u16) -> std::io::Result<()> {
    let mut buf = [0u8; 516];
    for _ in 0..RETRIES {
        sock.send(pkt).await?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let Ok(got) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await else {
                break; // retransmit
            };
            let n = got?;
            if n < 4 {
                continue;
            }
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            let num = u16::from_be_bytes([buf[2], buf[3]]);
            match op {
                ACK if num == block => return Ok(()),
                ACK => continue, // a duplicate ACK of an earlier block
                ERROR => {
                    let msg = String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0').to_owned();
                    return Err(std::io::Error::other(format!("client sent error {num}: {msg}")));
                }
                _ => continue,
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no ACK for block {block} after {RETRIES} tries"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> HashMap<String, Arc<Vec<u8>>> {
        HashMap::from([
            ("undionly.kpxe".to_owned(), Arc::new(vec![1; 10])),
            ("ipxe.efi".to_owned(), Arc::new(vec![2; 10])),
        ])
    }

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn only_loaded_files_by_bare_name() {
        let f = files();
        assert!(resolve(&f, "undionly.kpxe").is_ok());
        assert!(resolve(&f, "/ipxe.efi").is_ok());
        for bad in [
            "../undionly.kpxe",
            "/../../etc/passwd",
            "..",
            "sub/ipxe.efi",
            "//ipxe.efi",
            "..\\ipxe.efi",
            "",
            "/",
        ] {
            assert_eq!(
                resolve(&f, bad).unwrap_err().0,
                2,
                "{bad:?} must be an access violation"
            );
        }
        assert_eq!(resolve(&f, "passwd").unwrap_err().0, 1);
    }

    #[test]
    fn requests_with_options_and_refusals() {
        let r = parse_request(&rrq(&["undionly.kpxe", "octet", "blksize", "1432", "tsize", "0"])).unwrap();
        assert_eq!(
            r,
            ReadRequest {
                file: "undionly.kpxe".into(),
                blksize: Some(1432),
                tsize: true
            }
        );
        let big = parse_request(&rrq(&["ipxe.efi", "OCTET", "blksize", "65464"])).unwrap();
        assert_eq!(big.blksize, Some(MAX_BLKSIZE), "capped to one Ethernet frame");
        let plain = parse_request(&rrq(&["ipxe.efi", "octet"])).unwrap();
        assert_eq!((plain.blksize, plain.tsize), (None, false));
        assert_eq!(parse_request(&rrq(&["ipxe.efi", "netascii"])).unwrap_err().0, 0);
        let mut wrq = rrq(&["x", "octet"]);
        wrq[1] = WRQ as u8;
        assert_eq!(parse_request(&wrq).unwrap_err().0, 2, "read-only");
        assert_eq!(parse_request(&[0, 1, b'x']).unwrap_err().0, 4);
    }

    #[tokio::test]
    async fn transfers_in_blocks_with_oack() {
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let files: Files = Arc::new(HashMap::from([("ipxe.efi".to_owned(), Arc::new(data.clone()))]));
        let task = tokio::spawn(run(server, files, Arc::new(|_: &str| {})));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&rrq(&["/ipxe.efi", "octet", "blksize", "1024", "tsize", "0"]), addr)
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_ne!(from, addr, "transfers use their own port");
        assert_eq!(&buf[..n], b"\0\x06blksize\x001024\0tsize\x003000\0");
        client.send_to(&[0, 4, 0, 0], from).await.unwrap();
        let mut got = Vec::new();
        for block in 1u16.. {
            let (n, _) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..4], &[0, 3, 0, block as u8]);
            got.extend_from_slice(&buf[4..n]);
            client.send_to(&[0, 4, 0, block as u8], from).await.unwrap();
            if n - 4 < 1024 {
                break;
            }
        }
        assert_eq!(got, data);
        task.abort();
    }
}

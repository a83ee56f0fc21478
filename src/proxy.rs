//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, v1 and v2) on stream servers: a load
//! balancer in front of the server tells it who the real client is.
//!
//! The header is read on the worker, never on the accept loop, within a deadline, and
//! exactly: the bytes after the header are left in the socket for TLS or the handler. Bytes
//! are framed here (peek, then read exactly what belongs to the header); the header itself
//! is parsed by the `proxy-header` crate (sans-IO, no dependencies of its own, v1 and v2,
//! typed TLVs, "too short" told apart from "invalid"); the CRC32C TLV, which no crate
//! checks, is verified here.

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use proxy_header::{ParseConfig, ProxyHeader as Parsed};

use crate::addr::Addr;
use crate::net::stream::Stream;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::sys::{self, Interest};

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header: 16 fixed bytes, then as many as bytes 15-16 declare.
const V2_FIXED: usize = 16;
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// A v1 header starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// How many bytes one peek looks at, at most.
const PEEK: usize = 512;

/// The PROXY protocol settings of a stream server: off until given a trusted list.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConfig {
    pub(crate) trusted: Option<Vec<IpNet>>,
    pub(crate) timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            trusted: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ProxyConfig {
    /// Whether connections must start with a header.
    pub(crate) fn enabled(&self) -> bool {
        self.trusted.is_some()
    }

    /// A zero header deadline would close every connection at once.
    pub(crate) fn validate(&self) -> io::Result<()> {
        if self.timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "proxy_header_timeout of zero would close every connection at once",
            ));
        }
        Ok(())
    }

    /// Whether a connection from `peer` may (and must) start with a header. Unix-domain
    /// peers are local processes allowed by the socket file's permissions: trusted.
    fn trusts(&self, peer: &Addr) -> bool {
        match peer {
            Addr::Inet(a) => {
                let ip = a.ip().to_canonical();
                self.trusted.iter().flatten().any(|net| net.contains(&ip))
            }
            Addr::Unix(_) => true,
        }
    }
}

/// The default header deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A PROXY protocol header received on a connection: who the client is, who the balancer
/// is, and the header's TLVs. From
/// [`StreamRequest::proxy_header`](crate::StreamRequest::proxy_header).
#[derive(Clone, Debug)]
pub struct ProxyHeader {
    version: u8,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    balancer: Addr,
    raw: Vec<u8>,
    tlv_start: usize,
}

impl ProxyHeader {
    /// The protocol version: 1 (text) or 2 (binary).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The client's address, as the balancer saw it; `None` for a v2 `LOCAL` header (a
    /// health check), a v1 `UNKNOWN` one, or an address family without IP addresses.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// The address the client connected to (the balancer's listening address), when the
    /// header carries one.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.destination
    }

    /// The balancer's address: the peer of the connection this server accepted.
    pub fn balancer_addr(&self) -> &Addr {
        &self.balancer
    }

    /// The TLVs of a v2 header as `(type, value)` pairs, in order (none for v1). Known
    /// types: 0x01 ALPN, 0x02 authority, 0x03 CRC32C, 0x04 no-op, 0x05 unique id, 0x20 SSL,
    /// 0x30 network namespace, 0xE0-0xEF custom.
    pub fn tlvs(&self) -> Tlvs<'_> {
        Tlvs {
            rest: &self.raw[self.tlv_start..],
            start: self.tlv_start,
        }
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs().find(|&(k, _)| k == kind).map(|(_, v)| v)
    }

    /// The ALPN protocol the client negotiated with the balancer (TLV 0x01), e.g. `h2`.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(0x01)
    }

    /// The host name the client asked for (TLV 0x02: TLS SNI or the like).
    pub fn authority(&self) -> Option<&str> {
        self.tlv(0x02).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The balancer's unique id of this connection (TLV 0x05, at most 128 bytes).
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(0x05)
    }

    /// The header's bytes as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
}

/// The TLVs of a [`ProxyHeader`], from [`ProxyHeader::tlvs`].
#[derive(Clone, Debug)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
    start: usize,
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (kind, value, used) = split_tlv(self.rest)?;
        self.rest = &self.rest[used..];
        self.start += used;
        Some((kind, value))
    }
}

/// The first TLV of `buf`: type, value and bytes used; `None` when empty or truncated
/// (headers are validated before a `ProxyHeader` exists, so only empty happens there).
fn split_tlv(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let kind = *buf.first()?;
    let len = u16::from_be_bytes([*buf.get(1)?, *buf.get(2)?]) as usize;
    let value = buf.get(3..3 + len)?;
    Some((kind, value, 3 + len))
}

/// Why a connection's header was refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Closed before sending a byte: a TCP health check, or a client giving up.
    Empty,
    /// From a source not in the trusted list.
    Untrusted,
    /// Closed in the middle of the header.
    Truncated(usize),
    /// No complete header before the deadline.
    Timeout(Duration),
    /// Shutdown began while the header was not arriving (after this many bytes).
    Shutdown(usize),
    /// Not a valid header.
    Malformed(String),
    /// A socket error.
    Io(io::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Empty => f.write_str("closed before sending a PROXY protocol header"),
            Refused::Untrusted => f.write_str("not a trusted PROXY protocol source"),
            Refused::Truncated(n) => write!(f, "closed after {n} bytes of a PROXY protocol header"),
            Refused::Timeout(t) => write!(f, "no complete PROXY protocol header within {t:?}"),
            Refused::Shutdown(n) => write!(
                f,
                "shutting down with {n} bytes of a PROXY protocol header received"
            ),
            Refused::Malformed(why) => write!(f, "invalid PROXY protocol header: {why}"),
            Refused::Io(e) => write!(f, "reading the PROXY protocol header: {e}"),
        }
    }
}

/// Reads and checks the header of a new connection from `peer`. On refusal, logs it (a
/// connection closed before sending anything, or still silent when shutdown begins, at
/// debug level), counts it, and returns `None`: the caller closes the connection.
pub(crate) fn accept(
    stream: &Stream,
    peer: &Addr,
    cfg: &ProxyConfig,
    shared: &Shared,
) -> Option<ProxyHeader> {
    let result = if cfg.trusts(peer) {
        receive(stream, peer, cfg.timeout, shared.wake_fd())
    } else {
        Err(Refused::Untrusted)
    };
    match result {
        Ok(header) => Some(header),
        Err(why @ (Refused::Empty | Refused::Shutdown(_))) => {
            log::debug!("{peer}: {why}");
            None
        }
        Err(why) => {
            log::warn!("{peer}: connection closed: {why}");
            Counters::bump(&shared.counters.proxy_rejected);
            None
        }
    }
}

/// Reads the header (exactly its bytes) and parses it.
fn receive(
    stream: &Stream,
    peer: &Addr,
    timeout: Duration,
    wake: RawFd,
) -> Result<ProxyHeader, Refused> {
    let raw = read_exact_header(stream, Instant::now() + timeout, timeout, wake)?;
    parse(raw, peer.clone()).map_err(Refused::Malformed)
}

/// Peeks at what has arrived and reads exactly the bytes that belong to the header, until
/// the header is complete, the deadline passes, shutdown begins while nothing is arriving
/// (`wake` turns readable), or the bytes cannot be a header.
///
/// Peeks never block: when nothing is there, it waits in `poll` on the connection and
/// `wake` up to the deadline. The bytes it then reads were just peeked, so the read returns
/// them at once: no socket timeout is set or changed.
fn read_exact_header(
    stream: &Stream,
    deadline: Instant,
    timeout: Duration,
    wake: RawFd,
) -> Result<Vec<u8>, Refused> {
    let fd = stream.as_raw_fd();
    let mut have = Vec::with_capacity(64);
    let mut buf = [0u8; PEEK];
    loop {
        // Checked every round: a header trickling in a byte at a time ends at the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refused::Timeout(timeout));
        }
        let cap = peek_len(&have);
        let n = match sys::peek_now(fd, &mut buf[..cap]) {
            Ok(0) if have.is_empty() => return Err(Refused::Empty),
            Ok(0) => return Err(Refused::Truncated(have.len())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let fds = [(fd, Interest::Read), (wake, Interest::Read)];
                let ready = sys::poll(&fds, Some(left)).map_err(Refused::Io)?;
                if ready.is(1) && !ready.is(0) {
                    return Err(Refused::Shutdown(have.len()));
                }
                continue;
            }
            // A balancer's health check may end with a reset rather than a FIN.
            Err(e) if is_disconnect(&e) && have.is_empty() => return Err(Refused::Empty),
            Err(e) if is_disconnect(&e) => return Err(Refused::Truncated(have.len())),
            Err(e) => return Err(Refused::Io(e)),
        };
        let take = take(&have, &buf[..n]).map_err(Refused::Malformed)?;
        let start = have.len();
        have.resize(start + take.consume, 0);
        (&*stream)
            .read_exact(&mut have[start..])
            .map_err(Refused::Io)?;
        if take.done {
            return Ok(have);
        }
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// How many bytes the next peek may look at: never more than the header can still need
/// (so that nothing after a v1 header is even looked at beyond 107 bytes).
fn peek_len(have: &[u8]) -> usize {
    match have.first() {
        Some(b'P') => V1_MAX - have.len(),
        Some(_) if have.len() >= V2_FIXED => (V2_FIXED + v2_len(have))
            .saturating_sub(have.len())
            .min(PEEK),
        _ => PEEK,
    }
}

/// The length bytes 15-16 of a v2 header declare.
fn v2_len(h: &[u8]) -> usize {
    u16::from_be_bytes([h[14], h[15]]) as usize
}

/// How many of the peeked bytes belong to the header, and whether that completes it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Take {
    pub(crate) consume: usize,
    pub(crate) done: bool,
}

/// The framing decision, without I/O: given the header bytes consumed so far (`have`) and
/// the bytes now waiting in the socket (`peeked`, not empty), how many to consume. Never
/// more than the header spans; an error as soon as the bytes cannot start a valid header.
pub(crate) fn take(have: &[u8], peeked: &[u8]) -> Result<Take, String> {
    let at = |i: usize| {
        if i < have.len() {
            have[i]
        } else {
            peeked[i - have.len()]
        }
    };
    let total = have.len() + peeked.len();
    match at(0) {
        b'\r' => take_v2(have.len(), total, at),
        b'P' => take_v1(have.len(), total, at),
        b => Err(format!(
            "starts with byte {b:#04x}, neither a v1 (\"PROXY \") nor a v2 signature"
        )),
    }
}

/// Whether the bytes from `had` to `total` agree with `prefix` where they overlap it.
fn prefix_matches(prefix: &[u8], had: usize, total: usize, at: impl Fn(usize) -> u8) -> bool {
    (had..total.min(prefix.len())).all(|i| at(i) == prefix[i])
}

fn take_v2(had: usize, total: usize, at: impl Fn(usize) -> u8) -> Result<Take, String> {
    if !prefix_matches(&V2_SIGNATURE, had, total, &at) {
        return Err("bad v2 signature".into());
    }
    if total > 12 && had <= 12 {
        let vc = at(12);
        if vc >> 4 != 2 {
            return Err(format!("unsupported v2 version {}", vc >> 4));
        }
        if vc & 0x0f > 1 {
            return Err(format!("unknown v2 command {:#x}", vc & 0x0f));
        }
    }
    if total < V2_FIXED {
        return Ok(Take {
            consume: total - had,
            done: false,
        });
    }
    let need = V2_FIXED + u16::from_be_bytes([at(14), at(15)]) as usize;
    let consume = need.min(total) - had;
    Ok(Take {
        consume,
        done: had + consume == need,
    })
}

fn take_v1(had: usize, total: usize, at: impl Fn(usize) -> u8) -> Result<Take, String> {
    if !prefix_matches(V1_PREFIX, had, total, &at) {
        return Err("neither a v1 (\"PROXY \") nor a v2 header".into());
    }
    // The line ends at the first CRLF, which may straddle what we had and what arrived.
    let end = total.min(V1_MAX);
    let from = had.saturating_sub(1);
    if let Some(cr) = (from..end.saturating_sub(1)).find(|&i| at(i) == b'\r' && at(i + 1) == b'\n')
    {
        return Ok(Take {
            consume: cr + 2 - had,
            done: true,
        });
    }
    if total >= V1_MAX {
        return Err(format!(
            "v1 header without CRLF in its first {V1_MAX} bytes"
        ));
    }
    Ok(Take {
        consume: total - had,
        done: false,
    })
}

/// Parses a complete header (exactly its bytes) with the `proxy-header` crate, checks its
/// TLVs and CRC32C, and keeps what the handler may ask for.
fn parse(raw: Vec<u8>, balancer: Addr) -> Result<ProxyHeader, String> {
    let config = ParseConfig {
        include_tlvs: true,
        allow_v1: true,
        allow_v2: true,
    };
    let (parsed, len) = Parsed::parse(&raw, config).map_err(|e| e.to_string())?;
    if len != raw.len() {
        return Err(format!("header is {len} bytes, framed as {}", raw.len()));
    }
    for tlv in parsed.tlvs() {
        tlv.map_err(|e| format!("bad TLV: {e}"))?;
    }
    let version = if raw[0] == b'P' { 1 } else { 2 };
    let (source, destination) = match parsed.proxied_address() {
        Some(a) => (Some(a.source), Some(a.destination)),
        None => (None, None),
    };
    let tlv_start = if version == 2 {
        V2_FIXED + address_block(raw[13])
    } else {
        raw.len()
    };
    let header = ProxyHeader {
        version,
        source,
        destination,
        balancer,
        raw,
        tlv_start,
    };
    check_crc(&header)?;
    Ok(header)
}

/// The size of a v2 address block for the family byte (the crate has checked it fits).
fn address_block(family: u8) -> usize {
    match family >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    }
}

/// Verifies the CRC32C TLV, when present: the checksum of the whole header with the field
/// zeroed (a mismatch makes the header invalid).
fn check_crc(h: &ProxyHeader) -> Result<(), String> {
    let mut tlvs = h.tlvs();
    let mut offset = tlvs.start;
    while let Some((kind, value)) = tlvs.next() {
        if kind == 0x03 {
            let want: [u8; 4] = value
                .try_into()
                .map_err(|_| format!("CRC32C TLV of {} bytes", value.len()))?;
            let mut zeroed = h.raw.clone();
            zeroed[offset + 3..offset + 7].fill(0);
            let got = crc32c(&zeroed);
            if got != u32::from_be_bytes(want) {
                return Err(format!(
                    "CRC32C mismatch: header says {:#010x}, bytes give {got:#010x}",
                    u32::from_be_bytes(want)
                ));
            }
        }
        offset = tlvs.start;
    }
    Ok(())
}

/// CRC32C (Castagnoli, RFC 4960 appendix B), table-driven. A header is at most 64 KiB and
/// usually under 100 bytes: a 20-line function rather than a dependency with a build script.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// The client's address to show as the request's peer: the header's source when it has
/// one, else the socket's peer.
pub(crate) fn client_addr(header: &ProxyHeader) -> Addr {
    match header.source {
        Some(a) => Addr::Inet(a),
        None => header.balancer.clone(),
    }
}

/// Whether `ip` is in one of `nets` (for tests of the trust check).
#[cfg(test)]
fn trusted(nets: &[IpNet], ip: std::net::IpAddr) -> bool {
    ProxyConfig {
        trusted: Some(nets.to_vec()),
        timeout: DEFAULT_TIMEOUT,
    }
    .trusts(&Addr::Inet(SocketAddr::new(ip, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
        let mut body = vec![192, 0, 2, 1, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x49];
        body.extend_from_slice(tlvs);
        v2(1, 0x11, &body)
    }

    /// Feeds `stream` to the framer in the given chunks, as a socket would deliver them;
    /// returns the consumed header, or the error.
    fn frame(stream: &[u8], cuts: &[usize]) -> Result<Vec<u8>, String> {
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
        ends.push(stream.len());
        ends.sort_unstable();
        let mut have = Vec::new();
        let mut next = 0;
        loop {
            while next < ends.len() && ends[next] <= have.len() {
                next += 1;
            }
            let Some(&avail) = ends.get(next) else {
                return Err("stream ended".into());
            };
            let cap = peek_len(&have);
            let peeked = &stream[have.len()..avail.min(have.len() + cap)];
            let t = take(&have, peeked)?;
            assert!(t.consume >= 1 && t.consume <= peeked.len(), "{t:?}");
            have.extend_from_slice(&peeked[..t.consume]);
            if t.done {
                return Ok(have);
            }
        }
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn v1_and_v2_framed_exactly_when_split_at_every_byte() {
        let v1 = b"PROXY TCP4 192.0.2.1 127.0.0.1 12345 8009\r\n".to_vec();
        let v2h = v2_tcp4(&[0x01, 0, 2, b'h', b'2']);
        for header in [v1, v2h] {
            let mut stream = header.clone();
            stream.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
            for cut in 0..stream.len() {
                assert_eq!(frame(&stream, &[cut]).unwrap(), header, "cut at {cut}");
            }
            let all: Vec<usize> = (1..stream.len()).collect();
            assert_eq!(frame(&stream, &all).unwrap(), header);
        }
    }

    #[test]
    fn v1_limit_is_107_bytes() {
        let pad = |n: usize| {
            let base = "PROXY UNKNOWN ";
            let mut s = base.to_string();
            s.push_str(&"x".repeat(n - base.len() - 2));
            s.push_str("\r\n");
            s.into_bytes()
        };
        let ok = pad(107);
        assert_eq!(ok.len(), 107);
        assert_eq!(frame(&ok, &[]).unwrap(), ok);
        let h = parse(ok, Addr::Inet("127.0.0.1:1".parse().unwrap())).unwrap();
        assert_eq!(h.source(), None);
        let long = pad(108);
        assert!(frame(&long, &[]).unwrap_err().contains("107"));
        assert!(frame(&long, &[50, 100]).unwrap_err().contains("107"));
    }

    #[test]
    fn garbage_is_refused_at_once() {
        assert!(take(&[], b"GET / HTTP/1.1\r\n").is_err());
        assert!(take(&[], b"PROXX").is_err());
        assert!(take(b"\r\n\r\n", b"\0\r\nQUIX").is_err());
        // Version 1 in a v2 signature, and an unknown command.
        let mut bad = v2_tcp4(&[]);
        bad[12] = 0x11;
        assert!(frame(&bad, &[]).is_err());
        bad[12] = 0x22;
        assert!(frame(&bad, &[]).is_err());
    }

    #[test]
    fn v2_tlvs_are_exposed() {
        let mut tlvs = vec![0x01, 0, 2, b'h', b'2'];
        tlvs.extend_from_slice(&[0x02, 0, 11]);
        tlvs.extend_from_slice(b"example.com");
        tlvs.extend_from_slice(&[0x05, 0, 3, 1, 2, 3]);
        let h = parse(v2_tcp4(&tlvs), Addr::Inet("127.0.0.1:9".parse().unwrap())).unwrap();
        assert_eq!(h.version(), 2);
        assert_eq!(h.source(), Some("192.0.2.1:12345".parse().unwrap()));
        assert_eq!(h.destination(), Some("127.0.0.1:8009".parse().unwrap()));
        assert_eq!(h.alpn(), Some(&b"h2"[..]));
        assert_eq!(h.authority(), Some("example.com"));
        assert_eq!(h.unique_id(), Some(&[1, 2, 3][..]));
        assert_eq!(h.tlvs().count(), 3);
        assert_eq!(h.balancer_addr().to_string(), "127.0.0.1:9");
    }

    fn with_crc(tlvs_before: &[u8]) -> Vec<u8> {
        let mut tlvs = tlvs_before.to_vec();
        tlvs.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]);
        let mut h = v2_tcp4(&tlvs);
        let crc = crc32c(&h);
        let at = h.len() - 4;
        h[at..].copy_from_slice(&crc.to_be_bytes());
        h
    }

    #[test]
    fn crc32c_checked() {
        let peer = Addr::Inet("127.0.0.1:9".parse().unwrap());
        let good = with_crc(&[0x05, 0, 2, 7, 7]);
        assert!(parse(good.clone(), peer.clone()).is_ok());
        let mut bad = good.clone();
        bad[17] ^= 1; // a source address byte
        assert!(parse(bad, peer.clone()).unwrap_err().contains("CRC32C"));
        let mut bad = good;
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(parse(bad, peer).unwrap_err().contains("CRC32C"));
    }

    #[test]
    fn local_and_unspec_keep_socket_addresses() {
        let peer = Addr::Inet("127.0.0.1:9".parse().unwrap());
        let h = parse(v2(0, 0x00, &[]), peer.clone()).unwrap();
        assert_eq!(h.source(), None);
        assert_eq!(client_addr(&h).to_string(), "127.0.0.1:9");
        // LOCAL with an address block: the block is skipped, addresses ignored.
        let mut local = v2_tcp4(&[]);
        local[12] = 0x20;
        let h = parse(local, peer).unwrap();
        assert_eq!(h.source(), None);
    }

    #[test]
    fn malformed_tlv_is_refused() {
        let peer = Addr::Inet("127.0.0.1:9".parse().unwrap());
        // A TLV claiming 9 bytes with 2 present.
        assert!(parse(v2_tcp4(&[0x05, 0, 9, 1, 2]), peer.clone()).is_err());
        // An address block shorter than the family needs.
        assert!(parse(v2(1, 0x11, &[1, 2, 3]), peer).is_err());
    }

    #[test]
    fn trust_list_with_mapped_addresses() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(trusted(&nets, "10.1.2.3".parse().unwrap()));
        assert!(trusted(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(trusted(&nets, "::1".parse().unwrap()));
        assert!(!trusted(&nets, "127.0.0.1".parse().unwrap()));
        assert!(!trusted(&[], "10.1.2.3".parse().unwrap()));
    }

    proptest! {
        /// Any bytes, in any chunks: the framer never panics, never consumes past what it
        /// was shown, and anything it frames is at most 107 (v1) or 16 + length (v2) bytes.
        #[test]
        fn framer_never_overreads(stream in proptest::collection::vec(any::<u8>(), 1..300),
                                  cuts in proptest::collection::vec(0usize..300, 0..8)) {
            if let Ok(h) = frame(&stream, &cuts) {
                prop_assert!(stream.starts_with(&h));
                if h[0] == b'P' {
                    prop_assert!(h.len() <= V1_MAX && h.ends_with(b"\r\n"));
                } else {
                    prop_assert_eq!(h.len(), V2_FIXED + v2_len(&h));
                }
                let _ = parse(h, Addr::Inet("127.0.0.1:1".parse().unwrap()));
            }
        }

        /// A valid v2 header (with random TLV bytes) followed by payload, in random chunks:
        /// framed to exactly its own bytes.
        #[test]
        fn v2_framed_exactly(tlv in proptest::collection::vec(any::<u8>(), 0..200),
                             payload in proptest::collection::vec(any::<u8>(), 0..50),
                             cuts in proptest::collection::vec(0usize..300, 0..8)) {
            let h = v2_tcp4(&tlv);
            let mut stream = h.clone();
            stream.extend_from_slice(&payload);
            prop_assert_eq!(frame(&stream, &cuts).unwrap(), h);
        }
    }
}

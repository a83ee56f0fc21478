//! PROXY protocol on a real TCP server (in process, loopback): headers arriving in pieces,
//! v1 at its 107-byte limit and over, v2 with TLVs and CRC32C, untrusted sources, headers
//! that never complete, garbage. A refused connection is closed and counted; the server
//! goes on serving.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{Flavor, IpNet, ShutdownHandle, Stats, StreamRequest, TcpServer};
use util::tcp_client;

const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

struct Server {
    addr: SocketAddr,
    handle: ShutdownHandle,
    serving: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.serving.take() {
            let _ = t.join();
        }
    }
}

/// A server that answers one line per connection: what it knows about the client, then
/// the first line the client sent after the header.
fn start(trusted: &[&str], header_timeout: Duration) -> Server {
    let nets: Vec<IpNet> = trusted.iter().map(|s| s.parse().unwrap()).collect();
    let server = TcpServer::builder()
        .flavor(Flavor::pool().workers(4))
        .proxy_header_timeout(header_timeout) // before or after proxy_protocol: the same
        .proxy_protocol(nets)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || {
        server.serve(|req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            let h = req.proxy_header();
            let reply = format!(
                "peer={} balancer={} v={} alpn={} authority={} uid={} line={}",
                req.peer_addr(),
                req.balancer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                h.map(|h| h.version()).unwrap_or(0),
                h.and_then(|h| h.alpn())
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default(),
                h.and_then(|h| h.authority()).unwrap_or(""),
                h.and_then(|h| h.unique_id())
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default(),
                line
            );
            req.write_all(reply.as_bytes())
        })
    });
    Server {
        addr,
        handle,
        serving: Some(serving),
    }
}

fn v1(src: &str) -> Vec<u8> {
    let (ip, port) = src.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 8009\r\n").into_bytes()
}

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// A v2 PROXY TCP4 header from 192.0.2.7:4321 with the given TLV bytes.
fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
    let mut body = vec![192, 0, 2, 7, 127, 0, 0, 1, 0x10, 0xe1, 0x1f, 0x49];
    body.extend_from_slice(tlvs);
    v2(1, 0x11, &body)
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&(value.len() as u16).to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// CRC32C, bitwise: the reference the server's table-driven one is checked against.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends `parts` with a pause between them (so the server sees the header in pieces;
/// correct whether or not the pieces coalesce) and returns everything the server replied
/// until it closed. A reset counts as a close with what was read so far.
fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut c = tcp_client(addr);
    c.set_nodelay(true).unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(3));
        }
        if c.write_all(p).is_err() {
            break;
        }
    }
    read_until_closed(&mut c)
}

fn read_until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read failed after {got:?}: {e}"),
        }
    }
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

/// Waits (bounded) until the server's counters satisfy `pred`; fails the test otherwise.
#[track_caller]
fn stats_until(handle: &ShutdownHandle, pred: impl Fn(&Stats) -> bool) -> Stats {
    util::wait_for("the server's counters", || handle.stats(), pred)
}

#[test]
fn headers_split_at_every_byte() {
    let s = start(&["127.0.0.0/8"], Duration::from_secs(5));
    let mut tlvs = tlv(0x01, b"h2");
    tlvs.extend(tlv(0x02, b"example.com"));
    tlvs.extend(tlv(0x05, b"id-42"));
    let cases = [
        (v1("198.51.100.9:5555"), "peer=198.51.100.9:5555"),
        (v2_tcp4(&tlvs), "peer=192.0.2.7:4321"),
    ];
    for (header, peer) in cases {
        let mut all = header.clone();
        all.extend_from_slice(b"hello after the header\n");
        for cut in 1..header.len() + 1 {
            let reply = text(exchange(s.addr, &[&all[..cut], &all[cut..]]));
            assert!(reply.starts_with(peer), "cut {cut}: {reply}");
            assert!(
                reply.ends_with("line=hello after the header\n"),
                "cut {cut}: the bytes after the header were not left intact: {reply}"
            );
            assert!(reply.contains("balancer=127.0.0.1:"), "{reply}");
        }
    }
    // The TLVs reach the handler.
    let mut all = v2_tcp4(&tlvs);
    all.extend_from_slice(b"x\n");
    let reply = text(exchange(s.addr, &[&all]));
    assert!(
        reply.contains("v=2 alpn=h2 authority=example.com uid=id-42 line=x"),
        "{reply}"
    );
    assert_eq!(s.handle.stats().proxy_rejected, 0);
}

#[test]
fn v1_at_107_bytes_and_over() {
    let s = start(&["127.0.0.0/8"], Duration::from_secs(5));
    let line = |len: usize| {
        let mut h = b"PROXY UNKNOWN ".to_vec();
        h.resize(len - 2, b'x');
        h.extend_from_slice(b"\r\n");
        h
    };
    let mut ok = line(107);
    ok.extend_from_slice(b"fits\n");
    let reply = text(exchange(s.addr, &[&ok]));
    assert!(
        reply.starts_with("peer=127.0.0.1:"),
        "UNKNOWN keeps the socket's address: {reply}"
    );
    assert!(reply.ends_with("line=fits\n"), "{reply}");
    for len in [108, 200] {
        let mut bad = line(len);
        bad.extend_from_slice(b"too long\n");
        assert_eq!(
            exchange(s.addr, &[&bad]),
            b"",
            "a {len}-byte v1 header is refused"
        );
    }
    // No CRLF at all within 107 bytes, sent in pieces.
    let long = vec![b'P'; 1]
        .into_iter()
        .chain(b"ROXY ".iter().copied())
        .chain(vec![b'1'; 150]);
    let long: Vec<u8> = long.collect();
    assert_eq!(exchange(s.addr, &[&long[..60], &long[60..]]), b"");
    let st = stats_until(&s.handle, |st| st.proxy_rejected >= 3);
    assert_eq!(st.proxy_rejected, 3);
}

#[test]
fn v2_crc32c_checked_and_local_keeps_addresses() {
    let s = start(&["127.0.0.0/8"], Duration::from_secs(5));
    let mut h = v2_tcp4(&tlv(0x03, &[0; 4]));
    let crc = crc32c(&h);
    let at = h.len() - 4;
    h[at..].copy_from_slice(&crc.to_be_bytes());
    let mut good = h.clone();
    good.extend_from_slice(b"crc ok\n");
    assert!(text(exchange(s.addr, &[&good])).starts_with("peer=192.0.2.7:4321"));
    let mut bad = h.clone();
    bad[at + 3] ^= 0x40;
    bad.extend_from_slice(b"crc bad\n");
    assert_eq!(
        exchange(s.addr, &[&bad]),
        b"",
        "a bad CRC32C closes the connection"
    );

    // LOCAL (a health check): the socket's own addresses, the block skipped.
    let mut local = v2(0, 0x00, &[]);
    local.extend_from_slice(b"check\n");
    let reply = text(exchange(s.addr, &[&local]));
    assert!(reply.starts_with("peer=127.0.0.1:"), "{reply}");
    assert!(reply.ends_with("line=check\n"), "{reply}");
    // A health check that connects and closes: not counted.
    drop(tcp_client(s.addr));
    let st = stats_until(&s.handle, |st| st.proxy_rejected >= 1 && st.completed >= 2);
    assert_eq!(st.proxy_rejected, 1);
}

#[test]
fn untrusted_source_and_garbage_are_closed_and_counted() {
    // Only 10.0.0.0/8 may send headers: this client (127.0.0.1) may not.
    let s = start(&["10.0.0.0/8"], Duration::from_secs(5));
    let mut h = v1("203.0.113.5:1000");
    h.extend_from_slice(b"spoof\n");
    assert_eq!(exchange(s.addr, &[&h]), b"");
    let st = stats_until(&s.handle, |st| st.proxy_rejected >= 1);
    assert_eq!(st.proxy_rejected, 1);

    let s = start(&["127.0.0.1/32"], Duration::from_secs(5));
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 1\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x03abc",
        b"\r\n\r\n\0\r\nQUIT\n\x13\x11\x00\x00",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut g = garbage.to_vec();
        g.extend_from_slice(b"\n");
        assert_eq!(exchange(s.addr, &[&g]), b"", "{garbage:?} must be refused");
    }
    let st = stats_until(&s.handle, |st| st.proxy_rejected >= 6);
    assert_eq!(st.proxy_rejected, 6);
    // And the server goes on.
    let mut ok = v1("192.0.2.1:7");
    ok.extend_from_slice(b"still here\n");
    assert!(text(exchange(s.addr, &[&ok])).ends_with("line=still here\n"));
}

#[test]
fn header_that_never_completes_is_closed_at_the_deadline_others_served() {
    let timeout = Duration::from_secs(2);
    let s = start(&["127.0.0.0/8"], timeout);
    let mut stalled = tcp_client(s.addr);
    stalled.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    let sent = Instant::now();
    // Served meanwhile, several times over.
    for i in 0..5 {
        let mut ok = v1("192.0.2.2:2");
        ok.extend_from_slice(format!("other {i}\n").as_bytes());
        let reply = text(exchange(s.addr, &[&ok]));
        assert!(reply.ends_with(&format!("line=other {i}\n")), "{reply}");
    }
    // ... while the stalled connection is still open.
    stalled.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let still_open =
        matches!(stalled.read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    assert!(
        still_open,
        "the stalled connection was closed before the others were served"
    );
    stalled.set_nonblocking(false).unwrap();
    // The stalled one is closed, not before the deadline, and well within the test timeout.
    assert_eq!(read_until_closed(&mut stalled), b"");
    assert!(sent.elapsed() >= timeout - Duration::from_millis(100));
    let st = stats_until(&s.handle, |st| st.proxy_rejected >= 1);
    assert_eq!(st.proxy_rejected, 1);
}

#[test]
fn zero_header_timeout_is_refused_by_bind() {
    let loopback = IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let e = TcpServer::builder()
        .proxy_protocol([loopback])
        .proxy_header_timeout(Duration::ZERO)
        .bind("127.0.0.1:0")
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("proxy_header_timeout"), "{e}");
    // Without proxy_protocol the setting has no effect, and no error.
    assert!(TcpServer::builder()
        .proxy_header_timeout(Duration::ZERO)
        .bind("127.0.0.1:0")
        .is_ok());
}

#[test]
fn on_error_names_the_client_behind_the_balancer() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let loopback = IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let server = TcpServer::builder()
        .proxy_protocol([loopback])
        .on_error(move |peer, _err| log.lock().unwrap().push(peer.to_string()))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || {
        server.serve(|req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            Err(io::Error::other("the handler fails"))
        })
    });
    let mut h = v1("198.51.100.20:4000");
    h.extend_from_slice(b"x\n");
    assert_eq!(exchange(addr, &[&h]), b"");
    util::wait_until("on_error to be called", || !seen.lock().unwrap().is_empty());
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["198.51.100.20:4000".to_string()]
    );
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

#[test]
fn header_trickling_in_ends_at_the_deadline() {
    let timeout = Duration::from_secs(1);
    let s = start(&["127.0.0.0/8"], timeout);
    let mut c = tcp_client(s.addr);
    c.set_nodelay(true).unwrap();
    // A v2 header that declares 200 bytes of TLVs, then sends one byte every 50 ms: it
    // would take 10 s to complete; the 1 s deadline ends it.
    let mut h = v2(1, 0x11, &[]);
    h[14..16].copy_from_slice(&212u16.to_be_bytes());
    c.write_all(&h).unwrap();
    c.write_all(&[192, 0, 2, 7, 127, 0, 0, 1, 0x10, 0xe1, 0x1f, 0x49])
        .unwrap();
    let sent = Instant::now();
    let mut closed = false;
    for _ in 0..200 {
        thread::sleep(Duration::from_millis(50));
        if c.write_all(&[0x04]).is_err() {
            closed = true;
            break;
        }
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = c.read(&mut b);
        c.set_nonblocking(false).unwrap();
        match r {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a trickling header was never cut");
    assert!(sent.elapsed() >= timeout - Duration::from_millis(100));
    let st = stats_until(&s.handle, |st| st.proxy_rejected >= 1);
    assert_eq!(st.proxy_rejected, 1);
}

#[test]
fn shutdown_ends_a_pending_header_at_once() {
    // A 60 s header deadline and a 30 s grace period: shutdown must not wait for either.
    let loopback = IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let server = TcpServer::builder()
        .proxy_protocol([loopback])
        .proxy_header_timeout(Duration::from_secs(60))
        .grace_period(Duration::from_secs(30))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve(|_req: &mut StreamRequest| Ok(())));
    let mut c = tcp_client(addr);
    c.write_all(b"PROXY TCP4 ").unwrap();
    // Accepted; its header is read on a worker once its first bytes come (the pool's
    // engine counts a connection active only once its handler runs).
    util::wait_until("the connection to be taken", || {
        handle.stats().accepted >= 1
    });
    handle.shutdown();
    util::within(Duration::from_secs(5), move || {
        serving.join().unwrap().unwrap()
    });
    assert_eq!(read_until_closed(&mut c), b"");
    // Not the client's fault: not counted.
    assert_eq!(handle.stats().proxy_rejected, 0);
}

/// `serve_requests` (idle connections parked, no thread each) reads the header first too.
#[test]
fn request_at_a_time_handlers_get_the_client_address() {
    use socketserver::Next;
    let loopback = IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let server = TcpServer::builder()
        .proxy_protocol([loopback])
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || {
        server.serve_requests(|req: &mut StreamRequest| {
            let mut line = String::new();
            if req.read_line(&mut line)? == 0 {
                return Ok(Next::Close);
            }
            let reply = format!("{} {line}", req.peer_addr());
            req.write_all(reply.as_bytes())?;
            Ok(Next::Continue)
        })
    });
    let mut all = v1("203.0.113.9:999");
    all.extend_from_slice(b"one\ntwo\n");
    for cut in [1, 10, all.len() - 8, all.len() - 3] {
        let mut c = tcp_client(addr);
        c.write_all(&all[..cut]).unwrap();
        thread::sleep(Duration::from_millis(3));
        c.write_all(&all[cut..]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let got = text(read_until_closed(&mut c));
        assert_eq!(
            got, "203.0.113.9:999 one\n203.0.113.9:999 two\n",
            "cut {cut}"
        );
    }
    assert_eq!(exchange(addr, &[b"garbage\n"]), b"");
    let st = stats_until(&handle, |st| st.proxy_rejected >= 1);
    assert_eq!(st.proxy_rejected, 1);
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

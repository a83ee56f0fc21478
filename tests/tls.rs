//! TLS (cargo feature `tls`) with real clients: Python's `ssl` module and `openssl s_client`,
//! against servers of every flavour (the forking one through the example binaries, which
//! run in processes of their own). Certificates are made here with rcgen: a CA with its own
//! name and leaves signed by it, authority key identifier set, so strict X.509 checkers
//! accept them. Real sockets on loopback; every client read has a timeout.
#![cfg(feature = "tls")]

#[path = "tls_pki/mod.rs"]
mod tls_pki;
mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::{tls, Builder, Flavor, ShutdownHandle, Stats, StreamRequest, TcpServer};
use tls_pki::Pki;
use util::{ExampleServer, TempPath, TIMEOUT};

// ---- certificates: tests/tls_pki/mod.rs ------------------------------------------------------

// ---- servers --------------------------------------------------------------------------------

/// A server serving on a background thread; stopped on drop.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    fn start<H>(b: &mut Builder<TcpListener>, handler: H) -> Running
    where
        H: socketserver::StreamHandler + Clone,
    {
        let server = b.bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.shutdown_handle();
        let thread = Some(thread::spawn(move || server.serve(handler)));
        Running {
            addr,
            handle,
            thread,
        }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Waits (bounded) until the counters satisfy `pred`; returns them.
    #[track_caller]
    fn wait_stats(&self, what: &str, pred: impl Fn(&Stats) -> bool) -> Stats {
        util::wait_for(what, || self.stats(), pred)
    }

    /// Shuts down and waits for `serve` to return.
    #[track_caller]
    fn stop(mut self) {
        self.handle.shutdown();
        let t = self.thread.take().unwrap();
        util::within(TIMEOUT, move || t.join().unwrap().unwrap());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = util::within(TIMEOUT, move || t.join());
        }
    }
}

fn tls_builder(pki: &Pki, flavor: Flavor) -> Builder<TcpListener> {
    let mut b = TcpServer::builder();
    b.flavor(flavor).tls(Arc::new(pki.config(None).0));
    b
}

/// The tests' line protocol: `info` answers the TLS facts, `bye` ends the connection,
/// anything else comes back upper-cased.
fn lines(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if req.read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.trim_end() {
            "info" => {
                let info = req.tls_info().expect("a TLS connection");
                let reply = format!(
                    "{} sni={} alpn={} certs={}\n",
                    info.version(),
                    info.sni().unwrap_or("-"),
                    String::from_utf8_lossy(info.alpn().unwrap_or(b"-")),
                    info.peer_certificates().len()
                );
                req.write_all(reply.as_bytes())?;
            }
            "bye" => return Ok(()),
            other => req.write_all(format!("{}\n", other.to_uppercase()).as_bytes())?,
        }
    }
}

/// Writes back every byte (the echo example's handler).
fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let mut buf = [0; 16 * 1024];
    loop {
        let n = req.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.write_all(&buf[..n])?;
    }
}

// ---- clients --------------------------------------------------------------------------------

/// Python helpers: `connect(target, cafile, ...)` to `HOST:PORT` or a Unix path, and
/// `line(s)` reading one reply line.
const PY: &str = r#"
import hashlib, os, socket, ssl, sys, threading
def connect(target, cafile, cert=None, key=None, alpn=None, ragged=True, tls12=False):
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if target.startswith('/'):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(10)
        raw.connect(target)
    else:
        host, port = target.rsplit(':', 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname='localhost', suppress_ragged_eofs=ragged)
def line(s):
    buf = b''
    while not buf.endswith(b'\n'):
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf.decode()
def say(*a):
    print(*a, flush=True)
"#;

/// Runs a Python client (the helpers above, then `body`) with `args`; returns its stdout.
#[track_caller]
fn py(body: &str, args: &[&str]) -> String {
    util::python(&format!("{PY}\n{body}"), args)
}

/// A Python client that must fail: returns the name of the exception it got.
#[track_caller]
fn py_fails(body: &str, args: &[&str]) -> String {
    let script = format!(
        "{PY}\ntry:\n{}\n    say('no error')\nexcept Exception as e:\n    say('error', type(e).__name__, e)\n",
        body.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = util::python(&script, args);
    assert!(
        out.starts_with("error"),
        "the client should have failed: {out}"
    );
    out
}

const ECHO_LINES: &str = r#"
s = connect(sys.argv[1], sys.argv[2], tls12=(sys.argv[3] == '1.2'))
s.sendall(b'info\n'); say(line(s).strip())
s.sendall(b'hello tls\n'); say(line(s).strip())
s.sendall(b'bye\n')
say('eof' if s.recv(100) == b'' else 'data')
s.close()
"#;

// ---- echo in every flavour ------------------------------------------------------------------

/// Python's ssl module talks to the server in the single, threading and pool flavours, with
/// TLS 1.3 and 1.2; `tls_info` reports the version and the SNI name; `bye` ends the
/// connection with EOF; a client's EOF without close_notify is a normal end. (The forking
/// flavour: tests/tls_forking.rs and `examples_in_fork_mode_over_tls`.)
#[test]
fn echo_lines_in_every_thread_flavour() {
    let pki = Pki::new();
    for flavor in [Flavor::single(), Flavor::threading(), Flavor::pool()] {
        let server = Running::start(&mut tls_builder(&pki, flavor.clone()), lines);
        for version in ["1.3", "1.2"] {
            let out = py(ECHO_LINES, &[&server.target(), &pki.p("ca.pem"), version]);
            assert_eq!(
                out,
                format!("TLSv{version} sni=localhost alpn=- certs=0\nHELLO TLS\neof\n"),
                "{flavor:?}"
            );
        }
        // A client that closes the TCP connection without close_notify after a complete
        // request: a normal end for the handler (EOF), not an error.
        let out = py(
            "s = connect(sys.argv[1], sys.argv[2])\ns.sendall(b'hi\\n'); say(line(s).strip())\ns.close()",
            &[&server.target(), &pki.p("ca.pem")],
        );
        assert_eq!(out, "HI\n");
        let s = server.wait_stats("three clients", |s| s.completed == 3);
        assert_eq!(s.handler_errors, 0, "{flavor:?}: {s:?}");
        assert_eq!(s.tls_handshake_failures, 0);
        server.stop();
    }
}

/// `serve_requests` (request-at-a-time handlers) over TLS, in the pool flavour and in
/// `single`: the handshake happens, and pipelined requests in one record are all answered.
#[test]
fn request_handlers_over_tls() {
    let pki = Pki::new();
    for flavor in [Flavor::pool(), Flavor::single()] {
        let server = b_serve_requests(&mut tls_builder(&pki, flavor.clone()));
        let out = py(
            r#"
s = connect(sys.argv[1], sys.argv[2])
s.sendall(b'info\nab\ncd\n')
got = b''
while got.count(b'\n') < 3:
    d = s.recv(100)
    if not d:
        break
    got += d
say(got.decode().replace('\n', ' ').strip())
"#,
            &[&server.0.to_string(), &pki.p("ca.pem")],
        );
        assert_eq!(out, "TLSv1.3 sni=localhost AB CD\n", "{flavor:?}");
        server.1.shutdown();
        let t = server.2;
        util::within(TIMEOUT, move || t.join().unwrap().unwrap());
    }
}

/// `serve_requests` over TLS in the pool flavour parks idle TLS connections: with one
/// worker and a limit of one thread, 20 clients that finished their handshake and a request
/// and stay connected do not stop the next one; a client's key update (a record without
/// data) re-parks its connection instead of holding the worker until a request comes, and
/// its next request is answered under the new keys.
#[test]
fn idle_tls_connections_are_parked_and_a_key_update_is_not_a_request() {
    let pki = Pki::new();
    let server = b_serve_requests(&mut tls_builder(&pki, Flavor::pool().workers(1).limit(1)));
    let mut clients: Vec<_> = (0..20)
        .map(|i| {
            let (mut conn, mut sock) = rustls_client(&pki, server.0);
            assert_eq!(
                tls_call(&mut conn, &mut sock, &format!("c{i}\n")),
                format!("C{i}\n")
            );
            (conn, sock)
        })
        .collect();
    let (conn, sock) = &mut clients[0];
    conn.refresh_traffic_keys().unwrap();
    while conn.wants_write() {
        conn.write_tls(sock).unwrap();
    }
    // The key update reached the server's one worker; another client is still served.
    let (conn, sock) = &mut clients[1];
    assert_eq!(tls_call(conn, sock, "second\n"), "SECOND\n");
    let (conn, sock) = &mut clients[0];
    assert_eq!(
        tls_call(conn, sock, "after key update\n"),
        "AFTER KEY UPDATE\n"
    );
    let (mut conn, mut sock) = rustls_client(&pki, server.0);
    assert_eq!(tls_call(&mut conn, &mut sock, "new\n"), "NEW\n");
    assert_eq!(server.1.stats().threads, 1, "{:?}", server.1.stats());
    server.1.shutdown();
    let t = server.2;
    util::within(TIMEOUT, move || t.join().unwrap().unwrap());
}

/// Sends `line` on a TLS client and reads one line back (each socket read under the
/// client socket's timeout).
fn tls_call(conn: &mut tls::rustls::ClientConnection, sock: &mut TcpStream, line: &str) -> String {
    conn.writer().write_all(line.as_bytes()).unwrap();
    while conn.wants_write() {
        conn.write_tls(sock).unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !got.ends_with(b"\n") {
        assert!(
            Instant::now() < deadline,
            "no answer to {line:?} within {TIMEOUT:?}"
        );
        if conn.read_tls(sock).expect("read within the timeout") == 0 {
            break;
        }
        conn.process_new_packets().unwrap();
        let mut buf = [0u8; 256];
        match conn.reader().read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the answer to {line:?}: {e}"),
        }
    }
    String::from_utf8(got).unwrap()
}

/// Starts `serve_requests` with a one-line-per-request handler (`info` answers the TLS
/// version and SNI, anything else comes back upper-cased).
fn b_serve_requests(
    b: &mut Builder<TcpListener>,
) -> (SocketAddr, ShutdownHandle, JoinHandle<io::Result<()>>) {
    start_requests(b, |req: &mut StreamRequest| {
        let mut line = String::new();
        if req.read_line(&mut line)? == 0 {
            return Ok(socketserver::Next::Close);
        }
        let reply = match line.trim_end() {
            "info" => {
                let info = req.tls_info().expect("a TLS connection");
                format!("{} sni={}", info.version(), info.sni().unwrap_or("-"))
            }
            other => other.to_uppercase(),
        };
        writeln!(req, "{reply}")?;
        Ok(socketserver::Next::Continue)
    })
}

/// Binds `b` on 127.0.0.1 and runs `serve_requests(handler)` on a thread of its own: the
/// address, the server's handle and the thread.
fn start_requests<H: socketserver::RequestHandler + Clone>(
    b: &mut Builder<TcpListener>,
    handler: H,
) -> (SocketAddr, ShutdownHandle, JoinHandle<io::Result<()>>) {
    let server = b.bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_requests(handler));
    (addr, handle, t)
}

/// A Unix stream server takes TLS the same way.
#[test]
fn unix_stream_server_over_tls() {
    let pki = Pki::new();
    let path = TempPath::new("tls");
    let server = socketserver::UnixStreamServer::builder()
        .tls(Arc::new(pki.config(None).0))
        .bind(path.path())
        .unwrap();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve(lines));
    let target = path.path().to_str().unwrap().to_string();
    let out = py(ECHO_LINES, &[&target, &pki.p("ca.pem"), "1.3"]);
    assert_eq!(
        out,
        "TLSv1.3 sni=localhost alpn=- certs=0\nHELLO TLS\neof\n"
    );
    handle.shutdown();
    util::within(TIMEOUT, move || serving.join().unwrap().unwrap());
}

/// `openssl s_client`, verifying the chain strictly, gets a reply and the server's
/// close_notify (s_client exits by itself only when the server closes the session).
#[test]
fn openssl_s_client_verifies_and_talks() {
    let pki = Pki::new();
    let server = Running::start(
        &mut tls_builder(&pki, Flavor::pool()),
        |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            req.write_all(line.to_uppercase().as_bytes())
        },
    );
    let out = s_client(&server.target(), &pki.p("ca.pem"), b"hello openssl\n");
    assert!(out.contains("HELLO OPENSSL"), "s_client output: {out}");
    server.stop();
}

/// Runs `openssl s_client -quiet` (it exits when the server closes), feeding it `input`;
/// returns stdout and stderr. Killed by its pid if it runs past the timeout.
#[track_caller]
fn s_client(target: &str, ca: &str, input: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", target, "-servername", "localhost"])
        .args(["-CAfile", ca, "-verify_return_error", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl on PATH (.ci/run installs it)");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // stdin stays open (with -quiet, EOF on stdin is ignored anyway) until the end.
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&input);
        stdin
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("s_client output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("openssl s_client did not finish within {TIMEOUT:?}");
        }
    };
    drop(feeder.join());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "s_client failed: {text}");
    text
}

// ---- handshakes that go wrong ---------------------------------------------------------------

/// The first flight of a real TLS client (a ClientHello), to send slowly.
fn client_hello() -> Vec<u8> {
    let provider = tls::provider();
    let config = tls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(tls::rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let mut conn = tls::rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Whether the server has closed `s` (EOF or reset), waiting at most `wait` for it.
fn closed_within(s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert: the close follows
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A client that connects and says nothing, and one that sends its ClientHello one byte
/// every 50 ms, do not stop a third client from being served while they are connected;
/// both are cut at the whole-handshake deadline (a per-read timeout would let the slow one
/// run for the ~10 s its hello takes), and both are counted.
#[test]
fn silent_and_trickling_handshakes_do_not_block_another_client() {
    let pki = Pki::new();
    let mut b = tls_builder(&pki, Flavor::pool());
    b.tls_handshake_timeout(Duration::from_secs(3));
    let server = Running::start(&mut b, lines);

    let silent = util::tcp_client(server.addr);
    let hello = client_hello();
    assert!(hello.len() > 100, "a ClientHello is a few hundred bytes");
    let slow = util::tcp_client(server.addr);
    let slow_reader = slow.try_clone().unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let trickler = thread::spawn(move || {
        let mut sent = 0;
        for byte in &hello {
            if (&slow).write_all(std::slice::from_ref(byte)).is_err() {
                break;
            }
            sent += 1;
            if sent == 2 {
                let _ = started_tx.send(());
            }
            if closed_within(&slow_reader, Duration::from_millis(50)) {
                break;
            }
        }
        (sent, hello.len())
    });
    started_rx.recv_timeout(TIMEOUT).expect("trickling started");

    // Served while both are mid-handshake.
    let out = py(ECHO_LINES, &[&server.target(), &pki.p("ca.pem"), "1.3"]);
    assert_eq!(
        out,
        "TLSv1.3 sni=localhost alpn=- certs=0\nHELLO TLS\neof\n"
    );
    assert!(
        !closed_within(&silent, Duration::from_millis(1)),
        "the silent client was cut before the good one was served: the test ran too slowly"
    );

    assert!(closed_within(&silent, TIMEOUT), "silent client never cut");
    let (sent, total) = util::within(TIMEOUT, move || trickler.join().unwrap());
    assert!(
        sent < total,
        "the slow client sent its whole hello ({total} bytes) without being cut"
    );
    let s = server.wait_stats("two failures", |s| s.tls_handshake_failures == 2);
    assert_eq!(s.completed, 1, "{s:?}");
    server.stop();
}

/// A rustls client connected to `addr` with the handshake done, trusting the test CA: the
/// session and the raw socket, for a test to send records as it likes.
fn rustls_client(pki: &Pki, addr: SocketAddr) -> (tls::rustls::ClientConnection, TcpStream) {
    let mut roots = tls::rustls::RootCertStore::empty();
    for cert in tls::load_certs(pki.path("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = tls::rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let mut conn = tls::rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = util::tcp_client(addr);
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    (conn, sock)
}

/// The request timeout holds over TLS too: a request whose record trickles in (a byte every
/// 100 ms) is cut at the request's deadline, however the record is split, and counted as a
/// request timeout; the deadline starts with the record's first byte, before any plaintext.
#[test]
fn request_timeout_bounds_a_trickled_record() {
    let pki = Pki::new();
    for wake_idle in [true, false] {
        let mut b = tls_builder(&pki, Flavor::pool());
        b.request_timeout(Some(Duration::from_secs(1)))
            .end_idle_on_shutdown(wake_idle);
        let server = Running::start(&mut b, lines);
        let (mut conn, sock) = rustls_client(&pki, server.addr);
        conn.writer().write_all(b"hello\n").unwrap();
        let mut record = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut record).unwrap();
        }
        let mut sent = 0;
        for byte in &record {
            if (&sock).write_all(std::slice::from_ref(byte)).is_err() {
                break;
            }
            sent += 1;
            if closed_within(&sock, Duration::from_millis(100)) {
                break;
            }
        }
        assert!(
            sent < record.len(),
            "wake_idle={wake_idle}: the whole record ({} bytes) went in without a cut",
            record.len()
        );
        let s = server.wait_stats("request timeout", |s| s.request_timeouts == 1);
        assert_eq!(s.handler_errors, 0, "{s:?}");
        server.stop();
    }
}

/// Plain text to the TLS port, a client that does not trust the server's CA, and a client
/// with no ALPN protocol in common each end their own connection only: the server counts
/// them and goes on serving.
#[test]
fn failed_handshakes_are_closed_counted_and_harmless() {
    let pki = Pki::new();
    let mut config = pki.config(None).0;
    config.alpn_protocols = vec![b"lines/1".to_vec()];
    let mut b = TcpServer::builder();
    b.flavor(Flavor::pool()).tls(Arc::new(config));
    let server = Running::start(&mut b, lines);
    let target = server.target();
    let good = r#"
s = connect(sys.argv[1], sys.argv[2], alpn=['lines/1'])
s.sendall(b'info\n'); say(line(s).strip())
"#;

    // Plain text: closed (after an alert at most), never echoed.
    let mut plain = util::tcp_client(server.addr);
    plain.write_all(b"hello, plain text here\n").unwrap();
    let reply = util::read_to_end(&mut plain);
    assert!(!reply.windows(5).any(|w| w == b"HELLO"), "{reply:?}");
    server.wait_stats("plain text", |s| s.tls_handshake_failures == 1);

    let out = py_fails(
        "s = connect(sys.argv[1], sys.argv[2])\ns.sendall(b'info\\n'); line(s)",
        &[&target, &pki.p("other_ca.pem")],
    );
    assert!(out.contains("SSLCertVerificationError"), "{out}");
    server.wait_stats("wrong CA", |s| s.tls_handshake_failures == 2);

    let out = py_fails(
        "s = connect(sys.argv[1], sys.argv[2], alpn=['h2'])\ns.sendall(b'info\\n'); line(s)",
        &[&target, &pki.p("ca.pem")],
    );
    assert!(out.contains("SSLError"), "{out}");
    server.wait_stats("no common ALPN", |s| s.tls_handshake_failures == 3);

    let out = py(good, &[&target, &pki.p("ca.pem")]);
    assert_eq!(out, "TLSv1.3 sni=localhost alpn=lines/1 certs=0\n");
    let s = server.wait_stats("good client", |s| s.completed == 1);
    assert_eq!(
        (s.tls_handshake_failures, s.handler_errors),
        (3, 0),
        "{s:?}"
    );
    server.stop();
}

// ---- reading and writing --------------------------------------------------------------------

/// Two requests in one TLS record: rustls decrypts both at once, the handler (with a 4-byte
/// read buffer) takes the first, answers, and reads again: the second sits decrypted in the
/// session while the socket has nothing more, and must be answered without the client
/// sending anything else (an idle wait in poll(2) alone would wait for ever).
#[test]
fn two_requests_in_one_record_are_both_answered() {
    let pki = Pki::new();
    let mut b = tls_builder(&pki, Flavor::pool());
    b.read_buffer(4);
    let server = Running::start(&mut b, lines);
    let out = py(
        r#"
s = connect(sys.argv[1], sys.argv[2])
s.sendall(b'one\ntwo\n')  # one SSL_write: one record
got = b''
while got.count(b'\n') < 2:
    d = s.recv(100)
    if not d:
        break
    got += d
say(got.decode().replace('\n', ' ').strip())
"#,
        &[&server.target(), &pki.p("ca.pem")],
    );
    assert_eq!(out, "ONE TWO\n");
    server.stop();
}

/// A client script: `argv[3]` random bytes to the server in 64 KiB round trips, each echoed
/// whole before the next is sent; says how many came back and whether their SHA-256 is the
/// one sent.
const ROUND_TRIPS: &str = r#"
s = connect(sys.argv[1], sys.argv[2])
data = os.urandom(int(sys.argv[3]))
back = hashlib.sha256()
got = 0
for i in range(0, len(data), 65536):
    chunk = data[i:i + 65536]
    s.sendall(chunk)
    want = got + len(chunk)
    while got < want:
        d = s.recv(65536)
        if not d:
            raise SystemExit('early EOF at %d' % got)
        back.update(d)
        got += len(d)
say(got, back.hexdigest() == hashlib.sha256(data).hexdigest())
s.unwrap()
"#;

/// 16 MiB go through the echo handler and come back intact (in 64 KiB round trips).
#[test]
fn sixteen_mib_round_trip() {
    let pki = Pki::new();
    let server = Running::start(&mut tls_builder(&pki, Flavor::pool()), echo);
    let out = py(
        ROUND_TRIPS,
        &[&server.target(), &pki.p("ca.pem"), "16777216"],
    );
    assert_eq!(out, "16777216 True\n");
    let s = server.wait_stats("served", |s| s.completed == 1);
    assert_eq!(s.handler_errors, 0, "{s:?}");
    server.stop();
}

/// `recv` over TLS: 4 MiB through a `serve_requests` echo in 64 KiB round trips come back
/// intact. Decrypted records fill the read buffer, so most of what `recv` returns is lent
/// in the buffer itself rather than copied.
#[test]
fn recv_over_tls_returns_what_arrived_intact() {
    let pki = Pki::new();
    let (addr, handle, t) = start_requests(
        &mut tls_builder(&pki, Flavor::pool()),
        |req: &mut StreamRequest| {
            let data = req.recv()?;
            if data.is_empty() {
                return Ok(socketserver::Next::Close);
            }
            req.write_all(&data)?;
            Ok(socketserver::Next::Continue)
        },
    );
    let out = py(
        ROUND_TRIPS,
        &[&addr.to_string(), &pki.p("ca.pem"), "4194304"],
    );
    assert_eq!(out, "4194304 True\n");
    handle.shutdown();
    util::within(TIMEOUT, move || t.join().unwrap().unwrap());
}

// ---- client certificates --------------------------------------------------------------------

/// With a client CA, a client presenting a certificate from it is served (and the handler
/// sees the certificate); one with no certificate, or one from another CA, is refused at
/// the handshake and counted.
#[test]
fn client_certificates_accepted_and_refused() {
    let pki = Pki::new();
    let mut b = TcpServer::builder();
    b.flavor(Flavor::pool())
        .tls(Arc::new(pki.config(Some("ca.pem")).0));
    let server = Running::start(&mut b, lines);
    let target = server.target();
    let ca = pki.p("ca.pem");

    let out = py(
        "s = connect(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])\ns.sendall(b'info\\n'); say(line(s).strip())",
        &[&target, &ca, &pki.p("client.pem"), &pki.p("client.key")],
    );
    // The chain the client sends: its certificate, and perhaps the CA's (OpenSSL adds it).
    assert!(
        out.starts_with("TLSv1.3 sni=localhost alpn=- certs=") && !out.contains("certs=0"),
        "{out}"
    );

    // TLS 1.3: the client learns of the refusal when it reads.
    py_fails(
        "s = connect(sys.argv[1], sys.argv[2])\ns.sendall(b'info\\n')\nif not line(s): raise EOFError('closed')",
        &[&target, &ca],
    );
    server.wait_stats("no certificate", |s| s.tls_handshake_failures == 1);
    py_fails(
        "s = connect(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])\ns.sendall(b'info\\n')\nif not line(s): raise EOFError('closed')",
        &[&target, &ca, &pki.p("other_client.pem"), &pki.p("other_client.key")],
    );
    let s = server.wait_stats("foreign certificate", |s| s.tls_handshake_failures == 2);
    assert_eq!(
        s.completed, 1,
        "only the good client reached the handler: {s:?}"
    );
    server.stop();
}

// ---- shutdown and reload --------------------------------------------------------------------

/// Clients idle between requests at shutdown get the server's close_notify and EOF at once
/// (the grace period is long: only the idle wait's wake-up can end them in time), and
/// their Python sockets, which treat an EOF without close_notify as an error here, see a
/// clean end.
#[test]
fn shutdown_ends_idle_tls_clients_with_close_notify() {
    let pki = Pki::new();
    let mut b = tls_builder(&pki, Flavor::pool());
    b.grace_period(Duration::from_secs(60));
    let server = Running::start(&mut b, lines);
    let script = format!(
        "{PY}\n{}",
        r#"
s = connect(sys.argv[1], sys.argv[2], ragged=False)
s.sendall(b'hi\n'); say(line(s).strip())
say('ready')
say('clean end' if s.recv(100) == b'' else 'data')
"#
    );
    let clients: Vec<_> = (0..2)
        .map(|_| PyProcess::spawn(&script, &[&server.target(), &pki.p("ca.pem")]))
        .collect();
    let mut clients: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            assert_eq!(c.line(), "HI");
            assert_eq!(c.line(), "ready");
            c
        })
        .collect();
    server.stop();
    for c in &mut clients {
        assert_eq!(c.line(), "clean end");
        c.wait_success();
    }
}

/// A certificate reloaded from its files is presented to the next connection; a
/// connection opened before keeps working; a reload that fails (a key that does not match
/// the certificate) changes nothing.
#[test]
fn reloaded_certificate_is_seen_by_the_next_connection() {
    let pki = Pki::new();
    let (config, cert) = pki.config(None);
    let mut b = TcpServer::builder();
    b.flavor(Flavor::pool()).tls(Arc::new(config));
    let server = Running::start(&mut b, lines);
    let who = r#"
s = connect(sys.argv[1], sys.argv[2])
say(dict(x[0] for x in s.getpeercert()['subject'])['commonName'])
"#;
    let target = server.target();
    let ca = pki.p("ca.pem");
    assert_eq!(py(who, &[&target, &ca]), "first\n");

    let mut before = PyProcess::spawn(
        &format!(
            "{PY}\n{}",
            r#"
s = connect(sys.argv[1], sys.argv[2])
say(dict(x[0] for x in s.getpeercert()['subject'])['commonName'])
sys.stdin.readline()
s.sendall(b'still here\n'); say(line(s).strip())
"#
        ),
        &[&target, &ca],
    );
    assert_eq!(before.line(), "first");

    pki.copy("second.pem", "server.pem");
    pki.copy("second.key", "server.key");
    cert.reload().unwrap();
    assert_eq!(py(who, &[&target, &ca]), "second\n");
    before.send_line("go");
    assert_eq!(before.line(), "STILL HERE");
    before.wait_success();

    pki.copy("client.key", "server.key");
    let err = cert.reload().unwrap_err();
    assert!(err.to_string().contains("server.pem"), "{err}");
    assert_eq!(py(who, &[&target, &ca]), "second\n");
    server.stop();
}

// ---- the examples ---------------------------------------------------------------------------

/// The echo example in fork mode over TLS (the handshake runs in the forked child): two
/// clients connected at once, each echoed; then `hello` in fork mode with
/// `openssl s_client`; then `upper` with client certificates required.
#[test]
fn examples_in_fork_mode_over_tls() {
    util::build_examples();
    let pki = Pki::new();
    let (cert, key, ca) = (pki.p("server.pem"), pki.p("server.key"), pki.p("ca.pem"));
    let tls_args = ["--tls-cert", &cert, "--tls-key", &key];
    let base = ["--addr", "127.0.0.1:0", "--mode", "fork"];
    let args: Vec<&str> = base.iter().chain(&tls_args).copied().collect();

    // The default mode (the pool, where echo serves one request at a time) over TLS.
    let default_mode: Vec<&str> = ["--addr", "127.0.0.1:0"]
        .iter()
        .chain(&tls_args)
        .copied()
        .collect();
    let pooled = ExampleServer::start("echo", &default_mode);
    let out = py(
        "s = connect(sys.argv[1], sys.argv[2])\ns.sendall(b'pooled\\n'); say(line(s).strip())",
        &[&pooled.addr, &ca],
    );
    assert_eq!(out, "pooled\n");
    drop(pooled);

    // whoami adds the TLS facts to its line.
    let whoami = ExampleServer::start("whoami", &default_mode);
    let out = py(
        "s = connect(sys.argv[1], sys.argv[2])\nimport json\nsay(json.dumps(json.loads(line(s))['tls'], sort_keys=True))",
        &[&whoami.addr, &ca],
    );
    assert_eq!(
        out,
        "{\"alpn\": null, \"sni\": \"localhost\", \"version\": \"TLSv1.3\"}\n"
    );
    drop(whoami);

    let echo = ExampleServer::start("echo", &args);
    let out = py(
        r#"
a = connect(sys.argv[1], sys.argv[2])
b = connect(sys.argv[1], sys.argv[2])
a.sendall(b'from a\n'); b.sendall(b'from b\n')
say(line(b).strip(), '/', line(a).strip())
"#,
        &[&echo.addr, &ca],
    );
    assert_eq!(out, "from b / from a\n");

    let hello = ExampleServer::start("hello", &args);
    let out = s_client(&hello.addr, &ca, b"exit\n");
    assert!(out.contains("Welcome!"), "{out}");
    drop(hello);

    let mtls: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--tls-client-ca", &ca])
        .collect();
    let upper = ExampleServer::start("upper", &mtls);
    let out = py(
        "s = connect(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])\ns.sendall(b'abc'); say(s.recv(10).decode())",
        &[&upper.addr, &ca, &pki.p("client.pem"), &pki.p("client.key")],
    );
    assert_eq!(out, "ABC\n");
    py_fails(
        "s = connect(sys.argv[1], sys.argv[2])\ns.sendall(b'abc')\nif not s.recv(10): raise EOFError('closed')",
        &[&upper.addr, &ca],
    );
    drop(upper);
    drop(echo);
}

/// `remote_cmd` over TLS with its client's `--tls-ca`: the output arrives whole; a client
/// expecting another server name refuses the certificate.
#[test]
fn remote_cmd_and_its_client_over_tls() {
    util::build_examples();
    let pki = Pki::new();
    let (cert, key, ca) = (pki.p("server.pem"), pki.p("server.key"), pki.p("ca.pem"));
    let server = ExampleServer::start(
        "remote_cmd",
        &[
            "--addr",
            "127.0.0.1:0",
            "--allow",
            "echo",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let client = |extra: &[&str]| {
        let mut cmd = Command::new(util::example_path("remote_cmd_client"));
        cmd.args(["--addr", &server.addr, "--timeout", "10", "--tls-ca", &ca])
            .args(extra)
            .args(["echo", "hello over tls"]);
        bounded_output(cmd)
    };
    let out = client(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over tls\n");
    let out = client(&["--tls-name", "elsewhere.example"]);
    assert!(
        !out.status.success(),
        "a wrong server name must fail: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotValidForName"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to its end (killed by its pid after `TIMEOUT`).
#[track_caller]
fn bounded_output(mut cmd: Command) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {TIMEOUT:?}");
        }
    }
}

/// Without `--tls-key`, `--tls-cert` is refused by the command line parser; a UDP example
/// refuses TLS rather than serve plain datagrams.
#[test]
fn example_tls_options_go_together() {
    util::build_examples();
    let pki = Pki::new();
    let (cert, key) = (pki.p("server.pem"), pki.p("server.key"));
    let mut cmd = Command::new(util::example_path("echo_udp"));
    cmd.args([
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let out = bounded_output(cmd);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS is for stream servers"), "{stderr}");

    let out = Command::new(util::example_path("echo"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert", "x.pem"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- a Python client as a process the test talks to ----------------------------------------

/// A Python script run as a child process: its stdout read line by line (each read
/// bounded by `TIMEOUT`), its stdin written; killed by its pid on drop.
struct PyProcess {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl PyProcess {
    fn spawn(script: &str, args: &[&str]) -> PyProcess {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PyProcess { child, lines }
    }

    #[track_caller]
    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(TIMEOUT)
            .expect("a line from the python client")
    }

    fn send_line(&mut self, s: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{s}").unwrap();
        stdin.flush().unwrap();
    }

    #[track_caller]
    fn wait_success(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "python client exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "python client did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
    }
}

/// `serve_requests` over TLS: clients that connect and say nothing wait for their
/// ClientHello in the event set, not on a worker. With two warm workers, 300 silent
/// connections once grew the pool by a worker every 50 ms (each silent client held one in
/// its handshake) and a real client was answered after 15 s; now the pool stays at its warm
/// workers (plus the watcher a lingering client may start), a real client is answered, and
/// the silent ones are cut at the handshake deadline and counted.
#[test]
fn silent_tls_clients_hold_no_worker_under_serve_requests() {
    let pki = Pki::new();
    let mut b = tls_builder(&pki, Flavor::pool().workers(2));
    b.tls_handshake_timeout(Duration::from_secs(2));
    let server = b_serve_requests(&mut b);
    let silent: Vec<TcpStream> = (0..300).map(|_| util::tcp_client(server.0)).collect();
    util::wait_for(
        "the silent clients accepted",
        || server.1.stats().accepted,
        |n| *n >= 300,
    );
    let (mut conn, mut sock) = rustls_client(&pki, server.0);
    assert_eq!(tls_call(&mut conn, &mut sock, "hello\n"), "HELLO\n");
    let threads = server.1.stats().threads;
    assert!(
        threads <= 4,
        "{threads} threads for 300 silent clients and 2 warm workers"
    );
    // Cut at the deadline, each counted as a failed handshake.
    for s in &silent {
        assert!(closed_within(s, TIMEOUT), "a silent client was never cut");
    }
    util::wait_for(
        "300 handshake failures counted",
        || server.1.stats().tls_handshake_failures,
        |n| *n >= 300,
    );
    server.1.shutdown();
    let t = server.2;
    util::within(TIMEOUT, move || t.join().unwrap().unwrap());
}

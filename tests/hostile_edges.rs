//! Hostile edges outside the engine (issue 20): clients that never read their replies,
//! peers that vanish without closing, clients that go away before a request (health
//! checks), and a message body skipped after the handler. Each test is named after the
//! bug it caught.

mod deploy;
mod util;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{Next, ShutdownHandle, Stats, StreamRequest, TcpServer};
use util::TIMEOUT;

/// Waits (bounded) until `ok` holds of the server's counters; returns them.
#[track_caller]
fn wait_stats(handle: &ShutdownHandle, what: &str, ok: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = handle.stats();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reply large enough to fill every socket buffer between a worker and a client that
/// never reads.
const BIG_REPLY: usize = 32 << 20;

/// Regression (issue 20, item 5): `request_timeout` ended when the reply began and no
/// write timeout was set, so a client that sent a request and never read the reply held
/// its worker for ever. The request timeout now bounds each send of the reply too (when
/// no write timeout is set), counted in `request_timeouts`, under `serve` and
/// `serve_requests` alike.
#[test]
fn a_reply_the_client_never_reads_ends_at_the_request_timeout() {
    for requests in [false, true] {
        let mut b = TcpServer::builder();
        b.request_timeout(Some(Duration::from_millis(500)))
            .send_buffer_size(64 * 1024);
        let server = b.bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.shutdown_handle();
        let (tx, rx) = mpsc::channel();
        let serving = thread::spawn(move || {
            let reply = move |req: &mut StreamRequest| {
                let mut line = String::new();
                req.read_line(&mut line)?;
                let r = req
                    .write_all(&vec![b'x'; BIG_REPLY])
                    .and_then(|()| req.flush());
                let _ = tx.send(r.as_ref().map_err(|e| e.kind()).copied());
                r
            };
            if requests {
                let tx_reply = reply;
                server.serve_requests(move |req: &mut StreamRequest| {
                    tx_reply(req).map(|()| Next::Close)
                })
            } else {
                server.serve(reply)
            }
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"give me everything\n").unwrap();
        // Never read. The handler's write must fail, in bounded time, with TimedOut.
        let got = rx
            .recv_timeout(TIMEOUT)
            .expect("the reply blocked past every bound");
        assert_eq!(
            got,
            Err(std::io::ErrorKind::TimedOut),
            "requests={requests}"
        );
        let s = wait_stats(&handle, "counted as a request timeout", |s| {
            s.request_timeouts == 1 && s.active == 0
        });
        assert_eq!(s.handler_errors, 0, "{s:?}");
        handle.shutdown();
        serving.join().unwrap().unwrap();
        drop(c);
    }
}

/// Regression (issue 20, item 6): nothing set TCP keepalive, so a peer that vanished
/// without closing stayed connected until `max_connections`. `tcp_keepalive` sets it on
/// every accepted connection, with its timings, in both serving modes.
#[test]
fn tcp_keepalive_is_set_on_every_connection() {
    for requests in [false, true] {
        let server = TcpServer::builder()
            .tcp_keepalive(Some(Duration::from_secs(45)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.shutdown_handle();
        let report = |req: &mut StreamRequest| -> std::io::Result<()> {
            let sock = socket2::SockRef::from(req.stream());
            let line = format!(
                "{} {:?} {:?}\n",
                sock.keepalive()?,
                sock.tcp_keepalive_time()?,
                sock.tcp_keepalive_interval()?
            );
            req.write_all(line.as_bytes())
        };
        let serving = thread::spawn(move || {
            if requests {
                server.serve_requests(move |req: &mut StreamRequest| {
                    report(req).map(|()| Next::Close)
                })
            } else {
                server.serve(report)
            }
        });
        let mut c = util::tcp_client(addr);
        c.write_all(b"?\n").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "true 45s 15s\n", "requests={requests}");
        handle.shutdown();
        serving.join().unwrap().unwrap();
    }
    let e = TcpServer::builder()
        .tcp_keepalive(Some(Duration::ZERO))
        .bind("127.0.0.1:0")
        .expect_err("a zero keepalive is refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// Regression (issue 20, items 5 and 6): the examples set no write timeout, no idle timeout
/// and no keepalive, so clients that never read (or vanished) held them for ever. Each TCP
/// example now starts with a write timeout and the idle timeout and keepalive of its
/// protocol, and says so on its first log line.
#[test]
fn examples_start_with_a_reply_deadline_an_idle_timeout_and_keepalive() {
    util::build_examples();
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap();
    for (name, extra, idle) in [
        ("echo", &[][..], "300s"),
        ("upper", &[], "300s"),
        ("kv", &[], "300s"),
        ("json_rpc", &[], "300s"),
        ("framed_echo", &[], "300s"),
        ("hello", &[], "30s"),
        ("whoami", &[], "10s"),
        ("remote_cmd", &[], "600s"),
        ("chat", &[], "3600s"),
        ("ftp_server", &["--root", root_arg][..], "300s"),
    ] {
        let mut args = vec!["--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (p, _addr) = deploy::Proc::example(name, &args, &[]);
        let want = format!(
            "bounds: request timeout 30s, write timeout 15s, idle timeout {idle}, TCP keepalive 60s"
        );
        // The log line was written before `listening on`; its reader thread may lag.
        let deadline = Instant::now() + TIMEOUT;
        while !p.stderr().contains(&want) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(p.stderr().contains(&want), "{name}: {}", p.stderr());
    }
}

/// The examples' `--write-timeout` ends a connection whose client sends and never reads
/// (echo's replies fill the buffers, the write blocks, the deadline closes it), while
/// `--idle-timeout` ends one that sends nothing.
#[test]
fn examples_end_clients_that_never_read_or_never_ask() {
    util::build_examples();
    let (_p, addr) = deploy::Proc::example(
        "echo",
        &[
            "--addr",
            "127.0.0.1:0",
            "--write-timeout",
            "0.5",
            "--idle-timeout",
            "0.5",
        ],
        &[],
    );
    // Never reads: the server's write blocks, times out, and the server closes. Our writes
    // then fail with a reset or a broken pipe, not with our own timeout.
    let mut c = util::tcp_client(addr);
    let chunk = vec![b'x'; 64 * 1024];
    let mut outcome = None;
    for _ in 0..4096 {
        if let Err(e) = c.write_all(&chunk) {
            outcome = Some(e.kind());
            break;
        }
    }
    assert!(
        matches!(
            outcome,
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
        ),
        "the server should have closed the connection: {outcome:?}"
    );
    // Never asks: closed at the idle timeout, well within our read timeout.
    let mut idle = util::tcp_client(addr);
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).expect("EOF, not our timeout"), 0);
    // And a well-behaved client is served.
    let mut good = util::tcp_client(addr);
    good.write_all(b"hi\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(good).read_line(&mut line).unwrap();
    assert_eq!(line, "hi\n");
}

/// A health check as HAProxy's `check` does it: connect, then close (`reset`: with an RST)
/// before any byte.
fn health_check(addr: std::net::SocketAddr, reset: bool) {
    let c = util::tcp_client(addr);
    if reset {
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    drop(c);
}

/// Regression (issue 20, item 8): a client that went away (reset, EOF before a request:
/// a TCP health check) was counted in `Stats::handler_errors` under `serve_requests`, one
/// "error" per check. Now it is counted in `Stats::disconnects`, under `serve` and
/// `serve_requests` alike, and a real handler error still counts as one.
#[test]
fn clients_that_go_away_are_disconnects_not_handler_errors() {
    // A framed protocol's handler: `read_exact` of a 4-byte header fails with
    // UnexpectedEof at EOF and ConnectionReset at a reset; "boom" is a real error.
    fn framed(req: &mut StreamRequest) -> std::io::Result<Next> {
        let mut head = [0u8; 4];
        req.read_exact(&mut head)?;
        if &head == b"boom" {
            return Err(std::io::Error::other("the handler failed"));
        }
        req.write_all(&head)?;
        Ok(Next::Continue)
    }
    for requests in [false, true] {
        let server = TcpServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.shutdown_handle();
        let serving = thread::spawn(move || {
            if requests {
                server.serve_requests(framed)
            } else {
                server.serve(|req: &mut StreamRequest| loop {
                    framed(req)?;
                })
            }
        });
        for i in 0..6 {
            health_check(addr, i % 2 == 1);
        }
        let mut bad = util::tcp_client(addr);
        bad.write_all(b"boom").unwrap();
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        let s = wait_stats(&handle, "every connection ended", |s| {
            s.accepted == 7 && s.active == 0 && s.disconnects + s.handler_errors >= 7
        });
        assert_eq!(s.disconnects, 6, "requests={requests}: {s:?}");
        assert_eq!(s.handler_errors, 1, "requests={requests}: {s:?}");
        handle.shutdown();
        serving.join().unwrap().unwrap();
    }
}

/// A `per_message` server whose handler answers each header without reading the body.
fn unread_body_server() -> (
    std::net::SocketAddr,
    ShutdownHandle,
    thread::JoinHandle<std::io::Result<()>>,
) {
    use socketserver::framing::{self, Body, MessageCodec};
    let codec = MessageCodec::new();
    let server = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || {
        server.serve_requests(framing::per_message(
            codec,
            move |header: serde_json::Value, body: &mut Body<'_, StreamRequest>| {
                codec.write_json_header(body.get_mut(), &serde_json::json!({"seen": header["n"]}))
            },
        ))
    });
    (addr, handle, serving)
}

/// Sends a header declaring `declared` body bytes, then `sent` of them.
fn send_message(c: &mut TcpStream, n: u64, declared: u64, sent: usize) {
    let header = serde_json::to_vec(&serde_json::json!({"n": n, "body_size": declared})).unwrap();
    c.write_all(&(header.len() as u32).to_be_bytes()).unwrap();
    c.write_all(&header).unwrap();
    c.write_all(&vec![b'b'; sent]).unwrap();
}

/// Reads one reply header: its `seen` field.
fn read_seen(c: &mut TcpStream) -> u64 {
    let h: serde_json::Value = socketserver::framing::read_json_header(c)
        .unwrap()
        .expect("a reply");
    h["seen"].as_u64().unwrap()
}

/// Regression (issue 20, item 7): after the handler, `per_message` skipped the unread body
/// with no bound: a header declaring 2^62 bytes, trickled, held the worker for ever. Now a
/// large rest closes the connection at once, a small one is skipped within a deadline, and
/// a small rest that has arrived is skipped so the next message is served.
#[test]
fn per_message_skips_an_unread_body_within_bounds() {
    let (addr, handle, serving) = unread_body_server();
    // A small body, all sent: skipped, the connection goes on.
    let mut c = util::tcp_client(addr);
    send_message(&mut c, 1, 1000, 1000);
    assert_eq!(read_seen(&mut c), 1);
    send_message(&mut c, 2, 0, 0);
    assert_eq!(read_seen(&mut c), 2);
    // A body of 2^62 bytes: the connection ends after the reply, not after the body.
    let mut huge = util::tcp_client(addr);
    send_message(&mut huge, 3, 1 << 62, 10);
    assert_eq!(read_seen(&mut huge), 3);
    let mut rest = Vec::new();
    huge.read_to_end(&mut rest)
        .expect("EOF after the reply, not our timeout");
    // A small body that never arrives: ended by the skip's deadline, counted.
    let mut stalled = util::tcp_client(addr);
    send_message(&mut stalled, 4, 1000, 10);
    assert_eq!(read_seen(&mut stalled), 4);
    stalled
        .read_to_end(&mut rest)
        .expect("EOF at the skip deadline");
    wait_stats(&handle, "the stalled skip is a request timeout", |s| {
        s.request_timeouts == 1
    });
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

/// Regression (issue 20, item 9): `remote_cmd --timeout inf` and `udp_chat --expiry inf`
/// panicked in `Duration::from_secs_f64`. Every seconds option now refuses a value that is
/// not a finite number of seconds with a clear argument error (clap's exit status 2).
#[test]
fn seconds_options_refuse_inf_with_an_argument_error() {
    util::build_examples();
    for (name, option) in [
        ("remote_cmd", "--timeout"),
        ("udp_chat", "--expiry"),
        ("remote_cmd_client", "--timeout"),
        ("echo", "--write-timeout"),
        ("echo", "--idle-timeout"),
        ("echo", "--keepalive"),
    ] {
        for bad in ["inf", "-1", "NaN", "soon"] {
            let out = std::process::Command::new(util::example_path(name))
                .args(["--addr", "127.0.0.1:0", &format!("{option}={bad}")])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {option} {bad}: {err}");
            assert!(
                err.contains("seconds") && !err.contains("panicked"),
                "{name} {option} {bad}: {err}"
            );
        }
    }
}

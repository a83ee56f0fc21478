//! Server push through the library (issue 22): a pusher on a Unix stream connection, the
//! error of a push to a closed connection, the drop-message policy and its counter, and
//! `pending()` seeing the plaintext rustls decrypted. Real sockets; every read has a
//! timeout. (The pubsub and chat examples' tests cover the rest with Python clients.)

#[cfg(feature = "tls")]
#[path = "tls_pki/mod.rs"]
mod tls_pki;
mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;

use socketserver::push::{Overflow, PushLimits, Pusher};
use socketserver::{Next, ShutdownHandle, StreamRequest, TcpServer, UnixStreamServer};
use util::TIMEOUT;

type Slot = Arc<Mutex<Option<Pusher>>>;

/// A handler that answers `SUB` by keeping its pusher in `slot` (with `limits`) and `OK`,
/// and anything else with `ECHO <line>`.
fn keeper(
    slot: Slot,
    limits: PushLimits,
) -> impl FnMut(&mut StreamRequest) -> io::Result<Next> + Clone + Send + 'static {
    move |req: &mut StreamRequest| {
        let mut line = String::new();
        if req.read_line(&mut line)? == 0 {
            return Ok(Next::Close);
        }
        if line == "SUB\n" {
            let p = req.pusher();
            p.set_limits(limits);
            *slot.lock().unwrap() = Some(p);
            req.write_all(b"OK\n")?;
        } else {
            write!(req, "ECHO {line}")?;
        }
        Ok(Next::Continue)
    }
}

fn pusher_of(slot: &Slot) -> Pusher {
    slot.lock().unwrap().clone().expect("subscribed")
}

fn stop(handle: ShutdownHandle, serving: thread::JoinHandle<io::Result<()>>) {
    handle.shutdown();
    util::within(TIMEOUT, move || serving.join())
        .expect("serve panicked")
        .expect("serve failed");
}

#[test]
fn a_unix_stream_connection_is_pushed_to_and_a_closed_one_says_so() {
    let dir = util::TempPath::new("push.sock");
    let server = UnixStreamServer::bind(dir.path()).unwrap();
    let handle = server.shutdown_handle();
    let slot = Slot::default();
    let handler = keeper(Arc::clone(&slot), PushLimits::default());
    let serving = thread::spawn(move || server.serve_requests(handler));

    let c = std::os::unix::net::UnixStream::connect(dir.path()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    w.write_all(b"SUB\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "OK\n");

    // From another thread, while the connection waits for its next request.
    let p = pusher_of(&slot);
    let from = thread::spawn({
        let p = p.clone();
        move || (0..100).try_for_each(|i| p.push(format!("push {i}\n").as_bytes()))
    });
    from.join().unwrap().unwrap();
    for i in 0..100 {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, format!("push {i}\n"));
    }
    w.write_all(b"hi\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ECHO hi\n");

    // The client leaves: the server closes its side, and pushes fail from then on.
    drop((r, w));
    util::wait_until("the pusher sees the close", || p.is_closed());
    let err = p.push(b"late\n").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    stop(handle, serving);
}

#[test]
fn the_drop_message_policy_drops_what_does_not_fit_counts_it_and_keeps_the_connection() {
    let server = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let slot = Slot::default();
    let limits = PushLimits::default()
        .max_backlog(64 * 1024)
        .overflow(Overflow::DropMessage);
    let serving = thread::spawn({
        let handler = keeper(Arc::clone(&slot), limits);
        move || server.serve_requests(handler)
    });

    let mut c = util::tcp_client(addr);
    c.write_all(b"SUB\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"OK\n");
    // 20 MB at a client that does not read: the kernel's buffers fill, then 64 KiB wait,
    // and the rest is dropped, each push returning at once.
    let p = pusher_of(&slot);
    let line = format!("{}\n", "x".repeat(999));
    let (mut queued, mut dropped) = (0usize, 0usize);
    for _ in 0..20_000 {
        match p.push(line.as_bytes()) {
            Ok(()) => queued += 1,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                dropped += 1;
            }
        }
    }
    assert!(
        dropped > 0 && queued > 0,
        "queued {queued}, dropped {dropped}"
    );
    assert!(!p.is_closed());
    assert!(p.backlog() <= 64 * 1024, "{}", p.backlog());
    assert_eq!(handle.stats().push_dropped, dropped as u64);

    // The client reads what was queued, whole lines, then is served as before.
    let mut got = vec![0u8; queued * line.len()];
    c.read_exact(&mut got).unwrap();
    assert!(got.chunks(line.len()).all(|l| l == line.as_bytes()));
    c.write_all(b"still\n").unwrap();
    assert_eq!(
        util::read_until(&mut c, |g| g.ends_with(b"\n")),
        b"ECHO still\n"
    );
    stop(handle, serving);
}

/// Two lines in one TLS record: after the handler read the first, the second is decrypted
/// in the session, not in the socket; `pending()` counts it.
#[cfg(feature = "tls")]
#[test]
fn pending_counts_the_plaintext_rustls_decrypted() {
    let pki = tls_pki::Pki::new();
    let server = TcpServer::builder()
        .tls_pem(pki.path("server.pem"), pki.path("server.key"))
        .unwrap()
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
            let buffered = req.buffer().len();
            let pending = req.pending();
            writeln!(req, "{} buffered {buffered} pending {pending}", line.trim())?;
            Ok(Next::Continue)
        })
    });
    let script = r#"
import socket, ssl, sys
host, port = sys.argv[1].rsplit(':', 1)
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10),
                    server_hostname='localhost')
s.sendall(b'first\nsecond!\n')          # one record
data = b''
while data.count(b'\n') < 2:
    d = s.recv(4096)
    if not d:
        break
    data += d
print(data.decode(), end='')
"#;
    let out = util::python(script, &[&addr.to_string(), &pki.p("ca.pem")]);
    let first = out.lines().next().unwrap_or_default();
    // The second line (8 bytes) waits: in the read buffer or still in the session.
    let (buffered, pending) = {
        let w: Vec<&str> = first.split(' ').collect();
        assert_eq!(w[0], "first", "{out}");
        (
            w[2].parse::<usize>().unwrap(),
            w[4].parse::<usize>().unwrap(),
        )
    };
    assert_eq!(pending, 8, "{out}");
    assert!(buffered <= pending, "{out}");
    assert!(out.contains("second! buffered 0 pending 0"), "{out}");
    stop(handle, serving);
}

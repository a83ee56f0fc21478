//! Tests that read or change the process's descriptor table, in their own test binary and
//! one at a time, so that no other test's sockets disturb the counts.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use socketserver::{Flavor, StreamRequest, TcpServer, UdpServer, UnixStreamServer};
use util::TIMEOUT;

/// test_tcpserver_bind_leak (bpo-22435): 1024 failed binds leak no descriptor, for every
/// transport (the Unix probe of a live server included).
#[test]
fn failed_binds_leak_no_descriptor() {
    let _g = util::serial();
    let tcp = TcpServer::bind("127.0.0.1:0").unwrap();
    let taken = tcp.local_addr().unwrap();
    let udp = UdpServer::bind("127.0.0.1:0").unwrap();
    let taken_udp = udp.local_addr().unwrap();
    let tmp = util::TempPath::new("b");
    let unix = UnixStreamServer::bind(tmp.path()).unwrap();

    let before = util::open_fds();
    for _ in 0..1024 {
        let e = TcpServer::bind(taken).expect_err("bound a port in use");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(UdpServer::bind(taken_udp).is_err());
        assert!(UnixStreamServer::bind(tmp.path()).is_err());
        // 192.0.2.1 (TEST-NET-1) is never a local address: EADDRNOTAVAIL at bind, no traffic.
        assert!(TcpServer::bind("192.0.2.1:0").is_err());
    }
    assert_eq!(
        util::open_fds(),
        before,
        "descriptors leaked by failed binds"
    );
    drop((tcp, udp, unix));
}

/// Sets this process's soft RLIMIT_NOFILE with util-linux `prlimit` (on our own pid).
fn set_nofile_soft(soft: u64) {
    let hard = String::from_utf8(
        Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                "--nofile",
                "--raw",
                "--noheadings",
                "--output",
                "HARD",
            ])
            .output()
            .expect("prlimit")
            .stdout,
    )
    .unwrap();
    let hard = hard.trim();
    let ok = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .expect("prlimit")
        .success();
    assert!(ok, "prlimit failed");
}

/// Python's accept loop spins at 100% CPU on EMFILE (and tiny_http's dies). Ours backs
/// off (5 ms doubling to 1 s): few accept errors while out of descriptors, and it recovers
/// and serves the waiting clients once descriptors are free again.
#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    // The accept loop, and the pool whose workers accept for themselves (one back-off for
    // the whole pool).
    out_of_descriptors(Flavor::threading());
    out_of_descriptors(Flavor::pool().workers(4));
}

fn out_of_descriptors(flavor: Flavor) {
    let _g = util::serial();
    let server = TcpServer::builder()
        .flavor(flavor.clone())
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let join = thread::spawn(move || {
        server.serve(|req: &mut StreamRequest| {
            req.write_all(b"hi")?;
            io::copy(req, &mut io::sink()).map(drop)
        })
    });
    let original = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft_before: u64 = original
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    set_nofile_soft(util::open_fds() as u64 + 40);

    // Connect until the process is out of descriptors: the kernel completes the last
    // handshakes, but the server cannot accept them.
    let mut clients = Vec::new();
    for _ in 0..100 {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
    }
    util::wait_until("accept to run out of descriptors", || {
        handle.stats().accept_errors > 0
    });
    let first = handle.stats().accept_errors;
    // Over this 300 ms window, backing off allows at most ~7 attempts (5+10+...+160 ms); a
    // spinning loop would fail thousands of times.
    thread::sleep(Duration::from_millis(300));
    let during = handle.stats().accept_errors - first;
    assert!(
        during <= 10,
        "{flavor:?}: {during} accept errors in 300 ms: spinning"
    );

    // Free descriptors: the server recovers and serves every client still waiting.
    let connected = clients.len() as u64;
    let freed: Vec<TcpStream> = clients.drain(..clients.len() / 2).collect();
    drop(freed);
    set_nofile_soft(soft_before);
    util::wait_for(
        &format!("all {connected} clients accepted"),
        || handle.stats().accepted,
        |n| *n >= connected,
    );
    for c in &mut clients {
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut hi = [0u8; 2];
        c.read_exact(&mut hi).unwrap();
        assert_eq!(&hi, b"hi");
    }
    drop(clients);
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

/// `serve_requests` out of descriptors: the back-off does not sleep on the workers (a
/// worker asleep looked stuck, and the pool once grew from 6 to 25 threads while replies to
/// connected clients went from 0.1 ms to 95 ms). The pool keeps its warm workers (plus the
/// one a lingering client may start), accept errors stay few, a connected client is still
/// answered, and the waiting clients are served once descriptors are free.
#[test]
fn out_of_descriptors_serve_requests_keeps_its_workers() {
    let _g = util::serial();
    let server = TcpServer::builder()
        .flavor(Flavor::pool().workers(2).limit(64))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let join = thread::spawn(move || {
        server.serve_requests(|req: &mut StreamRequest| {
            let mut buf = [0u8; 64];
            let n = req.read(&mut buf)?;
            req.write_all(&buf[..n])?;
            Ok(if n == 0 {
                socketserver::Next::Close
            } else {
                socketserver::Next::Continue
            })
        })
    });
    let mut connected = util::tcp_client(addr);
    let echo = |c: &mut TcpStream| {
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    };
    echo(&mut connected);
    // The waiting clients are another process's (a Python script, started before the
    // limit is lowered: it inherits limits): their sockets do not take this process's
    // descriptors, so the server, not the clients, runs out.
    let script = r#"
import socket, sys
addr = (sys.argv[1], int(sys.argv[2]))
sys.stdin.readline()
socks = [socket.create_connection(addr, timeout=10) for _ in range(60)]
print(len(socks), flush=True)
sys.stdin.readline()
for s in socks:
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        chunk = s.recv(4 - len(got))
        if not chunk:
            break
        got += chunk
    assert got == b"ping", got
print("served", flush=True)
"#;
    let mut clients = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = io::BufReader::new(clients.stdout.take().unwrap());
    let mut stdin = clients.stdin.take().unwrap();
    // Set with setrlimit(2) itself (nix): the process about to run out of descriptors
    // could not spawn `prlimit` to restore the limit.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft_before, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, util::open_fds() as u64 + 20, hard).unwrap();
    stdin.write_all(b"connect\n").unwrap();
    let mut line = String::new();
    io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "60", "the clients connected");
    util::wait_until("accept to run out of descriptors", || {
        handle.stats().accept_errors > 0
    });
    let first = handle.stats().accept_errors;
    // A window of several back-offs (5+10+...+160 ms); sampled, bounded in count.
    let mut most_threads = 0;
    for _ in 0..30 {
        most_threads = most_threads.max(handle.stats().threads);
        echo(&mut connected);
        thread::sleep(Duration::from_millis(10));
    }
    let during = handle.stats().accept_errors - first;
    assert!(during <= 10, "{during} accept errors in 300 ms: spinning");
    assert!(
        most_threads <= 4,
        "{most_threads} threads for 2 warm workers while out of descriptors"
    );
    setrlimit(Resource::RLIMIT_NOFILE, soft_before, hard).unwrap();
    // Descriptors are free again: every waiting client is accepted and answered.
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "served");
    drop(stdin);
    assert!(util::within(TIMEOUT, move || clients.wait())
        .unwrap()
        .success());
    drop(connected);
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

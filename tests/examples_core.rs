//! The core examples (echo, upper, echo_udp, upper_udp) behave exactly as specified, in every
//! mode, and follow the examples' contract: `listening on ADDR` first, exit 0 on SIGINT or
//! SIGTERM with open clients seeing EOF. Each example runs as a child process stopped by pid.

mod util;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::Duration;

use util::{ExampleServer, TIMEOUT};

const MODES: [&str; 4] = ["pool", "single", "threading", "fork"];

fn start(name: &str, mode: &str) -> ExampleServer {
    ExampleServer::start(name, &["--addr", "127.0.0.1:0", "--mode", mode])
}

/// Reads exactly `n` bytes (with the client's timeout).
fn read_n(c: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    c.read_exact(&mut buf).expect("reply");
    buf
}

#[test]
fn echo_writes_back_every_byte_as_it_arrives() {
    for mode in MODES {
        let srv = start("echo", mode);
        let mut c = util::tcp_client(srv.socket_addr());
        // No newline, no flush: each chunk comes back on its own.
        c.write_all(b"hello").unwrap();
        assert_eq!(read_n(&mut c, 5), b"hello", "{mode}");
        c.write_all(&[0, 255, 10, 13]).unwrap();
        assert_eq!(read_n(&mut c, 4), [0, 255, 10, 13], "{mode}");
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut writer = c.try_clone().unwrap();
        let sent = big.clone();
        let t = std::thread::spawn(move || writer.write_all(&sent));
        assert_eq!(
            read_n(&mut c, big.len()),
            big,
            "{mode}: a megabyte echoed whole"
        );
        t.join().unwrap().unwrap();
    }
}

#[test]
fn upper_replies_each_chunk_upper_cased_at_once() {
    for mode in MODES {
        let srv = start("upper", mode);
        let mut c = util::tcp_client(srv.socket_addr());
        c.write_all(b"hello").unwrap();
        assert_eq!(read_n(&mut c, 5), b"HELLO", "{mode}");
        c.write_all("mixed Case 123 é\n".as_bytes()).unwrap();
        // ASCII only: the UTF-8 bytes of 'é' pass unchanged.
        assert_eq!(
            read_n(&mut c, 18),
            "MIXED CASE 123 é\n".as_bytes(),
            "{mode}"
        );
    }
}

/// The tutorial's client: `send` then `recv(1024)`, in a loop, from Python.
#[test]
fn upper_with_the_tutorials_python_client() {
    let srv = start("upper", "pool");
    let out = util::python(
        r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.settimeout(10)
client.connect((host, int(port)))
for msg in ["hello", "world", "socketserver"]:
    client.send(msg.encode("utf-8"))
    data = client.recv(1024)
    print(data.decode("utf-8"))
client.close()
"#,
        &[&srv.addr],
    );
    assert_eq!(out, "HELLO\nWORLD\nSOCKETSERVER\n");
}

fn udp_exchange(addr: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.send_to(data, addr).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, from) = s.recv_from(&mut buf).expect("reply datagram");
    assert_eq!(from, addr);
    buf.truncate(n);
    buf
}

#[test]
fn udp_examples_reply_one_datagram_per_datagram() {
    for mode in MODES {
        let echo = start("echo_udp", mode);
        let upper = start("upper_udp", mode);
        assert_eq!(
            udp_exchange(echo.socket_addr(), b"hello"),
            b"hello",
            "{mode}"
        );
        assert_eq!(
            udp_exchange(upper.socket_addr(), b"hello"),
            b"HELLO",
            "{mode}"
        );
        let big = vec![b'a'; 9000];
        assert_eq!(
            udp_exchange(upper.socket_addr(), &big),
            vec![b'A'; 9000],
            "{mode}"
        );
        assert_eq!(
            udp_exchange(echo.socket_addr(), b""),
            b"",
            "{mode}: empty datagram"
        );
    }
}

/// The UDP tutorial's Python client: `sendto` then `recvfrom(1024)`.
#[test]
fn udp_with_the_tutorials_python_client() {
    let srv = start("upper_udp", "pool");
    let out = util::python(
        r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
client = socket.socket(type=socket.SOCK_DGRAM)
client.settimeout(10)
client.sendto("你好 hello".encode("utf-8"), (host, int(port)))
data, addr = client.recvfrom(1024)
print(data.decode("utf-8"))
"#,
        &[&srv.addr],
    );
    assert_eq!(out, "你好 HELLO\n");
}

/// The contract: SIGTERM or SIGINT -> graceful exit 0 within the grace period, and a client
/// connected at that moment reads EOF.
#[test]
fn signals_end_the_examples_gracefully() {
    for (mode, signal) in [
        ("pool", "TERM"),
        ("single", "INT"),
        ("threading", "TERM"),
        ("fork", "INT"),
    ] {
        let mut srv = start("echo", mode);
        let mut c = util::tcp_client(srv.socket_addr());
        c.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut c, 4), b"ping");
        srv.signal(signal);
        let status = srv.wait_exit(Duration::from_secs(5) + TIMEOUT);
        assert!(status.success(), "{mode}/{signal}: exit status {status}");
        assert_eq!(util::read_to_end(&mut c), b"", "{mode}: EOF at exit");
    }
}

/// An address that cannot be bound is a clear error and a non-zero exit, not a panic.
#[test]
fn bind_failure_is_reported() {
    let srv = start("echo", "pool");
    let out = std::process::Command::new(util::example_path("echo"))
        .args(["--addr", &srv.addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("address"), "{stderr}");
}

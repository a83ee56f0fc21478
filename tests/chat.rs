//! The chat example's flow control (issue 11, defect 1): a reader that keeps reading is never
//! disconnected however fast others send, a sender waits for a full backlog, and only a
//! reader that takes no bytes for the stall timeout is dropped, on time, while the others
//! keep receiving every line in order. The example runs as a child process on a free
//! loopback port and is stopped with SIGTERM by its pid.

#[cfg(feature = "tls")]
#[path = "tls_pki/mod.rs"]
mod tls_pki;
mod util;

use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use util::chat::Chatter;
use util::{ExampleServer, TIMEOUT};

/// Starts `chat` on a free loopback port with `extra` options.
#[track_caller]
fn start(extra: &[&str]) -> ExampleServer {
    util::build_examples();
    let mut args = vec!["--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ExampleServer::start("chat", &args)
}

/// A TCP client whose receive buffer is 4 KiB (set before connecting, so the window stays
/// small): a reader that stops reading then stalls after little data.
fn small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect_timeout(&addr.into(), TIMEOUT).expect("connect");
    let s = TcpStream::from(s);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Line `i` of a burst: 1 000 bytes, numbered, so that a reader checks each one in place.
fn burst_line(i: usize) -> String {
    let head = format!("{i:08} ");
    let fill = (b'a' + (i % 26) as u8) as char;
    format!("{head}{}", fill.to_string().repeat(1000 - head.len()))
}

/// Sends lines `0..n` of the burst from `w`, as fast as the socket takes them, on a thread.
fn send_burst(w: &TcpStream, n: usize) -> thread::JoinHandle<()> {
    let w = w.try_clone().unwrap();
    thread::spawn(move || {
        let mut out = BufWriter::with_capacity(1 << 16, w);
        for i in 0..n {
            out.write_all(burst_line(i).as_bytes()).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
    })
}

/// Reads the burst of `n` lines from `sender` as `reader` sees it: every line, in order, with
/// `* NAME left` for `dropped` exactly once among them. Returns when that notice came.
#[track_caller]
fn read_burst(reader: &mut Chatter, sender: &str, n: usize, dropped: &str) -> Instant {
    let left = format!("* {dropped} left");
    let mut left_at = None;
    let mut i = 0;
    while i < n {
        let line = reader.line();
        if line == left {
            assert!(left_at.is_none(), "{left} twice");
            left_at = Some(Instant::now());
            continue;
        }
        assert_eq!(line, format!("{sender}: {}", burst_line(i)), "line {i}");
        i += 1;
    }
    match left_at {
        Some(t) => t,
        None => {
            reader.expect(&left);
            Instant::now()
        }
    }
}

/// The issue's scenario: carol never reads, alice sends 24 000 lines of 1 000 bytes (24 MB)
/// as fast as she can, dave reads everything. Dave is never disconnected and gets every
/// line in order; carol, who takes nothing, is the one dropped (after the stall timeout,
/// here 5 s: long enough that no scheduling hiccup of a loaded machine passes for a stall
/// of dave's); the room then goes on.
#[test]
fn chat_keeps_a_reader_that_reads_however_fast_others_send() {
    const LINES: usize = 24_000;
    let mut server = start(&["--stall-timeout", "5"]);
    let mut alice = Chatter::join(&server, "alice");
    let mut dave = Chatter::join(&server, "dave");
    alice.expect("* dave joined");
    let mut carol = Chatter::over(small_receive_buffer(server.socket_addr())).seat("carol");
    alice.expect("* carol joined");
    dave.expect("* carol joined");

    let sending = send_burst(&alice.w, LINES);
    read_burst(&mut dave, "alice", LINES, "carol");
    sending.join().expect("alice sent every line");
    alice.expect("* carol left");
    carol.drain_to_eof();

    // Dave is still there and the room goes on.
    dave.w.write_all(b"/who\nstill here\n").unwrap();
    dave.expect("* present: alice, dave");
    alice.expect("dave: still here");

    server.signal("TERM");
    assert!(server.wait_exit(TIMEOUT).success());
}

/// Carol stops reading while alice sends `lines` lines and dave reads them: carol is dropped
/// no sooner than the stall timeout (2 s) after the burst began, and well before 5 s more;
/// dave gets every line in order throughout, and alice and dave go on.
fn stalled_reader_scenario(extra: &[&str], lines: usize) {
    let mut args = vec!["--stall-timeout", "2"];
    args.extend_from_slice(extra);
    let server = start(&args);
    let mut alice = Chatter::join(&server, "alice");
    let mut dave = Chatter::join(&server, "dave");
    alice.expect("* dave joined");
    let mut carol = Chatter::over(small_receive_buffer(server.socket_addr())).seat("carol");
    alice.expect("* carol joined");
    dave.expect("* carol joined");

    // Nothing waits for carol before the burst: her own `/who` reply was read.
    let began = Instant::now();
    let sending = send_burst(&alice.w, lines);
    let left_at = read_burst(&mut dave, "alice", lines, "carol");
    sending.join().expect("alice sent every line");
    let after = left_at - began;
    assert!(
        after >= Duration::from_secs(2),
        "dropped before the stall timeout: {after:?}"
    );
    assert!(after < Duration::from_secs(7), "dropped late: {after:?}");
    alice.expect("* carol left");
    carol.drain_to_eof();

    alice.w.write_all(b"after\n").unwrap();
    dave.expect("alice: after");
}

/// The backlog is small (64 KiB): alice's lines wait for carol's room until she is found
/// stalled and dropped.
#[test]
fn chat_drops_a_stalled_reader_whose_backlog_is_full() {
    stalled_reader_scenario(&["--max-backlog", "65536"], 4000);
}

/// The backlog (4 MiB by default) never fills: carol's writer finds that her socket took
/// nothing for the stall timeout, and she is dropped without anyone waiting for her.
#[test]
fn chat_drops_a_stalled_reader_nobody_waits_for() {
    stalled_reader_scenario(&[], 3000);
}

/// Bad values of the new options are refused at start, with an error naming the option.
#[test]
fn chat_refuses_a_bad_stall_timeout() {
    util::build_examples();
    for bad in ["0", "-1", "1e9", "NaN"] {
        let child = std::process::Command::new(util::example_path("chat"))
            .args(["--addr", "127.0.0.1:0", &format!("--stall-timeout={bad}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn chat");
        let out = util::within(TIMEOUT, move || child.wait_with_output().expect("output"));
        assert!(!out.status.success(), "{bad}");
        assert!(out.stdout.is_empty(), "no listening line for {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("stall-timeout"), "{bad}: {err}");
    }
}

/// Chat over TLS (issue 22), with Python `ssl` clients: lines sent two to a TLS record are
/// each served (the second one waits decrypted in the session, not in the socket), lines
/// reach the others in both modes, and the shutdown notice comes before the end.
#[cfg(feature = "tls")]
#[test]
fn chat_over_tls_with_two_lines_in_one_record() {
    const SCRIPT: &str = r#"
import os, signal, socket, ssl, sys
host, port = sys.argv[1].rsplit(':', 1)
ctx = ssl.create_default_context(cafile=sys.argv[2])
def connect():
    s = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(s, server_hostname='localhost')
class C:
    def __init__(self):
        self.s, self.buf = connect(), b''
    def line(self):
        while b'\n' not in self.buf:
            d = self.s.recv(4096)
            if not d:
                return ''
            self.buf += d
        l, self.buf = self.buf.split(b'\n', 1)
        return l.decode()
def expect(got, want):
    if got != want:
        raise SystemExit(f'got {got!r}, want {want!r}')
alice, bob = C(), C()
alice.s.sendall(b'alice\n/who\n')                 # one record, two lines
expect(alice.line(), '* present: alice')
bob.s.sendall('bob\n/who\n'.encode())
expect(bob.line(), '* present: alice, bob')
expect(alice.line(), '* bob joined')
bob.s.sendall('hello\n\u4f60\u597d\n'.encode())
expect(alice.line(), 'bob: hello')
expect(alice.line(), 'bob: \u4f60\u597d')
os.kill(int(sys.argv[3]), signal.SIGTERM)
for c in (alice, bob):
    line = c.line()
    while line in ('* alice left', '* bob left'):   # the other one may go first
        line = c.line()
    expect(line, '* server shutting down')
    line = c.line()
    while line in ('* alice left', '* bob left'):   # the other's leaving may come after
        line = c.line()
    expect(line, '')
print('ok')
"#;
    let pki = tls_pki::Pki::new();
    for mode in ["pool", "threading"] {
        let (cert, key) = (pki.p("server.pem"), pki.p("server.key"));
        let mut server = start(&["--mode", mode, "--tls-cert", &cert, "--tls-key", &key]);
        let pid = server.pid().to_string();
        let out = util::python(SCRIPT, &[&server.addr, &pki.p("ca.pem"), &pid]);
        assert_eq!(out, "ok\n", "{mode}");
        assert!(server.wait_exit(TIMEOUT).success(), "{mode}");
    }
}

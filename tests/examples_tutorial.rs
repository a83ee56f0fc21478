//! The tutorial examples as their users run them: each example binary started as a child
//! process on a free loopback port, poked over real sockets by Rust clients and by Python
//! clients written the way the tutorials write them (`send`/`recv(1024)`, `struct.pack`),
//! in the default mode and in the other modes where the example makes sense, and stopped
//! with SIGTERM by its pid.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use util::{example_path, python, read_to_end, read_until, tcp_client, ExampleServer, TIMEOUT};

/// The examples this file runs.
const EXAMPLES: &[&str] = &["hello", "time_udp", "chat"];

/// Builds the examples once per test run, with the profile of this test binary:
/// `cargo test --test examples_tutorial` builds this file only, and a stale example binary
/// would be tested instead of the source next to it.
#[track_caller]
fn build_examples() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.arg("build").current_dir(env!("CARGO_MANIFEST_DIR"));
        for name in EXAMPLES {
            cmd.args(["--example", name]);
        }
        let profile = example_path("x");
        if profile
            .parent()
            .and_then(|p| p.parent())
            .is_some_and(|p| p.ends_with("release"))
        {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            other => Err(format!("cargo build of the examples failed: {other:?}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
}

/// Starts example `name` on a free loopback port with `extra` options.
#[track_caller]
fn start(name: &str, extra: &[&str]) -> ExampleServer {
    build_examples();
    let mut args = vec!["--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ExampleServer::start(name, &args)
}

/// Runs example `name` expecting it to exit by itself within `TIMEOUT`.
#[track_caller]
fn run_to_exit(name: &str, args: &[&str]) -> Output {
    build_examples();
    let mut child = Command::new(example_path(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not exit within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// SIGTERM with `clients` still connected: each reads EOF, and the server exits 0 well
/// within its 5 s grace period.
#[track_caller]
fn assert_graceful_exit(mut server: ExampleServer, clients: Vec<TcpStream>) {
    let started = Instant::now();
    server.signal("TERM");
    for mut c in clients {
        let rest = read_to_end(&mut c);
        assert!(rest.len() < 1 << 20, "unexpected data before EOF");
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// hello

/// The tutorial's client, as written there (plus a timeout).
const HELLO_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
s.connect((host, int(port)))
print(s.recv(1024).decode('utf-8'))
for data in [b'Michael', b'Tracy', b'Sarah']:
    s.send(data)
    print(s.recv(1024).decode('utf-8'))
s.send(b'exit')
print(repr(s.recv(1024)))
s.close()
"#;

fn hello_scenario(mode: &str) {
    let server = start("hello", &["--mode", mode]);
    let out = python(HELLO_CLIENT, &[&server.addr]);
    assert_eq!(
        out,
        "Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\nb''\n"
    );

    // Bytes go back as they came, UTF-8 or not; `exit\r\n` (from nc) also ends.
    let mut c = tcp_client(server.socket_addr());
    assert_eq!(read_until(&mut c, |b| b.len() >= 8), b"Welcome!");
    c.write_all("你好".as_bytes()).unwrap();
    let want = "Hello, 你好!".as_bytes();
    assert_eq!(read_until(&mut c, |b| b.len() >= want.len()), want);
    c.write_all(b"\xff\xfe").unwrap();
    assert_eq!(read_until(&mut c, |b| b.len() >= 10), b"Hello, \xff\xfe!");
    c.write_all(b"exit\r\n").unwrap();
    assert_eq!(read_to_end(&mut c), b"");

    // EOF from the client ends the connection too.
    let mut c = tcp_client(server.socket_addr());
    assert_eq!(read_until(&mut c, |b| b.len() >= 8), b"Welcome!");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"");

    // Two clients at once (the single mode serves them one after the other).
    if mode != "single" {
        let mut a = tcp_client(server.socket_addr());
        let mut b = tcp_client(server.socket_addr());
        assert_eq!(read_until(&mut b, |b| b.len() >= 8), b"Welcome!");
        assert_eq!(read_until(&mut a, |b| b.len() >= 8), b"Welcome!");
    }

    let mut open = tcp_client(server.socket_addr());
    assert_eq!(read_until(&mut open, |b| b.len() >= 8), b"Welcome!");
    assert_graceful_exit(server, vec![open]);
}

#[test]
fn hello_default_mode() {
    hello_scenario("pool");
}

#[test]
fn hello_single() {
    hello_scenario("single");
}

#[test]
fn hello_threading() {
    hello_scenario("threading");
}

#[test]
fn hello_fork() {
    hello_scenario("fork");
}

// ---------------------------------------------------------------------------------------
// time_udp

/// The tutorial's client, fed a list of formats (hex-encoded on the command line).
const TIME_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
ip_port = (host, int(port))
bufsize = 1024
tcp_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tcp_client.settimeout(5)
for msg in sys.argv[2:]:
    tcp_client.sendto(bytes.fromhex(msg), ip_port)
    data = tcp_client.recv(bufsize)
    print(data.decode('utf-8'))
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `YYYY-MM-DD HH:MM:SS`, the reply to an empty datagram.
fn is_default_time(s: &str) -> bool {
    let shape = "0000-00-00 00:00:00";
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| {
            if p == b'0' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
}

fn time_udp_scenario(mode: &str) {
    let server = start("time_udp", &["--mode", mode]);
    let formats: [&[u8]; 8] = [
        b"",
        b"year %Y",
        b"%Q",
        b"%",
        b"\xff\xfe%Y",
        "时间 %H:%M".as_bytes(),
        &[b'x'; 2000],
        b"",
    ];
    let args: Vec<String> = formats.iter().map(|f| hex(f)).collect();
    let mut argv = vec![server.addr.as_str()];
    argv.extend(args.iter().map(String::as_str));
    let out = python(TIME_CLIENT, &argv);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), formats.len(), "{out}");
    assert!(is_default_time(lines[0]), "{out}");
    let year = chrono::Local::now().format("%Y").to_string();
    assert_eq!(lines[1], format!("year {year}"));
    for bad in &lines[2..5] {
        assert!(bad.starts_with("error"), "{out}");
    }
    assert!(lines[5].starts_with("时间 ") && lines[5].len() == "时间 00:00".len());
    assert!(lines[6].starts_with("error"), "{out}");
    assert!(is_default_time(lines[7]), "the server still answers: {out}");

    // A Rust client too: the reply is one datagram, whole.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_to(b"%c", server.socket_addr()).unwrap();
    let mut buf = [0; 1024];
    let n = c.recv(&mut buf).unwrap();
    assert!(n > 10 && !buf[..n].starts_with(b"error"));

    let mut server = server;
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn time_udp_default_mode() {
    time_udp_scenario("pool");
}

#[test]
fn time_udp_single() {
    time_udp_scenario("single");
}

#[test]
fn time_udp_fork() {
    time_udp_scenario("fork");
}

// ---------------------------------------------------------------------------------------
// chat

/// A chat client reading lines with a timeout.
struct Chatter {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Chatter {
    /// Connects without choosing a nickname yet.
    fn connect(server: &ExampleServer) -> Chatter {
        let w = tcp_client(server.socket_addr());
        Chatter {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// Connects as `nick` and waits until seated (its `/who` is answered).
    #[track_caller]
    fn join(server: &ExampleServer, nick: &str) -> Chatter {
        let mut c = Chatter::connect(server);
        c.send(&format!("{nick}\n/who\n"));
        let who = c.line();
        assert!(
            who.starts_with("* present: ") && who.ends_with(nick),
            "{who}"
        );
        c
    }

    #[track_caller]
    fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    #[track_caller]
    fn send_bytes(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// The next line without its `\n`; "" at EOF.
    #[track_caller]
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read a line");
        if !line.is_empty() {
            assert!(line.ends_with('\n'), "unterminated line {line:?}");
            line.pop();
        }
        line
    }

    #[track_caller]
    fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Reads to EOF (the server closed the connection).
    #[track_caller]
    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.r.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

fn chat_scenario(mode: &str) {
    let server = start("chat", &["--mode", mode]);
    let mut alice = Chatter::join(&server, "alice");
    let mut bob = Chatter::join(&server, "bob");
    alice.expect("* bob joined");

    // Refused nicknames get an error and another try.
    let mut carol = Chatter::connect(&server);
    carol.send("bob\r\n");
    carol.expect("error: nickname bob is taken, choose another nickname");
    carol.send("\n");
    assert!(carol.line().starts_with("error: a nickname has 1 to 32"));
    carol.send("car ol\n");
    assert!(carol.line().starts_with("error: a nickname has no spaces"));
    carol.send("carol\n");
    alice.expect("* carol joined");
    bob.expect("* carol joined");

    // Lines go to the others only, UTF-8 intact, "\r\n" stripped.
    alice.send("hello 你好\r\n");
    bob.expect("alice: hello 你好");
    carol.expect("alice: hello 你好");
    bob.send("/who\n");
    bob.expect("* present: alice, bob, carol");
    bob.send("/nope\n\n");
    bob.expect("error: unknown command (try /who or /quit)");

    // Invalid UTF-8: an error line, the line dropped, the client still in.
    carol.send_bytes(b"\xff\xfe oops\nstill here\n");
    carol.expect("error: line is not UTF-8");
    alice.expect("carol: still here");
    bob.expect("carol: still here");

    // /quit and EOF both leave.
    carol.send("/quit\n");
    carol.expect_eof();
    alice.expect("* carol left");
    bob.expect("* carol left");
    bob.w.shutdown(Shutdown::Write).unwrap();
    bob.expect_eof();
    alice.expect("* bob left");

    // An over-long line: an error, then the connection closes.
    let mut long = Chatter::join(&server, "long");
    alice.expect("* long joined");
    long.send(&format!("{}\n", "x".repeat(5000)));
    long.expect("error: line longer than 4096 bytes");
    long.expect_eof();
    alice.expect("* long left");
    // 4096 bytes is still a line.
    let max = "y".repeat(4096);
    alice.send(&format!("{max}\r\n/who\n"));
    alice.expect("* present: alice");

    // A client written like the tutorials: one send with several lines glued, recv(1024).
    let glued = r#"
import socket, sys, time
host, port = sys.argv[1].rsplit(':', 1)
s = socket.socket()
s.settimeout(5)
s.connect((host, int(port)))
s.send('张三\n大家好\n/who\n'.encode('utf-8'))
data = b''
while not data.endswith(b'\n'):
    data += s.recv(1024)
print(data.decode('utf-8'), end='')
s.send(b'/quit\n')
while s.recv(1024):
    pass
"#;
    let out = python(glued, &[&server.addr]);
    assert_eq!(out, "* present: alice, 张三\n");
    alice.expect("* 张三 joined");
    alice.expect("张三: 大家好");
    alice.expect("* 张三 left");

    let dave = Chatter::join(&server, "dave");
    alice.expect("* dave joined");
    assert_graceful_chat_exit(server, vec![alice, dave]);
}

/// SIGTERM: every chat client gets `* server shutting down` then EOF, and the server exits 0
/// promptly (its handlers notice within 200 ms, far within the 5 s grace period).
#[track_caller]
fn assert_graceful_chat_exit(mut server: ExampleServer, clients: Vec<Chatter>) {
    let started = Instant::now();
    server.signal("TERM");
    for mut c in clients {
        let mut seen = Vec::new();
        loop {
            let line = c.line();
            if line.is_empty() {
                break;
            }
            seen.push(line);
            assert!(seen.len() < 100, "{seen:?}");
        }
        assert!(
            seen.contains(&"* server shutting down".to_string()),
            "{seen:?}"
        );
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn chat_default_mode() {
    chat_scenario("pool");
}

#[test]
fn chat_threading() {
    chat_scenario("threading");
}

#[test]
fn chat_refuses_single_and_fork() {
    for mode in ["single", "fork"] {
        let out = run_to_exit("chat", &["--addr", "127.0.0.1:0", "--mode", mode]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "no listening line");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--mode pool or --mode threading"), "{err}");
    }
}

/// A client that never reads is disconnected once its queue (and the socket buffers) fill,
/// while a reading client gets every line and the room goes on.
#[test]
fn chat_drops_a_client_that_does_not_read() {
    let started = Instant::now();
    let server = start("chat", &[]);
    let mut talker = Chatter::join(&server, "talker");
    let mut reader = Chatter::join(&server, "reader");
    talker.expect("* reader joined");
    let mut slow = Chatter::join(&server, "slow"); // never reads from here on
    reader.expect("* slow joined");
    talker.expect("* slow joined");

    // Batches of 50 lines of 4000 bytes; the reader reads each batch whole before the next
    // one is sent, so only the slow client falls behind. 400 batches (80 MB) at most.
    let text = "z".repeat(4000);
    let batch = format!("{text}\n").repeat(50);
    let mut left = false;
    for _ in 0..400 {
        talker.send(&batch);
        let mut got = 0;
        while got < 50 {
            match reader.line() {
                l if l == "* slow left" => left = true,
                l => {
                    assert_eq!(l.len(), "talker: ".len() + 4000);
                    got += 1;
                }
            }
        }
        if left {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "slow client never dropped");
    }
    assert!(left, "slow client never dropped");
    talker.expect("* slow left");

    // The slow client's connection was closed: what was sent, then EOF.
    slow.w.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0; 1 << 16];
    let mut total = 0usize;
    loop {
        match slow.r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(total < 1 << 30);
    }

    // The room goes on.
    talker.send("after\n");
    reader.expect("talker: after");
    let fresh = Chatter::join(&server, "fresh");
    reader.expect("* fresh joined");
    drop(fresh);
    reader.expect("* fresh left");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

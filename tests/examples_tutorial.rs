//! The tutorial examples as their users run them: each example binary started as a child
//! process on a free loopback port, poked over real sockets by Rust clients and by Python
//! clients written the way the tutorials write them (`send`/`recv(1024)`, `struct.pack`),
//! in the default mode and in the other modes where the example makes sense, and stopped
//! with SIGTERM by its pid.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::chat::Chatter;
use util::{example_path, python, read_to_end, read_until, tcp_client, ExampleServer, TIMEOUT};

/// Builds the examples once per test run (see `util::build_examples`).
#[track_caller]
fn build_examples() {
    util::build_examples();
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

/// SIGTERM with `clients` still connected: each reads EOF, and the server exits 0 within
/// its 5 s grace period.
#[track_caller]
fn assert_graceful_exit(mut server: ExampleServer, clients: Vec<TcpStream>) {
    server.signal("TERM");
    for mut c in clients {
        let rest = read_to_end(&mut c);
        assert!(rest.len() < 1 << 20, "unexpected data before EOF");
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
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

fn chat_scenario(mode: &str) {
    let server = start("chat", &["--mode", mode, "--grace", "10"]);
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
/// promptly: its handlers notice within 200 ms, while its grace period is 10 s (the server
/// is started with `--grace 10`), so an exit within 5 s shows no connection was forced.
#[track_caller]
fn assert_graceful_chat_exit(mut server: ExampleServer, clients: Vec<Chatter>) {
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

// ---------------------------------------------------------------------------------------
// remote_cmd and remote_cmd_client

/// The programs the remote_cmd tests allow (never a shell).
const ALLOW: &str = "echo,printf,head,cat,seq,sleep,ls,no-such-program-xyz";

/// A tutorial-style client: `struct.pack('!I')` frames, `recv(1024)` loops, a JSON head.
/// It runs every check and prints `ok`.
const REMOTE_CMD_CLIENT: &str = r#"
import socket, struct, json, sys, time
host, port = sys.argv[1].rsplit(':', 1)

def connect():
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect((host, int(port)))
    return client

def recv_exact(client, n):
    parts, got = [], 0
    while got < n:
        data = client.recv(min(1024, n - got))
        if not data:
            raise EOFError('server closed after %d of %d bytes' % (got, n))
        parts.append(data)
        got += len(data)
    return b''.join(parts)

def result(client):
    head_len = struct.unpack('!I', recv_exact(client, 4))[0]
    head = json.loads(recv_exact(client, head_len).decode('utf-8'))
    out = recv_exact(client, head['stdout_size'])
    err = recv_exact(client, head['stderr_size'])
    return head, out, err

def run(client, cmd):
    client.send(struct.pack('!I', len(cmd)) + cmd)
    return result(client)

c = connect()
head, out, err = run(c, b'echo hello world')
assert head == {'exit_code': 0, 'stdout_size': 12, 'stderr_size': 0}, head
assert (out, err) == (b'hello world\n', b''), (out, err)

# Quotes are split shell-style, but nothing is expanded: there is no shell.
head, out, err = run(c, b"printf '%s|' 'a b' \"c d\" '$HOME' '*' ';'")
assert out == b'a b|c d|$HOME|*|;|', out

# Two frames glued in one send: two replies, in order.
c.send(struct.pack('!I', 6) + b'echo a' + struct.pack('!I', 11) + b'printf %s b')
assert result(c)[1] == b'a\n'
assert result(c)[1] == b'b'

# Megabytes arrive whole: the sticky-packet lesson.
head, out, err = run(c, b'head -c 3000000 /dev/zero')
assert head['exit_code'] == 0 and head['stdout_size'] == 3000000, head
assert out == bytes(3000000)
head, out, err = run(c, b'seq 1 500000')
want = ''.join('%d\n' % i for i in range(1, 500001)).encode()
assert head['stdout_size'] == len(want) and out == want, head

# stderr and the exit code; 100 KB of stderr (over a pipe buffer) cannot deadlock.
head, out, err = run(c, b'cat /nonexistent/file')
assert head['exit_code'] == 1 and out == b'' and b'No such file' in err, (head, err)
missing = ' '.join('/nonexistent/%d' % i for i in range(2000)).encode()
head, out, err = run(c, b'ls ' + missing)
assert head['exit_code'] != 0 and head['stderr_size'] > 65536 and len(err) == head['stderr_size'], head

# Refused, with the error header: not allowed, a path, a shell, empty, bad quoting.
for cmd in [b'rm -rf /tmp/nothing', b'/bin/echo hi', b'../echo hi', b'sh -c "echo hi"', b'', b'   ', b"echo 'oops"]:
    head, out, err = run(c, cmd)
    assert head['exit_code'] is None and head['stdout_size'] == 0 and head['stderr_size'] == 0, (cmd, head)
    assert head['error'], (cmd, head)
assert 'not allowed' in run(c, b'rm -rf /tmp/nothing')[0]['error']

# Allowed but missing: a start error.
head, out, err = run(c, b'no-such-program-xyz --help')
assert head['exit_code'] is None and 'cannot start' in head['error'], head

# Invalid UTF-8: an error, and the connection goes on.
head, out, err = run(c, b'echo \xff\xfe')
assert head['exit_code'] is None and 'UTF-8' in head['error'], head

# A request over 64 KiB: an error header, then the connection closes.
c = connect()
c.send(struct.pack('!I', 70000) + b'echo ' + b'x' * 1000)
head, out, err = result(c)
assert head['exit_code'] is None and 'request refused' in head['error'], head
try:
    rest = c.recv(1024)
except ConnectionResetError:
    rest = b''
assert rest == b'', rest
c.close()

# A client that vanishes mid-frame.
c = connect()
c.send(struct.pack('!I', 100) + b'echo half')
c.close()

# The server still serves.
c = connect()
assert run(c, b'echo fresh')[1] == b'fresh\n'
c.close()
print('ok')
"#;

fn remote_cmd_scenario(mode: &str) {
    let server = start("remote_cmd", &["--mode", mode, "--allow", ALLOW]);
    assert_eq!(python(REMOTE_CMD_CLIENT, &[&server.addr]), "ok\n");

    let mut open = tcp_client(server.socket_addr());
    open.write_all(b"\0\0\0\x0aecho ready").unwrap();
    let reply = read_until(&mut open, |b| b.ends_with(b"ready\n"));
    assert!(reply.ends_with(b"ready\n"));
    assert_graceful_exit(server, vec![open]);
}

#[test]
fn remote_cmd_default_mode() {
    remote_cmd_scenario("pool");
}

#[test]
fn remote_cmd_single() {
    remote_cmd_scenario("single");
}

#[test]
fn remote_cmd_fork() {
    remote_cmd_scenario("fork");
}

/// The children of process `pid` (Linux `/proc/PID/task/*/children`); `None` if unknown.
fn children(pid: u32) -> Option<Vec<String>> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let list = std::fs::read_to_string(task.ok()?.path().join("children")).ok()?;
        kids.extend(list.split_whitespace().map(String::from));
    }
    Some(kids)
}

/// `sleep 7` with `--timeout 1`: the child is killed and reaped before the error reply.
#[test]
fn remote_cmd_timeout_kills_the_command() {
    let server = start("remote_cmd", &["--allow", "sleep,echo", "--timeout", "1"]);
    let mut c = tcp_client(server.socket_addr());
    let started = Instant::now();
    c.write_all(b"\0\0\0\x07sleep 7").unwrap();
    let mut prefix = [0; 4];
    c.read_exact(&mut prefix).unwrap();
    let mut head = vec![0; u32::from_be_bytes(prefix) as usize];
    c.read_exact(&mut head).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&head),
        r#"{"exit_code":null,"stdout_size":0,"stderr_size":0,"error":"timed out after 1s"}"#
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    if let Some(kids) = children(server.pid()) {
        assert!(kids.is_empty(), "children left: {kids:?}");
    }
    c.write_all(b"\0\0\0\x0aecho after").unwrap();
    assert!(read_until(&mut c, |b| b.ends_with(b"after\n")).ends_with(b"after\n"));
}

#[test]
fn remote_cmd_output_cap_kills_the_command() {
    let server = start(
        "remote_cmd",
        &["--allow", "head,echo", "--max-output", "1000"],
    );
    let script = r#"
import socket, struct, json, sys
host, port = sys.argv[1].rsplit(':', 1)
c = socket.create_connection((host, int(port)), timeout=5)
def run(cmd):
    c.sendall(struct.pack('!I', len(cmd)) + cmd)
    f = c.makefile('rb')
    n = struct.unpack('!I', f.read(4))[0]
    head = json.loads(f.read(n))
    return head, f.read(head['stdout_size']), f.read(head['stderr_size'])
print(json.dumps(run(b'head -c 1000 /dev/zero')[0]))
print(json.dumps(run(b'head -c 100000000 /dev/zero')[0]))
print(run(b'echo after')[1].decode(), end='')
"#;
    let out = python(script, &[&server.addr]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r#"{"exit_code": 0, "stdout_size": 1000, "stderr_size": 0}"#
    );
    assert_eq!(
        lines[1],
        r#"{"exit_code": null, "stdout_size": 0, "stderr_size": 0, "error": "output over 1000 bytes"}"#
    );
    assert_eq!(lines[2], "after");
}

/// A command still running at SIGTERM is killed and reported, and the server exits at once.
#[test]
fn remote_cmd_shutdown_during_a_command() {
    let mut server = start("remote_cmd", &["--allow", "sleep,echo", "--timeout", "30"]);
    let mut c = tcp_client(server.socket_addr());
    c.write_all(b"\0\0\0\x09sleep 30\n").unwrap();
    // Wait until the command runs: a second connection is answered meanwhile (pool).
    let mut probe = tcp_client(server.socket_addr());
    probe.write_all(b"\0\0\0\x07echo hi").unwrap();
    assert!(read_until(&mut probe, |b| b.ends_with(b"hi\n")).ends_with(b"hi\n"));
    let started = Instant::now();
    server.signal("TERM");
    let reply = read_to_end(&mut c);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains(r#""exit_code":null"#), "{text}");
    assert!(text.contains("server shutting down"), "{text}");
    // The grace period is 5 s and the command's timeout 30 s: killed at once, not forced.
    assert!(server.wait_exit(Duration::from_secs(5)).success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// Runs remote_cmd_client with `args` and `stdin`; (status code, stdout, stderr).
fn client(args: &[&str], stdin: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    build_examples();
    let mut child = Command::new(example_path("remote_cmd_client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn remote_cmd_client");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || input.write_all(&stdin));
    let mut out = child.stdout.take().unwrap();
    let out = thread::spawn(move || read_to_end(&mut out));
    let mut err = child.stderr.take().unwrap();
    let err = thread::spawn(move || read_to_end(&mut err));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("remote_cmd_client did not exit within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    (status.code(), out.join().unwrap(), err)
}

#[test]
fn remote_cmd_client_runs_commands() {
    let server = start("remote_cmd", &["--allow", ALLOW]);
    let a = server.addr.as_str();
    let (code, out, _) = client(&["--addr", a, "echo", "hello", "a  b"], b"");
    assert_eq!((code, &out[..]), (Some(0), &b"hello a  b\n"[..]));
    let (code, out, _) = client(&["--addr", a, "printf '%s,' 'x y' z"], b"");
    assert_eq!((code, &out[..]), (Some(0), &b"x y,z,"[..]));
    let (code, out, _) = client(&["--addr", a, "head", "-c", "3000000", "/dev/zero"], b"");
    assert_eq!(code, Some(0));
    assert!(out.len() == 3_000_000 && out.iter().all(|&b| b == 0));
    let (code, out, err) = client(&["--addr", a, "cat", "/nonexistent/file"], b"");
    assert_eq!((code, &out[..]), (Some(1), &b""[..]));
    assert!(err.contains("No such file"), "{err}");
    let (code, _, err) = client(&["--addr", a, "rm", "-rf", "/tmp/nothing"], b"");
    assert_eq!(code, Some(255));
    assert!(err.contains("rm: not allowed"), "{err}");

    // Interactive: one command line per stdin line, empty lines skipped.
    let (code, out, _) = client(
        &["--addr", a],
        b"echo one\n\nprintf %s two\ncat /nonexistent\n",
    );
    assert_eq!((code, &out[..]), (Some(1), &b"one\ntwo"[..]));
}

/// The client against a fake server that answers garbage: an error, not a hang or a crash.
#[test]
fn remote_cmd_client_rejects_a_garbage_header() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = thread::spawn(move || {
        for reply in [
            &b"\0\0\0\x08not json"[..],
            b"\0\0\0\x02[]",
            b"\xff\xff\xff\xff",
        ] {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut prefix = [0; 4];
            s.read_exact(&mut prefix).unwrap();
            let mut cmd = vec![0; u32::from_be_bytes(prefix) as usize];
            s.read_exact(&mut cmd).unwrap();
            s.write_all(reply).unwrap();
        }
    });
    for _ in 0..3 {
        let (code, out, err) = client(&["--addr", &addr, "echo", "hi"], b"");
        assert_eq!(code, Some(1), "{err}");
        assert!(out.is_empty());
        assert!(err.starts_with("Error:"), "{err}");
    }
    fake.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// framed_echo

/// A tutorial-style client of framed_echo; prints `ok`.
const FRAMED_CLIENT: &str = r#"
import socket, struct, sys
host, port = sys.argv[1].rsplit(':', 1)

def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, int(port)))
    return s

def recv_exact(s, n):
    parts, got = [], 0
    while got < n:
        data = s.recv(min(1024, n - got))
        if not data:
            raise EOFError
        parts.append(data)
        got += len(data)
    return b''.join(parts)

def recv_frame(s):
    n = struct.unpack('!I', recv_exact(s, 4))[0]
    return recv_exact(s, n)

def frame(data):
    return struct.pack('!I', len(data)) + data

s = connect()
s.send(frame('你好'.encode('utf-8')))
assert recv_frame(s) == '你好'.encode('utf-8')
# Two frames glued in one send, then one split over three sends.
s.send(frame(b'hello') + frame(b'world'))
assert recv_frame(s) == b'hello' and recv_frame(s) == b'world'
whole = frame(b'split frame')
s.send(whole[:2]); s.send(whole[2:7]); s.send(whole[7:])
assert recv_frame(s) == b'split frame'
# Empty, binary and exactly 1 MiB frames.
s.send(frame(b''))
assert recv_frame(s) == b''
s.send(frame(bytes(range(256))))
assert recv_frame(s) == bytes(range(256))
big = bytes(i % 251 for i in range(1 << 20))
s.sendall(frame(big))
assert recv_frame(s) == big
s.close()

# A declared length over 1 MiB closes that connection only.
s = connect()
s.send(struct.pack('!I', (1 << 20) + 1) + b'xyz')
try:
    assert s.recv(1024) == b''
except ConnectionResetError:
    pass
s.close()
# A 4 GiB declaration too.
s = connect()
s.send(b'\xff\xff\xff\xff')
try:
    assert s.recv(1024) == b''
except ConnectionResetError:
    pass
s.close()
# A client that vanishes mid-frame, and one mid-prefix.
s = connect(); s.send(struct.pack('!I', 100) + b'half'); s.close()
s = connect(); s.send(b'\0\0'); s.close()

s = connect()
s.send(frame(b'still serving'))
assert recv_frame(s) == b'still serving'
print('ok')
"#;

fn framed_echo_scenario(mode: &str) {
    let server = start("framed_echo", &["--mode", mode]);
    assert_eq!(python(FRAMED_CLIENT, &[&server.addr]), "ok\n");
    let mut other = tcp_client(server.socket_addr());
    other.write_all(b"\0\0\0\x03abc\0\0\0\x01d").unwrap();
    assert_eq!(
        read_until(&mut other, |b| b.len() >= 12),
        b"\0\0\0\x03abc\0\0\0\x01d"
    );
    assert_graceful_exit(server, vec![other]);
}

#[test]
fn framed_echo_default_mode() {
    framed_echo_scenario("pool");
}

#[test]
fn framed_echo_single() {
    framed_echo_scenario("single");
}

#[test]
fn framed_echo_fork() {
    framed_echo_scenario("fork");
}

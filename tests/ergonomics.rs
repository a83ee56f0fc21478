//! What a new user writes (issue 14): a line-based key-value server, a UDP uptime service
//! and a length-prefixed JSON RPC server, as examples run in child processes and driven by
//! Python clients written as a user would; plus the system calls behind one reply, counted
//! with strace.

mod util;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{ExampleServer, TIMEOUT};

fn start(name: &str) -> ExampleServer {
    util::build_examples();
    ExampleServer::start(name, &["--addr", "127.0.0.1:0"])
}

/// The key-value server: commands pipelined in one send are answered in order, a line that
/// is not UTF-8 gets an error reply and the connection goes on, an over-long line is
/// answered and closed, and a fresh client is served after it.
#[test]
fn kv_server_answers_pipelined_bad_and_oversize_lines() {
    let srv = start("kv");
    let out = util::python(
        r#"
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
def session(data):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk
print(session(b'SET a 1\nGET a\nSET b two words\r\nGET b\nDEL a\nGET a\nNOPE\n\xff\xfe\nGET b\n'))
print(session(b'GET b\n' + b'x' * 5000 + b'\nGET b\n'))
print(session(b'GET b\nQUIT\nGET b\n'))
"#,
        &[&srv.addr],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r"b'OK\nVALUE 1\nOK\nVALUE two words\nDELETED\nNOT_FOUND\nERR unknown command\nERR not UTF-8\nVALUE two words\n'"
    );
    assert_eq!(
        lines[1],
        r"b'VALUE two words\nERR line longer than 4096 bytes\n'"
    );
    assert_eq!(lines[2], r"b'VALUE two words\n'");
}

/// The UDP service: `uptime` answered with a number, anything else echoed in one datagram
/// made of two slices.
#[test]
fn uptime_udp_answers_and_echoes() {
    let srv = start("uptime_udp");
    let out = util::python(
        r#"
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b'uptime', (host, int(port)))
print(s.recv(1000))
s.sendto(b'hello', (host, int(port)))
print(s.recv(1000))
s.sendto(b'x' * 60000, (host, int(port)))
print(len(s.recv(65535)))
"#,
        &[&srv.addr],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("b'up ") && lines[0].ends_with(" s'"),
        "{out}"
    );
    assert_eq!(lines[1], "b'echo: hello'");
    assert_eq!(lines[2], "60006");
}

/// The JSON RPC server with a tutorial-style client (struct.pack('!I')): calls answered,
/// a bad call and bad JSON answered with errors on the same connection, then an oversize
/// frame closes it; the server serves the next client.
#[test]
fn json_rpc_answers_calls_and_survives_bad_frames() {
    let srv = start("json_rpc");
    let out = util::python(
        r#"
import json, socket, struct, sys
host, port = sys.argv[1].rsplit(':', 1)
def recv_exact(s, n):
    buf = b''
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
def rpc(s, payload):
    s.sendall(struct.pack('!I', len(payload)) + payload)
    head = recv_exact(s, 4)
    if head is None:
        return 'EOF'
    return json.dumps(json.loads(recv_exact(s, struct.unpack('!I', head)[0])), sort_keys=True)
s = socket.create_connection((host, int(port)), timeout=10)
print(rpc(s, json.dumps({'id': 1, 'method': 'add', 'params': [1, 2, 3.5]}).encode()))
print(rpc(s, json.dumps({'id': 2, 'method': 'pow', 'params': []}).encode()))
print(rpc(s, b'{not json'))
print(rpc(s, json.dumps({'id': 3, 'method': 'mul', 'params': [2, 'x']}).encode()))
print(rpc(s, json.dumps({'id': 4, 'method': 'echo', 'params': ['hi', None]}).encode()))
s.sendall(struct.pack('!I', 64 * 1024 * 1024))
print(recv_exact(s, 1))
s = socket.create_connection((host, int(port)), timeout=10)
print(rpc(s, json.dumps({'id': 5, 'method': 'mul', 'params': [6, 7]}).encode()))
"#,
        &[&srv.addr],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#"{"id": 1, "result": 6.5}"#, "{out}");
    assert_eq!(lines[1], r#"{"error": "unknown method \"pow\"", "id": 2}"#);
    assert!(
        lines[2].starts_with(r#"{"error": "invalid frame payload: not the JSON expected"#)
            && lines[2].ends_with(r#""id": null}"#),
        "{out}"
    );
    assert_eq!(lines[3], r#"{"error": "not a number: \"x\"", "id": 3}"#);
    assert_eq!(lines[4], r#"{"id": 4, "result": ["hi", null]}"#);
    assert_eq!(lines[5], "None", "an oversize frame closes the connection");
    assert_eq!(lines[6], r#"{"id": 5, "result": 42.0}"#);
}

/// The write-type system calls strace recorded (`strace -f` output) on the connection: the
/// descriptor of the first call that sent `first`. Returns (call name, bytes) in order.
fn calls_on_connection(path: &std::path::Path, first: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    // "PID name(fd, "data", ...) = ret"
    let parsed: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|line| {
            let call = line.split_once(' ')?.1.trim_start();
            let (name, args) = call.split_once('(')?;
            let (fd, rest) = args.split_once(", ")?;
            Some((name.to_string(), fd.to_string(), rest.to_string()))
        })
        .collect();
    let fd = parsed
        .iter()
        .find(|(_, _, rest)| rest.starts_with(first))
        .map(|(_, fd, _)| fd.clone())
        .unwrap_or_else(|| panic!("no call sent {first}: {text}"));
    parsed
        .into_iter()
        .filter(|(_, f, _)| *f == fd)
        .map(|(name, _, rest)| (name, rest))
        .collect()
}

/// Runs example `name` (single mode) under strace, lets `client` talk to it, stops it by
/// its pid, and returns the write-type calls on the connection whose first send carried
/// `first` (see `calls_on_connection`).
fn traced(
    name: &str,
    first: &str,
    client: impl FnOnce(std::net::SocketAddr),
) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let trace_arg = trace.to_str().unwrap().to_string();
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=sendto,sendmsg,write,writev",
        "-o",
        &trace_arg,
    ];
    let mut srv = ExampleServer::start_under(
        &wrapper,
        name,
        &["--addr", "127.0.0.1:0", "--mode", "single"],
        &[("RUST_LOG", "off")],
    );
    client(srv.socket_addr());
    // Stop the example itself (strace's child), by its pid; strace then exits too.
    let example = children(srv.pid());
    assert_eq!(example.len(), 1, "strace runs one child: {example:?}");
    let ok = Command::new("kill")
        .args(["-TERM", &example[0].to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(srv.wait_exit(TIMEOUT).success());
    calls_on_connection(&trace, first)
}

/// A reply written as `writeln!(req, "{reply}")` (two writes) leaves in one `send`: ten
/// requests, ten sends, each the whole line. Measured with strace on the kv example.
#[test]
fn one_send_per_reply() {
    if !util::have_strace("one_send_per_reply") {
        return;
    }
    let calls = traced("kv", "\"OK\\n\"", |addr| {
        let mut c = util::tcp_client(addr);
        for i in 0..10 {
            // One request at a time: each reply is complete before the next request.
            c.write_all(format!("SET k{i} {i}\n").as_bytes()).unwrap();
            assert_eq!(util::read_until(&mut c, |g| g.len() >= 3), b"OK\n");
        }
    });
    assert_eq!(calls.len(), 10, "{calls:?}");
    for (name, data) in &calls {
        assert_eq!(name, "sendto", "{calls:?}");
        assert!(data.starts_with("\"OK\\n\", 3, MSG_NOSIGNAL,"), "{calls:?}");
    }
}

/// No write to a connection can raise SIGPIPE (which kills a host program that does not
/// ignore it): small replies go out with `send(MSG_NOSIGNAL)`, large gathered frames with
/// `sendmsg(MSG_NOSIGNAL)`, never `write`/`writev`. A 40 KiB frame through the JSON RPC
/// example, traced.
#[test]
fn every_send_says_no_sigpipe() {
    if !util::have_strace("every_send_says_no_sigpipe") {
        return;
    }
    let big = "x".repeat(40 * 1024);
    let calls = traced("json_rpc", "{msg_name=", |addr| {
        let mut c = util::tcp_client(addr);
        for params in [format!("[\"{big}\"]"), "[1]".to_string()] {
            let call = format!("{{\"id\":1,\"method\":\"echo\",\"params\":{params}}}");
            let mut wire = Vec::new();
            socketserver::framing::write_frame(&mut wire, call.as_bytes()).unwrap();
            c.write_all(&wire).unwrap();
            let head = util::read_until(&mut c, |g| g.len() >= 4);
            let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let body = util::read_until(&mut c, |g| g.len() >= len + 4 - head.len());
            assert_eq!(head.len() + body.len(), len + 4);
        }
    });
    assert!(calls.len() >= 2, "{calls:?}");
    assert!(calls.iter().any(|(name, _)| name == "sendmsg"), "{calls:?}");
    for (name, data) in &calls {
        assert!(name == "sendto" || name == "sendmsg", "{calls:?}");
        assert!(data.contains("MSG_NOSIGNAL"), "{name}({data})");
    }
}

/// The pids whose parent is `pid`, waiting (bounded) for one to appear.
fn children(pid: u32) -> Vec<u32> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = util::child_pids(pid);
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

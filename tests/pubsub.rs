//! The `pubsub` example (issue 22: server push), with Python clients, plain and over `ssl`:
//! the protocol and its errors, idle subscribers receiving in order on few threads, a
//! subscriber that never reads (dropped, holding nobody up), pushes racing with the
//! connection's own replies, pushes to a parked connection, and the goodbye at shutdown.
//! The example runs as a child process on a free loopback port, ended by its pid.

#[cfg(feature = "tls")]
#[path = "tls_pki/mod.rs"]
mod tls_pki;
mod util;

use util::{ExampleServer, TIMEOUT};

/// What every client script shares: `sys.argv` is ADDR, CA file (or `-` for plain TCP),
/// the server's pid, then the test's own arguments.
const PRELUDE: &str = r#"
import os, random, signal, socket, ssl, sys, threading, time
host, port = sys.argv[1].rsplit(':', 1)
port = int(port)
CA = None if sys.argv[2] == '-' else sys.argv[2]
PID = int(sys.argv[3])
ARGS = sys.argv[4:]
CTX = ssl.create_default_context(cafile=CA) if CA else None

def threads():
    with open(f'/proc/{PID}/status') as f:
        for l in f:
            if l.startswith('Threads:'):
                return int(l.split()[1])

class Client:
    def __init__(self, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect((host, port))
        self.s = CTX.wrap_socket(s, server_hostname='localhost') if CTX else s
        self.buf = b''
    def send(self, line):
        self.s.sendall(line.encode() + b'\n')
    def line(self):
        while b'\n' not in self.buf:
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError(f'EOF after {self.buf[:80]!r}')
            self.buf += d
        l, self.buf = self.buf.split(b'\n', 1)
        return l.decode()
    def cmd(self, line):
        self.send(line)
        return self.line()
    def eof(self):
        try:
            while True:
                d = self.s.recv(1 << 16)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, ssl.SSLError):
            return True

def expect(got, want):
    if got != want:
        raise SystemExit(f'got {got!r}, want {want!r}')
"#;

/// Runs `script` (after the prelude) against `server`; its stdout.
#[track_caller]
fn client(server: &ExampleServer, ca: Option<&str>, script: &str, args: &[&str]) -> String {
    let code = format!("{PRELUDE}\n{script}");
    let pid = server.pid().to_string();
    let mut all = vec![server.addr.as_str(), ca.unwrap_or("-"), &pid];
    all.extend_from_slice(args);
    util::python(&code, &all)
}

#[track_caller]
fn start(extra: &[&str]) -> ExampleServer {
    util::build_examples();
    let mut args = vec!["--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ExampleServer::start("pubsub", &args)
}

#[track_caller]
fn stop(mut server: ExampleServer) {
    server.signal("TERM");
    assert!(server.wait_exit(TIMEOUT).success());
}

const PROTOCOL: &str = r#"
a, b = Client(), Client()
expect(a.cmd('SUB news'), 'OK SUB news')
expect(a.cmd('SUB news'), 'OK SUB news')          # again: still one subscription
expect(b.cmd('PUB news hello world'), 'OK PUB 1')
expect(a.line(), 'MSG news hello world')
# Its own message, then its reply: in order.
expect(a.cmd('PUB news  two  spaces '), 'MSG news  two  spaces ')
expect(a.line(), 'OK PUB 1')
a.s.sendall(b'UNSUB news\r\n')                    # a \r before the \n is ignored
expect(a.line(), 'OK UNSUB news')
expect(b.cmd('PUB news nobody'), 'OK PUB 0')
bad = 'ERROR a topic is 1-64 characters of A-Z a-z 0-9 . _ -'
for line in ['SUB', 'SUB ', 'SUB a/b', 'SUB ' + 'x' * 65, 'UNSUB a b', 'SUB caf\u00e9',
             'PUB bad!topic text', 'PUB  text']:
    expect(a.cmd(line), bad)
expect(a.cmd('PUB news'), 'ERROR usage: PUB <topic> <text>')
expect(a.cmd('HELLO'), 'ERROR unknown command (SUB, UNSUB or PUB)')
a.s.sendall(b'\xff\xfe\n')
expect(a.line(), 'ERROR line is not UTF-8')
long = 'A.b_c-9' + 'x' * 57
expect(a.cmd('SUB ' + long), 'OK SUB ' + long)    # 64 characters: the longest topic
# The connection stayed through every error: a publish still reaches it.
expect(b.cmd(f'PUB {long} still here'), 'OK PUB 1')
expect(a.line(), f'MSG {long} still here')
# A line of exactly 64 KiB is served; one byte more is refused and the connection closed.
text = 'y' * (65536 - len('PUB t '))
expect(b.cmd('PUB t ' + text), 'OK PUB 0')
b.send('PUB t ' + text + 'y')
expect(b.line(), 'ERROR line too long')
expect(b.eof(), True)
expect(a.cmd('PUB t after'), 'OK PUB 0')
print('ok')
"#;

#[test]
fn pubsub_protocol_and_errors() {
    let server = start(&[]);
    assert_eq!(client(&server, None, PROTOCOL, &[]), "ok\n");
    stop(server);
}

#[test]
fn pubsub_protocol_in_threading_mode() {
    let server = start(&["--mode", "threading"]);
    assert_eq!(client(&server, None, PROTOCOL, &[]), "ok\n");
    stop(server);
}

/// `N` subscribers (connected in batches, then silent) each receive 50 messages in order;
/// the server's threads, read from /proc meanwhile, stay at most 64.
const IDLE_SUBSCRIBERS: &str = r#"
N = int(ARGS[0])
subs = []
while len(subs) < N:
    batch = [Client() for _ in range(min(100, N - len(subs)))]
    for c in batch:
        c.send('SUB t')
    for c in batch:
        expect(c.line(), 'OK SUB t')
    subs += batch
p = Client()
most = threads()
for i in range(50):
    expect(p.cmd(f'PUB t m{i}'), f'OK PUB {N}')
    most = max(most, threads())
for c in subs:
    for i in range(50):
        expect(c.line(), f'MSG t m{i}')
most = max(most, threads())
if most > 64:
    raise SystemExit(f'{most} threads for {N} subscribers')
print('ok', most)
"#;

#[test]
fn pubsub_2000_idle_subscribers_get_every_message_in_order_on_few_threads() {
    let server = start(&[]);
    let out = client(&server, None, IDLE_SUBSCRIBERS, &["2000"]);
    assert!(out.starts_with("ok "), "{out}");
    stop(server);
}

/// A subscriber with a 4 KiB receive buffer never reads while 30 MB are published: it is
/// disconnected (its backlog passed 8 MiB), while the publisher's replies and the other
/// subscriber's messages never wait more than a second, and every message reaches the
/// subscriber that reads.
const NEVER_READS: &str = r#"
COUNT = 30000
payload = 'x' * 1000
slow = Client(rcvbuf=4096)
expect(slow.cmd('SUB t'), 'OK SUB t')
fast = Client()
expect(fast.cmd('SUB t'), 'OK SUB t')
gaps = {'reader': 0.0}
def read_all():
    last = time.monotonic()
    for i in range(COUNT):
        expect(fast.line(), f'MSG t {i:06d} {payload}')
        now = time.monotonic()
        gaps['reader'] = max(gaps['reader'], now - last)
        last = now
reader = threading.Thread(target=read_all)
reader.start()
p = Client()
worst, counts = 0.0, set()
for i in range(COUNT):
    t = time.monotonic()
    got = p.cmd(f'PUB t {i:06d} {payload}')
    worst = max(worst, time.monotonic() - t)
    counts.add(got)
reader.join(20)
if reader.is_alive():
    raise SystemExit('the reading subscriber did not get every message')
if counts != {'OK PUB 2', 'OK PUB 1'}:
    raise SystemExit(f'replies {counts}')
expect(p.cmd('PUB t last'), 'OK PUB 1')            # the slow one is gone
expect(slow.eof(), True)
got = slow.buf.count(b'\n')
if not 0 < got < COUNT:
    raise SystemExit(f'the slow subscriber got {got} lines')
if worst > 1.0 or gaps['reader'] > 1.0:
    raise SystemExit(f'held up: publisher {worst:.3f}s, reader {gaps["reader"]:.3f}s')
print('ok')
"#;

#[test]
fn pubsub_drops_a_subscriber_that_never_reads_and_holds_nobody_up() {
    let server = start(&[]);
    assert_eq!(client(&server, None, NEVER_READS, &[]), "ok\n");
    stop(server);
}

/// Pushes racing with the connection's own replies: a subscriber pipelines its own
/// commands (PUB to its topic, SUB, UNSUB) while two publishers publish lines of random
/// sizes (up to 40 KiB, larger than the server's write buffer) to the same topic. Every
/// line it reads is whole, and each source's lines come in the order sent.
const RACING: &str = r#"
rng = random.Random(int(ARGS[0]))
ROUNDS = 300
s = Client()
expect(s.cmd('SUB t'), 'OK SUB t')
def body(src, i):
    n = (i * 7919 + len(src) * 104729) % 40000
    return f'{src}-{i}-{n}-' + chr(97 + i % 26) * n
def publisher(src):
    p = Client()
    for i in range(ROUNDS):
        p.send(f'PUB t {body(src, i)}')
        if i % 10 == 9:
            for _ in range(10):
                p.line()
pubs = [threading.Thread(target=publisher, args=(n,)) for n in ('p1', 'p2')]
for t in pubs:
    t.start()
mine = []
for i in range(ROUNDS):
    kind = rng.randrange(3)
    if kind == 0:
        mine.append((f'PUB t {body("me", i)}', 'OK PUB'))
    elif kind == 1:
        mine.append(('SUB t', 'OK SUB t'))
    else:
        mine.append((f'UNSUB x{i}', f'OK UNSUB x{i}'))
# Each source's messages, in the order it sent them (its own: the rounds it published in).
order = {'p1': list(range(ROUNDS)), 'p2': list(range(ROUNDS)),
         'me': [i for i, (l, _) in enumerate(mine) if l.startswith('PUB')]}
want = {src: len(o) for src, o in order.items()}
seen = {'p1': 0, 'p2': 0, 'me': 0}
sent = replies = 0
def take():
    global replies
    l = s.line()
    if l.startswith('MSG t '):
        text = l[6:]
        src, i = text.split('-', 2)[:2]
        i = int(i)
        expect(text, body(src, i))
        expect(i, order[src][seen[src]])
        seen[src] += 1
    else:
        expect(l.startswith(mine[replies][1]), True)
        replies += 1
while sent < len(mine):
    # A few commands at once (pipelined), then everything up to their replies.
    for line, _ in mine[sent:sent + rng.randrange(1, 6)]:
        s.send(line)
        sent += 1
    while replies < sent:
        take()
while seen != want:
    take()
for t in pubs:
    t.join(10)
print('ok', replies, seen)
"#;

#[test]
fn pubsub_pushes_never_interleave_with_replies_and_keep_each_sources_order() {
    // Room enough that the reader, a Python loop, is never the one dropped.
    let server = start(&["--max-backlog", "100000000"]);
    for seed in ["1", "2"] {
        let out = client(&server, None, RACING, &[seed]);
        assert!(out.starts_with("ok "), "{out}");
    }
    stop(server);
}

/// A subscriber that says nothing (parked: no thread) receives pushes, among them 4 MB it
/// does not read at first (a backlog sent as it reads), then sends a request: its reply
/// comes after every message pushed before it.
const PARKED: &str = r#"
s = Client()
expect(s.cmd('SUB t'), 'OK SUB t')
time.sleep(0.3)                                    # well past the 10 ms a busy client is waited for
p = Client()
for i in range(3):
    expect(p.cmd(f'PUB t small {i}'), 'OK PUB 1')
for i in range(3):
    expect(s.line(), f'MSG t small {i}')
big = 'z' * 4000
for i in range(1000):
    p.send(f'PUB t {i} {big}')
for i in range(1000):
    expect(p.line(), 'OK PUB 1')
s.send('PUB t own')
for i in range(1000):
    expect(s.line(), f'MSG t {i} {big}')
expect(s.line(), 'MSG t own')
expect(s.line(), 'OK PUB 1')
print('ok')
"#;

#[test]
fn pubsub_pushes_reach_a_parked_connection_before_its_next_reply() {
    let server = start(&[]);
    assert_eq!(client(&server, None, PARKED, &[]), "ok\n");
    stop(server);
}

/// At shutdown every subscriber, idle, gets `BYE server shutting down`, then EOF.
const GOODBYE: &str = r#"
subs = [Client() for _ in range(20)]
for c in subs:
    expect(c.cmd('SUB t'), 'OK SUB t')
time.sleep(0.3)
os.kill(PID, signal.SIGTERM)
for c in subs:
    expect(c.line(), 'BYE server shutting down')
    expect(c.eof(), True)
print('ok')
"#;

#[test]
fn pubsub_says_goodbye_at_shutdown() {
    for mode in ["pool", "threading"] {
        let mut server = start(&["--mode", mode]);
        assert_eq!(client(&server, None, GOODBYE, &[]), "ok\n", "{mode}");
        assert!(server.wait_exit(TIMEOUT).success());
    }
}

#[test]
fn pubsub_refuses_single_and_fork() {
    util::build_examples();
    for mode in ["single", "fork"] {
        let child = std::process::Command::new(util::example_path("pubsub"))
            .args(["--addr", "127.0.0.1:0", "--mode", mode])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pubsub");
        let out = util::within(TIMEOUT, move || child.wait_with_output().expect("output"));
        assert!(!out.status.success(), "{mode}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--mode pool or --mode threading"),
            "{mode}: {err}"
        );
    }
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;

    fn start_tls(pki: &tls_pki::Pki, extra: &[&str]) -> ExampleServer {
        let (cert, key) = (pki.p("server.pem"), pki.p("server.key"));
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        start(&args)
    }

    #[test]
    fn pubsub_protocol_over_tls() {
        let pki = tls_pki::Pki::new();
        let server = start_tls(&pki, &[]);
        let ca = pki.p("ca.pem");
        assert_eq!(client(&server, Some(&ca), PROTOCOL, &[]), "ok\n");
        stop(server);
    }

    #[test]
    fn pubsub_200_tls_subscribers_get_every_message_in_order() {
        let pki = tls_pki::Pki::new();
        let server = start_tls(&pki, &[]);
        let ca = pki.p("ca.pem");
        let out = client(&server, Some(&ca), IDLE_SUBSCRIBERS, &["200"]);
        assert!(out.starts_with("ok "), "{out}");
        stop(server);
    }

    #[test]
    fn pubsub_tls_pushes_race_with_replies_and_reach_parked_connections() {
        let pki = tls_pki::Pki::new();
        let server = start_tls(&pki, &["--max-backlog", "100000000"]);
        let ca = pki.p("ca.pem");
        let out = client(&server, Some(&ca), RACING, &["3"]);
        assert!(out.starts_with("ok "), "{out}");
        assert_eq!(client(&server, Some(&ca), PARKED, &[]), "ok\n");
        stop(server);
    }

    #[test]
    fn pubsub_tls_says_goodbye_at_shutdown() {
        let pki = tls_pki::Pki::new();
        let mut server = start_tls(&pki, &[]);
        let ca = pki.p("ca.pem");
        assert_eq!(client(&server, Some(&ca), GOODBYE, &[]), "ok\n");
        assert!(server.wait_exit(TIMEOUT).success());
    }
}

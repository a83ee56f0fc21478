//! The `udp_chat` example (issue 15) as its users run it: the binary started on a free
//! loopback port, talked to by Python UDP clients (every `recv` with a timeout), and by the
//! tutorials' "QQ" client against `--console`, with the operator's replies fed through the
//! server's stdin. Stopped with SIGTERM by its pid.

mod util;

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use util::{example_path, python, ExampleServer, TIMEOUT};

/// Starts `udp_chat` on a free loopback port with `extra` options.
#[track_caller]
fn start(extra: &[&str]) -> ExampleServer {
    util::build_examples();
    let mut args = vec!["--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ExampleServer::start("udp_chat", &args)
}

/// SIGTERM: the server exits 0 within its grace period.
#[track_caller]
fn stop(mut server: ExampleServer) {
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(5)).success());
}

/// Python helpers every client script starts with: `client()` is a UDP socket with a 5 s
/// timeout; `ask` sends one datagram and returns the one reply, checking it came from the
/// server; `recv` reads one datagram; `expect` asks and compares.
const PRELUDE: &str = r#"
import socket, sys, time
host, port = sys.argv[1].rsplit(':', 1)
server = (host, int(port))

def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('127.0.0.1', 0))
    s.settimeout(5)
    return s

def recv(s):
    data, addr = s.recvfrom(1024)
    assert addr == server, addr
    return data.decode('utf-8')

def ask(s, msg):
    s.sendto(msg.encode('utf-8') if isinstance(msg, str) else msg, server)
    return recv(s)

def expect(s, msg, want):
    got = ask(s, msg)
    assert got == want, (msg, got, want)
"#;

/// Runs `PRELUDE` + `body` against `server`; the body ends by printing `ok`.
#[track_caller]
fn run_client(server: &ExampleServer, body: &str) {
    let out = python(&format!("{PRELUDE}{body}"), &[&server.addr]);
    assert_eq!(out, "ok\n");
}

/// Two registered clients message each other both ways; names taken, refused, unknown;
/// WHO; renaming; BYE; and garbage, each answered with an ERROR while the server goes on.
const CHAT: &str = r#"
alice, bob, eve = client(), client(), client()
expect(alice, 'HELLO alice', 'OK alice')
expect(bob, 'HELLO 张三', 'OK 张三')

# Both ways, each message from the server's address; the line end is not part of the text.
expect(alice, 'TO 张三: 你好, bob', 'SENT')
assert recv(bob) == 'FROM alice: 你好, bob'
expect(bob, 'TO alice: hi: there\n', 'SENT')
assert recv(alice) == 'FROM 张三: hi: there'
# To oneself: the message, then SENT.
alice.sendto(b'TO alice: me', server)
assert recv(alice) == 'FROM alice: me'
assert recv(alice) == 'SENT'

# Every reply fits one datagram of 1024 bytes: the largest message arrives whole, one
# byte more is refused.
fits = 'x' * (1024 - len('FROM 张三: '.encode()))
expect(bob, 'TO alice: ' + fits, 'SENT')
got = recv(alice)
assert got == 'FROM 张三: ' + fits and len(got.encode()) == 1024, len(got)
assert ask(bob, 'TO alice: ' + fits + 'y').startswith('ERROR message too long')

expect(alice, 'WHO', 'USERS alice,张三')
# Not to a stranger (a spoofable source): a short error, never the list.
expect(eve, 'WHO', 'ERROR send HELLO NAME first')

# Names: taken by another address; the same address again is fine; refused shapes.
expect(eve, 'HELLO alice', 'ERROR name taken')
expect(alice, 'HELLO alice', 'OK alice')
for bad in ['HELLO', 'HELLO ', 'HELLO a b', 'HELLO ' + 'x' * 33, 'HELLO a,b', 'HELLO a:b',
            'HELLO a\x01', 'HELLO a\tb', 'HELLO ' + 'é' * 17]:
    assert ask(eve, bad).startswith('ERROR'), bad
expect(eve, 'HELLO ' + 'é' * 16, 'OK ' + 'é' * 16)
# Another HELLO renames the address.
expect(eve, 'HELLO eve', 'OK eve')
expect(alice, 'WHO', 'USERS alice,eve,张三')

# Unknown names, usage errors.
expect(alice, 'TO carol: hi', 'ERROR no user carol')
assert ask(alice, 'TO ' + 'é' * 17 + ': hi').startswith('ERROR'), 'over-long name'
assert ask(alice, 'TO alice hi').startswith('ERROR')
assert ask(alice, 'WHO me').startswith('ERROR')

# Unregistered senders.
stranger = client()
expect(stranger, 'TO alice: hi', 'ERROR send HELLO NAME first')
expect(stranger, 'BYE', 'ERROR send HELLO NAME first')

# Garbage: each gets an ERROR reply and nothing else changes.
expect(stranger, b'\xff\xfe', 'ERROR datagram is not UTF-8')
assert ask(stranger, b'x' * 2000).startswith('ERROR datagram longer than 1024 bytes')
assert ask(stranger, b'x' * 60000).startswith('ERROR datagram longer than 1024 bytes')
expect(stranger, 'hello there', 'ERROR send HELLO NAME first')
expect(stranger, b'', 'ERROR send HELLO NAME first')
assert ask(alice, 'hello there').startswith('ERROR unknown command')
assert ask(alice, 'hello\x00there').startswith('ERROR')

# BYE: the name is gone, then free for another address.
expect(bob, 'BYE', 'OK')
expect(bob, 'BYE', 'ERROR send HELLO NAME first')
expect(alice, 'TO 张三: still there?', 'ERROR no user 张三')
expect(eve, 'HELLO 张三', 'OK 张三')
expect(alice, 'WHO', 'USERS alice,张三')
expect(alice, 'TO 张三: again', 'SENT')
assert recv(eve) == 'FROM alice: again'
print('ok')
"#;

fn chat_scenario(mode: &str) {
    let server = start(&["--mode", mode]);
    run_client(&server, CHAT);
    stop(server);
}

#[test]
fn udp_chat_default_mode() {
    chat_scenario("pool");
}

#[test]
fn udp_chat_single() {
    chat_scenario("single");
}

/// Threading and fork are refused with an error naming the modes that work.
#[test]
fn udp_chat_refuses_threading_and_fork() {
    util::build_examples();
    for mode in ["threading", "fork"] {
        let child = Command::new(example_path("udp_chat"))
            .args(["--addr", "127.0.0.1:0", "--mode", mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn udp_chat");
        let out = util::within(TIMEOUT, move || child.wait_with_output().expect("output"));
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "no listening line");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("use --mode pool or --mode single"), "{err}");
    }
}

/// With `--expiry 1.5`: a registration in use stays past the expiry; once its address goes
/// quiet it expires (never sooner than the expiry after its last datagram), messages to it
/// fail, its address is unregistered, and another address may take the name.
const EXPIRY: &str = r#"
EXPIRY = 1.5
alice, bob, eve = client(), client(), client()
expect(alice, 'HELLO alice', 'OK alice')
expect(bob, 'HELLO bob', 'OK bob')
expect(eve, 'HELLO alice', 'ERROR name taken')

# Both keep using their names for longer than the expiry: they stay.
start = time.monotonic()
while time.monotonic() - start < EXPIRY + 1.0:
    time.sleep(0.2)
    assert ask(alice, 'WHO') == 'USERS alice,bob'
    assert ask(bob, 'WHO') == 'USERS alice,bob'
expect(bob, 'TO alice: still here', 'SENT')
assert recv(alice) == 'FROM bob: still here'

# alice goes quiet; bob (who stays active) sees her expire.
last = time.monotonic()
expect(alice, 'WHO', 'USERS alice,bob')
sent = 0
for _ in range(100):
    reply = ask(bob, 'TO alice: ping')
    if reply == 'ERROR no user alice':
        break
    assert reply == 'SENT', reply
    sent += 1
    time.sleep(0.05)
else:
    raise AssertionError('alice never expired')
assert time.monotonic() - last >= EXPIRY, time.monotonic() - last
# Every ping sent before the expiry reached her.
for _ in range(sent):
    assert recv(alice) == 'FROM bob: ping'
expect(bob, 'WHO', 'USERS bob')
expect(alice, 'TO bob: hello?', 'ERROR send HELLO NAME first')
expect(eve, 'HELLO alice', 'OK alice')
print('ok')
"#;

#[test]
fn udp_chat_registrations_expire() {
    let server = start(&["--expiry", "1.5"]);
    run_client(&server, EXPIRY);
    stop(server);
}

/// With `--max-users 40`: the 41st name is refused until someone leaves; WHO over 40 names
/// of 32 characters is cut to one datagram and says how many it left out.
const FULL: &str = r#"
names = ['user%02d' % i + 'x' * 26 for i in range(40)]
members = [client() for _ in names]
for c, n in zip(members, names):
    expect(c, 'HELLO ' + n, 'OK ' + n)
late = client()
expect(late, 'HELLO late', 'ERROR server full')
# A member may still change its name while the registry is full.
expect(members[1], 'HELLO ' + names[1], 'OK ' + names[1])

assert ask(late, 'WHO') == 'ERROR send HELLO NAME first'
who = ask(members[2], 'WHO')
assert len(who.encode()) <= 1024, len(who)
head, more = who.rsplit(' ... and ', 1)
left_out = int(more[:-len(' more')])
assert more.endswith(' more'), more
listed = head[len('USERS '):].split(',')
assert head.startswith('USERS ') and listed == sorted(names)[:len(listed)], who
assert left_out > 0 and len(listed) + left_out == 40, who

expect(members[0], 'BYE', 'OK')
expect(late, 'HELLO late', 'OK late')
expect(members[0], 'HELLO again', 'ERROR server full')
print('ok')
"#;

#[test]
fn udp_chat_full_registry_and_long_who() {
    let server = start(&["--max-users", "40"]);
    run_client(&server, FULL);
    stop(server);
}

/// The tutorials' "QQ" client (only its contacts point at the test's server, its messages
/// come from the command line instead of `input()`, and its socket has a timeout): it
/// prints each reply as `来自[IP:PORT]的一条消息:...`.
const QQ_CLIENT: &str = r#"
#_*_coding:utf-8_*_
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
BUFSIZE=1024
udp_client_socket=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
udp_client_socket.settimeout(5)
qq_name_dic={
'金老板':(host,int(port)),
'egg':(host,int(port)),
}
qq_name='金老板'
for msg in sys.argv[2:]:
    msg=msg.strip()
    if not msg or not qq_name or qq_name not in qq_name_dic:continue
    udp_client_socket.sendto(msg.encode('utf-8'),qq_name_dic[qq_name])
    back_msg,addr=udp_client_socket.recvfrom(BUFSIZE)
    print('来自[%s:%s]的一条消息:\033[1;44m%s\033[0m' %(addr[0],addr[1],back_msg.decode('utf-8')))
udp_client_socket.close()
"#;

/// Reads the server's next console line, `[127.0.0.1:PORT] text`, and returns the text.
#[track_caller]
fn console_line(server: &mut ExampleServer) -> String {
    let line = server.next_line();
    let rest = line
        .strip_prefix("[127.0.0.1:")
        .unwrap_or_else(|| panic!("not a console line: {line:?}"));
    let (port, text) = rest.split_once("] ").expect("`] ` after the port");
    assert!(port.parse::<u16>().is_ok(), "{line:?}");
    text.to_string()
}

/// `--console`: the tutorials' client talks to an operator. Each datagram that is not a
/// command is printed on stdout and answered with the operator's next stdin line; two
/// clients waiting at once get their own replies, in the printed order; commands still
/// work and are not printed; once stdin ends, such datagrams get `ERROR no operator`.
#[test]
fn udp_chat_console_with_the_tutorials_client() {
    util::build_examples();
    let (mut server, mut stdin) =
        ExampleServer::start_with_stdin("udp_chat", &["--addr", "127.0.0.1:0", "--console"]);
    let addr = server.addr.clone();

    // The tutorials' client sends two messages and prints each reply.
    let client = {
        let addr = addr.clone();
        thread::spawn(move || python(QQ_CLIENT, &[&addr, "你好", "在吗?"]))
    };
    for (want, reply) in [("你好", "你好! 我是客服"), ("在吗?", "在的")] {
        assert_eq!(console_line(&mut server), want);
        writeln!(stdin, "{reply}").unwrap();
        stdin.flush().unwrap();
    }
    let out = client.join().expect("client thread");
    let prefix = format!("来自[{}]的一条消息:\u{1b}[1;44m", addr);
    assert_eq!(
        out,
        format!("{prefix}你好! 我是客服\u{1b}[0m\n{prefix}在的\u{1b}[0m\n")
    );

    // Two clients waiting at once: each reply goes to the datagram printed in its turn.
    // Commands are answered by the server and never printed; control characters are
    // printed escaped, so every datagram is one line.
    let two = thread::spawn(move || {
        python(
            &format!(
                "{PRELUDE}{}",
                r#"
a, b = client(), client()
expect(a, 'HELLO a', 'OK a')
a.sendto('first\nline'.encode(), server)
b.sendto(b'second', server)
got = {recv(a), recv(b)}
assert got == {'re: first\\nline', 're: second'}, got
print('ok')
"#
            ),
            &[&addr],
        )
    });
    for _ in 0..2 {
        let text = console_line(&mut server);
        assert!(text == "first\\nline" || text == "second", "{text:?}");
        writeln!(stdin, "re: {text}").unwrap();
        stdin.flush().unwrap();
    }
    assert_eq!(two.join().expect("client thread"), "ok\n");

    // stdin ends: no operator any more.
    drop(stdin);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_to("还在吗".as_bytes(), server.socket_addr())
        .unwrap();
    let mut buf = [0u8; 1024];
    let (n, from) = c.recv_from(&mut buf).expect("a reply");
    assert_eq!(from, server.socket_addr());
    assert_eq!(&buf[..n], b"ERROR no operator");
    c.send_to(b"WHO", server.socket_addr()).unwrap();
    let n = c.recv(&mut buf).expect("commands still answered");
    assert_eq!(&buf[..n], b"ERROR send HELLO NAME first");
    stop(server);
}

/// Regression (issue 20, item 4): `WHO` was answered to any source, so a 3-byte datagram
/// from an unregistered (spoofable) address returned 1011 bytes once 40 long names were
/// registered. A stranger now never gets more than it sent, or a 32-byte error; and a
/// name costs at most 32 bytes (a name of 33 bytes, or of 17 two-byte characters, is
/// refused).
#[test]
fn udp_chat_does_not_amplify_for_strangers() {
    let server = start(&[]);
    let addr = server.socket_addr();
    let ask = |c: &UdpSocket, msg: &[u8]| -> Vec<u8> {
        c.send_to(msg, addr).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = c.recv_from(&mut buf).expect("one reply per datagram");
        assert_eq!(from, addr);
        buf[..n].to_vec()
    };
    let client = || {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c
    };
    let members: Vec<UdpSocket> = (0..40).map(|_| client()).collect();
    for (i, c) in members.iter().enumerate() {
        let name = format!("member{i:02}{}", "x".repeat(24));
        assert_eq!(
            ask(c, format!("HELLO {name}").as_bytes()),
            format!("OK {name}").as_bytes()
        );
    }
    // A member gets the long list (one datagram).
    assert!(ask(&members[0], b"WHO").len() > 900);
    let stranger = client();
    let too_long_name = format!("HELLO {}", "e".repeat(33));
    let wide_name = format!("HELLO {}", "\u{e9}".repeat(17));
    let probes: [&[u8]; 12] = [
        b"WHO",
        b"WHO me",
        b"BYE",
        b"x",
        b"",
        b"\xff",
        b"TO member00xxxxxxxxxxxxxxxxxxxxxxxx: hi",
        b"HELLO",
        b"HELLO a b",
        b"HELLO a,b",
        too_long_name.as_bytes(),
        wide_name.as_bytes(),
    ];
    for probe in probes {
        let got = ask(&stranger, probe);
        assert!(
            got.len() <= probe.len().max(32),
            "{} bytes for a datagram of {}: {:?}",
            got.len(),
            probe.len(),
            String::from_utf8_lossy(&got)
        );
        assert!(
            got.starts_with(b"ERROR"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Padding a datagram gets a stranger the whole error text.
    let padded = format!("HELLO a b{}", " ".repeat(100));
    let got = String::from_utf8(ask(&stranger, padded.as_bytes())).unwrap();
    assert!(got.starts_with("ERROR a name has 1 to 32 bytes"), "{got}");
    stop(server);
}

//! Metrics, health, readiness and the status page (issue 21), with real engines: the
//! exposition read by Python's `prometheus_client` parsers (text 0.0.4 and OpenMetrics
//! 1.0) and linted by `promtool check metrics` (Debian's `prometheus`; `.ci/run` installs
//! both); the admin listener's HTTP answers; abuse of the admin port; the shutdown delay
//! of an example after SIGTERM; a forking example's children counted in the parent; the
//! `--metrics-addr` line of every example.

mod obs;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use obs::{exchange, get, get_with, sample};
use socketserver::{Flavor, StreamRequest, TcpServer};
use util::{wait_for, ExampleServer};

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";

/// One line-echo exchange on a new connection.
fn echo_once(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, util::TIMEOUT)?;
    s.set_read_timeout(Some(util::TIMEOUT))?;
    s.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply)?;
    Ok(reply)
}

/// A line-echo handler for `serve`: one request per connection.
fn echo_line(req: &mut StreamRequest) -> std::io::Result<()> {
    let mut line = String::new();
    req.read_line(&mut line)?;
    req.write_all(line.as_bytes())
}

/// `promtool`, or `None` with the reason printed (it comes with Debian's `prometheus`).
fn promtool() -> Option<&'static str> {
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Some("promtool"),
        _ => {
            eprintln!(
                "SKIPPED promtool: not installed (apt-get install prometheus; .ci/run does it)"
            );
            None
        }
    }
}

/// `promtool check metrics` finds nothing to say about `body` (skipped, saying so, where
/// promtool is not installed).
fn promtool_check(body: &str) {
    let Some(tool) = promtool() else {
        return;
    };
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = util::within(util::TIMEOUT, move || child.wait_with_output().unwrap());
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python parsers' reading of an exposition: JSON of the samples the tests check.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
body = sys.stdin.read()
parse = om if sys.argv[1] == "om" else text
out = {"families": 0, "listeners": []}
for fam in parse(body):
    out["families"] += 1
    for s in fam.samples:
        key = s.name
        if s.name == "socketserver_request_duration_seconds_bucket":
            key += "{le=" + s.labels["le"] + "}"
        elif "reason" in s.labels:
            key += "{reason=" + s.labels["reason"] + "}"
        elif "state" in s.labels:
            key += "{state=" + s.labels["state"] + "}"
        out[key] = s.value
        if "listener" in s.labels and s.labels["listener"] not in out["listeners"]:
            out["listeners"].append(s.labels["listener"])
print(json.dumps(out))
"#;

fn parse_with_python(body: &str, format: &str) -> serde_json::Value {
    let mut child = Command::new("python3")
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = util::within(util::TIMEOUT, move || child.wait_with_output().unwrap());
    assert!(
        out.status.success(),
        "prometheus_client ({format}) rejected the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn exposition_counts_are_exact_and_parsers_and_promtool_accept_it() {
    // A name that needs escaping in a label value.
    let name = "echo \"one\"\\two\nthree";
    let server = TcpServer::builder()
        .flavor(Flavor::threading())
        .listener_name(name)
        .admin("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .unwrap();
    let (addr, admin) = (server.local_addr().unwrap(), server.admin_addr().unwrap());
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve(echo_line));

    const N: u64 = 25;
    for i in 0..N {
        assert_eq!(echo_once(addr, "hello\n").unwrap(), "hello\n", "client {i}");
    }
    wait_for(
        "every request counted",
        || handle.stats(),
        |s| s.completed == N && s.active == 0,
    );

    let text = get(admin, "/metrics");
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let om = get_with(admin, "/metrics", OPENMETRICS);
    assert_eq!(
        om.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("# EOF\n"));

    for (format, body) in [("text", &text.body), ("om", &om.body)] {
        let v = parse_with_python(body, format);
        let n = N as f64;
        assert_eq!(
            v["listeners"],
            serde_json::json!([name]),
            "{format}: label escaping"
        );
        assert_eq!(v["socketserver_connections_accepted_total"], n, "{format}");
        assert_eq!(v["socketserver_requests_total"], n, "{format}");
        assert_eq!(
            v["socketserver_request_duration_seconds_count"], n,
            "{format}"
        );
        assert_eq!(
            v["socketserver_request_duration_seconds_bucket{le=+Inf}"], n,
            "{format}: _count equals the +Inf bucket"
        );
        assert_eq!(v["socketserver_received_bytes_total"], 6.0 * n, "{format}");
        assert_eq!(v["socketserver_sent_bytes_total"], 6.0 * n, "{format}");
        assert_eq!(v["socketserver_connections_active"], 0.0, "{format}");
        assert_eq!(v["socketserver_ready"], 1.0, "{format}");
        assert_eq!(
            v["socketserver_connections_rejected_total{reason=verify}"], 0.0,
            "{format}"
        );
        assert!(v["families"].as_u64().unwrap() >= 15, "{format}: {v}");
    }

    promtool_check(&text.body);

    handle.shutdown();
    serving.join().unwrap().unwrap();
}

/// One connection of the push test: sends `line`, returns all it reads until the end.
fn push_exchange(addr: SocketAddr, line: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, util::TIMEOUT).unwrap();
    s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut all = String::new();
    // The server closes (or shuts the socket down) when its handler is done.
    let _ = s.read_to_string(&mut all);
    all
}

#[test]
fn push_counters_are_exported_exactly() {
    use socketserver::push::{Overflow, PushLimits};
    let server = TcpServer::builder()
        .flavor(Flavor::threading())
        .listener_name("push")
        .admin("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .unwrap();
    let (addr, admin) = (server.local_addr().unwrap(), server.admin_addr().unwrap());
    let handle = server.shutdown_handle();
    // Each connection asks for one outcome of a push. While the handler writes a reply
    // (until it reads again, or its request ends), pushes are held (they count in the backlog) until the reply ends, which makes the
    // full backlog deterministic: "held\n" fills a 5-byte backlog, "more\n" finds it full.
    let serving = thread::spawn(move || {
        server.serve(|req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?;
            let pusher = req.pusher();
            let overflow = match line.as_str() {
                "push\n" => {
                    pusher.push(b"pushed\n")?; // 7 bytes, sent at once
                    return req.write_all(b"ok\n");
                }
                "drop\n" => Overflow::DropMessage,
                "overflow\n" => Overflow::Close,
                // No time at all to take bytes: the full backlog is a stall at once.
                "stall\n" => Overflow::Wait(Duration::ZERO),
                _ => return req.write_all(b"?\n"),
            };
            pusher.set_limits(PushLimits::default().max_backlog(5).overflow(overflow));
            req.write_all(b"reply\n")?;
            req.flush()?; // on the wire before a push may close the connection
            pusher.push(b"held\n")?;
            assert!(
                pusher.push(b"more\n").is_err(),
                "{line}: the backlog is full"
            );
            Ok(())
        })
    });

    assert_eq!(push_exchange(addr, "push\n"), "pushed\nok\n");
    // The message held for the reply goes out after it; the one past the limit never.
    assert_eq!(push_exchange(addr, "drop\n"), "reply\nheld\n");
    // The connection is closed: the held message with it.
    assert_eq!(push_exchange(addr, "overflow\n"), "reply\n");
    assert_eq!(push_exchange(addr, "stall\n"), "reply\n");
    wait_for(
        "every connection counted",
        || handle.stats(),
        |s| s.completed == 4 && s.active == 0,
    );
    let s = handle.stats();
    assert_eq!(
        (
            s.pushed_bytes,
            s.push_dropped,
            s.push_overflows,
            s.push_stalls
        ),
        (7 + 3 * 5, 1, 1, 1)
    );

    let text = get(admin, "/metrics");
    let om = get_with(admin, "/metrics", OPENMETRICS);
    for (format, body) in [("text", &text.body), ("om", &om.body)] {
        let v = parse_with_python(body, format);
        assert_eq!(v["socketserver_pushed_bytes_total"], 22.0, "{format}");
        assert_eq!(
            v["socketserver_push_messages_dropped_total"], 1.0,
            "{format}"
        );
        for reason in ["overflow", "stall"] {
            assert_eq!(
                v[format!("socketserver_push_connections_closed_total{{reason={reason}}}")],
                1.0,
                "{format}: {reason}"
            );
        }
    }
    assert!(
        om.body.contains("# UNIT socketserver_pushed_bytes bytes\n"),
        "{}",
        om.body
    );
    promtool_check(&text.body);

    handle.shutdown();
    serving.join().unwrap().unwrap();
}

#[test]
fn admin_answers_as_http_says_and_readiness_follows_the_server() {
    let server = TcpServer::builder()
        .listener_name("web")
        .admin("127.0.0.1:0")
        .shutdown_delay(Duration::from_millis(1500))
        .bind("127.0.0.1:0")
        .unwrap();
    let (addr, admin) = (server.local_addr().unwrap(), server.admin_addr().unwrap());
    let handle = server.shutdown_handle();

    // Bound, not serving yet: alive neither.
    assert_eq!(get(admin, "/readyz").status, 503);
    assert_eq!(get(admin, "/livez").status, 503);
    let serving = thread::spawn(move || {
        server.serve_requests(|req: &mut StreamRequest| {
            let mut line = String::new();
            if req.read_line(&mut line)? == 0 {
                return Ok(socketserver::Next::Close);
            }
            req.write_all(line.as_bytes())?;
            Ok(socketserver::Next::Continue)
        })
    });
    wait_for("ready", || get(admin, "/readyz").status, |s| *s == 200);
    assert_eq!(get(admin, "/livez").body, "ok\n");
    assert_eq!(echo_once(addr, "x\n").unwrap(), "x\n");

    let t = |raw: &[u8]| exchange(admin, raw, util::TIMEOUT).unwrap();
    assert_eq!(t(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n").status, 404);
    let post = t(b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
    let head = t(b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        head.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );
    assert_eq!(t(b"\x16\x03\x01garbage\r\n\r\n").status, 400);
    assert_eq!(
        t(b"GET /metrics HTTP/1.1\r\n\r\n").status,
        400,
        "HTTP/1.1 needs Host"
    );
    assert_eq!(t(b"GET /metrics HTTP/1.0\r\n\r\n").status, 200);
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.resize(9000, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(t(&big).status, 431);
    // The query string is not part of the path.
    assert_eq!(
        t(b"GET /livez?verbose HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );

    let page = get(admin, "/status");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("<meta http-equiv=\"refresh\""));
    assert!(page.body.contains("<h2>web</h2>"));
    assert!(!page.body.contains("<script"));
    let json = get(admin, "/status.json");
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["ready"], true);
    assert!(v["uptime_seconds"].is_u64());
    let l = &v["listeners"][0];
    assert_eq!(l["address"], addr.to_string());
    assert_eq!(l["name"], "web");
    assert_eq!(l["accepted"], 1);
    assert!(l["requests"].as_u64().unwrap() >= 1);
    assert!(l["active"].is_u64());

    // Shutdown with a delay: not ready at once, still alive and serving new clients.
    handle.shutdown();
    assert_eq!(get(admin, "/readyz").status, 503);
    assert_eq!(get(admin, "/livez").status, 200);
    assert_eq!(echo_once(addr, "still\n").unwrap(), "still\n");
    let m = get(admin, "/metrics").body;
    assert_eq!(
        sample(&m, "socketserver_ready", "listener=\"web\""),
        Some(0.0)
    );
    serving.join().unwrap().unwrap();
    // `serve` returned: the server's admin listener went with it.
    assert!(TcpStream::connect_timeout(&admin, Duration::from_secs(1)).is_err());
}

#[test]
fn admin_port_abuse_leaves_scrapes_and_the_main_port_answering() {
    let server = TcpServer::builder()
        .admin("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .unwrap();
    let (addr, admin) = (server.local_addr().unwrap(), server.admin_addr().unwrap());
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve(echo_line));
    wait_for("ready", || get(admin, "/readyz").status, |s| *s == 200);

    // 50 connections that never say anything, kept open.
    let silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect_timeout(&admin, util::TIMEOUT).unwrap())
        .collect();
    // Garbage, and a 200 KB header (sent from a thread: the listener answers 431 and
    // closes long before the client is done, whose writes then fail).
    let garbage = exchange(
        admin,
        b"\x00\xff\x00\xffnot http at all\r\n\r\n",
        util::TIMEOUT,
    );
    assert_eq!(garbage.unwrap().status, 400);
    let big = thread::spawn(move || {
        let mut s = TcpStream::connect_timeout(&admin, util::TIMEOUT).unwrap();
        s.set_write_timeout(Some(util::TIMEOUT)).unwrap();
        s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
        let mut raw = b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        raw.resize(200 * 1024, b'b');
        raw.extend_from_slice(b"\r\n\r\n");
        let _ = s.write_all(&raw);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        answer
    });

    // A scrape still answers within a second, and the main port serves.
    let scrape = exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(1),
    )
    .expect("a scrape within a second, beside 50 silent connections");
    assert_eq!(scrape.status, 200);
    assert!(scrape
        .body
        .contains("socketserver_connections_accepted_total"));
    assert_eq!(echo_once(addr, "main\n").unwrap(), "main\n");
    let answer = big.join().unwrap();
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1.1 431 "),
            "{:?}",
            String::from_utf8_lossy(&answer[..40.min(answer.len())])
        );
    }
    // The silent ones are closed at their 5 s deadline (each reads EOF, within bounds).
    for mut s in silent {
        s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    assert_eq!(echo_once(addr, "after\n").unwrap(), "after\n");
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

/// An example started with the admin listener on: the server, its admin address.
fn example_with_metrics(name: &str, extra: &[&str]) -> (ExampleServer, SocketAddr) {
    util::build_examples();
    let mut args = vec!["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = ExampleServer::start(name, &args);
    let line = server.next_line();
    let admin = line
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("{name}: second line {line:?}, not `metrics on ADDR`"))
        .parse()
        .unwrap();
    (server, admin)
}

fn sigterm(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[test]
fn sigterm_with_a_shutdown_delay_ends_readiness_at_once_and_serves_on() {
    let (mut server, admin) = example_with_metrics("echo", &["--shutdown-delay", "2"]);
    let addr = server.socket_addr();
    wait_for("ready", || get(admin, "/readyz").status, |s| *s == 200);
    assert_eq!(echo_once(addr, "before\n").unwrap(), "before\n");

    sigterm(server.pid());
    let sent = Instant::now();
    wait_for(
        "/readyz 503",
        || get(admin, "/readyz").status,
        |s| *s == 503,
    );
    let noticed = sent.elapsed();
    assert!(
        noticed < Duration::from_millis(100),
        "/readyz answered 503 only {noticed:?} after SIGTERM"
    );
    // New clients are still served through the delay.
    let mut served = 0;
    while sent.elapsed() < Duration::from_millis(1500) {
        assert_eq!(echo_once(addr, "during\n").unwrap(), "during\n");
        served += 1;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 10, "{served} clients served during the delay");
    let status = server.wait_exit(util::TIMEOUT);
    assert!(status.success(), "exit status {status:?}");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "exited {:?} after SIGTERM, before its 2 s delay",
        sent.elapsed()
    );
}

#[test]
fn forked_children_count_in_the_parent_s_metrics() {
    let (server, admin) = example_with_metrics("echo", &["--mode", "fork"]);
    let addr = server.socket_addr();
    const N: usize = 12;
    for _ in 0..N {
        assert_eq!(echo_once(addr, "forked\n").unwrap(), "forked\n");
    }
    // Each connection is one request in a forking server (its handler runs the
    // connection's requests in a loop); each child counts its own into shared memory.
    let m = wait_for(
        "the children's requests in the parent's figures",
        || get(admin, "/metrics").body,
        |m| {
            sample(m, "socketserver_requests_total", "") == Some(N as f64)
                && sample(m, "socketserver_workers", "state=\"busy\"") == Some(0.0)
        },
    );
    assert_eq!(
        sample(&m, "socketserver_connections_accepted_total", ""),
        Some(N as f64)
    );
    assert_eq!(
        sample(&m, "socketserver_received_bytes_total", ""),
        Some(7.0 * N as f64)
    );
    assert_eq!(
        sample(&m, "socketserver_sent_bytes_total", ""),
        Some(7.0 * N as f64)
    );
    assert_eq!(
        sample(&m, "socketserver_request_duration_seconds_count", ""),
        Some(N as f64)
    );
    assert_eq!(
        sample(&m, "socketserver_connection_duration_seconds_count", ""),
        Some(N as f64)
    );
    assert_eq!(
        sample(&m, "socketserver_build_info", "flavor=\"fork\""),
        Some(1.0)
    );
}

#[test]
fn every_example_server_announces_its_metrics_address() {
    let ftp_root = tempfile::tempdir().unwrap();
    let root = ftp_root.path().to_str().unwrap().to_string();
    let examples: &[(&str, &[&str])] = &[
        ("echo", &[]),
        ("upper", &[]),
        ("hello", &[]),
        ("framed_echo", &[]),
        ("whoami", &[]),
        ("chat", &[]),
        ("kv", &[]),
        ("json_rpc", &[]),
        ("remote_cmd", &[]),
        ("echo_udp", &[]),
        ("upper_udp", &[]),
        ("time_udp", &[]),
        ("uptime_udp", &[]),
        ("udp_chat", &[]),
        ("ftp_server", &["--root", &root]),
    ];
    for (name, extra) in examples {
        let (server, admin) = example_with_metrics(name, extra);
        let m = wait_for(
            &format!("{name} ready"),
            || get(admin, "/metrics").body,
            |m| sample(m, "socketserver_ready", "") == Some(1.0),
        );
        assert!(
            m.contains(&format!("listener=\"{}\"", server.addr)),
            "{name}: the listener label is its address"
        );
        drop(server);
    }
}

/// Reads the notifications sent to `sock` for `limit`.
fn notifications(sock: &UnixDatagram, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

#[test]
fn watchdog_pings_only_while_the_accept_loop_takes_its_work() {
    util::build_examples();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    // The single flavour serves on the accept loop's thread: a client that holds its
    // request unfinished stops the loop, and a second client then waits in the backlog.
    let server = ExampleServer::start_with_env(
        "echo",
        &["--addr", "127.0.0.1:0", "--mode", "single"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let idle = notifications(&sock, Duration::from_millis(1200));
    assert!(idle.iter().any(|m| m.contains("READY=1")), "{idle:?}");
    assert!(
        pings(&idle) >= 4,
        "about 8 pings in 1.2 s at half of 300 ms: {idle:?}"
    );

    let mut stall = TcpStream::connect_timeout(&server.socket_addr(), util::TIMEOUT).unwrap();
    stall.write_all(b"no newline yet").unwrap();
    let waiting = TcpStream::connect_timeout(&server.socket_addr(), util::TIMEOUT).unwrap();
    // Two looks (300 ms) to call it stuck, and a ping already on its way: then none.
    let _ = notifications(&sock, Duration::from_millis(500));
    let stuck = notifications(&sock, Duration::from_millis(1000));
    assert_eq!(
        pings(&stuck),
        0,
        "pinged while the loop was stuck: {stuck:?}"
    );

    // Freed (the first request ends, its client leaves, the waiting one is taken), the
    // pings come back.
    stall.write_all(b"\n").unwrap();
    drop(stall);
    let back = notifications(&sock, Duration::from_millis(1000));
    assert!(pings(&back) >= 2, "{back:?}");
    drop(waiting);
    drop(server);
}

/// The hand-off pool (a queue between the accept loop and the workers: `Flavor::queue`, and
/// what a socket shared with systemd or a restart runs) shows its queue and its workers:
/// `socketserver_queue_depth` and `socketserver_queue_capacity`, read by the parsers and
/// accepted by promtool; with one worker inside a request, two more connections wait in
/// the queue and the depth says 2.
#[test]
fn the_hand_off_pool_exports_its_queue() {
    let server = TcpServer::builder()
        .flavor(Flavor::fixed_pool(1).queue(4))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    let handle = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve(echo_line));
    // The one worker reads a line the first client has not sent yet: busy.
    let mut held = std::net::TcpStream::connect(addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    wait_for("the worker taken", || handle.stats(), |s| s.active == 1);
    let waiting: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    wait_for("two more accepted", || handle.stats(), |s| s.accepted == 3);
    let body = metrics.render(socketserver::MetricsFormat::Prometheus);
    for (format, text) in [
        ("text", body.clone()),
        (
            "om",
            metrics.render(socketserver::MetricsFormat::OpenMetrics),
        ),
    ] {
        let v = parse_with_python(&text, format);
        assert_eq!(v["socketserver_queue_capacity"], 4.0, "{format}: {text}");
        assert_eq!(v["socketserver_queue_depth"], 2.0, "{format}: {text}");
        assert_eq!(
            v["socketserver_workers{state=busy}"], 1.0,
            "{format}: {text}"
        );
    }
    promtool_check(&body);
    std::io::Write::write_all(&mut held, b"go\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&held), &mut line).unwrap();
    assert_eq!(line, "go\n");
    drop((held, waiting));
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

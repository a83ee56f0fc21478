//! The forking flavour, for every transport, in helper processes; and what else needs a
//! process of its own (a signal delivered to the one thread that reads).
//!
//! `fork` belongs in a process whose other threads hold no locks, and the test harness is
//! threaded, so this test has its own `main` (`harness = false`). Run by cargo, it starts
//! itself again as `forking __serve ...`: that helper process runs a forking server and,
//! after shutdown, reports what only it can see (whether a child it forked itself, not the
//! server, is still there to be reaped; whether any child is left). The tests drive the
//! helper over real sockets and stop it with SIGTERM, by its pid.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{
    DatagramRequest, Flavor, StreamRequest, TcpServer, UdpServer, UnixDatagramServer,
    UnixStreamServer,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The helper's own server, for handlers (in forked children) that stop it.
static HANDLE: std::sync::OnceLock<socketserver::ShutdownHandle> = std::sync::OnceLock::new();

// ---- the helper process -------------------------------------------------------------------

/// The stream handler: echo a line; `fail` errs, `panic` panics, `hold` keeps the
/// connection (and so its child) until the client closes.
fn stream_handler(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.read_line(&mut line)?;
    match line.as_str() {
        "fail\n" => Err(io::Error::other("asked to fail")),
        "panic\n" => panic!("asked to panic"),
        "stop\n" => {
            HANDLE.get().expect("handle set").shutdown();
            req.write_all(b"stopping\n")
        }
        "later\n" => {
            // Asks for shutdown when the client says so, later.
            req.write_all(b"ready\n")?;
            let mut next = String::new();
            req.read_line(&mut next)?;
            if next == "stop\n" {
                HANDLE.get().expect("handle set").shutdown();
            }
            req.write_all(b"stopping\n")
        }
        "hold\n" => {
            req.write_all(format!("held by {}\n", std::process::id()).as_bytes())?;
            io::copy(req, &mut io::sink()).map(drop)
        }
        _ => req.write_all(line.as_bytes()),
    }
}

fn dgram_handler(req: &mut DatagramRequest) -> io::Result<()> {
    match req.packet() {
        b"fail\n" => Err(io::Error::other("asked to fail")),
        b"panic\n" => panic!("asked to panic"),
        _ => {
            let data = req.packet().to_vec();
            req.reply(&data)
        }
    }
}

fn helper(transport: &str, limit: usize, path: &str) -> io::Result<()> {
    // A child of the program itself, already ended: a server that reaps with waitpid(-1)
    // would take its exit status away from us.
    let mut foreign = Command::new("sh").args(["-c", "exit 72"]).spawn()?;
    let deadline = Instant::now() + TIMEOUT;
    while proc_state(foreign.id()) != Some('Z') {
        assert!(Instant::now() < deadline, "foreign child never ended");
        thread::sleep(Duration::from_millis(1));
    }
    let flavor = Flavor::forking().limit(limit);
    let grace = Duration::from_secs(5);
    let announce = |addr: String, h: &socketserver::ShutdownHandle| -> io::Result<()> {
        socketserver::shutdown_on_signals(h)?;
        let _ = HANDLE.set(h.clone());
        println!("listening on {addr}");
        io::stdout().flush()
    };
    // Builds, announces and serves one forking server; yields its handle after shutdown.
    macro_rules! serve {
        ($server:ty, $bind:expr, $s:ident => $addr:expr, $handler:expr) => {{
            let $s = <$server>::builder()
                .flavor(flavor)
                .grace_period(grace)
                .bind($bind)?;
            let h = $s.shutdown_handle();
            announce($addr, &h)?;
            let s = $s;
            s.serve($handler)?;
            h
        }};
    }
    let handle = match transport {
        "tcp" => serve!(TcpServer, "127.0.0.1:0", s => s.local_addr()?.to_string(), stream_handler),
        "unix" => serve!(UnixStreamServer, path, s => path.to_string(), stream_handler),
        "udp" => serve!(UdpServer, "127.0.0.1:0", s => s.local_addr()?.to_string(), dgram_handler),
        "unixdgram" => serve!(UnixDatagramServer, path, s => path.to_string(), dgram_handler),
        other => panic!("unknown transport {other}"),
    };
    let foreign_status = match foreign.try_wait() {
        Ok(Some(status)) => format!("{:?}", status.code()),
        Ok(None) => "running".to_string(),
        Err(e) => format!("gone ({e})"),
    };
    let s = handle.stats();
    println!("foreign {foreign_status}");
    println!("children {}", children_of(std::process::id()));
    println!(
        "stats completed={} errors={} panics={} threads={}",
        s.completed, s.handler_errors, s.panics, s.threads
    );
    Ok(())
}

/// One connection on a single-flavour server whose handler reads with plain `read` under a
/// read timeout, in a process with one thread (so a process-directed signal interrupts
/// exactly that read). SIGUSR1 has a handler installed with SA_RESTART, which Linux ignores
/// for `recv` under `SO_RCVTIMEO`.
fn eintr_helper() -> io::Result<()> {
    let usr1 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone())?;
    let server = TcpServer::builder()
        .flavor(Flavor::single())
        .end_idle_on_shutdown(false)
        .read_timeout(Some(TIMEOUT))
        .bind("127.0.0.1:0")?;
    let handle = server.shutdown_handle();
    println!("listening on {}", server.local_addr()?);
    io::stdout().flush()?;
    server.serve(move |req: &mut StreamRequest| {
        // Served once: the server stops after this connection, however it ends.
        let mut buf = [0u8; 64];
        let result = loop {
            match req.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = req.write_all(&buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        handle.shutdown();
        result
    })?;
    println!(
        "signal seen {}",
        usr1.load(std::sync::atomic::Ordering::SeqCst)
    );
    Ok(())
}

// ---- /proc helpers --------------------------------------------------------------------------

/// The state letter of a process (`Z` for a zombie), from /proc/PID/stat.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// How many processes (zombies included) have `pid` as their parent.
fn children_of(pid: u32) -> usize {
    util::child_pids(pid).len()
}

// ---- the driving side -----------------------------------------------------------------------

struct Helper {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Helper {
    fn start(transport: &str, limit: usize) -> Helper {
        let dir = tempfile::Builder::new().prefix("ssf").tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut h = Helper::spawn(&[
            "__serve",
            transport,
            &limit.to_string(),
            path.to_str().unwrap(),
        ]);
        h._dir = Some(dir);
        h
    }

    /// Starts this binary again with `args` and waits for its `listening on` line.
    fn spawn(args: &[&str]) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(TIMEOUT)
            .expect("helper announced nothing");
        let addr = first
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        Helper {
            child,
            addr,
            lines,
            _dir: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status and the report lines.
    fn stop(self) -> Vec<String> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.wait()
    }

    /// Waits for the helper to exit by itself; asserts status 0; returns its report lines.
    fn wait(mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("helper did not exit after SIGTERM");
            }
            thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "helper exited with {status}");
        // The report lines come through the reader thread: read until the pipe closes.
        let mut report = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(TIMEOUT) {
            report.push(line);
        }
        report
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

trait Conn: Read + Write {}
impl<X: Read + Write> Conn for X {}

fn connect(transport: &str, addr: &str) -> Box<dyn Conn> {
    if transport == "tcp" {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Box::new(s)
    } else {
        let s = UnixStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Box::new(s)
    }
}

fn read_line(c: &mut dyn Conn) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\n") {
        match c.read(&mut b) {
            Ok(0) => break,
            Ok(_) => got.push(b[0]),
            Err(e) => panic!("read failed after {got:?}: {e}"),
        }
    }
    String::from_utf8(got).unwrap()
}

/// One datagram exchange; `None` sends without waiting for a reply.
fn datagram(
    transport: &str,
    addr: &str,
    dir: &std::path::Path,
    data: &[u8],
    wait: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    if transport == "udp" {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send_to(data, addr).unwrap();
        if !wait {
            return vec![];
        }
        let n = s.recv(&mut buf).expect("reply");
        buf.truncate(n);
    } else {
        let me = dir.join(format!("c{}", rand_suffix()));
        let s = UnixDatagram::bind(&me).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send_to(data, addr).unwrap();
        if !wait {
            return vec![];
        }
        let n = s.recv(&mut buf).expect("reply");
        buf.truncate(n);
    }
    buf
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// test_ForkingTCPServer & co, and ErrorHandlerTest.test_forking_*: three clients echo a
/// line, an error and a panic are counted from the children's exit status, no zombie is left
/// while idle nor after shutdown, and a child the server did not fork is left alone.
fn echo_errors_and_reaping(transport: &str) {
    let h = Helper::start(transport, 40);
    let dir = tempfile::tempdir().unwrap();
    let stream = matches!(transport, "tcp" | "unix");
    for bad in ["fail\n", "panic\n"] {
        if stream {
            let mut c = connect(transport, &h.addr);
            c.write_all(bad.as_bytes()).unwrap();
            assert_eq!(
                read_line(&mut *c),
                "",
                "the client sees the connection closed"
            );
        } else {
            datagram(transport, &h.addr, dir.path(), bad.as_bytes(), false);
        }
    }
    for i in 0..3 {
        let line = format!("hello world {i}\n");
        let got = if stream {
            let mut c = connect(transport, &h.addr);
            c.write_all(line.as_bytes()).unwrap();
            read_line(&mut *c).into_bytes()
        } else {
            datagram(transport, &h.addr, dir.path(), line.as_bytes(), true)
        };
        assert_eq!(got, line.as_bytes());
    }
    // Children are reaped as soon as they end (SIGCHLD), with no new connection to prompt it;
    // only the foreign child (a zombie the server must not reap) remains.
    let pid = h.pid();
    wait_for("children reaped while idle", || children_of(pid) == 1);
    let report = h.stop();
    assert!(
        report.contains(&"foreign Some(72)".to_string()),
        "{report:?}"
    );
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
    assert!(
        report.contains(&"stats completed=5 errors=1 panics=1 threads=0".to_string()),
        "{report:?}"
    );
}

/// max_children holds *before* fork: with a limit of 2, a third client is not served until
/// one of the first two leaves; the helper never has more than 2 server children.
fn max_children_enforced_before_fork() {
    let h = Helper::start("tcp", 2);
    let mut a = connect("tcp", &h.addr);
    let mut b = connect("tcp", &h.addr);
    for c in [&mut a, &mut b] {
        c.write_all(b"hold\n").unwrap();
        assert!(read_line(&mut **c).starts_with("held by "));
    }
    let mut third = TcpStream::connect(&h.addr).unwrap();
    third.write_all(b"hold\n").unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        third.read(&mut buf).is_err(),
        "a third child was forked beyond the limit"
    );
    assert_eq!(
        children_of(h.pid()),
        3,
        "2 server children + the foreign zombie"
    );
    drop(a);
    third.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert!(read_line(&mut third).starts_with("held by "));
    drop((b, third));
    let report = h.stop();
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
}

/// Graceful exit with a connection held open: the client reads EOF, the helper exits 0 and
/// leaves no child.
fn shutdown_with_open_connection() {
    let h = Helper::start("tcp", 4);
    let mut c = connect("tcp", &h.addr);
    c.write_all(b"hold\n").unwrap();
    let held = read_line(&mut *c);
    let child: u32 = held
        .trim()
        .strip_prefix("held by ")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(child, h.pid(), "served by a forked child");
    let report = h.stop();
    assert_eq!(read_line(&mut *c), "", "EOF at shutdown");
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
}

/// gh-83978 in a forking server: a handler (in a child process) asks for shutdown; the
/// parent stops serving, without a signal and without spinning, and exits cleanly.
fn shutdown_from_forked_child() {
    let h = Helper::start("tcp", 4);
    let mut c = connect("tcp", &h.addr);
    c.write_all(b"stop\n").unwrap();
    assert_eq!(read_line(&mut *c), "stopping\n");
    let report = h.wait();
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
}

/// The pid in a `held by PID` reply.
fn held_by(line: &str) -> u32 {
    line.trim()
        .strip_prefix("held by ")
        .unwrap_or_else(|| panic!("not a hold reply: {line:?}"))
        .parse()
        .unwrap()
}

fn kill(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Issue 13, finding 2: a child killed without closing its connection leaves its client
/// hanging no longer than it takes the parent to reap it, even while a child forked after
/// it lives (that sibling used to inherit, and keep open, the parent's copy of the first
/// connection).
fn a_killed_child_s_client_gets_eof_while_a_sibling_lives() {
    let h = Helper::start("tcp", 4);
    let mut a = connect("tcp", &h.addr);
    a.write_all(b"hold\n").unwrap();
    let child_a = held_by(&read_line(&mut *a));
    let mut b = connect("tcp", &h.addr);
    b.write_all(b"hold\n").unwrap();
    let child_b = held_by(&read_line(&mut *b));
    assert_ne!(child_a, child_b);
    kill("KILL", child_a);
    assert_eq!(read_line(&mut *a), "", "EOF while the sibling still runs");
    assert_eq!(proc_state(child_b).map(|s| s != 'Z'), Some(true));
    drop(b);
    let report = h.stop();
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
}

/// Issue 13, finding 6: a forked child stops on SIGTERM like any process (it inherited the
/// parent's signal-hook handlers, which only wrote to a pipe nobody in the child reads).
fn children_stop_on_sigterm() {
    let h = Helper::start("tcp", 4);
    let mut a = connect("tcp", &h.addr);
    a.write_all(b"hold\n").unwrap();
    let child = held_by(&read_line(&mut *a));
    kill("TERM", child);
    assert_eq!(read_line(&mut *a), "", "the child ended at SIGTERM");
    let report = h.stop();
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
}

/// The descriptors a process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The number of descriptors the system call `pid` is blocked in was given, when it is a
/// poll (its second argument), from /proc/PID/syscall.
fn polled_fds(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().nth(2).map(str::to_string)
}

/// Issue 13, finding 8: out of descriptors, the forking parent backs off from `accept`;
/// a shutdown asked by a child then was ignored (and made every back-off return at once,
/// a spin). The parent now stops.
fn shutdown_from_a_child_during_accept_backoff() {
    let h = Helper::start("tcp", 4);
    let mut a = connect("tcp", &h.addr);
    a.write_all(b"later\n").unwrap();
    assert_eq!(read_line(&mut *a), "ready\n");
    // No descriptor left for the parent's next accept.
    let n = open_fds(h.pid());
    let ok = Command::new("prlimit")
        .args(["--pid", &h.pid().to_string(), &format!("--nofile={n}:{n}")])
        .status()
        .unwrap();
    assert!(ok.success());
    let _waiting = TcpStream::connect(&h.addr).unwrap();
    // The back-off waits in poll on the wake socket alone.
    let pid = h.pid();
    wait_for("the parent in its accept back-off", || {
        polled_fds(pid).as_deref() == Some("0x1")
    });
    a.write_all(b"stop\n").unwrap();
    assert_eq!(read_line(&mut *a), "stopping\n");
    let report = h.wait();
    assert!(report.contains(&"children 0".to_string()), "{report:?}");
}

/// The system call number `pid`'s main thread is blocked in, from /proc/PID/syscall.
fn syscall_nr(pid: u32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Issue 13: with `SO_RCVTIMEO` set, a signal interrupting `recv` made `req.read(..)?`
/// fail with `Interrupted`; the request retries it inside.
fn interrupted_reads_are_retried() {
    // recvfrom(2), where std's `read` on a socket blocks.
    let recvfrom = if cfg!(target_arch = "x86_64") {
        45
    } else if cfg!(target_arch = "aarch64") {
        207
    } else {
        println!("SKIPPED interrupted_reads_are_retried: no recvfrom number for this architecture");
        return;
    };
    let h = Helper::spawn(&["__eintr"]);
    let mut c = connect("tcp", &h.addr);
    c.write_all(b"one\n").unwrap();
    assert_eq!(read_line(&mut *c), "one\n");
    let pid = h.pid();
    wait_for("the handler blocked in recv", || {
        syscall_nr(pid) == Some(recvfrom)
    });
    kill("USR1", pid);
    c.write_all(b"two\n").unwrap();
    assert_eq!(read_line(&mut *c), "two\n", "the read survived the signal");
    drop(c);
    let report = h.wait();
    assert!(
        report.contains(&"signal seen true".to_string()),
        "{report:?}"
    );
}

/// test_shutdown for the forking flavour (in the helper: no fork happens without clients,
/// so the threads here are harmless): 20 servers started and stopped back to back, every
/// other one stopped before `serve` starts.
fn start_stop_twenty() {
    let servers: Vec<_> = (0..20)
        .map(|i| {
            let s = TcpServer::builder()
                .flavor(Flavor::forking())
                .bind("127.0.0.1:0")
                .unwrap();
            let h = s.shutdown_handle();
            if i % 2 == 0 {
                h.shutdown();
            }
            (h, thread::spawn(move || s.serve(stream_handler)))
        })
        .collect();
    for (h, t) in servers {
        h.shutdown();
        t.join().unwrap().unwrap();
        assert_eq!(h.stats().threads, 0);
    }
}

fn twenty_servers_start_and_stop() {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("__startstop")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "started and stopped 20\n"
    );
}

/// A test of this file's own runner.
type TestFn = Box<dyn Fn()>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__startstop") {
        start_stop_twenty();
        println!("started and stopped 20");
        return;
    }
    if args.get(1).map(String::as_str) == Some("__eintr") {
        if let Err(e) = eintr_helper() {
            eprintln!("helper failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("__serve") {
        let limit = args[3].parse().unwrap();
        if let Err(e) = helper(&args[2], limit, &args[4]) {
            eprintln!("helper failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let filter: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let tests: Vec<(&str, TestFn)> = vec![
        (
            "tcp_echo_errors_and_reaping",
            Box::new(|| echo_errors_and_reaping("tcp")),
        ),
        (
            "unix_echo_errors_and_reaping",
            Box::new(|| echo_errors_and_reaping("unix")),
        ),
        (
            "udp_echo_errors_and_reaping",
            Box::new(|| echo_errors_and_reaping("udp")),
        ),
        (
            "unix_dgram_echo_errors_and_reaping",
            Box::new(|| echo_errors_and_reaping("unixdgram")),
        ),
        (
            "max_children_enforced_before_fork",
            Box::new(max_children_enforced_before_fork),
        ),
        (
            "shutdown_with_open_connection",
            Box::new(shutdown_with_open_connection),
        ),
        (
            "shutdown_from_forked_child",
            Box::new(shutdown_from_forked_child),
        ),
        (
            "twenty_servers_start_and_stop",
            Box::new(twenty_servers_start_and_stop),
        ),
        (
            "a_killed_child_s_client_gets_eof_while_a_sibling_lives",
            Box::new(a_killed_child_s_client_gets_eof_while_a_sibling_lives),
        ),
        (
            "children_stop_on_sigterm",
            Box::new(children_stop_on_sigterm),
        ),
        (
            "interrupted_reads_are_retried",
            Box::new(interrupted_reads_are_retried),
        ),
        (
            "shutdown_from_a_child_during_accept_backoff",
            Box::new(shutdown_from_a_child_during_accept_backoff),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in &tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)) {
            Ok(()) => {
                println!("test forking::{name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test forking::{name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(101);
    }
}

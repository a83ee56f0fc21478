//! Deployment numbers for the README: `whoami` connections per second direct and behind
//! HAProxy with 1, 2 and 4 backends (HAProxy's own CPU noted), the PROXY header's cost per
//! connection, and connections served during SIGHUP restarts.
//!
//! ```text
//! cargo bench --bench deploy                    # 3 s per scenario, ~40 s
//! BENCH_QUICK=1 cargo bench --bench deploy      # 0.3 s per scenario: proves the harness
//! ```
//!
//! Each scenario runs the release `whoami` example as separate processes and a load of
//! client threads on this machine (loopback), each doing connect, [PROXY header,] read the
//! answer to EOF, close. Server and HAProxy CPU come from `/proc/PID/stat` (utime + stime)
//! over the measured window. HAProxy missing: its rows are skipped, said so.
//! Environment: `BENCH_QUICK=1`; `BENCH_SECS=S` overrides the seconds per scenario.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;

fn main() {
    // `cargo test` runs benches as tests only with --bench; a plain run does the work.
    let quick = env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let secs: f64 = env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.3 } else { 3.0 });
    let window = Duration::from_secs_f64(secs);
    // `cargo bench` builds no examples: build the one measured, in this profile.
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let built = Command::new(cargo)
        .args(["build", "--release", "--example", "whoami"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("cargo build --release --example whoami failed");
        std::process::exit(1);
    }
    let whoami = example("whoami");
    if env::var("BENCH_ONLY").is_ok_and(|v| v == "restart") {
        let n = env::var("BENCH_RESTARTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        restarts(&whoami, n);
        return;
    }
    println!("| scenario | connections/s | server CPU us/conn | HAProxy CPU us/conn |");
    println!("|---|---:|---:|---:|");

    let plain = Server::start(&whoami, &[]);
    let r = load(plain.addr, window, false);
    row("whoami direct", &r, &[&plain], None);
    drop(plain);

    let proxied = Server::start(&whoami, &["--proxy-protocol"]);
    let r2 = load(proxied.addr, window, true);
    row(
        "whoami direct, v2 header sent by the client",
        &r2,
        &[&proxied],
        None,
    );
    drop(proxied);

    if Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        for n in [1, 2, 4] {
            let servers: Vec<Server> = (0..n)
                .map(|_| Server::start(&whoami, &["--proxy-protocol"]))
                .collect();
            let lb = Haproxy::start(&servers);
            let r = load(lb.addr, window, false);
            let refs: Vec<&Server> = servers.iter().collect();
            row(
                &format!("whoami behind HAProxy (send-proxy-v2), {n} backend(s)"),
                &r,
                &refs,
                Some(lb.pid()),
            );
        }
    } else {
        println!("| HAProxy rows skipped: haproxy is not installed | | | |");
    }

    restarts(&whoami, if quick { 1 } else { 5 });
}

/// What a load run measured.
struct Run {
    conns: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU ticks of each watched process over the window.
    cpu: Vec<(u32, u64)>,
}

fn row(name: &str, r: &Run, servers: &[&Server], lb: Option<u32>) {
    let per_conn = |ticks: u64| ticks as f64 * 1e6 / ticks_per_sec() / r.conns.max(1) as f64;
    let server_ticks: u64 = r
        .cpu
        .iter()
        .filter(|(p, _)| servers.iter().any(|s| s.pid() == *p))
        .map(|c| c.1)
        .sum();
    let lb_cell = lb
        .and_then(|p| r.cpu.iter().find(|c| c.0 == p))
        .map(|c| format!("{:.0}", per_conn(c.1)))
        .unwrap_or_else(|| "-".into());
    println!(
        "| {name} | {:.0} | {:.0} | {lb_cell} |{}",
        r.conns as f64 / r.elapsed.as_secs_f64(),
        per_conn(server_ticks),
        if r.errors > 0 {
            format!(" {} errors", r.errors)
        } else {
            String::new()
        }
    );
}

fn ticks_per_sec() -> f64 {
    100.0 // USER_HZ on Linux
}

/// utime + stime of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|r| r.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// The PROXY v2 header a client sends for itself (as a balancer would).
fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    if let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) {
        h.extend_from_slice(&c.ip().octets());
        h.extend_from_slice(&s.ip().octets());
        h.extend_from_slice(&c.port().to_be_bytes());
        h.extend_from_slice(&s.port().to_be_bytes());
    }
    h
}

fn one(addr: SocketAddr, header: bool) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    if header {
        c.write_all(&v2_header(c.local_addr()?, addr))?;
    }
    let mut buf = Vec::with_capacity(128);
    c.read_to_end(&mut buf)?;
    if buf.ends_with(b"}\n") {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("short answer: {:?}", String::from_utf8_lossy(&buf)),
        ))
    }
}

/// `CLIENTS` threads of connections for `window` (after a short warm-up).
fn load(addr: SocketAddr, window: Duration, header: bool) -> Run {
    for _ in 0..50 {
        let _ = one(addr, header);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let pids = watched_pids();
    let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, conns, errors) = (stop.clone(), conns.clone(), errors.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match one(addr, header) {
                        Ok(()) => conns.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let cpu = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| (p, cpu_ticks(p).saturating_sub(b)))
        .collect();
    Run {
        conns: conns.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        cpu,
    }
}

/// The pids of the processes started by this bench that are alive now.
fn watched_pids() -> Vec<u32> {
    WATCH.with(|w| w.borrow().clone())
}

thread_local! {
    static WATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn watch(pid: u32, on: bool) {
    WATCH.with(|w| {
        let mut w = w.borrow_mut();
        w.retain(|&p| p != pid);
        if on {
            w.push(pid);
        }
    });
}

fn example(name: &str) -> PathBuf {
    let exe = env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// An example server process, stopped by its pid on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(exe: &PathBuf, extra: &[&str]) -> Server {
        let mut child = Command::new(exe)
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start whoami");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("listening line");
        let addr = line
            .trim_end()
            .trim_start_matches("listening on ")
            .parse()
            .unwrap();
        watch(child.id(), true);
        Server {
            child,
            addr,
            stdout: out,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        watch(self.child.id(), false);
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
        }
        let _ = self.child.wait();
    }
}

/// HAProxy in the foreground in front of `servers`, stopped by its pid on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Haproxy {
    fn start(servers: &[Server]) -> Haproxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cfg = format!(
            "global\n    maxconn 4000\n    nbthread 1\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    \
             timeout server 10s\n\
             frontend fe\n    bind {addr}\n    default_backend be\n\
             backend be\n    balance roundrobin\n"
        );
        for (i, s) in servers.iter().enumerate() {
            cfg.push_str(&format!("    server s{i} {} send-proxy-v2\n", s.addr));
        }
        let dir = env::temp_dir().join(format!("deploy-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while one(addr, false).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            thread::sleep(Duration::from_millis(20));
        }
        watch(child.id(), true);
        Haproxy {
            child,
            addr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        watch(self.child.id(), false);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Connections (and failures) while the server is restarted `n` times by SIGHUP.
fn restarts(exe: &PathBuf, n: usize) {
    let mut first = Server::start(exe, &[]);
    let addr = first.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, conns, errors) = (stop.clone(), conns.clone(), errors.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match one(addr, false) {
                        Ok(()) => {
                            conns.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.lock().unwrap().push(format!("{:?}: {e}", e.kind())),
                    };
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut pid = first.pid();
    let mut pids = vec![pid];
    for _ in 0..n {
        let _ = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status();
        let mut line = String::new();
        first
            .stdout
            .read_line(&mut line)
            .expect("the new process's line");
        // The new pid: the first answer from another process.
        let deadline = Instant::now() + Duration::from_secs(10);
        let new = loop {
            let mut c = TcpStream::connect(addr).expect("connect");
            let mut s = String::new();
            let _ = c.read_to_string(&mut s);
            let v: serde_json::Value = serde_json::from_str(s.trim()).unwrap_or_default();
            let p = v["pid"].as_u64().unwrap_or(0) as u32;
            // Not an answer from an earlier process still finishing its last requests.
            if p != 0 && !pids.contains(&p) {
                break p;
            }
            assert!(Instant::now() < deadline, "no new process");
        };
        pid = new;
        pids.push(pid);
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = first.child.wait();
    println!(
        "\n{n} SIGHUP restarts in {:.1} s under {CLIENTS} client threads: {} connections served, {} failed",
        elapsed.as_secs_f64(),
        conns.load(Ordering::Relaxed),
        errors.lock().unwrap().len()
    );
    for e in errors.lock().unwrap().iter().take(5) {
        println!("  failed: {e}");
    }
}

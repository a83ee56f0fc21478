//! Helpers shared by the integration tests: temp socket paths, clients with timeouts,
//! running servers on a background thread, and example binaries as child processes.
#![allow(dead_code)] // each test file uses the part it needs

pub mod chat;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single client read or wait in a test may block before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A unique, short path for a Unix socket in a fresh temp dir (removed on drop).
pub struct TempPath {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempPath {
    pub fn new(name: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::Builder::new().prefix("ss").tempdir().unwrap();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("{name}{n}.sock"));
        TempPath { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another path in the same directory (a datagram client's own address).
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A TCP client with read and write timeouts.
#[track_caller]
pub fn tcp_client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Reads until EOF (with the stream's timeout), failing the test on error.
#[track_caller]
pub fn read_to_end<R: Read + ?Sized>(r: &mut R) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read to EOF");
    v
}

/// Runs `f` on a thread and waits at most `limit` for it; panics (failing the test) if it
/// has not finished by then.
#[track_caller]
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// Number of open descriptors of this process (Linux `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Number of threads of this process (Linux `/proc/self/status`).
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The path of a binary cargo built next to this test: an example
/// (`target/<profile>/examples/NAME`).
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

/// An example server running as a child process; stopped (SIGTERM, by its pid) on drop.
pub struct ExampleServer {
    child: Option<Child>,
    pub addr: String,
    stdout: Option<BufReader<ChildStdout>>,
}

impl ExampleServer {
    /// Starts example `name` with `args` (add `--addr 127.0.0.1:0` yourself) and waits for
    /// its `listening on ADDR` line.
    #[track_caller]
    pub fn start(name: &str, args: &[&str]) -> ExampleServer {
        Self::start_with_env(name, args, &[])
    }

    #[track_caller]
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> ExampleServer {
        Self::start_under(&[], name, args, env)
    }

    /// Starts example `name` as the last arguments of `wrapper` (e.g. `strace -o FILE`);
    /// `pid()` is then the wrapper's. An empty `wrapper` runs the example itself.
    #[track_caller]
    pub fn start_under(
        wrapper: &[&str],
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ExampleServer {
        Self::spawn(wrapper, name, args, env, false).0
    }

    /// Like [`start`](Self::start), with the server's stdin piped to the returned writer
    /// (an operator typing at the server's console). Read what it prints with
    /// [`next_line`](Self::next_line).
    #[track_caller]
    pub fn start_with_stdin(name: &str, args: &[&str]) -> (ExampleServer, ChildStdin) {
        let (server, stdin) = Self::spawn(&[], name, args, &[], true);
        (server, stdin.unwrap())
    }

    #[track_caller]
    fn spawn(
        wrapper: &[&str],
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        piped_stdin: bool,
    ) -> (ExampleServer, Option<ChildStdin>) {
        // `cargo test --test NAME` does not rebuild the examples: never run a stale one.
        build_examples();
        let path = example_path(name);
        assert!(
            path.exists(),
            "{} not built (cargo test builds examples)",
            path.display()
        );
        let mut cmd = match wrapper {
            [] => Command::new(&path),
            [first, rest @ ..] => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&path);
                cmd
            }
        };
        let stdin = if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn example");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, r));
        });
        let (line, reader) = match rx.recv_timeout(TIMEOUT) {
            Ok((Ok(line), reader)) => (line, reader),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}: no 'listening on' line: {:?}", other.map(|o| o.0));
            }
        };
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"))
            .to_string();
        let server = ExampleServer {
            child: Some(child),
            addr,
            stdout: Some(reader),
        };
        (server, stdin)
    }

    /// The next line the server prints on stdout, without its end; fails the test if none
    /// comes within `TIMEOUT`.
    #[track_caller]
    pub fn next_line(&mut self) -> String {
        let mut r = self.stdout.take().expect("stdout still readable");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, r));
        });
        let (line, r) = match rx.recv_timeout(TIMEOUT) {
            Ok((Ok(line), r)) => (line, r),
            Ok((Err(e), _)) => panic!("reading the server's stdout: {e}"),
            Err(_) => panic!("no line on the server's stdout within {TIMEOUT:?}"),
        };
        self.stdout = Some(r);
        assert!(line.ends_with('\n'), "unterminated line {line:?} (EOF?)");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().expect("an IP address")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` (e.g. "TERM", "INT") to the server by its pid.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} failed", self.pid());
    }

    /// Waits up to `limit` for the process to exit and returns its status.
    #[track_caller]
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the server printed on stdout after its first line (after it exited).
    pub fn rest_of_stdout(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut r) = self.stdout.take() {
            let _ = r.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a Python 3 client script with `args`, returning its stdout; fails the test if it
/// exits non-zero or takes longer than `TIMEOUT` (then it is killed by its pid). The script
/// gets the args in `sys.argv`. Output is read while it runs, so any amount is fine.
#[track_caller]
pub fn python(script: &str, args: &[&str]) -> String {
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 on PATH");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("python client output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("python client did not finish within {TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Builds every example once per test binary, with this test binary's profile:
/// `cargo test --test NAME` builds only that test, and a stale example binary would
/// otherwise be run instead of the source next to it.
#[track_caller]
pub fn build_examples() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--examples", "--no-default-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // The same features as this test binary, so that the examples cargo test built
        // are not rebuilt differently (and TLS options exist when the tests use them).
        let features: Vec<&str> = [
            ("json", cfg!(feature = "json")),
            ("tls", cfg!(feature = "tls")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if !features.is_empty() {
            cmd.args(["--features", &features.join(",")]);
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

/// Reads until `pred` holds on everything read so far, or EOF; fails on timeout.
#[track_caller]
pub fn read_until<R: Read + ?Sized>(r: &mut R, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !pred(&got) {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {got:?}: {e}"),
        }
    }
    got
}

/// A field of `/proc/PID/status` (e.g. `Threads`, `VmRSS` in kB) as a number; `None` once
/// the process is gone.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    task_status(Path::new(&format!("/proc/{pid}")), field)
}

/// A numeric field of the `status` file in `dir`, a process's (`/proc/PID`) or one of its
/// threads' (`/proc/PID/task/TID`); `None` once it is gone.
pub fn task_status(dir: &Path, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Number of open descriptors of process `pid` (`/proc/PID/fd`); `None` once it is gone.
pub fn proc_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The pids of the children of process `pid` (`/proc/PID/task/*/children`), empty once it
/// is gone.
pub fn proc_children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                kids.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    kids
}

/// Whether process `pid` exists and is not a zombie.
pub fn proc_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Waits (polling every 5 ms, at most `TIMEOUT`) until `cond` holds; fails the test with
/// `what` otherwise.
#[track_caller]
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    wait_until_within(TIMEOUT, what, cond)
}

/// [`wait_until`] with another bound.
#[track_caller]
pub fn wait_until_within(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `get` (every 5 ms, at most `TIMEOUT`) until `done` holds for what it returns, and
/// returns that; fails the test with `what` and the last value otherwise.
#[track_caller]
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    get: impl Fn() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let v = get();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {v:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether the long, opt-in versions of the reliability suites run
/// (`SOCKETSERVER_LONG=1`).
pub fn long_run() -> bool {
    std::env::var("SOCKETSERVER_LONG").is_ok_and(|v| v == "1")
}

/// A small, fast, seeded pseudo-random generator (xorshift64*) for test payloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The pids of the processes whose parent is `pid` (zombies included), from /proc.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether strace can run here (and the examples are built, for the tests that trace
/// them); the caller skips, saying so, where it cannot.
pub fn have_strace(test: &str) -> bool {
    build_examples();
    let ok = Command::new("strace").arg("-V").output().is_ok();
    if !ok {
        eprintln!("SKIPPED {test}: strace is not installed and .ci/run could not install it");
    }
    ok
}

/// Holds the lock of the tests (of this test binary) that must not run beside each other,
/// for as long as the guard lives: those that open thousands of connections (side by side
/// their listeners' backlogs overflow), keep a CPU busy (a server under `strace -f`), or
/// bound what a starved CPU can break (how far a pool grows).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP server of this test process on 127.0.0.1, serving on a background thread: its
/// address, its handle, and the serving thread's entry in /proc (`/proc/PID/task/TID`;
/// `None` without /proc).
pub struct Running {
    pub addr: SocketAddr,
    pub handle: socketserver::ShutdownHandle,
    pub task: Option<PathBuf>,
    join: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    /// `serve`: a connection handler, on the server `b` binds.
    pub fn serve<H: socketserver::StreamHandler + Clone>(
        b: &mut socketserver::Builder<std::net::TcpListener>,
        handler: H,
    ) -> Running {
        Running::start(b, move |s| s.serve(handler))
    }

    /// `serve_requests`: a request handler, on the server `b` binds.
    pub fn serve_requests<H: socketserver::RequestHandler + Clone>(
        b: &mut socketserver::Builder<std::net::TcpListener>,
        handler: H,
    ) -> Running {
        Running::start(b, move |s| s.serve_requests(handler))
    }

    fn start(
        b: &mut socketserver::Builder<std::net::TcpListener>,
        run: impl FnOnce(socketserver::TcpServer) -> io::Result<()> + Send + 'static,
    ) -> Running {
        let server = b.bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.shutdown_handle();
        let (task_tx, task_rx) = mpsc::channel();
        let join = thread::spawn(move || {
            let _ = task_tx.send(std::fs::canonicalize("/proc/thread-self").ok());
            run(server)
        });
        let task = task_rx.recv_timeout(TIMEOUT).unwrap();
        Running {
            addr,
            handle,
            task,
            join: Some(join),
        }
    }

    /// Waits (bounded) for the serving call to return after a shutdown; it must be `Ok`.
    #[track_caller]
    pub fn join(&mut self) {
        let join = self.join.take().unwrap();
        within(TIMEOUT, move || join.join())
            .expect("serve panicked")
            .expect("serve failed");
    }

    /// Shuts the server down and joins it.
    #[track_caller]
    pub fn stop(&mut self) {
        self.handle.shutdown();
        self.join();
    }
}

/// A connection handler: each line back as it came, until the client's EOF.
pub fn line_echo(req: &mut socketserver::StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    while req.read_line(&mut line)? > 0 {
        req.write_all(line.as_bytes())?;
        line.clear();
    }
    Ok(())
}

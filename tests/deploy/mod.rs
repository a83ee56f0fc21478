//! Helpers of the deployment tests (HAProxy, systemd, restart, reuseport): example
//! processes whose stderr is kept for inspection, `whoami` clients, process checks.
#![allow(dead_code)] // each test file uses the part it needs

use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{example_path, TIMEOUT};

/// A child process (an example server, HAProxy) with its stdout lines and stderr collected
/// by threads; killed by its pid (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr piped and collected.
    #[track_caller]
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            child,
            lines,
            stderr,
        }
    }

    /// Starts example `name` with `args` (and `env`), and waits for its `listening on` line.
    #[track_caller]
    pub fn example(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Proc, SocketAddr) {
        let mut cmd = Command::new(example_path(name));
        cmd.args(args).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let p = Proc::spawn(cmd);
        let addr = p.listening();
        (p, addr)
    }

    /// Waits for the next `listening on ADDR` line and returns ADDR.
    #[track_caller]
    pub fn listening(&self) -> SocketAddr {
        let line = self.next_line();
        line.strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}; stderr: {}", self.stderr()))
            .parse()
            .expect("an IP address")
    }

    /// The next stdout line (bounded wait).
    #[track_caller]
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("no stdout line ({e}); stderr: {}", self.stderr()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for the process to exit; its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process the test did not start itself (the new process of a restart), stopped by its
/// pid when the guard drops, so that a failing test leaves nothing behind: SIGTERM, then
/// SIGKILL if it is still alive after 10 s.
pub struct PidGuard(pub u32);

impl PidGuard {
    /// The process is known gone: nothing to stop (its pid may be another's soon).
    pub fn defuse(self) {
        std::mem::forget(self);
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if alive(self.0) {
            signal(self.0, "TERM");
            if !wait_gone(self.0, Duration::from_secs(10)) {
                signal(self.0, "KILL");
            }
        }
    }
}

/// Sends `sig` ("TERM", "HUP", "KILL") to `pid`.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
        Err(_) => false,
    }
}

/// Waits (bounded) until `pid` is gone; false if it is still alive after `limit`.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// The live processes whose environment (as they were started) holds `KEY=value`: a marker
/// given to a server finds the processes it restarted itself into, whoever their parent is
/// by then.
pub fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let want = format!("{key}={value}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
                && alive(p)
        })
        .collect()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `whoami` answer, with the client's own address.
#[derive(Debug, Clone)]
pub struct Reply {
    pub peer: String,
    pub local: String,
    pub pid: u32,
    pub client: SocketAddr,
}

/// Connects, reads one whole answer (to EOF) and parses it. Errors are returned, to be
/// classified by the caller (refused, reset, EOF without an answer...).
pub fn whoami(addr: SocketAddr) -> io::Result<Reply> {
    whoami_traced(addr).1
}

/// `whoami`, with the client's own address when the connection was made (to find a failed
/// client in a balancer's log).
pub fn whoami_traced(addr: SocketAddr) -> (Option<SocketAddr>, io::Result<Reply>) {
    let mut c = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(c) => c,
        Err(e) => return (None, Err(e)),
    };
    let client = match c.local_addr() {
        Ok(a) => a,
        Err(e) => return (None, Err(e)),
    };
    (Some(client), answer(&mut c, client))
}

fn answer(c: &mut TcpStream, client: SocketAddr) -> io::Result<Reply> {
    c.set_read_timeout(Some(TIMEOUT))?;
    let mut got = String::new();
    c.read_to_string(&mut got)?;
    let v: serde_json::Value = serde_json::from_str(got.trim_end()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a whoami answer: {got:?}: {e}"),
        )
    })?;
    Ok(Reply {
        peer: v["peer"].as_str().unwrap_or_default().to_string(),
        local: v["local"].as_str().unwrap_or_default().to_string(),
        pid: v["pid"].as_u64().unwrap_or_default() as u32,
        client,
    })
}

/// The log lines at WARN or ERROR level in `stderr` (env_logger's format).
pub fn warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

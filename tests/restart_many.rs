//! A SIGHUP restart hands over every listener of the process, not only the first: a
//! program serving two TCP ports, both armed with `restart_on_sighup`, is replaced by one
//! new process that serves both ports (once only descriptor 3 went along, and the second
//! port died with the old process). Connections open across the restart finish on the old
//! process.
//!
//! The program is this test binary run again with `RESTART_MANY_SERVE` set (a restart
//! starts the binary it runs from): no harness, so that it can be a server too.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{shutdown_on_signals, StreamRequest, TcpServer};

const TIMEOUT: Duration = Duration::from_secs(10);
const CHILD: &str = "RESTART_MANY_SERVE";

/// The server: two ports (from the previous generation when restarted), each answering
/// every line with its name and this process's pid.
fn serve() -> io::Result<()> {
    let b = TcpServer::builder();
    let take = || -> io::Result<TcpServer> {
        match b.from_systemd()? {
            Some(server) => Ok(server),
            None => b.bind("127.0.0.1:0"),
        }
    };
    let (first, second) = (take()?, take()?);
    println!(
        "listening on {} {}",
        first.local_addr()?,
        second.local_addr()?
    );
    io::stdout().flush()?;
    first.restart_on_sighup()?;
    second.restart_on_sighup()?;
    shutdown_on_signals(&first.shutdown_handle())?;
    shutdown_on_signals(&second.shutdown_handle())?;
    let answer = |name: &'static str| {
        move |req: &mut StreamRequest| -> io::Result<()> {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                writeln!(req, "{name} {}", std::process::id())?;
                line.clear();
            }
            Ok(())
        }
    };
    let other = thread::spawn(move || second.serve(answer("second")));
    first.serve(answer("first"))?;
    other.join().expect("the second server panicked")
}

/// One question on an open connection: the port's name and the pid that answered.
fn ask(c: &mut BufReader<TcpStream>) -> io::Result<(String, u32)> {
    c.get_mut().write_all(b"who\n")?;
    let mut line = String::new();
    c.read_line(&mut line)?;
    let (name, pid) = line
        .trim_end()
        .split_once(' ')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let pid = pid
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    Ok((name.to_string(), pid))
}

fn connect(addr: SocketAddr) -> io::Result<BufReader<TcpStream>> {
    let c = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    Ok(BufReader::new(c))
}

/// Asks on a new connection until a process other than `old` answers (bounded).
fn new_pid(addr: SocketAddr, name: &str, old: u32) -> u32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (got, pid) = ask(&mut connect(addr).expect("connect")).expect("an answer");
        assert_eq!(got, name);
        if pid != old {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no answer from a new process"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if !alive {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The pids of the processes whose environment holds `CHILD=mark`: the servers of this
/// run (the first one and every generation after it, whoever their parent is now).
fn servers(mark: &str) -> Vec<u32> {
    let want = format!("{CHILD}={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Ends, by their pids, the servers of this run if the test fails half-way (they hold the
/// test's output pipes open, and a restart's new process outlives the first).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pid in servers(&self.0) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn every_listener_follows_a_restart() {
    let mark = format!("{}-{:?}", std::process::id(), Instant::now());
    let _cleanup = Cleanup(mark.clone());
    let mut old = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &mark)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server");
    // The servers' output, read on a thread of its own: every wait for a line is bounded
    // (the new process writes to the same pipe, which the old one keeps open).
    let (lines, out) = std::sync::mpsc::channel();
    let stdout = old.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || out.recv_timeout(TIMEOUT).expect("a line from the server");
    let line = next_line();
    let addrs: Vec<SocketAddr> = line
        .strip_prefix("listening on ")
        .expect(&line)
        .split(' ')
        .map(|a| a.parse().unwrap())
        .collect();
    let (first, second) = (addrs[0], addrs[1]);
    let mut long = connect(second).unwrap();
    assert_eq!(ask(&mut long).unwrap(), ("second".to_string(), old.id()));
    assert_eq!(
        ask(&mut connect(first).unwrap()).unwrap(),
        ("first".to_string(), old.id())
    );

    signal(old.id(), "HUP");
    // The new process serves the same two ports (it says so on the same output).
    assert_eq!(next_line(), format!("listening on {first} {second}"));
    let new = new_pid(first, "first", old.id());
    assert_eq!(new_pid(second, "second", old.id()), new, "one new process");
    // The connection opened before the restart is served on by the old process.
    assert_eq!(ask(&mut long).unwrap(), ("second".to_string(), old.id()));
    drop(long);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = old.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old process did not exit");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    // Both ports still served, by the new process alone.
    assert_eq!(
        ask(&mut connect(first).unwrap()).unwrap(),
        ("first".to_string(), new)
    );
    assert_eq!(
        ask(&mut connect(second).unwrap()).unwrap(),
        ("second".to_string(), new)
    );
    signal(new, "TERM");
    assert!(gone_within(new, TIMEOUT), "the new process did not stop");
    assert_eq!(
        servers(&mark),
        Vec::<u32>::new(),
        "a server was left running"
    );
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return match serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("restart_many server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = std::panic::catch_unwind(every_listener_follows_a_restart);
    let ok = result.is_ok();
    println!(
        "test every_listener_follows_a_restart ... {}",
        if ok { "ok" } else { "FAILED" }
    );
    println!("{} passed, {} failed", ok as u8, !ok as u8);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

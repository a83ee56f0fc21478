//! The tutorials' "ssh-like" remote command server, made safe, with the sticky-packet
//! lesson solved: outputs of megabytes arrive whole.
//!
//! Protocol (see `remote_cmd_client` for a client):
//!
//! * request: one frame (u32 big-endian length, Python's `struct.pack('!I', n)`, at most
//!   64 KiB) holding a UTF-8 command line, split into arguments shell-style (`shlex`) and
//!   **never run through a shell**: no pipes, globs, variables or `;`.
//! * response: one frame holding a JSON header
//!   `{"exit_code":0,"stdout_size":6,"stderr_size":0}`, then exactly `stdout_size` bytes of
//!   stdout, then exactly `stderr_size` bytes of stderr. A program killed by a signal has
//!   `exit_code` -N (like Python's `returncode`). A command refused, that cannot start,
//!   that runs over the timeout, whose output exceeds the cap, or that is still running at
//!   shutdown gets `"exit_code":null`, both sizes 0 and `"error":"..."`: such a program is
//!   killed (with the process group it leads) and reaped, and its partial output discarded.
//!   Each command runs in a process group of its own, killed when the command ends: no
//!   background job it started outlives it.
//! * a connection serves any number of requests in turn, until EOF. A request frame over
//!   64 KiB is answered with an error and closes the connection (the stream is out of step).
//!
//! Only the programs named by `--allow prog1,prog2` run (none by default), matched exactly
//! against the first argument: `/bin/echo` or `../echo` run only if listed as such.
//! `--timeout SECONDS` (default 10) bounds a command's run; `--max-output BYTES` (default
//! 16 MiB) bounds its stdout and stderr together. Stdin is empty. The Python original is 20
//! lines; this one is longer because it is safe: allow-list, no shell, timeout, output cap,
//! stdout and stderr read concurrently (a child filling stderr cannot deadlock it).
//!
//! ```text
//! cargo run --example remote_cmd -- --allow ls,echo,uname     # listening on 127.0.0.1:8005
//! cargo run --example remote_cmd_client -- ls -l
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`;
//! TLS (build with `--features tls`): `--tls-cert FILE --tls-key FILE`, and
//! `--tls-client-ca FILE` for client certificates (a SIGHUP restart reloads them).

mod common;

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use socketserver::framing::{self, Codec, FrameError};
use socketserver::StreamRequest;

/// Request frames: u32 big-endian prefix, at most 64 KiB of command line.
const REQUESTS: Codec = Codec::new().max_frame_len(64 * 1024);
/// How often a handler waiting for its command checks for shutdown.
const TICK: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(about = "Remote command server, allow-listed, no shell (default 127.0.0.1:8005)")]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// Programs that may run, by exact name, comma-separated. Default: none.
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
    /// Seconds a command may run before it is killed.
    #[arg(long, default_value = "10", value_parser = common::seconds)]
    timeout: Duration,
    /// Most bytes of output (stdout and stderr together) a command may produce.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_output: u64,
}

#[derive(Serialize)]
struct Header {
    exit_code: Option<i32>,
    stdout_size: usize,
    stderr_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What a command produced: (exit code, stdout, stderr).
type Outcome = (i32, Vec<u8>, Vec<u8>);

struct Limits {
    allow: Vec<String>,
    timeout: Duration,
    max_output: u64,
}

/// Parses a request and checks the program against the allow-list.
fn parse(request: &[u8], limits: &Limits) -> Result<Vec<String>, String> {
    let line = std::str::from_utf8(request).map_err(|_| "command is not UTF-8")?;
    let argv = shlex::split(line).ok_or("cannot split the command line (unbalanced quotes?)")?;
    match argv.first() {
        None => Err("empty command".into()),
        Some(prog) if !limits.allow.contains(prog) => Err(format!("{prog}: not allowed")),
        Some(_) => Ok(argv),
    }
}

/// Runs `argv` within the limits; the child is killed and reaped if anything goes wrong.
///
/// The command runs in a process group of its own (its pid is the group's id), so that
/// what it starts in the background is found again: when the command ends, whether it
/// finished, failed a limit or met shutdown, whatever is left in its group is killed. A
/// background job can neither outlive its command nor hold its output pipes open past
/// the timeout. (A program that leaves the group on purpose, with `setsid`, is beyond
/// this: run the server in a container or a cgroup for that.)
fn run(argv: &[String], limits: &Limits, stopping: &dyn Fn() -> bool) -> Result<Outcome, String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let deadline = Instant::now() + limits.timeout;
    let outcome = collect(&mut child, limits, deadline, stopping).and_then(|(out, err)| {
        let status = wait(&mut child, limits, deadline, stopping)?;
        let code = status.code().or(status.signal().map(|s| -s)).unwrap_or(-1);
        Ok((code, out, err))
    });
    // The group this command leads, and nothing else: its own pid as a group id.
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGKILL);
    if outcome.is_err() {
        let _ = child.kill(); // already killed with its group; its own pid, never a name
        let _ = child.wait();
    }
    outcome
}

/// Reads stdout and stderr to their ends on two threads, so neither pipe can fill up and
/// block the child, with the output cap, the deadline and shutdown watched meanwhile.
/// The threads end when the pipes close: when the child and whatever it started exit or
/// are killed with its process group.
fn collect(
    child: &mut Child,
    limits: &Limits,
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (tx, rx) = crossbeam_channel::bounded(2);
    let total = Arc::new(AtomicU64::new(0));
    let pipes: [Box<dyn Read + Send>; 2] = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => [Box::new(out), Box::new(err)],
        _ => return Err("no pipes to the child".into()),
    };
    for (i, pipe) in pipes.into_iter().enumerate() {
        let (tx, total, cap) = (tx.clone(), Arc::clone(&total), limits.max_output);
        thread::Builder::new()
            .name("remote-cmd-output".into())
            .spawn(move || {
                let _ = tx.send((i, drain(pipe, &total, cap)));
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    let mut outs = [None, None];
    while outs.iter().any(Option::is_none) {
        let (i, data) = next_output(&rx, limits, deadline, stopping)?;
        outs[i] = Some(data);
    }
    let [Some(out), Some(err)] = outs else {
        unreachable!("both outputs are in")
    };
    Ok((out, err))
}

/// Waits for one output reader to finish, checking the deadline and shutdown every tick.
fn next_output(
    rx: &Receiver<(usize, io::Result<Option<Vec<u8>>>)>,
    limits: &Limits,
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
) -> Result<(usize, Vec<u8>), String> {
    loop {
        check(limits, deadline, stopping)?;
        let tick = deadline.saturating_duration_since(Instant::now()).min(TICK);
        match rx.recv_timeout(tick) {
            Ok((i, Ok(Some(data)))) => return Ok((i, data)),
            Ok((_, Ok(None))) => return Err(format!("output over {} bytes", limits.max_output)),
            Ok((_, Err(e))) => return Err(format!("cannot read the output: {e}")),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("output reader lost".into()),
        }
    }
}

/// Reads a pipe to its end; `None` once the output of both pipes exceeds `cap`.
fn drain(mut pipe: impl Read, total: &AtomicU64, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok(Some(data)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if total.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > cap {
            return Ok(None);
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Waits for the child to exit once its pipes are closed (usually at once).
fn wait(
    child: &mut Child,
    limits: &Limits,
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
) -> Result<ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => check(limits, deadline, stopping)?,
            Err(e) => return Err(format!("cannot wait for the command: {e}")),
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn check(limits: &Limits, deadline: Instant, stopping: &dyn Fn() -> bool) -> Result<(), String> {
    if Instant::now() >= deadline {
        Err(format!("timed out after {:?}", limits.timeout))
    } else if stopping() {
        Err("server shutting down".into())
    } else {
        Ok(())
    }
}

/// Sends the header, then stdout, then stderr.
fn reply(req: &mut StreamRequest, outcome: Result<Outcome, String>) -> io::Result<()> {
    let (header, out, err) = match outcome {
        Ok((code, out, err)) => {
            let (stdout_size, stderr_size) = (out.len(), err.len());
            let error = None;
            (
                Header {
                    exit_code: Some(code),
                    stdout_size,
                    stderr_size,
                    error,
                },
                out,
                err,
            )
        }
        Err(e) => {
            let error = Some(e);
            let h = Header {
                exit_code: None,
                stdout_size: 0,
                stderr_size: 0,
                error,
            };
            (h, Vec::new(), Vec::new())
        }
    };
    framing::write_json_header(req, &header)?;
    req.write_all(&out)?;
    req.write_all(&err)
}

fn main() -> io::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let limits = Arc::new(Limits {
        allow: cli.allow.into_iter().filter(|p| !p.is_empty()).collect(),
        timeout: cli.timeout,
        max_output: cli.max_output,
    });
    common::serve_tcp(
        &cli.server,
        // A console session: 10 minutes between commands (`--idle-timeout`).
        common::Service::new(8005).idle_secs(600),
        move |req: &mut StreamRequest| loop {
            let request = match REQUESTS.read_frame(req) {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(e) if FrameError::from_io(&e).is_some() => {
                    log::warn!("{}: {e}: closing the connection", req.peer_addr());
                    return reply(req, Err(format!("request refused: {e}")));
                }
                Err(e) => return Err(e),
            };
            let outcome = parse(&request, &limits).and_then(|argv| {
                log::info!("{}: running {argv:?}", req.peer_addr());
                run(&argv, &limits, &|| req.is_shutting_down())
            });
            reply(req, outcome)?;
        },
    )
}

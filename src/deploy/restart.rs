//! Zero-downtime restart: on SIGHUP the process starts a new one from the binary on disk,
//! hands it the listening socket of every server armed for restarts, waits until it
//! serves, then stops accepting and drains.
//!
//! One listening socket, never closed and re-bound: the old and the new process hold the
//! same kernel socket (so one accept queue), and a connection waiting in it is accepted by
//! whichever process accepts next. Nothing queued is lost and no client is refused. The
//! sockets travel as systemd's socket activation passes them (descriptors 3, 4, ...,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`), so the new process takes them with the same
//! `from_systemd` calls that take sockets from systemd; a last descriptor carries its
//! "ready".

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::SIGHUP;

use crate::deploy::inherit::{READY_NAME, RESTART_HANDOVER, RESTART_PARENT};
use crate::deploy::notify::{self, HANDOVER};
use crate::net::Listener;
use crate::server::StreamServer;
use crate::shutdown::ShutdownHandle;
use crate::sys::{self, Interest};

/// How long a new process gets to start serving before the restart is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl<L: Listener + AsFd> StreamServer<L> {
    /// Replaces this server with a new process on SIGHUP, without refusing a connection.
    ///
    /// On SIGHUP, the program's binary is started again from the path it was started from
    /// (so a binary rebuilt or upgraded in place is the new one), with the same arguments,
    /// and given the listening socket of every server of the process armed this way, as
    /// descriptors 3, 4, ... in the order they were armed (`LISTEN_FDS`): its
    /// `from_systemd` calls, made in the same order, take them (a program with a main port
    /// and a second one arms both, and both follow). When the new process's `serve` has
    /// started, every armed server stops accepting, and a restart is not a stop: it serves its open connections
    /// on, idle ones included, until they close or the grace period ends (the new process
    /// cannot take them over, and closing them would disconnect every long-lived client);
    /// then the connections still open are shut down and `serve` returns `Ok(())`, so the
    /// process can exit 0. A SIGTERM during that drain ends it at once, as the grace
    /// period's end would. (In the forking flavour the children cannot see the drain:
    /// their idle connections end at the hand-over, as at a stop.) If the
    /// new process fails to start serving within 30 s (or dies), it is killed and this one
    /// goes on serving; the failure is logged.
    ///
    /// The socket being shared with the new process, this server never shuts it down
    /// (that would stop it for the new process too). A stream server's pool ends the wait
    /// of its threads blocked in `accept(2)` by connecting to itself, once per thread, and
    /// closes those connections unserved; a datagram server's `pool` runs as the hand-off
    /// pool (the datagram pool whose workers receive themselves ends by shutting the socket
    /// down).
    ///
    /// A Unix stream server's socket file is left in place when it hands over (the new
    /// process serves it; the new process, having inherited the socket, does not remove
    /// the file when it stops: the next `bind` replaces it as stale).
    ///
    /// A SIGTERM (or any shutdown) that comes before the hand-over abandons the restart:
    /// the new process is stopped too (it is sent SIGTERM, and a new process that reported
    /// ready waits for this one's hand-over and stops without it, even if this process
    /// exits first; one still starting when this process has exited gets an error from
    /// `from_systemd`), so `kill -HUP` followed at once by `kill -TERM` leaves no process
    /// serving. After the hand-over the new process is the service: a SIGTERM to the old,
    /// draining one ends only that one.
    ///
    /// One restart runs at a time; a SIGHUP during one is taken after it. Under systemd
    /// the main pid is handed over too (`MAINPID=`, needs `NotifyAccess=all`); socket
    /// activation with `systemctl restart` is the other way to restart there (the README's
    /// "Deployment" section shows both).
    ///
    /// It starts one thread that waits for SIGHUP. Call it once, before `serve`:
    ///
    /// ```no_run
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let builder = TcpServer::builder();
    /// // The new process takes the socket here; the first one binds.
    /// let server = match builder.from_systemd()? {
    ///     Some(server) => server,
    ///     None => builder.bind("127.0.0.1:8001")?,
    /// };
    /// server.restart_on_sighup()?;
    /// socketserver::shutdown_on_signals(&server.shutdown_handle())?;
    /// server.serve(|_req: &mut StreamRequest| Ok(()))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "graceful_restart")]
    pub fn restart_on_sighup(&self) -> io::Result<()> {
        let listener = self.listener().as_fd().try_clone_to_owned()?;
        let handle = self.shutdown_handle();
        let mut armed = lock(&ARMED);
        if armed.servers.len() + 1 >= sys::MAX_PASSED_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "at most {} servers of a process restart on SIGHUP",
                    sys::MAX_PASSED_FDS - 1
                ),
            ));
        }
        if armed.exe.is_none() {
            armed.exe = Some(Program {
                exe: std::env::current_exe()?,
                args: std::env::args_os().skip(1).collect(),
            });
        }
        // The socket will be the new process's too: this server must never shut it down.
        self.share_socket();
        armed.servers.push(Armed { listener, handle });
        if armed.installed {
            return Ok(());
        }
        armed.installed = true;
        drop(armed);
        // The process's signal thread keeps the handler for the life of the process: a
        // SIGHUP that comes late (to servers already replaced, or shutting down) is ignored
        // rather than left to its default action, which would kill the process and the
        // requests it is still finishing. A restart waits up to 30 s for the new process:
        // it runs on a thread of its own, so that SIGTERM is taken meanwhile. One restart
        // at a time: a SIGHUP during one waits for it, then finds it done.
        crate::deploy::signal::on_signals(&[SIGHUP], move |a| {
            a.hangup.push(Box::new(move || {
                let spawned = thread::Builder::new()
                    .name("socketserver-restart".into())
                    .spawn(move || {
                        let mut armed = lock(&ARMED);
                        let live = armed.servers.iter().any(|s| !s.handle.is_shutting_down());
                        if armed.replaced || !live {
                            log::info!("SIGHUP ignored: this process is already shutting down");
                            return;
                        }
                        armed.replaced = replace(&armed);
                    });
                if let Err(e) = spawned {
                    log::error!("SIGHUP: cannot start the restart: {e}");
                }
            }))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every server of this process armed for restarts, in the order they were armed: a
/// restart hands all their sockets to one new process, in that order.
static ARMED: Mutex<Restarts> = Mutex::new(Restarts {
    servers: Vec::new(),
    exe: None,
    installed: false,
    replaced: false,
});

/// The process's restarts: the servers they hand over, what they start, whether the
/// SIGHUP handler is installed and whether a restart handed the process over.
struct Restarts {
    servers: Vec<Armed>,
    exe: Option<Program>,
    installed: bool,
    replaced: bool,
}

/// A server armed for restarts: a duplicate of its listening socket (kept open in this
/// process until it exits, so the socket outlives the old server), and its handle.
struct Armed {
    listener: OwnedFd,
    handle: ShutdownHandle,
}

/// This program, as it was started: what a restart starts again.
struct Program {
    exe: PathBuf,
    args: Vec<OsString>,
}

/// One restart of the process: a new process gets every armed server's socket; once it
/// serves, every server here stops accepting and drains. True when the process was handed
/// over.
///
/// Shutdown beginning at any point before the hand-over (a SIGTERM right behind the
/// SIGHUP) abandons the restart: the new process is told (its ready socket closes without
/// a hand-over) and sent SIGTERM, so both processes stop.
fn replace(armed: &Restarts) -> bool {
    let Some(program) = &armed.exe else {
        return false;
    };
    log::info!(
        "SIGHUP: starting {} with {} listening socket(s)",
        program.exe.display(),
        armed.servers.len()
    );
    let (mut child, mut ready) = match program.spawn(&armed.servers) {
        Ok(started) => started,
        Err(e) => {
            log::error!("restart failed, still serving: {e}");
            return false;
        }
    };
    let pid = child.id();
    let stopping = || armed.servers.iter().any(|s| s.handle.is_shutting_down());
    let wake = armed.servers[0].handle.shared.wake_fd();
    match wait_ready(&mut ready, READY_TIMEOUT, wake, stopping) {
        Ok(Ready::Serving) => {}
        Ok(Ready::ShutdownBegan) => {
            log::info!("restart abandoned: shutdown began; stopping new process {pid}");
            abandon(child, ready);
            return false;
        }
        Err(e) => {
            log::error!("restart failed, still serving: {e}");
            stop(&mut child);
            return false;
        }
    }
    // The hand-over and a SIGTERM's shutdown race: one atomic step decides which came
    // first (the first server still serving decides for all). The flag goes up before, so
    // that `serve` ending now does not tell the service manager the service stops.
    notify::set_handed_over(true);
    // A restart is not a stop: the servers serve their open connections on, idle ones
    // included, until they close or the grace period ends (the new process cannot take
    // them over; closing them would disconnect every long-lived client).
    for s in &armed.servers {
        s.handle.shared.keep_open_on_stop(true);
    }
    let decider = armed
        .servers
        .iter()
        .find(|s| !s.handle.is_shutting_down())
        .unwrap_or(&armed.servers[0]);
    if !decider.handle.shared.stop_first() {
        for s in &armed.servers {
            s.handle.shared.keep_open_on_stop(false);
        }
        notify::set_handed_over(false);
        log::info!("restart abandoned: shutdown began as process {pid} became ready");
        abandon(child, ready);
        return false;
    }
    for s in &armed.servers {
        s.handle.shared.stop_first();
    }
    notify::handed_over_to(pid);
    if let Err(e) = ready
        .set_nonblocking(false)
        .and_then(|()| ready.write_all(HANDOVER))
    {
        log::error!("restart: telling process {pid} it is the service now: {e}");
    }
    log::info!(
        "restart: process {pid} serves; stopping accepting, serving the open connections until they close or the grace period ends"
    );
    true
}

impl Program {
    /// Starts the new process with the servers' sockets as descriptors 3, 4, ... and its
    /// ready socket last; returns it and our end of the ready socket.
    fn spawn(&self, servers: &[Armed]) -> io::Result<(Child, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut names: Vec<&str> = servers.iter().map(|_| "listener").collect();
        names.push(READY_NAME);
        let mut fds: Vec<RawFd> = servers.iter().map(|s| s.listener.as_raw_fd()).collect();
        fds.push(theirs.as_raw_fd());
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env(RESTART_PARENT, std::process::id().to_string())
            .env(RESTART_HANDOVER, "1")
            .env_remove("LISTEN_PID");
        sys::pass_fds(&mut cmd, &fds)?;
        let child = cmd.spawn()?;
        // The child has its copy; ours must go, so that its death reads as EOF here.
        drop(theirs);
        Ok((child, ours))
    }
}

/// How a wait for the new process's "ready" ended, short of an error.
#[derive(Debug, PartialEq, Eq)]
enum Ready {
    /// It sent `READY=1`: it serves.
    Serving,
    /// This server's shutdown began first (`wake` turned readable).
    ShutdownBegan,
}

/// Waits for the new process's "READY=1" line, or for shutdown, whichever comes first:
/// `wake`, the first server's wake descriptor, turns readable, or `stopping` says another
/// server's shutdown began (looked at every 100 ms).
fn wait_ready(
    ready: &mut UnixStream,
    limit: Duration,
    wake: RawFd,
    stopping: impl Fn() -> bool,
) -> io::Result<Ready> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    ready.set_nonblocking(true)?;
    let fds = [(ready.as_raw_fd(), Interest::Read), (wake, Interest::Read)];
    while !got.ends_with(b"READY=1\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || got.len() > 64 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the new process did not start serving within {limit:?}"),
            ));
        }
        let polled = sys::poll(&fds, Some(left.min(Duration::from_millis(100))))?;
        if polled.is(1) || stopping() {
            return Ok(Ready::ShutdownBegan);
        }
        if !polled.is(0) {
            continue;
        }
        match ready.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the new process exited (or closed its ready socket) before serving",
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Ready::Serving)
}

/// How long an abandoned new process gets to stop on SIGTERM before it is killed.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops a new process whose restart was abandoned: closing the ready socket without a
/// hand-over tells it to stop (it does, even if this process exits first), SIGTERM stops
/// one still starting; it is reaped (killed if it has not stopped in 30 s).
fn abandon(mut child: Child, ready: UnixStream) {
    drop(ready);
    if let Ok(None) = child.try_wait() {
        if let Err(e) = sys::terminate_child(child.id() as libc::pid_t) {
            log::warn!("restart: SIGTERM to process {}: {e}", child.id());
        }
    }
    let deadline = Instant::now() + ABANDON_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
    log::warn!("restart: process {} did not stop: killing it", child.id());
    stop(&mut child);
}

/// Kills a new process that failed to start serving, and reaps it.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

//! Zero-downtime restart: on SIGHUP a server starts a new process from the binary on disk,
//! hands it the listening socket, waits until it serves, then stops accepting and drains.
//!
//! One listening socket, never closed and re-bound: the old and the new process hold the
//! same kernel socket (so one accept queue), and a connection waiting in it is accepted by
//! whichever process accepts next. Nothing queued is lost and no client is refused. The
//! socket travels as systemd's socket activation does (descriptor 3, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`), so the new process takes it with the same `from_systemd` call that
//! takes a socket from systemd; a second descriptor carries its "ready".

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
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
    /// and given this server's listening socket as descriptor 3 (`LISTEN_FDS=1`); its first
    /// `from_systemd` call takes it. When the new process's `serve` has started, this
    /// server stops accepting and shuts down gracefully: requests in flight get the grace
    /// period to finish, connections idle between requests end with EOF (see
    /// [`ShutdownHandle`]), and `serve` returns `Ok(())`, so the process can exit 0. If the
    /// new process fails to start serving within 30 s (or dies), it is killed and this one
    /// goes on serving; the failure is logged.
    ///
    /// The socket being shared with the new process, this server never shuts it down:
    /// a `pool` flavour then runs as the hand-off pool (the pool whose workers accept
    /// themselves ends by shutting the socket down, which would stop it for the new process
    /// too).
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
        let next = NextProcess {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
            listener: self.listener().as_fd().try_clone_to_owned()?,
        };
        let handle = self.shutdown_handle();
        // The socket will be the new process's too: this server must never shut it down.
        self.share_socket();
        // One restart at a time: a SIGHUP during one waits for it, then finds it done.
        let state = Arc::new(Mutex::new(Restart {
            next,
            handle,
            replaced: false,
        }));
        // The process's signal thread keeps the handler for the life of the process: a
        // SIGHUP that comes late (to a server already replaced, or shutting down) is ignored
        // rather than left to its default action, which would kill the process and the
        // requests it is still finishing. A restart waits up to 30 s for the new process:
        // it runs on a thread of its own, so that SIGTERM is taken meanwhile.
        crate::deploy::signal::on_signals(&[SIGHUP], move |a| {
            a.hangup.push(Box::new(move || {
                let state = Arc::clone(&state);
                let spawned = thread::Builder::new()
                    .name("socketserver-restart".into())
                    .spawn(move || {
                        let mut r = state.lock().unwrap_or_else(|e| e.into_inner());
                        if r.replaced || r.handle.is_shutting_down() {
                            log::info!("SIGHUP ignored: this server is already shutting down");
                            return;
                        }
                        r.replaced = r.next.replace(&r.handle);
                    });
                if let Err(e) = spawned {
                    log::error!("SIGHUP: cannot start the restart: {e}");
                }
            }))
        })
    }
}

/// A server's restart: what it starts, the server it stops, whether it was replaced.
struct Restart {
    next: NextProcess,
    handle: ShutdownHandle,
    replaced: bool,
}

/// What a restart starts: this program again, with a duplicate of the listening socket
/// (kept open in this process until it exits, so the socket outlives the old server).
struct NextProcess {
    exe: PathBuf,
    args: Vec<OsString>,
    listener: OwnedFd,
}

impl NextProcess {
    /// One restart: true when the new process serves and this server is shutting down.
    ///
    /// Shutdown beginning at any point before the hand-over (a SIGTERM right behind the
    /// SIGHUP) abandons the restart: the new process is told (its ready socket closes
    /// without a hand-over) and sent SIGTERM, so both processes stop.
    fn replace(&self, handle: &ShutdownHandle) -> bool {
        log::info!("SIGHUP: starting {}", self.exe.display());
        let (mut child, mut ready) = match self.spawn() {
            Ok(started) => started,
            Err(e) => {
                log::error!("restart failed, still serving: {e}");
                return false;
            }
        };
        let pid = child.id();
        match wait_ready(&mut ready, READY_TIMEOUT, handle.shared.wake_fd()) {
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
        // first. The flag goes up before, so that `serve` ending now does not tell the
        // service manager the service stops.
        notify::set_handed_over(true);
        if !handle.shared.stop_first() {
            notify::set_handed_over(false);
            log::info!("restart abandoned: shutdown began as process {pid} became ready");
            abandon(child, ready);
            return false;
        }
        notify::handed_over_to(pid);
        if let Err(e) = ready
            .set_nonblocking(false)
            .and_then(|()| ready.write_all(HANDOVER))
        {
            log::error!("restart: telling process {pid} it is the service now: {e}");
        }
        log::info!("restart: process {pid} serves; stopping accepting and draining");
        true
    }

    /// Starts the new process; returns it and our end of its ready socket.
    fn spawn(&self) -> io::Result<(Child, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", format!("listener:{READY_NAME}"))
            .env(RESTART_PARENT, std::process::id().to_string())
            .env(RESTART_HANDOVER, "1")
            .env_remove("LISTEN_PID");
        sys::pass_fds(&mut cmd, [self.listener.as_raw_fd(), theirs.as_raw_fd()]);
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

/// Waits for the new process's "READY=1" line, or for shutdown (`wake`, the server's wake
/// descriptor, turns readable), whichever comes first.
fn wait_ready(ready: &mut UnixStream, limit: Duration, wake: RawFd) -> io::Result<Ready> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    ready.set_nonblocking(true)?;
    while !got.ends_with(b"READY=1\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || got.len() > 64 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the new process did not start serving within {limit:?}"),
            ));
        }
        let polled = sys::poll(
            &[(ready.as_raw_fd(), Interest::Read), (wake, Interest::Read)],
            Some(left),
        )?;
        if polled.is(1) {
            return Ok(Ready::ShutdownBegan);
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

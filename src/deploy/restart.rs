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
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::SIGHUP;

use crate::deploy::inherit::{READY_NAME, RESTART_PARENT};
use crate::deploy::notify;
use crate::net::Listener;
use crate::server::StreamServer;
use crate::shutdown::ShutdownHandle;
use crate::sys;

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
    fn replace(&self, handle: &ShutdownHandle) -> bool {
        log::info!("SIGHUP: starting {}", self.exe.display());
        match self.start() {
            Ok(pid) => {
                log::info!("restart: process {pid} serves; stopping accepting and draining");
                notify::handed_over_to(pid);
                handle.shutdown();
                true
            }
            Err(e) => {
                log::error!("restart failed, still serving: {e}");
                false
            }
        }
    }

    /// Starts the new process and waits until it serves; returns its pid.
    fn start(&self) -> io::Result<u32> {
        let (mut ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", format!("listener:{READY_NAME}"))
            .env(RESTART_PARENT, std::process::id().to_string())
            .env_remove("LISTEN_PID");
        sys::pass_fds(&mut cmd, [self.listener.as_raw_fd(), theirs.as_raw_fd()]);
        let mut child = cmd.spawn()?;
        // The child has its copy; ours must go, so that its death reads as EOF here.
        drop(theirs);
        match wait_ready(&mut ours, READY_TIMEOUT) {
            Ok(()) => Ok(child.id()),
            Err(e) => {
                stop(&mut child);
                Err(e)
            }
        }
    }
}

/// Waits for the new process's "READY=1" line.
fn wait_ready(ready: &mut UnixStream, limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"READY=1\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || got.len() > 64 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the new process did not start serving within {limit:?}"),
            ));
        }
        ready.set_read_timeout(Some(left))?;
        match ready.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the new process exited (or closed its ready socket) before serving",
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Kills a new process that failed to start serving, and reaps it.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

//! Sockets inherited from the service manager (systemd socket activation, or the previous
//! generation of a restart) and the READY/STOPPING notifications.
//!
//! The protocol is sd_listen_fds(3): `LISTEN_FDS` descriptors starting at 3, meant for us
//! only when `LISTEN_PID` is our pid, named by `LISTEN_FDNAMES`. The variables are read
//! once, on the first use, and removed at once, so that no child process takes them for
//! its own. `listenfd` takes the descriptors, checks each one's socket type and family
//! before use, and sets `FD_CLOEXEC`; `sd-notify` sends the notifications (to a path or an
//! abstract socket in `NOTIFY_SOCKET`).

use std::env;
use std::io::{self, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use listenfd::ListenFd;
use sd_notify::NotifyState;
use socket2::SockRef;

use crate::config::Builder;
use crate::server::{TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};
use crate::shutdown::Shared;

/// The name of the descriptor a restarting server passes for the new process's "ready".
pub(crate) const READY_NAME: &str = "socketserver-ready";
/// Set by a restarting server (instead of `LISTEN_PID`, which it cannot know before the
/// new process exists) to its own pid: the descriptors are for its direct child.
pub(crate) const RESTART_PARENT: &str = "SOCKETSERVER_RESTART_PARENT";
/// Set by a restarting server that confirms the hand-over: after our "ready" it writes
/// [`HANDOVER`] on the ready socket, or closes it when it abandons the restart (it began
/// shutting down first), and then we stop too. A server without it (an older version)
/// never confirms, and its silence means nothing.
pub(crate) const RESTART_HANDOVER: &str = "SOCKETSERVER_RESTART_HANDOVER";
/// What the previous generation writes once it has handed the service over to us.
pub(crate) const HANDOVER: &[u8] = b"HANDOVER\n";
/// How long the new process waits for the hand-over after its "ready" (the previous one
/// answers at once; the bound is for a previous process that hangs).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The descriptors passed to this process, taken once from the environment.
struct Inherited {
    fds: ListenFd,
    names: Vec<String>,
    /// The previous generation of a restart waits on this for our "ready".
    ready: Option<UnixStream>,
    /// The previous generation confirms its hand-over on `ready` (see [`RESTART_HANDOVER`]).
    handover: bool,
}

static INHERITED: OnceLock<Mutex<Inherited>> = OnceLock::new();

/// The inherited descriptors, reading the environment on the first call.
fn inherited() -> MutexGuard<'static, Inherited> {
    INHERITED
        .get_or_init(|| Mutex::new(Inherited::from_env()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Inherited {
    fn from_env() -> Inherited {
        let count = env::var("LISTEN_FDS").ok();
        let pid = env::var("LISTEN_PID").ok();
        let parent = env::var(RESTART_PARENT).ok();
        let names = env::var("LISTEN_FDNAMES").ok();
        let handover = env::var_os(RESTART_HANDOVER).is_some();
        env::remove_var(RESTART_HANDOVER);
        let for_us = match (&pid, &parent) {
            (Some(pid), _) => pid.parse::<u32>().ok() == Some(process::id()),
            (None, Some(parent)) => {
                parent.parse::<u32>().ok() == Some(std::os::unix::process::parent_id())
            }
            (None, None) => false,
        };
        // listenfd reads LISTEN_FDS (and LISTEN_PID, already checked above, stricter: it
        // accepts a missing one); it must start at fd 3 as systemd's protocol says.
        env::remove_var("LISTEN_FDS_FIRST_FD");
        env::remove_var("LISTEN_FDNAMES");
        env::remove_var(RESTART_PARENT);
        let mut fds = ListenFd::empty();
        if let Some(count) = &count {
            if for_us {
                fds = ListenFd::from_env();
            } else {
                log::warn!(
                    "ignoring LISTEN_FDS={count}: LISTEN_PID={} is not this process ({})",
                    pid.as_deref().unwrap_or("(unset)"),
                    process::id()
                );
            }
        }
        env::remove_var("LISTEN_FDS");
        env::remove_var("LISTEN_PID");
        let names: Vec<String> = match names {
            Some(n) => n.split(':').map(str::to_string).collect(),
            None => Vec::new(),
        };
        let mut this = Inherited {
            fds,
            names,
            ready: None,
            handover,
        };
        if let Some(i) = this.names.iter().position(|n| n == READY_NAME) {
            this.ready = this
                .fds
                .take_custom::<UnixStream>(i, libc::AF_UNIX, libc::SOCK_STREAM, "ready socket")
                .unwrap_or_else(|e| {
                    log::warn!("restart: the ready descriptor is unusable: {e}");
                    None
                });
        }
        this
    }

    /// Takes the first passed descriptor `take` accepts (it checks the socket type).
    fn take_first<S>(
        &mut self,
        mut take: impl FnMut(&mut ListenFd, usize) -> io::Result<Option<S>>,
    ) -> Option<(S, String)> {
        for i in 0..self.fds.len() {
            if let Ok(Some(s)) = take(&mut self.fds, i) {
                let name = self.names.get(i).cloned().unwrap_or_default();
                return Some((s, name));
            }
        }
        None
    }
}

fn must_listen(s: SockRef<'_>, what: &str) -> io::Result<()> {
    if s.is_listener()? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the inherited {what} socket is not listening"),
        ))
    }
}

/// Sends `READY=1` to the service manager (when `NOTIFY_SOCKET` is set) and tells the
/// previous generation of a restart, if any, that this process now serves. Called by
/// `serve` as it starts; only the first call tells the previous generation.
///
/// A previous generation that confirms hand-overs is then waited for (a round trip): if it
/// abandons the restart instead (shutdown began there first: a SIGTERM right behind the
/// SIGHUP) or is gone, this server shuts down too, so that no process is left serving
/// after the operator stopped the service.
pub(crate) fn serving(shared: &Arc<Shared>) {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        log::warn!("sd_notify READY=1: {e}");
    }
    // Only if `from_systemd` read the environment: `serve` never touches it by itself.
    let taken = INHERITED.get().and_then(|m| {
        let mut i = m.lock().unwrap_or_else(|e| e.into_inner());
        i.ready.take().map(|r| (r, i.handover))
    });
    let Some((mut ready, handover)) = taken else {
        return;
    };
    let told = ready.write_all(b"READY=1\n");
    if !handover {
        if let Err(e) = told {
            log::warn!("restart: telling the previous process we are ready: {e}");
        }
        return;
    }
    match told.and_then(|()| await_handover(&mut ready)) {
        Ok(()) => log::debug!("restart: the previous process handed the service over"),
        Err(e) => {
            log::warn!("restart abandoned by the previous process ({e}): stopping");
            shared.stop();
        }
    }
}

/// Waits (bounded) for the previous generation's [`HANDOVER`] line.
fn await_handover(ready: &mut UnixStream) -> io::Result<()> {
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while got.len() < HANDOVER.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no hand-over in time",
            ));
        }
        ready.set_read_timeout(Some(left))?;
        match ready.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "it closed the ready socket without handing over",
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    if got.starts_with(HANDOVER) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected message {got:?}"),
        ))
    }
}

/// Set once a restart handed the service over to a new process: this one is no longer the
/// service, and must not tell the manager it stops.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Whether a restart handed this process's listening socket over to a new process (which
/// then owns the socket file of a Unix server, too).
pub(crate) fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::SeqCst)
}

/// Sends `STOPPING=1` to the service manager (when `NOTIFY_SOCKET` is set). Called by
/// `serve` when shutdown begins; not after a restart handed the service over (the manager
/// would take the new process's service for stopping).
pub(crate) fn stopping() {
    if handed_over() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Stopping]) {
        log::warn!("sd_notify STOPPING=1: {e}");
    }
}

/// Marks this process as handed over (or not, when the hand-over lost a race with
/// shutdown), before the manager is told.
pub(crate) fn set_handed_over(yes: bool) {
    HANDED_OVER.store(yes, Ordering::SeqCst);
}

/// Tells the service manager that `pid` is now the service's main process (a restart
/// handed over to it), and that this process no longer speaks for the service. Needs
/// `NotifyAccess=` `main` or `all` in the unit.
pub(crate) fn handed_over_to(pid: u32) {
    HANDED_OVER.store(true, Ordering::SeqCst);
    if let Err(e) = sd_notify::notify(false, &[NotifyState::MainPid(pid)]) {
        log::warn!("sd_notify MAINPID={pid}: {e}");
    }
}

macro_rules! doc_from_systemd {
    () => {
        "The environment is read once, on the first call of any `from_systemd`, and the\n\
         variables are removed then: make that call early in `main`, before the program\n\
         starts threads (changing the environment is not thread-safe). Descriptors are\n\
         honoured only when `LISTEN_PID` is this process's pid. Later calls take the next\n\
         descriptor of the right type, if any. `serve` then sends `READY=1` (and\n\
         `STOPPING=1` at shutdown) when `NOTIFY_SOCKET` is set. The socket belongs to the\n\
         service manager too, so the server never shuts it down: a `pool` flavour runs as\n\
         the hand-off pool (see `Flavor::queue`)."
    };
}

impl Builder<TcpListener> {
    /// Serves the first listening TCP socket passed by systemd socket activation (or by
    /// the previous process of a [restart](crate::StreamServer::restart_on_sighup)), with
    /// these options; `Ok(None)` when there is none. Its name (`FileDescriptorName=`) is
    /// logged.
    ///
    #[doc = doc_from_systemd!()]
    ///
    /// ```no_run
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let builder = TcpServer::builder();
    /// let server = match builder.from_systemd()? {
    ///     Some(server) => server,
    ///     None => builder.bind("127.0.0.1:8001")?,
    /// };
    /// server.serve(|_req: &mut StreamRequest| Ok(()))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "sd_listen_fds")]
    pub fn from_systemd(&self) -> io::Result<Option<TcpServer>> {
        let Some((l, name)) = inherited().take_first(|f, i| f.take_tcp_listener(i)) else {
            return Ok(None);
        };
        must_listen(SockRef::from(&l), "TCP")?;
        log::info!(
            "serving the inherited socket {:?} ({name})",
            l.local_addr()?
        );
        // Shared with systemd: stopping must not shut it down for the next activation.
        self.from_listener(l)
            .inspect(|server| server.share_socket())
            .map(Some)
    }
}

impl Builder<UnixListener> {
    /// Serves the first listening Unix stream socket passed by systemd socket activation;
    /// `Ok(None)` when there is none. The socket file belongs to systemd: it is left in
    /// place.
    ///
    #[doc = doc_from_systemd!()]
    pub fn from_systemd(&self) -> io::Result<Option<UnixStreamServer>> {
        let Some((l, name)) = inherited().take_first(|f, i| f.take_unix_listener(i)) else {
            return Ok(None);
        };
        must_listen(SockRef::from(&l), "Unix stream")?;
        log::info!(
            "serving the inherited socket {:?} ({name})",
            l.local_addr()?
        );
        // Shared with systemd: stopping must not shut it down for the next activation.
        self.from_listener(l)
            .inspect(|server| server.share_socket())
            .map(Some)
    }
}

impl Builder<UdpSocket> {
    /// Serves the first UDP socket passed by systemd socket activation; `Ok(None)` when
    /// there is none.
    ///
    #[doc = doc_from_systemd!()]
    pub fn from_systemd(&self) -> io::Result<Option<UdpServer>> {
        let Some((s, name)) = inherited().take_first(|f, i| f.take_udp_socket(i)) else {
            return Ok(None);
        };
        log::info!(
            "serving the inherited socket {:?} ({name})",
            s.local_addr()?
        );
        // Shared with systemd: stopping must not shut it down for the next activation.
        self.from_socket(s)
            .inspect(|server| server.share_socket())
            .map(Some)
    }
}

impl Builder<UnixDatagram> {
    /// Serves the first Unix datagram socket passed by systemd socket activation;
    /// `Ok(None)` when there is none.
    ///
    #[doc = doc_from_systemd!()]
    pub fn from_systemd(&self) -> io::Result<Option<UnixDatagramServer>> {
        let Some((s, name)) = inherited().take_first(|f, i| f.take_unix_datagram(i)) else {
            return Ok(None);
        };
        log::info!(
            "serving the inherited socket {:?} ({name})",
            s.local_addr()?
        );
        // Shared with systemd: stopping must not shut it down for the next activation.
        self.from_socket(s)
            .inspect(|server| server.share_socket())
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: [&str; 5] = [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "LISTEN_FDS_FIRST_FD",
        RESTART_PARENT,
    ];

    /// One test touches the environment (no other test of the crate reads these variables).
    #[test]
    fn variables_are_removed_and_another_pid_is_ignored() {
        // For another process: nothing taken, everything removed.
        env::set_var("LISTEN_FDS", "1");
        env::set_var("LISTEN_PID", "1");
        env::set_var("LISTEN_FDNAMES", "web");
        let taken = Inherited::from_env();
        assert_eq!(taken.fds.len(), 0);
        for v in VARS {
            assert!(env::var_os(v).is_none(), "{v} left in the environment");
        }
        // For us, with no descriptor: honoured (zero of them), removed as well, and a
        // stray LISTEN_FDS_FIRST_FD (not systemd's) is dropped, not obeyed.
        env::set_var("LISTEN_FDS", "0");
        env::set_var("LISTEN_PID", process::id().to_string());
        env::set_var("LISTEN_FDS_FIRST_FD", "7");
        let taken = Inherited::from_env();
        assert_eq!(taken.fds.len(), 0);
        assert!(taken.ready.is_none());
        for v in VARS {
            assert!(env::var_os(v).is_none(), "{v} left in the environment");
        }
        // A restart's marker naming a process that is not our parent: ignored.
        env::set_var("LISTEN_FDS", "1");
        env::set_var(RESTART_PARENT, "1");
        let taken = Inherited::from_env();
        assert_eq!(taken.fds.len(), 0);
        for v in VARS {
            assert!(env::var_os(v).is_none(), "{v} left in the environment");
        }
    }
}

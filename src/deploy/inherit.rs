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
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process;
use std::sync::{Mutex, MutexGuard, OnceLock};

use listenfd::ListenFd;
use socket2::SockRef;

use crate::builder::Builder;
use crate::deploy::notify;
use crate::server::{TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};

/// The name of the descriptor a restarting server passes for the new process's "ready".
pub(crate) const READY_NAME: &str = "socketserver-ready";
/// Set by a restarting server (instead of `LISTEN_PID`, which it cannot know before the
/// new process exists) to its own pid: the descriptors are for its direct child.
pub(crate) const RESTART_PARENT: &str = "SOCKETSERVER_RESTART_PARENT";
/// Set by a restarting server that confirms the hand-over: after our "ready" it writes
/// [`HANDOVER`](notify::HANDOVER) on the ready socket, or closes it when it abandons the
/// restart (it began shutting down first), and then we stop too. A server without it (an
/// older version) never confirms, and its silence means nothing.
pub(crate) const RESTART_HANDOVER: &str = "SOCKETSERVER_RESTART_HANDOVER";

/// The descriptors passed to this process, taken once from the environment.
struct Inherited {
    fds: ListenFd,
    names: Vec<String>,
    /// Why the descriptors must not be served: the restart that passed them was abandoned.
    abandoned: Option<String>,
}

static INHERITED: OnceLock<Mutex<Inherited>> = OnceLock::new();

/// The inherited descriptors, reading the environment on the first call.
fn inherited() -> MutexGuard<'static, Inherited> {
    INHERITED
        .get_or_init(|| Mutex::new(Inherited::from_env()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Takes the first inherited descriptor `take` accepts; an error when this process was
/// started by a restart that its previous process abandoned (it exited before handing the
/// service over, as after a SIGTERM right behind the SIGHUP): this process must not serve.
fn take_inherited<S>(
    take: impl FnMut(&mut ListenFd, usize) -> io::Result<Option<S>>,
) -> io::Result<Option<(S, String)>> {
    let mut i = inherited();
    if let Some(why) = &i.abandoned {
        return Err(io::Error::other(why.clone()));
    }
    Ok(i.take_first(take))
}

impl Inherited {
    fn from_env() -> Inherited {
        let count = env::var("LISTEN_FDS").ok();
        let pid = env::var("LISTEN_PID").ok();
        let parent = env::var(RESTART_PARENT).ok();
        let names = env::var("LISTEN_FDNAMES").ok();
        let handover = env::var_os(RESTART_HANDOVER).is_some();
        env::remove_var(RESTART_HANDOVER);
        // A restart whose previous process exited before we read this: it was stopped
        // before the hand-over (we were reparented), so the restart is abandoned.
        let abandoned = match (&pid, &parent, handover) {
            (None, Some(p), true)
                if p.parse::<u32>().ok() != Some(std::os::unix::process::parent_id()) =>
            {
                Some(format!(
                    "restart abandoned: the process that started this one ({p}) exited \
                     before handing the service over"
                ))
            }
            _ => None,
        };
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
            abandoned,
        };
        if let Some(i) = this.names.iter().position(|n| n == READY_NAME) {
            let ready = this
                .fds
                .take_custom::<UnixStream>(i, libc::AF_UNIX, libc::SOCK_STREAM, "ready socket")
                .unwrap_or_else(|e| {
                    log::warn!("restart: the ready descriptor is unusable: {e}");
                    None
                });
            if let Some(ready) = ready {
                notify::set_ready_socket(ready, handover);
            }
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
        let Some((l, name)) = take_inherited(|f, i| f.take_tcp_listener(i))? else {
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
        let Some((l, name)) = take_inherited(|f, i| f.take_unix_listener(i))? else {
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
        let Some((s, name)) = take_inherited(|f, i| f.take_udp_socket(i))? else {
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
        let Some((s, name)) = take_inherited(|f, i| f.take_unix_datagram(i))? else {
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
        assert!(taken.names.iter().all(|n| n != READY_NAME));
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

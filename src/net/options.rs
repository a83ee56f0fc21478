//! The per-connection socket options (`TCP_NODELAY`, the read and write timeouts, TCP
//! keepalive), set on each accepted connection, or once on a TCP listener that passes them
//! on.
//!
//! Linux gives a connection it accepts a copy of the listening socket's options, so a TCP
//! server that sets them on its listener sets none per connection. With the examples'
//! options that was 6 of the 17 system calls of a connection that sends one request and
//! closes. Two cases still need a connection configured itself: the connections already
//! in the accept queue when the listener got its options (they were copied before), and
//! every connection where the system copies nothing (Unix sockets, other systems).

use std::io;
use std::net::TcpListener;
#[cfg(target_os = "linux")]
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use socket2::SockRef;

use crate::config::Config;
use crate::net::keepalive;
use crate::net::stream::Stream;

/// Connections configured one by one past those counted in the accept queue when the
/// listener got its options: a connection established while the options were being set
/// can be queued just after the count (a few at most, one per CPU handling a handshake),
/// and two threads that accept at once (the pool's workers) may take their connections'
/// places out of order.
const MARGIN: usize = 16;

/// How an accepted connection gets its socket options (`PassedOn::take`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Options {
    /// It is configured itself (`configure`); `explicit`: every option is set, defaults
    /// included (the listener carries options of its own, which it may have copied).
    Configure { explicit: bool },
    /// It has the listener's options, and this read timeout.
    Inherited { read: Option<Duration> },
}

/// Whether the listener passes its options on, and to which connections.
#[derive(Debug)]
pub(crate) struct PassedOn {
    /// The listener carries the options (set at least once): a connection configured by
    /// itself then sets every option, defaults included, since what it copied from the
    /// listener may differ from the system's defaults.
    active: AtomicBool,
    /// Connections still to configure one by one: those in the accept queue when the
    /// options were last set, and `MARGIN`.
    left: AtomicUsize,
    /// The read timeout connections start with, in nanoseconds (0: none).
    read: AtomicU64,
}

impl Default for PassedOn {
    fn default() -> PassedOn {
        PassedOn {
            active: AtomicBool::new(false),
            left: AtomicUsize::new(0),
            read: AtomicU64::new(0),
        }
    }
}

impl PassedOn {
    /// For a connection just accepted, taken in the order of the accepts (by the thread
    /// that accepted it, before another accept): whether it has the listener's options or
    /// must be configured itself.
    pub(crate) fn take(&self) -> Options {
        if !self.active.load(SeqCst) {
            return Options::Configure { explicit: false };
        }
        if self
            .left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Options::Configure { explicit: true };
        }
        Options::Inherited {
            read: match self.read.load(SeqCst) {
                0 => None,
                n => Some(Duration::from_nanos(n)),
            },
        }
    }
}

/// Sets the server's per-connection options on its TCP listener, for the connections it
/// accepts from now on (`read`: the read timeout they start with, which an engine may
/// choose), on the systems that pass them on (Linux). Call it before any accept of this
/// server: the count of connections still to configure one by one is set here. Fails
/// without changing how connections are configured if an option cannot be set.
pub(crate) fn pass_on(
    listener: &TcpListener,
    cfg: &Config,
    read: Option<Duration>,
    passed: &PassedOn,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let sock = SockRef::from(listener);
        set_tcp(&sock, cfg, read, true)?;
        let queued = crate::sys::accept_queue_len(listener.as_raw_fd())?;
        let nanos = read.map_or(0, |t| t.as_nanos().clamp(1, u64::MAX as u128) as u64);
        passed.read.store(nanos, SeqCst);
        passed.left.store(queued + MARGIN, SeqCst);
        passed.active.store(true, SeqCst);
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (listener, cfg, read, passed);
        Ok(())
    }
}

/// Configures an accepted connection itself (see `PassedOn::take`). `explicit`: set every
/// option, defaults included (the listener carries options of its own).
pub(crate) fn configure(stream: &Stream, cfg: &Config, explicit: bool) -> io::Result<()> {
    match stream {
        Stream::Tcp(s) => set_tcp(&SockRef::from(s), cfg, cfg.read_timeout, explicit)?,
        Stream::Unix(_) => {
            if cfg.read_timeout.is_some() {
                stream.set_read_timeout(cfg.read_timeout)?;
            }
            if cfg.write_timeout.is_some() {
                stream.set_write_timeout(cfg.write_timeout)?;
            }
        }
    }
    // macOS has no MSG_NOSIGNAL (see `sys::send`): the socket itself must not raise SIGPIPE.
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    SockRef::from(stream).set_nosigpipe(true)?;
    Ok(())
}

/// The TCP options on a socket, a listener's or a connection's. Without `explicit` only
/// those that differ from a new socket's defaults are set.
fn set_tcp(
    sock: &SockRef<'_>,
    cfg: &Config,
    read: Option<Duration>,
    explicit: bool,
) -> io::Result<()> {
    if cfg.nodelay || explicit {
        sock.set_tcp_nodelay(cfg.nodelay)?;
    }
    if read.is_some() || explicit {
        sock.set_read_timeout(read)?;
    }
    if cfg.write_timeout.is_some() || explicit {
        sock.set_write_timeout(cfg.write_timeout)?;
    }
    keepalive::set(sock, cfg.keepalive, explicit)
}

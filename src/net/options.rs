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

use std::any::Any;
use std::io;
use std::net::TcpListener;
#[cfg(target_os = "linux")]
use std::os::unix::io::AsRawFd;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::Config;
use crate::net::stream::Stream;
use crate::shared::PassedOn;

/// Sets the server's per-connection options on its listener, for the connections it
/// accepts from now on (`read`: the read timeout they start with, which an engine may
/// choose), where the system passes them on: TCP listeners on Linux (other listeners are
/// left alone). Call it before any accept of this server: the count of connections still
/// to configure one by one is set here. If an option cannot be set, every connection is
/// configured by itself (logged).
pub(crate) fn pass_on(listener: &dyn Any, cfg: &Config, read: Option<Duration>, passed: &PassedOn) {
    let Some(tcp) = listener.downcast_ref::<TcpListener>() else {
        return;
    };
    #[cfg(target_os = "linux")]
    {
        passed.changing();
        let set = set_tcp(&SockRef::from(tcp), cfg, read, true)
            .and_then(|()| crate::sys::accept_queue_len(tcp.as_raw_fd()));
        match set {
            Ok(queued) => passed.passed_on(read, queued),
            Err(e) => log::debug!("connection options stay per connection: {e}"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tcp, cfg, read, passed);
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
    set_keepalive(sock, cfg.keepalive, explicit)
}

/// Probes sent, unanswered, before the kernel declares the peer gone (`TCP_KEEPCNT`).
pub(crate) const KEEPALIVE_PROBES: u32 = 3;

/// Sets keepalive on a TCP socket (a connection, or a listener that passes it on) when the
/// server asks for it, with its timings; `explicit`: turns it off otherwise (the socket may
/// have it from its listener).
pub(crate) fn set_keepalive(
    sock: &SockRef<'_>,
    idle: Option<Duration>,
    explicit: bool,
) -> io::Result<()> {
    let Some(idle) = idle else {
        return match explicit {
            true => sock.set_keepalive(false),
            false => Ok(()),
        };
    };
    let interval = (idle / 3).max(Duration::from_secs(1));
    let ka = TcpKeepalive::new().with_time(idle).with_interval(interval);
    #[cfg(not(any(target_os = "openbsd", target_os = "haiku")))]
    let ka = ka.with_retries(KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&ka)
}

//! Transports: binding through socket2, accepting, receiving, and the Unix socket file.

use std::fs;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::addr::Addr;
use crate::config::{Builder, Config};
use crate::stream::Stream;
use crate::sys::{self, Interest};
use crate::time;

pub(crate) mod sealed {
    use super::*;

    /// A listening stream socket the accept loop can drive.
    pub trait Listen: AsRawFd + AsFd + Send + Sync + 'static {
        /// Accepts one connection (the listener is non-blocking).
        fn accept_stream(&self) -> io::Result<(Stream, Addr)>;
        /// The bound address.
        fn local(&self) -> io::Result<Addr>;
        /// Makes the listener non-blocking for the accept loop.
        fn prepare(&self) -> io::Result<()>;
    }

    /// A datagram socket the receive loop can drive.
    pub trait Dgram: Send + 'static {
        /// Wraps the socket for sharing with workers.
        fn into_dgram(self) -> io::Result<DgramSocket>;
    }

    /// Marks the transports whose builder offers a given group of options.
    pub trait Sealed {}
}

/// A listening stream socket a [`StreamServer`](crate::StreamServer) can serve:
/// `std::net::TcpListener` or `std::os::unix::net::UnixListener`. Sealed.
pub trait Listener: sealed::Listen {}
impl Listener for TcpListener {}
impl Listener for UnixListener {}

/// A datagram socket a [`DatagramServer`](crate::DatagramServer) can serve:
/// `std::net::UdpSocket` or `std::os::unix::net::UnixDatagram`. Sealed.
pub trait Datagram: sealed::Dgram {}
impl Datagram for UdpSocket {}
impl Datagram for UnixDatagram {}

/// The IP transports (TCP, UDP), whose builders offer address-reuse and IPv6 options. Sealed.
pub trait Inet: sealed::Sealed {}
impl sealed::Sealed for TcpListener {}
impl sealed::Sealed for UdpSocket {}
impl Inet for TcpListener {}
impl Inet for UdpSocket {}

impl sealed::Listen for TcpListener {
    fn accept_stream(&self) -> io::Result<(Stream, Addr)> {
        let (s, peer) = self.accept()?;
        // Linux never passes O_NONBLOCK on to accepted sockets; BSDs and macOS do.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        s.set_nonblocking(false)?;
        Ok((Stream::Tcp(s), Addr::Inet(peer)))
    }
    fn local(&self) -> io::Result<Addr> {
        self.local_addr().map(Addr::Inet)
    }
    fn prepare(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
}

impl sealed::Listen for UnixListener {
    fn accept_stream(&self) -> io::Result<(Stream, Addr)> {
        let (s, peer) = self.accept()?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        s.set_nonblocking(false)?;
        Ok((Stream::Unix(s), Addr::Unix(peer)))
    }
    fn local(&self) -> io::Result<Addr> {
        self.local_addr().map(Addr::Unix)
    }
    fn prepare(&self) -> io::Result<()> {
        self.set_nonblocking(true)
    }
}

impl sealed::Dgram for UdpSocket {
    fn into_dgram(self) -> io::Result<DgramSocket> {
        self.set_nonblocking(true)?;
        Ok(DgramSocket::Udp(self))
    }
}

impl sealed::Dgram for UnixDatagram {
    fn into_dgram(self) -> io::Result<DgramSocket> {
        self.set_nonblocking(true)?;
        Ok(DgramSocket::Unix(self))
    }
}

/// A datagram socket shared by the receive loop and the workers that reply on it.
///
/// It is non-blocking (the loop must never block outside `poll`); replies that meet a full
/// send buffer wait for it with `poll`, up to the write timeout.
#[derive(Debug)]
pub enum DgramSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DgramSocket {
    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Addr)> {
        match self {
            DgramSocket::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::Inet(a))),
            DgramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::Unix(a))),
        }
    }

    pub(crate) fn local(&self) -> io::Result<Addr> {
        match self {
            DgramSocket::Udp(s) => s.local_addr().map(Addr::Inet),
            DgramSocket::Unix(s) => s.local_addr().map(Addr::Unix),
        }
    }

    /// One `sendto`/`sendmsg` of `bufs` gathered into one datagram.
    fn try_send_to(&self, bufs: &[IoSlice<'_>], to: &Addr) -> io::Result<usize> {
        let sock = match self {
            DgramSocket::Udp(s) => SockRef::from(s),
            DgramSocket::Unix(s) => SockRef::from(s),
        };
        let addr = match (self, to) {
            (DgramSocket::Udp(_), Addr::Inet(a)) => SockAddr::from(*a),
            (DgramSocket::Unix(_), Addr::Unix(a)) => match a.as_pathname() {
                Some(path) => SockAddr::unix(path)?,
                None if a.is_unnamed() => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the client's Unix datagram socket has no address to reply to (bind it to a path)",
                    ))
                }
                // An abstract address (Linux): std knows how to send to it; gather first.
                None => {
                    let DgramSocket::Unix(s) = self else { unreachable!() };
                    let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                    return s.send_to_addr(&data, a);
                }
            },
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "reply address of the wrong family",
                ))
            }
        };
        // Never blocks, whether the socket is (pool workers wait in recvfrom) or not: a full
        // send buffer is waited for in `send_to`, under the write timeout.
        sock.send_to_vectored_with_flags(bufs, &addr, libc::MSG_DONTWAIT)
    }

    /// Sends `bufs` as one datagram, waiting for buffer space up to `timeout` (`None`:
    /// forever; a timeout too large to represent is forever too).
    pub(crate) fn send_to(
        &self,
        bufs: &[IoSlice<'_>],
        to: &Addr,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let deadline = time::after_opt(timeout);
        loop {
            match self.try_send_to(bufs, to) {
                Ok(n) if n == len => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("datagram sent short: {n} of {len} bytes"),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = time::left(deadline);
                    if timeout.is_some() && left.is_some_and(|l| l.is_zero()) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "datagram reply timed out",
                        ));
                    }
                    sys::poll(&[(self.as_raw_fd(), Interest::Write)], left)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for DgramSocket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            DgramSocket::Udp(s) => s.as_raw_fd(),
            DgramSocket::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for DgramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DgramSocket::Udp(s) => s.as_fd(),
            DgramSocket::Unix(s) => s.as_fd(),
        }
    }
}

/// `SO_RCVBUF` and `SO_SNDBUF` in effect on a socket, as the kernel reports them (Linux
/// reports double the size set: half of it is its own bookkeeping).
pub(crate) fn buffer_sizes(fd: &impl AsFd) -> io::Result<(usize, usize)> {
    let sock = SockRef::from(fd);
    Ok((sock.recv_buffer_size()?, sock.send_buffer_size()?))
}

/// Binds the first address of `addrs` that works, with the builder's socket options.
pub(crate) fn bind_inet(addrs: impl ToSocketAddrs, ty: Type, cfg: &Config) -> io::Result<Socket> {
    let mut last = None;
    for addr in addrs.to_socket_addrs()? {
        match bind_one(addr, ty, cfg) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")))
}

/// Creates, configures and binds one socket. On any error the socket is dropped (closed):
/// a failed bind never leaks a descriptor.
fn bind_one(addr: SocketAddr, ty: Type, cfg: &Config) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if cfg.reuse_address {
        socket.set_reuse_address(true)?;
    }
    if cfg.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(cfg.only_v6)?;
    }
    set_buffers(&socket, cfg)?;
    socket.bind(&addr.into())?;
    if ty == Type::STREAM {
        socket.listen(cfg.backlog)?;
    }
    Ok(socket)
}

fn in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("a server is already listening on {}", path.display()),
    )
}

/// Sets `SO_RCVBUF`/`SO_SNDBUF` when the builder asked for them.
fn set_buffers(socket: &Socket, cfg: &Config) -> io::Result<()> {
    if let Some(n) = cfg.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = cfg.send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    Ok(())
}

/// Binds a Unix socket at `path`, replacing a stale socket file only when no live server
/// answers on it. Never removes anything that is not a socket.
pub(crate) fn bind_unix(path: &Path, ty: Type, cfg: &Config) -> io::Result<(Socket, SocketFile)> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        // A non-blocking probe: against a live server whose backlog is full, a blocking
        // connect would wait for ever; non-blocking, it fails with EAGAIN, which means live.
        let probe = Socket::new(Domain::UNIX, ty, None).and_then(|s| {
            s.set_nonblocking(true)?;
            s.connect(&SockAddr::unix(path)?)
        });
        match probe {
            // EAGAIN (backlog full) and EINPROGRESS: a live server is there.
            Ok(()) => return Err(in_use(path)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINPROGRESS)) => {
                return Err(in_use(path))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("removing stale socket file {}", path.display());
                fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    let socket = Socket::new(Domain::UNIX, ty, None)?;
    set_buffers(&socket, cfg)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let file = SocketFile::new(path)?;
    if ty == Type::STREAM {
        socket.listen(cfg.backlog)?;
    }
    Ok((socket, file))
}

/// The socket file of a bound Unix server, removed when the server closes, but only while it
/// is still the same file (another server may have replaced it since).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // After a SIGHUP restart the new process serves the same socket: its file stays.
        if crate::systemd::handed_over() {
            return;
        }
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

impl<T: Inet> Builder<T> {
    /// Sets `SO_REUSEADDR`, so a restarted server can bind while old connections sit in
    /// TIME_WAIT. By default, on for TCP; off for UDP, where on Linux it would let a second
    /// server bind the same port and silently take its datagrams.
    pub fn reuse_address(&mut self, on: bool) -> &mut Self {
        self.set_reuse_address(on)
    }

    /// Sets `SO_REUSEPORT`: several processes bind the same port and the kernel spreads
    /// clients across them. By default, off: it is for load-balancing, not for fast
    /// restarts, and a stale process would silently keep receiving clients. Offered for IP
    /// sockets only (Linux refuses it on Unix sockets).
    pub fn reuse_port(&mut self, on: bool) -> &mut Self {
        self.set_reuse_port(on)
    }

    /// Sets `IPV6_V6ONLY` on IPv6 addresses (ignored for IPv4). By default, on: a server on
    /// `[::]` takes IPv6 only, and a second server can bind `0.0.0.0` on the same port.
    /// Turn it off for one dual-stack socket.
    pub fn only_v6(&mut self, on: bool) -> &mut Self {
        self.set_only_v6(on)
    }
}

impl<T: Listener> Builder<T> {
    /// Sets the `listen(2)` backlog: how many connected clients the kernel holds while the
    /// server is busy (the kernel caps it at `net.core.somaxconn`). By default, 1024 (Python
    /// used 5 until 3.15, which resets clients under bursts).
    pub fn backlog(&mut self, n: i32) -> &mut Self {
        self.set_backlog(n)
    }

    /// Sets `SO_RCVTIMEO` on every connection: a read that waits this long for data fails
    /// with `TimedOut`, and the handler decides what that means. By default, none.
    pub fn read_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.set_read_timeout(t)
    }

    /// Sets the idle timeout: how long a connection may wait for the client's *next*
    /// request (before its first one, or after the handler has written a reply and reads
    /// again with nothing of the next request buffered). The read then fails with
    /// `TimedOut`, and the close is counted in `Stats::idle_timeouts`, not as a handler
    /// error. By default, none; the read timeout, if set, applies instead.
    ///
    /// It does not bound a request that has begun: a client that stops half-way through a
    /// line is bounded by the read timeout (each read) and the request timeout (the whole
    /// request). The three side by side:
    ///
    /// | timeout | bounds | starts |
    /// |---|---|---|
    /// | `idle_timeout` | the wait between requests | after a reply, or at connect |
    /// | `read_timeout` | each read within a request | at each read |
    /// | `request_timeout` | a whole request, however it trickles in | at its first byte |
    pub fn idle_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.set_idle_timeout(t)
    }

    /// Sets the request timeout: a deadline for each whole request, from its first byte
    /// until the handler begins its reply (its first write). A client that trickles a
    /// request in a byte at a time (slowloris) cannot hold a worker past it, however short
    /// each read's wait. The read that meets the deadline fails with `TimedOut`, counted in
    /// `Stats::request_timeouts`. By default, none.
    ///
    /// The reply has a deadline too: when no [`write_timeout`](Self::write_timeout) is
    /// set, each write of the reply may block at most this long on a client that does not
    /// read (then `TimedOut`, counted in `Stats::request_timeouts` as well).
    ///
    /// A handler that legitimately reads for long (an upload) moves or clears the deadline
    /// with [`StreamRequest::set_deadline`](crate::StreamRequest::set_deadline). See
    /// [`idle_timeout`](Self::idle_timeout) for the three timeouts side by side.
    pub fn request_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.set_request_timeout(t)
    }

    /// Sets whether connections waiting for their client's next request end at once when
    /// shutdown begins. By default, on.
    ///
    /// On: such a read waits in `poll(2)` on the connection and the server's wake-up socket,
    /// so shutdown ends it at once and never cuts a request that is arriving (a request
    /// already there is read and answered first). It costs one extra system call per
    /// request, about 1 us of server CPU: 5-10% of a 64-byte echo on loopback, nothing
    /// measurable for larger requests (see BENCHMARKS.md).
    ///
    /// Off: the read waits in `read(2)`, as a hand-written server's does, and connections
    /// still idle at shutdown are shut down when the grace period ends.
    pub fn end_idle_on_shutdown(&mut self, on: bool) -> &mut Self {
        self.cfg.end_idle_on_shutdown = on;
        self
    }

    /// Sets the most connections `serve_requests` keeps open in the pool flavour (parked
    /// between requests or being served). By default, 65 536, far above the thread limit:
    /// idle connections there hold no thread, only a few KiB each. At the limit the server
    /// stops accepting (new clients wait in the kernel's backlog, then are refused by it)
    /// until a connection closes. The process's descriptor limit (`ulimit -n`) must be
    /// above it; below it, accepts fail with EMFILE and are backed off from.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.set_max_connections(n)
    }

    /// Sets the size of each connection's read buffer. By default, 8 KiB; at most 16 MiB
    /// (`bind` refuses more).
    pub fn read_buffer(&mut self, n: usize) -> &mut Self {
        self.cfg.read_buffer = n.max(1);
        self
    }
}

impl Builder<TcpListener> {
    /// Sets `TCP_NODELAY` on every connection, so a small reply leaves at once instead of
    /// waiting for Nagle's algorithm. By default, on (as in Go): a request/response server
    /// writing in pieces otherwise stalls up to 40 ms per reply.
    pub fn nodelay(&mut self, on: bool) -> &mut Self {
        self.cfg.nodelay = on;
        self
    }
}

impl<T: Datagram> Builder<T> {
    /// Sets the largest datagram the server receives whole. A larger one is dropped before
    /// any handler sees it, logged and counted in `Stats::oversize_dropped`: never silently
    /// cut (Python's 8192-byte `max_packet_size` cut it). By default, 65535; at most 16 MiB
    /// (`bind` refuses more: the receive buffer is allocated once, whole).
    #[doc(alias = "max_packet_size")]
    pub fn max_datagram_size(&mut self, n: usize) -> &mut Self {
        self.set_max_datagram(n)
    }
}

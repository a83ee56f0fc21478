//! Transports: the listener and datagram socket types a server takes, accepting and
//! receiving; binding is in `bind`, the connection type in `stream`.

pub(crate) mod bind;
pub(crate) mod keepalive;
pub(crate) mod options;
pub(crate) mod stream;

use std::io::{self, IoSlice};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::Duration;

use socket2::{SockAddr, SockRef};

use crate::addr::Addr;
use crate::net::stream::Stream;
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
            DgramSocket::Udp(s) => match sys::recv_from_ip(s.as_raw_fd(), buf)? {
                (n, Some(a)) => Ok((n, Addr::Inet(a))),
                // Shut down for the stop: no datagram, no sender.
                (_, None) => Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "recvfrom returned no sender: the socket was shut down",
                )),
            },
            DgramSocket::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Addr::Unix(a))),
        }
    }

    pub(crate) fn local(&self) -> io::Result<Addr> {
        match self {
            DgramSocket::Udp(s) => s.local_addr().map(Addr::Inet),
            DgramSocket::Unix(s) => s.local_addr().map(Addr::Unix),
        }
    }

    /// One `sendto` (one slice) or `sendmsg` (several, gathered) of `bufs` as one datagram.
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
        // send buffer is waited for in `send_to`, under the write timeout. One slice goes
        // by `sendto`, which the kernel takes for about 0.1 us less than a `sendmsg` of one
        // (it copies no message header and no vector in).
        match bufs {
            [one] => sock.send_to_with_flags(one, &addr, libc::MSG_DONTWAIT),
            _ => sock.send_to_vectored_with_flags(bufs, &addr, libc::MSG_DONTWAIT),
        }
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

//! A connected stream socket of either transport.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected stream socket: the raw connection under a [`StreamRequest`](crate::StreamRequest).
///
/// Reads and writes go straight to the socket. `&Stream` implements `Read` and `Write` too,
/// so one thread can read while another writes through a clone from [`Stream::try_clone`].
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

macro_rules! both {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    /// A second handle on the same connection (`dup(2)`), e.g. for a writer thread.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Shuts down the read half, the write half or both (`shutdown(2)`), for every handle on
    /// the connection.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        both!(self, s => s.shutdown(how))
    }

    /// Sets `SO_RCVTIMEO`: a read that waits longer fails. `None` waits forever.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => s.set_read_timeout(t))
    }

    /// Sets `SO_SNDTIMEO`: a write that waits longer fails. `None` waits forever.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        both!(self, s => s.set_write_timeout(t))
    }

    /// The TCP stream, if this is one.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Unix(_) => None,
        }
    }

    /// The Unix stream, if this is one.
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match self {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        both!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        both!(self, s => s.as_raw_fd())
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        both!(*self, s => (&*s).read(buf))
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        both!(*self, s => (&*s).read_vectored(bufs))
    }
}

/// Writes go through `send(2)`/`sendmsg(2)` with `MSG_NOSIGNAL`: writing to a connection
/// the client closed fails with `BrokenPipe` and never raises `SIGPIPE`, which would kill a
/// host program that does not ignore it (Rust binaries ignore it; a C host or a `cdylib`
/// may not). std's `write_vectored` and Unix-stream writes use `writev`/`write`, which do.
impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::send(self.as_raw_fd(), buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::sys::send_vectored(self.as_raw_fd(), bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

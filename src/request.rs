//! What a handler is given: the connection or the datagram, and the server's state.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::config::Config;
use crate::proxy::ProxyHeader;
use crate::shutdown::{ConnSlot, Shared};
use crate::stream::Stream;
use crate::sys::{self, Interest};
use crate::transport::DgramSocket;

/// How long, at most, closing a connection waits for the client's unread bytes to drain.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// How many unread bytes closing a connection drains, at most.
const LINGER_BYTES: usize = 256 * 1024;

/// One stream connection, as a handler sees it: Python's `self.request`, `rfile` and `wfile`
/// in one value.
///
/// * `Read` and `BufRead` go through an 8 KiB buffer (like `rfile`): `read_line`,
///   `read_until` and `lines` work directly, and `read_exact` never loses bytes.
/// * `Write` is unbuffered (like `wfile`): every `write` reaches the socket without a
///   `flush`. Wrap it in a `std::io::BufWriter` to batch small writes, and flush it.
/// * Reads that time out fail with `ErrorKind::TimedOut`.
///
/// ```no_run
/// use socketserver::{StreamRequest, TcpServer};
/// use std::io::{self, BufRead, Write};
///
/// TcpServer::bind("127.0.0.1:8001")?.serve(|req: &mut StreamRequest| {
///     let mut line = String::new();
///     let peer = req.peer_addr().clone();
///     while req.read_line(&mut line)? > 0 {
///         write!(req, "{peer} says: {line}")?;
///         line.clear();
///     }
///     Ok(())
/// })
/// # ; Ok::<(), io::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamRequest {
    reader: BufReader<SocketReader>,
    peer: Addr,
    /// The PROXY protocol header the connection started with (see proxy.rs).
    proxy: Option<Box<ProxyHeader>>,
}

/// The reading side: tracks EOF, idleness and timeouts. Writes are done on the same slot.
#[derive(Debug)]
struct SocketReader {
    slot: Arc<ConnSlot>,
    shared: Arc<Shared>,
    forked: bool,
    /// True until the first read, and again after every write: the next socket read then
    /// waits for the client's *next* request, so it is an idle wait.
    after_write: bool,
    eof: bool,
    read_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// Idle reads wait in `poll` with the wake socket (see `Builder::end_idle_on_shutdown`).
    wake_idle: bool,
    /// The `SO_RCVTIMEO` the socket has now, to skip redundant `setsockopt` calls.
    current_timeout: Option<Duration>,
}

impl StreamRequest {
    pub(crate) fn new(
        slot: Arc<ConnSlot>,
        peer: Addr,
        shared: Arc<Shared>,
        cfg: &Config,
        forked: bool,
    ) -> StreamRequest {
        let inner = SocketReader {
            slot,
            shared,
            forked,
            after_write: true,
            eof: false,
            read_timeout: cfg.read_timeout,
            idle_timeout: cfg.idle_timeout,
            wake_idle: cfg.end_idle_on_shutdown,
            current_timeout: cfg.read_timeout,
        };
        StreamRequest {
            reader: BufReader::with_capacity(cfg.read_buffer, inner),
            peer,
            proxy: None,
        }
    }

    /// The client's address. Behind a load balancer speaking the PROXY protocol (see
    /// `Builder::proxy_protocol`), the real client's address from the header; the
    /// balancer's is [`balancer_addr`](Self::balancer_addr).
    pub fn peer_addr(&self) -> &Addr {
        &self.peer
    }

    /// The load balancer's address (the socket's peer), when the connection started with a
    /// PROXY protocol header; `None` without one.
    pub fn balancer_addr(&self) -> Option<&Addr> {
        self.proxy.as_deref().map(ProxyHeader::balancer_addr)
    }

    /// The PROXY protocol header the connection started with (its TLVs: ALPN, authority,
    /// unique id...), when the server expects one (see `Builder::proxy_protocol`).
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.proxy.as_deref()
    }

    pub(crate) fn set_proxy_header(&mut self, header: ProxyHeader) {
        self.peer = crate::proxy::client_addr(&header);
        self.proxy = Some(Box::new(header));
    }

    /// The server's end of this connection (`getsockname(2)`).
    pub fn local_addr(&self) -> io::Result<Addr> {
        Ok(match &self.reader.get_ref().slot.stream {
            Stream::Tcp(s) => Addr::Inet(s.local_addr()?),
            Stream::Unix(s) => Addr::Unix(s.local_addr()?),
        })
    }

    /// Whether the server has begun shutting down. Long-lived handlers (a chat, a stream of
    /// events) check it between messages and wind down; handlers blocked waiting for the
    /// client's next request get EOF at shutdown without checking.
    pub fn is_shutting_down(&self) -> bool {
        self.reader.get_ref().stopping()
    }

    /// Sets how long one read may wait for data (`SO_RCVTIMEO`); `None` waits forever.
    /// Starts as the server's `read_timeout` (by default, none).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        let inner = self.reader.get_mut();
        inner.read_timeout = t;
        inner.apply_timeout(t)
    }

    /// Sets how long one write may wait for buffer space (`SO_SNDTIMEO`); `None` waits
    /// forever. Starts as the server's `write_timeout` (by default, none).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.stream().set_write_timeout(t)
    }

    /// Declares that the handler is between requests: the next read from the socket waits
    /// for the client's *next* request, so shutdown may end it with EOF, and the idle timeout
    /// applies to it.
    ///
    /// Reads and writes through the request track this by themselves (a read after a write
    /// is idle). Call it when replies go out another way, e.g. through a
    /// [`Stream::try_clone`] written by another thread, as a chat server does.
    pub fn mark_idle(&mut self) {
        // Bytes already buffered are served first; the flag matters for the socket read
        // that follows them.
        self.reader.get_mut().after_write = true;
    }

    /// Sets how long the connection may wait for the client's next request (see
    /// `idle_timeout` on the server's builder); `None` for no limit.
    pub fn set_idle_timeout(&mut self, t: Option<Duration>) {
        self.reader.get_mut().idle_timeout = t;
    }

    /// The raw connection. Bytes already buffered for reading are not visible through it:
    /// use [`buffer`](StreamRequest::buffer) first if you switch.
    pub fn stream(&self) -> &Stream {
        &self.reader.get_ref().slot.stream
    }

    /// Bytes read from the socket but not yet consumed by the handler.
    pub fn buffer(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Closes the connection politely: shut down writing (the client reads EOF after all
    /// our bytes); then, if the client's bytes are waiting unread, drain them (up to 256 KiB,
    /// for up to 1 s) so that the kernel does not answer unread data with a reset that would
    /// destroy our last reply in flight. A quiet connection is closed at once.
    pub(crate) fn close(&mut self) {
        let inner = self.reader.get_mut();
        let stream = &inner.slot.stream;
        let _ = stream.shutdown(Shutdown::Write);
        if inner.eof || inner.stopping() {
            return;
        }
        let fd = stream.as_raw_fd();
        let deadline = Instant::now() + LINGER_TIME;
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES && Instant::now() < deadline && sys::readable_now(fd) {
            // Readable: this read returns at once (data, EOF or an error).
            match (&*stream).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

impl SocketReader {
    fn stopping(&self) -> bool {
        if self.forked {
            sys::readable_now(self.shared.wake_fd())
        } else {
            self.shared.is_stopping()
        }
    }

    fn apply_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        if t != self.current_timeout {
            self.slot.stream.set_read_timeout(t)?;
            self.current_timeout = t;
        }
        Ok(())
    }

    /// Waits for the client's next request or for shutdown, whichever comes first: `true`
    /// when bytes (or EOF) are there to read, `false` at shutdown.
    ///
    /// Waiting in `poll` on the connection and the server's wake socket (rather than in
    /// `read`) is what lets shutdown end an idle connection without ever cutting a request
    /// that is arriving: if bytes are there, the request is read and answered first.
    fn wait_request(&self) -> io::Result<bool> {
        let fds = [
            (self.slot.stream.as_raw_fd(), Interest::Read),
            (self.shared.wake_fd(), Interest::Read),
        ];
        let limit = self.idle_timeout.or(self.read_timeout);
        let deadline = limit.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ready = sys::poll(&fds, left)?;
            if ready.is(0) {
                return Ok(true);
            }
            if ready.is(1) {
                return Ok(false);
            }
            if let (Some(t), Some(d)) = (limit, deadline) {
                if Instant::now() >= d {
                    return Err(timeout_error(true, t));
                }
            }
        }
    }
}

fn timeout_error(idle: bool, t: Duration) -> io::Error {
    let what = if idle {
        "idle timeout: no request from the client within"
    } else {
        "read timed out after"
    };
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} {t:?}"))
}

impl Read for SocketReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let idle = self.after_write && !self.eof;
        if idle && self.wake_idle {
            // Wait for the next request or shutdown. A request already waiting is served
            // even when shutdown has begun; the connection ends only when nothing is there.
            if !self.wait_request()? {
                self.eof = true;
                return Ok(0);
            }
            self.apply_timeout(self.read_timeout)?;
        } else if idle {
            // Shutdown has begun and no request is waiting: end now rather than block until
            // the grace period runs out.
            if self.stopping() && !sys::readable_now(self.slot.stream.as_raw_fd()) {
                self.eof = true;
                return Ok(0);
            }
            self.apply_timeout(self.idle_timeout.or(self.read_timeout))?;
        } else {
            self.apply_timeout(self.read_timeout)?;
        }
        match (&self.slot.stream).read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.after_write = false;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(timeout_error(
                    idle && self.idle_timeout.is_some(),
                    self.current_timeout.unwrap_or_default(),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.reader.read_vectored(bufs)
    }
}

impl BufRead for StreamRequest {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.reader.consume(amt)
    }
}

impl Write for StreamRequest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inner = self.reader.get_mut();
        let n = (&inner.slot.stream).write(buf)?;
        inner.after_write = true;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let inner = self.reader.get_mut();
        let n = (&inner.slot.stream).write_vectored(bufs)?;
        inner.after_write = true;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One datagram, as a handler sees it: the bytes, who sent them, and a way to answer.
///
/// ```no_run
/// use socketserver::{DatagramRequest, UdpServer};
/// use std::io;
///
/// UdpServer::bind("127.0.0.1:8003")?.serve(|req: &mut DatagramRequest| {
///     let echo = req.packet().to_vec();
///     req.reply(&echo)
/// })
/// # ; Ok::<(), io::Error>(())
/// ```
#[derive(Debug)]
pub struct DatagramRequest {
    data: Vec<u8>,
    peer: Addr,
    socket: Arc<DgramSocket>,
    shared: Arc<Shared>,
    forked: bool,
    write_timeout: Option<Duration>,
}

impl DatagramRequest {
    pub(crate) fn new(
        data: Vec<u8>,
        peer: Addr,
        socket: Arc<DgramSocket>,
        shared: Arc<Shared>,
        cfg: &Config,
        forked: bool,
    ) -> DatagramRequest {
        DatagramRequest {
            data,
            peer,
            socket,
            shared,
            forked,
            write_timeout: cfg.write_timeout,
        }
    }

    /// The datagram's bytes, whole: a datagram larger than the server's receive buffer is
    /// reported and dropped before any handler sees it, never cut.
    pub fn packet(&self) -> &[u8] {
        &self.data
    }

    /// Takes the datagram's bytes out of the request.
    pub fn take_packet(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// The sender's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.peer
    }

    /// The server's socket address.
    pub fn local_addr(&self) -> io::Result<Addr> {
        self.socket.local()
    }

    /// Whether the server has begun shutting down.
    pub fn is_shutting_down(&self) -> bool {
        if self.forked {
            sys::readable_now(self.shared.wake_fd())
        } else {
            self.shared.is_stopping()
        }
    }

    /// Sends `data` to the sender as one datagram, from the server's socket. It may be called
    /// several times; nothing is sent if it is never called. A Unix datagram client that did
    /// not bind its own path cannot be answered: this then fails with `NotConnected`.
    pub fn reply(&mut self, data: &[u8]) -> io::Result<()> {
        self.socket.send_to(data, &self.peer, self.write_timeout)
    }
}

//! What a handler is given: the connection or the datagram, and the server's state.

use std::io::{self, BufRead, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::config::Config;
use crate::net::stream::Stream;
use crate::net::DgramSocket;
use crate::proxy::ProxyHeader;
use crate::push::Outbound;
use crate::shared::{ConnSlot, Registration, Shared};
use crate::stats::Counters;
use crate::sys::{self, Interest};
use crate::time;

mod buffer;
use buffer::ReadBuffer;
pub use buffer::Received;

/// How long, at most, closing a connection waits for the client's unread bytes to drain.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// How many unread bytes closing a connection drains, at most.
const LINGER_BYTES: usize = 256 * 1024;
/// Small writes are gathered up to this many bytes; larger ones go straight to the socket.
const WRITE_BUFFER: usize = 8 * 1024;

/// One stream connection, as a handler sees it: Python's `self.request`, `rfile` and `wfile`
/// in one value.
///
/// * `Read` and `BufRead` go through an 8 KiB buffer (like `rfile`): `read_line`,
///   `read_until` and `lines` work directly, and `read_exact` never loses bytes. For lines
///   from an untrusted client, bound them with [`framing::read_line`](crate::framing::read_line)
///   (a `read_line` into a `String` grows as long as the client sends).
/// * `Write` is buffered, unlike Python's `wfile`: `writeln!(req, "{reply}")` leaves as one
///   `send`, not one per piece (with `TCP_NODELAY`, on by default, each `send` would be a
///   packet). You never need to call `flush`: the buffer goes out before any read that
///   waits for the client, when the handler returns, when it fills (8 KiB), and on
///   [`flush`](Write::flush). Writes of 8 KiB or more go straight to the socket, uncopied.
///   Call `flush` yourself only when the reply must leave while the handler does something
///   else than reading from this request (waiting on another thread, running a command).
/// * Reads and writes that time out fail with `ErrorKind::TimedOut`; see
///   [`set_deadline`](StreamRequest::set_deadline) for a bound on a whole request.
/// * Interrupted system calls (`EINTR`) are retried inside; handlers never see them.
///
/// ```no_run
/// use socketserver::{framing, StreamRequest, TcpServer};
/// use std::io::{self, Write};
///
/// TcpServer::bind("127.0.0.1:8001")?.serve(|req: &mut StreamRequest| {
///     let peer = req.peer_addr().clone();
///     let mut buf = Vec::new();
///     while let Some(line) = framing::read_text_line(req, &mut buf, 4096)? {
///         match line {
///             Ok(text) => writeln!(req, "{peer} says: {text}")?,
///             Err(_) => writeln!(req, "error: not UTF-8")?,
///         }
///     }
///     Ok(())
/// })
/// # ; Ok::<(), io::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamRequest {
    reader: ReadBuffer<SocketReader>,
    peer: Addr,
    /// The PROXY protocol header the connection started with (see proxy.rs).
    proxy: Option<Box<ProxyHeader>>,
    /// The connection's place in the server's registry (none in a forked child), given up
    /// when the request is dropped.
    _registration: Option<Registration>,
}

/// Which limit ended a connection, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimedOut {
    /// No next request within the idle timeout.
    Idle,
    /// A request (or the handler's deadline) did not complete in time.
    Request,
}

/// The connection under the request's read buffer: the socket reads, the write buffer, and
/// what decides how long each call may wait.
#[derive(Debug)]
struct SocketReader {
    slot: Arc<ConnSlot>,
    shared: Arc<Shared>,
    forked: bool,
    /// Whether the next socket read waits for the client's *next* request: true at first,
    /// and after a write that left nothing of the next request in the read buffer. Shutdown
    /// may end such a read with EOF, and the idle timeout bounds it.
    idle: bool,
    /// True from the first write after a read until the next read: a reply is going out.
    replying: bool,
    /// No read yet: the first request is often there already when the connection is
    /// accepted (the client wrote right after connecting), so the first read tries the
    /// socket before waiting in `poll`.
    fresh: bool,
    /// The socket is known to be readable (the event set said so): the next read returns
    /// at once, so it needs no timeout set first.
    ready: bool,
    eof: bool,
    /// The last socket read returned less than it asked for (plaintext only): the socket
    /// had nothing more at that moment, so whatever comes later raises a new event.
    drained: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    /// After it, every read and write fails with `TimedOut`.
    deadline: Option<Instant>,
    /// The deadline was set from `request_timeout` (it ends when the reply begins), not by
    /// the handler (whose deadline stays until it changes it).
    deadline_is_request: bool,
    /// Idle reads wait in `poll` with the wake socket (see `Builder::end_idle_on_shutdown`).
    wake_idle: bool,
    /// The `SO_RCVTIMEO` and `SO_SNDTIMEO` the socket has now, to skip redundant
    /// `setsockopt` calls.
    current_read: Option<Duration>,
    current_write: Option<Duration>,
    /// Set while the engine waits on this thread for a busy client's next request: the
    /// next socket read blocks at most this long (`SO_RCVTIMEO`) and fails with
    /// `WouldBlock` when nothing came (see `StreamRequest::wait_next`).
    linger: Option<Duration>,
    /// Set while the engine looks, without waiting, for a request that came with its new
    /// connection (see `StreamRequest::read_now`).
    now: bool,
    /// Bytes written by the handler and not yet sent.
    out: Vec<u8>,
    timed_out: Option<TimedOut>,
    /// The TLS session every read and write goes through, if the server has TLS (until a
    /// pusher is made: then it is in `push`).
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::TlsSession>>,
    /// The session's facts, kept here once the session moved into `push`.
    #[cfg(feature = "tls")]
    tls_info: Option<Box<crate::tls::TlsInfo>>,
    /// The connection's outbound queue, once a pusher was made (`StreamRequest::pusher`):
    /// every write then goes through it. `None`, the rest of the time, costs nothing.
    push: Option<Arc<Outbound>>,
    /// A reply is going out and `push` was told (pushes wait for its end).
    push_replying: bool,
    /// The last EOF was the server's shutdown ending an idle wait, not the client's.
    eof_by_shutdown: bool,
}

/// A pusher's connection is closed before its socket: no push reaches a reused descriptor.
impl Drop for SocketReader {
    fn drop(&mut self) {
        if let Some(push) = &self.push {
            push.dropped();
        }
    }
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
            idle: true,
            replying: false,
            fresh: true,
            ready: false,
            eof: false,
            drained: false,
            read_timeout: cfg.read_timeout,
            write_timeout: cfg.write_timeout,
            idle_timeout: cfg.idle_timeout,
            request_timeout: cfg.request_timeout,
            deadline: None,
            deadline_is_request: false,
            wake_idle: cfg.end_idle_on_shutdown,
            // `net::options` set these on the socket (the read timeout may be the
            // listener's: `socket_read_timeout_is`).
            current_read: cfg.read_timeout,
            current_write: cfg.write_timeout,
            linger: None,
            now: false,
            out: Vec::new(),
            timed_out: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_info: None,
            push: None,
            push_replying: false,
            eof_by_shutdown: false,
        };
        StreamRequest {
            reader: ReadBuffer::with_capacity(cfg.read_buffer, inner),
            peer,
            proxy: None,
            _registration: None,
        }
    }

    /// Keeps the connection's registration with the server for as long as the request lives.
    pub(crate) fn keep_registration(&mut self, registration: Option<Registration>) {
        self._registration = registration;
    }

    /// Routes this connection's reads and writes through `tls` (its handshake is done).
    #[cfg(feature = "tls")]
    pub(crate) fn set_tls(&mut self, tls: crate::tls::TlsSession) {
        self.reader.get_mut().tls = Some(Box::new(tls));
    }

    /// The facts of the TLS session (protocol version, SNI, ALPN, client certificates), or
    /// `None` when the server does not use TLS. Cargo feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls_info(&self) -> Option<&crate::tls::TlsInfo> {
        let inner = self.reader.get_ref();
        match &inner.tls {
            Some(t) => Some(t.info()),
            None => inner.tls_info.as_deref(),
        }
    }

    /// The connection's outbound handle: `Clone + Send + Sync`, it writes to this
    /// connection from any thread (another connection's handler, a timer), whether the
    /// connection is being served or waits between requests, with TLS too. See
    /// [`Pusher`](crate::push::Pusher) and the guide's
    /// [server push chapter](crate::guide::server_push).
    ///
    /// The first call switches the connection to push mode: from then on the handler's own
    /// writes go through the same queue (in order with the pushes: a push made while the
    /// handler writes a reply goes out after that reply). Connections that never call it
    /// pay nothing. Later calls return clones of the same pusher.
    ///
    /// ```no_run
    /// use socketserver::{Next, StreamRequest, TcpServer};
    /// use std::io::{self, BufRead, Write};
    /// use std::time::Duration;
    ///
    /// // Each client gets a line every second, from a thread of its own, between its
    /// // requests too (in the pool flavour, the connection holds no thread meanwhile).
    /// TcpServer::bind("127.0.0.1:8010")?.serve_requests(|req: &mut StreamRequest| {
    ///     let mut line = String::new();
    ///     if req.read_line(&mut line)? == 0 {
    ///         return Ok(Next::Close);
    ///     }
    ///     if line.trim() == "tick" {
    ///         let pusher = req.pusher();
    ///         std::thread::spawn(move || {
    ///             while pusher.push(b"tick\n").is_ok() {
    ///                 std::thread::sleep(Duration::from_secs(1));
    ///             }
    ///         });
    ///     }
    ///     writeln!(req, "ok")?;
    ///     Ok(Next::Continue)
    /// })
    /// # ; Ok::<(), io::Error>(())
    /// ```
    pub fn pusher(&mut self) -> crate::push::Pusher {
        let inner = self.reader.get_mut();
        if inner.push.is_none() {
            #[cfg(feature = "tls")]
            let session = inner.tls.take();
            #[cfg(feature = "tls")]
            if let Some(tls) = &session {
                inner.tls_info = Some(Box::new(tls.info().clone()));
            }
            inner.push_replying = inner.replying;
            inner.push = Some(Outbound::new(
                &inner.slot,
                &inner.shared,
                inner.replying,
                #[cfg(feature = "tls")]
                session,
            ));
        }
        let push = inner.push.as_ref().map(Arc::clone);
        crate::push::Pusher::new(push.expect("made above"))
    }

    /// How many bytes of input are already waiting in the crate's buffers: read from the
    /// socket and not yet consumed, plus, with TLS, the plaintext rustls has decrypted
    /// (Python's `SSLSocket.pending()`). A handler that watches its socket with `poll(2)`
    /// must look here first: a client's bytes that arrived with an earlier read (two lines
    /// in one TLS record, the first request with the end of the handshake) raise no event.
    pub fn pending(&mut self) -> usize {
        let buffered = self.reader.buffer().len();
        buffered + self.reader.get_mut().tls_pending()
    }

    /// The bytes that have arrived, as Python's `conn.recv(bufsize)` returns them: what is
    /// buffered already, else what one read of the socket brings (waiting for the first
    /// byte under the request's timeouts). Empty when the client has closed its side.
    ///
    /// For byte-stream protocols such as an echo, where "what has arrived" is the request;
    /// a protocol with messages reads them whole with [`framing`](crate::framing) or
    /// [`BufRead`] instead. The bytes come as a [`Received`], used as a byte slice: a large
    /// request is lent in the connection's read buffer itself, uncopied, and a small one is
    /// copied into memory of its own length; so a call costs what arrived, not a zeroed
    /// buffer of the largest request (`let mut buf = [0; 16 * 1024]` in a handler zeroes
    /// 16 KiB per request). How much one call can return is the read buffer's size
    /// ([`Builder::read_buffer`](crate::Builder::read_buffer)), which grows for clients
    /// whose requests fill it.
    ///
    /// ```
    /// use socketserver::{Next, StreamRequest, TcpServer};
    /// use std::io::{self, Read, Write};
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    ///
    /// let server = TcpServer::bind("127.0.0.1:0")?;
    /// let addr = server.local_addr()?;
    /// let stop = server.shutdown_handle();
    /// let serving = std::thread::spawn(move || {
    ///     server.serve_requests(|req: &mut StreamRequest| {
    ///         let data = req.recv()?;
    ///         if data.is_empty() {
    ///             return Ok(Next::Close); // the client closed
    ///         }
    ///         req.write_all(&data)?;
    ///         Ok(Next::Continue)
    ///     })
    /// });
    ///
    /// let mut client = TcpStream::connect(addr)?;
    /// client.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// client.write_all(b"hello")?;
    /// let mut back = [0; 5];
    /// client.read_exact(&mut back)?;
    /// assert_eq!(&back, b"hello");
    /// stop.shutdown();
    /// serving.join().unwrap()?;
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn recv(&mut self) -> io::Result<Received> {
        self.fill_buf()?;
        Ok(self.reader.take_buffered())
    }

    /// The reply to the request just served is over (its bytes are flushed): pushes held
    /// for it go out. Nothing to do for a connection without a pusher.
    pub(crate) fn reply_done(&mut self) {
        let inner = self.reader.get_mut();
        if std::mem::take(&mut inner.push_replying) {
            if let Some(push) = &inner.push {
                push.end_reply();
            }
        }
    }

    /// Whether the last read's EOF came from the server's shutdown (an idle wait ended),
    /// not from the client: the connection is still open, and may be told goodbye.
    pub(crate) fn ended_by_shutdown(&self) -> bool {
        self.reader.get_ref().eof_by_shutdown
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
    /// Starts as the server's `read_timeout` (by default, none). A zero duration is an
    /// `InvalidInput` error.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        nonzero(t)?;
        self.reader.get_mut().read_timeout = t;
        Ok(())
    }

    /// Sets how long one write may wait for buffer space (`SO_SNDTIMEO`); `None` waits
    /// forever. Starts as the server's `write_timeout` (by default, none). A zero duration
    /// is an `InvalidInput` error.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        nonzero(t)?;
        self.reader.get_mut().write_timeout = t;
        Ok(())
    }

    /// Sets a deadline for everything that follows: once it passes, every read and write
    /// fails with `TimedOut` (each call waits at most until it, whatever the per-call
    /// timeouts say). `None` removes it. It stays until changed.
    ///
    /// The server's `request_timeout` sets one of these at the first byte of each request
    /// and clears it when the reply begins; a handler that reads a long upload on purpose
    /// moves it or clears it. Reaching a deadline is counted in `Stats::request_timeouts`.
    ///
    /// ```no_run
    /// use socketserver::{StreamRequest, TcpServer};
    /// use std::io::{self, BufRead, Write};
    /// use std::time::{Duration, Instant};
    ///
    /// TcpServer::bind("127.0.0.1:0")?.serve(|req: &mut StreamRequest| {
    ///     // The whole greeting within 5 s, however slowly it trickles in.
    ///     req.set_deadline(Some(Instant::now() + Duration::from_secs(5)));
    ///     let mut hello = String::new();
    ///     req.read_line(&mut hello)?;
    ///     req.set_deadline(None);
    ///     req.write_all(b"welcome\n")
    /// })
    /// # ; Ok::<(), io::Error>(())
    /// ```
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        let inner = self.reader.get_mut();
        inner.deadline = deadline;
        inner.deadline_is_request = false;
    }

    /// The deadline in force, if any (see [`set_deadline`](StreamRequest::set_deadline)).
    pub fn deadline(&self) -> Option<Instant> {
        self.reader.get_ref().deadline
    }

    /// Declares that the handler is between requests: the next read from the socket waits
    /// for the client's *next* request, so shutdown may end it with EOF, and the idle timeout
    /// applies to it. It also ends the request timeout's deadline.
    ///
    /// Reads and writes through the request track this by themselves (a read after a write
    /// is idle, unless the next request has already begun arriving). Call it when replies
    /// go out another way, e.g. through a [`Stream::try_clone`] written by another thread,
    /// as a chat server does. It has no effect while bytes of the next request are buffered.
    pub fn mark_idle(&mut self) {
        let next_started = !self.reader.buffer().is_empty();
        let inner = self.reader.get_mut();
        inner.end_request_deadline();
        inner.idle = !next_started;
    }

    /// Sets how long the connection may wait for the client's next request (see
    /// `idle_timeout` on the server's builder); `None` for no limit.
    pub fn set_idle_timeout(&mut self, t: Option<Duration>) {
        self.reader.get_mut().idle_timeout = t;
    }

    /// The raw connection. Bytes already buffered for reading are not visible through it
    /// (use [`buffer`](StreamRequest::buffer) first if you switch), and bytes written to the
    /// request go out before it only after a [`flush`](Write::flush).
    ///
    /// With TLS it carries the encrypted records: reading or writing it directly breaks
    /// the session (socket options and `shutdown` are fine).
    pub fn stream(&self) -> &Stream {
        &self.reader.get_ref().slot.stream
    }

    /// The socket's read timeout is `t` (it came from the listener, see `net::options`).
    pub(crate) fn socket_read_timeout_is(&mut self, t: Option<Duration>) {
        self.reader.get_mut().current_read = t;
    }

    /// Bytes read from the socket but not yet consumed by the handler.
    pub fn buffer(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Which limit ended the request, if one did.
    pub(crate) fn timed_out(&self) -> Option<TimedOut> {
        self.reader.get_ref().timed_out
    }

    /// The next request is known to have arrived (the event set said the connection is
    /// readable, or its bytes are buffered): its first read goes straight to the socket (no
    /// idle wait), and its deadline starts now.
    pub(crate) fn request_arrived(&mut self) {
        let buffered = !self.reader.buffer().is_empty();
        let inner = self.reader.get_mut();
        inner.timed_out = None;
        inner.fresh = false;
        inner.replying = false;
        inner.ready = !buffered;
        if inner.idle {
            inner.idle = false;
            inner.begin_request_deadline();
        }
    }

    /// After the event set found the socket readable: whether the next request has begun
    /// arriving. Always, without TLS; with it, a record without data (a key update) is not
    /// a request: the connection waits again (see `TlsSession::pump`).
    pub(crate) fn request_begun(&mut self) -> io::Result<bool> {
        self.reader.get_mut().tls_pump()
    }

    /// Whether nothing of a next request is buffered: neither in the read buffer nor, with
    /// TLS, decrypted in the session.
    pub(crate) fn nothing_buffered(&mut self) -> bool {
        self.reader.buffer().is_empty() && !self.reader.get_mut().tls_buffered()
    }

    /// Waits up to `window`, on this thread, for the client's next request: one blocking
    /// read into the read buffer under `SO_RCVTIMEO` (no `poll`, no event set), as a
    /// thread-per-connection server waits. `Ok(true)` when bytes (or the client's EOF)
    /// came, `Ok(false)` when the window passed first. The timeout stays on the socket, so
    /// that a client served this way request after request costs no `setsockopt` either.
    /// Plaintext only: with TLS the caller waits in `poll` (a record may carry no request).
    pub(crate) fn wait_next(&mut self, window: Duration) -> io::Result<bool> {
        self.reader.get_mut().linger = Some(window);
        let came = self.fill_or_nothing();
        self.reader.get_mut().linger = None;
        came
    }

    /// One fill of the read buffer under the reader's current setting (a wait's window, or
    /// no wait): `Ok(true)` when bytes (or the client's EOF) came, `Ok(false)` when the
    /// socket had nothing in time (`WouldBlock`).
    fn fill_or_nothing(&mut self) -> io::Result<bool> {
        match self.reader.fill_buf() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads what the client has sent, without waiting (one `recv` with `MSG_DONTWAIT`
    /// into the read buffer): `Ok(true)` when bytes (or its EOF) came, `Ok(false)` when
    /// nothing is there yet. For a new connection, whose first request often comes with it:
    /// one read, where a look (`poll`) and then a read were two. Plaintext only.
    pub(crate) fn read_now(&mut self) -> io::Result<bool> {
        self.reader.get_mut().now = true;
        let came = self.fill_or_nothing();
        self.reader.get_mut().now = false;
        came
    }

    /// Whether the connection should end now that its request is done: the server is
    /// stopping and does not keep connections open (as a restart's drain does).
    pub(crate) fn stop_serving(&self) -> bool {
        let inner = self.reader.get_ref();
        inner.stopping() && (inner.forked || !inner.shared.keeps_open())
    }

    /// The connection goes quiet (parked between requests): its read buffer, if empty,
    /// and its write buffer, if everything was sent, give their memory back; they are
    /// allocated again by the next request (see `buffer.rs`).
    pub(crate) fn release_buffers(&mut self) {
        self.reader.release();
        let inner = self.reader.get_mut();
        if inner.out.is_empty() {
            inner.out = Vec::new();
        }
    }

    /// Whether the connection reads through TLS.
    pub(crate) fn has_tls(&self) -> bool {
        self.reader.get_ref().has_tls()
    }

    /// Whether the last socket read was short (plaintext): nothing more was queued then.
    pub(crate) fn drained(&self) -> bool {
        self.reader.get_ref().drained
    }

    /// Whether the client closed its side (a read returned 0).
    pub(crate) fn at_eof(&self) -> bool {
        self.reader.get_ref().eof
    }

    /// Closes the connection politely: send what is still buffered, shut down writing (the
    /// client reads EOF after all our bytes); then, if the client's bytes are waiting
    /// unread, drain them (up to 256 KiB, for up to 1 s, never waiting for more) so that the
    /// kernel does not answer unread data with a reset that would destroy our last reply in
    /// flight. This holds at shutdown too, for a handler that returned on
    /// `is_shutting_down` with a request unread. A quiet connection is closed at once.
    pub(crate) fn close(&mut self) {
        let inner = self.reader.get_mut();
        let _ = inner.flush_out();
        // Pushes held for the reply, then (with TLS) close_notify, get a last chance.
        if let Some(push) = &inner.push {
            push.close();
        }
        // With TLS, close_notify goes out first, even to a client that closed its side
        // (TLS 1.3 allows the half-close).
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut inner.tls {
            tls.close(&inner.slot.stream);
        }
        if inner.eof {
            // The client closed its side: our close sends the FIN; a shutdown first would
            // be one more system call (failing when the client is already gone).
            return;
        }
        let stream = &inner.slot.stream;
        let _ = stream.shutdown(Shutdown::Write);
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

    /// The handler writes: a reply is going out.
    fn replying(&mut self) -> &mut SocketReader {
        let next_started = !self.reader.buffer().is_empty();
        let inner = self.reader.get_mut();
        inner.ready = false;
        if !inner.replying {
            inner.replying = true;
            if let Some(push) = &inner.push {
                push.begin_reply();
                inner.push_replying = true;
            }
            inner.end_request_deadline();
            if next_started {
                // The client pipelined: its next request has begun arriving, so its
                // deadline starts now.
                inner.begin_request_deadline();
            }
        }
        // Idle only when nothing of the next request is buffered: a read that must wait
        // for the rest of a half-arrived request is not idle, and shutdown or the idle
        // timeout must not cut it.
        inner.idle = !next_started;
        inner
    }

    /// The handler reads: any reply has ended.
    fn reading(&mut self) -> &mut ReadBuffer<SocketReader> {
        self.reader.get_mut().replying = false;
        &mut self.reader
    }
}

/// Refuses a zero timeout, which the socket layer cannot express (it would mean "never").
fn nonzero(t: Option<Duration>) -> io::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a zero timeout would fail every call at once; use None for no timeout",
        ));
    }
    Ok(())
}

/// Whether a socket call failed because its `SO_RCVTIMEO`/`SO_SNDTIMEO` ran out (Linux
/// reports it as `EAGAIN`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn timed_out(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, msg)
}

fn read_timeout_error(t: Option<Duration>) -> io::Error {
    timed_out(format!("read timed out after {:?}", t.unwrap_or_default()))
}

impl SocketReader {
    fn stopping(&self) -> bool {
        if self.forked {
            sys::readable_now(self.shared.wake_fd())
        } else {
            self.shared.is_stopping()
        }
    }

    fn begin_request_deadline(&mut self) {
        if let (Some(t), true) = (
            self.request_timeout,
            self.deadline.is_none() || self.deadline_is_request,
        ) {
            self.deadline = time::after(t);
            self.deadline_is_request = self.deadline.is_some();
        }
    }

    fn end_request_deadline(&mut self) {
        if self.deadline_is_request {
            self.deadline = None;
            self.deadline_is_request = false;
        }
    }

    /// The timeout for the next socket call: `configured`, shortened to what is left of
    /// the deadline (`true` when the deadline is what limits it). Fails once the deadline
    /// has passed.
    fn limit(&mut self, configured: Option<Duration>) -> io::Result<(Option<Duration>, bool)> {
        match time::left(self.deadline) {
            None => Ok((configured, false)),
            Some(Duration::ZERO) => Err(self.deadline_error()),
            Some(left) => match configured {
                Some(c) if c <= left => Ok((Some(c), false)),
                _ => Ok((Some(left), true)),
            },
        }
    }

    fn deadline_error(&mut self) -> io::Error {
        self.timed_out = Some(TimedOut::Request);
        match (self.deadline_is_request, self.request_timeout) {
            (true, Some(t)) => timed_out(format!(
                "request timeout: the request did not arrive whole within {t:?}"
            )),
            _ => timed_out("deadline passed".to_string()),
        }
    }

    /// The error of a wait for the next request that ran out: an idle timeout when one is
    /// set (a normal end, counted apart), else the read timeout that stood in for it.
    fn idle_or_read_error(&mut self, t: Option<Duration>) -> io::Error {
        if self.idle_timeout.is_none() {
            return read_timeout_error(t);
        }
        self.timed_out = Some(TimedOut::Idle);
        timed_out(format!(
            "idle timeout: no request from the client within {:?}",
            t.unwrap_or_default()
        ))
    }

    fn apply_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        if t != self.current_read {
            self.slot.stream.set_read_timeout(t)?;
            self.current_read = t;
        }
        Ok(())
    }

    fn apply_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        if t != self.current_write {
            self.slot.stream.set_write_timeout(t)?;
            self.current_write = t;
        }
        Ok(())
    }

    /// Waits for the client's next request or for shutdown, whichever comes first: `true`
    /// when bytes (or EOF) are there to read, `false` at shutdown.
    ///
    /// Waiting in `poll` on the connection and the server's wake socket (rather than in
    /// `read`) is what lets shutdown end an idle connection without ever cutting a request
    /// that is arriving: if bytes are there, the request is read and answered first.
    fn wait_request(&mut self) -> io::Result<bool> {
        if self.tls_buffered() {
            return Ok(true);
        }
        let fds = [
            (self.slot.stream.as_raw_fd(), Interest::Read),
            (self.shared.wake_fd(), Interest::Read),
        ];
        let limit = self.idle_timeout.or(self.read_timeout);
        let end = time::earliest(time::after_opt(limit), self.deadline);
        // Both descriptors, or the connection alone once a restart's drain keeps it open.
        let mut watched = &fds[..];
        loop {
            let ready = sys::poll(watched, time::left(end))?;
            if ready.is(0) && self.tls_pump()? {
                return Ok(true);
            }
            if ready.is(1) {
                if !self.forked && self.shared.keeps_open() {
                    // A restart, not a stop: the client may go on; the grace period's end
                    // shuts the connection down under this wait.
                    watched = &fds[..1];
                    continue;
                }
                return Ok(false);
            }
            if time::passed(end) {
                return Err(if time::passed(self.deadline) {
                    self.deadline_error()
                } else {
                    self.idle_or_read_error(limit)
                });
            }
        }
    }

    /// Sends bytes now, under the write timeout and the deadline; `EINTR` is retried.
    ///
    /// Without a write timeout, the request timeout (if any) bounds each send instead: a
    /// reply a client never reads must not hold its worker for ever, and the time it
    /// blocks counts like request time (`Stats::request_timeouts`).
    fn send_with(
        &mut self,
        send: impl Fn(&mut Sink<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let reply_timeout = self.write_timeout.is_none() && self.request_timeout.is_some();
        let (t, by_deadline) = self.limit(self.write_timeout.or(self.request_timeout))?;
        self.apply_write_timeout(t)?;
        loop {
            match send(&mut self.sink(t)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) && by_deadline => return Err(self.deadline_error()),
                Err(e) if is_timeout(&e) && reply_timeout => {
                    self.timed_out = Some(TimedOut::Request);
                    return Err(timed_out(format!(
                        "reply timeout: the client took none of the reply for {:?} \
                         (the request timeout; no write timeout is set)",
                        t.unwrap_or_default()
                    )));
                }
                Err(e) if is_timeout(&e) => {
                    return Err(timed_out(format!(
                        "write timed out after {:?}",
                        t.unwrap_or_default()
                    )))
                }
                r => {
                    if let Ok(n) = r {
                        Counters::add(&self.shared.counters.sent_bytes, n);
                    }
                    return r;
                }
            }
        }
    }

    /// Sends the write buffer. On an error, what was not sent stays buffered.
    fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let mut sent = 0;
        let result = loop {
            if sent == out.len() {
                break Ok(());
            }
            match self.send_with(|s| s.write(&out[sent..])) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) => break Err(e),
            }
        };
        self.out = out;
        self.out.drain(..sent);
        result
    }

    fn write_out(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > WRITE_BUFFER {
            self.flush_out()?;
        }
        if buf.len() >= WRITE_BUFFER {
            return self.send_with(|s| s.write(buf));
        }
        if self.out.capacity() == 0 {
            self.out.reserve_exact(WRITE_BUFFER);
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_out_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if self.out.len().saturating_add(total) > WRITE_BUFFER {
            self.flush_out()?;
        }
        if total >= WRITE_BUFFER {
            return self.send_with(|s| s.write_vectored(bufs));
        }
        for b in bufs {
            self.write_out(b)?;
        }
        Ok(total)
    }
}

/// The TLS hooks: without a TLS session (or without the `tls` feature) they are the plain
/// socket's behaviour.
impl SocketReader {
    /// Whether reads and writes go through a TLS session (then the socket's bytes are
    /// records, never read directly).
    fn has_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        self.push.as_ref().is_some_and(|p| p.is_tls())
    }

    /// Plaintext that rustls already decrypted counts as readable: poll(2) on the socket
    /// would not see it.
    fn tls_buffered(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.has_plaintext_buffered();
        }
        #[cfg(feature = "tls")]
        if let Some(push) = self.push.as_ref().filter(|p| p.is_tls()) {
            return push.tls_buffered();
        }
        false
    }

    /// Decrypted plaintext waiting in the TLS session, in bytes.
    fn tls_pending(&mut self) -> usize {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.plaintext_pending();
        }
        #[cfg(feature = "tls")]
        if let Some(push) = self.push.as_ref().filter(|p| p.is_tls()) {
            return push.tls_pending();
        }
        0
    }

    /// After poll(2) found the socket readable: whether a request has begun arriving (with
    /// TLS, a whole record without data, such as a key update, is not one: wait again).
    fn tls_pump(&mut self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.pump(&self.slot.stream);
        }
        #[cfg(feature = "tls")]
        if let Some(push) = self.push.as_ref().filter(|p| p.is_tls()) {
            return push.tls_pump(&self.slot.stream);
        }
        Ok(true)
    }

    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(mut tls) = self.tls.take() {
            let slot = Arc::clone(&self.slot);
            let result = tls.read(&slot.stream, buf, &mut || self.request_arriving());
            self.tls = Some(tls);
            return result;
        }
        #[cfg(feature = "tls")]
        if let Some(push) = self.push.clone().filter(|p| p.is_tls()) {
            let slot = Arc::clone(&self.slot);
            return push.tls_read(&slot.stream, buf, &mut || self.request_arriving());
        }
        (&self.slot.stream).read(buf)
    }

    /// With TLS: bytes of a request have arrived, not yet a whole record. The request's
    /// deadline starts now (as it does at the first byte of a plaintext request), and the
    /// next socket read waits at most the read timeout, within the deadline.
    #[cfg(feature = "tls")]
    fn request_arriving(&mut self) -> io::Result<()> {
        if self.idle {
            self.idle = false;
            self.begin_request_deadline();
        }
        let (t, _) = self.limit(self.read_timeout)?;
        self.apply_read_timeout(t)
    }

    /// Where sends go: the socket, the TLS session over it, or the outbound queue (which
    /// waits at most `timeout` for the socket to take them).
    fn sink(&mut self, timeout: Option<Duration>) -> Sink<'_> {
        Sink {
            stream: &self.slot.stream,
            #[cfg(feature = "tls")]
            tls: self.tls.as_deref_mut(),
            push: self.push.as_ref(),
            timeout,
        }
    }
}

/// The socket as the write path sees it: plain, through the TLS session, or through the
/// outbound queue a pusher shares.
struct Sink<'a> {
    stream: &'a Stream,
    #[cfg(feature = "tls")]
    tls: Option<&'a mut crate::tls::TlsSession>,
    push: Option<&'a Arc<Outbound>>,
    timeout: Option<Duration>,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(push) = self.push {
            return push.owner_write(&[IoSlice::new(buf)], self.timeout);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.write(self.stream, buf);
        }
        { self.stream }.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(push) = self.push {
            return push.owner_write(bufs, self.timeout);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.write_vectored(self.stream, bufs);
        }
        { self.stream }.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SocketReader {
    /// A read of a socket known to be readable.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = loop {
            match (&self.slot.stream).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        if let Ok(0) = result {
            if !buf.is_empty() {
                self.eof = true;
            }
        }
        result
    }
}

impl SocketReader {
    /// After a read that returned what the buffer held: takes what is queued in the socket
    /// now, without waiting, when the socket read that filled the buffer filled it (so more
    /// is probably there). A request larger than the buffer (16 KiB through the default 8)
    /// then comes in one handler read, as it would through an unbuffered socket, rather
    /// than in two rounds. Plaintext only; an error or `EWOULDBLOCK` is left to the next
    /// read.
    fn top_up(&mut self, buf: &mut [u8]) -> usize {
        if self.drained || self.eof || self.has_tls() || buf.is_empty() {
            return 0;
        }
        match sys::recv_now(self.slot.stream.as_raw_fd(), buf) {
            Ok(0) => {
                self.eof = true;
                0
            }
            Ok(n) => {
                Counters::add(&self.shared.counters.received_bytes, n);
                self.drained = n < buf.len();
                n
            }
            Err(_) => {
                self.drained = true;
                0
            }
        }
    }
}

impl Read for SocketReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.read_request_bytes(buf);
        if let Ok(n) = result {
            Counters::add(&self.shared.counters.received_bytes, n);
        }
        // A short read empties the socket's receive queue (a TCP or Unix stream read
        // returns early only when nothing more is queued).
        self.drained = matches!(result, Ok(n) if n < buf.len()) && !self.has_tls();
        result
    }
}

impl SocketReader {
    fn read_request_bytes(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Replies leave before the server waits for the client.
        self.flush_out()?;
        if std::mem::take(&mut self.push_replying) {
            if let Some(push) = &self.push {
                push.end_reply(); // the reply is over: pushes held for it go out
            }
        }
        if self.eof {
            return Ok(0);
        }
        if let Some(window) = self.linger {
            return self.read_lingering(buf, window);
        }
        if self.now {
            return self.read_without_wait(buf);
        }
        let idle = self.idle;
        if std::mem::take(&mut self.ready) && !self.has_tls() {
            // Readable now: this read returns at once, whatever the socket's timeout.
            return self.read_now(buf);
        }
        // Waiting for the next request, shutdown ends the wait: in a plain socket read that
        // shutdown can end (`read_idle`), or, with TLS (a record may carry no request) and
        // in forked children (the parent cannot reach their sockets), in `poll` with the
        // wake socket.
        let polled = self.wake_idle && (self.forked || self.has_tls());
        if idle && self.wake_idle && !polled {
            return self.read_idle(buf);
        }
        if std::mem::take(&mut self.fresh) && idle && polled && !self.has_tls() {
            // Saves the poll when the first request came with the connection.
            match sys::recv_now(self.slot.stream.as_raw_fd(), buf) {
                Ok(0) if !buf.is_empty() => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.idle = false;
                    self.begin_request_deadline();
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let configured = if idle && polled {
            // Wait for the next request or shutdown. A request already waiting is served
            // even when shutdown has begun; the connection ends only when nothing is there.
            if !self.wait_request()? {
                self.eof = true;
                self.eof_by_shutdown = true;
                return Ok(0);
            }
            self.read_timeout
        } else if idle {
            // Shutdown has begun and no request is waiting: end now rather than block until
            // the grace period runs out.
            if self.stopping()
                && !self.shared.keeps_open()
                && !sys::readable_now(self.slot.stream.as_raw_fd())
                && !self.tls_buffered()
            {
                self.eof = true;
                self.eof_by_shutdown = true;
                return Ok(0);
            }
            self.idle_timeout.or(self.read_timeout)
        } else {
            self.read_timeout
        };
        let (t, by_deadline) = self.limit(configured)?;
        self.apply_read_timeout(t)?;
        match self.read_counted(buf) {
            Err(e) if is_timeout(&e) => Err(if by_deadline || time::passed(self.deadline) {
                self.deadline_error()
            } else if idle && self.idle && !self.wake_idle {
                self.idle_or_read_error(t)
            } else {
                read_timeout_error(t)
            }),
            r => r,
        }
    }

    /// One socket read under the timeout set, `EINTR` retried: an EOF is remembered, and
    /// the first bytes of a request start its deadline. A timeout is the caller's to name.
    fn read_counted(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = loop {
            match self.read_socket(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.account(result, buf.is_empty())
    }

    /// What a socket read returned (into an `empty` buffer or not), remembered: an EOF,
    /// and the first bytes of a request, which start its deadline.
    fn account(&mut self, result: io::Result<usize>, empty: bool) -> io::Result<usize> {
        match result {
            Ok(0) if !empty => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                // (With TLS, the first bytes of a record may have started it already.)
                if self.idle {
                    // The first bytes of a request: its deadline starts now.
                    self.idle = false;
                    self.begin_request_deadline();
                }
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }
}

impl SocketReader {
    /// The wait for the client's next request, as a thread per connection waits: one
    /// blocking read, no `poll` per request. The connection is marked idle first, so that
    /// shutdown ends the wait by shutting the socket's reading down (`Shared::stop_first`):
    /// the read then returns 0 (what the client had sent is read first), a stop, not the
    /// client's EOF. The idle timeout (or the read timeout) bounds it.
    fn read_idle(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.slot.idle.store(true, SeqCst);
        let result = self.read_idle_marked(buf);
        self.slot.idle.store(false, SeqCst);
        if matches!(result, Ok(0)) && self.slot.woken.load(SeqCst) {
            self.eof_by_shutdown = true;
        }
        result
    }

    fn read_idle_marked(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Shutdown began before the mark was seen: end now unless a request is there (a
        // restart's drain serves on).
        if self.stopping()
            && !self.shared.keeps_open()
            && !sys::readable_now(self.slot.stream.as_raw_fd())
        {
            self.eof = true;
            self.eof_by_shutdown = true;
            return Ok(0);
        }
        let configured = self.idle_timeout.or(self.read_timeout);
        let (t, by_deadline) = self.limit(configured)?;
        self.apply_read_timeout(t)?;
        match self.read_counted(buf) {
            Err(e) if is_timeout(&e) => Err(if by_deadline || time::passed(self.deadline) {
                self.deadline_error()
            } else if self.idle {
                self.idle_or_read_error(t)
            } else {
                read_timeout_error(t)
            }),
            r => r,
        }
    }

    /// The read of `StreamRequest::read_now`: `WouldBlock` when nothing is there.
    fn read_without_wait(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = loop {
            match sys::recv_now(self.slot.stream.as_raw_fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.account(result, buf.is_empty())
    }

    /// The read of `StreamRequest::wait_next`: blocking, at most `window` (a timeout is
    /// `WouldBlock`: the client went quiet).
    fn read_lingering(&mut self, buf: &mut [u8], window: Duration) -> io::Result<usize> {
        self.apply_read_timeout(Some(window))?;
        match self.read_counted(buf) {
            Err(e) if is_timeout(&e) => Err(io::ErrorKind::WouldBlock.into()),
            r => r,
        }
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let buffered = self.reader.buffer().len();
        let n = self.reading().read(buf)?;
        if buffered > 0 && n == buffered && n < buf.len() {
            // The buffer was handed out whole and there is room for more: if the socket
            // read that filled it was not short, more of the request is probably queued.
            return Ok(n + self.reader.get_mut().top_up(&mut buf[n..]));
        }
        Ok(n)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.reading().read_vectored(bufs)
    }
}

impl BufRead for StreamRequest {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reading().fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.reader.consume(amt)
    }
}

/// Buffered: see the type's documentation for when the buffer is sent.
impl Write for StreamRequest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.replying().write_out(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.replying().write_out_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.reader.get_mut().flush_out()
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
        self.reply_vectored(&[IoSlice::new(data)])
    }

    /// Sends the slices, in order, to the sender as *one* datagram (`sendmsg(2)` gathers
    /// them): a header and the packet without copying both into a new buffer first.
    ///
    /// ```no_run
    /// use socketserver::{DatagramRequest, UdpServer};
    /// use std::io::{self, IoSlice};
    ///
    /// UdpServer::bind("127.0.0.1:8003")?.serve(|req: &mut DatagramRequest| {
    ///     let packet = req.take_packet();
    ///     req.reply_vectored(&[IoSlice::new(b"echo: "), IoSlice::new(&packet)])
    /// })
    /// # ; Ok::<(), io::Error>(())
    /// ```
    pub fn reply_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        self.socket.send_to(bufs, &self.peer, self.write_timeout)?;
        self.count_sent(bufs.iter().map(|b| b.len()).sum());
        Ok(())
    }

    fn count_sent(&self, n: usize) {
        Counters::add(&self.shared.counters.sent_bytes, n);
    }

    /// Sends `data` as one datagram to `to`, any peer, from the server's socket (so the
    /// receiver sees the server's address as the sender): what a datagram server needs to
    /// relay a message to a client other than the one that sent it. Like
    /// [`reply`](DatagramRequest::reply), it waits for send-buffer space up to the server's
    /// write timeout. `to` must be of the server's family (an IP address for a UDP server,
    /// a bound Unix path for a Unix datagram server): otherwise it fails with
    /// `InvalidInput`.
    ///
    /// ```no_run
    /// use socketserver::{Addr, DatagramRequest, UdpServer};
    /// use std::io;
    ///
    /// // A relay: every datagram goes on to a fixed listener, and the sender gets "relayed".
    /// let listener = Addr::Inet("127.0.0.1:9100".parse().unwrap());
    /// UdpServer::bind("127.0.0.1:9101")?.serve(move |req: &mut DatagramRequest| {
    ///     let data = req.take_packet();
    ///     req.send_to(&data, &listener)?;
    ///     req.reply(b"relayed")
    /// })
    /// # ; Ok::<(), io::Error>(())
    /// ```
    pub fn send_to(&mut self, data: &[u8], to: &Addr) -> io::Result<()> {
        self.socket
            .send_to(&[IoSlice::new(data)], to, self.write_timeout)?;
        self.count_sent(data.len());
        Ok(())
    }
}

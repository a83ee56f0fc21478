//! The handler traits: what a user writes.

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::HandlerError;
use crate::request::{DatagramRequest, StreamRequest};

/// Handles one stream connection (TCP or Unix): Python's `StreamRequestHandler`.
///
/// The server makes one handler value per connection (from the factory given to
/// [`serve_with`](crate::StreamServer::serve_with), or by cloning the value given to
/// [`serve`](crate::StreamServer::serve)) and calls, on the worker that owns the connection:
///
/// 1. [`setup`](StreamHandler::setup); if it fails, nothing else runs;
/// 2. [`handle`](StreamHandler::handle);
/// 3. [`finish`](StreamHandler::finish), **even when `handle` failed** (not when `setup` did).
///
/// `Ok(())` means the request is done and the connection is closed cleanly. An `Err` (from
/// any step) or a panic is logged with the peer address, counted in
/// [`Stats`](crate::Stats), passed to the server's `on_error` hook, and the connection is
/// closed; the worker and the server go on serving. A client that disconnects mid-request
/// shows up as an `Err` of kind `ConnectionReset`, `BrokenPipe` or `UnexpectedEof`, which
/// is logged at debug level only.
///
/// Any `FnMut(&mut StreamRequest) -> io::Result<()>` closure is a handler:
///
/// ```
/// use socketserver::{StreamHandler, StreamRequest};
/// use std::io::{self, BufRead, Write};
///
/// struct LineEcho { lines: usize }
///
/// impl StreamHandler for LineEcho {
///     fn handle(&mut self, req: &mut StreamRequest) -> io::Result<()> {
///         let mut line = String::new();
///         while req.read_line(&mut line)? > 0 {
///             req.write_all(line.as_bytes())?;
///             self.lines += 1;
///             line.clear();
///         }
///         Ok(())
///     }
///     fn finish(&mut self, req: &mut StreamRequest) -> io::Result<()> {
///         log::info!("{}: {} lines", req.peer_addr(), self.lines);
///         Ok(())
///     }
/// }
/// ```
#[doc(alias = "StreamRequestHandler")]
#[doc(alias = "BaseRequestHandler")]
pub trait StreamHandler: Send + 'static {
    /// Runs first. By default, does nothing.
    fn setup(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        let _ = req;
        Ok(())
    }

    /// Serves the connection: read requests, write responses, return when done.
    fn handle(&mut self, req: &mut StreamRequest) -> io::Result<()>;

    /// Runs last, after `handle` whatever it returned. By default, does nothing.
    fn finish(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        let _ = req;
        Ok(())
    }
}

impl<F> StreamHandler for F
where
    F: FnMut(&mut StreamRequest) -> io::Result<()> + Send + 'static,
{
    fn handle(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        self(req)
    }
}

/// What a [`RequestHandler`] wants after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection: wait for the client's next request (parked in the server's
    /// event set, holding no thread, in the pool flavour).
    Continue,
    /// Close the connection cleanly.
    Close,
}

/// Serves one request at a time on a kept connection: the shape for servers with many
/// mostly idle clients.
///
/// [`serve_requests`](crate::StreamServer::serve_requests) makes one handler value per
/// connection (its state lives as long as the connection) and calls `handle_request` each
/// time the client's next request arrives. Within a request the handler reads and writes
/// blocking, as a [`StreamHandler`] does (bounded by the server's timeouts and
/// `request_timeout`); between requests, in the pool flavour, the connection waits in the
/// server's event set (epoll on Linux), not on a thread: idle clients cost a few KiB each
/// instead of a thread. In the other flavours the requests of a connection run in a loop on
/// its thread or process.
///
/// Return [`Next::Continue`] to keep the connection, [`Next::Close`] to close it (do so when
/// a read returns 0: the client closed). An `Err` or a panic is reported as for a
/// `StreamHandler` and closes the connection. Bytes the client already sent (pipelined
/// requests in the read buffer) are served at once, without waiting for the network.
///
/// Any `FnMut(&mut StreamRequest) -> io::Result<Next>` closure is one:
///
/// ```no_run
/// use socketserver::{Next, StreamRequest, TcpServer};
/// use std::io::{self, Write};
///
/// TcpServer::bind("127.0.0.1:8001")?.serve_requests(|req: &mut StreamRequest| {
///     let data = req.recv()?; // what has arrived
///     if data.is_empty() {
///         return Ok(Next::Close);
///     }
///     req.write_all(&data)?;
///     Ok(Next::Continue)
/// })
/// # ; Ok::<(), io::Error>(())
/// ```
pub trait RequestHandler: Send + 'static {
    /// Serves one request (its first byte has arrived, or is buffered) and says whether
    /// to keep the connection.
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next>;

    /// The server is shutting down and this connection is open between requests (parked,
    /// or its thread waiting for the next request): the handler's last word before the
    /// connection closes, such as a "server going away" line, so that the client can tell
    /// the server's end from a network failure. What it writes is sent before the close
    /// (within a second). By default, nothing.
    ///
    /// Not called for a connection the client closed, nor one that ended with an error.
    fn on_shutdown(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        let _ = req;
        Ok(())
    }
}

impl<F> RequestHandler for F
where
    F: FnMut(&mut StreamRequest) -> io::Result<Next> + Send + 'static,
{
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        self(req)
    }
}

/// A request handler run as a connection handler: its requests in a loop on one thread
/// (the flavours other than the pool, and the pool outside Linux).
pub(crate) struct Looping<R>(pub(crate) R);

impl<R: RequestHandler> StreamHandler for Looping<R> {
    fn handle(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        loop {
            let next = self.0.handle_request(req)?;
            // The wait for the next request ended with the server's shutdown, or the
            // server is shutting down with no request waiting: the last word. (A restart's
            // drain is no shutdown for the connection: it is served on.)
            if (next == Next::Close && req.ended_by_shutdown())
                || (next == Next::Continue && req.stop_serving() && req.nothing_buffered())
            {
                return self.0.on_shutdown(req);
            }
            if next == Next::Close {
                return Ok(());
            }
            // Between requests: the next read waits for the client's next request (the
            // idle timeout applies, shutdown ends it), even when this request wrote no
            // reply (its answer went out through pushers, or nowhere).
            req.mark_idle();
        }
    }
}

/// A connection handler run by the engine of request handlers as one request that never
/// parks (`serve` in the pool flavour): its handler is made, set up, run and finished
/// inside that request, so that a panicking factory is reported as a `serve` handler's
/// panic is, and the connection closes after it.
pub(crate) struct Whole<H> {
    pub(crate) make: std::sync::Arc<dyn Fn() -> H + Send + Sync>,
}

impl<H: StreamHandler> RequestHandler for Whole<H> {
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        let mut h = (self.make)();
        h.setup(req)?;
        let handled = h.handle(req);
        let finished = h.finish(req);
        handled.and(finished).map(|()| Next::Close)
    }
}

/// Runs one request of a request handler, catching a panic (see `contained`).
pub(crate) fn run_request<R: RequestHandler>(
    handler: &mut R,
    req: &mut StreamRequest,
) -> Result<Next, HandlerError> {
    match contained(|| handler.handle_request(req)) {
        Ok(Ok(next)) => Ok(next),
        Ok(Err(e)) => Err(HandlerError::Io(e)),
        Err(msg) => Err(HandlerError::Panic(msg)),
    }
}

/// Handles one datagram (UDP or Unix datagram): Python's `DatagramRequestHandler`.
///
/// Same contract as [`StreamHandler`]: `setup`, `handle`, then `finish` even when `handle`
/// failed. Nothing is sent back unless the handler calls
/// [`reply`](DatagramRequest::reply) (Python always sent a datagram, even an empty one).
///
/// ```
/// use socketserver::DatagramRequest;
/// use std::io;
///
/// let upper = |req: &mut DatagramRequest| -> io::Result<()> {
///     let reply = req.packet().to_ascii_uppercase();
///     req.reply(&reply)
/// };
/// # let _ = upper;
/// ```
#[doc(alias = "DatagramRequestHandler")]
pub trait DatagramHandler: Send + 'static {
    /// Runs first. By default, does nothing.
    fn setup(&mut self, req: &mut DatagramRequest) -> io::Result<()> {
        let _ = req;
        Ok(())
    }

    /// Handles the datagram.
    fn handle(&mut self, req: &mut DatagramRequest) -> io::Result<()>;

    /// Runs last, after `handle` whatever it returned. By default, does nothing.
    fn finish(&mut self, req: &mut DatagramRequest) -> io::Result<()> {
        let _ = req;
        Ok(())
    }
}

impl<F> DatagramHandler for F
where
    F: FnMut(&mut DatagramRequest) -> io::Result<()> + Send + 'static,
{
    fn handle(&mut self, req: &mut DatagramRequest) -> io::Result<()> {
        self(req)
    }
}

/// How one request ended; a forked child turns it into its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Panic,
    /// The connection ended at the idle timeout (a normal end).
    IdleTimeout,
    /// A request or deadline timed out.
    RequestTimeout,
    /// The TLS handshake failed: no handler ran.
    TlsFailed,
    /// The client went away (reset, broken pipe, EOF where a request was expected).
    Disconnect,
}

impl Outcome {
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::IdleTimeout => 2,
            Outcome::RequestTimeout => 3,
            Outcome::TlsFailed => 4,
            Outcome::Disconnect => 5,
            Outcome::Panic => 101,
        }
    }

    pub(crate) fn from_exit_code(code: i32) -> Outcome {
        match code {
            0 => Outcome::Ok,
            1 => Outcome::Error,
            2 => Outcome::IdleTimeout,
            3 => Outcome::RequestTimeout,
            4 => Outcome::TlsFailed,
            5 => Outcome::Disconnect,
            _ => Outcome::Panic,
        }
    }
}

/// Runs setup -> handle -> finish with the contract above, catching panics.
pub(crate) fn run_phases<H, R>(
    make: impl FnOnce() -> H,
    req: &mut R,
    setup: fn(&mut H, &mut R) -> io::Result<()>,
    handle: fn(&mut H, &mut R) -> io::Result<()>,
    finish: fn(&mut H, &mut R) -> io::Result<()>,
) -> Result<(), HandlerError> {
    let run = || {
        let mut h = make();
        setup(&mut h, req)?;
        let handled = handle(&mut h, req);
        let finished = finish(&mut h, req);
        handled.and(finished)
    };
    match contained(run) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HandlerError::Io(e)),
        Err(msg) => Err(HandlerError::Panic(msg)),
    }
}

/// The crate's one way to run user code (a handler, its factory, a hook): a panic becomes
/// `Err` with its message, and never unwinds into the server's bookkeeping. A panic payload
/// whose destructor panics too is forgotten rather than dropped: nothing unwinds out of
/// here.
pub(crate) fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = panic_message(&*payload);
        if let Err(again) = catch_unwind(AssertUnwindSafe(|| drop(payload))) {
            std::mem::forget(again);
        }
        msg
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

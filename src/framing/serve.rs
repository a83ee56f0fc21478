//! Frames and messages as requests: the bridge from framing to `serve_requests`.

use std::fmt;
use std::io;
#[cfg(feature = "json")]
use std::marker::PhantomData;

use super::Codec;
use crate::handler::{Next, RequestHandler};
use crate::request::StreamRequest;

/// A [`RequestHandler`] that serves one frame per request: it reads a frame with its
/// [`Codec`] and calls `handle` with it; a clean end of stream between frames closes the
/// connection. Made by [`per_frame`].
///
/// With [`serve_requests`](crate::StreamServer::serve_requests) in the pool flavour, a
/// connection waits for its next frame in the server's event set, holding no thread; a
/// frame that has begun arriving is read whole on a worker, within the server's request
/// timeout. An oversize, negative or cut frame ends the connection with the error (counted,
/// logged at info level: the client's fault).
#[derive(Clone)]
pub struct PerFrame<F> {
    codec: Codec,
    handle: F,
}

impl<F> fmt::Debug for PerFrame<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerFrame")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

/// Serves one frame per request with `handle` (see [`PerFrame`]).
///
/// ```no_run
/// use socketserver::{framing, StreamRequest, TcpServer};
/// use std::io;
///
/// // An echo of u32-prefixed frames; idle clients hold no thread.
/// let codec = framing::Codec::new();
/// TcpServer::bind("127.0.0.1:8007")?.serve_requests(framing::per_frame(
///     codec,
///     move |frame: Vec<u8>, req: &mut StreamRequest| codec.write_frame(req, &frame),
/// ))
/// # ; Ok::<(), io::Error>(())
/// ```
pub fn per_frame<F>(codec: Codec, handle: F) -> PerFrame<F>
where
    F: FnMut(Vec<u8>, &mut StreamRequest) -> io::Result<()> + Send + 'static,
{
    PerFrame { codec, handle }
}

impl<F> RequestHandler for PerFrame<F>
where
    F: FnMut(Vec<u8>, &mut StreamRequest) -> io::Result<()> + Send + 'static,
{
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        match self.codec.read_frame(req)? {
            Some(frame) => {
                (self.handle)(frame, req)?;
                Ok(Next::Continue)
            }
            None => Ok(Next::Close),
        }
    }
}

/// A [`RequestHandler`] that serves one "JSON header + body" message per request: it reads
/// the header with its [`MessageCodec`](super::MessageCodec) and calls `handle` with the
/// header and the [`Body`](super::Body), which the handler reads (or not) and answers
/// through ([`Body::get_mut`](super::Body::get_mut)); whatever it leaves of the body is
/// read and dropped after it returns, so the next message starts where it should. A clean
/// end of stream between messages closes the connection. Made by [`per_message`]. Cargo
/// feature `json`.
///
/// That skip is bounded, since the reply may have begun and with it the request timeout
/// ended: at most 64 KiB left unread are skipped, within 5 s (or the deadline in force,
/// if sooner); a larger rest closes the connection instead of being read (a header may
/// declare a body of 2^64 bytes), and a rest that does not arrive in time ends it with
/// `TimedOut`, counted in `Stats::request_timeouts`.
///
/// As with [`PerFrame`], an idle connection waits for its next message in the event set
/// (pool flavour); a header that has begun arriving is read whole within the request
/// timeout; a malformed or oversize header ends the connection with the error.
#[cfg(feature = "json")]
pub struct PerMessage<T, F> {
    codec: super::MessageCodec,
    handle: F,
    header: PhantomData<fn() -> T>,
}

#[cfg(feature = "json")]
impl<T, F: Clone> Clone for PerMessage<T, F> {
    fn clone(&self) -> Self {
        PerMessage {
            codec: self.codec,
            handle: self.handle.clone(),
            header: PhantomData,
        }
    }
}

#[cfg(feature = "json")]
impl<T, F> fmt::Debug for PerMessage<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerMessage")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

/// Serves one message per request with `handle` (see [`PerMessage`]). Cargo feature
/// `json`.
///
/// ```no_run
/// use serde_json::{json, Value};
/// use socketserver::framing::{self, Body, MessageCodec};
/// use socketserver::{StreamRequest, TcpServer};
/// use std::io;
///
/// // Answers each message with the size of its body; idle clients hold no thread.
/// let codec = MessageCodec::new();
/// TcpServer::bind("127.0.0.1:8013")?.serve_requests(framing::per_message(
///     codec,
///     move |header: Value, body: &mut Body<'_, StreamRequest>| {
///         let size = body.skip()?;
///         let reply = json!({"cmd": header["cmd"], "received": size});
///         codec.write_json_header(body.get_mut(), &reply)
///     },
/// ))
/// # ; Ok::<(), io::Error>(())
/// ```
#[cfg(feature = "json")]
pub fn per_message<T, F>(codec: super::MessageCodec, handle: F) -> PerMessage<T, F>
where
    T: serde::de::DeserializeOwned + 'static,
    F: FnMut(T, &mut super::Body<'_, StreamRequest>) -> io::Result<()> + Send + 'static,
{
    PerMessage {
        codec,
        handle,
        header: PhantomData,
    }
}

#[cfg(feature = "json")]
impl<T, F> RequestHandler for PerMessage<T, F>
where
    T: serde::de::DeserializeOwned + 'static,
    F: FnMut(T, &mut super::Body<'_, StreamRequest>) -> io::Result<()> + Send + 'static,
{
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        match self.codec.read_message::<T, _>(req)? {
            Some((header, mut body)) => {
                (self.handle)(header, &mut body)?;
                skip_rest(&mut body)
            }
            None => Ok(Next::Close),
        }
    }
}

/// The most body bytes a handler may leave unread for [`PerMessage`] to skip.
#[cfg(feature = "json")]
const SKIP_LIMIT: u64 = 64 * 1024;

/// How long [`PerMessage`] waits for the rest of a body it skips, when no deadline is in
/// force.
#[cfg(feature = "json")]
const SKIP_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Skips what the handler left of `body`, bounded in size and time (see [`PerMessage`]).
#[cfg(feature = "json")]
fn skip_rest(body: &mut super::Body<'_, StreamRequest>) -> io::Result<Next> {
    let rest = body.remaining();
    if rest == 0 {
        return Ok(Next::Continue);
    }
    if rest > SKIP_LIMIT {
        log::debug!(
            "{}: {rest} body bytes left unread: closing rather than reading them",
            body.get_mut().peer_addr()
        );
        return Ok(Next::Close);
    }
    let unbounded = body.get_mut().deadline().is_none();
    if unbounded {
        body.get_mut().set_deadline(crate::time::after(SKIP_TIME));
    }
    let skipped = body.skip();
    if unbounded {
        body.get_mut().set_deadline(None);
    }
    skipped.map(|_| Next::Continue)
}

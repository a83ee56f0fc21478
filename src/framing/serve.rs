//! Frames as requests: the bridge from framing to `serve_requests`.

use std::fmt;
use std::io;

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

//! Whole messages over a byte stream: length-prefixed frames, and JSON header + body messages.
//!
//! TCP delivers bytes, not messages: one `send` may arrive in several reads, and several
//! sends in one read ("sticky packets"). This module puts the boundaries back. It works over
//! any [`Read`] / [`Write`] (a [`StreamRequest`](crate::StreamRequest), a `TcpStream`, a
//! `&[u8]` or a `Vec<u8>`) and needs nothing from the servers.
//!
//! * **Frames**: a length prefix, then that many bytes. [`read_frame`] and [`write_frame`]
//!   use the default format (u32 big-endian, Python's `struct.pack('!I', n)`, at most 8 MiB);
//!   a [`Codec`] sets another prefix width, byte order, signedness or limit, and its docs
//!   map Python `struct` formats to codecs. [`FrameReader`] and [`FrameWriter`] keep a
//!   stream and its codec together.
//! * **Frames as requests**: [`per_frame`] turns a frame handler into a
//!   [`RequestHandler`](crate::RequestHandler) for `serve_requests`, so connections wait
//!   for their next frame without holding a thread.
//! * **Lines**: [`read_line`] and [`read_text_line`] read one line with a length limit
//!   (a `read_line` into a `String` grows as long as the client sends).
//! * **JSON values** (feature `json`): [`read_json`] and [`write_json`] put one serde value
//!   in each frame, the most common framed protocol.
//! * **Messages** (feature `json`, on by default): a frame holding a UTF-8 JSON object (the
//!   header), then a raw body the header declares, streamed and never loaded whole:
//!   `read_message`, `write_message`, and the primitives `read_json_header` and
//!   `write_json_header` for protocols that lay out the bytes after the header themselves
//!   (`MessageCodec` for other prefixes, limits and size keys).
//!
//! # What the reader guarantees
//!
//! * The declared length is checked against the limit before anything is allocated or read;
//!   a 4 GiB declaration fails at once with a [`FrameError`] (`is_too_large`), and so does a
//!   negative one from a signed prefix (`is_negative`).
//! * The payload buffer grows as bytes arrive (64 KiB at a time), never to the declared
//!   length up front: idle peers that declared large frames cost little.
//! * An end of stream exactly between frames is a clean end (`Ok(None)`); inside a prefix or
//!   a payload it is an error of kind `UnexpectedEof`. Short reads are continued and
//!   `Interrupted` is retried. A zero-length frame is a valid, empty frame.
//!
//! The writer refuses a payload its prefix cannot represent or that exceeds the limit
//! (nothing is written), and sends prefix and payload together.
//!
//! After an error, [`stream_usable`] says whether the stream can still be read (a whole
//! frame with a payload that does not parse) or must be closed (stopped inside a frame or
//! a line). Each read function says which of its errors are which.
//!
//! A whole frame is bounded in time by the server, not here: a peer sending one byte a
//! minute inside a frame meets the request timeout (`Builder::request_timeout`, or
//! `StreamRequest::set_deadline`), which every read of a `StreamRequest` obeys; the read
//! then fails with `TimedOut`.
//!
//! # Examples
//!
//! An echo handler for a Python client doing `sock.sendall(struct.pack('!I', len(b)) + b)`:
//!
//! ```no_run
//! use socketserver::{framing, StreamRequest, TcpServer};
//!
//! TcpServer::bind("127.0.0.1:8003")?.serve(|req: &mut StreamRequest| {
//!     while let Some(frame) = framing::read_frame(req)? {
//!         framing::write_frame(req, &frame)?;
//!     }
//!     Ok(())
//! })
//! # ; Ok::<(), std::io::Error>(())
//! ```
//!
//! The same over a buffer:
//!
//! ```
//! use socketserver::framing;
//!
//! let mut wire = Vec::new();
//! framing::write_frame(&mut wire, b"hello")?;
//! framing::write_frame(&mut wire, b"world")?;
//! assert_eq!(wire, b"\0\0\0\x05hello\0\0\0\x05world");
//!
//! let mut reader = &wire[..];
//! assert_eq!(framing::read_frame(&mut reader)?.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(framing::read_frame(&mut reader)?.as_deref(), Some(&b"world"[..]));
//! assert_eq!(framing::read_frame(&mut reader)?, None);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};

mod error;
mod frame;
#[cfg(feature = "json")]
mod json;
mod line;
#[cfg(feature = "json")]
mod message;
mod serve;
mod wrappers;

pub use self::error::{stream_usable, FrameError};
pub use self::frame::{Codec, DEFAULT_MAX_FRAME_LEN};
#[cfg(feature = "json")]
pub use self::json::{read_json, write_json};
pub use self::line::{read_line, read_text_line};
#[cfg(feature = "json")]
pub use self::message::{
    read_json_header, read_message, write_json_header, write_message, Body, MessageCodec,
    DEFAULT_BODY_SIZE_KEY, DEFAULT_MAX_HEADER_LEN,
};
pub use self::serve::{per_frame, PerFrame};
#[cfg(feature = "json")]
pub use self::serve::{per_message, PerMessage};
pub use self::wrappers::{FrameReader, FrameWriter};

/// Reads one frame with the default [`Codec`] (u32 big-endian prefix, at most 8 MiB):
/// `Ok(None)` at a clean end of stream.
///
/// See [`Codec::read_frame`] for the details and the errors.
///
/// # Examples
///
/// ```
/// use socketserver::framing;
///
/// let mut wire: &[u8] = b"\0\0\0\x03abc\0\0\0\0";
/// assert_eq!(framing::read_frame(&mut wire)?, Some(b"abc".to_vec()));
/// assert_eq!(framing::read_frame(&mut wire)?, Some(vec![]));
/// assert_eq!(framing::read_frame(&mut wire)?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    Codec::new().read_frame(r)
}

/// Writes one frame with the default [`Codec`] (u32 big-endian prefix, at most 8 MiB).
///
/// See [`Codec::write_frame`] for the details and the errors.
///
/// # Examples
///
/// ```
/// use socketserver::framing;
///
/// let mut wire = Vec::new();
/// framing::write_frame(&mut wire, b"abc")?;
/// assert_eq!(wire, b"\0\0\0\x03abc");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    Codec::new().write_frame(w, payload)
}

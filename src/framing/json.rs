//! One JSON value per frame.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Codec, FrameError};

impl Codec {
    /// Reads one frame and parses its payload as JSON of type `T`; `Ok(None)` at a clean
    /// end of stream.
    ///
    /// Errors, and whether the stream is still usable after them (see
    /// [`stream_usable`](super::stream_usable)):
    /// * a payload that is not valid JSON for `T`: kind `InvalidData` with a
    ///   [`FrameError`] (`is_bad_payload`); the frame was read whole, so the stream is
    ///   usable: answer the error and read on;
    /// * a length over the limit or negative: `InvalidData` with a `FrameError`; not
    ///   usable, close;
    /// * an end of stream inside the frame (`UnexpectedEof`), a timeout or an I/O error:
    ///   not usable, close.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use socketserver::framing::Codec;
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Call { method: String, a: i64, b: i64 }
    ///
    /// let codec = Codec::new().signed_i32_le(); // Python struct.pack('i', n) peers
    /// let mut wire = Vec::new();
    /// codec.write_json(&mut wire, &Call { method: "add".into(), a: 2, b: 3 })?;
    /// let call: Call = codec.read_json(&mut &wire[..])?.unwrap();
    /// assert_eq!(call.a + call.b, 5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_json<T, R>(&self, r: &mut R) -> io::Result<Option<T>>
    where
        T: DeserializeOwned,
        R: Read + ?Sized,
    {
        let Some(payload) = self.read_frame(r)? else {
            return Ok(None);
        };
        serde_json::from_slice(&payload)
            .map(Some)
            .map_err(|e| FrameError::bad_payload(format!("not the JSON expected: {e}")).into())
    }

    /// Writes `value` as JSON in one frame, in one write. Nothing is written if it does not
    /// serialize or is over the limit (kind `InvalidInput`).
    pub fn write_json<T, W>(&self, w: &mut W, value: &T) -> io::Result<()>
    where
        T: Serialize + ?Sized,
        W: Write + ?Sized,
    {
        let json = serde_json::to_vec(value)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.write_frame(w, &json)
    }
}

/// Reads one frame of JSON with the default [`Codec`] (u32 big-endian prefix, at most
/// 8 MiB): see [`Codec::read_json`] for the errors and which leave the stream usable.
///
/// # Examples
///
/// A JSON-RPC-like handler that answers a bad request and reads on:
///
/// ```no_run
/// use serde_json::{json, Value};
/// use socketserver::{framing, StreamRequest, TcpServer};
///
/// TcpServer::bind("127.0.0.1:0")?.serve(|req: &mut StreamRequest| loop {
///     match framing::read_json::<Value, _>(req) {
///         Ok(Some(call)) => framing::write_json(req, &json!({ "echo": call }))?,
///         Ok(None) => return Ok(()),
///         Err(e) if framing::stream_usable(&e) => {
///             framing::write_json(req, &json!({ "error": e.to_string() }))?
///         }
///         Err(e) => return Err(e),
///     }
/// })
/// # ; Ok::<(), std::io::Error>(())
/// ```
pub fn read_json<T, R>(r: &mut R) -> io::Result<Option<T>>
where
    T: DeserializeOwned,
    R: Read + ?Sized,
{
    Codec::new().read_json(r)
}

/// Writes `value` as one frame of JSON with the default [`Codec`]: see
/// [`Codec::write_json`].
///
/// # Examples
///
/// ```
/// use socketserver::framing;
///
/// let mut wire = Vec::new();
/// framing::write_json(&mut wire, &[1, 2, 3])?;
/// assert_eq!(wire, b"\0\0\0\x07[1,2,3]");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_json<T, W>(w: &mut W, value: &T) -> io::Result<()>
where
    T: Serialize + ?Sized,
    W: Write + ?Sized,
{
    Codec::new().write_json(w, value)
}

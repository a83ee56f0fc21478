//! JSON header + body messages: `MessageCodec`, `Body`.

use std::cmp;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::frame::{read_full, write_all_vectored};
use super::Codec;

/// The default [`MessageCodec::max_header_len`]: 64 KiB.
pub const DEFAULT_MAX_HEADER_LEN: usize = 64 * 1024;

/// The default [`MessageCodec::body_size_key`]: `"body_size"`.
pub const DEFAULT_BODY_SIZE_KEY: &str = "body_size";

/// The size of the buffer that copies bodies.
const COPY_CHUNK: usize = 64 * 1024;

/// Reads and writes messages: a frame holding a JSON object (the *header*), then a raw
/// *body* of the size the header declares.
///
/// ```text
/// [prefix: header length] [header: UTF-8 JSON object, e.g. {"body_size":5,"name":"a.txt"}] [body: 5 bytes]
/// ```
///
/// | Setting                                          | Default                                  |
/// |--------------------------------------------------|------------------------------------------|
/// | [`prefix`](MessageCodec::prefix) of the header frame | u32 big-endian (`Codec::new()`, Python `'!I'`) |
/// | [`max_header_len`](MessageCodec::max_header_len) | 64 KiB ([`DEFAULT_MAX_HEADER_LEN`])      |
/// | [`body_size_key`](MessageCodec::body_size_key)   | `"body_size"` ([`DEFAULT_BODY_SIZE_KEY`]) |
///
/// **The body size convention**: [`write_message`](MessageCodec::write_message) takes the
/// body length as an argument and stores it in the header under the body size key (a
/// non-negative integer); [`read_message`](MessageCodec::read_message) takes it from there,
/// and a header without the key has an empty body. The key stays in the header, so a typed
/// header may have a field of that name or ignore it. Use
/// [`body_size_key`](MessageCodec::body_size_key) to match a peer: the Python tutorials'
/// file transfer uses `"filesize"`.
///
/// The body is never loaded whole: reading yields a [`Body`], a reader of exactly the
/// declared size, so a 10 GiB upload passes through a 64 KiB buffer. There is no limit on the
/// declared body size: check [`Body::len`] against your own before accepting a body.
///
/// Headers are anything serde handles: a `serde_json::Value`, a `HashMap`, or your own
/// `#[derive(Serialize, Deserialize)]` struct. Reading refuses, with an error of kind
/// [`InvalidData`](ErrorKind::InvalidData): an empty header, a header over the limit (holding
/// a [`FrameError`](super::FrameError)), one that is not UTF-8, not JSON, not a JSON object,
/// or that does not match the requested type.
///
/// For protocols that lay out the bytes after the header themselves, use the primitives
/// [`read_json_header`](MessageCodec::read_json_header) and
/// [`write_json_header`](MessageCodec::write_json_header).
///
/// # Examples
///
/// A Python tutorial peer that sends `struct.pack('i', len(head))`, the JSON head, then the
/// file:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use socketserver::framing::{Codec, MessageCodec};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Upload {
///     cmd: String,
///     filename: String,
/// }
///
/// const TUTORIAL: MessageCodec = MessageCodec::new()
///     .prefix(Codec::new().signed_i32_le())
///     .body_size_key("filesize");
///
/// let upload = Upload { cmd: "put".into(), filename: "a.txt".into() };
/// let mut wire = Vec::new();
/// TUTORIAL.write_message(&mut wire, &upload, 5, &mut &b"hello"[..])?;
///
/// let mut reader = &wire[..];
/// let (header, mut body) = TUTORIAL.read_message::<Upload, _>(&mut reader)?.unwrap();
/// assert_eq!(header, upload);
/// assert_eq!(body.len(), 5);
/// let mut file = Vec::new();
/// body.copy_to(&mut file)?;
/// assert_eq!(file, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCodec {
    prefix: Codec,
    max_header_len: usize,
    body_size_key: &'static str,
}

impl Default for MessageCodec {
    /// Same as [`MessageCodec::new`].
    fn default() -> MessageCodec {
        MessageCodec::new()
    }
}

impl MessageCodec {
    /// A message codec with a u32 big-endian header prefix, headers of at most 64 KiB and the
    /// body size under `"body_size"`.
    pub const fn new() -> MessageCodec {
        MessageCodec {
            prefix: Codec::new(),
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            body_size_key: DEFAULT_BODY_SIZE_KEY,
        }
    }

    /// Sets the header frame's prefix: its width, byte order and signedness are taken from
    /// `codec` (see the [`Codec`] table of Python formats). `codec`'s `max_frame_len` is not
    /// used: headers are limited by [`max_header_len`](MessageCodec::max_header_len).
    ///
    /// By default, `Codec::new()`: u32 big-endian, Python's `'!I'`.
    pub const fn prefix(mut self, codec: Codec) -> MessageCodec {
        self.prefix = codec;
        self
    }

    /// Sets the largest header, in bytes of JSON. A longer declared header is refused before
    /// it is read.
    ///
    /// By default, 64 KiB ([`DEFAULT_MAX_HEADER_LEN`]).
    pub const fn max_header_len(mut self, n: usize) -> MessageCodec {
        self.max_header_len = n;
        self
    }

    /// Sets the header field that carries the body size.
    ///
    /// By default, `"body_size"` ([`DEFAULT_BODY_SIZE_KEY`]).
    pub const fn body_size_key(mut self, key: &'static str) -> MessageCodec {
        self.body_size_key = key;
        self
    }

    /// The codec of header frames.
    fn header_codec(&self) -> Codec {
        self.prefix.max_frame_len(self.max_header_len)
    }

    /// Reads one header frame and parses it as `T`: `Ok(None)` if the stream ended cleanly
    /// before it.
    ///
    /// Nothing after the header is read: what follows is up to the protocol.
    ///
    /// # Examples
    ///
    /// A remote command's result: a header, then exactly `stdout_size` bytes of stdout and
    /// `stderr_size` bytes of stderr.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use socketserver::framing::{Body, MessageCodec};
    /// use std::io::{Read, Write};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Output {
    ///     exit_code: i32,
    ///     stdout_size: u64,
    ///     stderr_size: u64,
    /// }
    ///
    /// let codec = MessageCodec::new();
    /// let (stdout, stderr) = (b"out\n", b"oops\n");
    /// let mut wire = Vec::new();
    /// let head = Output { exit_code: 1, stdout_size: 4, stderr_size: 5 };
    /// codec.write_json_header(&mut wire, &head)?;
    /// wire.write_all(stdout)?;
    /// wire.write_all(stderr)?;
    ///
    /// let mut reader = &wire[..];
    /// let head: Output = codec.read_json_header(&mut reader)?.unwrap();
    /// let mut out = Vec::new();
    /// Body::new(&mut reader, head.stdout_size).read_to_end(&mut out)?;
    /// let mut err = Vec::new();
    /// Body::new(&mut reader, head.stderr_size).read_to_end(&mut err)?;
    /// assert_eq!((head.exit_code, &out[..], &err[..]), (1, &stdout[..], &stderr[..]));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_json_header<T, R>(&self, r: &mut R) -> io::Result<Option<T>>
    where
        T: DeserializeOwned,
        R: Read + ?Sized,
    {
        match self.read_header_object(r)? {
            Some(object) => parse_header(object).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `header`, which must serialize to a JSON object, as one frame.
    ///
    /// Nothing is written if the header is not an object or is over the limit (errors of kind
    /// [`InvalidInput`](ErrorKind::InvalidInput)). The header goes out in one write; bytes
    /// written after it are separate writes: over a client socket with Nagle's algorithm on,
    /// wrap the writer in a `BufWriter` and flush at the end, or use
    /// [`write_message`](MessageCodec::write_message).
    ///
    /// See [`read_json_header`](MessageCodec::read_json_header) for an example.
    pub fn write_json_header<T, W>(&self, w: &mut W, header: &T) -> io::Result<()>
    where
        T: Serialize + ?Sized,
        W: Write + ?Sized,
    {
        let json = serde_json::to_vec(header).map_err(|e| input_error(e.to_string()))?;
        if json.first() != Some(&b'{') {
            return Err(input_error("message header must be a JSON object".into()));
        }
        self.header_codec().write_frame(w, &json)
    }

    /// Reads one message: its header, parsed as `T`, and its body, a reader of exactly the
    /// size the header declares under the [body size key](MessageCodec::body_size_key) (0 if
    /// absent). `Ok(None)` if the stream ended cleanly before the header.
    ///
    /// Read the body to its end (or [`skip`](Body::skip) it) before reading the next
    /// message: dropping it early leaves the rest of the body in the stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use socketserver::framing;
    ///
    /// let mut wire = Vec::new();
    /// framing::write_message(&mut wire, &json!({"name": "a.txt"}), 3, &mut &b"abc"[..])?;
    /// framing::write_message(&mut wire, &json!({"name": "empty"}), 0, &mut std::io::empty())?;
    ///
    /// let mut reader = &wire[..];
    /// let mut files = Vec::new();
    /// while let Some((header, mut body)) = framing::read_message::<Value, _>(&mut reader)? {
    ///     let mut data = Vec::new();
    ///     body.copy_to(&mut data)?;
    ///     files.push((header["name"].as_str().unwrap().to_owned(), data));
    /// }
    /// assert_eq!(files, [("a.txt".to_owned(), b"abc".to_vec()), ("empty".to_owned(), vec![])]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_message<'a, T, R>(&self, r: &'a mut R) -> io::Result<Option<(T, Body<'a, R>)>>
    where
        T: DeserializeOwned,
        R: Read + ?Sized,
    {
        let Some(object) = self.read_header_object(r)? else {
            return Ok(None);
        };
        let body_len = match object.get(self.body_size_key) {
            None => 0,
            Some(size) => size.as_u64().ok_or_else(|| {
                data_error(format!(
                    "message header field {:?} is not a byte count: {size}",
                    self.body_size_key
                ))
            })?,
        };
        let header = parse_header(object)?;
        Ok(Some((header, Body::new(r, body_len))))
    }

    /// Writes one message: `header` (which must serialize to a JSON object) with `body_len`
    /// stored under the [body size key](MessageCodec::body_size_key), then exactly `body_len`
    /// bytes read from `body`.
    ///
    /// The header frame and the first 64 KiB of the body go out in one write; the rest is
    /// copied 64 KiB at a time. Errors:
    ///
    /// * kind [`InvalidInput`](ErrorKind::InvalidInput), nothing written: the header is not an
    ///   object, is over the limit, or already has the body size key with another value;
    /// * kind [`UnexpectedEof`](ErrorKind::UnexpectedEof): `body` ended before `body_len`
    ///   bytes. If that happens after the first 64 KiB, part of the message is sent: close
    ///   the connection. Bytes of `body` after `body_len` are left unread.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde_json::json;
    /// use socketserver::framing;
    /// use std::io;
    ///
    /// let mut wire = Vec::new();
    /// framing::write_message(&mut wire, &json!({"cmd": "put"}), 2, &mut &b"hi"[..])?;
    /// assert_eq!(wire, b"\0\0\0\x1b{\"body_size\":2,\"cmd\":\"put\"}hi");
    ///
    /// // The body reader must provide what was promised.
    /// let err = framing::write_message(&mut Vec::new(), &json!({}), 5, &mut &b"hi"[..]);
    /// assert_eq!(err.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn write_message<T, W, B>(
        &self,
        w: &mut W,
        header: &T,
        body_len: u64,
        body: &mut B,
    ) -> io::Result<()>
    where
        T: Serialize + ?Sized,
        W: Write + ?Sized,
        B: Read + ?Sized,
    {
        let json = self.header_with_size(header, body_len)?;
        let (prefix, width) = self
            .header_codec()
            .encode_len(json.len())
            .map_err(super::FrameError::into_input_error)?;
        let mut chunk =
            vec![0; usize::try_from(body_len).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK))];
        let first = read_full(body, &mut chunk)?;
        if first < chunk.len() {
            return Err(short_body(first as u64, body_len));
        }
        write_all_vectored(w, &mut [&prefix[..width], &json, &chunk])?;
        let mut done = first as u64;
        while done < body_len {
            let want = cmp::min(body_len - done, chunk.len() as u64) as usize;
            let n = read_full(body, &mut chunk[..want])?;
            w.write_all(&chunk[..n])?;
            done += n as u64;
            if n < want {
                return Err(short_body(done, body_len));
            }
        }
        Ok(())
    }

    /// `header` as JSON, with the body size stored under the key.
    fn header_with_size<T: Serialize + ?Sized>(
        &self,
        header: &T,
        body_len: u64,
    ) -> io::Result<Vec<u8>> {
        let mut object = match serde_json::to_value(header) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(input_error("message header must be a JSON object".into())),
            Err(e) => return Err(input_error(e.to_string())),
        };
        let key = self.body_size_key;
        match object.get(key) {
            Some(size) if size.as_u64() != Some(body_len) => {
                return Err(input_error(format!(
                    "message header field {key:?} is {size} but the body is {body_len} bytes"
                )));
            }
            Some(_) => {}
            None => {
                object.insert(key.to_owned(), body_len.into());
            }
        }
        serde_json::to_vec(&object).map_err(|e| input_error(e.to_string()))
    }

    /// Reads a header frame and checks it is a JSON object.
    fn read_header_object<R: Read + ?Sized>(
        &self,
        r: &mut R,
    ) -> io::Result<Option<Map<String, Value>>> {
        let mut json = Vec::new();
        if !self.header_codec().read_frame_into(r, &mut json)? {
            return Ok(None);
        }
        if json.is_empty() {
            return Err(data_error("empty message header".into()));
        }
        let text = std::str::from_utf8(&json)
            .map_err(|e| data_error(format!("message header is not UTF-8: {e}")))?;
        match serde_json::from_str(text) {
            Ok(Value::Object(object)) => Ok(Some(object)),
            Ok(other) => Err(data_error(format!(
                "message header is a JSON {}, not an object",
                json_type(&other)
            ))),
            Err(e) => Err(data_error(format!("message header is not valid JSON: {e}"))),
        }
    }
}

/// The header object as the caller's type.
fn parse_header<T: DeserializeOwned>(object: Map<String, Value>) -> io::Result<T> {
    serde_json::from_value(Value::Object(object)).map_err(|e| {
        data_error(format!(
            "message header does not fit the expected type: {e}"
        ))
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn data_error(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

fn input_error(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg)
}

fn short_body(got: u64, len: u64) -> io::Error {
    io::Error::new(
        ErrorKind::UnexpectedEof,
        format!("body reader ended after {got} of {len} bytes"),
    )
}

/// Reads a header frame with the default [`MessageCodec`] (u32 big-endian prefix, at most
/// 64 KiB): see [`MessageCodec::read_json_header`].
///
/// # Examples
///
/// ```
/// use serde_json::{json, Value};
/// use socketserver::framing;
///
/// let mut wire: &[u8] = b"\0\0\0\x0c{\"cmd\":\"ls\"}";
/// let header: Value = framing::read_json_header(&mut wire)?.unwrap();
/// assert_eq!(header, json!({"cmd": "ls"}));
/// assert!(framing::read_json_header::<Value, _>(&mut wire)?.is_none());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_json_header<T, R>(r: &mut R) -> io::Result<Option<T>>
where
    T: DeserializeOwned,
    R: Read + ?Sized,
{
    MessageCodec::new().read_json_header(r)
}

/// Writes a header frame with the default [`MessageCodec`] (u32 big-endian prefix, at most
/// 64 KiB): see [`MessageCodec::write_json_header`].
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use socketserver::framing;
///
/// let mut wire = Vec::new();
/// framing::write_json_header(&mut wire, &json!({"cmd": "ls"}))?;
/// assert_eq!(wire, b"\0\0\0\x0c{\"cmd\":\"ls\"}");
/// assert!(framing::write_json_header(&mut wire, &[1, 2]).is_err()); // not an object
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_json_header<T, W>(w: &mut W, header: &T) -> io::Result<()>
where
    T: Serialize + ?Sized,
    W: Write + ?Sized,
{
    MessageCodec::new().write_json_header(w, header)
}

/// Reads a message with the default [`MessageCodec`] (u32 big-endian prefix, headers of at
/// most 64 KiB, body size under `"body_size"`): see [`MessageCodec::read_message`].
///
/// # Examples
///
/// ```
/// use serde_json::Value;
/// use socketserver::framing;
/// use std::io::Read;
///
/// let mut wire: &[u8] = b"\0\0\0\x0f{\"body_size\":2}hi";
/// let (header, mut body) = framing::read_message::<Value, _>(&mut wire)?.unwrap();
/// assert_eq!(header["body_size"], 2);
/// let mut text = String::new();
/// body.read_to_string(&mut text)?;
/// assert_eq!(text, "hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_message<T, R>(r: &mut R) -> io::Result<Option<(T, Body<'_, R>)>>
where
    T: DeserializeOwned,
    R: Read + ?Sized,
{
    MessageCodec::new().read_message(r)
}

/// Writes a message with the default [`MessageCodec`] (u32 big-endian prefix, headers of at
/// most 64 KiB, body size under `"body_size"`): see [`MessageCodec::write_message`].
///
/// # Examples
///
/// ```
/// use serde::Serialize;
/// use socketserver::framing;
///
/// #[derive(Serialize)]
/// struct Put<'a> {
///     name: &'a str,
/// }
///
/// let data = b"file contents";
/// let mut wire = Vec::new();
/// framing::write_message(&mut wire, &Put { name: "a.txt" }, data.len() as u64, &mut &data[..])?;
/// assert!(wire.ends_with(b"{\"body_size\":13,\"name\":\"a.txt\"}file contents"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_message<T, W, B>(w: &mut W, header: &T, body_len: u64, body: &mut B) -> io::Result<()>
where
    T: Serialize + ?Sized,
    W: Write + ?Sized,
    B: Read + ?Sized,
{
    MessageCodec::new().write_message(w, header, body_len, body)
}

/// A message body: reads exactly the declared number of bytes from the stream, and no more.
///
/// Reading past the end is impossible (reads return 0); a stream that ends before it is an
/// error of kind [`UnexpectedEof`](ErrorKind::UnexpectedEof). Made by
/// [`read_message`](MessageCodec::read_message), or by [`Body::new`] to read a known number of
/// raw bytes after a header yourself.
///
/// # Examples
///
/// ```
/// use socketserver::framing::Body;
/// use std::io::{self, Read};
///
/// let mut stream: &[u8] = b"abcdef";
/// let mut body = Body::new(&mut stream, 4);
/// let mut buf = Vec::new();
/// body.read_to_end(&mut buf)?;
/// assert_eq!(buf, b"abcd");
/// assert_eq!(stream, b"ef"); // the rest is left in the stream
///
/// let mut short: &[u8] = b"ab";
/// let err = Body::new(&mut short, 4).read_to_end(&mut Vec::new()).unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
/// # Ok::<(), io::Error>(())
/// ```
pub struct Body<'a, R: ?Sized> {
    inner: &'a mut R,
    len: u64,
    remaining: u64,
}

impl<R: ?Sized> fmt::Debug for Body<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("len", &self.len)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<'a, R: Read + ?Sized> Body<'a, R> {
    /// A body of `len` bytes, read from `inner`.
    pub fn new(inner: &'a mut R, len: u64) -> Body<'a, R> {
        Body {
            inner,
            len,
            remaining: len,
        }
    }

    /// The declared size, in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the declared size is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Copies the rest of the body to `w`, 64 KiB at a time; returns how many bytes were
    /// copied.
    pub fn copy_to<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<u64> {
        self.copy_to_with_progress(w, |_, _| {})
    }

    /// Copies the rest of the body to `w`, 64 KiB at a time, calling
    /// `progress(bytes_done, total)` after each piece; returns how many bytes were copied.
    /// `bytes_done` counts from the start of the body, `total` is [`len`](Body::len).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Body;
    ///
    /// let data = vec![7; 100_000];
    /// let mut stream = &data[..];
    /// let mut body = Body::new(&mut stream, 100_000);
    /// let mut seen = Vec::new();
    /// let mut file = Vec::new();
    /// body.copy_to_with_progress(&mut file, |done, total| seen.push(done * 100 / total))?;
    /// assert_eq!(file, data);
    /// assert_eq!(seen.last(), Some(&100));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn copy_to_with_progress<W, F>(&mut self, w: &mut W, mut progress: F) -> io::Result<u64>
    where
        W: Write + ?Sized,
        F: FnMut(u64, u64),
    {
        let start = self.remaining;
        let mut buf = vec![0; usize::try_from(start).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK))];
        while self.remaining > 0 {
            let n = match self.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            w.write_all(&buf[..n])?;
            progress(self.len - self.remaining, self.len);
        }
        Ok(start)
    }

    /// Reads and discards the rest of the body, so that the stream is at the next message;
    /// returns how many bytes were skipped.
    pub fn skip(&mut self) -> io::Result<u64> {
        self.copy_to(&mut io::sink())
    }

    /// The stream the body is read from, to answer through it while the body is read
    /// (a handler of [`per_message`](super::per_message) replies this way). Reading from it
    /// directly would take the body's bytes without counting them: read the body through
    /// `self`.
    pub fn get_mut(&mut self) -> &mut R {
        self.inner
    }
}

impl<R: Read + ?Sized> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = cmp::min(buf.len() as u64, self.remaining) as usize;
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "stream ended after {} of {} body bytes",
                    self.len - self.remaining,
                    self.len
                ),
            ));
        }
        let n = cmp::min(n, max);
        self.remaining -= n as u64;
        Ok(n)
    }
}

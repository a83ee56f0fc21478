//! `Codec`: length-prefixed frames over any `Read` / `Write`.

use std::cmp;
use std::io::{self, ErrorKind, IoSlice, Read, Write};

use super::FrameError;

/// The default [`Codec::max_frame_len`]: 8 MiB, as tokio's `LengthDelimitedCodec`.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// How many payload bytes a read asks for at most, and so how far the buffer grows ahead of
/// the bytes that actually arrived.
const READ_CHUNK: usize = 64 * 1024;

/// Frames up to this size (prefix included) are copied into one stack buffer and written
/// with one `write_all`, so even a writer without `write_vectored` sends them in one piece.
const SMALL_FRAME: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Big,
    Little,
}

/// The shape of a length prefix and the largest frame accepted: reads and writes frames.
///
/// A frame is a length prefix followed by that many payload bytes. The prefix counts the
/// payload only (not itself). `Codec` is a small `Copy` value; build it once, in a `const`
/// if you like, and use it for both directions.
///
/// | Setting                          | Default                 |
/// |----------------------------------|-------------------------|
/// | [`prefix_len`](Codec::prefix_len) | 4 bytes                |
/// | byte order                       | big-endian (network order) |
/// | [`signed`](Codec::signed)        | no: unsigned            |
/// | [`max_frame_len`](Codec::max_frame_len) | 8 MiB ([`DEFAULT_MAX_FRAME_LEN`]) |
///
/// # Python `struct` formats
///
/// The peer's `struct.pack(FORMAT, len(payload))` and the `Codec` that reads it:
///
/// | Python format        | Prefix                      | `Codec`                                      |
/// |----------------------|-----------------------------|----------------------------------------------|
/// | `'!B'`, `'>B'`, `'B'`| u8                          | `Codec::new().prefix_len(1)`                 |
/// | `'!H'`, `'>H'`       | u16 big-endian              | `Codec::new().prefix_len(2)`                 |
/// | `'!I'`, `'>I'`       | u32 big-endian              | `Codec::new()` (the default)                 |
/// | `'!Q'`, `'>Q'`       | u64 big-endian              | `Codec::new().prefix_len(8)`                 |
/// | `'<H'`, `'H'` on x86 | u16 little-endian           | `Codec::new().prefix_len(2).little_endian()` |
/// | `'<I'`, `'I'` on x86 | u32 little-endian           | `Codec::new().little_endian()`               |
/// | `'<Q'`, `'Q'` on x86 | u64 little-endian           | `Codec::new().prefix_len(8).little_endian()` |
/// | `'!i'`, `'>i'`       | i32 big-endian (Java's `DataOutputStream.writeInt`) | `Codec::new().signed()` |
/// | `'<i'`, `'i'` on x86 | i32 little-endian           | `Codec::new().signed_i32_le()`               |
/// | `'!q'`, `'>q'`       | i64 big-endian              | `Codec::new().prefix_len(8).signed()`        |
///
/// "On x86" means native order on a little-endian machine (x86, x86-64, and ARM as usually
/// run): a format with no `!`, `<`, `>` or `=` uses the byte order *and the size* of the
/// machine running Python. The tutorials' `struct.pack('i', n)` is therefore a signed
/// little-endian i32 in practice; prefer `'!I'` for new protocols. Avoid `'l'` and `'L'`
/// without a prefix character: they are 8 bytes on 64-bit Linux and macOS, 4 on Windows.
///
/// # Limits
///
/// The declared length is checked against [`max_frame_len`](Codec::max_frame_len) as soon as
/// the prefix is read, before any allocation and before any payload byte is read. Within
/// the limit, the buffer still grows only as payload bytes arrive (64 KiB at a time), so a
/// peer that declares 8 MiB and sends nothing costs nothing. A signed prefix holding a
/// negative length is an error. Both are [`FrameError`]s.
///
/// A frame of length 0 is a valid, empty frame (handy as a heartbeat).
///
/// # Examples
///
/// A Python peer doing `sock.sendall(struct.pack('i', len(data)) + data)`:
///
/// ```
/// use socketserver::framing::Codec;
///
/// const PY_TUTORIAL: Codec = Codec::new().signed_i32_le().max_frame_len(1024 * 1024);
///
/// let mut wire = Vec::new();
/// PY_TUTORIAL.write_frame(&mut wire, b"hello")?;
/// assert_eq!(wire, b"\x05\x00\x00\x00hello");
///
/// let mut reader = &wire[..];
/// assert_eq!(PY_TUTORIAL.read_frame(&mut reader)?, Some(b"hello".to_vec()));
/// assert_eq!(PY_TUTORIAL.read_frame(&mut reader)?, None); // clean end
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    prefix_len: u8,
    order: Order,
    signed: bool,
    max_frame_len: usize,
}

impl Default for Codec {
    /// Same as [`Codec::new`].
    fn default() -> Codec {
        Codec::new()
    }
}

impl Codec {
    /// A codec with a 4-byte unsigned big-endian prefix (Python's `'!I'`) and a limit of
    /// 8 MiB ([`DEFAULT_MAX_FRAME_LEN`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// assert_eq!(Codec::new().encode(b"hi")?, b"\0\0\0\x02hi");
    /// assert_eq!(Codec::new().get_max_frame_len(), 8 * 1024 * 1024);
    /// # Ok::<(), socketserver::framing::FrameError>(())
    /// ```
    pub const fn new() -> Codec {
        Codec {
            prefix_len: 4,
            order: Order::Big,
            signed: false,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Sets the width of the length prefix in bytes: 1, 2, 4 or 8.
    ///
    /// By default, 4.
    ///
    /// # Panics
    ///
    /// If `n` is not 1, 2, 4 or 8 (at compile time in a `const`).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// let codec = Codec::new().prefix_len(2);
    /// assert_eq!(codec.encode(b"abc")?, b"\x00\x03abc");
    /// # Ok::<(), socketserver::framing::FrameError>(())
    /// ```
    pub const fn prefix_len(mut self, n: usize) -> Codec {
        assert!(
            matches!(n, 1 | 2 | 4 | 8),
            "prefix length must be 1, 2, 4 or 8 bytes"
        );
        self.prefix_len = n as u8;
        self
    }

    /// Sends the most significant byte of the prefix first: network order, Python's `'!'`.
    ///
    /// This is the default.
    pub const fn big_endian(mut self) -> Codec {
        self.order = Order::Big;
        self
    }

    /// Sends the least significant byte of the prefix first: Python's `'<'`, and native
    /// order on x86 and ARM.
    ///
    /// By default the prefix is big-endian.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// let codec = Codec::new().little_endian(); // Python '<I'
    /// assert_eq!(codec.encode(b"abc")?, b"\x03\x00\x00\x00abc");
    /// # Ok::<(), socketserver::framing::FrameError>(())
    /// ```
    pub const fn little_endian(mut self) -> Codec {
        self.order = Order::Little;
        self
    }

    /// Reads the prefix as a two's-complement signed integer of its width (Python `'i'`,
    /// `'q'`, Java's `writeInt`). A negative length is an error
    /// ([`FrameError::is_negative`]) and the writer's limit becomes the signed maximum
    /// (2147483647 for 4 bytes).
    ///
    /// By default the prefix is unsigned.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Codec, FrameError};
    ///
    /// let codec = Codec::new().signed(); // Python '!i'
    /// let mut wire: &[u8] = b"\xff\xff\xff\xfe";
    /// let err = codec.read_frame(&mut wire).unwrap_err();
    /// assert!(FrameError::from_io(&err).unwrap().is_negative());
    /// assert_eq!(err.to_string(), "negative frame length -2");
    /// ```
    pub const fn signed(mut self) -> Codec {
        self.signed = true;
        self
    }

    /// A signed 4-byte little-endian prefix: what the tutorials' `struct.pack('i', n)` sends
    /// from an x86 or ARM machine. Short for `.prefix_len(4).little_endian().signed()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// let codec = Codec::new().signed_i32_le();
    /// assert_eq!(codec, Codec::new().prefix_len(4).little_endian().signed());
    /// assert_eq!(codec.encode(b"abc")?, b"\x03\x00\x00\x00abc");
    /// # Ok::<(), socketserver::framing::FrameError>(())
    /// ```
    pub const fn signed_i32_le(self) -> Codec {
        self.prefix_len(4).little_endian().signed()
    }

    /// Sets the largest payload, in bytes, that is read or written. A longer declared length
    /// is refused as soon as its prefix is read, before anything is allocated.
    ///
    /// By default, 8 MiB ([`DEFAULT_MAX_FRAME_LEN`]). The limit counts the payload, not the
    /// prefix. Whatever the setting, no frame is longer than the prefix can represent
    /// (see [`limit`](Codec::limit)).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Codec, FrameError};
    ///
    /// let codec = Codec::new().max_frame_len(4);
    /// assert!(codec.encode(b"1234").is_ok());
    /// let err = codec.encode(b"12345").unwrap_err();
    /// assert!(err.is_too_large());
    /// assert_eq!(err.to_string(), "frame of 5 bytes exceeds the limit of 4");
    /// ```
    pub const fn max_frame_len(mut self, n: usize) -> Codec {
        self.max_frame_len = n;
        self
    }

    /// The largest payload this codec reads or writes: the smaller of
    /// [`max_frame_len`](Codec::max_frame_len) and the largest length the prefix represents.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// assert_eq!(Codec::new().get_max_frame_len(), 8 * 1024 * 1024);
    /// assert_eq!(Codec::new().prefix_len(1).get_max_frame_len(), 255);
    /// assert_eq!(Codec::new().prefix_len(2).signed().get_max_frame_len(), 32767);
    /// ```
    pub const fn get_max_frame_len(&self) -> usize {
        let max = self.max_frame_len as u64;
        let prefix_max = self.prefix_max();
        if prefix_max < max {
            prefix_max as usize
        } else {
            self.max_frame_len
        }
    }

    /// Renamed [`get_max_frame_len`](Codec::get_max_frame_len) in 0.2.0.
    #[deprecated(since = "0.2.0", note = "renamed `get_max_frame_len`")]
    pub const fn limit(&self) -> usize {
        self.get_max_frame_len()
    }

    /// The width of the prefix, in bytes.
    const fn width(&self) -> usize {
        self.prefix_len as usize
    }

    /// The largest length the prefix can carry.
    const fn prefix_max(&self) -> u64 {
        let bits = self.prefix_len as u32 * 8 - self.signed as u32;
        if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        }
    }

    /// Reads one frame: `Ok(Some(payload))`, or `Ok(None)` if the stream ended cleanly
    /// before the first byte of a prefix.
    ///
    /// Loops over short reads and retries [`Interrupted`](ErrorKind::Interrupted). An end of
    /// stream inside a prefix or a payload is an error of kind
    /// [`UnexpectedEof`](ErrorKind::UnexpectedEof); a length over the limit or negative is
    /// an error of kind [`InvalidData`](ErrorKind::InvalidData) holding a [`FrameError`].
    /// After an error the stream is out of step: close it.
    ///
    /// Each read asks the reader for at most 64 KiB; over an unbuffered socket, wrapping it
    /// in a `BufReader` saves a system call per small frame ([`StreamRequest`] is already
    /// buffered).
    ///
    /// [`StreamRequest`]: crate::StreamRequest
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    /// use std::io;
    ///
    /// let codec = Codec::new().prefix_len(1);
    /// let mut wire: &[u8] = b"\x02hi\x00\x03abc";
    /// assert_eq!(codec.read_frame(&mut wire)?, Some(b"hi".to_vec()));
    /// assert_eq!(codec.read_frame(&mut wire)?, Some(vec![])); // empty frame
    /// assert_eq!(codec.read_frame(&mut wire)?, Some(b"abc".to_vec()));
    /// assert_eq!(codec.read_frame(&mut wire)?, None); // end of stream
    ///
    /// let mut cut: &[u8] = b"\x05abc";
    /// let err = codec.read_frame(&mut cut).unwrap_err();
    /// assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn read_frame<R: Read + ?Sized>(&self, r: &mut R) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.read_frame_into(r, &mut buf)?.then_some(buf))
    }

    /// Reads one frame into `buf`, replacing its contents, and returns `true`; or returns
    /// `false` (with `buf` empty) if the stream ended cleanly before the first byte of a
    /// prefix.
    ///
    /// The same as [`read_frame`](Codec::read_frame) but reuses `buf`'s allocation. On error,
    /// `buf` holds what was received of the payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// let codec = Codec::new();
    /// let mut wire = Vec::new();
    /// for word in ["one", "two", "three"] {
    ///     codec.write_frame(&mut wire, word.as_bytes())?;
    /// }
    ///
    /// let mut reader = &wire[..];
    /// let mut buf = Vec::new();
    /// let mut words = Vec::new();
    /// while codec.read_frame_into(&mut reader, &mut buf)? {
    ///     words.push(String::from_utf8_lossy(&buf).into_owned());
    /// }
    /// assert_eq!(words, ["one", "two", "three"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_frame_into<R: Read + ?Sized>(
        &self,
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        buf.clear();
        let Some(len) = self.read_len(r)? else {
            return Ok(false);
        };
        read_payload(r, len, buf)?;
        Ok(true)
    }

    /// Reads a prefix and checks it: `None` at a clean end of stream.
    fn read_len<R: Read + ?Sized>(&self, r: &mut R) -> io::Result<Option<usize>> {
        let mut prefix = [0; 8];
        let prefix = &mut prefix[..self.width()];
        let n = read_full(r, prefix)?;
        if n == 0 {
            return Ok(None);
        }
        if n < prefix.len() {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "stream ended {n} bytes into a {}-byte length prefix",
                    prefix.len()
                ),
            ));
        }
        Ok(Some(self.decode_len(prefix)?))
    }

    /// The payload length a complete prefix declares, if acceptable.
    fn decode_len(&self, prefix: &[u8]) -> Result<usize, FrameError> {
        let width = prefix.len();
        let mut bytes = [0; 8];
        let len = match self.order {
            Order::Big => {
                bytes[8 - width..].copy_from_slice(prefix);
                u64::from_be_bytes(bytes)
            }
            Order::Little => {
                bytes[..width].copy_from_slice(prefix);
                u64::from_le_bytes(bytes)
            }
        };
        if self.signed {
            // Sign-extend from the prefix's width.
            let unused = 64 - 8 * width as u32;
            let value = ((len << unused) as i64) >> unused;
            if value < 0 {
                return Err(FrameError::negative(value));
            }
        }
        if len > self.get_max_frame_len() as u64 {
            return Err(FrameError::too_large(len, self.get_max_frame_len() as u64));
        }
        Ok(len as usize)
    }

    /// The prefix for a payload of `len` bytes, if the codec accepts that length.
    pub(crate) fn encode_len(&self, len: usize) -> Result<([u8; 8], usize), FrameError> {
        if len > self.get_max_frame_len() {
            return Err(FrameError::too_large(
                len as u64,
                self.get_max_frame_len() as u64,
            ));
        }
        let width = self.width();
        let mut prefix = [0; 8];
        match self.order {
            Order::Big => prefix[..width].copy_from_slice(&(len as u64).to_be_bytes()[8 - width..]),
            Order::Little => prefix[..width].copy_from_slice(&(len as u64).to_le_bytes()[..width]),
        }
        Ok((prefix, width))
    }

    /// Writes one frame: the prefix and the payload, together.
    ///
    /// Small frames are copied into one buffer and larger ones sent with `write_vectored`
    /// (looping over partial writes and retrying `Interrupted`), so the prefix never leaves
    /// alone and waits on Nagle's algorithm for the payload. Nothing is written if the
    /// payload is longer than [`limit`](Codec::limit): that is an error of kind
    /// [`InvalidInput`](ErrorKind::InvalidInput) holding a [`FrameError`].
    ///
    /// This does not flush: over a `BufWriter`, call `flush` when a batch of frames is
    /// written.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Codec, FrameError};
    /// use std::io;
    ///
    /// let codec = Codec::new().prefix_len(1);
    /// let mut wire = Vec::new();
    /// codec.write_frame(&mut wire, b"abc")?;
    /// assert_eq!(wire, b"\x03abc");
    ///
    /// // 256 bytes do not fit a 1-byte prefix: refused, nothing written.
    /// let err = codec.write_frame(&mut wire, &[0; 256]).unwrap_err();
    /// assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    /// assert!(FrameError::from_io(&err).unwrap().is_too_large());
    /// assert_eq!(wire, b"\x03abc");
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn write_frame<W: Write + ?Sized>(&self, w: &mut W, payload: &[u8]) -> io::Result<()> {
        let (prefix, width) = self
            .encode_len(payload.len())
            .map_err(FrameError::into_input_error)?;
        let prefix = &prefix[..width];
        if width + payload.len() <= SMALL_FRAME {
            let mut frame = [0; SMALL_FRAME];
            frame[..width].copy_from_slice(prefix);
            frame[width..width + payload.len()].copy_from_slice(payload);
            w.write_all(&frame[..width + payload.len()])
        } else {
            write_all_vectored(w, &mut [prefix, payload])
        }
    }

    /// The frame for `payload` (prefix then payload) as a new `Vec`: for tests, benchmarks,
    /// or building a batch to send at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Codec;
    ///
    /// assert_eq!(Codec::new().prefix_len(2).encode(b"abc")?, b"\x00\x03abc");
    /// assert!(Codec::new().prefix_len(1).encode(&[0; 256]).is_err());
    /// # Ok::<(), socketserver::framing::FrameError>(())
    /// ```
    pub fn encode(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let (prefix, width) = self.encode_len(payload.len())?;
        let mut frame = Vec::with_capacity(width + payload.len());
        frame.extend_from_slice(&prefix[..width]);
        frame.extend_from_slice(payload);
        Ok(frame)
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends exactly `len` bytes to the empty `buf`, growing it by at most `READ_CHUNK` bytes
/// beyond what has arrived.
fn read_payload<R: Read + ?Sized>(r: &mut R, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            buf.resize(cmp::min(len, filled + READ_CHUNK), 0);
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                buf.truncate(filled);
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("stream ended {filled} bytes into a {len}-byte frame"),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Writes all of `bufs`, in order, with as few `write_vectored` calls as the writer allows
/// (up to four buffers go in each call).
pub(crate) fn write_all_vectored<W: Write + ?Sized>(
    w: &mut W,
    bufs: &mut [&[u8]],
) -> io::Result<()> {
    let mut i = 0;
    loop {
        while i < bufs.len() && bufs[i].is_empty() {
            i += 1;
        }
        if i == bufs.len() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); 4];
        let count = cmp::min(bufs.len() - i, slices.len());
        for (slice, &buf) in slices.iter_mut().zip(&bufs[i..]) {
            *slice = IoSlice::new(buf);
        }
        match w.write_vectored(&slices[..count]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                while n > 0 {
                    let done = cmp::min(n, bufs[i].len());
                    bufs[i] = &bufs[i][done..];
                    n -= done;
                    if bufs[i].is_empty() {
                        i += 1;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

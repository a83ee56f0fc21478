//! `FrameReader` and `FrameWriter`: a stream and its codec in one value.

use std::io::{self, Read, Write};

use super::Codec;

/// A reader of frames: a `Read` and the [`Codec`] that splits it, and an iterator of frames.
///
/// The iterator yields `Ok(payload)` for each frame, ends at a clean end of stream, and ends
/// after yielding the first error (the stream is out of step after one).
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Codec, FrameReader};
///
/// let wire: &[u8] = b"\x00\x02hi\x00\x05there";
/// let frames = FrameReader::with_codec(wire, Codec::new().prefix_len(2));
/// let frames: Vec<Vec<u8>> = frames.collect::<Result<_, _>>()?;
/// assert_eq!(frames, [b"hi".to_vec(), b"there".to_vec()]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    codec: Codec,
    failed: bool,
}

impl<R: Read> FrameReader<R> {
    /// Reads frames from `inner` with the default [`Codec`] (u32 big-endian, 8 MiB).
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader::with_codec(inner, Codec::new())
    }

    /// Reads frames from `inner` with `codec`.
    pub fn with_codec(inner: R, codec: Codec) -> FrameReader<R> {
        FrameReader {
            inner,
            codec,
            failed: false,
        }
    }

    /// Reads the next frame: see [`Codec::read_frame`].
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameReader;
    ///
    /// let mut frames = FrameReader::new(&b"\0\0\0\x02hi"[..]);
    /// assert_eq!(frames.read_frame()?, Some(b"hi".to_vec()));
    /// assert_eq!(frames.read_frame()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.codec.read_frame(&mut self.inner)
    }

    /// Reads the next frame into `buf`: see [`Codec::read_frame_into`].
    pub fn read_frame_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        self.codec.read_frame_into(&mut self.inner, buf)
    }

    /// The codec in use.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably. Reading from it directly is fine between frames.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Iterator for FrameReader<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        if self.failed {
            return None;
        }
        let result = self.read_frame().transpose();
        self.failed = matches!(result, Some(Err(_)));
        result
    }
}

impl<R: Read> std::iter::FusedIterator for FrameReader<R> {}

/// A writer of frames: a `Write` and the [`Codec`] that frames what is written.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Codec, FrameWriter};
///
/// let mut frames = FrameWriter::with_codec(Vec::new(), Codec::new().prefix_len(1));
/// frames.write_frame(b"hi")?;
/// frames.write_frame(b"")?;
/// frames.flush()?;
/// assert_eq!(frames.into_inner(), b"\x02hi\x00");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    codec: Codec,
}

impl<W: Write> FrameWriter<W> {
    /// Writes frames to `inner` with the default [`Codec`] (u32 big-endian, 8 MiB).
    pub fn new(inner: W) -> FrameWriter<W> {
        FrameWriter::with_codec(inner, Codec::new())
    }

    /// Writes frames to `inner` with `codec`.
    pub fn with_codec(inner: W, codec: Codec) -> FrameWriter<W> {
        FrameWriter { inner, codec }
    }

    /// Writes one frame: see [`Codec::write_frame`].
    pub fn write_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        self.codec.write_frame(&mut self.inner, payload)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The codec in use.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying writer, mutably. Writing to it directly is fine between frames.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the underlying writer, without flushing it.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

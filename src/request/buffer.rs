//! A connection's read buffer: std's `BufReader`, with two differences that matter to a
//! server holding many connections.
//!
//! - Its memory is allocated and zeroed at its first fill, not when the connection opens: a
//!   connection that has sent nothing, or whose handler reads into buffers of its own (a
//!   read as large as the buffer bypasses it), has none. The engine gives it back when the
//!   connection goes quiet (`release`), so that an idle connection costs the same few KiB
//!   whether it has sent requests before or not.
//! - It grows when a read fills it whole (doubling, up to `GROWTH` times its first size): a
//!   client whose requests are larger than the buffer is then read in one system call per
//!   request instead of two. Between requests the engine's wait for a busy client's next
//!   request reads into this buffer, so without growth every request larger than it cost a
//!   second `recv` (16 KiB requests through the default 8 KiB buffer).

use std::fmt;
use std::io::{self, BufRead, IoSliceMut, Read};

/// How many times its configured size a read buffer may grow to.
pub(crate) const GROWTH: usize = 8;

/// A read buffer over `R` (see the module's documentation).
pub(crate) struct ReadBuffer<R> {
    inner: R,
    /// The bytes zeroed or read so far: its length is the part of the buffer in use.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    /// The size the next fill reads into.
    capacity: usize,
    max: usize,
}

impl<R: Read> ReadBuffer<R> {
    /// A buffer of `capacity` bytes (at least 1), allocated at its first fill, that grows up
    /// to `GROWTH` times that.
    pub(crate) fn with_capacity(capacity: usize, inner: R) -> ReadBuffer<R> {
        let capacity = capacity.max(1);
        ReadBuffer {
            inner,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            capacity,
            max: capacity.saturating_mul(GROWTH),
        }
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    /// Gives the buffer's memory back if nothing is buffered (the connection goes quiet):
    /// the next fill allocates it again, at the size it has grown to.
    pub(crate) fn release(&mut self) {
        if self.pos >= self.filled {
            self.pos = 0;
            self.filled = 0;
            self.buf = Vec::new();
        }
    }

    /// The size the next fill reads into.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<R: Read> BufRead for ReadBuffer<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            self.pos = 0;
            self.filled = 0;
            if self.buf.len() < self.capacity {
                self.buf.resize(self.capacity, 0);
            }
            let n = self.inner.read(&mut self.buf[..self.capacity])?;
            self.filled = n;
            if n == self.capacity && self.capacity < self.max {
                // Filled whole: more was probably queued. The next fill reads twice as much
                // (the new part is zeroed then, once).
                self.capacity = self.capacity.saturating_mul(2).min(self.max);
            }
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.filled);
    }
}

impl<R: Read> Read for ReadBuffer<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Nothing buffered and room for a whole buffer's worth: straight from the source, as
        // `BufReader` does (no copy, and the buffer's memory is not touched).
        if self.pos >= self.filled && out.len() >= self.capacity {
            return self.inner.read(out);
        }
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.pos >= self.filled && total >= self.capacity {
            return self.inner.read_vectored(bufs);
        }
        let n = {
            let mut available = self.fill_buf()?;
            available.read_vectored(bufs)?
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: fmt::Debug> fmt::Debug for ReadBuffer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBuffer")
            .field("inner", &self.inner)
            .field("buffered", &(self.filled - self.pos))
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out its chunks one per read, and counts the reads.
    struct Chunks {
        chunks: Vec<Vec<u8>>,
        reads: usize,
    }

    impl Read for Chunks {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let Some(chunk) = self.chunks.first_mut() else {
                return Ok(0);
            };
            let n = chunk.len().min(out.len());
            out[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.remove(0);
            }
            Ok(n)
        }
    }

    fn source(chunks: &[&[u8]]) -> Chunks {
        Chunks {
            chunks: chunks.iter().map(|c| c.to_vec()).collect(),
            reads: 0,
        }
    }

    #[test]
    fn nothing_is_allocated_before_the_first_fill() {
        let mut r = ReadBuffer::with_capacity(8, source(&[b"0123456789abcdef"]));
        assert_eq!(r.buf.capacity(), 0);
        // A read as large as the buffer bypasses it.
        let mut out = [0; 8];
        assert_eq!(r.read(&mut out).unwrap(), 8);
        assert_eq!(&out, b"01234567");
        assert_eq!(r.buf.capacity(), 0);
        assert_eq!(r.fill_buf().unwrap(), b"89abcdef");
        assert_eq!(r.buf.len(), 8);
    }

    #[test]
    fn a_read_that_fills_the_buffer_doubles_it_up_to_the_limit() {
        let big = [7u8; 64];
        let mut r = ReadBuffer::with_capacity(4, source(&[&big, &big[..40], b"end"]));
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        for _ in 0..20 {
            let chunk = r.fill_buf().unwrap().to_vec();
            if chunk.is_empty() {
                break;
            }
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
            r.consume(chunk.len());
        }
        // 4, 8 and 16 fill it whole and double it; 32 is the limit (4 x GROWTH): then the
        // first chunk's last 4 bytes, the second chunk in two reads, the tail.
        assert_eq!(sizes, [4, 8, 16, 32, 4, 32, 8, 3]);
        assert_eq!(r.capacity(), 4 * GROWTH);
        assert_eq!(got.len(), 64 + 40 + 3);
        assert!(got.ends_with(b"end"));
    }

    #[test]
    fn a_released_buffer_comes_back_at_its_grown_size() {
        let big = [1u8; 32];
        let mut r = ReadBuffer::with_capacity(8, source(&[&big, b"more", b"x"]));
        assert_eq!(r.fill_buf().unwrap().len(), 8);
        // Bytes still buffered: nothing is given back.
        r.release();
        assert_eq!(r.buffer().len(), 8);
        r.consume(8);
        r.release();
        assert_eq!(r.buf.capacity(), 0);
        assert_eq!(r.buffer(), b"");
        // Grown to 16 by the full read: the next fill reads 16.
        assert_eq!(r.fill_buf().unwrap().len(), 16);
        assert_eq!(r.buf.len(), 16);
    }

    #[test]
    fn a_short_read_does_not_grow_it() {
        let mut r = ReadBuffer::with_capacity(8, source(&[b"abc", b"defgh"]));
        assert_eq!(r.fill_buf().unwrap(), b"abc");
        r.consume(3);
        assert_eq!(r.fill_buf().unwrap(), b"defgh");
        assert_eq!(r.capacity(), 8);
    }

    #[test]
    fn reads_copy_out_what_is_buffered_first() {
        let mut r = ReadBuffer::with_capacity(8, source(&[b"hello world"]));
        let mut small = [0; 3];
        assert_eq!(r.read(&mut small).unwrap(), 3);
        assert_eq!(&small, b"hel");
        assert_eq!(r.buffer(), b"lo wo");
        let (mut a, mut b) = ([0; 2], [0; 10]);
        let n = r
            .read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(&a, b"lo");
        assert_eq!(&b[..3], b" wo");
        let mut rest = [0; 16];
        assert_eq!(r.read(&mut rest).unwrap(), 3);
        assert_eq!(&rest[..3], b"rld");
        assert_eq!(r.read(&mut rest).unwrap(), 0);
        assert_eq!(r.get_ref().reads, 3);
    }
}

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
//!
//! Memory given back (by a connection that parks or closes, or by a dropped [`Received`])
//! goes to its thread's spare (one buffer per thread, the last given back), which the next
//! fill on that thread takes if it is large enough: a connection that resumes, or the next
//! one served, reads into memory already zeroed, and the buffers that [`Received`] lends
//! out come back without a copy or a fresh allocation.

use std::borrow::Borrow;
use std::cell::Cell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, IoSliceMut, Read};
use std::ops::{Deref, Range};

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
            give_back(std::mem::take(&mut self.buf));
        }
    }

    /// Takes everything buffered, consumed. A part of at least half the buffer is lent in
    /// the buffer itself, which comes back to this thread's spare when the [`Received`]
    /// is dropped; a smaller part is copied into a `Vec` of its own length, so that a
    /// [`Received`] never holds more than twice its bytes.
    #[inline]
    pub(crate) fn take_buffered(&mut self) -> Received {
        let range = self.pos..self.filled;
        self.pos = 0;
        self.filled = 0;
        if !range.is_empty() && range.len().saturating_mul(2) >= self.buf.len() {
            Received {
                buf: std::mem::take(&mut self.buf),
                range,
                lent: true,
            }
        } else {
            let buf = self.buf[range].to_vec();
            Received {
                range: 0..buf.len(),
                buf,
                lent: false,
            }
        }
    }

    /// Memory for the next fill: this thread's spare if the buffer has none and the spare
    /// is large enough, else the buffer zeroed up to `capacity` (once per byte).
    fn make_room(&mut self) {
        if self.buf.is_empty() {
            let spare = SPARE.try_with(Cell::take).unwrap_or_default();
            if spare.len() >= self.capacity {
                self.buf = spare;
                return;
            }
            // Too small for this connection: kept for one it fits.
            give_back(spare);
        }
        self.buf.resize(self.capacity, 0);
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
                self.make_room();
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

/// A closing connection's buffer becomes its thread's spare too: the next connection that
/// thread serves reads into it.
impl<R> Drop for ReadBuffer<R> {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

thread_local! {
    /// The read buffer last given back on this thread (zeroed or read into, all of it).
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Makes `buf` this thread's spare, in place of the one before (freed): a thread keeps at
/// most one, so memory stays bounded by the number of threads.
fn give_back(buf: Vec<u8>) {
    if !buf.is_empty() {
        // At thread exit the slot may be gone already: the buffer is freed then.
        let _ = SPARE.try_with(|s| s.set(buf));
    }
}

/// The bytes that [`StreamRequest::recv`](crate::StreamRequest::recv) took: what had
/// arrived. It dereferences to `[u8]`, so it is used as a byte slice (`&data[..]`,
/// `data.len()`, `req.write_all(&data)`); [`into_vec`](Received::into_vec) makes it a
/// `Vec<u8>`.
///
/// A large request (half the connection's read buffer or more) is not copied: it is lent
/// in the read buffer itself, which goes back to the server when this value is dropped and
/// is read into again without being allocated or zeroed anew. A smaller one is copied
/// into memory of its own length. Either way a `Received` holds at most twice its length;
/// keep what must outlive the request as a `Vec` ([`into_vec`](Received::into_vec)) or
/// parsed into your own types.
///
/// ```
/// # fn f(req: &mut socketserver::StreamRequest) -> std::io::Result<()> {
/// use std::io::Write;
///
/// let data = req.recv()?;
/// if data.starts_with(b"PING") {
///     req.write_all(b"PONG\n")?;
/// }
/// let kept: Vec<u8> = data.into_vec();
/// # let _ = kept; Ok(()) }
/// ```
pub struct Received {
    buf: Vec<u8>,
    range: Range<usize>,
    /// `buf` is a read buffer, given back when this is dropped.
    lent: bool,
}

impl Received {
    /// The bytes as a `Vec<u8>` of their own. A lent buffer whose bytes start it becomes
    /// the `Vec` (uncopied: its capacity is at most twice its length); otherwise the
    /// bytes are copied and the buffer goes back to the server.
    pub fn into_vec(mut self) -> Vec<u8> {
        let range = self.range.clone();
        if range.start == 0 {
            let mut buf = std::mem::take(&mut self.buf);
            buf.truncate(range.end);
            buf
        } else {
            self.buf[range].to_vec()
        }
    }
}

impl Drop for Received {
    #[inline]
    fn drop(&mut self) {
        if self.lent {
            give_back(std::mem::take(&mut self.buf));
        }
    }
}

impl Deref for Received {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Borrow<[u8]> for Received {
    fn borrow(&self) -> &[u8] {
        self
    }
}

/// A copy of the bytes, in memory of its own (not a second read buffer).
impl Clone for Received {
    fn clone(&self) -> Received {
        let buf = self.to_vec();
        Received {
            range: 0..buf.len(),
            buf,
            lent: false,
        }
    }
}

impl From<Received> for Vec<u8> {
    fn from(r: Received) -> Vec<u8> {
        r.into_vec()
    }
}

/// Shown as the byte slice it holds.
impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for Received {
    fn eq(&self, other: &Received) -> bool {
        **self == **other
    }
}

impl Eq for Received {}

impl Hash for Received {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq<[u8]> for Received {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for Received {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Received {
    fn eq(&self, other: &[u8; N]) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Received {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<Vec<u8>> for Received {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
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

    /// The address of a buffer's memory, to tell whether two are the same allocation.
    fn addr(b: &[u8]) -> usize {
        b.as_ptr() as usize
    }

    #[test]
    fn a_large_part_is_lent_in_the_buffer_and_comes_back_through_the_spare() {
        let mut r = ReadBuffer::with_capacity(8, source(&[b"abcdefgh", b"ijklmn"]));
        let mut out = [0; 2];
        // Read 8, filling the buffer whole (it grows to 16 for the next fill); take 6.
        assert_eq!(r.read(&mut out).unwrap(), 2);
        let first = r.take_buffered();
        assert_eq!(first, b"cdefgh");
        assert_eq!(first.len(), 6, "the part after what was read");
        let lent = addr(&first);
        // The buffer went with it: the next fill allocates, and the value is untouched.
        assert_eq!(r.buf.capacity(), 0);
        assert_eq!(r.fill_buf().unwrap(), b"ijklmn");
        assert_eq!(first, b"cdefgh");
        // Dropped, it becomes the thread's spare, which the next buffer to fill takes
        // instead of allocating.
        drop(first);
        let mut other = ReadBuffer::with_capacity(8, source(&[b"xyz"]));
        assert_eq!(other.fill_buf().unwrap(), b"xyz");
        assert_eq!(addr(&other.buf), lent - 2, "the lent buffer came back");
    }

    #[test]
    fn a_small_part_is_copied_and_the_buffer_stays() {
        let mut r = ReadBuffer::with_capacity(16, source(&[b"tiny", b"next"]));
        assert_eq!(r.fill_buf().unwrap(), b"tiny");
        let buffer = addr(&r.buf);
        let got = r.take_buffered();
        assert_eq!(got, b"tiny");
        assert_eq!(got.buf.capacity(), 4, "in memory of its own length");
        assert_eq!(addr(&r.buf), buffer);
        assert_eq!(r.fill_buf().unwrap(), b"next");
        assert_eq!(got.into_vec(), b"tiny");
    }

    #[test]
    fn nothing_buffered_is_an_empty_value() {
        let mut r = ReadBuffer::with_capacity(8, source(&[]));
        assert_eq!(r.fill_buf().unwrap(), b"");
        let got = r.take_buffered();
        assert!(got.is_empty());
        assert!(!got.lent);
    }

    #[test]
    fn into_vec_keeps_a_lent_buffer_that_starts_with_the_bytes_else_copies() {
        let mut r = ReadBuffer::with_capacity(8, source(&[b"12345678", b"abcdefghijklmnop"]));
        r.fill_buf().unwrap();
        let whole = r.take_buffered();
        assert!(whole.lent);
        let at = addr(&whole);
        let v = whole.into_vec();
        assert_eq!(v, b"12345678");
        assert_eq!(addr(&v), at, "uncopied");
        // Lent after 3 bytes were read (13 of the 16 the buffer has grown to): copied out,
        // and the buffer becomes the thread's spare.
        let mut out = [0; 3];
        assert_eq!(r.read(&mut out).unwrap(), 3);
        let tail = r.take_buffered();
        assert!(tail.lent);
        let buffer = addr(&tail.buf);
        assert_eq!(tail.clone(), b"defghijklmnop");
        let v = tail.into_vec();
        assert_eq!(v, b"defghijklmnop");
        assert_ne!(addr(&v), buffer + 3);
        assert_eq!(addr(&SPARE.with(Cell::take)), buffer);
    }

    #[test]
    fn a_dropped_buffer_becomes_the_spare_of_the_next_connection() {
        let mut closing = ReadBuffer::with_capacity(8, source(&[b"bye"]));
        assert_eq!(closing.fill_buf().unwrap(), b"bye");
        let at = addr(&closing.buf);
        drop(closing);
        let mut next = ReadBuffer::with_capacity(8, source(&[b"hello"]));
        assert_eq!(next.fill_buf().unwrap(), b"hello");
        assert_eq!(
            addr(&next.buf),
            at,
            "read into the closed connection's buffer"
        );
    }

    #[test]
    fn a_spare_too_small_is_kept_for_a_buffer_it_fits() {
        give_back(vec![0; 4]);
        let mut big = ReadBuffer::with_capacity(8, source(&[b"12345678"]));
        assert_eq!(big.fill_buf().unwrap(), b"12345678");
        let spare = SPARE.with(Cell::take);
        assert_eq!(spare.len(), 4, "still there");
        let at = addr(&spare);
        give_back(spare);
        let mut small = ReadBuffer::with_capacity(4, source(&[b"abc"]));
        assert_eq!(small.fill_buf().unwrap(), b"abc");
        assert_eq!(addr(&small.buf), at);
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

//! Lines with a length limit: the bounded `read_line` every line protocol needs.

use std::io::{self, BufRead};
use std::str::Utf8Error;

use super::FrameError;

/// Reads one line into `buf` (cleared first) and returns it without its `\n` or `\r\n`;
/// `Ok(None)` at the end of the stream before any byte. A last line without a newline is
/// returned as it is.
///
/// At most `max` bytes are taken for the line (the terminator aside), so one client cannot
/// make the server hold an unbounded line the way `BufRead::read_line` into a `String`
/// does. A longer line fails with a [`FrameError`] (`is_line_too_long`, kind
/// `InvalidData`), after about `max` bytes, before the rest arrives; the stream is then
/// inside that line and not usable: answer if the protocol allows, then close.
///
/// End of stream inside a line returns the partial line (like `read_line`); an I/O error
/// or a timeout is returned as it is, with the stream at an unknown place.
///
/// # Examples
///
/// ```
/// use socketserver::framing;
///
/// let mut wire: &[u8] = b"GET a\r\nSET b 1\nQUIT";
/// let mut buf = Vec::new();
/// assert_eq!(framing::read_line(&mut wire, &mut buf, 64)?, Some(&b"GET a"[..]));
/// assert_eq!(framing::read_line(&mut wire, &mut buf, 64)?, Some(&b"SET b 1"[..]));
/// assert_eq!(framing::read_line(&mut wire, &mut buf, 64)?, Some(&b"QUIT"[..]));
/// assert_eq!(framing::read_line(&mut wire, &mut buf, 64)?, None);
///
/// let mut long: &[u8] = b"0123456789\n";
/// let err = framing::read_line(&mut long, &mut buf, 4).unwrap_err();
/// assert_eq!(err.to_string(), "line longer than 4 bytes");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_line<'b, R: BufRead + ?Sized>(
    r: &mut R,
    buf: &'b mut Vec<u8>,
    max: usize,
) -> io::Result<Option<&'b [u8]>> {
    buf.clear();
    // A `\r` before the `\n` is allowed on top of `max`.
    let cap = max.saturating_add(1);
    loop {
        let avail = match r.fill_buf() {
            Ok(avail) => avail,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return (!buf.is_empty()).then(|| strip(buf, max)).transpose();
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if buf.len() + i > cap {
                    return Err(FrameError::line_too_long(max).into());
                }
                buf.extend_from_slice(&avail[..i]);
                r.consume(i + 1);
                return strip(buf, max).map(Some);
            }
            None => {
                let n = avail.len();
                if buf.len() + n > cap {
                    return Err(FrameError::line_too_long(max).into());
                }
                buf.extend_from_slice(avail);
                r.consume(n);
            }
        }
    }
}

/// Drops a trailing `\r` and checks the limit.
fn strip(buf: &mut Vec<u8>, max: usize) -> io::Result<&[u8]> {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > max {
        return Err(FrameError::line_too_long(max).into());
    }
    Ok(buf)
}

/// [`read_line`], then UTF-8: `Some(Ok(text))` for a line of text, `Some(Err(_))` for a
/// line that is not UTF-8. A bad line is *reported*, not an error: the line was read whole
/// and the stream is still usable, so the handler answers it and goes on.
///
/// # Examples
///
/// ```
/// use socketserver::framing;
///
/// let mut wire: &[u8] = b"caf\xc3\xa9\n\xff\xfe\nok\n";
/// let mut buf = Vec::new();
/// assert_eq!(framing::read_text_line(&mut wire, &mut buf, 64)?, Some(Ok("café")));
/// assert!(matches!(framing::read_text_line(&mut wire, &mut buf, 64)?, Some(Err(_))));
/// assert_eq!(framing::read_text_line(&mut wire, &mut buf, 64)?, Some(Ok("ok")));
/// assert_eq!(framing::read_text_line(&mut wire, &mut buf, 64)?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_text_line<'b, R: BufRead + ?Sized>(
    r: &mut R,
    buf: &'b mut Vec<u8>,
    max: usize,
) -> io::Result<Option<Result<&'b str, Utf8Error>>> {
    Ok(read_line(r, buf, max)?.map(std::str::from_utf8))
}

//! `FrameError`: the framing errors a caller can act on.

use std::error::Error;
use std::fmt;
use std::io;

/// A length prefix the codec refuses: too large for the limit, or negative.
///
/// Reading functions return it inside an [`io::Error`] of kind
/// [`InvalidData`](io::ErrorKind::InvalidData) (the peer sent it), writing functions inside
/// one of kind [`InvalidInput`](io::ErrorKind::InvalidInput) (the caller asked for it), so `?`
/// keeps working. [`FrameError::from_io`] gets it back, to answer "too large" differently
/// from a network error.
///
/// Whether the stream can still be used after the error depends on where it stopped:
/// [`stream_usable`](FrameError::stream_usable) says. After a too-large or negative length
/// the stream is positioned just after the prefix, in the middle of a frame nobody will
/// read: close the connection, there is no way to resynchronise. After a frame whose
/// payload was read whole but is not what was expected (JSON that does not parse as the
/// type asked for, see [`read_json`](super::read_json)), the next frame starts right there:
/// answer with an error and go on.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{self, FrameError};
/// use std::io;
///
/// // A peer declares a 4 GiB frame and sends nothing more: nothing is allocated.
/// let mut wire: &[u8] = &[0xff, 0xff, 0xff, 0xff];
/// let err = framing::read_frame(&mut wire).unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::InvalidData);
///
/// let frame_err = FrameError::from_io(&err).unwrap();
/// assert!(frame_err.is_too_large());
/// assert_eq!(frame_err.declared_len(), Some(4294967295));
/// assert_eq!(frame_err.limit(), Some(8 * 1024 * 1024));
/// assert_eq!(err.to_string(), "frame of 4294967295 bytes exceeds the limit of 8388608");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The length is above the codec's limit (or above what the prefix can carry).
    TooLarge { len: u64, limit: u64 },
    /// A signed prefix holds a negative length.
    Negative { len: i64 },
    /// A line longer than the limit (see `framing::read_line`).
    LineTooLong { limit: u64 },
    /// A frame read whole whose payload is not valid for its use (bad JSON).
    #[cfg_attr(not(feature = "json"), allow(dead_code))]
    BadPayload { reason: String },
}

impl FrameError {
    pub(crate) fn too_large(len: u64, limit: u64) -> FrameError {
        FrameError {
            kind: Kind::TooLarge { len, limit },
        }
    }

    pub(crate) fn negative(len: i64) -> FrameError {
        FrameError {
            kind: Kind::Negative { len },
        }
    }

    pub(crate) fn line_too_long(limit: usize) -> FrameError {
        FrameError {
            kind: Kind::LineTooLong {
                limit: limit as u64,
            },
        }
    }

    // Made by the JSON readers only (cargo feature `json`).
    #[cfg_attr(not(feature = "json"), allow(dead_code))]
    pub(crate) fn bad_payload(reason: String) -> FrameError {
        FrameError {
            kind: Kind::BadPayload { reason },
        }
    }

    /// Whether the stream is still usable after this error: `true` when the offending
    /// frame was consumed whole (a payload that does not parse), so the next read starts
    /// at the next frame; `false` when the stream stopped inside a frame or a line (too
    /// large, negative, line too long), and the connection must be closed.
    pub fn stream_usable(&self) -> bool {
        matches!(self.kind, Kind::BadPayload { .. })
    }

    /// True if a line was longer than the limit given to
    /// [`read_line`](super::read_line).
    pub fn is_line_too_long(&self) -> bool {
        matches!(self.kind, Kind::LineTooLong { .. })
    }

    /// True if a frame arrived whole but its payload was not valid (JSON that does not
    /// parse as the type asked for).
    pub fn is_bad_payload(&self) -> bool {
        matches!(self.kind, Kind::BadPayload { .. })
    }

    /// True if the frame is longer than the limit: [`Codec::max_frame_len`], or what the
    /// prefix can represent when writing.
    ///
    /// [`Codec::max_frame_len`]: super::Codec::max_frame_len
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, Kind::TooLarge { .. })
    }

    /// True if a signed prefix held a negative length.
    pub fn is_negative(&self) -> bool {
        matches!(self.kind, Kind::Negative { .. })
    }

    /// The length that was refused, if it is not negative: the declared length when reading,
    /// the payload length when writing.
    pub fn declared_len(&self) -> Option<u64> {
        match self.kind {
            Kind::TooLarge { len, .. } => Some(len),
            _ => None,
        }
    }

    /// The limit that was exceeded, for a too-large frame.
    pub fn limit(&self) -> Option<u64> {
        match self.kind {
            Kind::TooLarge { limit, .. } | Kind::LineTooLong { limit } => Some(limit),
            _ => None,
        }
    }

    /// The `FrameError` inside an [`io::Error`] returned by this module, if there is one.
    ///
    /// See the [type's example](FrameError#examples).
    pub fn from_io(err: &io::Error) -> Option<&FrameError> {
        err.get_ref()?.downcast_ref::<FrameError>()
    }

    /// Wraps the error as the writing side reports it: kind `InvalidInput`.
    pub(crate) fn into_input_error(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, self)
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::TooLarge { len, limit } => {
                write!(f, "frame of {len} bytes exceeds the limit of {limit}")
            }
            Kind::Negative { len } => write!(f, "negative frame length {len}"),
            Kind::LineTooLong { limit } => write!(f, "line longer than {limit} bytes"),
            Kind::BadPayload { reason } => write!(f, "invalid frame payload: {reason}"),
        }
    }
}

impl Error for FrameError {}

/// Whether a stream can still be read after `err`, returned by a read function of this
/// module: `true` only for a [`FrameError`] that says so (a whole frame with a bad
/// payload). An I/O error, a timeout or an end of stream inside a frame leaves the stream
/// at an unknown place: close it.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "json")] {
/// use socketserver::framing;
///
/// let mut wire = Vec::new();
/// framing::write_frame(&mut wire, b"not json")?;
/// framing::write_frame(&mut wire, b"[1,2]")?;
/// let mut reader = &wire[..];
/// let err = framing::read_json::<Vec<u8>, _>(&mut reader).unwrap_err();
/// assert!(framing::stream_usable(&err)); // reply "bad request" and read on
/// assert_eq!(framing::read_json::<Vec<u8>, _>(&mut reader)?, Some(vec![1, 2]));
///
/// let mut oversize: &[u8] = &[0xff, 0xff, 0xff, 0xff];
/// let err = framing::read_frame(&mut oversize).unwrap_err();
/// assert!(!framing::stream_usable(&err)); // close the connection
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stream_usable(err: &io::Error) -> bool {
    FrameError::from_io(err).is_some_and(FrameError::stream_usable)
}

/// Kind [`InvalidData`](io::ErrorKind::InvalidData), with the `FrameError` as the inner error
/// (see [`FrameError::from_io`]).
impl From<FrameError> for io::Error {
    fn from(err: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

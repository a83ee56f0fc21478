//! The error a failed request is reported with.

use std::fmt;
use std::io;

/// Why a request failed, as passed to the `on_error` hook.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// `setup`, `handle` or `finish` returned this error.
    Io(io::Error),
    /// The handler (or its factory) panicked with this message.
    Panic(String),
}

impl HandlerError {
    /// Whether this is the client going away (reset, broken pipe, EOF mid-request), which is
    /// routine for a server and logged at debug level.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, HandlerError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected
        ))
    }
}

impl HandlerError {
    /// Whether the client caused it: data that breaks the protocol (`InvalidData`, such as
    /// an oversize frame or bad JSON), or a timeout. Logged at info level, not error: the
    /// server itself is fine.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, HandlerError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::TimedOut
        ))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Io(e) => write!(f, "handler failed: {e}"),
            HandlerError::Panic(msg) => write!(f, "handler panicked: {msg}"),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandlerError::Io(e) => Some(e),
            HandlerError::Panic(_) => None,
        }
    }
}

//! Peer and local addresses of every transport under one type.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::net::SocketAddr as UnixAddr;

/// The address of a peer or of the server itself: an IP socket address or a Unix one.
///
/// `Display` prints `127.0.0.1:8001`, `[::1]:8001`, a Unix path, or `(unnamed)` for a Unix
/// socket that was never bound (a client of a `UnixStreamServer` usually is).
#[derive(Clone, Debug)]
pub enum Addr {
    /// TCP or UDP over IPv4/IPv6.
    Inet(SocketAddr),
    /// A Unix-domain socket address (unix only).
    Unix(UnixAddr),
}

impl Addr {
    /// The IP socket address, if this is one.
    ///
    /// ```
    /// use socketserver::Addr;
    /// let addr = Addr::Inet("127.0.0.1:8001".parse().unwrap());
    /// assert_eq!(addr.as_inet().unwrap().port(), 8001);
    /// ```
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix socket address, if this is one.
    pub fn as_unix(&self) -> Option<&UnixAddr> {
        match self {
            Addr::Unix(a) => Some(a),
            Addr::Inet(_) => None,
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Addr::Inet(a)
    }
}

impl From<UnixAddr> for Addr {
    fn from(a: UnixAddr) -> Self {
        Addr::Unix(a)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => a.fmt(f),
            Addr::Unix(a) => match a.as_pathname() {
                Some(p) => p.display().fmt(f),
                None => f.write_str("(unnamed)"),
            },
        }
    }
}

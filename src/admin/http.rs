//! The admin listener's HTTP/1.1: one request per connection (`Connection: close`), parsed
//! by `httparse`, bounded in size and time; answers as HTTP says (400, 404, 405, 408, 431).

use std::time::Instant;

/// The largest request (line and headers) taken; larger ones are answered 431.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// The most header fields taken (more is a 431 too).
const MAX_HEADERS: usize = 32;

/// A response, written whole into a buffer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    pub(crate) allow: bool,
}

impl Response {
    pub(crate) fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            allow: false,
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    /// The bytes on the wire (no body for `HEAD`).
    pub(crate) fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A parsed request: what routing needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path without its query string.
    pub(crate) path: String,
    pub(crate) accept: String,
}

/// What the bytes received so far make.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole request.
    Done(Request),
    /// Not whole yet: read more.
    Partial,
    /// An answer without routing: 400 (malformed) or 431 (too large).
    Reject(u16, &'static str),
}

/// Parses what a connection sent so far.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST => {
            return Parsed::Reject(431, "request headers larger than 8 KiB")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(431, "too many header fields")
        }
        Err(_) => return Parsed::Reject(400, "malformed HTTP request"),
    }
    if buf.len() > MAX_REQUEST {
        return Parsed::Reject(431, "request headers larger than 8 KiB");
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(400, "malformed HTTP request");
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    // RFC 9112 3.2: a server answers 400 to an HTTP/1.1 request without a Host field.
    if version == 1 && header("host").is_none() {
        return Parsed::Reject(400, "HTTP/1.1 request without a Host header");
    }
    if !target.starts_with('/') {
        return Parsed::Reject(400, "request target is not a path");
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Parsed::Done(Request {
        method: method.to_string(),
        path,
        accept: header("accept").unwrap_or_default(),
    })
}

/// A connection's state on the admin thread.
#[derive(Debug)]
pub(crate) enum State {
    /// Receiving the request, until its deadline.
    Reading { buf: Vec<u8>, deadline: Instant },
    /// Sending the response; the connection closes once it is sent (or at the deadline).
    Writing {
        out: Vec<u8>,
        sent: usize,
        deadline: Instant,
    },
}

impl State {
    pub(crate) fn deadline(&self) -> Instant {
        match self {
            State::Reading { deadline, .. } | State::Writing { deadline, .. } => *deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(raw: &str) -> Request {
        match parse(raw.as_bytes()) {
            Parsed::Done(r) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn requests_parse_and_queries_are_dropped() {
        let r = done("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept, "text/plain");
        assert_eq!(done("HEAD /livez HTTP/1.0\r\n\r\n").method, "HEAD");
    }

    #[test]
    fn partial_malformed_and_oversize_requests() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), Parsed::Partial);
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n"),
            Parsed::Reject(400, _)
        ));
        assert!(matches!(
            parse(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Reject(400, _)
        ));
        assert!(matches!(
            parse(b"GET metrics HTTP/1.1\r\nHost: a\r\n\r\n"),
            Parsed::Reject(400, _)
        ));
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        big.resize(MAX_REQUEST + 10, b'a');
        assert!(matches!(parse(&big), Parsed::Reject(431, _)));
        let many: String = (0..40).map(|i| format!("X{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(parse(raw.as_bytes()), Parsed::Reject(431, _)));
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let r = Response::text(200, "ok");
        let wire = String::from_utf8(r.encode(false)).unwrap();
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(wire.contains("Content-Length: 3\r\n"));
        assert!(wire.contains("Connection: close\r\n"));
        assert!(wire.ends_with("\r\n\r\nok\n"));
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }
}

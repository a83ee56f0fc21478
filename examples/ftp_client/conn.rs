//! The connection to the server: requests out, answers in, in the server's framing.

use std::fmt;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Map, Value};
use socketserver::framing::{Body, Codec, MessageCodec};

/// Header frames: `'<i'` length prefix, 1 to 65536 bytes of JSON (the server's format).
const CODEC: MessageCodec = MessageCodec::new()
    .prefix(Codec::new().signed_i32_le())
    .max_header_len(65536);
/// Socket buffer size for file transfers.
pub const CHUNK: usize = 256 * 1024;
/// How long the client waits for the server's next bytes.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The server refused, or a local file could not be used: the next command can run.
    Refused(String),
    /// The server refused and closed the connection (an upload whose body it does not
    /// read): the next command needs a new connection.
    Closed(String),
    /// The connection is lost: nothing more can run.
    Broken(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(msg) => f.write_str(msg),
            Failure::Closed(msg) => write!(f, "{msg} (the server closed the connection)"),
            Failure::Broken(e) => write!(f, "connection lost: {e}"),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Broken(e)
    }
}

/// An answer's fields, `"ok":true` checked.
pub type Answer = Map<String, Value>;

/// A connection to the file server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Conn {
    /// Connects to `addr` (HOST:PORT).
    pub fn connect(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::with_capacity(CHUNK, stream.try_clone()?),
            writer: BufWriter::with_capacity(CHUNK, stream),
        })
    }

    /// Sends `request` and returns the answer; `Refused` if the server said no.
    pub fn call(&mut self, request: &Value) -> Result<Answer, Failure> {
        self.send_header(request)?;
        self.writer.flush()?;
        self.answer()
    }

    /// Writes a request header (buffered: flush or send a body after it).
    pub fn send_header(&mut self, request: &Value) -> io::Result<()> {
        CODEC.write_json_header(&mut self.writer, request)
    }

    /// Sends `len` bytes of `body` after a header, calling `progress` with the bytes sent.
    /// A server that refuses the upload may answer and close before the body is all sent:
    /// the write then fails (a broken pipe, a reset), and the answer, read after it, is the
    /// failure (`Closed` with the server's message).
    pub fn send_body<R: Read>(
        &mut self,
        body: &mut R,
        len: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<(), Failure> {
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Failure::Broken(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the local file shrank while being sent",
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Broken(e)),
            };
            if let Err(e) = self.writer.write_all(&buf[..n]) {
                return Err(self.closed_by_server(e));
            }
            left -= n as u64;
            progress(n as u64);
        }
        self.writer.flush().map_err(|e| self.closed_by_server(e))
    }

    /// What a failed write of a body means: when the server closed the connection (a
    /// broken pipe, a reset), its answer may be waiting, and says why.
    fn closed_by_server(&mut self, e: io::Error) -> Failure {
        let closed = matches!(
            e.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        );
        if !closed {
            return Failure::Broken(e);
        }
        match self.answer() {
            Err(Failure::Refused(msg) | Failure::Closed(msg)) => Failure::Closed(msg),
            // No answer, or a success though the body was cut: the write's error says it.
            Ok(_) | Err(Failure::Broken(_)) => Failure::Broken(e),
        }
    }

    /// Reads one answer; `Refused` with its error if `"ok"` is not true (`Closed` if the
    /// answer says the server closes the connection after it, `"closing": true`).
    pub fn answer(&mut self) -> Result<Answer, Failure> {
        let answer = match CODEC.read_json_header::<Answer, _>(&mut self.reader) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(Failure::Broken(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )))
            }
            Err(e) => return Err(Failure::Broken(e)),
        };
        if answer.get("ok") == Some(&Value::Bool(true)) {
            Ok(answer)
        } else {
            let msg = answer.get("error").and_then(Value::as_str);
            let msg = msg.unwrap_or("the server refused").to_owned();
            if answer.get("closing") == Some(&Value::Bool(true)) {
                Err(Failure::Closed(msg))
            } else {
                Err(Failure::Refused(msg))
            }
        }
    }

    /// The `len` raw bytes that follow a `get` answer.
    pub fn body(&mut self, len: u64) -> Body<'_, BufReader<TcpStream>> {
        Body::new(&mut self.reader, len)
    }
}

/// A string field of an answer ("" if absent).
pub fn text<'a>(a: &'a Answer, key: &str) -> &'a str {
    a.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A number field of an answer (0 if absent).
pub fn number(a: &Answer, key: &str) -> u64 {
    a.get(key).and_then(Value::as_u64).unwrap_or(0)
}

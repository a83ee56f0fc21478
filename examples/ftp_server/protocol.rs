//! The wire protocol: message framing, the requests a client may send, and the answers.
//!
//! Every message is a 4-byte little-endian signed header length N (Python `struct` `'<i'`,
//! the same bytes as the tutorials' `struct.pack('i', n)`), 1 <= N <= 65536, then N bytes of
//! a UTF-8 JSON object, then, for `put` requests and successful `get` answers only, exactly
//! `filesize - offset` raw bytes.

use std::io::{self, Write};

use serde_json::{json, Map, Value};
use socketserver::framing::{Codec, MessageCodec};

/// Header frames: `'<i'` length prefix, 1 to 65536 bytes of JSON.
pub const CODEC: MessageCodec = MessageCodec::new()
    .prefix(Codec::new().signed_i32_le())
    .max_header_len(65536);

/// One request, parsed from its header.
#[derive(Debug)]
pub enum Request {
    Login {
        username: String,
        password: String,
    },
    Quit,
    Pwd,
    Cd {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Rm {
        path: String,
    },
    Ls {
        path: Option<String>,
    },
    Put(Put),
    Stat {
        filename: String,
    },
    Get {
        filename: String,
        offset: u64,
    },
    Quota,
    /// A header that is an object but not a request we know (or lacks a field it needs);
    /// no body follows it.
    Invalid(String),
    /// A `login` that lacks a field.
    BadLogin(String),
    /// A `put` whose body length cannot be known (no usable `filesize`/`offset`): the stream
    /// is out of step and must be closed after the answer.
    Unframed(String),
}

/// A `put` request: the body is `filesize - offset` bytes.
#[derive(Debug)]
pub struct Put {
    /// The target, a path relative to the current directory (or to the home with a
    /// leading `/`); `Err` holds why the name itself is unusable.
    pub filename: Result<String, String>,
    pub filesize: u64,
    pub offset: u64,
    /// Expected SHA-256 of the whole file, lowercase hex, when the client sent one.
    pub sha256: Option<String>,
}

impl Put {
    /// The number of body bytes that follow the header.
    pub fn body_len(&self) -> u64 {
        self.filesize - self.offset
    }
}

impl Request {
    /// Reads a request from a header object. The tutorials' older upload header,
    /// `{"file_name":F,"file_size":N}` without `cmd`, is a `put`.
    pub fn parse(h: &Map<String, Value>) -> Request {
        let cmd = match h.get("cmd") {
            Some(Value::String(c)) => c.as_str(),
            Some(_) => return Request::Invalid("\"cmd\" must be a string".into()),
            None if h.contains_key("file_name") || h.contains_key("file_size") => {
                return parse_put(h, "file_name", "file_size")
            }
            None => return Request::Invalid("missing \"cmd\"".into()),
        };
        let parsed = match cmd {
            "login" => match (string(h, "username"), string(h, "password")) {
                (Ok(username), Ok(password)) => Ok(Request::Login { username, password }),
                (Err(e), _) | (_, Err(e)) => Ok(Request::BadLogin(e)),
            },
            "quit" => Ok(Request::Quit),
            "pwd" => Ok(Request::Pwd),
            "quota" => Ok(Request::Quota),
            "cd" => string(h, "path").map(|path| Request::Cd { path }),
            "mkdir" => string(h, "path").map(|path| Request::Mkdir { path }),
            "rm" => string(h, "path").map(|path| Request::Rm { path }),
            "ls" => opt_string(h, "path").map(|path| Request::Ls { path }),
            "stat" => string(h, "filename").map(|filename| Request::Stat { filename }),
            "get" => (|| {
                Ok(Request::Get {
                    filename: string(h, "filename")?,
                    offset: opt_u64(h, "offset")?.unwrap_or(0),
                })
            })(),
            "put" => return parse_put(h, "filename", "filesize"),
            other => Err(format!("unknown command {other:?}")),
        };
        parsed.unwrap_or_else(Request::Invalid)
    }
}

/// A `put` header: the sizes must be usable (or the stream is lost); the name and checksum
/// are checked later, after which the body is read or discarded.
fn parse_put(h: &Map<String, Value>, name_key: &str, size_key: &str) -> Request {
    let filesize = match opt_u64(h, size_key) {
        Ok(Some(n)) => n,
        Ok(None) => return Request::Unframed(format!("put needs \"{size_key}\"")),
        Err(e) => return Request::Unframed(e),
    };
    let offset = match opt_u64(h, "offset") {
        Ok(k) => k.unwrap_or(0),
        Err(e) => return Request::Unframed(e),
    };
    if offset > filesize {
        return Request::Unframed(format!(
            "offset {offset} is past the end of a {filesize}-byte file"
        ));
    }
    let sha256 = match h.get("sha256") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_sha256_hex(s) => Ok(Some(s.to_ascii_lowercase())),
        Some(_) => Err("\"sha256\" must be 64 hex digits".to_string()),
    };
    let filename = string(h, name_key);
    let (filename, sha256) = match (filename, sha256) {
        (Ok(f), Ok(s)) => (Ok(f), s),
        (Err(e), _) | (_, Err(e)) => (Err(e), None),
    };
    Request::Put(Put {
        filename,
        filesize,
        offset,
        sha256,
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn string(h: &Map<String, Value>, key: &str) -> Result<String, String> {
    opt_string(h, key)?.ok_or_else(|| format!("missing \"{key}\""))
}

fn opt_string(h: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match h.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{key}\" must be a string")),
    }
}

fn opt_u64(h: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match h.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("\"{key}\" must be a non-negative integer")),
    }
}

/// `{"ok":true, ...fields}`.
pub fn ok(fields: Value) -> Value {
    let mut answer = json!({"ok": true});
    if let (Value::Object(a), Value::Object(f)) = (&mut answer, fields) {
        a.extend(f);
    }
    answer
}

/// The longest error message sent, in bytes: messages quote the client's paths, and an
/// answer must stay within the 65536-byte header limit.
const MAX_ERROR_LEN: usize = 1024;

/// `{"ok":false,"error":msg}`.
pub fn error(msg: impl std::fmt::Display) -> Value {
    let mut msg = msg.to_string();
    if msg.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("...");
    }
    json!({"ok": false, "error": msg})
}

/// Sends one answer header and flushes it.
pub fn send<W: Write + ?Sized>(w: &mut W, answer: &Value) -> io::Result<()> {
    CODEC.write_json_header(w, answer)?;
    w.flush()
}

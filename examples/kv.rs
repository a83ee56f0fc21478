//! A line-based key-value store, as a new user writes one: `SET key value`, `GET key`,
//! `DEL key`, `QUIT`; one reply line each. Lines are bounded (4 KiB), a line that is not
//! UTF-8 gets an error reply, and a reply leaves in one packet however it is written.
//!
//! ```sh
//! cargo run --example kv                       # listens on 127.0.0.1:8010
//! printf 'SET a 1\nGET a\nDEL a\nGET a\n' | nc -q1 127.0.0.1 8010
//! ```

mod common;

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use socketserver::{framing, StreamRequest};

/// The longest line served; a longer one is answered with an error and the connection closed.
const MAX_LINE: usize = 4096;

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("Line-based key-value server (default 127.0.0.1:8010)");
    let store = Arc::new(Mutex::new(HashMap::<String, String>::new()));
    common::serve_tcp(
        &args,
        common::Service::new(8010),
        move |req: &mut StreamRequest| {
            let mut buf = Vec::new();
            loop {
                let line = match framing::read_text_line(req, &mut buf, MAX_LINE) {
                    Ok(Some(Ok(line))) => line,
                    Ok(Some(Err(_))) => {
                        writeln!(req, "ERR not UTF-8")?;
                        continue;
                    }
                    Ok(None) => return Ok(()),
                    // Too long: the stream is inside that line, so answer and close.
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        return writeln!(req, "ERR {e}");
                    }
                    Err(e) => return Err(e),
                };
                let reply = {
                    let mut db = store.lock().unwrap_or_else(|e| e.into_inner());
                    let mut words = line.splitn(3, ' ');
                    match (words.next(), words.next(), words.next()) {
                        (Some("SET"), Some(k), Some(v)) => {
                            db.insert(k.to_owned(), v.to_owned());
                            "OK".to_owned()
                        }
                        (Some("GET"), Some(k), None) => db
                            .get(k)
                            .map_or("NOT_FOUND".to_owned(), |v| format!("VALUE {v}")),
                        (Some("DEL"), Some(k), None) => match db.remove(k) {
                            Some(_) => "DELETED".to_owned(),
                            None => "NOT_FOUND".to_owned(),
                        },
                        (Some("QUIT"), None, None) => return Ok(()),
                        _ => "ERR unknown command".to_owned(),
                    }
                };
                writeln!(req, "{reply}")?;
            }
        },
    )
}

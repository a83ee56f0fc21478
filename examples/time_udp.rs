//! The tutorial's UDP time server: each datagram is a `strftime` format (UTF-8), the reply is
//! the local time in that format; an empty datagram means `%Y-%m-%d %X`.
//!
//! Longer than the Python original because it never crashes on input: a format that is not
//! UTF-8, has an invalid specifier (`%Q`, a lone `%`) or is over 1024 bytes (the tutorial's
//! `bufsize`) gets a reply starting with `error`, and the server goes on.
//!
//! ```text
//! cargo run --example time_udp                  # listening on 127.0.0.1:9000
//! python3 -c "import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.sendto(b'%H:%M',('127.0.0.1',9000)); print(s.recv(1024))"
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`.

mod common;

use std::fmt::Write as _;
use std::io;

use socketserver::DatagramRequest;

/// The local time formatted with `format`, or the error to send back.
fn local_time(format: &[u8]) -> Result<String, &'static str> {
    let format = match format {
        b"" => "%Y-%m-%d %X",
        f if f.len() > 1024 => return Err("error: format longer than 1024 bytes"),
        f => std::str::from_utf8(f).map_err(|_| "error: format is not UTF-8")?,
    };
    let mut out = String::new();
    // `to_string()` would panic on an invalid specifier: `write!` reports it instead.
    write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| "error: invalid format")?;
    Ok(out)
}

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("The tutorial's UDP time server (default 127.0.0.1:9000)");
    common::serve_udp(&args, 9000, |req: &mut DatagramRequest| {
        let reply = local_time(req.packet()).unwrap_or_else(String::from);
        req.reply(reply.as_bytes())
    })
}

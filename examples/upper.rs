//! TCP upper-case server: writes back each chunk as it arrives, ASCII upper-cased
//! (`b"hello"` sent without a newline comes back as `b"HELLO"` at once).
//!
//! ```text
//! cargo run --release --example upper           # listening on 127.0.0.1:8002
//! python3 -c "import socket; s=socket.create_connection(('127.0.0.1',8002)); s.sendall(b'hello'); print(s.recv(1024))"
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`;
//! TLS (build with `--features tls`): `--tls-cert FILE --tls-key FILE`, and
//! `--tls-client-ca FILE` for client certificates (a SIGHUP restart reloads them).

mod common;

use std::io::{self, Write};

use socketserver::{Next, StreamRequest};

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("TCP upper-case server (default 127.0.0.1:8002)");
    common::serve_tcp_requests(
        &args,
        common::Service::new(8002),
        |req: &mut StreamRequest| {
            let data = req.recv()?;
            if data.is_empty() {
                return Ok(Next::Close);
            }
            req.write_all(&data.to_ascii_uppercase())?;
            Ok(Next::Continue)
        },
    )
}

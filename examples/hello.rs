//! The tutorial's hello server: `Welcome!` on connect, then `Hello, <chunk>!` for every chunk
//! received (one read of up to 1024 bytes, like the tutorial's `recv(1024)`).
//! The chunk `exit` (also `exit\n` or `exit\r\n`, for `nc` users) or EOF ends the connection.
//! Bytes are echoed as they are: no UTF-8 decoding is needed to greet them.
//!
//! ```text
//! cargo run --example hello                     # listening on 127.0.0.1:9999
//! python3 -c "import socket; s=socket.create_connection(('127.0.0.1',9999)); print(s.recv(1024)); s.send(b'michael'); print(s.recv(1024)); s.send(b'exit')"
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`;
//! TLS (build with `--features tls`): `--tls-cert FILE --tls-key FILE`, and
//! `--tls-client-ca FILE` for client certificates (a SIGHUP restart reloads them).

mod common;

use std::io::{self, Read, Write};

use socketserver::StreamRequest;

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("The tutorial's hello server (default 127.0.0.1:9999)");
    common::serve_tcp(
        &args,
        // One request per connection: 30 s for it to begin (`--idle-timeout`).
        common::Service::new(9999).idle_secs(30),
        |req: &mut StreamRequest| {
            req.write_all(b"Welcome!")?;
            let mut buf = [0; 1024];
            loop {
                let chunk = match req.read(&mut buf)? {
                    0 => return Ok(()),
                    n => &buf[..n],
                };
                if matches!(chunk, b"exit" | b"exit\n" | b"exit\r\n") {
                    return Ok(());
                }
                req.write_all(&[b"Hello, ", chunk, b"!"].concat())?;
            }
        },
    )
}

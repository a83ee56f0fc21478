//! TCP echo server: writes back every byte as it arrives.
//!
//! ```text
//! cargo run --release --example echo            # listening on 127.0.0.1:8001
//! python3 -c "import socket; s=socket.create_connection(('127.0.0.1',8001)); s.sendall(b'hi'); print(s.recv(1024))"
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`;
//! TLS (build with `--features tls`): `--tls-cert FILE --tls-key FILE`, and
//! `--tls-client-ca FILE` for client certificates (a SIGHUP restart reloads them).

mod common;

use std::io::{self, Write};

use socketserver::{Next, StreamRequest};

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("TCP echo server (default 127.0.0.1:8001)");
    // One request = what has arrived (Python's `conn.recv`); idle clients wait in the
    // event set, not on a thread.
    common::serve_tcp_requests(
        &args,
        common::Service::new(8001),
        |req: &mut StreamRequest| {
            let data = req.recv()?;
            if data.is_empty() {
                return Ok(Next::Close);
            }
            req.write_all(&data)?;
            Ok(Next::Continue)
        },
    )
}

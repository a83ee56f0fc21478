//! Framed echo server: every frame (a u32 big-endian length, then that many bytes: Python's
//! `struct.pack('!I', len(data)) + data`) comes back as the same frame, however the bytes
//! were split or glued on the way. A declared length over 1 MiB is logged as a warning and
//! closes that connection only (nothing of it is read or allocated).
//!
//! ```text
//! cargo run --example framed_echo               # listening on 127.0.0.1:8007
//! python3 -c "import socket,struct; s=socket.create_connection(('127.0.0.1',8007)); s.sendall(struct.pack('!I',2)+b'hi'); print(s.recv(1024))"
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`;
//! TLS (build with `--features tls`): `--tls-cert FILE --tls-key FILE`, and
//! `--tls-client-ca FILE` for client certificates (a SIGHUP restart reloads them).

mod common;

use std::io;

use socketserver::framing::{Codec, FrameError};
use socketserver::{Next, StreamRequest};

/// u32 big-endian prefix, frames of at most 1 MiB.
const FRAMES: Codec = Codec::new().max_frame_len(1024 * 1024);

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("Framed (u32 big-endian length) echo server (default 127.0.0.1:8007)");
    // One request = one frame (a partial frame is read within the request timeout).
    common::serve_tcp_requests(
        &args,
        common::Service::new(8007),
        |req: &mut StreamRequest| match FRAMES.read_frame(req) {
            Ok(Some(frame)) => {
                FRAMES.write_frame(req, &frame)?;
                Ok(Next::Continue)
            }
            Ok(None) => Ok(Next::Close),
            Err(e) if FrameError::from_io(&e).is_some() => {
                log::warn!("{}: {e}: closing the connection", req.peer_addr());
                Ok(Next::Close)
            }
            Err(e) => Err(e),
        },
    )
}

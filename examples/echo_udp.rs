//! UDP echo server: one reply datagram, the same bytes, per datagram.
//!
//! ```text
//! cargo run --release --example echo_udp        # listening on 127.0.0.1:8003
//! python3 -c "import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.sendto(b'hi',('127.0.0.1',8003)); print(s.recv(65535))"
//! ```

mod common;

use std::io;

use socketserver::DatagramRequest;

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("UDP echo server (default 127.0.0.1:8003)");
    common::serve_udp(&args, 8003, |req: &mut DatagramRequest| {
        let data = req.take_packet();
        req.reply(&data)
    })
}

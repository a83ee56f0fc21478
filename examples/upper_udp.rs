//! UDP upper-case server: one reply datagram per datagram, ASCII upper-cased.
//!
//! ```text
//! cargo run --release --example upper_udp       # listening on 127.0.0.1:8004
//! python3 -c "import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.sendto(b'hi',('127.0.0.1',8004)); print(s.recv(65535))"
//! ```

mod common;

use std::io;

use socketserver::DatagramRequest;

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("UDP upper-case server (default 127.0.0.1:8004)");
    common::serve_udp(&args, 8004, |req: &mut DatagramRequest| {
        let mut data = req.take_packet();
        data.make_ascii_uppercase();
        req.reply(&data)
    })
}

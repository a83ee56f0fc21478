//! A UDP uptime and echo service: the datagram `uptime` is answered with the server's
//! uptime, anything else is echoed back behind `echo: ` (one datagram, gathered with
//! `reply_vectored`, no copy).
//!
//! ```sh
//! cargo run --example uptime_udp               # listens on 127.0.0.1:8011
//! python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b'uptime', ('127.0.0.1', 8011)); print(s.recv(100))"
//! ```

mod common;

use std::io::{self, IoSlice};
use std::time::Instant;

use socketserver::DatagramRequest;

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("UDP uptime and echo service (default 127.0.0.1:8011)");
    let started = Instant::now();
    common::serve_udp(&args, 8011, move |req: &mut DatagramRequest| {
        if req.packet() == b"uptime" {
            let up = format!("up {:.3} s", started.elapsed().as_secs_f64());
            return req.reply(up.as_bytes());
        }
        let packet = req.take_packet();
        req.reply_vectored(&[IoSlice::new(b"echo: "), IoSlice::new(&packet)])
    })
}

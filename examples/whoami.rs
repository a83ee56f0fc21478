//! `whoami` server: answers each connection with one JSON line naming the client as the
//! server sees it, then closes. Behind a load balancer (`--proxy-protocol`) the peer is the
//! real client; `pid` tells which server process answered (restarts, `--reuseport`).
//!
//! ```text
//! cargo run --release --example whoami          # listening on 127.0.0.1:8009
//! nc 127.0.0.1 8009                              # {"peer":"127.0.0.1:51234","local":"127.0.0.1:8009","pid":4242,"tls":null}
//! ```
//! Options: the shared ones (`--addr`, `--mode`, `--workers`, `--grace`, `--proxy-protocol`,
//! `--trusted-proxy CIDR`, `--reuseport`; with `--features tls`, `--tls-cert FILE
//! --tls-key FILE`, and then `"tls":{"version":..,"sni":..,"alpn":..}` in the line), and
//! `--hold-ms N`: after answering, keep the
//! connection open up to N ms until the client closes it (a long-lived connection, to watch
//! a restart drain). Default 0.

mod common;

use std::io::{self, Read, Write};
use std::time::Duration;

use clap::Parser;
use socketserver::StreamRequest;

/// whoami server (default 127.0.0.1:8009): one JSON line per connection, then close
#[derive(Parser)]
#[command(name = "whoami")]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// After answering, keep the connection open up to this many ms (until the client
    /// closes it).
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
}

/// `{"version":..,"sni":..,"alpn":..}` of the TLS session, or null without TLS.
#[cfg(feature = "tls")]
fn tls_facts(req: &StreamRequest) -> serde_json::Value {
    match req.tls_info() {
        Some(i) => serde_json::json!({
            "version": i.version(),
            "sni": i.sni(),
            "alpn": i.alpn().map(|a| String::from_utf8_lossy(a).into_owned()),
        }),
        None => serde_json::Value::Null,
    }
}

#[cfg(not(feature = "tls"))]
fn tls_facts(_: &StreamRequest) -> serde_json::Value {
    serde_json::Value::Null
}

fn main() -> io::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let hold = Duration::from_millis(cli.hold_ms);
    common::serve_tcp(
        &cli.server,
        // The answer leaves at connect; nothing is read after it but the hold.
        common::Service::new(8009).idle_secs(10),
        move |req: &mut StreamRequest| {
            let line = serde_json::json!({
                "peer": req.peer_addr().to_string(),
                "local": req.local_addr()?.to_string(),
                "pid": std::process::id(),
                "tls": tls_facts(req),
            });
            req.write_all(format!("{line}\n").as_bytes())?;
            req.flush()?;
            if !hold.is_zero() {
                // On the raw socket: a long-lived connection is a request in flight, which a
                // shutdown (or restart) lets finish within the grace period.
                let stream = req.stream();
                stream.set_read_timeout(Some(hold))?;
                let mut buf = [0u8; 64];
                match (&*stream).read(&mut buf) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        },
    )
}

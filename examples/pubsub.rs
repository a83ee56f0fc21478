//! A publish/subscribe broker over TCP (default 127.0.0.1:8010), TLS included.
//!
//! Lines of UTF-8 ending in `\n` (a `\r` before it is ignored), at most 64 KiB:
//!
//! * `SUB <topic>` -> `OK SUB <topic>`; `UNSUB <topic>` -> `OK UNSUB <topic>`;
//! * `PUB <topic> <text>` -> `OK PUB <n>`, n being the subscribers it was queued for; each of
//!   them receives `MSG <topic> <text>`;
//! * a topic is 1 to 64 characters of `A-Z a-z 0-9 . _ -`; anything else gets
//!   `ERROR <reason>` and the connection stays; a line over 64 KiB gets
//!   `ERROR line too long` and the connection is closed;
//! * a subscriber receives one publisher's messages in the order published, and its own
//!   replies and `MSG` lines in order; a publisher never waits for a subscriber: a
//!   subscriber whose backlog passes `--max-backlog` bytes (default 8 MiB) is disconnected;
//! * idle subscribers hold no thread (in the default pool mode, which runs at most 32
//!   workers, however many subscribers connect at once); at shutdown each gets
//!   `BYE server shutting down` before its connection closes.
//!
//! ```text
//! cargo run --example pubsub                    # listening on 127.0.0.1:8010
//! nc 127.0.0.1 8010                             # SUB news
//! nc 127.0.0.1 8010                             # PUB news hello
//! ```
//! Modes: `--mode pool` (the default) or `--mode threading`; `single` (one client at a time)
//! and `fork` (a broker per client) are refused.

mod common;

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;

use clap::Parser;
use socketserver::push::{PushLimits, Pusher, Topics};
use socketserver::{framing, Next, RequestHandler, StreamRequest};

const MAX_LINE: usize = 64 * 1024;
/// The most threads the pool serves with.
const POOL_LIMIT: usize = 32;

#[derive(Parser)]
#[command(
    about = "A publish/subscribe broker: SUB, UNSUB, PUB lines (default 127.0.0.1:8010)",
    after_help = "Modes: pool (default) or threading. single would serve one client at a \
                  time and fork would give each client a broker of its own: both are refused."
)]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// Most bytes waiting for one subscriber; past it the subscriber is disconnected.
    #[arg(long, default_value_t = 8 << 20)]
    max_backlog: usize,
}

/// One client: its subscriptions, and its pusher once it subscribed.
struct Client {
    topics: Arc<Topics>,
    limits: PushLimits,
    me: Option<Pusher>,
    subs: HashSet<String>,
    buf: Vec<u8>,
}

fn valid_topic(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const BAD_TOPIC: &str = "ERROR a topic is 1-64 characters of A-Z a-z 0-9 . _ -";

impl RequestHandler for Client {
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        let line = match framing::read_text_line(req, &mut self.buf, MAX_LINE) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(_))) => {
                writeln!(req, "ERROR line is not UTF-8")?;
                return Ok(Next::Continue);
            }
            Ok(None) => return Ok(Next::Close),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                writeln!(req, "ERROR line too long")?;
                return Ok(Next::Close);
            }
            Err(e) => return Err(e),
        };
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "SUB" | "UNSUB" if !valid_topic(rest) => writeln!(req, "{BAD_TOPIC}")?,
            "SUB" => {
                let me = self.me.get_or_insert_with(|| {
                    let me = req.pusher();
                    me.set_limits(self.limits);
                    me
                });
                self.topics.subscribe(rest.to_owned(), me);
                self.subs.insert(rest.to_owned());
                writeln!(req, "OK SUB {rest}")?;
            }
            "UNSUB" => {
                if let Some(me) = &self.me {
                    self.topics.unsubscribe(rest, me);
                }
                self.subs.remove(rest);
                writeln!(req, "OK UNSUB {rest}")?;
            }
            "PUB" => match rest.split_once(' ') {
                Some((topic, text)) if valid_topic(topic) => {
                    let n = self
                        .topics
                        .publish(topic, format!("MSG {topic} {text}\n").as_bytes());
                    writeln!(req, "OK PUB {n}")?;
                }
                Some(_) => writeln!(req, "{BAD_TOPIC}")?,
                None => writeln!(req, "ERROR usage: PUB <topic> <text>")?,
            },
            _ => writeln!(req, "ERROR unknown command (SUB, UNSUB or PUB)")?,
        }
        Ok(Next::Continue)
    }

    fn on_shutdown(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        writeln!(req, "BYE server shutting down")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(me) = &self.me {
            for topic in &self.subs {
                self.topics.unsubscribe(topic.as_str(), me);
            }
        }
    }
}

fn main() -> io::Result<()> {
    common::init_logging();
    let mut cli = Cli::parse();
    if matches!(cli.server.mode.name(), "single" | "fork") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pubsub shares its topics between all clients: use --mode pool or --mode threading",
        ));
    }
    if cli.server.mode.name() == "pool" {
        // Subscribers that connect in a burst are each waited for a moment after their
        // reply (the pool's busy-client window), by a worker each: bounded, the pool parks
        // them instead, and 2 000 subscribers stay on a few dozen threads.
        cli.server.mode = cli.server.mode.clone().limit(POOL_LIMIT);
    }
    let topics = Arc::new(Topics::new());
    let limits = PushLimits::default().max_backlog(cli.max_backlog);
    common::serve_tcp_requests_with(
        &cli.server,
        // Subscribers wait for messages, silent, for long: an hour; keepalive finds the
        // peers that vanished meanwhile (`--idle-timeout`, `--keepalive`).
        common::Service::new(8010).idle_secs(3600),
        move || Client {
            topics: Arc::clone(&topics),
            limits,
            me: None,
            subs: HashSet::new(),
            buf: Vec::new(),
        },
    )
}

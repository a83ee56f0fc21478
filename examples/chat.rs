//! A line-based chat room over TCP (UTF-8, lines end with `\n`; `\r\n` is accepted), TLS
//! included (`--tls-cert FILE --tls-key FILE`).
//!
//! * A client's first line is its nickname: 1 to 32 characters, no whitespace, control
//!   characters or commas, not already taken. Otherwise the client gets
//!   `error: <why>, choose another nickname` and its next line is tried instead.
//! * The others then get `* NAME joined`; each later line goes to every other client as
//!   `NAME: text` (empty lines are ignored); `/who` answers the sender alone with
//!   `* present: NAME, NAME, ...` (in joining order); `/quit` or EOF leaves, and the others
//!   get `* NAME left`. Another line starting with `/` gets `error: unknown command ...`.
//! * A line that is not UTF-8 gets `error: line is not UTF-8` and is dropped. A line longer
//!   than 4096 bytes (without its end) gets `error: line longer than 4096 bytes` and the
//!   connection is closed: lines are read with a limit, so no client makes the server
//!   buffer more than that.
//! * Lines reach the others through each one's [`Pusher`]: the crate writes them, in the
//!   one order of the room, as each client reads, with no thread per client (an idle client
//!   holds no thread in the pool mode). Each client's backlog holds at most
//!   `--max-backlog` bytes (default 4 MiB); a sender whose line does not fit waits for that
//!   client to take bytes, so the room goes at the pace of its slowest reader and every
//!   reader gets every line. A reader is disconnected (the others get `* NAME left`) only
//!   when it takes no bytes from its socket for `--stall-timeout` seconds (default 10)
//!   while bytes wait for it: a client that keeps reading stays, however fast the others
//!   send.
//! * At shutdown (SIGINT/SIGTERM) every client gets `* server shutting down`, then EOF; from
//!   then on no sender waits (a reader whose backlog is full misses the last lines).
//!
//! Modes: `--mode pool` (the default) or `--mode threading`, with or without TLS. The room
//! is state shared by all clients, which needs them served at once by threads of one
//! process: `single` would serve one client at a time (a room of one) and `fork` would give
//! each client a room of its own, so both are refused with an error.
//!
//! ```text
//! cargo run --example chat                      # listening on 127.0.0.1:8006
//! nc 127.0.0.1 8006                             # in two terminals: type a nickname, then chat
//! ```
//! Options: `--addr HOST:PORT`, `--mode threading|pool`, `--workers N`, `--stall-timeout
//! SECONDS`, `--max-backlog BYTES`, `--tls-cert FILE --tls-key FILE`.

mod common;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::Parser;
use socketserver::push::{Overflow, PushLimits, Pusher};
use socketserver::{framing, Next, RequestHandler, StreamRequest};

/// The longest line accepted, in bytes, without its `\n` or `\r\n`.
const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;

#[derive(Parser)]
#[command(
    about = "A line-based TCP chat room (default 127.0.0.1:8006)",
    after_help = "Modes: pool (default) or threading, with or without TLS. single would serve \
                  one client at a time (a room of one) and fork would give each client a room \
                  of its own: both are refused."
)]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// Seconds a client may take no bytes from its socket, while lines wait for it, before
    /// it is disconnected.
    #[arg(long, default_value_t = 10.0)]
    stall_timeout: f64,
    /// Most bytes waiting for one client; a sender whose line does not fit waits.
    #[arg(long, default_value_t = 4 << 20)]
    max_backlog: usize,
}

/// Locks `m`, even if a thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Member {
    name: String,
    pusher: Pusher,
}

/// Everyone present, by joining number.
#[derive(Default)]
struct Room {
    members: Mutex<(u64, BTreeMap<u64, Member>)>,
    /// Held while a line is pushed to everyone, so that every reader gets the room's lines
    /// in the same order. A sender waiting for a slow reader holds it: the room goes at the
    /// pace of its slowest reader.
    order: Mutex<()>,
}

impl Room {
    /// Seats `name` and tells the others; the error says why the name is refused.
    fn join(self: &Arc<Self>, name: &str, pusher: Pusher) -> Result<Seat, String> {
        if name.is_empty() || name.chars().count() > MAX_NICK {
            return Err(format!("a nickname has 1 to {MAX_NICK} characters"));
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err("a nickname has no spaces, control characters or commas".into());
        }
        let id = {
            let mut guard = lock(&self.members);
            let (next, members) = &mut *guard;
            if members.values().any(|m| m.name == name) {
                return Err(format!("nickname {name} is taken"));
            }
            let id = *next;
            *next += 1;
            let name = name.into();
            members.insert(id, Member { name, pusher });
            id
        };
        self.broadcast(id, &format!("* {name} joined"));
        Ok(Seat {
            room: Arc::clone(self),
            id,
        })
    }

    fn say(&self, from: u64, text: &str) {
        let name = lock(&self.members).1.get(&from).map(|m| m.name.clone());
        if let Some(name) = name {
            self.broadcast(from, &format!("{name}: {text}"));
        }
    }

    fn who(&self) -> String {
        let names: Vec<_> = (lock(&self.members).1.values())
            .map(|m| m.name.clone())
            .collect();
        format!("* present: {}", names.join(", "))
    }

    /// Pushes `line` to every member but `from`, waiting for those whose backlog is full
    /// (their limits say so); a member that stalls is disconnected and the others are told
    /// it left.
    fn broadcast(&self, from: u64, line: &str) {
        let line = format!("{line}\n");
        let gone: Vec<u64> = {
            let _order = lock(&self.order);
            let targets: Vec<(u64, Pusher)> = (lock(&self.members).1.iter())
                .filter(|(&id, _)| id != from)
                .map(|(&id, m)| (id, m.pusher.clone()))
                .collect();
            // A push fails when the member is gone (stalled, closed); a line dropped at
            // shutdown leaves the member in.
            targets
                .into_iter()
                .filter(|(_, p)| p.push(line.as_bytes()).is_err() && p.is_closed())
                .map(|(id, _)| id)
                .collect()
        };
        for id in gone {
            self.disconnect(id);
        }
    }

    fn disconnect(&self, id: u64) {
        let Some(m) = lock(&self.members).1.remove(&id) else {
            return; // already gone
        };
        log::warn!("{}: not reading, disconnected", m.name);
        m.pusher.close();
        self.broadcast(id, &format!("* {} left", m.name));
    }
}

/// A member's place in the room; leaving it (however the connection ends) tells the others.
struct Seat {
    room: Arc<Room>,
    id: u64,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let name = lock(&self.room.members).1.remove(&self.id).map(|m| m.name);
        if let Some(name) = name {
            self.room.broadcast(self.id, &format!("* {name} left"));
        }
    }
}

/// One client: a nickname, then lines, one request each.
struct Client {
    room: Arc<Room>,
    limits: PushLimits,
    seat: Option<Seat>,
    buf: Vec<u8>,
}

impl RequestHandler for Client {
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        let line = match framing::read_text_line(req, &mut self.buf, MAX_LINE) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(_))) => {
                writeln!(req, "error: line is not UTF-8")?;
                return Ok(Next::Continue);
            }
            Ok(None) => return Ok(Next::Close),
            // Too long: the stream is inside that line, so answer and close.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                writeln!(req, "error: {e}")?;
                return Ok(Next::Close);
            }
            Err(e) => return Err(e),
        };
        let Some(seat) = &self.seat else {
            // The nickname. Lines reach this client through its pusher from now on.
            let pusher = req.pusher();
            pusher.set_limits(self.limits);
            match self.room.join(line.trim(), pusher) {
                Ok(seat) => self.seat = Some(seat),
                Err(why) => writeln!(req, "error: {why}, choose another nickname")?,
            }
            return Ok(Next::Continue);
        };
        match line.trim_end() {
            "/quit" => return Ok(Next::Close),
            "/who" => writeln!(req, "{}", self.room.who())?,
            "" => {}
            cmd if cmd.starts_with('/') => {
                writeln!(req, "error: unknown command (try /who or /quit)")?
            }
            text => self.room.say(seat.id, text),
        }
        Ok(Next::Continue)
    }

    fn on_shutdown(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        writeln!(req, "* server shutting down")
    }
}

fn main() -> io::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    if matches!(cli.server.mode.name(), "single" | "fork") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "chat shares one room between all clients: use --mode pool or --mode threading",
        ));
    }
    if !(cli.stall_timeout > 0.0 && cli.stall_timeout <= 86_400.0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--stall-timeout takes seconds, more than 0 and at most 86400",
        ));
    }
    let stall = Duration::from_secs_f64(cli.stall_timeout);
    let limits = PushLimits::default()
        .max_backlog(cli.max_backlog)
        .overflow(Overflow::Wait(stall))
        .stall_timeout(stall);
    let room = Arc::new(Room::default());
    common::serve_tcp_requests_with(
        &cli.server,
        // People sit in a room reading for long: an hour of silence; keepalive finds
        // the peers that vanished meanwhile (`--idle-timeout`, `--keepalive`).
        common::Service::new(8006).idle_secs(3600),
        move || Client {
            room: Arc::clone(&room),
            limits,
            seat: None,
            buf: Vec::new(),
        },
    )
}

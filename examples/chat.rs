//! A line-based chat room over TCP (UTF-8, lines end with `\n`; `\r\n` is accepted).
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
//! * Every client has a backlog of lines waiting for it, written by a thread of its own, of
//!   at most `--max-backlog` bytes (default 4 MiB). A sender whose line does not fit waits
//!   for that client to take bytes, so the room goes at the pace of its slowest reader and
//!   every reader gets every line, in one order for all. A reader is disconnected (the
//!   others get `* NAME left`) only when it takes no bytes from its socket for
//!   `--stall-timeout` seconds (default 10) while bytes wait for it: a client that keeps
//!   reading stays, however fast the others send.
//! * At shutdown (SIGINT/SIGTERM) every client gets `* server shutting down`, then EOF; from
//!   then on no sender waits (a reader whose backlog is full misses the last lines).
//!
//! Modes: `--mode pool` (the default) or `--mode threading`. The room is state shared by all
//! clients, which needs them served at once by threads of one process: `single` would serve
//! one client at a time (a room of one) and `fork` would give each client a room of its own,
//! so both are refused with an error.
//!
//! It is longer than a Python chat sketch because it is safe: bounded lines, bounded
//! backlogs, a stalled client cut off instead of stalling the room forever, and every
//! thread ends (the writer is joined when its client leaves; a handler waiting for its
//! client's next line is marked idle, so shutdown ends the wait at once).
//!
//! ```text
//! cargo run --example chat                      # listening on 127.0.0.1:8006
//! nc 127.0.0.1 8006                             # in two terminals: type a nickname, then chat
//! ```
//! Options: `--addr HOST:PORT`, `--mode threading|pool`, `--workers N`, `--stall-timeout
//! SECONDS`, `--max-backlog BYTES`.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use socketserver::{Stream, StreamRequest};

/// The longest line accepted, in bytes, without its `\n` or `\r\n`.
const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;
/// The most bytes a writer hands to its socket in one call.
const BATCH: usize = 64 * 1024;
/// How often a sender waiting for a slow reader checks for shutdown.
const TICK: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(about = "A line-based TCP chat room (default 127.0.0.1:8006)")]
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

/// The bounds every client's backlog is held to.
#[derive(Clone, Copy)]
struct Limits {
    stall: Duration,
    max_backlog: usize,
}

/// Locks `m`, even if a thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lines waiting for one client, shared by the senders and the client's writer thread.
struct Outbox {
    state: Mutex<Backlog>,
    /// Signalled when bytes leave (a waiting sender may go on) or the writer gives up.
    room: Condvar,
    /// Signalled when lines arrive or the client leaves (the writer wakes).
    ready: Condvar,
    limits: Limits,
}

/// One client's waiting lines and how its socket is keeping up.
struct Backlog {
    lines: VecDeque<Arc<str>>,
    /// Bytes queued or taken by the writer but not yet accepted by the socket.
    bytes: usize,
    /// When the socket last accepted bytes, or when bytes began to wait.
    last_progress: Instant,
    /// The client left: the writer sends what is queued and ends.
    closed: bool,
    /// The writer gave up (stalled client or a failed write): nothing more is queued.
    dead: bool,
}

impl Outbox {
    fn new(limits: Limits) -> Outbox {
        Outbox {
            state: Mutex::new(Backlog {
                lines: VecDeque::new(),
                bytes: 0,
                last_progress: Instant::now(),
                closed: false,
                dead: false,
            }),
            room: Condvar::new(),
            ready: Condvar::new(),
            limits,
        }
    }

    /// Queues `line`, waiting while the backlog is full for as long as the client keeps
    /// taking bytes. The error says why the client is gone. Once `stopping` is set nobody
    /// waits: a line that does not fit is dropped.
    fn push(&self, line: &Arc<str>, stopping: &AtomicBool) -> Result<(), &'static str> {
        let mut s = lock(&self.state);
        loop {
            if s.dead || s.closed {
                return Err("connection lost");
            }
            if s.bytes == 0 {
                s.last_progress = Instant::now();
            }
            if s.bytes == 0 || s.bytes + line.len() <= self.limits.max_backlog {
                s.bytes += line.len();
                s.lines.push_back(Arc::clone(line));
                self.ready.notify_one();
                return Ok(());
            }
            if stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            let stalled_at = s.last_progress + self.limits.stall;
            let now = Instant::now();
            if now >= stalled_at {
                s.dead = true;
                self.ready.notify_all();
                return Err("not reading");
            }
            s = (self.room)
                .wait_timeout(s, (stalled_at - now).min(TICK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The client left: no more lines; the writer sends the rest and ends.
    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    /// For the writer: waits for lines and moves them into `buf` (up to `BATCH` bytes, at
    /// least one line); `false` when there is nothing more to write.
    fn next_batch(&self, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        let mut s = lock(&self.state);
        while s.lines.is_empty() && !s.closed && !s.dead {
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.dead {
            return false;
        }
        while let Some(line) = s.lines.front() {
            if !buf.is_empty() && buf.len() + line.len() > BATCH {
                break;
            }
            buf.extend_from_slice(line.as_bytes());
            s.lines.pop_front();
        }
        !buf.is_empty()
    }

    /// For the writer: the socket took `n` bytes.
    fn wrote(&self, n: usize) {
        let mut s = lock(&self.state);
        s.bytes = s.bytes.saturating_sub(n);
        s.last_progress = Instant::now();
        self.room.notify_all();
    }

    /// For the writer: it gives up; waiting senders go on without this client.
    fn fail(&self) {
        lock(&self.state).dead = true;
        self.room.notify_all();
    }
}

/// The writer thread: sends the client's backlog until the client leaves or a write fails.
/// Its socket's write timeout is the stall timeout: a write that takes no bytes for that
/// long fails, and the client is disconnected.
fn write_queue(mut stream: Stream, outbox: &Outbox, peer: &str) {
    let mut buf = Vec::new();
    while outbox.next_batch(&mut buf) {
        let mut done = 0;
        while done < buf.len() {
            match stream.write(&buf[done..]) {
                Ok(n) if n > 0 => {
                    done += n;
                    outbox.wrote(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => {
                    match other {
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            let stall = outbox.limits.stall;
                            log::warn!("{peer}: took no bytes for {stall:?}, disconnected");
                        }
                        other => log::debug!("{peer}: write failed: {other:?}"),
                    }
                    outbox.fail();
                    // Make the reader end too; the room then drops this client.
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

struct Member {
    name: String,
    outbox: Arc<Outbox>,
    /// Kept to disconnect the client when it stalls.
    stream: Stream,
}

/// Everyone present, by joining number.
#[derive(Default)]
struct Room {
    members: Mutex<(u64, BTreeMap<u64, Member>)>,
    /// Held while a line is queued for everyone, so that every reader gets the room's lines
    /// in the same order. A sender waiting for a slow reader holds it: the room goes at the
    /// pace of its slowest reader.
    order: Mutex<()>,
    /// Shutdown has begun: nobody waits for a full backlog any more.
    stopping: AtomicBool,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, (u64, BTreeMap<u64, Member>)> {
        lock(&self.members)
    }

    /// Seats `name` and tells the others; the error says why the name is refused.
    fn join(&self, name: &str, outbox: &Arc<Outbox>, stream: Stream) -> Result<Seat<'_>, String> {
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
            let mut guard = self.lock();
            let (next, members) = &mut *guard;
            if members.values().any(|m| m.name == name) {
                return Err(format!("nickname {name} is taken"));
            }
            let id = *next;
            *next += 1;
            let outbox = Arc::clone(outbox);
            let name = name.into();
            members.insert(
                id,
                Member {
                    name,
                    outbox,
                    stream,
                },
            );
            id
        };
        self.broadcast(id, &format!("* {name} joined"));
        Ok(Seat { room: self, id })
    }

    fn say(&self, from: u64, text: &str) {
        let name = self.lock().1.get(&from).map(|m| m.name.clone());
        if let Some(name) = name {
            self.broadcast(from, &format!("{name}: {text}"));
        }
    }

    fn who(&self) -> String {
        let names: Vec<_> = self.lock().1.values().map(|m| m.name.clone()).collect();
        format!("* present: {}", names.join(", "))
    }

    /// Queues `line` for every member but `from`, waiting for those whose backlog is full;
    /// a member that stalls is disconnected and the others are told it left.
    fn broadcast(&self, from: u64, line: &str) {
        let line: Arc<str> = format!("{line}\n").into();
        let gone: Vec<(u64, &str)> = {
            let _order = lock(&self.order);
            let targets: Vec<(u64, Arc<Outbox>)> = (self.lock().1.iter())
                .filter(|(&id, _)| id != from)
                .map(|(&id, m)| (id, Arc::clone(&m.outbox)))
                .collect();
            targets
                .into_iter()
                .filter_map(|(id, out)| out.push(&line, &self.stopping).err().map(|e| (id, e)))
                .collect()
        };
        for (id, why) in gone {
            self.disconnect(id, why);
        }
    }

    fn disconnect(&self, id: u64, why: &str) {
        let Some(m) = self.lock().1.remove(&id) else {
            return; // already gone
        };
        log::warn!("{}: {why}, disconnected", m.name);
        let _ = m.stream.shutdown(Shutdown::Both);
        self.broadcast(id, &format!("* {} left", m.name));
    }
}

/// A member's place in the room; leaving it (however the handler ends) tells the others.
struct Seat<'a> {
    room: &'a Room,
    id: u64,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let name = self.room.lock().1.remove(&self.id).map(|m| m.name);
        if let Some(name) = name {
            self.room.broadcast(self.id, &format!("* {name} left"));
        }
    }
}

/// Queues a line for this client alone (waiting, like any sender, while its backlog is
/// full); an error ends its connection.
fn tell(room: &Room, outbox: &Outbox, line: &str) -> io::Result<()> {
    let line: Arc<str> = format!("{line}\n").into();
    outbox
        .push(&line, &room.stopping)
        .map_err(|why| io::Error::other(format!("client {why}")))
}

/// Reads the next line (without its end) with a length limit; `None` when the client is
/// gone, sent an over-long line, or the server is shutting down.
fn next_line(req: &mut StreamRequest, room: &Room, out: &Outbox) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    loop {
        // Between lines (replies go out through the writer thread, not through `req`): a
        // wait for the next line ends with EOF at shutdown.
        req.mark_idle();
        let left = (MAX_LINE + 2 - buf.len()) as u64; // the line, "\r\n"
        Read::take(&mut *req, left).read_until(b'\n', &mut buf)?;
        if buf.is_empty() {
            if req.is_shutting_down() {
                room.stopping.store(true, Ordering::Relaxed);
                let _ = tell(room, out, "* server shutting down");
            }
            return Ok(None);
        }
        // A line, the last one before EOF, or MAX_LINE + 2 bytes without an end.
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            tell(
                room,
                out,
                &format!("error: line longer than {MAX_LINE} bytes"),
            )?;
            return Ok(None);
        }
        match std::str::from_utf8(line) {
            Ok(text) => return Ok(Some(text.to_string())),
            Err(_) => tell(room, out, "error: line is not UTF-8")?,
        }
        buf.clear();
    }
}

/// One client: nickname, then lines until it leaves.
fn chat(req: &mut StreamRequest, room: &Room, out: &Arc<Outbox>) -> io::Result<()> {
    let seat = loop {
        let Some(name) = next_line(req, room, out)? else {
            return Ok(());
        };
        match room.join(name.trim(), out, req.stream().try_clone()?) {
            Ok(seat) => break seat,
            Err(why) => tell(room, out, &format!("error: {why}, choose another nickname"))?,
        }
    };
    while let Some(line) = next_line(req, room, out)? {
        match line.trim_end() {
            "/quit" => break,
            "/who" => tell(room, out, &room.who())?,
            "" => {}
            cmd if cmd.starts_with('/') => {
                tell(room, out, "error: unknown command (try /who or /quit)")?
            }
            text => room.say(seat.id, text),
        }
    }
    Ok(())
}

fn serve_client(req: &mut StreamRequest, room: &Room, limits: Limits) -> io::Result<()> {
    let stream = req.stream().try_clone()?;
    // A write that takes no bytes for the stall timeout fails: the client is gone.
    stream.set_write_timeout(Some(limits.stall))?;
    let outbox = Arc::new(Outbox::new(limits));
    let writer = {
        let outbox = Arc::clone(&outbox);
        let peer = req.peer_addr().to_string();
        thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || write_queue(stream, &outbox, &peer))?
    };
    let result = chat(req, room, &outbox);
    if result.is_err() {
        // Unblock a writer stuck on a client that reads nothing.
        let _ = req.stream().shutdown(Shutdown::Both);
    }
    // The seat is gone: the writer sends what is left and ends.
    outbox.close();
    let _ = writer.join();
    result
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
    if cli.server.tls_enabled() {
        // Each client's lines are written by a thread of its own through a clone of the
        // socket; a TLS session has one owner (the handler), so chat cannot encrypt them.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "chat writes from a thread per client, which TLS does not allow: run it without --tls-cert",
        ));
    }
    if !(cli.stall_timeout > 0.0 && cli.stall_timeout <= 86_400.0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--stall-timeout takes seconds, more than 0 and at most 86400",
        ));
    }
    let limits = Limits {
        stall: Duration::from_secs_f64(cli.stall_timeout),
        max_backlog: cli.max_backlog,
    };
    let room = Arc::new(Room::default());
    common::serve_tcp(
        &cli.server,
        // People sit in a room reading for long: an hour of silence; keepalive finds
        // the peers that vanished meanwhile (`--idle-timeout`, `--keepalive`).
        common::Service::new(8006).idle_secs(3600),
        move |req: &mut StreamRequest| serve_client(req, &room, limits),
    )
}

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
//! * Each client has a queue of 256 outgoing lines, written by a thread of its own: a client
//!   that stops reading is disconnected (`* NAME left`) when its queue fills, and never slows
//!   the others down.
//! * At shutdown (SIGINT/SIGTERM) every client gets `* server shutting down`, then EOF.
//!
//! Modes: `--mode pool` (the default) or `--mode threading`. The room is state shared by all
//! clients, which needs them served at once by threads of one process: `single` would serve
//! one client at a time (a room of one) and `fork` would give each client a room of its own,
//! so both are refused with an error.
//!
//! It is longer than a Python chat sketch because it is safe: bounded lines, bounded queues,
//! a slow client cut off instead of stalling the room, and every thread ends (the writer is
//! joined when its client leaves; a handler waiting for its client's next line is marked
//! idle, so shutdown ends the wait at once).
//!
//! ```text
//! cargo run --example chat                      # listening on 127.0.0.1:8006
//! nc 127.0.0.1 8006                             # in two terminals: type a nickname, then chat
//! ```
//! Options: `--addr HOST:PORT`, `--mode threading|pool`, `--workers N`.

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use socketserver::{Stream, StreamRequest};

/// The longest line accepted, in bytes, without its `\n` or `\r\n`.
const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;
/// Outgoing lines a client may have waiting before it is disconnected.
const QUEUE: usize = 256;
/// A client whose socket accepts nothing for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Member {
    name: String,
    queue: Sender<Arc<str>>,
    /// Kept to disconnect the client when its queue is full.
    stream: Stream,
}

/// Everyone present, by joining number.
#[derive(Default)]
struct Room {
    members: Mutex<(u64, BTreeMap<u64, Member>)>,
}

impl Room {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Member>)> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seats `name` and tells the others; the error says why the name is refused.
    fn join(
        &self,
        name: &str,
        queue: &Sender<Arc<str>>,
        stream: Stream,
    ) -> Result<Seat<'_>, String> {
        if name.is_empty() || name.chars().count() > MAX_NICK {
            return Err(format!("a nickname has 1 to {MAX_NICK} characters"));
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err("a nickname has no spaces, control characters or commas".into());
        }
        let mut guard = self.lock();
        let (next, members) = &mut *guard;
        if members.values().any(|m| m.name == name) {
            return Err(format!("nickname {name} is taken"));
        }
        let id = *next;
        *next += 1;
        let queue = queue.clone();
        members.insert(
            id,
            Member {
                name: name.into(),
                queue,
                stream,
            },
        );
        broadcast(members, id, &format!("* {name} joined"));
        Ok(Seat { room: self, id })
    }

    fn say(&self, from: u64, text: &str) {
        let (_, members) = &mut *self.lock();
        if let Some(name) = members.get(&from).map(|m| m.name.clone()) {
            broadcast(members, from, &format!("{name}: {text}"));
        }
    }

    fn who(&self) -> String {
        let names: Vec<_> = self.lock().1.values().map(|m| m.name.clone()).collect();
        format!("* present: {}", names.join(", "))
    }
}

/// A member's place in the room; leaving it (however the handler ends) tells the others.
struct Seat<'a> {
    room: &'a Room,
    id: u64,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let (_, members) = &mut *self.room.lock();
        if let Some(m) = members.remove(&self.id) {
            broadcast(members, self.id, &format!("* {} left", m.name));
        }
    }
}

/// Queues `line` for every member but `from`, without ever blocking: a member whose queue is
/// full (or whose writer is gone) is disconnected and the others are told it left.
fn broadcast(members: &mut BTreeMap<u64, Member>, from: u64, line: &str) {
    let line: Arc<str> = format!("{line}\n").into();
    let full: Vec<u64> = members
        .iter()
        .filter(|(&id, m)| id != from && m.queue.try_send(Arc::clone(&line)).is_err())
        .map(|(&id, _)| id)
        .collect();
    for id in full {
        if let Some(m) = members.remove(&id) {
            log::warn!("{}: not reading, disconnected", m.name);
            let _ = m.stream.shutdown(Shutdown::Both);
            broadcast(members, id, &format!("* {} left", m.name));
        }
    }
}

/// Queues a line for this client alone; a full queue ends its connection.
fn tell(queue: &Sender<Arc<str>>, line: &str) -> io::Result<()> {
    queue
        .try_send(format!("{line}\n").into())
        .map_err(|_| io::Error::other("client not reading its replies"))
}

/// The writer thread: sends the client's queue until it is closed or a write fails. Lines
/// waiting together go out in one write, so a reading client keeps up with a busy room.
fn write_queue(mut stream: Stream, queue: Receiver<Arc<str>>) {
    let mut out = Vec::new();
    for line in &queue {
        out.clear();
        out.extend_from_slice(line.as_bytes());
        for more in queue.try_iter().take(QUEUE) {
            out.extend_from_slice(more.as_bytes());
        }
        if let Err(e) = stream.write_all(&out) {
            log::debug!("write failed: {e}");
            // Make the reader end too; the room then drops this client.
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads the next line (without its end) with a length limit; `None` when the client is
/// gone, sent an over-long line, or the server is shutting down.
fn next_line(req: &mut StreamRequest, queue: &Sender<Arc<str>>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    loop {
        // Between lines (replies go out through the writer thread, not through `req`): a
        // wait for the next line ends with EOF at shutdown.
        req.mark_idle();
        let room = (MAX_LINE + 2 - buf.len()) as u64; // the line, "\r\n"
        Read::take(&mut *req, room).read_until(b'\n', &mut buf)?;
        if buf.is_empty() {
            if req.is_shutting_down() {
                let _ = tell(queue, "* server shutting down");
            }
            return Ok(None);
        }
        // A line, the last one before EOF, or MAX_LINE + 2 bytes without an end.
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            tell(queue, &format!("error: line longer than {MAX_LINE} bytes"))?;
            return Ok(None);
        }
        match std::str::from_utf8(line) {
            Ok(text) => return Ok(Some(text.to_string())),
            Err(_) => tell(queue, "error: line is not UTF-8")?,
        }
        buf.clear();
    }
}

/// One client: nickname, then lines until it leaves.
fn chat(req: &mut StreamRequest, room: &Room, queue: &Sender<Arc<str>>) -> io::Result<()> {
    let seat = loop {
        let Some(name) = next_line(req, queue)? else {
            return Ok(());
        };
        match room.join(name.trim(), queue, req.stream().try_clone()?) {
            Ok(seat) => break seat,
            Err(why) => tell(queue, &format!("error: {why}, choose another nickname"))?,
        }
    };
    while let Some(line) = next_line(req, queue)? {
        match line.trim_end() {
            "/quit" => break,
            "/who" => tell(queue, &room.who())?,
            "" => {}
            cmd if cmd.starts_with('/') => {
                tell(queue, "error: unknown command (try /who or /quit)")?
            }
            text => room.say(seat.id, text),
        }
    }
    Ok(())
}

fn serve_client(req: &mut StreamRequest, room: &Room) -> io::Result<()> {
    let stream = req.stream().try_clone()?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let (queue, outgoing) = crossbeam_channel::bounded(QUEUE);
    let writer = thread::Builder::new()
        .name("chat-writer".into())
        .spawn(move || write_queue(stream, outgoing))?;
    let result = chat(req, room, &queue);
    if result.is_err() {
        // Unblock a writer stuck on a client that reads nothing.
        let _ = req.stream().shutdown(Shutdown::Both);
    }
    // The seat is gone (it holds the other sender): the writer sends what is left and ends.
    drop(queue);
    let _ = writer.join();
    result
}

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("A line-based TCP chat room (default 127.0.0.1:8006)");
    if matches!(args.mode.name(), "single" | "fork") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "chat shares one room between all clients: use --mode pool or --mode threading",
        ));
    }
    if args.tls_enabled() {
        // Each client's lines are written by a thread of its own through a clone of the
        // socket; a TLS session has one owner (the handler), so chat cannot encrypt them.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "chat writes from a thread per client, which TLS does not allow: run it without --tls-cert",
        ));
    }
    let room = Arc::new(Room::default());
    common::serve_tcp(&args, 8006, move |req: &mut StreamRequest| {
        serve_client(req, &room)
    })
}

//! The tutorials' UDP "QQ" chat as a messaging server: clients register a name, then send
//! each other one-datagram messages through it. Every request and every reply is one UTF-8
//! datagram of at most 1024 bytes (the tutorials' clients read with `recvfrom(1024)`).
//!
//! * `HELLO NAME` registers NAME (1 to 32 bytes of UTF-8; no whitespace, control characters,
//!   commas or colons, which would break `USERS` and `TO`) at the sender's address: reply
//!   `OK NAME`. An address holds one name: a second `HELLO` renames it. A name held by
//!   another live address: `ERROR name taken`.
//! * `TO NAME: text` sends `FROM SENDER: text` to NAME's address, from the server's socket,
//!   and replies `SENT`; an unknown NAME, an unregistered sender or a message that would not
//!   fit one datagram gets a reply starting with `ERROR`.
//! * `WHO` replies `USERS a,b,c` (sorted; `USERS` alone when nobody is registered); a list
//!   too long for one datagram is cut and ends with ` ... and N more`. Only registered
//!   senders get it.
//! * No amplification for strangers: an address with no registration (which may be a
//!   spoofed source) never gets a reply longer than the datagram it sent, or than 32 bytes
//!   for a short error (a longer error is cut to that). A client that wants the whole text
//!   of an error before registering pads its datagram (trailing spaces are ignored). The
//!   `--console` operator's typed replies are the operator's to judge: not cut.
//! * `BYE` unregisters the sender: `OK`.
//! * A registration whose address has sent nothing for 5 minutes expires (`--expiry
//!   SECONDS`); at most 10 000 are held (`--max-users N`): a full registry answers `ERROR
//!   server full`.
//! * A datagram that is not UTF-8 or is longer than 1024 bytes gets an `ERROR` reply.
//! * Any other datagram gets `ERROR send HELLO NAME first` (or, from a registered address,
//!   `ERROR unknown command ...`), unless the server runs with `--console`: the tutorials'
//!   form, for their unchanged clients. Each such datagram is then printed on stdout as
//!   `[IP:PORT] text` and the operator's next stdin line is sent back to that address: one
//!   reply per datagram, in the order they were printed. A line typed while no datagram
//!   waits is ignored (with a warning on stderr); at most 1000 datagrams wait (later ones
//!   get `ERROR operator busy`); once stdin ends, they get `ERROR no operator`.
//!
//! Modes: `--mode pool` (the default) or `--mode single`. The registry is state shared by
//! every datagram, kept in this process: `fork` would lose each registration with the child
//! that made it, and `threading` would start a thread per datagram for replies that take
//! microseconds, so both are refused with an error.
//!
//! ```text
//! cargo run --example udp_chat                  # listening on 127.0.0.1:8081
//! cargo run --example udp_chat -- --console     # the tutorials' server: you type replies
//! python3 -c "import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b'HELLO alice',('127.0.0.1',8081)); print(s.recv(1024))"
//! ```
//! Options: `--addr HOST:PORT`, `--mode single|pool`, `--workers N`, `--console`.

#[path = "../common/mod.rs"]
mod common;
mod console;
mod registry;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use socketserver::{Addr, DatagramRequest};

use console::Console;
use registry::{valid_name, Registry};

/// The largest datagram accepted or sent, in bytes.
const MAX_DATAGRAM: usize = 1024;

#[derive(Parser)]
#[command(about = "UDP chat: register a name, message other names (default 127.0.0.1:8081)")]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// Print datagrams that are not commands and answer each with a line from stdin.
    #[arg(long)]
    console: bool,
    /// Seconds after which a registration whose address sent nothing expires.
    #[arg(long, default_value = "300", value_parser = common::seconds)]
    expiry: Duration,
    /// Most registrations held at once.
    #[arg(long, default_value_t = 10_000)]
    max_users: usize,
}

/// What every datagram's handler shares.
struct Chat {
    registry: Mutex<Registry>,
    /// Set in `--console` mode.
    console: Option<Console>,
}

/// Locks `m`, even if a handler panicked while holding it (its state stays consistent:
/// every change is made in one step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request, parsed; `None` from `parse` means the datagram is not a command.
enum Command<'a> {
    Hello(&'a str),
    To(&'a str, &'a str),
    Who,
    Bye,
}

fn parse(text: &str) -> Option<Result<Command<'_>, &'static str>> {
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let bare = |cmd| {
        Some(
            rest.trim()
                .is_empty()
                .then_some(cmd)
                .ok_or("ERROR extra words"),
        )
    };
    match word {
        "HELLO" => Some(Ok(Command::Hello(rest.trim()))),
        "TO" => Some(match rest.split_once(':') {
            Some((name, msg)) => Ok(Command::To(
                name.trim(),
                msg.strip_prefix(' ').unwrap_or(msg),
            )),
            None => Err("ERROR usage: TO NAME: text"),
        }),
        "WHO" => bare(Command::Who),
        "BYE" => bare(Command::Bye),
        _ => None,
    }
}

const BAD_NAME: &str =
    "ERROR a name has 1 to 32 bytes, no whitespace, control characters, commas or colons";
const NOT_REGISTERED: &str = "ERROR send HELLO NAME first";

impl Chat {
    /// Answers one datagram; `None` when the console operator will answer it.
    fn respond(&self, req: &mut DatagramRequest, peer: SocketAddr) -> Option<String> {
        let data = req.packet();
        if data.len() > MAX_DATAGRAM {
            return Some(format!("ERROR datagram longer than {MAX_DATAGRAM} bytes"));
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return Some("ERROR datagram is not UTF-8".into());
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text).to_string();
        let now = Instant::now();
        // Any datagram from a registered address keeps its registration alive.
        lock(&self.registry).name_of(peer, now);
        let reply = match parse(&text) {
            Some(Err(usage)) => usage.to_string(),
            Some(Ok(Command::Hello(name))) => self.hello(name, peer, now),
            Some(Ok(Command::To(name, msg))) => self.send(req, peer, name, msg, now),
            Some(Ok(Command::Who)) => self.who(peer, now),
            Some(Ok(Command::Bye)) => self.bye(peer, now),
            None => return self.other(peer, &text, now),
        };
        Some(reply)
    }

    fn hello(&self, name: &str, peer: SocketAddr, now: Instant) -> String {
        if !valid_name(name) {
            return BAD_NAME.into();
        }
        match lock(&self.registry).hello(name, peer, now) {
            Ok(()) => {
                log::info!("{name} registered at {peer}");
                format!("OK {name}")
            }
            Err(why) => why.into(),
        }
    }

    fn send(
        &self,
        req: &mut DatagramRequest,
        peer: SocketAddr,
        name: &str,
        msg: &str,
        now: Instant,
    ) -> String {
        if !valid_name(name) {
            return BAD_NAME.into();
        }
        let (from, to) = {
            let mut registry = lock(&self.registry);
            let Some(from) = registry.name_of(peer, now) else {
                return NOT_REGISTERED.into();
            };
            let Some(to) = registry.lookup(name, now) else {
                return format!("ERROR no user {name}");
            };
            (from, to)
        };
        let message = format!("FROM {from}: {msg}");
        if message.len() > MAX_DATAGRAM {
            let room = MAX_DATAGRAM - (message.len() - msg.len());
            return format!("ERROR message too long: at most {room} bytes from {from}");
        }
        match req.send_to(message.as_bytes(), &Addr::Inet(to)) {
            Ok(()) => "SENT".into(),
            Err(e) => {
                log::warn!("{from} -> {name} at {to}: {e}");
                format!("ERROR could not deliver to {name}")
            }
        }
    }

    /// `USERS ...`, for registered senders only: to a stranger (perhaps a spoofed source)
    /// a 3-byte `WHO` would return up to 1024 bytes.
    fn who(&self, peer: SocketAddr, now: Instant) -> String {
        let mut registry = lock(&self.registry);
        match registry.name_of(peer, now) {
            Some(_) => registry.users(now),
            None => NOT_REGISTERED.into(),
        }
    }

    fn bye(&self, peer: SocketAddr, now: Instant) -> String {
        let mut registry = lock(&self.registry);
        match registry.name_of(peer, now) {
            Some(name) => {
                registry.remove(&name);
                log::info!("{name} at {peer} left");
                "OK".into()
            }
            None => NOT_REGISTERED.into(),
        }
    }

    /// A datagram that is not a command: the console operator's, or an error.
    fn other(&self, peer: SocketAddr, text: &str, now: Instant) -> Option<String> {
        let Some(console) = &self.console else {
            return Some(match lock(&self.registry).name_of(peer, now) {
                Some(_) => "ERROR unknown command: HELLO NAME, TO NAME: text, WHO or BYE".into(),
                None => NOT_REGISTERED.into(),
            });
        };
        console.hold(peer, text).err().map(String::from)
    }
}

/// The most a stranger (an unregistered address) may get in reply to a datagram shorter
/// than this: a short error.
const SHORT_REPLY: usize = 32;

/// Cuts `reply` to what a stranger that sent `sent` bytes may get (see the module docs),
/// at a character boundary.
fn for_stranger(mut reply: String, sent: usize) -> String {
    let cap = sent.max(SHORT_REPLY);
    if reply.len() > cap {
        let mut end = cap;
        while !reply.is_char_boundary(end) {
            end -= 1;
        }
        reply.truncate(end);
    }
    reply
}

fn handle(req: &mut DatagramRequest, chat: &Chat) -> io::Result<()> {
    let Some(peer) = req.peer_addr().as_inet() else {
        return Ok(()); // a UDP server's peers are IP addresses
    };
    let Some(reply) = chat.respond(req, peer) else {
        return Ok(());
    };
    // Checked after the request: a HELLO has just registered its sender.
    let registered = lock(&chat.registry).name_of(peer, Instant::now()).is_some();
    let reply = if registered {
        reply
    } else {
        for_stranger(reply, req.packet().len())
    };
    req.reply(reply.as_bytes())
}

fn main() -> io::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    if matches!(cli.server.mode.name(), "threading" | "fork") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "udp_chat keeps its registry in this process and answers each datagram at once: \
             use --mode pool or --mode single",
        ));
    }
    let chat = Arc::new(Chat {
        registry: Mutex::new(Registry::new(cli.expiry, cli.max_users)),
        console: cli.console.then(Console::new),
    });
    let socket = UdpSocket::bind(cli.server.addr(8081))?;
    let replies = socket.try_clone()?;
    let server = cli.server.udp().from_socket(socket)?;
    common::announce(server.local_addr()?, &server.shutdown_handle())?;
    common::announce_admin(server.admin_addr())?;
    if cli.console {
        let chat = Arc::clone(&chat);
        thread::Builder::new()
            .name("operator".into())
            .spawn(move || {
                if let Some(console) = &chat.console {
                    console.run(&replies);
                }
            })?;
    }
    server.serve(move |req: &mut DatagramRequest| handle(req, &chat))
}

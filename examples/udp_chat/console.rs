//! `--console`: the tutorials' server, where an operator types the replies.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::{lock, MAX_DATAGRAM};

/// Datagrams waiting for the operator, at most.
const MAX_PENDING: usize = 1000;
/// How long a reply typed by the operator may wait for send-buffer space.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The datagrams waiting for the operator's replies, oldest first.
pub(crate) struct Console {
    state: Mutex<State>,
}

struct State {
    pending: VecDeque<SocketAddr>,
    /// False once stdin has ended.
    open: bool,
}

impl Console {
    pub(crate) fn new() -> Console {
        Console {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                open: true,
            }),
        }
    }

    /// Prints `[IP:PORT] text` for the operator and queues `peer` for the next stdin line;
    /// the error is the reply to send instead.
    pub(crate) fn hold(&self, peer: SocketAddr, text: &str) -> Result<(), &'static str> {
        let mut state = lock(&self.state);
        if !state.open {
            return Err("ERROR no operator");
        }
        if state.pending.len() >= MAX_PENDING {
            return Err("ERROR operator busy");
        }
        // Printed and queued under one lock: the operator answers in the printed order.
        let mut out = io::stdout().lock();
        let shown = format!("[{}:{}] {}", peer.ip(), peer.port(), printable(text));
        writeln!(out, "{shown}")
            .and_then(|()| out.flush())
            .map_err(|_| "ERROR no operator")?;
        state.pending.push_back(peer);
        Ok(())
    }

    /// The operator: each stdin line answers the oldest datagram waiting, from the server's
    /// `socket`. At EOF the waiting ones get an error and later ones are refused.
    pub(crate) fn run(&self, socket: &UdpSocket) {
        let mut stdin = io::stdin().lock();
        loop {
            let line = match read_reply_line(&mut stdin) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    log::error!("stdin: {e}");
                    break;
                }
            };
            let Some(to) = lock(&self.state).pending.pop_front() else {
                log::warn!("no datagram waiting for a reply: line ignored");
                continue;
            };
            if let Err(e) = send(socket, line.as_bytes(), to) {
                log::warn!("reply to {to}: {e}");
            }
        }
        log::info!("stdin ended: datagrams for the operator are refused from now on");
        let mut state = lock(&self.state);
        state.open = false;
        for to in state.pending.drain(..) {
            let _ = send(socket, b"ERROR no operator", to);
        }
    }
}

/// `text` with control characters escaped, so a datagram prints as one line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Sends one datagram on the server's (non-blocking) socket, waiting a little for room.
fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<()> {
    let deadline = Instant::now() + SEND_TIMEOUT;
    loop {
        match socket.send_to(data, to) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            other => return other.map(drop),
        }
    }
}

/// Reads one line of at most `MAX_DATAGRAM` bytes (a longer one is cut, the rest skipped),
/// without its end; `None` at EOF.
fn read_reply_line(input: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    input
        .take(MAX_DATAGRAM as u64 + 2)
        .read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_DATAGRAM {
        log::warn!("reply longer than {MAX_DATAGRAM} bytes: cut");
        skip_line(input)?;
    }
    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    while text.len() > MAX_DATAGRAM {
        text.pop();
    }
    Ok(Some(text))
}

/// Skips the rest of the current line.
fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

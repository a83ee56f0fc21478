//! The load generator: one std thread per client connection, closed loops, every echo
//! verified, every wait bounded.
//!
//! A run has four phases. Setup: idle connections are opened, then every client connects
//! and (ping-pong) gets its first echo, or fails to, which counts as an error; the slowest
//! setup is reported, since it shows how a server takes a burst of new connections.
//! Warm-up: clients run but nothing is recorded. The window: requests that begin and end
//! inside it are counted and their latency recorded; the caller's `observe` reads the
//! server's `/proc` at its edges. A short tail: clients go on, unrecorded, so the server is
//! still under load when it is read. A request that fails (timeout, reset, refused) counts
//! as an error and the client reconnects, so a starving server shows up as errors and a low
//! rate, never as a hang. The idle connections outlive the run: the caller closes them once
//! the server is stopped (see `Outcome::idle`).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::limits;

/// How long a TCP connect may take (a dropped SYN is retried by the kernel after 1 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening every idle connection, and every client's first connect, may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the first echo of a connection may take (the server may be accepting a burst).
const FIRST_ECHO_TIMEOUT: Duration = Duration::from_secs(2);
/// Clients go on this long after the window, so the server is still loaded when its
/// `/proc` is read at the window's end.
const TAIL: Duration = Duration::from_millis(100);
/// How long a UDP client waits for a reply before counting the datagram as lost.
const UDP_TIMEOUT: Duration = Duration::from_millis(250);
/// Pause after a failed connect or send, so an absent server is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Client threads hold their buffers on the heap: a small stack is enough.
const CLIENT_STACK: usize = 256 * 1024;
/// Latencies are recorded in nanoseconds, up to a minute.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Source addresses the churn clients connect from, in turn: 127.0.0.1 to 127.0.0.8 (every
/// 127/8 address is local on Linux). The client closes first, so each connection leaves its
/// source port in TIME_WAIT for a minute, and from one address the kernel's ephemeral
/// ports ran out after about 14 000 connections (it hands out even ports first): the
/// connects then waited for ports to come free, and every server was held to about 15 000
/// connections a second, the rate falling from 26k to 1-5k a second within the first half
/// second (measured 2026-12-07, `ip_local_port_range` 32768-60999). Whether a round hit
/// that wall depended on how many TIME_WAIT sockets the rounds before had left (past
/// `net.ipv4.tcp_max_tw_buckets` the kernel keeps none). A connect takes its port per
/// (source, destination) pair, so 8 addresses hold eight times as many.
const CHURN_SOURCES: usize = 8;
/// Idle connects that time out in a row before the server is taken to have stopped
/// accepting (at its connection limit, say): the rest are counted as errors, not tried.
const REFUSED_IN_A_ROW: usize = 3;
/// From this many idle connections on, the time taken to open them is printed.
const SAY_IDLE_OPENING: usize = 10_000;

/// What the clients do.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// `conns` connections, each sending `size` bytes and reading them back, in a loop.
    PingPong { conns: usize, size: usize },
    /// `conns` clients, each connecting, echoing 16 bytes and closing, in a loop.
    Churn { conns: usize },
    /// `idle` connections opened first and held silent, then ping-pong on `conns` others.
    IdleActive {
        idle: usize,
        conns: usize,
        size: usize,
    },
    /// `clients` UDP sockets, each sending `size` bytes and waiting for the echo.
    Udp { clients: usize, size: usize },
}

impl Load {
    fn clients(self) -> usize {
        match self {
            Load::PingPong { conns, .. } | Load::IdleActive { conns, .. } => conns,
            Load::Churn { conns } => conns,
            Load::Udp { clients, .. } => clients,
        }
    }
}

/// How long each phase lasts, and how long one request may wait.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub warmup: Duration,
    pub measure: Duration,
    /// Read and write timeout of every TCP request.
    pub io_timeout: Duration,
}

/// The measured interval.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
    /// When clients stop: a little after `end`.
    stop: Instant,
}

impl Window {
    /// Sleeps until `t` (returns at once if it has passed).
    pub fn sleep_until(t: Instant) {
        thread::sleep(t.saturating_duration_since(Instant::now()));
    }
}

/// What the clients saw.
#[derive(Debug)]
pub struct Outcome {
    /// Requests (connections, for churn) completed inside the window.
    pub requests: u64,
    /// The window's length.
    pub secs: f64,
    /// Latency of the requests inside the window, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Timeouts, resets, refused connects, lost datagrams: during the whole run.
    pub errors: u64,
    /// Echoes that came back wrong (a broken server).
    pub mismatches: u64,
    /// The slowest client's setup: connect and first echo (connect only, for churn/UDP).
    pub setup: Duration,
    /// The silent connections, still open. The caller closes them after stopping the
    /// server, so that the server's side closes first: a client socket closed first would
    /// wait in TIME_WAIT for a minute, and those bound to a source address (see
    /// `limits::idle_sources`) would keep their ports from the next run.
    pub idle: Vec<TcpStream>,
    /// How long opening the silent connections took.
    pub idle_opening: Duration,
}

impl Outcome {
    /// Requests per second inside the window.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    /// The latency at quantile `q`, in microseconds (`None` with no request).
    pub fn latency_us(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Runs `load` against `addr`; `observe` runs on this thread once the window is set and its
/// result is returned beside the outcome (it sleeps to the window's edges to read `/proc`).
pub fn run<W>(
    load: Load,
    addr: SocketAddr,
    plan: Plan,
    observe: impl FnOnce(&Window) -> W,
) -> (Outcome, W) {
    let mut errors = 0;
    let opening = Instant::now();
    let idle = match load {
        Load::IdleActive { idle, .. } => open_idle(addr, idle, &mut errors),
        _ => Vec::new(),
    };
    let idle_opening = opening.elapsed();
    let gate = Arc::new(Gate::default());
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut clients = Vec::new();
    for _ in 0..load.clients() {
        let (gate, ready) = (Arc::clone(&gate), ready_tx.clone());
        let spawned = thread::Builder::new()
            .stack_size(CLIENT_STACK)
            .spawn(move || client(load, addr, plan, &gate, &ready));
        match spawned {
            Ok(h) => clients.push(h),
            Err(_) => errors += 1,
        }
    }
    drop(ready_tx);
    wait_ready(&ready_rx, clients.len());
    let start = Instant::now() + plan.warmup;
    let end = start + plan.measure;
    let window = Window {
        start,
        end,
        stop: end + TAIL,
    };
    gate.open(window);
    let seen = observe(&window);
    let mut outcome = Outcome {
        requests: 0,
        secs: plan.measure.as_secs_f64(),
        hist: new_histogram(),
        errors,
        mismatches: 0,
        setup: Duration::ZERO,
        idle,
        idle_opening,
    };
    for h in clients {
        match h.join() {
            Ok(t) => t.add_to(&mut outcome),
            Err(_) => outcome.errors += 1,
        }
    }
    (outcome, seen)
}

/// Waits until `n` clients have made their first connection attempt, at most SETUP_TIMEOUT.
fn wait_ready(ready: &mpsc::Receiver<()>, n: usize) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        if ready.recv_timeout(left).is_err() {
            return;
        }
    }
}

/// Opens `n` silent connections, one after another, within SETUP_TIMEOUT and a millisecond
/// more per connection, from the source addresses `limits::idle_sources` gives; the ones
/// that cannot be opened count as errors. Once `REFUSED_IN_A_ROW` connects in a row have
/// timed out the server has stopped accepting, and the rest count as errors untried.
fn open_idle(addr: SocketAddr, n: usize, errors: &mut u64) -> Vec<TcpStream> {
    let sources = limits::idle_sources(n);
    let began = Instant::now();
    let deadline = began + SETUP_TIMEOUT + Duration::from_millis(n as u64);
    let mut conns = Vec::with_capacity(n);
    let mut timed_out = 0;
    for i in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let res = match left.min(CONNECT_TIMEOUT) {
            t if t.is_zero() => Err(io::ErrorKind::TimedOut.into()),
            t => connect_from(source, addr, t),
        };
        match res {
            Ok(s) => {
                conns.push(s);
                timed_out = 0;
            }
            Err(e) => {
                if *errors == 0 {
                    eprintln!("    idle connection {} of {n} failed: {e}", i + 1);
                }
                *errors += 1;
                timed_out = if e.kind() == io::ErrorKind::TimedOut {
                    timed_out + 1
                } else {
                    0
                };
                if timed_out == REFUSED_IN_A_ROW && i + 1 < n {
                    let left = n - i - 1;
                    eprintln!("    {REFUSED_IN_A_ROW} idle connects in a row timed out after {} were open: the server stopped accepting; the {left} left count as errors, untried", conns.len());
                    *errors += left as u64;
                    break;
                }
            }
        }
    }
    if n >= SAY_IDLE_OPENING {
        eprintln!(
            "    {} of {n} idle connections open in {:.1} s",
            conns.len(),
            began.elapsed().as_secs_f64()
        );
    }
    // Let the server accept them before the active clients arrive.
    thread::sleep(Duration::from_millis(100));
    conns
}

/// A connection to `addr`, from `source` (bound before connecting, to port 0: the kernel
/// picks a free port of that address) or from whatever address the kernel picks.
fn connect_from(
    source: Option<Ipv4Addr>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let Some(ip) = source else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((ip, 0)).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// The start signal: the window, once the main thread has set it.
#[derive(Debug, Default)]
struct Gate {
    window: Mutex<Option<Window>>,
    opened: Condvar,
}

impl Gate {
    fn open(&self, w: Window) {
        *self.window.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        self.opened.notify_all();
    }

    /// The window, or `None` if it was not set within the setup time (the run is broken).
    fn wait(&self) -> Option<Window> {
        let guard = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .opened
            .wait_timeout_while(guard, SETUP_TIMEOUT * 2, |w| w.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// One client's counts.
struct Tally {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    mismatches: u64,
    setup: Duration,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: new_histogram(),
            requests: 0,
            errors: 0,
            mismatches: 0,
            setup: Duration::ZERO,
        }
    }

    /// A request that began at `began` has just completed correctly.
    fn done(&mut self, w: &Window, began: Instant) {
        let now = Instant::now();
        if began >= w.start && now <= w.end {
            self.requests += 1;
            let ns = u64::try_from((now - began).as_nanos()).unwrap_or(u64::MAX);
            self.hist.saturating_record(ns.max(1));
        }
    }

    fn add_to(self, o: &mut Outcome) {
        o.requests += self.requests;
        o.errors += self.errors;
        o.mismatches += self.mismatches;
        o.setup = o.setup.max(self.setup);
        // Same bounds on both sides: adding cannot fail.
        let _ = o.hist.add(&self.hist);
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// A request payload: a sequence number in the first 8 bytes, a fixed pattern after.
struct Message {
    bytes: Vec<u8>,
    seq: u64,
}

impl Message {
    fn new(size: usize) -> Message {
        Message {
            bytes: (0..size).map(|i| (i % 251) as u8).collect(),
            seq: 0,
        }
    }

    /// Moves to the next request's payload.
    fn next(&mut self) -> &[u8] {
        self.seq += 1;
        let n = self.bytes.len().min(8);
        self.bytes[..n].copy_from_slice(&self.seq.to_le_bytes()[..n]);
        &self.bytes
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The sequence number a reply carries.
    fn seq_of(reply: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(reply.get(..8)?.try_into().ok()?))
    }
}

/// One client thread.
fn client(
    load: Load,
    addr: SocketAddr,
    plan: Plan,
    gate: &Gate,
    ready: &mpsc::Sender<()>,
) -> Tally {
    let mut t = Tally::new();
    match load {
        Load::PingPong { size, .. } | Load::IdleActive { size, .. } => {
            ping_pong(addr, size, plan, gate, ready, &mut t)
        }
        Load::Churn { .. } => churn(addr, plan, gate, ready, &mut t),
        Load::Udp { size, .. } => udp(addr, size, gate, ready, &mut t),
    }
    t
}

/// A TCP connection with the client's options: `TCP_NODELAY` and the request timeouts.
fn connect(addr: SocketAddr, plan: Plan) -> io::Result<TcpStream> {
    configure(TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?, plan)
}

/// The client's options on a connected stream: `TCP_NODELAY` and the request timeouts.
fn configure(s: TcpStream, plan: Plan) -> io::Result<TcpStream> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(plan.io_timeout))?;
    s.set_write_timeout(Some(plan.io_timeout))?;
    Ok(s)
}

fn ping_pong(
    addr: SocketAddr,
    size: usize,
    plan: Plan,
    gate: &Gate,
    ready: &mpsc::Sender<()>,
    t: &mut Tally,
) {
    let mut msg = Message::new(size);
    let mut back = vec![0; size];
    let began = Instant::now();
    let mut conn = match first_echo(addr, plan, &mut msg, &mut back) {
        Ok((s, true)) => Some(s),
        Ok((_, false)) => {
            t.mismatches += 1;
            None
        }
        Err(_) => {
            t.errors += 1;
            None
        }
    };
    t.setup = began.elapsed();
    let _ = ready.send(());
    let Some(w) = gate.wait() else { return };
    while Instant::now() < w.stop {
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr, plan) {
                Ok(s) => conn.insert(s),
                Err(_) => {
                    t.errors += 1;
                    thread::sleep(RETRY_PAUSE);
                    continue;
                }
            },
        };
        let began = Instant::now();
        match round_trip(stream, &mut msg, &mut back) {
            Ok(true) => t.done(&w, began),
            Ok(false) => {
                t.mismatches += 1;
                conn = None;
            }
            Err(_) => {
                t.errors += 1;
                conn = None;
            }
        }
    }
}

/// Connects and echoes once, allowing the server time to accept a burst of connections.
fn first_echo(
    addr: SocketAddr,
    plan: Plan,
    msg: &mut Message,
    back: &mut [u8],
) -> io::Result<(TcpStream, bool)> {
    let mut s = connect(addr, plan)?;
    s.set_read_timeout(Some(FIRST_ECHO_TIMEOUT))?;
    let ok = round_trip(&mut s, msg, back)?;
    s.set_read_timeout(Some(plan.io_timeout))?;
    Ok((s, ok))
}

/// Sends the next message and reads its echo; false if the echo is wrong.
fn round_trip(s: &mut TcpStream, msg: &mut Message, back: &mut [u8]) -> io::Result<bool> {
    s.write_all(msg.next())?;
    s.read_exact(back)?;
    Ok(back == msg.bytes())
}

fn churn(addr: SocketAddr, plan: Plan, gate: &Gate, ready: &mpsc::Sender<()>, t: &mut Tally) {
    let _ = ready.send(());
    let Some(w) = gate.wait() else { return };
    let mut msg = Message::new(16);
    let mut back = [0; 16];
    while Instant::now() < w.stop {
        msg.next();
        let began = Instant::now();
        match churn_once(addr, plan, msg.bytes(), &mut back) {
            Ok(()) if back[..] == *msg.bytes() => t.done(&w, began),
            Ok(()) => t.mismatches += 1,
            Err(_) => {
                t.errors += 1;
                thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

/// Connect, one round trip, close (the client closes first, as HTTP/1.0 clients do).
fn churn_once(addr: SocketAddr, plan: Plan, msg: &[u8], back: &mut [u8]) -> io::Result<()> {
    let mut s = churn_connect(addr, plan)?;
    s.write_all(msg)?;
    s.read_exact(back)
}

/// A churn client's connection, from the next of `CHURN_SOURCES` source addresses when
/// the server is on IPv4 loopback.
fn churn_connect(addr: SocketAddr, plan: Plan) -> io::Result<TcpStream> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let SocketAddr::V4(v4) = addr else {
        return connect(addr, plan);
    };
    if !v4.ip().is_loopback() {
        return connect(addr, plan);
    }
    use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
    use socket2::{Domain, Socket, Type};
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % CHURN_SOURCES;
    let source = Ipv4Addr::new(127, 0, 0, 1 + n as u8);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // The port is chosen at connect, for this (source, destination) pair, not at bind
    // (where it would be held from every destination).
    setsockopt(&socket, IpBindAddressNoPort, &true)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    configure(socket.into(), plan)
}

fn udp(addr: SocketAddr, size: usize, gate: &Gate, ready: &mpsc::Sender<()>, t: &mut Tally) {
    let socket = UdpSocket::bind("127.0.0.1:0").and_then(|s| {
        s.connect(addr)?;
        s.set_read_timeout(Some(UDP_TIMEOUT))?;
        Ok(s)
    });
    let _ = ready.send(());
    let Ok(socket) = socket else {
        t.errors += 1;
        return;
    };
    let Some(w) = gate.wait() else { return };
    let mut msg = Message::new(size.max(8));
    let mut back = vec![0; size.max(8) + 1];
    while Instant::now() < w.stop {
        let began = Instant::now();
        if socket.send(msg.next()).is_err() {
            t.errors += 1;
            thread::sleep(RETRY_PAUSE);
            continue;
        }
        udp_reply(&socket, &msg, &mut back, &w, began, t);
    }
}

/// Waits for the reply to `msg`, skipping late replies to datagrams already counted lost.
fn udp_reply(
    socket: &UdpSocket,
    msg: &Message,
    back: &mut [u8],
    w: &Window,
    began: Instant,
    t: &mut Tally,
) {
    loop {
        match socket.recv(back) {
            Ok(n) if back[..n] == *msg.bytes() => return t.done(w, began),
            Ok(n) if Message::seq_of(&back[..n]).is_some_and(|s| s < msg.seq) => continue,
            Ok(_) => return t.mismatches += 1,
            Err(e) => {
                t.errors += 1;
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    thread::sleep(RETRY_PAUSE);
                }
                return;
            }
        }
    }
}

//! The pool's engine for streams: connections wait in an event set, workers serve them.
//!
//! Both handler shapes run here in the pool flavour. A request handler (`serve_requests`)
//! holds a worker only while it has a request; between requests its connection is parked
//! (below). A connection handler (`serve`, `whole`) is one request that never parks: it
//! runs as soon as its connection is open (its PROXY header and TLS handshake may still
//! wait in the event set, holding no worker) and holds its worker to the connection's end;
//! the pool grows for the clients that wait to be accepted, within about a millisecond, as
//! a thread per connection would, up to the flavour's limit. Accepting, the accept errors
//! and their back-off, the connection limit, opening (`conn::accept`, `conn::handshake`),
//! panics, shutdown and a restart's drain are one path for both.
//!
//! A connection waiting for its client's next request is not on any thread: it sits in a
//! slab, registered in a `mio::Poll` (epoll on Linux, kqueue on the BSDs).
//! Idle workers wait on the poll, each for one event (on Linux all at once in
//! `epoll_wait`, and the kernel wakes one per event; see `Waiter`). An event is the
//! listener (accept one connection, re-arm), or a parked connection whose request arrived
//! (take it out of its slot, serve its request on this thread, then park it again, or
//! serve the next request at once if the client pipelined it). A connection keeps its slot
//! and its registration (edge-triggered, under the slot's key) from its first parking
//! until it closes, so parking it again costs no system call: an event that comes while it
//! is served finds its slot busy and is remembered there, and the worker parking it reads
//! again instead (`Parking`). Input that came before the event that took it raises no new
//! event, so parking first looks for it when it may be there: bytes past the last read
//! (that read filled its buffer, or TLS made it) or an EOF the event reported. An event
//! returned before the connection's last request was read is checked before it is served
//! (`Conn::parked_after`). A key carries a generation, so an event for a closed connection
//! never reaches the one that reused its slot.
//!
//! A busy client (one that sends each request within `HOT` of the reply before) keeps its
//! worker: after the reply the worker waits on that connection alone, out of the event
//! set, for up to `LINGER`, as the connection-per-thread pool would, while another worker
//! watches the event set (one more starts for that if none is waiting, up to the
//! flavour's limit, once the client has proven busy: a new connection is waited for only
//! by a spare worker, so that clients that connect, ask and go do not grow the pool).
//! Quick exchanges then cost what they cost in the connection-per-thread pool (poll, read,
//! reply) instead of an event round trip and a hand-over of the poll per request; a client
//! that goes quiet is parked after `LINGER` and holds no thread.
//!
//! Accepting: in a pool that can grow, serving request handlers on a TCP listener on
//! Linux without a PROXY header or TLS handshake, half the warm workers
//! (at most `MAX_ACCEPTING`) accept for themselves, blocked in `accept(2)`, the listener
//! out of the event set, as a thread-per-connection server's threads do: each serves what
//! it accepted (its first request, then a linger for the next one or the client's EOF),
//! so a client that connects, asks and goes costs no event-set call and no hand-over
//! between threads. A client that proves busy is parked after its second request, and a
//! worker of the event set keeps it from its third on: accepting threads stay free to
//! accept. When the last free one takes a connection, the serving thread looks
//! `GROW_DELAY` later and starts one more while clients wait in the listener's queue (a
//! long first request holds its accepting thread as it would a worker); an extra one
//! leaves when it comes back and another is free. At `max_connections` and during an
//! accept back-off they wait on a condition variable (a closing connection, the back-off's
//! end and shutdown wake them); shutdown ends their `accept` by shutting the listener down
//! (Linux returns EINVAL), or, on a socket shared with systemd or a restart's new process,
//! which must not be shut down, by connecting to it (`Inner::end_accepts`). Elsewhere
//! (connection handlers, which hold their thread; handshakes, which may be slow; a fixed
//! pool; other systems) the listener is in the event set and any idle worker accepts.
//!
//! The pool grows when its workers are stuck: when the last waiting worker takes an event,
//! it tells the serving thread, which looks again `GROW_DELAY` later (`WHOLE_LOOK` for
//! connection handlers below the limit): if no worker is waiting and none has finished
//! anything meanwhile, every worker is inside a long request (an upload, a slow client, a
//! TLS handshake, a connection handler's whole connection), and more start (up to
//! `Flavor::limit`), so that such requests never stop the others from being served
//! (`look_saturation`). Short requests that keep every worker busy (a saturated CPU) do
//! not grow it: more threads would not help them. Workers above the warm count leave
//! after `worker_idle_timeout` without an event (their wait on the poll times out).
//!
//! Shutdown: the server's wake socket is in the event set, and every worker woken for it
//! re-arms it (registrations are edge-triggered), so that every worker's wait returns;
//! parked connections are closed at once (nothing of theirs is in flight), requests in
//! flight get the grace period.

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
#[cfg(not(target_os = "linux"))]
use mio::Events;
use mio::{Interest, Poll, Registry, Token};

use super::accept::{AcceptErrors, OnError, Throttle};
use super::finish_threads;
use super::threads::ThreadSet;
use crate::addr::Addr;
use crate::config::Config;
use crate::conn::{self, report, verified};
use crate::handler::{contained, run_request, Next, RequestHandler};
use crate::net::sealed::Listen;
use crate::net::stream::Stream;
use crate::request::StreamRequest;
use crate::shared::{Options, Shared};
use crate::stats::Counters;
use crate::sys;

/// The poller keys of the listener and of the wake socket; connections use `FIRST_CONN`
/// and up.
const LISTENER: usize = 0;
const WAKE: usize = 1;
const FIRST_CONN: usize = 2;

/// The shortest wait without an event after which a worker above the warm count leaves
/// (a zero `worker_idle_timeout` must not make the last waiting extra worker spin).
const MIN_IDLE: Duration = Duration::from_millis(100);

/// How long every worker must have been inside the same requests before the pool grows (long
/// enough that a CPU-starved moment of a saturated server is not taken for stuck workers).
const GROW_DELAY: Duration = Duration::from_millis(50);

/// How often the serving thread looks for clients waiting to be accepted while every worker
/// of a connection handler holds a connection (see `look_saturation`).
const WHOLE_LOOK: Duration = Duration::from_millis(1);

/// How long a worker that answered a busy client waits on its connection for the next
/// request before parking it (see `Inner::linger`). The window is also what makes a client
/// busy (`Conn::hot`): one whose last request came within it of the reply before, that is,
/// one the wait would have caught. So the window adapts per connection: a client that
/// answers within it is waited for every time; one that missed it parks at once after each
/// reply until it is quick again. It is long beside a loopback or LAN round trip (tens of
/// microseconds) and short beside what a thread costs to hold; a socket timeout of 10 ms is
/// served by the kernel's timer wheel, with no timer reprogrammed per wait.
const LINGER: Duration = Duration::from_millis(10);
const HOT: Duration = LINGER;

/// The most accepting threads a pool starts with (half its warm workers; see
/// `accepting_threads`).
const MAX_ACCEPTING: usize = 8;

/// At shutdown, on a socket shared with another process: how long this process goes on
/// connecting to itself to end its accepting threads' `accept`, and how long one such
/// connection may take (see `Inner::end_accepts`).
const WAKE_LIMIT: Duration = Duration::from_secs(1);
const WAKE_CONNECT: Duration = Duration::from_millis(200);

/// How long an accepting thread waits for a client when its `accept` did not block (the
/// socket shared with a process that made it non-blocking) before it looks again.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

thread_local! {
    /// Set on an accepting thread (`Inner::accept_loop`): `linger` hands a busy client over
    /// to the event set instead of keeping it.
    static ACCEPTING: Cell<bool> = const { Cell::new(false) };
}

/// A kept connection and its handler's state.
struct Conn<H> {
    req: StreamRequest,
    /// Made once the connection is open (its handshake done, see `opening`).
    handler: Option<H>,
    peer: Addr,
    /// Set while the client has yet to start its PROXY header or TLS handshake: the
    /// connection waits for its first bytes in the event set like a parked one (a silent
    /// client holds no worker), until this deadline (the sweep then closes it).
    opening: Option<Instant>,
    /// Registered in the poller (added at its first parking, and again after a linger,
    /// which takes it out; it stays while the connection is served).
    registered: bool,
    /// Its slot in the slab, once it has been parked: kept until it closes, so that the
    /// registration's key stays valid while it is served (see `Parking`).
    key: Option<usize>,
    /// An event said the client closed its side: its EOF may be unread (it came with the
    /// last request, in the same edge-triggered event, and raises no other).
    peer_closed: bool,
    /// `Inner::waits` when it was last parked: an event from a wait that returned no later
    /// may predate the reads of the request that followed, and is checked before it is
    /// served (one from a later wait is read at once: at worst the read finds nothing).
    parked_after: u64,
    /// When its last request ended (or it opened): idle since then, for the idle timeout
    /// (a record without data, a TLS key update, is no request and does not reset it).
    served_at: Instant,
    /// Its client sent its last request within `HOT` of the reply before (or it is new):
    /// worth waiting for on the worker that served it.
    hot: bool,
    /// Its client has once sent a request within `HOT` of the reply before: a busy client,
    /// for which the pool may grow (`linger`). A new connection is waited for only by a
    /// worker that is spare: most clients that connect, ask and go (a health check, a
    /// one-shot client) would otherwise each start a worker to watch the event set.
    proven: bool,
    /// It has been sent a reply: `served_at` is when the last one ended (not the open).
    replied: bool,
    /// When it was accepted, for `socketserver_connection_duration_seconds`.
    opened: Instant,
    /// When a worker took it for the event that said its request came: the start of that
    /// request (read once, for `hot` and the request's duration).
    taken_at: Option<Instant>,
}

/// The parked connections: a slab whose keys carry a generation, so that an event for a
/// connection that closed never reaches the connection that reused its slot.
///
/// A connection keeps its slot from its first parking until it closes; while a worker
/// serves it the slot is empty and `busy`. Its registration (edge-triggered) stays armed
/// all that time under the same key, so parking it again costs no system call: an event
/// that comes while it is served (its client sent more) finds the slot busy and marks it
/// `pending`, and the worker that parks it sees the mark, under the same lock, and reads
/// again instead. No event is lost between the worker's last read and the parking.
struct Parking<H> {
    /// Which shard this is (see `SHARDS`).
    shard: usize,
    slots: Vec<Slot<H>>,
    free: Vec<usize>,
}

struct Slot<H> {
    generation: usize,
    conn: Option<Box<Conn<H>>>,
    /// Taken by a worker (being served or lingering), not closed.
    busy: bool,
    /// An event came while it was busy.
    pending: bool,
}

/// What an event's key found in the slab.
enum Found<H> {
    /// The parked connection: now busy, the caller serves it.
    Conn(Box<Conn<H>>),
    /// Nothing to do: the connection is being served (the event is remembered for its
    /// parking), or it closed (the key's generation is gone).
    Nothing,
}

/// The slab is split in `SHARDS` parts, each under its own lock, so that workers parking
/// and taking different connections rarely wait for each other (one lock for all made
/// about a third of the lock waits of a busy server). A key's low bits name its shard.
const SHARD_BITS: u32 = 4;
const SHARDS: usize = 1 << SHARD_BITS;
/// Slot index bits in a key (16 M slots per shard); the generation takes the rest.
const INDEX_BITS: u32 = 24;
const GEN_BITS: u32 = usize::BITS - SHARD_BITS - INDEX_BITS - 2;

fn key(shard: usize, index: usize, generation: usize) -> usize {
    let generation = generation & ((1 << GEN_BITS) - 1);
    FIRST_CONN + (shard | (index << SHARD_BITS) | (generation << (SHARD_BITS + INDEX_BITS)))
}

/// The shard, the slot index and the (truncated) generation a key names.
fn unkey(key: usize) -> (usize, usize, usize) {
    let k = key - FIRST_CONN;
    (
        k & (SHARDS - 1),
        (k >> SHARD_BITS) & ((1 << INDEX_BITS) - 1),
        k >> (SHARD_BITS + INDEX_BITS),
    )
}

/// The shard a key names.
fn shard_of(key: usize) -> usize {
    unkey(key).0
}

impl<H> Parking<H> {
    fn new(shard: usize) -> Parking<H> {
        Parking {
            shard,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// A slot for a connection parked for the first time; its key.
    fn insert(&mut self, mut conn: Box<Conn<H>>) -> usize {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                    busy: false,
                    pending: false,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        let key = key(self.shard, index, slot.generation);
        conn.key = Some(key);
        slot.conn = Some(conn);
        slot.busy = false;
        slot.pending = false;
        key
    }

    /// The slot `key` names, if it still belongs to the connection the key was made for.
    fn slot(&mut self, key: usize) -> Option<&mut Slot<H>> {
        let (_, index, generation) = unkey(key);
        let slot = self.slots.get_mut(index)?;
        (slot.generation & ((1 << GEN_BITS) - 1) == generation).then_some(slot)
    }

    /// An event for `key`: takes the connection if it is parked there (its slot stays, busy),
    /// or marks it pending if a worker has it.
    fn take(&mut self, key: usize) -> Found<H> {
        let Some(slot) = self.slot(key) else {
            return Found::Nothing;
        };
        match slot.conn.take() {
            Some(conn) => {
                slot.busy = true;
                slot.pending = false;
                Found::Conn(conn)
            }
            None => {
                slot.pending |= slot.busy;
                Found::Nothing
            }
        }
    }

    /// Puts a busy connection back in its slot, unless an event came for it meanwhile:
    /// then it is handed back (still busy) and the caller reads again.
    fn put_back(&mut self, key: usize, mut conn: Box<Conn<H>>) -> Option<Box<Conn<H>>> {
        let Some(slot) = self.slot(key) else {
            // Cannot happen (only its worker frees a busy slot); if it did, the connection
            // is handed back without a slot, to be given a new one.
            conn.key = None;
            return Some(conn);
        };
        if std::mem::take(&mut slot.pending) {
            return Some(conn);
        }
        slot.busy = false;
        slot.conn = Some(conn);
        None
    }

    /// Frees a connection's slot (it is closing).
    fn free(&mut self, key: usize) {
        let (_, index, _) = unkey(key);
        if let Some(slot) = self.slot(key) {
            slot.conn = None;
            slot.busy = false;
            slot.pending = false;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index);
        }
    }

    /// Takes every parked connection for which `expired` holds (their slots freed).
    fn take_where(&mut self, mut expired: impl FnMut(&Conn<H>) -> bool) -> Vec<Box<Conn<H>>> {
        let mut out = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.conn.as_deref().is_some_and(&mut expired) {
                if let Some(mut conn) = slot.conn.take() {
                    conn.key = None;
                    out.push(conn);
                }
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(index);
            }
        }
        out
    }
}

/// Everything the workers share.
pub(crate) struct Inner<L, H> {
    listener: L,
    registry: Registry,
    parking: Box<[Mutex<Parking<H>>]>,
    factory: Box<dyn Fn() -> H + Send + Sync>,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    /// Connections open (parked or being served), against `max_connections`.
    live: AtomicUsize,
    /// The listener is not re-armed while `live` is at the limit.
    paused: AtomicBool,
    /// The error that made accepting impossible (it ends `serve`).
    fatal: Mutex<Option<io::Error>>,
    /// The server's one classification of accept errors and its one back-off.
    errors: AcceptErrors,
    /// While backing off (descriptors exhausted), when the serving thread takes the listener
    /// back into the event set; a message on `kick` tells it the time changed.
    resume_at: Mutex<Option<Instant>>,
    /// Set while `resume_at` is: an accepting thread's look before each `accept` takes no
    /// lock.
    backing_off: AtomicBool,
    kick: (Sender<()>, Receiver<()>),
    /// The warning that the connection limit is reached: at most one a second.
    full_warned: Throttle,
    /// The event set the idle workers wait on (see `Waiter`).
    poll: Waiter,
    /// Waits on the poll that returned events (counted once each returned).
    waits: AtomicU64,
    /// Workers running, and those of them not serving (waiting for the poll or in it).
    workers: AtomicUsize,
    idle: AtomicUsize,
    /// Workers kept however idle, the most there may be, and how long an extra one waits
    /// for an event before it leaves.
    warm: usize,
    limit: usize,
    worker_idle: Duration,
    /// Set when `finish` has taken the thread set: no worker starts after it.
    closed: AtomicBool,
    threads: Mutex<ThreadSet>,
    /// Events served to their end, by every worker: progress, for the growth check.
    finished: AtomicUsize,
    /// Raised when the last waiting worker takes an event; ended by the serving thread
    /// once a worker waits again (`look_saturation`).
    saturation: Watch,
    /// Connection handlers (`serve`): each connection is one request that never parks,
    /// run as soon as the connection is open (the server may speak first). It holds its
    /// worker to its end, so the pool grows for every client waiting to be accepted.
    whole: bool,
    /// How many accepting threads the pool keeps (0: the listener is in the event set
    /// instead; see `accepting_threads`), how many run, and how many of them are in
    /// `accept` (or about to be).
    acceptors: usize,
    accepting_now: AtomicUsize,
    free_acceptors: AtomicUsize,
    /// Where accepting threads wait while accepting is paused or backing off; shutdown and
    /// a closing connection wake them.
    room: (Mutex<()>, Condvar),
    /// Raised when the last free accepting thread took a connection: the serving thread
    /// looks whether clients wait with none to accept them (`look_acceptors`).
    no_acceptor: Watch,
    /// At shutdown on a shared socket: the addresses this process connects from to end its
    /// accepting threads' `accept` (see `end_accepts`); such a connection is closed unserved.
    wake_peers: Mutex<Vec<std::net::SocketAddr>>,
}

/// How many of a pool's threads accept for themselves, blocked in `accept(2)`, each
/// serving what it accepted, as a thread-per-connection server's threads do: no event-set
/// wait and no re-arm of the listener per connection (measured under churn: 6 system
/// calls per connection instead of 7.5, server CPU 0.945x; BENCHMARKS.md, "One engine:
/// churn's client ports"). Half the warm workers, at most `MAX_ACCEPTING`, for request
/// handlers on a TCP listener on Linux (shutdown ends a blocked `accept` by shutting the
/// listener down, Linux's behaviour, or on a socket shared with systemd or a restart's new
/// process, by a connection to itself: see `Inner::end_accepts`), without a PROXY header
/// or TLS handshake (a handshake may be slow: it waits in the event set), in a pool that
/// can grow. Otherwise 0: the listener is in the event set and any idle worker accepts.
///
/// The listener is made blocking. On a shared socket that flag is the other process's
/// too: a restart's new process of the same program sets it the same way; one that makes
/// it non-blocking leaves these threads waiting in `poll` between clients (`ACCEPT_POLL`).
fn accepting_threads(listener: &dyn Any, cfg: &Config, whole: bool) -> usize {
    let f = &cfg.flavor;
    let able = cfg!(any(target_os = "linux", target_os = "android"))
        && listener.is::<TcpListener>()
        && !whole
        && !conn::has_handshake(cfg)
        && f.limit > f.workers;
    match able {
        true => (f.workers / 2).min(MAX_ACCEPTING),
        false => 0,
    }
}

/// The most events one wait takes from the kernel (the rest stay there for the next), where
/// workers take turns waiting (not on Linux: see `Waiter`).
#[cfg(not(target_os = "linux"))]
const BATCH: usize = 64;

/// The event set, and the way idle workers wait on it.
///
/// On Linux every idle worker waits in `epoll_wait` at once, for one event: the kernel wakes
/// one waiter per event (the one that began waiting last, so that extra workers are the
/// ones left to time out), and a waiter that leaves events in the ready list wakes the
/// next. A worker taking an event hands nothing over: the others are waiting already (a
/// turn under a lock costs a `futex` wake-up per event: most of the churn row's extra
/// system calls). Elsewhere (kqueue, through mio, whose `Poll::poll` takes the poll `&mut`)
/// workers take turns: the one waiting holds a lock, takes one of the events it got and
/// leaves the rest under the lock, where the workers after it take theirs without a
/// system call.
struct Waiter {
    #[cfg(target_os = "linux")]
    poll: Poll,
    #[cfg(not(target_os = "linux"))]
    turn: Mutex<Turn>,
}

/// The poll, with the events its last wait returned that no worker has taken yet.
#[cfg(not(target_os = "linux"))]
struct Turn {
    poll: Poll,
    events: Events,
    ready: VecDeque<Ready>,
}

/// An event for a worker: its key, whether it said the client closed its side, and the
/// number of the wait that returned it (see `Conn::parked_after`).
#[derive(Clone, Copy)]
struct Ready {
    token: Token,
    read_closed: bool,
    wait: u64,
}

impl Waiter {
    fn new(poll: Poll) -> Waiter {
        #[cfg(target_os = "linux")]
        return Waiter { poll };
        #[cfg(not(target_os = "linux"))]
        return Waiter {
            turn: Mutex::new(Turn {
                poll,
                events: Events::with_capacity(BATCH),
                ready: VecDeque::with_capacity(BATCH),
            }),
        };
    }

    /// The next event, or `None` if `deadline` (`None`: never) came first. Each wait that
    /// returns events is numbered from `waits` once it has returned.
    #[cfg(target_os = "linux")]
    fn next(&self, waits: &AtomicU64, deadline: Option<Instant>) -> io::Result<Option<Ready>> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let Some((data, bits)) = sys::epoll_wait_one(self.poll.as_raw_fd(), timeout)? else {
            return Ok(None);
        };
        // As mio reads them: both halves closed, or the client's FIN (with a registration
        // for reading, mio asks for `EPOLLRDHUP`).
        let has = |flag: libc::c_int| bits & flag as u32 != 0;
        Ok(Some(Ready {
            token: Token(data as usize),
            read_closed: has(libc::EPOLLHUP) || (has(libc::EPOLLIN) && has(libc::EPOLLRDHUP)),
            wait: waits.fetch_add(1, SeqCst) + 1,
        }))
    }

    /// The next event, or `None` if `deadline` (`None`: never) came first. Each wait that
    /// returns events is numbered from `waits` once it has returned.
    #[cfg(not(target_os = "linux"))]
    fn next(&self, waits: &AtomicU64, deadline: Option<Instant>) -> io::Result<Option<Ready>> {
        let mut turn = lock(&self.turn);
        if let Some(ready) = turn.ready.pop_front() {
            return Ok(Some(ready));
        }
        let Turn {
            poll,
            events,
            ready,
        } = &mut *turn;
        // Queued for the turn that long already: no wait at all.
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        poll.poll(events, timeout)?;
        let wait = waits.fetch_add(1, SeqCst) + 1;
        ready.extend(events.iter().map(|e| Ready {
            token: e.token(),
            read_closed: e.is_read_closed(),
            wait,
        }));
        Ok(ready.pop_front())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A watch the serving thread keeps while a condition holds (no worker waiting on the
/// event set; no accepting thread free): raised by the thread that made it hold, once per
/// watch (the flag) rather than once per event, with a message that wakes the serving
/// thread; looked at `GROW_DELAY` (or `WHOLE_LOOK`) apart, and ended by the look that
/// finds the condition over.
struct Watch {
    on: AtomicBool,
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Watch {
    fn new() -> Watch {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Watch {
            on: AtomicBool::new(false),
            tx,
            rx,
        }
    }

    /// The condition began: starts the watch unless it runs already.
    fn raise(&self) {
        if !self.on.swap(true, SeqCst) {
            let _ = self.tx.try_send(());
        }
    }

    /// A look found the condition over: ends the watch, unless it holds again by the time
    /// the flag is down (a thread made it hold between the look and the flag: the watch
    /// goes on if the flag is still ours, else that thread's message starts it again).
    /// Says whether the watch goes on.
    fn end_unless(&self, holds: impl Fn() -> bool) -> bool {
        self.on.store(false, SeqCst);
        holds() && !self.on.swap(true, SeqCst)
    }
}

/// A running parked-connection pool.
pub(crate) struct Parked<L: Listen, H: RequestHandler> {
    inner: Arc<Inner<L, H>>,
}

impl<L: Listen, H: RequestHandler> Parked<L, H> {
    /// Registers the listener and the wake socket and starts the flavour's warm workers.
    pub(crate) fn start(
        listener: L,
        factory: Box<dyn Fn() -> H + Send + Sync>,
        shared: &Arc<Shared>,
        cfg: &Arc<Config>,
        whole: bool,
        shared_socket: bool,
    ) -> io::Result<Parked<L, H>> {
        let warm = cfg.flavor.workers.max(1);
        let acceptors = accepting_threads(&listener, cfg, whole);
        if acceptors > 0 {
            // No read timeout on the listener: an accepting thread's `accept` would end at
            // it (the linger sets its own, one `setsockopt` per connection).
            crate::net::options::pass_on(&listener, cfg, None, &shared.passed_on);
            socket2::SockRef::from(&listener).set_nonblocking(false)?;
        } else if !whole && !conn::has_handshake(cfg) {
            // A request handler's connections start with the linger's read timeout: a busy
            // client's first linger then costs no `setsockopt` (the handler's own reads set
            // theirs when they block, see `SocketReader::apply_read_timeout`).
            crate::net::options::pass_on(&listener, cfg, Some(LINGER), &shared.passed_on);
        }
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        if acceptors == 0 {
            registry.register(
                &mut SourceFd(&listener.as_raw_fd()),
                Token(LISTENER),
                Interest::READABLE,
            )?;
        }
        registry.register(
            &mut SourceFd(&shared.wake_fd()),
            Token(WAKE),
            Interest::READABLE,
        )?;
        let inner = Arc::new(Inner {
            listener,
            registry,
            poll: Waiter::new(poll),
            waits: AtomicU64::new(0),
            parking: (0..SHARDS).map(|i| Mutex::new(Parking::new(i))).collect(),
            factory,
            shared: Arc::clone(shared),
            cfg: Arc::clone(cfg),
            live: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            fatal: Mutex::new(None),
            errors: AcceptErrors::new(shared, "accept"),
            resume_at: Mutex::new(None),
            backing_off: AtomicBool::new(false),
            kick: crossbeam_channel::bounded(1),
            full_warned: Throttle::new(),
            // All the warm workers are counted before any starts: one that takes an event
            // at once must not see itself as the last waiting worker and grow the pool.
            // The accepting threads are workers too (the limit and the warm count are the
            // pool's threads), never waiting on the event set.
            workers: AtomicUsize::new(warm),
            idle: AtomicUsize::new(warm - acceptors),
            warm,
            limit: cfg.flavor.limit.max(warm),
            worker_idle: cfg.flavor.worker_idle_timeout.max(MIN_IDLE),
            closed: AtomicBool::new(false),
            threads: Mutex::new(ThreadSet::new(Arc::clone(shared))),
            finished: AtomicUsize::new(0),
            saturation: Watch::new(),
            whole,
            acceptors,
            accepting_now: AtomicUsize::new(0),
            free_acceptors: AtomicUsize::new(0),
            room: (Mutex::new(()), Condvar::new()),
            no_acceptor: Watch::new(),
            wake_peers: Mutex::new(Vec::new()),
        });
        let view: Arc<dyn crate::metrics::EngineView> = inner.clone();
        shared.status.set_engine(Arc::downgrade(&view));
        let parked = Parked { inner };
        for _ in 0..warm - acceptors {
            if let Err(e) = spawn(&parked.inner) {
                shared.stop();
                // Not shut down if shared; it closes as the workers let go of it.
                parked.finish(Duration::ZERO, shared_socket);
                return Err(e);
            }
        }
        for _ in 0..acceptors {
            if let Err(e) = spawn_acceptor(&parked.inner) {
                shared.stop();
                parked.finish(Duration::ZERO, shared_socket);
                return Err(e);
            }
        }
        Ok(parked)
    }

    /// Blocks until shutdown begins; meanwhile closes the connections idle for longer than
    /// the idle timeout, joins the workers that left, watches whether the pool must grow
    /// (`look_saturation`) and ends accept back-offs. None of these blocks the others: a
    /// saturated pool is still swept. Returns the error that forced the stop, if any.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let inner = &self.inner;
        let done = lock(&inner.threads).done_receiver();
        let stop = &inner.shared.stop_rx;
        // Swept a few times per idle timeout and per handshake deadline; with neither, no
        // sweep (an hour is as good as never).
        let handshake =
            conn::has_handshake(&inner.cfg).then(|| conn::handshake_deadline(&inner.cfg));
        let every = [inner.cfg.idle_timeout, handshake]
            .into_iter()
            .flatten()
            .min()
            .map(|t| (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)))
            .unwrap_or(Duration::from_secs(3600));
        let mut next_sweep = Instant::now() + every;
        // While no worker waits on the event set: when to look next, and the progress
        // counted at the last look.
        let mut watch: Option<(Instant, usize)> = None;
        // While no accepting thread is free: when to look next.
        let mut accept_watch: Option<Instant> = None;
        loop {
            let mut next = next_sweep;
            if let Some((at, _)) = watch {
                next = next.min(at);
            }
            if let Some(at) = accept_watch {
                next = next.min(at);
            }
            if let Some(at) = *lock(&inner.resume_at) {
                next = next.min(at);
            }
            let left = next.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(stop) -> _ => break,
                recv(done) -> id => {
                    if let Ok(id) = id {
                        lock(&inner.threads).join(id);
                    }
                }
                recv(inner.saturation.rx) -> _ => {
                    if watch.is_none() {
                        let progress = inner.finished.load(Relaxed);
                        watch = Some((Instant::now() + inner.look_every(), progress));
                    }
                }
                recv(inner.kick.1) -> _ => {}
                recv(inner.no_acceptor.rx) -> _ => {
                    accept_watch.get_or_insert_with(|| Instant::now() + GROW_DELAY);
                }
                default(left) => {}
            }
            let now = Instant::now();
            if accept_watch.is_some_and(|at| now >= at) {
                accept_watch = inner.look_acceptors().then(|| now + GROW_DELAY);
            }
            if let Some((at, progress)) = watch {
                if now >= at {
                    watch = inner
                        .look_saturation(progress)
                        .map(|progress| (now + inner.look_every(), progress));
                }
            }
            inner.end_backoff(now);
            if now >= next_sweep {
                inner.sweep_idle();
                next_sweep = Instant::now() + every;
            }
        }
        match lock(&self.inner.fatal).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After shutdown began: stops accepting, closes every parked connection, lets requests
    /// in flight finish within `grace`, joins the workers, and closes what they parked
    /// meanwhile.
    /// `shared_socket`: the listener is another process's too (systemd, a restart), and is
    /// not shut down: that would stop it for them.
    pub(crate) fn finish(self, grace: Duration, shared_socket: bool) {
        let inner = &self.inner;
        let _ = inner
            .registry
            .deregister(&mut SourceFd(&inner.listener.as_raw_fd()));
        // Stop taking connections now; the descriptor closes when the last worker lets go
        // of it.
        inner.end_accepts(shared_socket);
        inner.wake_acceptors();
        // A restart's drain serves the open connections on, idle ones included, until they
        // close or the grace period ends; a stop answers what arrived and closes the rest.
        let draining = inner.shared.keeps_open();
        if !draining {
            inner.drain_parked();
        }
        // No worker starts after this (see `spawn`).
        inner.closed.store(true, SeqCst);
        let mut threads = std::mem::replace(
            &mut *lock(&inner.threads),
            ThreadSet::new(Arc::clone(&inner.shared)),
        );
        let grace = if draining {
            if !inner.shared.wait_drained(crate::time::after(grace)) {
                log::info!("restart: grace period over, closing the connections still open");
            }
            // Every connection is shut down; the workers, back at the event set, leave.
            inner.shared.force_close();
            let _ = inner.registry.register(
                &mut SourceFd(&inner.shared.wake_fd()),
                Token(WAKE),
                Interest::READABLE,
            );
            Duration::ZERO
        } else {
            grace
        };
        finish_threads(&inner.shared, &mut threads, grace);
        inner.close_all_parked();
        let _ = inner
            .registry
            .deregister(&mut SourceFd(&inner.shared.wake_fd()));
    }
}

/// Starts a worker already counted in `workers` and `idle` (by the caller, before: a
/// worker must never see itself missing), unless `finish` has begun (see `start_thread`).
fn spawn<L: Listen, H: RequestHandler>(inner: &Arc<Inner<L, H>>) -> io::Result<()> {
    start_thread(inner, "socketserver-worker", Inner::work, |i| {
        i.workers.fetch_sub(1, SeqCst);
        i.idle.fetch_sub(1, SeqCst);
    })
}

/// Starts an accepting thread (`Inner::accept_loop`) already counted in `workers` by the
/// caller, and counted in `accepting_now` here, unless `finish` has begun.
fn spawn_acceptor<L: Listen, H: RequestHandler>(inner: &Arc<Inner<L, H>>) -> io::Result<()> {
    inner.accepting_now.fetch_add(1, SeqCst);
    start_thread(inner, "socketserver-accept", Inner::accept_loop, |i| {
        i.accepting_now.fetch_sub(1, SeqCst);
        i.workers.fetch_sub(1, SeqCst);
    })
}

/// Starts one of the pool's threads under the threads' lock, unless `finish` has begun
/// (it takes the thread set under the same lock after closing: it never misses a thread);
/// `uncount` gives its counts back if it does not start.
fn start_thread<L: Listen, H: RequestHandler>(
    inner: &Arc<Inner<L, H>>,
    name: &str,
    run: fn(&Arc<Inner<L, H>>),
    uncount: fn(&Inner<L, H>),
) -> io::Result<()> {
    let thread = Arc::clone(inner);
    let mut threads = lock(&inner.threads);
    let closed = inner.closed.load(SeqCst);
    let spawned = if closed {
        Ok(())
    } else {
        threads.spawn(name, move || run(&thread))
    };
    if closed || spawned.is_err() {
        uncount(inner);
    }
    spawned
}

impl<L: Listen, H: RequestHandler> Inner<L, H> {
    /// An accepting thread: accepts a connection (blocked in `accept`), serves it as a
    /// worker would (its first request and a linger for the next one or its EOF: a client
    /// that connects, asks and goes is served whole here; one that stays is handed to the
    /// event set, see `linger`), and accepts again, until shutdown. One started because
    /// none was free (`look_acceptors`) leaves when it comes back and another is free.
    fn accept_loop(self: &Arc<Self>) {
        ACCEPTING.with(|a| a.set(true));
        loop {
            if self.shared.is_stopping() {
                break;
            }
            if self.accepting_now.load(SeqCst) > self.acceptors
                && self.free_acceptors.load(SeqCst) > 0
                && self
                    .accepting_now
                    .fetch_update(SeqCst, SeqCst, |n| (n > self.acceptors).then(|| n - 1))
                    .is_ok()
            {
                self.workers.fetch_sub(1, SeqCst);
                return;
            }
            if self.wait_to_accept() {
                continue;
            }
            self.accept_one();
        }
        self.accepting_now.fetch_sub(1, SeqCst);
        self.workers.fetch_sub(1, SeqCst);
    }

    /// An accepting thread waits here while accepting is paused (at `max_connections`) or
    /// backing off; shutdown ends the wait. Says whether it waited (then it looks again).
    fn wait_to_accept(&self) -> bool {
        if !self.paused.load(SeqCst) && !self.backing_off.load(SeqCst) {
            return false;
        }
        let (m, cv) = &self.room;
        let g = lock(m);
        if self.shared.is_stopping() {
            return true;
        }
        let now = Instant::now();
        let resume = *lock(&self.resume_at);
        match resume {
            Some(t) if t > now => {
                drop(cv.wait_timeout(g, t - now));
            }
            Some(_) => {
                // The back-off is over: accepting again.
                self.back_off(None);
            }
            None if self.paused.load(SeqCst) => {
                drop(cv.wait(g));
            }
            None => {}
        }
        true
    }

    /// At shutdown: stops the listener taking connections and ends the accepting threads'
    /// `accept`. A socket of this process's own is shut down (Linux refuses new clients at
    /// once, and ends a blocked `accept` with EINVAL). One shared with another process (a
    /// restart's new process, systemd) must not be: that would stop it for them too. Then
    /// each accepting thread still blocked in `accept` is sent a connection from this
    /// process (to the listener's address, the loopback one if it listens on all), which it
    /// recognises by its source address and closes unserved. The kernel hands a connection
    /// to the thread that has waited longest, so another process's threads, which began
    /// waiting later, rarely take one; one that does sees a client that closes at once.
    /// Bounded by `WAKE_LIMIT`: a thread left blocked (a connection that cannot be made is
    /// logged) ends with the process.
    fn end_accepts(&self, shared_socket: bool) {
        if !shared_socket {
            let _ = socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
            return;
        }
        if self.acceptors == 0 {
            return;
        }
        let Ok(Addr::Inet(mut to)) = self.listener.local() else {
            return;
        };
        if to.ip().is_unspecified() {
            to.set_ip(match to {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let end = Instant::now() + WAKE_LIMIT;
        let most = 2 * self.accepting_now.load(SeqCst) + 2;
        let mut sent = Vec::new();
        let (m, cv) = &self.room;
        let mut g = lock(m);
        while self.free_acceptors.load(SeqCst) > 0 && sent.len() < most && Instant::now() < end {
            let before = self.free_acceptors.load(SeqCst);
            match self.wake_connection(to) {
                Ok(s) => sent.push(s),
                Err(e) => {
                    log::warn!(
                        "shutdown: cannot connect to {to} to end the accepting threads' wait \
                         ({e}); {before} stay in accept until the process exits"
                    );
                    break;
                }
            }
            // Until one thread took it (`accept_one` wakes this wait) or the next try.
            let until = (Instant::now() + WAKE_CONNECT).min(end);
            while self.free_acceptors.load(SeqCst) >= before {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                g = cv
                    .wait_timeout(g, until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        drop(g);
        let left = self.free_acceptors.load(SeqCst);
        if left > 0 {
            log::warn!(
                "shutdown: {left} accepting thread(s) stay in accept until the process exits"
            );
        }
    }

    /// A connection from this process to its own listener at `to`, its source address
    /// noted first in `wake_peers` (see `end_accepts`).
    fn wake_connection(&self, to: std::net::SocketAddr) -> io::Result<socket2::Socket> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        s.bind(&SockAddr::from(std::net::SocketAddr::new(to.ip(), 0)))?;
        let from = s.local_addr()?.as_socket();
        lock(&self.wake_peers).extend(from);
        s.connect_timeout(&SockAddr::from(to), WAKE_CONNECT)?;
        Ok(s)
    }

    /// Wakes the accepting threads waiting in `wait_to_accept`.
    fn wake_acceptors(&self) {
        if self.acceptors > 0 {
            let _guard = lock(&self.room.0);
            self.room.1.notify_all();
        }
    }

    /// On the serving thread, `GROW_DELAY` after the last free accepting thread took a
    /// connection (and again while none is free): if clients wait to be accepted, one more
    /// accepting thread starts (up to the flavour's limit), as the pool grows for workers
    /// held by long requests. Says whether to look again.
    fn look_acceptors(self: &Arc<Self>) -> bool {
        if self.shared.is_stopping() {
            return false;
        }
        if self.free_acceptors.load(SeqCst) > 0 {
            return self
                .no_acceptor
                .end_unless(|| self.free_acceptors.load(SeqCst) == 0);
        }
        // While accepting waits (at `max_connections`, or backing off) no client counts as
        // waiting, and the watch goes on looking every `GROW_DELAY`: ending it here would
        // need every way accepting resumes to start it again when no accepting thread is
        // free (all held by long requests), or clients would wait for one of them.
        if self.clients_waiting() > 0 && self.reserve_thread() {
            match spawn_acceptor(self) {
                Ok(()) => log::debug!(
                    "no accepting thread free for {GROW_DELAY:?}: {} now",
                    self.accepting_now.load(SeqCst)
                ),
                Err(e) => log::warn!("cannot start an accepting thread: {e}"),
            }
        }
        true
    }

    /// A worker: one event at a time, until shutdown (or, above the warm count, until it
    /// waited `worker_idle` for nothing).
    fn work(self: &Arc<Self>) {
        // Since when it has waited without work; read only for a worker above the warm
        // count (the only one that leaves), so a warm one reads no clock per event.
        let mut idle_since = None;
        loop {
            if self.ending() {
                break;
            }
            // An extra worker waits no longer than its idle time left.
            let deadline = (self.workers.load(SeqCst) > self.warm)
                .then(|| *idle_since.get_or_insert_with(Instant::now) + self.worker_idle);
            let token = match self.poll.next(&self.waits, deadline) {
                Ok(token) => token,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("waiting for events failed, stopping the server: {e}");
                    lock(&self.fatal).get_or_insert(e);
                    self.shared.stop();
                    break;
                }
            };
            let Some(Ready {
                token,
                read_closed,
                wait,
            }) = token
            else {
                if idle_since.is_some_and(|t| t.elapsed() >= self.worker_idle) {
                    if self.retire() {
                        return;
                    }
                    idle_since = None;
                }
                continue;
            };
            match token.0 {
                WAKE if self.shared.keeps_open() => {
                    // A restart's drain: the workers serve the open connections on. The
                    // wake socket leaves the event set (it would report at every wait);
                    // `finish` puts it back when the grace period ends.
                    let _ = self
                        .registry
                        .deregister(&mut SourceFd(&self.shared.wake_fd()));
                    continue;
                }
                WAKE => {
                    // Edge-triggered: re-arm it, so that the next waiting worker wakes too.
                    let _ = self.registry.reregister(
                        &mut SourceFd(&self.shared.wake_fd()),
                        Token(WAKE),
                        Interest::READABLE,
                    );
                    break;
                }
                // The socket is another process's now (a restart): never accept from it.
                LISTENER if self.shared.is_stopping() => continue,
                LISTENER => {
                    self.busy();
                    self.accept_one();
                }
                key => {
                    let found = lock(&self.parking[shard_of(key)]).take(key);
                    let Found::Conn(mut conn) = found else {
                        continue;
                    };
                    let now = Instant::now();
                    conn.hot = now.saturating_duration_since(conn.served_at) < HOT;
                    conn.proven |= conn.hot && conn.replied;
                    conn.taken_at = Some(now);
                    conn.peer_closed |= read_closed;
                    self.busy();
                    if wait <= conn.parked_after
                        && conn.req.nothing_buffered()
                        && !sys::readable_now(conn.req.stream().as_raw_fd())
                    {
                        // An event from before its last request was read: nothing new.
                        self.park_or_serve(conn);
                    } else {
                        self.readable(conn);
                    }
                }
            }
            self.finished.fetch_add(1, Relaxed);
            self.idle.fetch_add(1, SeqCst);
            idle_since = None;
        }
        self.workers.fetch_sub(1, SeqCst);
        self.idle.fetch_sub(1, SeqCst);
    }

    /// This worker goes to serve: if it was the last one waiting, the serving thread is
    /// told to watch whether the pool must grow (`look_saturation`).
    fn busy(self: &Arc<Self>) {
        if self.idle.fetch_sub(1, SeqCst) == 1 {
            self.saturation.raise();
        }
    }

    /// How long the serving thread waits between looks while no worker waits on the event
    /// set (`look_saturation`). At the limit there is nothing to start: a full pool of
    /// connection handlers is looked at `GROW_DELAY` apart, not every `WHOLE_LOOK` (a
    /// thousand wake-ups a second for as long as it stays full).
    fn look_every(&self) -> Duration {
        match self.whole && self.workers.load(SeqCst) < self.limit {
            true => WHOLE_LOOK,
            false => GROW_DELAY,
        }
    }

    /// On the serving thread, `look_every` after the last waiting worker took an event (or
    /// after the last look), while still no worker waits: whether the pool must grow.
    /// Returns the progress to compare with at the next look, or `None` once a worker waits
    /// again.
    ///
    /// If a worker came back to the event set since `progress` was counted, more threads
    /// would not serve faster: nothing starts. Otherwise every worker is inside a long
    /// request (or on a pipelining client), and:
    /// - request handlers: one more worker starts (up to the limit), `GROW_DELAY` apart;
    /// - connection handlers, which hold their workers to their connections' ends: as many
    ///   start as clients wait in the listener's queue, and at least one, to wait for the
    ///   next client, `WHOLE_LOOK` apart. A pool whose workers all hold long connections
    ///   (a chat) has a worker waiting for the next client again within a millisecond, and
    ///   a burst of clients gets a worker each at once. Not at the moment the last worker
    ///   takes a connection, as before: on a saturated CPU, workers whose clients are gone
    ///   wait to run and read their EOF, and a pool that grew for them (measured: 100
    ///   threads for 16 clients connecting and closing) serves no faster.
    fn look_saturation(self: &Arc<Self>, progress: usize) -> Option<usize> {
        let now = self.finished.load(Relaxed);
        if self.idle.load(SeqCst) > 0 {
            return self
                .saturation
                .end_unless(|| self.idle.load(SeqCst) == 0)
                .then_some(now);
        }
        if self.shared.is_stopping() {
            return Some(now);
        }
        let more = match self.whole {
            // Workers come back: more threads would not serve faster.
            _ if now != progress => 0,
            // At the limit: nothing can start, and the queue is not worth a system call.
            _ if self.workers.load(SeqCst) >= self.limit => 0,
            true => self.clients_waiting().max(1),
            // Every worker has been away from the event set for GROW_DELAY: one more.
            false => 1,
        };
        for _ in 0..more {
            match self.grow() {
                Some(Ok(())) => log::debug!(
                    "no worker back at the event set for {:?}: {} workers now",
                    self.look_every(),
                    self.workers.load(SeqCst)
                ),
                Some(Err(e)) => log::warn!("cannot grow the pool: {e}"),
                None => break,
            }
        }
        Some(now)
    }

    /// How many clients wait in the listener's queue to be accepted (TCP on Linux: its
    /// length, one `getsockopt`; elsewhere, and for Unix sockets, 1 if any waits). None
    /// while accepting is paused (at `max_connections`, or backing off).
    fn clients_waiting(&self) -> usize {
        if self.paused.load(SeqCst) || self.backing_off.load(SeqCst) {
            return 0;
        }
        let fd = self.listener.as_raw_fd();
        #[cfg(target_os = "linux")]
        if let Ok(n) = sys::accept_queue_len(fd) {
            return n;
        }
        usize::from(sys::readable_now(fd))
    }

    /// A worker waited `worker_idle` for nothing: it leaves if it is above the warm count
    /// and another worker still waits (`true`); it takes itself off the idle count by a
    /// compare-and-swap, so two leaving at once cannot both take the last two.
    fn retire(&self) -> bool {
        loop {
            let idle = self.idle.load(SeqCst);
            if idle <= 1 || self.workers.load(SeqCst) <= self.warm {
                return false;
            }
            if self
                .idle
                .compare_exchange(idle, idle - 1, SeqCst, SeqCst)
                .is_ok()
            {
                self.workers.fetch_sub(1, SeqCst);
                return true;
            }
        }
    }

    /// Accepts one connection, re-arms the listener (unless at the connection limit) and
    /// serves or parks the new connection.
    fn accept_one(self: &Arc<Self>) {
        // A place under `max_connections` is reserved before accepting: with edge-triggered
        // events two workers may be accepting at once, and neither may pass the limit.
        let max = self.cfg.max_connections;
        if self
            .live
            .fetch_update(SeqCst, SeqCst, |l| (l < max).then_some(l + 1))
            .is_err()
        {
            self.pause_accepting();
            return;
        }
        let blocking = self.acceptors > 0;
        if blocking {
            self.free_acceptors.fetch_add(1, SeqCst);
            // Counted first, looked after: shutdown either finds this thread counted (and
            // ends its `accept`, see `end_accepts`) or this thread sees it.
            if self.shared.is_stopping() {
                self.free_acceptors.fetch_sub(1, SeqCst);
                self.live.fetch_sub(1, SeqCst);
                return self.wake_acceptors();
            }
        }
        let accepted = self.listener.accept_stream();
        if blocking && self.free_acceptors.fetch_sub(1, SeqCst) == 1 && accepted.is_ok() {
            self.no_acceptor.raise();
        }
        if blocking && self.shared.is_stopping() {
            // `end_accepts` waits for the count to fall.
            self.wake_acceptors();
            if let Ok((_, Addr::Inet(peer))) = &accepted {
                if lock(&self.wake_peers).contains(peer) {
                    return self.closed_one(); // this process's own, sent to end the wait
                }
            }
        }
        match accepted {
            Ok((stream, peer)) => {
                // Taken at once, in the order of the accepts (see `PassedOn`).
                let options = self.shared.passed_on.take();
                self.errors.success();
                let live = self.live.load(SeqCst);
                if live < max {
                    self.rearm_listener();
                } else {
                    if self.full_warned.allow() {
                        log::warn!(
                            "{live} connections open (max_connections): accepting again when one closes"
                        );
                    }
                    self.pause_accepting();
                }
                if verified(&self.cfg, &self.shared, &peer) {
                    self.open(stream, peer, options);
                } else {
                    drop(stream);
                    self.closed_one();
                }
            }
            Err(e) => {
                self.live.fetch_sub(1, SeqCst);
                if blocking && self.shared.is_stopping() {
                    return; // the listener was shut down for shutdown
                }
                self.accept_failed(e);
            }
        }
    }

    /// Takes the listener out of the poll (an edge-triggered registration would go on
    /// reporting new clients) until a connection closes.
    fn pause_accepting(&self) {
        if self.acceptors == 0 {
            let _ = self
                .registry
                .deregister(&mut SourceFd(&self.listener.as_raw_fd()));
        }
        self.paused.store(true, SeqCst);
        // A close may have come between the count and the flag.
        self.resume_accepting();
    }

    /// A failed accept, classified once for the whole server (`AcceptErrors`). A back-off
    /// does not sleep on this worker (a sleeping worker is a busy one, and the pool would
    /// grow past it): the listener leaves the event set, and the serving thread takes it
    /// back when the back-off ends (`end_backoff`).
    fn accept_failed(&self, e: io::Error) {
        match self.errors.on_error(e) {
            OnError::Wait if self.acceptors > 0 => {
                // Not blocked: another process holding the socket made it non-blocking
                // (see `accepting_threads`). Waits for a client rather than spin.
                let fd = self.listener.as_raw_fd();
                let _ = sys::poll(&[(fd, sys::Interest::Read)], Some(ACCEPT_POLL));
            }
            OnError::Wait | OnError::Retry => self.rearm_listener(),
            OnError::Backoff(d) if self.acceptors > 0 => {
                // The accepting threads wait it out in `wait_to_accept`.
                self.back_off(Some(Instant::now() + d));
            }
            OnError::Backoff(d) => {
                let _ = self
                    .registry
                    .deregister(&mut SourceFd(&self.listener.as_raw_fd()));
                self.back_off(Some(Instant::now() + d));
                let _ = self.kick.0.try_send(());
            }
            OnError::Fatal(e) => {
                lock(&self.fatal).get_or_insert(e);
                self.shared.stop();
            }
        }
    }

    /// On the serving thread: ends a back-off whose time has come (the listener goes back
    /// into the event set, unless it is paused at the connection limit).
    fn end_backoff(&self, now: Instant) {
        let ended = {
            let mut at = lock(&self.resume_at);
            let ended = at.take_if(|t| *t <= now).is_some();
            self.backing_off.store(at.is_some(), SeqCst);
            ended
        };
        if self.acceptors > 0 {
            // The accepting threads wait it out themselves (`wait_to_accept`); ended here
            // too, so that a back-off past its time is not left to the serving thread's
            // next wait (it would not wait at all) while every accepting thread serves.
            if ended {
                self.wake_acceptors();
            }
            return;
        }
        if ended && !self.paused.load(SeqCst) && !self.shared.is_stopping() {
            // Registering reports at once if clients wait in the backlog.
            let _ = self.registry.register(
                &mut SourceFd(&self.listener.as_raw_fd()),
                Token(LISTENER),
                Interest::READABLE,
            );
        }
    }

    /// Starts a back-off until `until`, or ends it (`None`).
    fn back_off(&self, until: Option<Instant>) {
        let mut at = lock(&self.resume_at);
        *at = until;
        self.backing_off.store(until.is_some(), SeqCst);
    }

    fn rearm_listener(&self) {
        if self.acceptors == 0 && !self.shared.is_stopping() {
            // Re-armed: an accept still pending in the backlog reports at once.
            let _ = self.registry.reregister(
                &mut SourceFd(&self.listener.as_raw_fd()),
                Token(LISTENER),
                Interest::READABLE,
            );
        }
    }

    /// Re-arms the listener if it was paused at the limit and a connection closed since
    /// (not during a back-off: the serving thread ends that).
    fn resume_accepting(&self) {
        if self.live.load(SeqCst) < self.cfg.max_connections
            && lock(&self.resume_at).is_none()
            && self
                .paused
                .compare_exchange(true, false, SeqCst, SeqCst)
                .is_ok()
            && !self.shared.is_stopping()
        {
            if self.acceptors > 0 {
                return self.wake_acceptors();
            }
            // Registering reports at once if clients wait in the backlog.
            let _ = self.registry.register(
                &mut SourceFd(&self.listener.as_raw_fd()),
                Token(LISTENER),
                Interest::READABLE,
            );
        }
    }

    fn closed_one(&self) {
        self.live.fetch_sub(1, SeqCst);
        if self.paused.load(SeqCst) {
            self.resume_accepting();
        }
    }

    /// A new connection: configured and given its handler, then served if its first request
    /// is there already, else parked.
    fn open(self: &Arc<Self>, stream: Stream, peer: Addr, options: Options) {
        // The first request (or the first bytes of the handshake) is often there with the
        // connection. (A connection handler runs at once, whatever came.)
        let handshake = conn::has_handshake(&self.cfg);
        let readable = handshake && sys::readable_now(stream.as_raw_fd());
        let req = match conn::accept(stream, peer, options, &self.shared, &self.cfg, false) {
            Ok(req) => req,
            Err(_) => return self.closed_one(), // logged
        };
        let now = Instant::now();
        let conn = Box::new(Conn {
            peer: req.peer_addr().clone(),
            req,
            handler: None,
            opening: None,
            registered: false,
            key: None,
            peer_closed: false,
            parked_after: 0,
            served_at: now,
            taken_at: None,
            hot: true,
            proven: false,
            replied: false,
            opened: now,
        });
        if !handshake {
            // The look is the read itself: the request is in the buffer if it came (no
            // `poll` first).
            let mut conn = conn;
            let readable = match self.whole {
                true => false,
                false => match conn.req.read_now() {
                    Ok(came) => came,
                    Err(e) => {
                        // The client went away (a reset): reported as a request whose read
                        // failed would be (a disconnect: a health check is one).
                        let peer = conn.peer.clone();
                        self.close(conn);
                        let err = crate::error::HandlerError::Io(e);
                        report(
                            &self.shared,
                            &self.cfg,
                            &peer,
                            Err(err),
                            None,
                            now.elapsed(),
                        );
                        return;
                    }
                },
            };
            return self.opened(conn, readable);
        }
        if readable {
            return self.handshake(conn);
        }
        // A client that says nothing yet waits for its first bytes in the event set, with
        // the handshake's deadline, and holds no worker.
        let mut conn = conn;
        conn.opening = Some(Instant::now() + conn::handshake_deadline(&self.cfg));
        self.park_or_serve(conn);
    }

    /// The client's first bytes have come: its PROXY header and TLS handshake, on this
    /// worker, within their deadlines; then the connection is open.
    fn handshake(self: &Arc<Self>, mut conn: Box<Conn<H>>) {
        conn.opening = None;
        if conn::handshake(&mut conn.req, &self.shared, &self.cfg).is_err() {
            return self.close(conn); // logged and counted
        }
        conn.peer = conn.req.peer_addr().clone();
        // The client's first request may have come with its last handshake flight.
        let readable = !self.whole
            && (!conn.req.nothing_buffered() || sys::readable_now(conn.req.stream().as_raw_fd()));
        self.opened(conn, readable);
    }

    /// An open connection: given its handler, then served if its first request is there
    /// already, else parked.
    fn opened(self: &Arc<Self>, mut conn: Box<Conn<H>>, readable: bool) {
        match contained(|| (self.factory)()) {
            Ok(h) => conn.handler = Some(h),
            Err(msg) => {
                Counters::bump(&self.shared.counters.panics);
                log::error!("{}: the handler factory panicked: {msg}", conn.peer);
                return self.close(conn);
            }
        }
        if self.whole {
            return self.serve_whole(conn);
        }
        if readable {
            self.readable(conn);
        } else {
            self.park_or_serve(conn);
        }
    }

    /// The connection's socket is readable (or plaintext is buffered): serves its request,
    /// or, with TLS, parks it again if what came was a record without data (a key update),
    /// or closes it if the record was bad.
    fn readable(self: &Arc<Self>, mut conn: Box<Conn<H>>) {
        if conn.opening.is_some() {
            return self.handshake(conn);
        }
        if !conn.req.nothing_buffered() {
            return self.serve(conn);
        }
        match conn.req.request_begun() {
            Ok(true) => self.serve(conn),
            Ok(false) => self.park_or_serve(conn),
            Err(e) => {
                log::debug!("{}: closing: {e}", conn.peer);
                self.close(conn);
            }
        }
    }

    /// Parks the connection, or serves it if its next request came while it was being
    /// parked.
    fn park_or_serve(self: &Arc<Self>, conn: Box<Conn<H>>) {
        if let Some(conn) = self.park(conn) {
            match conn.opening {
                Some(_) => self.handshake(conn),
                None => self.serve(conn),
            }
        }
    }

    /// Serves the connection's requests while they are there, then parks or closes it.
    fn serve(self: &Arc<Self>, mut conn: Box<Conn<H>>) {
        if self.whole {
            return self.serve_whole(conn);
        }
        // The first request started when a worker took the connection for it, if one did.
        let mut taken = conn.taken_at.take();
        loop {
            conn.req.request_arrived();
            self.shared.begin_request();
            let started = taken.take().unwrap_or_else(Instant::now);
            let Some(handler) = conn.handler.as_mut() else {
                return self.close(conn); // cannot happen: served only once open
            };
            let result = run_request(handler, &mut conn.req);
            let result = conn::flushed(&mut conn.req, result);
            conn.req.reply_done();
            self.shared.end_request();
            // One clock read ends the request: its duration, and when the connection went
            // idle (two reads per request in all, with `started`).
            let ended = Instant::now();
            let took = ended.saturating_duration_since(started);
            let timed_out = conn.req.timed_out();
            let next = match result {
                Ok(next) => {
                    report(&self.shared, &self.cfg, &conn.peer, Ok(()), None, took);
                    next
                }
                Err(e) => {
                    report(&self.shared, &self.cfg, &conn.peer, Err(e), timed_out, took);
                    Next::Close
                }
            };
            if next == Next::Close || conn.req.at_eof() {
                self.close(conn);
                return;
            }
            conn.served_at = ended;
            conn.replied = true;
            // A pipelined request already buffered (or decrypted) is served now, not after
            // the network; at shutdown too: a request that arrived is answered.
            if !conn.req.nothing_buffered() {
                continue;
            }
            if self.ending() {
                match self.arrived(&mut conn) {
                    true => continue,
                    false => return self.goodbye(conn),
                }
            }
            match self.linger(&mut conn) {
                Ok(true) => continue,
                Ok(false) => match self.park(conn) {
                    Some(back) => conn = back,
                    None => return,
                },
                Err(e) => {
                    log::debug!("{}: closing: {e}", conn.peer);
                    return self.close(conn);
                }
            }
        }
    }

    /// Runs a connection handler (`whole`) to the connection's end, as a thread per
    /// connection does: the request begins fresh (its first read waits for the client as
    /// an idle read, its request timeout from the first bytes), the connection closes
    /// politely, then its end is reported (after the close, as every flavour does).
    fn serve_whole(self: &Arc<Self>, mut conn: Box<Conn<H>>) {
        if conn.registered {
            // It waited for its handshake in the event set: out of it now, or every
            // segment its client sends would wake the waiting worker for nothing.
            let fd = conn.req.stream().as_raw_fd();
            let _ = self.registry.deregister(&mut SourceFd(&fd));
            conn.registered = false;
        }
        self.shared.begin_request();
        let started = Instant::now();
        let result = match conn.handler.as_mut() {
            Some(handler) => run_request(handler, &mut conn.req).map(drop),
            None => Ok(()), // cannot happen: served only once open
        };
        let result = conn::flushed(&mut conn.req, result);
        let timed_out = conn.req.timed_out();
        let peer = conn.peer.clone();
        self.close(conn);
        report(
            &self.shared,
            &self.cfg,
            &peer,
            result,
            timed_out,
            started.elapsed(),
        );
        self.shared.end_request();
    }

    /// After a reply to a busy client (one whose last request came within `LINGER` of the
    /// reply before it): waits up to `LINGER` on this connection for its next request, and
    /// says whether it came. The client is served the way a thread per connection serves
    /// it: a blocking read (under a socket timeout), the handler, the reply; no `poll`, no
    /// event-set call and no hand-over between threads per request. A client that misses
    /// the window is parked, and not waited for again until it is quick again. Shutdown is
    /// seen when the window ends (the wait is not interrupted: a request that comes within
    /// it is answered).
    ///
    /// Another worker must be watching the event set meanwhile: if none is, one more starts
    /// for a client proven busy (`Conn::proven`; within the flavour's limit: busy clients
    /// are bounded by it, not by the warm count; extra workers leave after
    /// `worker_idle_timeout` without work); a new connection, or any at the limit, is
    /// parked. With TLS the wait is a `poll` (a record may carry no request).
    fn linger(self: &Arc<Self>, conn: &mut Conn<H>) -> io::Result<bool> {
        if ACCEPTING.with(Cell::get) {
            // An accepting thread waits once, for a new client's next request or its EOF
            // (a client that connects, asks and goes is served whole); a client that proves
            // busy is handed to the event set, where a worker keeps it, so that accepting
            // threads are not held by long-lived clients.
            if !conn.hot || conn.proven {
                return Ok(false);
            }
        } else if !conn.hot
            || (self.idle.load(SeqCst) == 0 && (!conn.proven || !self.add_watcher()))
        {
            return Ok(false);
        }
        let fd = conn.req.stream().as_raw_fd();
        if conn.registered {
            // Out of the event set while it lingers: its edge-triggered registration would
            // otherwise wake the waiting worker for every request that arrives here.
            let _ = self.registry.deregister(&mut SourceFd(&fd));
            conn.registered = false;
        }
        let came = if conn.req.has_tls() {
            let fds = [
                (fd, sys::Interest::Read),
                (self.shared.wake_fd(), sys::Interest::Read),
            ];
            let ready = loop {
                let ready = sys::poll(&fds, Some(LINGER))?;
                // EINTR reports nothing ready: wait out the rest (rarely: it is short).
                if ready.is(0) || ready.is(1) || conn.served_at.elapsed() >= LINGER {
                    break ready;
                }
            };
            ready.is(0) && !ready.is(1) // not at shutdown
        } else {
            conn.req.wait_next(LINGER)?
        };
        if !came {
            conn.hot = false;
            return Ok(false);
        }
        // The wait began at the reply and lasts `HOT`: what it caught came within `HOT` of
        // the reply, so the client stays busy (no clock read to say so).
        conn.hot = true;
        conn.proven = true;
        conn.req.request_begun()
    }

    /// Starts one more worker to wait on the event set while this one lingers, unless the
    /// pool is at its limit; says whether one started.
    fn add_watcher(self: &Arc<Self>) -> bool {
        matches!(self.grow(), Some(Ok(()))) && !self.closed.load(SeqCst)
    }

    /// Starts one more worker, counted as waiting, unless the pool is at its limit
    /// (`None`; see `reserve_thread`). The way the engine grows its workers
    /// (`look_acceptors` grows its accepting threads).
    fn grow(self: &Arc<Self>) -> Option<io::Result<()>> {
        if !self.reserve_thread() {
            return None;
        }
        self.idle.fetch_add(1, SeqCst);
        Some(spawn(self))
    }

    /// Counts one more of the pool's threads (a worker or an accepting thread) unless the
    /// pool is at its limit; says whether it did. The place is reserved atomically: never
    /// past the limit, however many threads grow the pool at once.
    fn reserve_thread(&self) -> bool {
        self.workers
            .fetch_update(SeqCst, SeqCst, |w| (w < self.limit).then_some(w + 1))
            .is_ok()
    }

    /// Parks the connection in its slot, under the slab's lock (a sweep never sees a
    /// connection half parked), or hands it back if its next request has come: an event
    /// came for it while it was served and its socket is readable (or bytes are buffered).
    /// At shutdown it is closed instead.
    ///
    /// A connection still registered (it was served, not lingering) costs no system call
    /// here: its registration stayed armed under its key (see `Parking`). One parked for
    /// the first time, or after a linger, is registered, in its slot first: its event can
    /// come at once (registering reports bytes already there).
    fn park(&self, mut conn: Box<Conn<H>>) -> Option<Box<Conn<H>>> {
        loop {
            if self.ending() {
                // A request that arrived before the connection could be parked is answered;
                // the connection ends when none is there.
                if self.arrived(&mut conn) {
                    return Some(conn);
                }
                self.goodbye(conn);
                return None;
            }
            // A parked connection holds no buffer memory: an idle connection costs the same
            // few KiB whether it has sent requests or not (a woken one allocates again).
            conn.req.release_buffers();
            conn.taken_at = None;
            let fd = conn.req.stream().as_raw_fd();
            // Set when the socket was just seen readable here (no second look below).
            let mut readable = false;
            let pending = match conn.key {
                // Armed all along: back in its slot, unless an event came meanwhile. Input
                // that came before the event that took it raises no new event: unread
                // bytes (the last read filled its buffer, or TLS holds the socket's
                // reads) and an EOF the client sent are looked for first.
                Some(key) if conn.registered => {
                    if (conn.peer_closed || !conn.req.drained()) && sys::readable_now(fd) {
                        readable = true;
                        Some(conn)
                    } else {
                        conn.parked_after = self.waits.load(SeqCst);
                        lock(&self.parking[shard_of(key)]).put_back(key, conn)
                    }
                }
                // Out of the poller (it lingered): back in its slot, then registered.
                Some(key) => {
                    conn.parked_after = self.waits.load(SeqCst);
                    let mut parking = lock(&self.parking[shard_of(key)]);
                    conn.registered = true;
                    match parking.put_back(key, conn) {
                        Some(mut back) => {
                            back.registered = false;
                            Some(back)
                        }
                        None => return self.register(parking, fd, key, false),
                    }
                }
                // Parked for the first time: a slot (the shard by descriptor: spread
                // across connections), then registered.
                None => {
                    conn.parked_after = self.waits.load(SeqCst);
                    let mut parking = lock(&self.parking[fd as usize % SHARDS]);
                    let registered = std::mem::replace(&mut conn.registered, true);
                    let key = parking.insert(conn);
                    return self.register(parking, fd, key, registered);
                }
            };
            // None: parked.
            conn = pending?;
            // Input was seen, or an event came while it was served: its next request, or
            // bytes it read then.
            if readable || !conn.req.nothing_buffered() || sys::readable_now(fd) {
                match conn.req.request_begun() {
                    Ok(true) => return Some(conn),
                    Ok(false) => {} // a TLS record without data: park it
                    Err(e) => {
                        log::debug!("{}: closing: {e}", conn.peer);
                        self.close(conn);
                        return None;
                    }
                }
            }
        }
    }

    /// Registers a connection just put in its slot (`key`), under the slab's lock (or
    /// re-registers it under its new key, if it was registered); if that fails, closes it.
    /// Returns nothing: the signature is `park`'s, for its tail calls.
    fn register(
        &self,
        mut parking: MutexGuard<'_, Parking<H>>,
        fd: i32,
        key: usize,
        registered: bool,
    ) -> Option<Box<Conn<H>>> {
        let (source, token) = (&mut SourceFd(&fd), Token(key));
        let armed = match registered {
            false => self.registry.register(source, token, Interest::READABLE),
            true => self.registry.reregister(source, token, Interest::READABLE),
        };
        if let Err(e) = armed {
            let found = parking.take(key);
            drop(parking);
            log::error!("cannot wait for the next request: {e}");
            if let Found::Conn(mut conn) = found {
                conn.registered = registered;
                self.close(conn);
            }
        }
        None
    }

    /// Closes a connection (its slot freed, out of the poller with its socket), politely.
    fn close(&self, mut conn: Box<Conn<H>>) {
        if let Some(key) = conn.key.take() {
            lock(&self.parking[shard_of(key)]).free(key);
        }
        // No `epoll_ctl(DEL)`: closing the socket takes it out of the event set (one system
        // call less per connection). Should the handler keep a clone of the socket open,
        // its registration lingers under this connection's key, whose generation no
        // longer matches any parked connection: its events are ignored.
        conn.req.close();
        let h = &self.shared.counters.connection_duration;
        h.observe(
            crate::metrics::Buckets::connections(),
            conn.opened.elapsed(),
        );
        drop(conn);
        self.closed_one();
    }

    /// Closes the parked connections idle longer than the idle timeout, and those whose
    /// client has not begun its handshake by its deadline.
    fn sweep_idle(&self) {
        let idle = self.cfg.idle_timeout;
        let now = Instant::now();
        let expired: Vec<_> = self
            .parking
            .iter()
            .flat_map(|shard| {
                lock(shard).take_where(|c| match c.opening {
                    Some(deadline) => now >= deadline,
                    None => idle.is_some_and(|t| now.duration_since(c.served_at) >= t),
                })
            })
            .collect();
        for conn in expired {
            if conn.opening.is_some() {
                #[cfg(feature = "tls")]
                if self.cfg.tls.is_some() && !self.cfg.proxy.enabled() {
                    Counters::bump(&self.shared.counters.tls_handshake_failures);
                }
                log::debug!("{}: closed: no handshake within its deadline", conn.peer);
            } else {
                Counters::bump(&self.shared.counters.idle_timeouts);
                log::debug!(
                    "{}: idle timeout: no request from the client within {:?}",
                    conn.peer,
                    idle.unwrap_or_default()
                );
            }
            self.close(conn);
        }
    }

    /// Whether idle connections end now: shutdown has begun, and it is not a restart's
    /// drain (which serves them on until the grace period ends, see `Shared::keeps_open`).
    fn ending(&self) -> bool {
        self.shared.is_stopping() && !self.shared.keeps_open()
    }

    /// At shutdown: whether a request of the connection's has arrived (bytes buffered or
    /// waiting in the socket, or its EOF), looked at without waiting.
    fn arrived(&self, conn: &mut Conn<H>) -> bool {
        if conn.opening.is_some() {
            return false; // no request can have begun before the handshake
        }
        if !conn.req.nothing_buffered() {
            return true;
        }
        sys::readable_now(conn.req.stream().as_raw_fd()) && conn.req.request_begun().unwrap_or(true)
    }

    /// At shutdown: closes the parked connections, but first answers the requests that
    /// arrived on them (on a few threads of their own, within the grace period: the
    /// workers have stopped taking events). A request that came just before the stop is
    /// answered, never cut.
    fn drain_parked(self: &Arc<Self>) {
        let all: Vec<_> = self
            .parking
            .iter()
            .flat_map(|shard| lock(shard).take_where(|_| true))
            .collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut waiting = 0;
        for mut conn in all {
            if self.arrived(&mut conn) {
                let _ = tx.send(conn);
                waiting += 1;
            } else {
                self.goodbye(conn);
            }
        }
        drop(tx);
        let mut threads = lock(&self.threads);
        let mut started = 0;
        for _ in 0..waiting.min(self.warm) {
            let (inner, rx) = (Arc::clone(self), rx.clone());
            let drain = move || {
                for conn in rx {
                    inner.serve(conn);
                }
            };
            match threads.spawn("socketserver-drain", drain) {
                Ok(()) => started += 1,
                Err(e) => {
                    log::warn!("cannot answer the requests that came at shutdown: {e}");
                    break;
                }
            }
        }
        drop(threads);
        if started == 0 {
            for conn in rx.try_iter() {
                self.close(conn);
            }
        }
    }

    fn close_all_parked(&self) {
        let all: VecDeque<_> = self
            .parking
            .iter()
            .flat_map(|shard| lock(shard).take_where(|_| true))
            .collect();
        for conn in all {
            self.goodbye(conn);
        }
    }

    /// At shutdown: the handler's last word to an open connection between requests
    /// (`RequestHandler::on_shutdown`), then the close.
    fn goodbye(&self, mut conn: Box<Conn<H>>) {
        if conn.opening.is_none() && !conn.req.at_eof() {
            if let Some(handler) = conn.handler.as_mut() {
                let req = &mut conn.req;
                match contained(|| handler.on_shutdown(req)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log::debug!("{}: on_shutdown: {e}", conn.peer),
                    Err(msg) => {
                        Counters::bump(&self.shared.counters.panics);
                        log::error!("{}: on_shutdown panicked: {msg}", conn.peer);
                    }
                }
            }
        }
        self.close(conn);
    }
}

/// What the metrics read of the pool at scrape time (never on the request path).
impl<L: Listen, H: RequestHandler> crate::metrics::EngineView for Inner<L, H> {
    fn workers(&self) -> crate::metrics::Workers {
        // Accepting threads are workers, idle while in `accept`.
        let (workers, idle) = (self.workers.load(Relaxed), self.idle.load(Relaxed));
        let idle = (idle + self.free_acceptors.load(Relaxed)).min(workers);
        crate::metrics::Workers {
            busy: (workers - idle) as u64,
            idle: idle as u64,
        }
    }

    fn connections(&self) -> Option<(u64, u64)> {
        // Open, and of them those not inside a request (parked, or lingering on a worker).
        let open = self.live.load(Relaxed) as u64;
        let serving = self.shared.counters.active.load(Relaxed);
        Some((open, open.saturating_sub(serving)))
    }

    fn limit(&self) -> Option<u64> {
        Some(self.cfg.max_connections as u64)
    }
}

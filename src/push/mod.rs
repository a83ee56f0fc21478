//! Server push: writing to a connection from any thread, because of what *another*
//! connection did (a chat line, a published message, a notification).
//!
//! [`StreamRequest::pusher`](crate::StreamRequest::pusher) gives a connection's
//! [`Pusher`]: `Clone + Send + Sync`, usable from any thread and from other connections'
//! handlers, for TCP, Unix stream and TLS connections alike, whether the connection is being
//! served or waits between requests (parked in the pool's event set, or read by its own
//! thread). See the guide's chapter [`server_push`](crate::guide::server_push).
//!
//! How it works: once a connection has a pusher, every byte it sends (the handler's replies
//! included) goes through one queue under one lock per connection. A push appends its bytes
//! (encrypted, with TLS: the session moves behind the same lock) and writes what the socket
//! takes *now* (`send` with `MSG_DONTWAIT`): it never waits for the client. What the socket
//! does not take waits in the queue, bounded by [`PushLimits`], and one thread per process
//! (`socketserver-push`, started at the first backlog) watches the sockets that have a
//! backlog for writability and sends the rest: no thread per message, none per connection.
//! A push made while the handler writes a reply waits (in the queue, not on the pusher's
//! thread) until that reply is over: until the handler reads again or its request ends, so
//! bytes are never interleaved inside a reply or inside another push.
//!
//! Connections that never make a pusher pay nothing for this: no lock, no system call.

mod flusher;
mod topics;

pub use topics::Topics;

use std::fmt;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::shared::{ConnSlot, Shared};
use crate::stats::Counters;
use crate::sys::{self, Interest};

/// How often a pusher waiting for room looks at the server's shutdown, and how often the
/// flusher looks for stalled connections.
const TICK: Duration = Duration::from_millis(100);
/// A queue that drained keeps at most this much memory (an idle connection costs little).
const KEEP: usize = 64 << 10;
/// How long closing a connection waits for its queue to drain.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a push does when the connection's backlog would pass
/// [`PushLimits::max_backlog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Close the connection (the default), like Redis' `client-output-buffer-limit` for
    /// pub/sub: a client that cannot keep up is cut, and nobody waits for it. Counted in
    /// [`Stats::push_overflows`](crate::Stats::push_overflows).
    Close,
    /// Drop this message (the push fails with `WouldBlock`); the connection stays. Counted
    /// in [`Stats::push_dropped`](crate::Stats::push_dropped).
    DropMessage,
    /// Wait for room while the client takes bytes; once it has taken none for this long,
    /// close the connection (counted in [`Stats::push_stalls`](crate::Stats::push_stalls)).
    /// The room then goes at the pace of its slowest reader, as a chat may want. Once the
    /// server shuts down nobody waits: a message that does not fit is dropped.
    Wait(Duration),
}

/// The bounds of one connection's outbound queue: how many bytes may wait, what a push
/// does past that, and how long the connection may take no bytes while some wait.
///
/// ```
/// use socketserver::push::{Overflow, PushLimits};
/// use std::time::Duration;
///
/// let limits = PushLimits::default()
///     .max_backlog(1 << 20)
///     .overflow(Overflow::DropMessage)
///     .stall_timeout(Duration::from_secs(10));
/// assert_eq!(limits.get_max_backlog(), 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLimits {
    max_backlog: usize,
    overflow: Overflow,
    stall_timeout: Duration,
}

impl Default for PushLimits {
    /// 8 MiB, [`Overflow::Close`], a stall timeout of 30 s.
    fn default() -> PushLimits {
        PushLimits {
            max_backlog: 8 << 20,
            overflow: Overflow::Close,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

impl PushLimits {
    /// The most bytes that may wait for the connection (pushes and replies not yet taken
    /// by its socket). A push into an empty queue is always taken, however large.
    pub fn max_backlog(mut self, bytes: usize) -> PushLimits {
        self.max_backlog = bytes;
        self
    }

    /// What a push does when its bytes would pass `max_backlog`.
    pub fn overflow(mut self, overflow: Overflow) -> PushLimits {
        self.overflow = overflow;
        self
    }

    /// How long the connection may take no bytes from its socket while bytes wait for it;
    /// then it is closed (counted in [`Stats::push_stalls`](crate::Stats::push_stalls)).
    /// A zero duration is taken as one millisecond.
    pub fn stall_timeout(mut self, t: Duration) -> PushLimits {
        self.stall_timeout = t.max(Duration::from_millis(1));
        self
    }

    /// The byte limit set by [`max_backlog`](Self::max_backlog).
    pub fn get_max_backlog(&self) -> usize {
        self.max_backlog
    }

    /// The policy set by [`overflow`](Self::overflow).
    pub fn get_overflow(&self) -> Overflow {
        self.overflow
    }

    /// The duration set by [`stall_timeout`](Self::stall_timeout).
    pub fn get_stall_timeout(&self) -> Duration {
        self.stall_timeout
    }
}

/// A connection's outbound handle: writes to it from any thread. Made by
/// [`StreamRequest::pusher`](crate::StreamRequest::pusher); clones are the same connection
/// (equal, with the same [`id`](Pusher::id)).
///
/// [`push`](Pusher::push) queues one message (written whole, never interleaved with another
/// push or with a reply of the handler's) and returns at once: it writes what the socket
/// takes without waiting, and the rest is sent as the client reads, by the crate. A push to
/// a connection that closed fails (`NotConnected`, or `ConnectionAborted` when the push
/// itself found the backlog full and closed it); callers that broadcast ignore that error
/// and forget the pusher.
///
/// ```no_run
/// use socketserver::push::Pusher;
/// use socketserver::{Next, StreamRequest, TcpServer};
/// use std::io::{self, BufRead, Write};
/// use std::sync::{Arc, Mutex};
///
/// // Every line a client sends goes to every connected client.
/// let everyone: Arc<Mutex<Vec<Pusher>>> = Arc::default();
/// TcpServer::bind("127.0.0.1:8010")?.serve_requests(move |req: &mut StreamRequest| {
///     let me = req.pusher();
///     let mut line = String::new();
///     if req.read_line(&mut line)? == 0 {
///         return Ok(Next::Close);
///     }
///     let mut all = everyone.lock().unwrap();
///     if !all.contains(&me) {
///         all.push(me);
///     }
///     all.retain(|p| p.push(line.as_bytes()).is_ok());
///     writeln!(req, "sent to {}", all.len())?;
///     Ok(Next::Continue)
/// })
/// # ; Ok::<(), io::Error>(())
/// ```
#[derive(Clone)]
pub struct Pusher {
    out: Arc<Outbound>,
}

impl Pusher {
    pub(crate) fn new(out: Arc<Outbound>) -> Pusher {
        Pusher { out }
    }

    /// Queues `msg` for the connection and sends what its socket takes now; never waits,
    /// unless the limits say [`Overflow::Wait`] and the backlog is full. See the type's
    /// documentation for the errors.
    pub fn push(&self, msg: &[u8]) -> io::Result<()> {
        self.out.push(&[IoSlice::new(msg)])
    }

    /// Queues the slices, in order, as *one* message (never interleaved with anything):
    /// a header and a body without copying them together first.
    pub fn push_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        self.out.push(parts)
    }

    /// Sets the connection's limits (they apply to the next push).
    pub fn set_limits(&self, limits: PushLimits) {
        self.out.lock().limits = limits;
    }

    /// The connection's limits.
    pub fn limits(&self) -> PushLimits {
        self.out.lock().limits
    }

    /// Bytes waiting for the connection: queued and not yet taken by its socket (with TLS,
    /// records), and pushes waiting for the reply in progress.
    pub fn backlog(&self) -> usize {
        self.out.lock().waiting()
    }

    /// Whether the connection has closed (then every push fails).
    pub fn is_closed(&self) -> bool {
        self.out.lock().gone.is_some()
    }

    /// Closes the connection: nothing more is sent, its socket is shut down both ways (its
    /// handler reads EOF, or it is closed where it waits between requests).
    pub fn close(&self) {
        let mut s = self.out.lock();
        self.out.kill(&mut s, Gone::Closed);
    }

    /// A number that names the connection for as long as the process lives (clones share
    /// it): a key for maps of subscribers.
    pub fn id(&self) -> u64 {
        self.out.id as u64
    }
}

impl PartialEq for Pusher {
    fn eq(&self, other: &Pusher) -> bool {
        self.out.id == other.out.id
    }
}

impl Eq for Pusher {}

impl std::hash::Hash for Pusher {
    fn hash<S: std::hash::Hasher>(&self, state: &mut S) {
        self.out.id.hash(state);
    }
}

impl fmt::Debug for Pusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pusher")
            .field("id", &self.out.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("id", &self.id)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Why a connection's queue takes nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    /// The connection closed (its handler's end, or `Pusher::close`).
    Closed,
    /// A push found the backlog full (`Overflow::Close`).
    Overflow,
    /// It took no bytes for the stall timeout while bytes waited.
    Stalled,
    /// A write failed (the client reset the connection).
    Failed,
}

fn gone_error(why: Gone) -> io::Error {
    match why {
        Gone::Closed => io::Error::new(io::ErrorKind::NotConnected, "connection closed"),
        Gone::Overflow => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed: its backlog passed the push limit",
        ),
        Gone::Stalled => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed: it took no bytes for the stall timeout",
        ),
        Gone::Failed => io::Error::new(io::ErrorKind::BrokenPipe, "connection lost"),
    }
}

fn dropped_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "message dropped: the connection's backlog is full",
    )
}

/// The ids of outbound queues (also the flusher's event keys; 0 is its waker).
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// One connection's outbound queue, shared by its request and its pushers.
pub(crate) struct Outbound {
    id: usize,
    /// The socket, while the request lives (a pusher never keeps a connection open).
    slot: Weak<ConnSlot>,
    tls: bool,
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Signalled when bytes leave or the connection goes, for pushes waiting for room.
    room: Condvar,
}

struct State {
    /// Bytes for the socket (records, with TLS); `queue[sent..]` not yet taken by it.
    queue: Vec<u8>,
    sent: usize,
    /// Bytes ever queued and ever sent: the handler waits until its own have left.
    queued_total: u64,
    sent_total: u64,
    /// Pushes made while the handler writes a reply: queued when it ends.
    held: Vec<u8>,
    replying: bool,
    gone: Option<Gone>,
    /// Registered with the flusher (a backlog waits for writability).
    watched: bool,
    /// When the socket last took bytes, or bytes began to wait.
    progress: Instant,
    /// Pushes waiting for room (`Overflow::Wait`): only then is `room` signalled.
    waiters: usize,
    limits: PushLimits,
    #[cfg(feature = "tls")]
    session: Option<Box<crate::tls::TlsSession>>,
}

impl State {
    fn unsent(&self) -> usize {
        self.queue.len() - self.sent
    }

    fn waiting(&self) -> usize {
        self.unsent() + self.held.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbound {
    /// The queue of the connection in `slot`; with TLS, `session` moves in (every read and
    /// write then takes the lock). `replying`: the handler is writing a reply now.
    pub(crate) fn new(
        slot: &Arc<ConnSlot>,
        shared: &Arc<Shared>,
        replying: bool,
        #[cfg(feature = "tls")] session: Option<Box<crate::tls::TlsSession>>,
    ) -> Arc<Outbound> {
        #[cfg(feature = "tls")]
        let tls = session.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        Arc::new(Outbound {
            id: NEXT_ID.fetch_add(1, Relaxed),
            slot: Arc::downgrade(slot),
            tls,
            shared: Arc::clone(shared),
            state: Mutex::new(State {
                queue: Vec::new(),
                sent: 0,
                queued_total: 0,
                sent_total: 0,
                held: Vec::new(),
                replying,
                gone: None,
                watched: false,
                progress: Instant::now(),
                waiters: 0,
                limits: PushLimits::default(),
                #[cfg(feature = "tls")]
                session,
            }),
            room: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether the connection's reads and writes go through its TLS session, held here.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }

    /// Appends `parts` to the queue as bytes for the socket (encrypted, with TLS).
    fn enqueue(&self, s: &mut State, parts: &[IoSlice<'_>]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if s.session.is_some() {
            return self.with_session(s, |tls, out| {
                parts.iter().try_for_each(|p| tls.encrypt_into(p, out))
            });
        }
        if s.unsent() == 0 {
            s.progress = Instant::now();
        }
        let before = s.queue.len();
        parts.iter().for_each(|p| s.queue.extend_from_slice(p));
        s.queued_total += (s.queue.len() - before) as u64;
        Ok(())
    }

    /// Runs `f` on the TLS session with the queue (records it makes are queued, counted).
    #[cfg(feature = "tls")]
    fn with_session<T>(
        &self,
        s: &mut State,
        f: impl FnOnce(&mut crate::tls::TlsSession, &mut Vec<u8>) -> io::Result<T>,
    ) -> io::Result<T> {
        let was_empty = s.unsent() == 0;
        let before = s.queue.len();
        let State { session, queue, .. } = &mut *s;
        let Some(tls) = session.as_deref_mut() else {
            return Err(io::Error::other("no TLS session"));
        };
        let result = f(tls, queue);
        let added = s.queue.len() - before;
        s.queued_total += added as u64;
        if was_empty && added > 0 {
            s.progress = Instant::now();
        }
        result
    }

    /// Writes what the socket takes now of the queue. An error means the connection is gone.
    fn send_now(self: &Arc<Self>, s: &mut State) -> io::Result<()> {
        if let Some(why) = s.gone {
            return Err(gone_error(why));
        }
        if s.unsent() == 0 {
            return Ok(());
        }
        let Some(slot) = self.slot.upgrade() else {
            s.gone = Some(Gone::Closed);
            return Err(gone_error(Gone::Closed));
        };
        let fd = slot.stream.as_raw_fd();
        let mut progressed = false;
        let result = loop {
            if s.sent == s.queue.len() {
                break Ok(());
            }
            match sys::send_now(fd, &s.queue[s.sent..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    s.sent += n;
                    s.sent_total += n as u64;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if s.sent == s.queue.len() {
            s.queue.clear();
            s.sent = 0;
            if s.queue.capacity() > KEEP {
                s.queue = Vec::new();
            }
        } else if s.sent >= KEEP && s.sent * 2 >= s.queue.len() {
            s.queue.drain(..s.sent);
            s.sent = 0;
        }
        if progressed {
            s.progress = Instant::now();
            if s.waiters > 0 {
                self.room.notify_all();
            }
        }
        if let Err(e) = &result {
            log::debug!("push: connection lost: {e}");
            s.gone = Some(Gone::Failed);
            s.queue = Vec::new();
            s.sent = 0;
            self.unwatch(s);
            self.room.notify_all();
        }
        result
    }

    /// Sends what the socket takes now; the flusher watches the rest.
    fn send_or_watch(self: &Arc<Self>, s: &mut State) -> io::Result<()> {
        self.send_now(s)?;
        if s.unsent() > 0 {
            self.watch(s);
        }
        Ok(())
    }

    fn watch(self: &Arc<Self>, s: &mut State) {
        if s.watched || s.gone.is_some() {
            return;
        }
        let Some(slot) = self.slot.upgrade() else {
            return;
        };
        match flusher::watch(self, slot.stream.as_raw_fd()) {
            Ok(()) => s.watched = true,
            Err(e) => {
                log::error!("push: cannot watch a connection's backlog, closing it: {e}");
                self.kill(s, Gone::Failed);
            }
        }
    }

    fn unwatch(&self, s: &mut State) {
        if std::mem::take(&mut s.watched) {
            let fd = self.slot.upgrade().map(|slot| slot.stream.as_raw_fd());
            flusher::unwatch(self.id, fd);
        }
    }

    /// Ends the connection: nothing more is queued or sent; with a reason other than the
    /// owner's close, its socket is shut down (its handler, or the event set where it is
    /// parked, sees the end).
    fn kill(&self, s: &mut State, why: Gone) {
        if s.gone.is_some() {
            return;
        }
        s.gone = Some(why);
        let c = &self.shared.counters;
        match why {
            Gone::Overflow => Counters::bump(&c.push_overflows),
            Gone::Stalled => Counters::bump(&c.push_stalls),
            Gone::Closed | Gone::Failed => {}
        }
        if let Some(slot) = self.slot.upgrade() {
            match why {
                Gone::Overflow => log::info!("push: backlog over its limit: closing"),
                Gone::Stalled => log::info!(
                    "push: no bytes taken for {:?} while some waited: closing",
                    s.limits.stall_timeout
                ),
                Gone::Closed | Gone::Failed => {}
            }
            let _ = slot.stream.shutdown(Shutdown::Both);
        }
        s.queue = Vec::new();
        s.sent = 0;
        s.held = Vec::new();
        self.unwatch(s);
        if s.waiters > 0 {
            self.room.notify_all();
        }
    }

    /// A push (see `Pusher::push`).
    fn push(self: &Arc<Self>, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let len = parts
            .iter()
            .map(|p| p.len())
            .fold(0usize, usize::saturating_add);
        let mut s = self.lock();
        loop {
            if let Some(why) = s.gone {
                return Err(gone_error(why));
            }
            let waiting = s.waiting();
            if waiting == 0 || waiting.saturating_add(len) <= s.limits.max_backlog {
                break;
            }
            match s.limits.overflow {
                Overflow::Close => {
                    self.kill(&mut s, Gone::Overflow);
                    return Err(gone_error(Gone::Overflow));
                }
                Overflow::DropMessage => {
                    Counters::bump(&self.shared.counters.push_dropped);
                    return Err(dropped_error());
                }
                Overflow::Wait(limit) => {
                    if self.shared.is_stopping() {
                        Counters::bump(&self.shared.counters.push_dropped);
                        return Err(dropped_error());
                    }
                    let now = Instant::now();
                    let until = s.progress + limit;
                    if now >= until {
                        self.kill(&mut s, Gone::Stalled);
                        return Err(gone_error(Gone::Stalled));
                    }
                    s.waiters += 1;
                    s = (self.room)
                        .wait_timeout(s, (until - now).min(TICK))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    s.waiters -= 1;
                }
            }
        }
        Counters::add(&self.shared.counters.pushed_bytes, len);
        if s.replying {
            parts.iter().for_each(|p| s.held.extend_from_slice(p));
            return Ok(());
        }
        self.enqueue(&mut s, parts)?;
        self.send_or_watch(&mut s)
    }

    /// The handler's own write: queued after what waits, then sent, waiting (at most
    /// `timeout`) until the socket has taken all of it, as a blocking write does.
    pub(crate) fn owner_write(
        self: &Arc<Self>,
        parts: &[IoSlice<'_>],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut s = self.lock();
        if let Some(why) = s.gone {
            return Err(gone_error(why));
        }
        self.enqueue(&mut s, parts)?;
        let target = s.queued_total;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.send_now(&mut s)?;
            if s.sent_total >= target {
                return Ok(len);
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => {
                        // What is queued goes out as the client reads, or the stall timeout
                        // ends the connection.
                        self.watch(&mut s);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    left => Some(left),
                },
            };
            let Some(slot) = self.slot.upgrade() else {
                return Err(gone_error(Gone::Closed));
            };
            drop(s);
            sys::poll(&[(slot.stream.as_raw_fd(), Interest::Write)], left)?;
            s = self.lock();
        }
    }

    /// The handler began writing a reply: pushes wait for its end.
    pub(crate) fn begin_reply(&self) {
        self.lock().replying = true;
    }

    /// The reply ended (the handler reads again, or its request ended): the pushes made
    /// meanwhile are queued and sent.
    pub(crate) fn end_reply(self: &Arc<Self>) {
        let mut s = self.lock();
        self.release(&mut s);
    }

    fn release(self: &Arc<Self>, s: &mut State) {
        s.replying = false;
        if s.held.is_empty() || s.gone.is_some() {
            return;
        }
        let held = std::mem::take(&mut s.held);
        if self.enqueue(s, &[IoSlice::new(&held)]).is_ok() {
            let _ = self.send_or_watch(s);
        }
        if s.held.is_empty() && held.capacity() <= KEEP {
            s.held = held;
            s.held.clear();
        }
    }

    /// The owner closes the connection: the pushes held for its reply and, with TLS,
    /// `close_notify` are queued, and the queue gets up to a second to drain; then nothing
    /// more is taken.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut s = self.lock();
        self.release(&mut s);
        #[cfg(feature = "tls")]
        if s.gone.is_none() {
            let _ = self.with_session(&mut s, |tls, out| {
                tls.close_into(out);
                Ok(())
            });
        }
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while s.gone.is_none() && s.unsent() > 0 && self.send_now(&mut s).is_ok() && s.unsent() > 0
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(slot) = self.slot.upgrade().filter(|_| !left.is_zero()) else {
                break;
            };
            drop(s);
            let _ = sys::poll(&[(slot.stream.as_raw_fd(), Interest::Write)], Some(left));
            s = self.lock();
        }
        self.dropped_locked(&mut s);
    }

    /// The connection's request is gone (its socket closes next): nothing more is sent.
    pub(crate) fn dropped(&self) {
        let mut s = self.lock();
        self.dropped_locked(&mut s);
    }

    fn dropped_locked(&self, s: &mut State) {
        if s.gone.is_none() {
            s.gone = Some(Gone::Closed);
        }
        s.queue = Vec::new();
        s.sent = 0;
        s.held = Vec::new();
        self.unwatch(s);
        if s.waiters > 0 {
            self.room.notify_all();
        }
    }

    /// For the flusher: the socket may take bytes again.
    fn writable(self: &Arc<Self>) {
        let mut s = self.lock();
        if s.gone.is_none() {
            let _ = self.send_now(&mut s);
        }
        if s.unsent() == 0 || s.gone.is_some() {
            self.unwatch(&mut s);
        }
    }

    /// For the flusher: closes the connection if it took no bytes for its stall timeout
    /// while some waited.
    fn check_stall(self: &Arc<Self>, now: Instant) {
        let mut s = self.lock();
        if s.gone.is_some() || s.unsent() == 0 {
            self.unwatch(&mut s);
        } else if now.saturating_duration_since(s.progress) >= s.limits.stall_timeout {
            self.kill(&mut s, Gone::Stalled);
        }
    }
}

/// The TLS session behind the lock: the handler's reads (see `SocketReader::read_socket`).
#[cfg(feature = "tls")]
impl Outbound {
    /// Reads plaintext as `TlsSession::read` does, but waits for the socket without the
    /// lock (a blocking `MSG_PEEK` under the socket's read timeout), so pushes never wait
    /// for the client's next request; records go out through the queue.
    pub(crate) fn tls_read(
        self: &Arc<Self>,
        stream: &crate::Stream,
        buf: &mut [u8],
        arriving: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let mid = {
                let mut s = self.lock();
                let got = self.with_session(&mut s, |tls, _| {
                    Ok((tls.read_plain(buf)?, tls.mid_record()))
                });
                match got {
                    Ok((Some(n), _)) => return Ok(n),
                    Ok((None, mid)) => mid,
                    Err(e) => return Err(e),
                }
            };
            if mid {
                arriving()?;
            }
            match sys::peek_wait(stream.as_raw_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut s = self.lock();
            let received = self.with_session(&mut s, |tls, out| tls.receive(stream, out));
            let _ = self.send_or_watch(&mut s);
            received?;
        }
    }

    /// `TlsSession::pump` behind the lock.
    pub(crate) fn tls_pump(self: &Arc<Self>, stream: &crate::Stream) -> io::Result<bool> {
        let mut s = self.lock();
        let begun = self.with_session(&mut s, |tls, out| tls.pump_into(stream, out));
        let _ = self.send_or_watch(&mut s);
        begun
    }

    /// Whether decrypted plaintext (or the client's close) waits in the session.
    pub(crate) fn tls_buffered(&self) -> bool {
        let mut s = self.lock();
        s.session
            .as_deref_mut()
            .is_some_and(|t| t.has_plaintext_buffered())
    }

    /// Decrypted plaintext waiting in the session, in bytes.
    pub(crate) fn tls_pending(&self) -> usize {
        let mut s = self.lock();
        s.session
            .as_deref_mut()
            .map_or(0, |t| t.plaintext_pending())
    }
}

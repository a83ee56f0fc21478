//! Shared server state: the stop flag, the waker, the live-connection registry, the counters.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::metrics::state::Status;
use crate::net::stream::Stream;
use crate::stats::Counters;
use crate::sys::SharedMem;
use crate::time;

/// A connection as the registry sees it: to shut its reading down at shutdown while its
/// handler waits for the next request (`idle`), and to shut it down when the grace period
/// is over.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    pub(crate) stream: Stream,
    /// Its reader is in (or about to enter) a blocking read for the client's next request.
    pub(crate) idle: AtomicBool,
    /// Shutdown shut its reading down to end that wait (`Shared::end_idle_waits`).
    pub(crate) woken: AtomicBool,
}

impl ConnSlot {
    pub(crate) fn new(stream: Stream) -> ConnSlot {
        ConnSlot {
            stream,
            idle: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        }
    }
}

/// State shared by a server, its handle, its workers and its requests.
#[derive(Debug)]
pub(crate) struct Shared {
    stopping: AtomicBool,
    /// Dropped at shutdown, which wakes every `select!` waiting on `stop_rx`.
    stop_tx: Mutex<Option<Sender<()>>>,
    pub(crate) stop_rx: Receiver<()>,
    /// One byte is written here at shutdown and never read: the read end stays readable, so
    /// every `poll` on it (accept loop, forked children) wakes at once.
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    /// In memory shared with forked children (see `sys::SharedMem`).
    pub(crate) counters: SharedMem<Counters>,
    /// Readiness and the engine's view, for the metrics and the admin listener.
    pub(crate) status: Status,
    /// How long the server serves on after `ShutdownHandle::shutdown`, not ready.
    delay: Duration,
    /// The live connections, in `REGISTRY_SHARDS` parts each under its own lock (a
    /// connection registers and leaves once each: with one lock, workers opening and
    /// closing connections at once waited on it, about 3 futex calls per connection), and
    /// whether the grace period is over (then a connection registered late, by a worker
    /// that took its job after `force_close`, is shut down at once).
    registry: Box<[Mutex<Registry>]>,
    /// Requests in flight: an atomic count, so that a request costs no lock; the mutex and
    /// condition variable serve only the drain at shutdown (`wait_drained`).
    inflight: AtomicU64,
    /// Connections registered and not yet closed.
    live: AtomicU64,
    /// A SIGHUP restart handed the service over: open connections, idle ones included, are
    /// served on until they close or the grace period ends (`keeps_open`).
    keep_open: AtomicBool,
    /// The grace period is over: every connection was shut down (`force_close`).
    forced: AtomicBool,
    drain_lock: Mutex<()>,
    drained: Condvar,
    grace: Duration,
    /// For the single flavour, whose serving thread is inside the handler at shutdown: a
    /// thread started at shutdown that shuts connections down when the grace period ends.
    watchdog: Mutex<Watchdog>,
    /// Whether the listener passes the per-connection socket options on (`net::options`).
    pub(crate) passed_on: PassedOn,
}

#[derive(Debug, Default)]
struct Watchdog {
    enabled: bool,
    thread: Option<JoinHandle<()>>,
}

impl Shared {
    pub(crate) fn new(grace: Duration, delay: Duration) -> io::Result<Arc<Shared>> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        Ok(Arc::new(Shared {
            stopping: AtomicBool::new(false),
            stop_tx: Mutex::new(Some(stop_tx)),
            stop_rx,
            wake_tx,
            wake_rx,
            counters: SharedMem::new()?,
            status: Status::default(),
            delay,
            registry: (0..REGISTRY_SHARDS).map(|_| Mutex::default()).collect(),
            inflight: AtomicU64::new(0),
            live: AtomicU64::new(0),
            keep_open: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            drain_lock: Mutex::new(()),
            drained: Condvar::new(),
            grace,
            watchdog: Mutex::new(Watchdog::default()),
            passed_on: PassedOn::default(),
        }))
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(SeqCst)
    }

    /// The grace period requests in flight get after shutdown begins.
    pub(crate) fn grace(&self) -> Duration {
        self.grace
    }

    /// The descriptor that turns readable once shutdown has begun.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    /// Begins shutdown after the shutdown delay: readiness ends now, the server serves on
    /// for the delay (so that a balancer that stops sending to it in parallel loses no
    /// client), then stops. With no delay, stops at once. Idempotent, non-blocking.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        if self.is_stopping() && self.keeps_open() {
            // A stop asked during a restart's drain ends the drain, as the grace period's
            // end would: the connections still open are shut down now.
            log::info!("shutdown during a restart's drain: closing the connections still open");
            return self.force_close();
        }
        if self.delay.is_zero() || self.is_stopping() {
            return self.stop();
        }
        if self.status.begin_drain() {
            return; // a delay already runs
        }
        log::info!("not ready; shutting down in {:?}", self.delay);
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("socketserver-delay".into())
            .spawn(move || {
                // Ends early if something else stops the server meanwhile.
                let _ = shared.stop_rx.recv_timeout(shared.delay);
                shared.stop();
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the shutdown delay's thread, stopping now: {e}");
            self.stop();
        }
    }

    /// Begins shutdown: idempotent, non-blocking, callable from any thread or handler.
    pub(crate) fn stop(self: &Arc<Self>) {
        self.stop_first();
    }

    /// Begins shutdown like `stop`; `true` when this call began it, `false` when it had
    /// begun already (a restart's hand-over uses it to tell its own shutdown from a
    /// SIGTERM's, atomically).
    pub(crate) fn stop_first(self: &Arc<Self>) -> bool {
        self.status.drain();
        if self.stopping.swap(true, SeqCst) {
            return false;
        }
        self.stop_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // A full socket buffer means a byte is already there: nothing more to do.
        let _ = (&self.wake_tx).write(&[1]);
        // Handlers waiting for their client's next request read EOF: woken by their
        // socket's reading shut down (or, with TLS and in forked children, the wake socket;
        // see `request`); handlers in the middle of a request keep their connection until
        // the grace period ends. A restart's drain serves them on.
        if !self.keeps_open() {
            self.end_idle_waits();
        }
        let mut dog = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        if dog.enabled {
            let shared = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("socketserver-grace".into())
                .spawn(move || {
                    if !shared.wait_drained(time::after(shared.grace)) {
                        log::warn!("grace period over: shutting down the connection still open");
                        shared.force_close();
                    }
                });
            match spawned {
                Ok(t) => dog.thread = Some(t),
                Err(e) => log::warn!("cannot start the grace-period thread: {e}"),
            }
        }
        true
    }

    pub(crate) fn enable_watchdog(&self) {
        self.watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enabled = true;
    }

    /// Joins the watchdog if one was started. A `stop` that comes after this (from another
    /// thread, racing the end of `serve`) starts none: it would outlive `serve` detached.
    pub(crate) fn join_watchdog(&self) {
        let t = {
            let mut dog = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
            dog.enabled = false;
            dog.thread.take()
        };
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// Shuts down every connection still open, so blocked reads and writes return, and
    /// every connection registered from now on.
    pub(crate) fn force_close(&self) {
        self.forced.store(true, SeqCst);
        {
            // A restart's drain waiting for the last connection waits no more.
            let _guard = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.drained.notify_all();
        }
        for shard in 0..REGISTRY_SHARDS {
            let mut reg = self.lock_registry(shard);
            reg.forced = true;
            for slot in reg.slots.iter() {
                let _ = slot.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// At shutdown: ends the blocking reads that wait for a client's next request by
    /// shutting their socket's reading down (the read returns 0 once nothing is queued;
    /// what the client already sent is still read first). The reader raises `idle` before
    /// it looks at `stopping`, this looks at `idle` after raising `stopping`: one of the two
    /// sees the other, so no wait is missed. A socket with input already waiting is left
    /// alone: its request is served, and the reader sees the stop after it.
    fn end_idle_waits(&self) {
        for shard in 0..REGISTRY_SHARDS {
            let reg = self.lock_registry(shard);
            for slot in reg.slots.iter() {
                if slot.idle.load(SeqCst) && !crate::sys::readable_now(slot.stream.as_raw_fd()) {
                    slot.woken.store(true, SeqCst);
                    let _ = slot.stream.shutdown(Shutdown::Read);
                }
            }
        }
    }

    fn lock_registry(&self, shard: usize) -> std::sync::MutexGuard<'_, Registry> {
        self.registry[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks a live connection until the returned guard drops. After the grace period the
    /// connection is shut down as it registers: its handler finds it closed at once.
    pub(crate) fn register(self: &Arc<Self>, slot: Arc<ConnSlot>) -> Registration {
        let shard = registry_shard();
        let mut reg = self.lock_registry(shard);
        if reg.forced {
            let _ = slot.stream.shutdown(Shutdown::Both);
        }
        let key = reg.slots.insert(slot);
        drop(reg);
        self.live.fetch_add(1, SeqCst);
        Registration {
            shared: Arc::clone(self),
            shard,
            key,
        }
    }

    /// A request entered the server (accepted, queued or handed to a worker).
    pub(crate) fn begin_request(&self) {
        self.inflight.fetch_add(1, SeqCst);
        Counters::bump(&self.counters.active);
    }

    /// A request left the server.
    pub(crate) fn end_request(&self) {
        let before = self
            .inflight
            .fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)))
            .unwrap_or(0);
        self.counters.active.fetch_sub(1, SeqCst);
        // Only shutdown waits for the drain (`wait_drained` runs after `stop`): no lock and
        // no wake-up per request before that. If this reads "not stopping", the decrement
        // came before the stop, and so before the waiter's first look at the count. Else
        // the notification is sent under the lock the waiter holds from its look at the
        // count until it sleeps: it cannot be missed.
        if before <= 1 && self.is_stopping() {
            let _guard = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.drained.notify_all();
        }
    }

    /// Makes the coming stop a restart's drain (see `keeps_open`); `false` undoes it (the
    /// restart was abandoned).
    pub(crate) fn keep_open_on_stop(&self, on: bool) {
        self.keep_open.store(on, SeqCst);
    }

    /// Whether the server, stopping, still serves its open connections, idle ones included,
    /// until they close: after a SIGHUP restart's hand-over, until the grace period ends. A
    /// restart is not a stop: closing at once would disconnect every long-lived client,
    /// which the new process cannot take over.
    pub(crate) fn keeps_open(&self) -> bool {
        self.keep_open.load(SeqCst) && !self.forced.load(SeqCst)
    }

    /// Waits until no request is in flight (and, in a restart's drain, no connection is
    /// open) or `deadline` passes; true when drained. `deadline` `None` waits for ever (a
    /// grace period too large to represent).
    pub(crate) fn wait_drained(&self, deadline: Option<Instant>) -> bool {
        let mut n = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.inflight.load(SeqCst) > 0 || (self.keeps_open() && self.live.load(SeqCst) > 0) {
            n = match time::left(deadline) {
                Some(Duration::ZERO) => return false,
                Some(left) => {
                    self.drained
                        .wait_timeout(n, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.drained.wait(n).unwrap_or_else(|e| e.into_inner()),
            };
        }
        true
    }

    /// Reads the wake byte count; only used by tests of the waker itself.
    #[cfg(test)]
    fn wake_pending(&self) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!((&self.wake_rx).read(&mut b), Ok(1))
    }
}

/// Removes a connection from the registry when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<Shared>,
    shard: usize,
    key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock_registry(self.shard).slots.remove(self.key);
        let before = self.shared.live.fetch_sub(1, SeqCst);
        // As in `end_request`: only a restart's drain waits for the last connection.
        if before <= 1 && self.shared.keeps_open() {
            let _guard = self
                .shared
                .drain_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.drained.notify_all();
        }
    }
}

/// How many parts the registry of live connections is split into.
const REGISTRY_SHARDS: usize = 16;

/// The part of the registry a connection opened on this thread goes into: each thread has
/// its own (up to `REGISTRY_SHARDS` threads), so workers opening and closing connections at
/// once take different locks. Not by descriptor: a new connection often gets the descriptor
/// a connection closing on another worker has just given up, and that worker then takes the
/// same lock to leave; nor round robin: with N clients connecting and closing, the
/// connection leaving is often the one opened N connections before. Measured under churn
/// at 16 clients: 0.122 futex calls per connection by descriptor, 0.047 round robin, 0.029
/// a part per thread (from connections that moved to another worker before they closed).
fn registry_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % REGISTRY_SHARDS;
    }
    // A thread past its thread-locals (never a worker) shares the first part.
    SHARD.try_with(|s| *s).unwrap_or(0)
}

#[derive(Debug, Default)]
struct Registry {
    slots: Slab<Arc<ConnSlot>>,
    forced: bool,
}

/// A minimal slab: O(1) insert and remove, memory bounded by the most entries ever live at
/// once (never by how many came and went).
#[derive(Debug)]
struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(k) => {
                self.entries[k] = Some(value);
                k
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(e) = self.entries.get_mut(key) {
            if e.take().is_some() {
                self.free.push(key);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }
}

/// Connections configured one by one past those counted in the accept queue when the
/// listener got its options: a connection established while the options were being set
/// can be queued just after the count (a few at most, one per CPU handling a handshake),
/// and two threads that accept at once (the pool's workers) may take their connections'
/// places out of order.
const MARGIN: usize = 16;

/// How an accepted connection gets its socket options (`PassedOn::take`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Options {
    /// It is configured itself (`configure`); `explicit`: every option is set, defaults
    /// included (the listener carries options of its own, which it may have copied).
    Configure { explicit: bool },
    /// It has the listener's options, and this read timeout.
    Inherited { read: Option<Duration> },
}

/// Whether the listener passes its options on, and to which connections.
#[derive(Debug, Default)]
pub(crate) struct PassedOn {
    /// The listener carries options of its own (set at least once): a connection
    /// configured by itself then sets every option, defaults included, since what it
    /// copied from the listener may differ from the system's defaults.
    active: AtomicBool,
    /// Connections still to configure one by one: those in the accept queue when the
    /// options were last set, and `MARGIN` (`usize::MAX`: all, if setting them failed).
    left: AtomicUsize,
    /// The read timeout connections start with, in nanoseconds (0: none).
    read: AtomicU64,
}

impl PassedOn {
    /// The listener's options are about to change: until `passed_on` says they are set,
    /// every connection is configured by itself, explicitly (so a failure half way leaves
    /// no connection with options it was not meant to have). No accept runs meanwhile.
    pub(crate) fn changing(&self) {
        self.left.store(usize::MAX, SeqCst);
        self.active.store(true, SeqCst);
    }

    /// The listener's options are set: the connections accepted from now on start with
    /// them and this read timeout, except the first `queued` (and `MARGIN`), which came
    /// before.
    pub(crate) fn passed_on(&self, read: Option<Duration>, queued: usize) {
        let nanos = read.map_or(0, |t| t.as_nanos().clamp(1, u64::MAX as u128) as u64);
        self.read.store(nanos, SeqCst);
        self.left.store(queued.saturating_add(MARGIN), SeqCst);
    }

    /// For a connection just accepted, taken in the order of the accepts (by the thread
    /// that accepted it, before another accept): whether it has the listener's options or
    /// must be configured itself.
    pub(crate) fn take(&self) -> Options {
        if !self.active.load(SeqCst) {
            return Options::Configure { explicit: false };
        }
        if self
            .left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Options::Configure { explicit: true };
        }
        Options::Inherited {
            read: match self.read.load(SeqCst) {
                0 => None,
                n => Some(Duration::from_nanos(n)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_reuses_freed_keys() {
        let mut s = Slab::default();
        let a = s.insert(1);
        let b = s.insert(2);
        s.remove(a);
        let c = s.insert(3);
        assert_eq!(a, c);
        assert_ne!(b, c);
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![3, 2]);
    }

    #[test]
    fn stop_is_idempotent_and_wakes_once() {
        let shared = Shared::new(Duration::from_secs(1), Duration::ZERO).unwrap();
        shared.stop();
        shared.stop();
        assert!(shared.is_stopping());
        assert!(shared.wake_pending());
        assert!(!shared.wake_pending());
        assert!(shared.stop_rx.recv().is_err());
    }
}

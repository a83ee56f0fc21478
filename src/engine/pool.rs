//! The datagram pool: warm worker threads that take their own work, one at a time at the
//! socket (leader and followers). Streams run on the event-set engine, `parked.rs`.
//!
//! One worker at a time holds the socket's turn (the leader): it waits in `recvfrom(2)`,
//! serves the datagram on the same thread and goes back to `recvfrom`, as a plain
//! receive loop does: no queue, no hand-off between threads, no wake-up of a sleeping
//! thread per datagram (under load the next datagram is already queued). The other
//! workers (the followers) sleep until they are given the turn. The serving thread watches
//! the leader: when it has been inside one datagram's handler for `HAND_OVER`, the turn
//! passes to a follower (one more worker starts if none is free, up to the limit), so a
//! slow handler holds up others for about a millisecond, never longer; the old leader
//! becomes a follower when its handler returns. The watch ticks only while datagrams come
//! (an idle server sleeps), and the leader wakes it when the first datagram after a quiet
//! spell arrives. Followers above the warm count leave after `worker_idle_timeout`
//! without the turn.
//!
//! Shutdown wakes the leader blocked in `recvfrom` with `shutdown(SHUT_RD)` on the socket
//! (Linux then returns 0 from it) and the followers through the server's stop channel.
//! Waking a blocked `recvfrom` that way is Linux's behaviour, which is why the hand-off
//! pool (`queued.rs`) serves elsewhere.

use std::io;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use socket2::SockRef;

use super::accept::{dropped_oversize, AcceptErrors, OnError};
use super::threads::ThreadSet;
use super::{finish_threads, run_contained};
use crate::config::Config;
use crate::conn::{verified, Datagram, Runner};
use crate::flavor::Flavor;
use crate::net::DgramSocket;
use crate::shared::Shared;
use crate::sys::{self, Interest};

/// Whether workers can take their own work on this system (see the module's doc).
pub(crate) const SUPPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The shortest wait of a worker for work before it looks whether it should leave: every
/// worker's wait ends at it (it is the socket's receive timeout), so a zero
/// `worker_idle_timeout` must not become a busy loop of the warm workers.
const MIN_IDLE: Duration = Duration::from_secs(1);

/// How long the leader may stay inside one datagram's handler before a follower takes the
/// socket's turn: what a slow handler can delay the datagrams behind it. Long beside a
/// quick handler (microseconds), so that a busy server keeps one thread at the socket;
/// short beside what a client waits for. It is also the watch's tick while datagrams come.
const HAND_OVER: Duration = Duration::from_millis(1);

/// How long the watch sleeps when no datagram came for a tick (the leader wakes it sooner
/// when one comes).
const WATCH_SLEEP: Duration = Duration::from_secs(1);

/// Where workers take their jobs from: a listener or a datagram socket, blocking.
pub(crate) trait Source: Send + Sync + 'static {
    /// A connection or a datagram, on its way to the runner.
    type Job: Send + 'static;

    /// Waits for and takes the next job. `Ok(None)` when nothing is to be served (a peer
    /// refused by `verify`, an oversize datagram dropped, or the socket shut down for
    /// shutdown). Errors are classified by the caller. `scratch` is the worker's own
    /// receive buffer.
    fn take(&self, scratch: &mut Vec<u8>) -> io::Result<Option<Self::Job>>;

    /// Sets how long a blocked `take` waits before it fails with `WouldBlock`
    /// (`SO_RCVTIMEO`, which bounds `accept` and `recvfrom` alike).
    fn set_wait_timeout(&self, d: Duration) -> io::Result<()>;

    /// Wakes every worker blocked in `take`, for good: the socket stops taking work.
    fn interrupt(&self);

    /// The size of each worker's receive buffer.
    fn scratch_len(&self) -> usize;
}

/// Workers and how many of them wait for work: atomics, changed once when a worker takes a
/// job and once when it is done (no lock two workers could contend for on every
/// connection).
#[derive(Debug, Default)]
struct Counts {
    workers: AtomicUsize,
    idle: AtomicUsize,
    /// Shutdown has reached `finish`: no more workers start (read under the threads' lock).
    closed: AtomicBool,
}

struct Inner<S: Source> {
    source: Arc<S>,
    runner: Runner<S::Job>,
    shared: Arc<Shared>,
    counts: Counts,
    threads: Mutex<ThreadSet>,
    warm: usize,
    limit: usize,
    /// The error that made taking work impossible (it ends `serve`).
    fatal: Mutex<Option<io::Error>>,
    errors: AcceptErrors,
    turn: Turn,
    /// How long a worker waits for work before it looks whether it should leave.
    idle_wait: Duration,
}

/// The socket's turn: which worker waits at it, and what the watch reads of it.
struct Turn {
    /// Bumped at each hand-over: a leader whose number is old is a follower again once its
    /// handler returns.
    epoch: AtomicU64,
    /// When the leader began its current datagram, in nanoseconds since `base` (at least
    /// 1); 0 while it waits in `recvfrom`.
    since: AtomicU64,
    base: Instant,
    /// Datagrams taken, for the watch: it ticks while this moves.
    taken: AtomicU64,
    /// The turn itself: one message, taken by the follower that becomes the leader.
    baton: (Sender<()>, Receiver<()>),
    /// The watch sleeps (`WATCH_SLEEP`): the leader wakes it with `wake` when a datagram
    /// comes.
    asleep: AtomicBool,
    wake: (Sender<()>, Receiver<()>),
}

impl Turn {
    fn new() -> Turn {
        Turn {
            epoch: AtomicU64::new(0),
            since: AtomicU64::new(0),
            base: Instant::now(),
            taken: AtomicU64::new(0),
            baton: crossbeam_channel::bounded(1),
            asleep: AtomicBool::new(false),
            wake: crossbeam_channel::bounded(1),
        }
    }

    fn now(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running pool.
pub(crate) struct Pool<S: Source> {
    inner: Arc<Inner<S>>,
}

impl<S: Source> Pool<S> {
    /// Starts the warm workers; `what` names the call that takes work (`accept`,
    /// `recvfrom`) in the logs.
    pub(crate) fn start(
        source: Arc<S>,
        runner: Runner<S::Job>,
        shared: &Arc<Shared>,
        flavor: &Flavor,
        what: &'static str,
    ) -> io::Result<Pool<S>> {
        let warm = flavor.workers.max(1);
        let idle_wait = flavor.worker_idle_timeout.max(MIN_IDLE);
        source.set_wait_timeout(idle_wait)?;
        let inner = Arc::new(Inner {
            source,
            runner,
            shared: Arc::clone(shared),
            counts: Counts::default(),
            threads: Mutex::new(ThreadSet::new(Arc::clone(shared))),
            warm,
            limit: flavor.limit.max(warm),
            fatal: Mutex::new(None),
            errors: AcceptErrors::new(shared, what),
            turn: Turn::new(),
            idle_wait,
        });
        let view: Arc<dyn crate::metrics::EngineView> = inner.clone();
        shared.status.set_engine(Arc::downgrade(&view));
        let pool = Pool { inner };
        // All the warm workers are counted before any starts: one that takes a client at
        // once must not see itself as the last idle worker and grow the pool past its limit.
        pool.inner.counts.workers.store(warm, SeqCst);
        pool.inner.counts.idle.store(warm, SeqCst);
        // The first worker to start takes the socket's turn.
        let _ = pool.inner.turn.baton.0.try_send(());
        for _ in 0..warm {
            if let Err(e) = spawn(&pool.inner) {
                // The workers already started leave and are joined, not detached.
                shared.stop();
                pool.inner.source.interrupt();
                pool.finish(Duration::ZERO);
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// Blocks until shutdown begins (asked, or forced by a fatal error of a worker), joining
    /// the threads that end meanwhile and watching the leader (see the module's doc);
    /// returns that error, if any.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let inner = &self.inner;
        let turn = &inner.turn;
        let done = lock(&inner.threads).done_receiver();
        let mut last_taken = turn.taken.load(Relaxed);
        let mut ticking = false;
        loop {
            let tick = if ticking {
                HAND_OVER
            } else {
                // Asleep until the leader says a datagram came; the flag is raised before
                // the last look at the leader (the leader raises `since` before it looks
                // at the flag: one of the two sees the other).
                turn.asleep.store(true, SeqCst);
                if turn.since.load(SeqCst) != 0 {
                    turn.asleep.store(false, SeqCst);
                    HAND_OVER
                } else {
                    WATCH_SLEEP
                }
            };
            select! {
                recv(inner.shared.stop_rx) -> _ => break,
                recv(done) -> id => {
                    if let Ok(id) = id {
                        lock(&inner.threads).join(id);
                    }
                }
                recv(turn.wake.1) -> _ => {}
                default(tick) => {}
            }
            turn.asleep.store(false, SeqCst);
            let since = turn.since.load(SeqCst);
            if since != 0 && turn.now().saturating_sub(since) >= HAND_OVER.as_nanos() as u64 {
                inner.hand_over();
            }
            let taken = turn.taken.load(Relaxed);
            ticking = since != 0 || taken != last_taken;
            last_taken = taken;
        }
        match lock(&self.inner.fatal).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// After the socket stopped taking work: lets requests in flight finish within `grace`,
    /// shuts down what is left, joins every worker.
    pub(crate) fn finish(self, grace: Duration) {
        // No worker starts after this (see `spawn`).
        self.inner.counts.closed.store(true, SeqCst);
        let mut threads = std::mem::replace(
            &mut *lock(&self.inner.threads),
            ThreadSet::new(Arc::clone(&self.inner.shared)),
        );
        finish_threads(&self.inner.shared, &mut threads, grace);
    }
}

impl<S: Source> Inner<S> {
    /// The leader has been inside one datagram's handler for `HAND_OVER`: the turn passes
    /// to a follower (the old leader follows once its handler returns). If no worker is
    /// free, one more starts, within the limit; at the limit the turn waits for the first
    /// worker whose handler returns.
    fn hand_over(self: &Arc<Self>) {
        let turn = &self.turn;
        turn.epoch.fetch_add(1, SeqCst);
        turn.since.store(0, SeqCst);
        let _ = turn.baton.0.try_send(());
        let c = &self.counts;
        if c.idle.load(SeqCst) == 0
            && c.workers
                .fetch_update(SeqCst, SeqCst, |w| (w < self.limit).then_some(w + 1))
                .is_ok()
        {
            c.idle.fetch_add(1, SeqCst);
            match spawn(self) {
                Ok(()) => log::debug!(
                    "a handler took over {HAND_OVER:?}: {} workers now",
                    c.workers.load(SeqCst)
                ),
                Err(e) => log::warn!("cannot grow the pool: {e}"),
            }
        }
    }
}

/// Starts a worker already counted in `workers` and `idle` (by the caller, before: a
/// worker must never see itself missing), under the threads' lock, unless `finish` has
/// begun (it takes the thread set under the same lock after closing: it never misses a
/// worker). The count is given back if the worker does not start.
fn spawn<S: Source>(inner: &Arc<Inner<S>>) -> io::Result<()> {
    let worker = Worker {
        inner: Arc::clone(inner),
    };
    let mut threads = lock(&inner.threads);
    let closed = inner.counts.closed.load(SeqCst);
    let spawned = if closed {
        Ok(())
    } else {
        threads.spawn("socketserver-worker", move || worker.run())
    };
    if closed || spawned.is_err() {
        inner.counts.workers.fetch_sub(1, SeqCst);
        inner.counts.idle.fetch_sub(1, SeqCst);
    }
    spawned
}

struct Worker<S: Source> {
    inner: Arc<Inner<S>>,
}

impl<S: Source> Worker<S> {
    fn run(self) {
        let p = &*self.inner;
        let turn = &p.turn;
        let mut scratch = vec![0u8; p.source.scratch_len()];
        // The hand-over number under which this worker leads; `None`: a follower.
        let mut leading: Option<u64> = None;
        let idle_wait = p.idle_wait;
        loop {
            if p.shared.is_stopping() {
                break;
            }
            let Some(epoch) = leading else {
                // A follower: waits for the turn (or the stop). One above the warm count
                // leaves after the idle timeout without it.
                select! {
                    recv(turn.baton.1) -> _ => leading = Some(turn.epoch.load(SeqCst)),
                    recv(p.shared.stop_rx) -> _ => break,
                    default(idle_wait) => {
                        if self.retire() {
                            return;
                        }
                    }
                }
                continue;
            };
            // The leader waits in the blocking call itself. The socket's receive timeout
            // (the worker idle timeout, at least a second) ends a wait with nothing to do.
            match p.source.take(&mut scratch) {
                Ok(Some(job)) => {
                    p.errors.success();
                    turn.taken.fetch_add(1, Relaxed);
                    let still = turn.epoch.load(SeqCst) == epoch;
                    if still {
                        turn.since.store(turn.now(), SeqCst);
                        if turn.asleep.load(SeqCst) && turn.asleep.swap(false, SeqCst) {
                            let _ = turn.wake.0.try_send(());
                        }
                    }
                    self.serve(job);
                    p.counts.idle.fetch_add(1, SeqCst);
                    if still && turn.epoch.load(SeqCst) == epoch {
                        turn.since.store(0, SeqCst);
                    } else {
                        // The turn was handed over while this handler ran.
                        leading = None;
                    }
                }
                Ok(None) => {}
                Err(e) if p.shared.is_stopping() => {
                    // The socket was shut down under us: that is the stop.
                    log::trace!("worker leaving at shutdown: {e}");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => match p.errors.on_error(e) {
                    OnError::Wait | OnError::Retry => {}
                    OnError::Backoff(d) => {
                        // Back off, waking at once for shutdown. (This worker still counts
                        // as idle: its wait for work goes on, so the pool does not grow.)
                        let _ = sys::poll(&[(p.shared.wake_fd(), Interest::Read)], Some(d));
                    }
                    OnError::Fatal(e) => {
                        lock(&p.fatal).get_or_insert(e);
                        p.shared.stop();
                        break;
                    }
                },
            }
        }
        p.counts.workers.fetch_sub(1, SeqCst);
        p.counts.idle.fetch_sub(1, SeqCst);
    }

    /// A worker found no work for the idle timeout: it leaves if it is above the warm
    /// count and another worker still waits (`true`); it takes itself off the idle count by
    /// a compare-and-swap, so two leaving at once cannot both take the last two.
    fn retire(&self) -> bool {
        let p = &*self.inner;
        let c = &p.counts;
        loop {
            let idle = c.idle.load(SeqCst);
            if idle <= 1 || c.workers.load(SeqCst) <= p.warm {
                return false;
            }
            if c.idle
                .compare_exchange(idle, idle - 1, SeqCst, SeqCst)
                .is_ok()
            {
                c.workers.fetch_sub(1, SeqCst);
                return true;
            }
        }
    }

    /// Serves one job on this thread (the watch grows the pool if it takes long).
    fn serve(&self, job: S::Job) {
        let p = &*self.inner;
        p.counts.idle.fetch_sub(1, SeqCst);
        p.shared.begin_request();
        run_contained(&p.runner, &p.shared, job);
        p.shared.end_request();
    }
}

/// A datagram socket whose pool workers receive for themselves (blocking `recvfrom`).
pub(crate) struct RecvSource {
    socket: Arc<DgramSocket>,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
}

impl RecvSource {
    /// Makes the socket blocking: idle workers wait in `recvfrom` itself (replies never
    /// block on it: they are sent with `MSG_DONTWAIT`).
    pub(crate) fn new(
        socket: Arc<DgramSocket>,
        shared: &Arc<Shared>,
        cfg: &Arc<Config>,
    ) -> io::Result<Self> {
        SockRef::from(&*socket).set_nonblocking(false)?;
        Ok(RecvSource {
            socket,
            shared: Arc::clone(shared),
            cfg: Arc::clone(cfg),
        })
    }
}

impl Source for RecvSource {
    type Job = Datagram;

    fn take(&self, scratch: &mut Vec<u8>) -> io::Result<Option<Datagram>> {
        let (n, peer) = self.socket.recv_from(scratch)?;
        // After `interrupt`, recvfrom returns 0 at once: the stop, not an empty datagram.
        if n == 0 && self.shared.is_stopping() {
            return Ok(None);
        }
        if n > self.cfg.max_datagram {
            dropped_oversize(&self.shared, &self.cfg, &peer);
            return Ok(None);
        }
        Ok(verified(&self.cfg, &self.shared, &peer).then(|| Datagram {
            data: scratch[..n].to_vec(),
            peer,
        }))
    }

    fn set_wait_timeout(&self, d: Duration) -> io::Result<()> {
        SockRef::from(&*self.socket).set_read_timeout(Some(d))
    }

    fn interrupt(&self) {
        // Linux: blocked recvfroms return 0 (the call itself reports ENOTCONN on an
        // unconnected socket, and still shuts reading down).
        let _ = SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read);
    }

    fn scratch_len(&self) -> usize {
        // One byte more than the largest datagram served: a datagram that fills it was cut.
        self.cfg.max_datagram + 1
    }
}

/// What the metrics read of the pool at scrape time (never on the request path).
impl<S: Source> crate::metrics::EngineView for Inner<S> {
    fn workers(&self) -> crate::metrics::Workers {
        let (workers, idle) = (
            self.counts.workers.load(SeqCst),
            self.counts.idle.load(SeqCst),
        );
        crate::metrics::Workers {
            busy: workers.saturating_sub(idle) as u64,
            idle: idle.min(workers) as u64,
        }
    }
}

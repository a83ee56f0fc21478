//! The datagram pool without a hand-off: warm worker threads that take their own work.
//! (Streams run on the event-set engine, `parked.rs`.)
//!
//! Each idle worker waits in `recvfrom(2)` on the shared socket, and the worker the kernel
//! wakes serves what it took, on the same thread: no queue, no hand-off between threads,
//! one system call to get a datagram. Linux wakes one waiter per datagram (an exclusive
//! wait), so idle workers do not stampede. The pool grows when the worker that just took a job was the
//! last idle one (someone must be waiting when the next client comes), up to the limit.
//! Every worker's wait ends after `worker_idle_timeout` (at least 1 s: the socket's
//! receive timeout) without work: workers above the warm count then leave.
//!
//! Shutdown wakes every blocked worker at once with `shutdown(SHUT_RD)` on the socket:
//! Linux then returns 0 from a blocked `recvfrom`. That
//! behaviour is Linux's, which is why the hand-off pool (`queued.rs`) serves elsewhere.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::select;

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
        source.set_wait_timeout(flavor.worker_idle_timeout.max(MIN_IDLE))?;
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
        });
        let view: Arc<dyn crate::metrics::EngineView> = inner.clone();
        shared.status.set_engine(Arc::downgrade(&view));
        let pool = Pool { inner };
        // All the warm workers are counted before any starts: one that takes a client at
        // once must not see itself as the last idle worker and grow the pool past its limit.
        pool.inner.counts.workers.store(warm, SeqCst);
        pool.inner.counts.idle.store(warm, SeqCst);
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
    /// the threads that end meanwhile; returns that error, if any.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let done = lock(&self.inner.threads).done_receiver();
        loop {
            select! {
                recv(self.inner.shared.stop_rx) -> _ => break,
                recv(done) -> id => {
                    if let Ok(id) = id {
                        lock(&self.inner.threads).join(id);
                    }
                }
            }
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
        let mut scratch = vec![0u8; p.source.scratch_len()];
        loop {
            if p.shared.is_stopping() {
                break;
            }
            // Every worker, warm or extra, waits in the blocking call itself: the kernel wakes
            // one waiter per connection or datagram. The socket's receive timeout (the
            // worker idle timeout, at least a second) ends the wait of a worker with nothing
            // to do: an extra one then leaves, a warm one waits again.
            match p.source.take(&mut scratch) {
                Ok(Some(job)) => {
                    p.errors.success();
                    self.serve(job);
                    p.counts.idle.fetch_add(1, SeqCst);
                }
                Ok(None) => {}
                Err(e) if p.shared.is_stopping() => {
                    // The socket was shut down under us: that is the stop.
                    log::trace!("worker leaving at shutdown: {e}");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.retire() {
                        return;
                    }
                }
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

    /// Serves one job on this thread; grows the pool first if this worker was the last
    /// one waiting for work.
    fn serve(&self, job: S::Job) {
        let p = &*self.inner;
        // The last one waiting takes a job: start another, so that someone waits when the
        // next client comes. The new worker's place is reserved atomically: never past the
        // limit, however many grow at once.
        if p.counts.idle.fetch_sub(1, SeqCst) == 1
            && p.counts
                .workers
                .fetch_update(SeqCst, SeqCst, |w| (w < p.limit).then_some(w + 1))
                .is_ok()
        {
            p.counts.idle.fetch_add(1, SeqCst);
            if let Err(e) = spawn(&self.inner) {
                log::warn!("cannot grow the pool: {e}");
            }
        }
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

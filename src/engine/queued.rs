//! The hand-off pool: warm worker threads fed by a bounded queue from the accept loop,
//! growing while every worker is busy. Used where workers cannot take their own work (see
//! `pool.rs`): only outside Linux.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use super::threads::ThreadSet;
use super::{finish_threads, run_contained, Job, Runner};
use crate::flavor::Flavor;
use crate::shared::Shared;
use crate::stats::Counters;

/// The shortest wait of an extra worker for work: a zero `worker_idle_timeout` must not
/// become a busy loop.
const MIN_IDLE: Duration = Duration::from_millis(1);

pub(crate) struct Pool<J> {
    /// What the metrics read of the pool at scrape time (registered weakly: it goes with
    /// the pool).
    _view: Arc<View<J>>,
    tx: Option<Sender<J>>,
    rx: Receiver<J>,
    threads: ThreadSet,
    runner: Runner<J>,
    shared: Arc<Shared>,
    warm: usize,
    limit: usize,
    idle_timeout: Duration,
    counts: Arc<Mutex<Counts>>,
}

/// Workers and jobs, changed together under one lock, once per request (not per read), so
/// that growing and retiring decide on the same picture.
#[derive(Debug, Default)]
struct Counts {
    /// Worker threads alive (warm and extra).
    workers: usize,
    /// Jobs handed to the pool and not finished: queued or running.
    jobs: usize,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

impl<J: Job> Pool<J> {
    pub(crate) fn new(
        runner: Runner<J>,
        shared: Arc<Shared>,
        flavor: &Flavor,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(flavor.queue_capacity());
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let view = Arc::new(View {
            rx: rx.clone(),
            counts: Arc::clone(&counts),
            capacity: flavor.queue_capacity() as u64,
        });
        let engine: Arc<dyn crate::metrics::EngineView> = view.clone();
        shared.status.set_engine(Arc::downgrade(&engine));
        let mut pool = Pool {
            _view: view,
            tx: Some(tx),
            rx,
            threads: ThreadSet::new(Arc::clone(&shared)),
            runner,
            shared,
            warm: flavor.workers.max(1),
            limit: flavor.limit.max(flavor.workers).max(1),
            idle_timeout: flavor.worker_idle_timeout.max(MIN_IDLE),
            counts,
        };
        for _ in 0..pool.warm {
            lock(&pool.counts).workers += 1;
            if let Err(e) = pool.spawn_worker() {
                // The workers already started leave and are joined, not detached.
                pool.finish(Duration::ZERO);
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// Starts a worker already counted in `Counts::workers` (uncounted again on failure).
    fn spawn_worker(&mut self) -> std::io::Result<()> {
        let w = Worker {
            rx: self.rx.clone(),
            runner: Arc::clone(&self.runner),
            shared: Arc::clone(&self.shared),
            counts: Arc::clone(&self.counts),
            warm: self.warm,
            idle_timeout: self.idle_timeout,
        };
        let res = self.threads.spawn("socketserver-worker", move || w.run());
        if res.is_err() {
            lock(&self.counts).workers -= 1;
        }
        res
    }

    pub(crate) fn reap(&mut self) {
        self.threads.reap();
    }

    pub(crate) fn ready(&mut self) -> bool {
        !self.shared.is_stopping()
    }

    pub(crate) fn execute(&mut self, job: J) {
        let Some(tx) = self.tx.clone() else { return };
        self.shared.begin_request();
        // Grow when this job would find every worker taken by an earlier one.
        let grow = {
            let mut c = lock(&self.counts);
            c.jobs += 1;
            let grow = c.jobs > c.workers && c.workers < self.limit;
            if grow {
                c.workers += 1;
            }
            grow
        };
        if grow {
            if let Err(e) = self.spawn_worker() {
                log::warn!("cannot grow the pool: {e}");
            }
        }
        // A job that fits in the queue is queued, even as shutdown begins (its handler then
        // sees the shutdown); a full queue is waited on (see `wait_for_room`).
        let sent = match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(job)) => self.wait_for_room(&tx, job),
        };
        if !sent {
            lock(&self.counts).jobs -= 1;
            self.shared.end_request();
        }
    }

    /// Waits for room in the full queue. Shutdown does not drop a connection already
    /// accepted (in a SIGHUP restart, the new process would have served it): the workers go
    /// on emptying the queue during the grace period, so the wait goes on up to then; only
    /// if no room appears by then (handlers stuck) is the job dropped, and counted.
    fn wait_for_room(&self, tx: &Sender<J>, mut job: J) -> bool {
        // Before shutdown, wake now and then to see it begin (the send gives the job back).
        const TICK: Duration = Duration::from_millis(20);
        while !self.shared.is_stopping() {
            match tx.send_timeout(job, TICK) {
                Ok(()) => return true,
                Err(SendTimeoutError::Disconnected(_)) => return false,
                Err(SendTimeoutError::Timeout(j)) => job = j,
            }
        }
        match tx.send_timeout(job, self.shared.grace()) {
            Ok(()) => true,
            Err(_) => {
                Counters::bump(&self.shared.counters.rejected);
                false
            }
        }
    }

    pub(crate) fn finish(mut self, grace: Duration) {
        // Workers serve what is queued (their handlers see the shutdown), then leave.
        self.tx = None;
        finish_threads(&self.shared, &mut self.threads, grace);
    }
}

struct Worker<J> {
    rx: Receiver<J>,
    runner: Runner<J>,
    shared: Arc<Shared>,
    counts: Arc<Mutex<Counts>>,
    warm: usize,
    idle_timeout: Duration,
}

impl<J> Worker<J> {
    fn run(self) {
        // Warm workers wait for work without a timeout (a timeout would only wake them to
        // find they must stay); a worker waits with one after each job, in case it is extra.
        let mut wait_forever = false;
        loop {
            let next = if wait_forever {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.rx.recv_timeout(self.idle_timeout)
            };
            match next {
                Ok(job) => {
                    run_contained(&self.runner, &self.shared, job);
                    lock(&self.counts).jobs -= 1;
                    self.shared.end_request();
                    wait_forever = false;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // An extra worker leaves only if every job would still have a worker.
                    let mut c = lock(&self.counts);
                    if c.workers > self.warm && c.workers > c.jobs {
                        c.workers -= 1;
                        return;
                    }
                    wait_forever = c.workers <= self.warm;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    lock(&self.counts).workers -= 1;
                    return;
                }
            }
        }
    }
}

/// The hand-off pool as the metrics see it: its workers and its queue.
struct View<J> {
    rx: Receiver<J>,
    counts: Arc<Mutex<Counts>>,
    capacity: u64,
}

impl<J: Send> crate::metrics::EngineView for View<J> {
    fn workers(&self) -> crate::metrics::Workers {
        let c = lock(&self.counts);
        let queued = self.rx.len();
        // Jobs counted but still in the queue are not on a worker yet.
        let busy = c.jobs.saturating_sub(queued).min(c.workers) as u64;
        crate::metrics::Workers {
            busy,
            idle: c.workers as u64 - busy,
        }
    }

    fn queue(&self) -> Option<(u64, u64)> {
        Some((self.rx.len() as u64, self.capacity))
    }
}

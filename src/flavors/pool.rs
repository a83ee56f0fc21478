//! A pool of warm worker threads fed by a bounded queue, growing while every worker is busy.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};

use super::threads::ThreadSet;
use super::{finish_threads, Job, Runner};
use crate::flavor::Flavor;
use crate::shutdown::Shared;
use crate::stats::Counters;

pub(crate) struct Pool<J> {
    tx: Option<Sender<J>>,
    rx: Receiver<J>,
    threads: ThreadSet,
    runner: Runner<J>,
    shared: Arc<Shared>,
    warm: usize,
    limit: usize,
    idle_timeout: Duration,
    /// Workers waiting for a job right now.
    idle: Arc<AtomicUsize>,
    /// Workers alive (warm and extra).
    total: Arc<AtomicUsize>,
}

impl<J: Job> Pool<J> {
    pub(crate) fn new(
        runner: Runner<J>,
        shared: Arc<Shared>,
        flavor: &Flavor,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(flavor.queue_capacity());
        let mut pool = Pool {
            tx: Some(tx),
            rx,
            threads: ThreadSet::new(Arc::clone(&shared)),
            runner,
            shared,
            warm: flavor.workers.max(1),
            limit: flavor.limit.max(flavor.workers).max(1),
            idle_timeout: flavor.idle_timeout,
            idle: Arc::new(AtomicUsize::new(0)),
            total: Arc::new(AtomicUsize::new(0)),
        };
        for _ in 0..pool.warm {
            pool.spawn_worker()?;
        }
        Ok(pool)
    }

    fn spawn_worker(&mut self) -> std::io::Result<()> {
        self.total.fetch_add(1, SeqCst);
        let w = Worker {
            rx: self.rx.clone(),
            runner: Arc::clone(&self.runner),
            shared: Arc::clone(&self.shared),
            idle: Arc::clone(&self.idle),
            total: Arc::clone(&self.total),
            warm: self.warm,
            idle_timeout: self.idle_timeout,
        };
        let res = self.threads.spawn("socketserver-worker", move || w.run());
        if res.is_err() {
            self.total.fetch_sub(1, SeqCst);
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
        // Grow when the jobs already waiting would take every idle worker.
        if tx.len() >= self.idle.load(SeqCst) && self.total.load(SeqCst) < self.limit {
            if let Err(e) = self.spawn_worker() {
                log::warn!("cannot grow the pool: {e}");
            }
        }
        select! {
            send(tx, job) -> r => if r.is_err() { self.shared.end_request() },
            recv(self.shared.stop_rx) -> _ => {
                Counters::bump(&self.shared.counters.rejected);
                self.shared.end_request();
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
    idle: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    warm: usize,
    idle_timeout: Duration,
}

impl<J> Worker<J> {
    fn run(self) {
        loop {
            self.idle.fetch_add(1, SeqCst);
            let got = self.rx.recv_timeout(self.idle_timeout);
            self.idle.fetch_sub(1, SeqCst);
            match got {
                Ok(job) => {
                    (self.runner)(job, false);
                    self.shared.end_request();
                }
                Err(RecvTimeoutError::Timeout) => {
                    let n = self.total.load(SeqCst);
                    if n > self.warm
                        && self
                            .total
                            .compare_exchange(n, n - 1, SeqCst, SeqCst)
                            .is_ok()
                    {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.total.fetch_sub(1, SeqCst);
                    return;
                }
            }
        }
    }
}

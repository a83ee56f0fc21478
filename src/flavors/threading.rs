//! A thread per request, bounded.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};

use super::threads::ThreadSet;
use super::{finish_threads, Job, Runner};
use crate::shutdown::Shared;
use crate::stats::Counters;

pub(crate) struct Threading<J> {
    runner: Runner<J>,
    shared: Arc<Shared>,
    /// A semaphore: a bounded channel holds one token per running thread.
    permit_tx: Sender<()>,
    permit_rx: Receiver<()>,
    has_permit: bool,
    threads: ThreadSet,
}

impl<J: Job> Threading<J> {
    pub(crate) fn new(runner: Runner<J>, shared: Arc<Shared>, limit: usize) -> Self {
        let (permit_tx, permit_rx) = crossbeam_channel::bounded(limit.max(1));
        Threading {
            runner,
            threads: ThreadSet::new(Arc::clone(&shared)),
            shared,
            permit_tx,
            permit_rx,
            has_permit: false,
        }
    }

    pub(crate) fn reap(&mut self) {
        self.threads.reap();
    }

    /// Takes a permit, waiting while `limit` threads run; false when shutdown comes first.
    pub(crate) fn ready(&mut self) -> bool {
        if !self.has_permit {
            select! {
                send(self.permit_tx, ()) -> r => self.has_permit = r.is_ok(),
                recv(self.shared.stop_rx) -> _ => {}
            }
        }
        self.has_permit && !self.shared.is_stopping()
    }

    pub(crate) fn execute(&mut self, job: J) {
        debug_assert!(self.has_permit);
        self.has_permit = false;
        self.shared.begin_request();
        let runner = Arc::clone(&self.runner);
        let shared = Arc::clone(&self.shared);
        let permits = self.permit_rx.clone();
        let spawned = self.threads.spawn("socketserver-conn", move || {
            runner(job, false);
            shared.end_request();
            let _ = permits.try_recv();
        });
        if let Err(e) = spawned {
            log::error!("cannot start a thread for a request, dropping it: {e}");
            Counters::bump(&self.shared.counters.rejected);
            self.shared.end_request();
            let _ = self.permit_rx.try_recv();
        }
    }

    pub(crate) fn finish(mut self, grace: Duration) {
        finish_threads(&self.shared, &mut self.threads, grace);
    }
}

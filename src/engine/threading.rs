//! A thread per request, bounded.

use std::sync::Arc;
use std::time::Duration;

use super::threads::ThreadSet;
use super::{finish_threads, run_contained, Job, Runner};
use crate::shared::Shared;
use crate::stats::Counters;

pub(crate) struct Threading<J> {
    runner: Runner<J>,
    shared: Arc<Shared>,
    limit: usize,
    threads: ThreadSet,
}

impl<J: Job> Threading<J> {
    pub(crate) fn new(runner: Runner<J>, shared: Arc<Shared>, limit: usize) -> Self {
        Threading {
            runner,
            threads: ThreadSet::new(Arc::clone(&shared)),
            shared,
            limit: limit.max(1),
        }
    }

    pub(crate) fn reap(&mut self) {
        self.threads.reap();
    }

    /// Waits while `limit` threads run; false when shutdown comes first.
    pub(crate) fn ready(&mut self) -> bool {
        self.threads.wait_below(self.limit, &self.shared.stop_rx) && !self.shared.is_stopping()
    }

    pub(crate) fn execute(&mut self, job: J) {
        self.shared.begin_request();
        let runner = Arc::clone(&self.runner);
        let shared = Arc::clone(&self.shared);
        let spawned = self.threads.spawn("socketserver-conn", move || {
            run_contained(&runner, &shared, job);
            shared.end_request();
        });
        if let Err(e) = spawned {
            log::error!("cannot start a thread for a request, dropping it: {e}");
            Counters::bump(&self.shared.counters.rejected);
            self.shared.end_request();
        }
    }

    pub(crate) fn finish(mut self, grace: Duration) {
        finish_threads(&self.shared, &mut self.threads, grace);
    }
}

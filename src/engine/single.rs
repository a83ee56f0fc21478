//! One request at a time, on the serving thread.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{run_contained, Job, Runner};
use crate::shared::Shared;

pub(crate) struct Single<J> {
    runner: Runner<J>,
    shared: Arc<Shared>,
    _job: PhantomData<fn(J)>,
}

impl<J: Job> Single<J> {
    pub(crate) fn new(runner: Runner<J>, shared: Arc<Shared>) -> Self {
        // The serving thread is busy inside the handler during shutdown, so a watchdog
        // started at shutdown enforces the grace period.
        shared.enable_watchdog();
        Single {
            runner,
            shared,
            _job: PhantomData,
        }
    }

    pub(crate) fn ready(&mut self) -> bool {
        !self.shared.is_stopping()
    }

    pub(crate) fn execute(&mut self, job: J) {
        self.shared.begin_request();
        run_contained(&self.runner, &self.shared, job);
        self.shared.end_request();
    }

    pub(crate) fn finish(self) {
        self.shared.join_watchdog();
    }
}

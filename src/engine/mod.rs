//! The four ways of running requests, one private file each, behind one enum.

pub(crate) mod accept;
mod forking;
pub(crate) mod parked;
pub(crate) mod pool;
mod queued;
mod single;
mod threading;
mod threads;

use std::io;
use std::os::unix::io::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::{Job, Runner};
use crate::flavor::{Flavor, Kind};
use crate::handler::{contained, Outcome};
use crate::shared::Shared;
use crate::time;

/// How long, after the grace period, threads get to notice that their sockets were shut
/// down before they are detached (and children before they are killed).
pub(crate) const FORCE_WAIT: Duration = Duration::from_millis(500);

/// A flavour, ready to run jobs.
pub(crate) enum Exec<J: Job> {
    Single(single::Single<J>),
    Threading(threading::Threading<J>),
    Pool(queued::Pool<J>),
    Forking(forking::Forking<J>),
}

impl<J: Job> Exec<J> {
    pub(crate) fn new(
        flavor: &Flavor,
        runner: Runner<J>,
        shared: &Arc<Shared>,
    ) -> io::Result<Exec<J>> {
        let shared = Arc::clone(shared);
        Ok(match flavor.kind {
            Kind::Single => Exec::Single(single::Single::new(runner, shared)),
            Kind::Threading => {
                Exec::Threading(threading::Threading::new(runner, shared, flavor.limit))
            }
            Kind::Pool => Exec::Pool(queued::Pool::new(runner, shared, flavor)?),
            Kind::Forking => Exec::Forking(forking::Forking::new(runner, shared, flavor.limit)?),
        })
    }

    /// A descriptor the loop should also wait on (the forking flavour's SIGCHLD pipe).
    pub(crate) fn extra_fd(&self) -> Option<RawFd> {
        match self {
            Exec::Forking(f) => Some(f.signal_fd()),
            _ => None,
        }
    }

    /// Collects finished threads or children.
    pub(crate) fn reap(&mut self) {
        match self {
            Exec::Single(_) => {}
            Exec::Threading(t) => t.reap(),
            Exec::Pool(p) => p.reap(),
            Exec::Forking(f) => f.reap(),
        }
    }

    /// Waits until another job may be taken; `Ok(false)` once the server is stopping.
    pub(crate) fn ready(&mut self) -> io::Result<bool> {
        Ok(match self {
            Exec::Single(s) => s.ready(),
            Exec::Threading(t) => t.ready(),
            Exec::Pool(p) => p.ready(),
            Exec::Forking(f) => return f.ready(),
        })
    }

    /// Runs `job`. `child_close` is a descriptor a forked child must close (the listener).
    pub(crate) fn execute(&mut self, job: J, child_close: Option<RawFd>) {
        match self {
            Exec::Single(s) => s.execute(job),
            Exec::Threading(t) => t.execute(job),
            Exec::Pool(p) => p.execute(job),
            Exec::Forking(f) => f.execute(job, child_close),
        }
    }

    /// After the loop has stopped: lets requests in flight finish within `grace`, shuts down
    /// what is left, joins every thread and reaps every child.
    pub(crate) fn finish(self, grace: Duration) {
        match self {
            Exec::Single(s) => s.finish(),
            Exec::Threading(t) => t.finish(grace),
            Exec::Pool(p) => p.finish(grace),
            Exec::Forking(f) => f.finish(grace),
        }
    }
}

/// Runs one job and contains a panic that escapes the runner itself (a panicking logger in
/// its report, a panic payload whose destructor panics): counted as a panic, and never
/// unwinding past the caller's bookkeeping (a pool's counts, a permit), which would leave a
/// `fixed_pool(1)` serving nobody.
pub(crate) fn run_contained<J>(runner: &Runner<J>, shared: &Shared, job: J) -> Outcome {
    contained(|| runner(job, false)).unwrap_or_else(|_| {
        crate::stats::Counters::bump(&shared.counters.panics);
        Outcome::Panic
    })
}

/// Shared ending of the thread flavours: wait for requests, then force, then join.
fn finish_threads(shared: &Shared, threads: &mut threads::ThreadSet, grace: Duration) {
    if !shared.wait_drained(time::after(grace)) {
        log::warn!("grace period of {grace:?} over: shutting down the connections still open");
        shared.force_close();
    }
    threads.join_until(time::after(FORCE_WAIT));
    threads.detach_rest();
}

//! A process per request, bounded before forking, reaped on SIGCHLD.

use std::collections::HashMap;
use std::io::Read;
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::SIGCHLD;
use signal_hook::SigId;

use super::{Job, Runner, FORCE_WAIT};
use crate::handler::Outcome;
use crate::net::stream::Stream;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::sys::{self, ChildExit, Interest};
use crate::time;

pub(crate) struct Forking<J> {
    runner: Runner<J>,
    shared: Arc<Shared>,
    limit: usize,
    /// Our own children, with the parent's copy of the connection (to shut it down at the
    /// deadline; closed when the child is reaped).
    children: HashMap<libc::pid_t, Option<Stream>>,
    /// Readable after a SIGCHLD (signal-hook writes a byte from the handler).
    sig_rx: UnixStream,
    sig_id: SigId,
    _job: PhantomData<fn(J)>,
}

impl<J: Job> Forking<J> {
    pub(crate) fn new(
        runner: Runner<J>,
        shared: Arc<Shared>,
        limit: usize,
    ) -> std::io::Result<Self> {
        let (tx, sig_rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        sig_rx.set_nonblocking(true)?;
        let sig_id = signal_hook::low_level::pipe::register(SIGCHLD, tx)?;
        Ok(Forking {
            runner,
            shared,
            limit: limit.max(1),
            children: HashMap::new(),
            sig_rx,
            sig_id,
            _job: PhantomData,
        })
    }

    pub(crate) fn signal_fd(&self) -> RawFd {
        self.sig_rx.as_raw_fd()
    }

    /// Reaps every child of ours that has ended (never `waitpid(-1)`: a child the program
    /// forked itself is left for its owner).
    pub(crate) fn reap(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.sig_rx).read(&mut buf), Ok(n) if n > 0) {}
        let pids: Vec<libc::pid_t> = self.children.keys().copied().collect();
        for pid in pids {
            match sys::try_reap(pid) {
                Ok(Some(exit)) => self.account(pid, exit),
                Ok(None) => {}
                Err(e) => {
                    log::error!("waitpid({pid}) failed: {e}");
                    self.children.remove(&pid);
                    self.shared.end_request();
                }
            }
        }
        self.shared
            .counters
            .threads
            .store(self.children.len() as u64, Relaxed);
    }

    fn account(&mut self, pid: libc::pid_t, exit: ChildExit) {
        self.children.remove(&pid);
        let c = &self.shared.counters;
        match exit {
            // The child counted its request itself, in the counters it shares with this
            // process (see `sys::SharedMem`): its exit code only confirms it.
            ChildExit::Code(code) => {
                log::trace!("child {pid} exited: {:?}", Outcome::from_exit_code(code));
            }
            ChildExit::Signal(sig) => {
                log::warn!("child {pid} killed by signal {sig}");
                Counters::bump(&c.completed);
                Counters::bump(&c.panics);
            }
        }
        self.shared.end_request();
    }

    /// Waits while `limit` children run: the limit holds *before* the next fork. `Ok(false)`
    /// once the server is stopping; a failed `poll` ends `serve` with its error.
    pub(crate) fn ready(&mut self) -> std::io::Result<bool> {
        self.reap();
        while self.children.len() >= self.limit && !self.shared.is_stopping() {
            let fds = [
                (self.sig_rx.as_raw_fd(), Interest::Read),
                (self.shared.wake_fd(), Interest::Read),
            ];
            let ready = sys::poll(&fds, None).inspect_err(|e| {
                log::error!("poll failed while waiting for a child: {e}");
            })?;
            if ready.is(1) {
                // A child asked for shutdown (see `Waiter`): this process's flag follows.
                self.shared.stop();
            }
            self.reap();
        }
        Ok(!self.shared.is_stopping())
    }

    /// Forks a child for `job`. The child closes what the parent owns and it must not keep
    /// (`child_close`, the listener; the SIGCHLD pipe; every other child's connection, so a
    /// child that dies without closing its client is not kept open by its siblings), resets
    /// the signal dispositions, runs the request and `_exit`s (see `sys::fork_child`).
    pub(crate) fn execute(&mut self, job: J, child_close: Option<RawFd>) {
        // Gathered before the fork: the child allocates nothing before its handler.
        let mut close: Vec<RawFd> = child_close.into_iter().collect();
        close.push(self.sig_rx.as_raw_fd());
        close.extend(self.children.values().flatten().map(AsRawFd::as_raw_fd));
        let mut job = Some(job);
        let runner = &self.runner;
        let forked = sys::fork_child(&close, || match job.take() {
            Some(job) => runner(job, true).exit_code(),
            None => Outcome::Error.exit_code(),
        });
        // Only the parent gets here; the closure never ran in this process.
        let Some(job) = job else { return };
        match forked {
            Ok(pid) => {
                self.shared.begin_request();
                self.children.insert(pid, job.into_kept());
                self.shared
                    .counters
                    .threads
                    .store(self.children.len() as u64, Relaxed);
            }
            Err(e) => {
                log::error!("fork failed, dropping the request: {e}");
                Counters::bump(&self.shared.counters.rejected_fork);
                Counters::bump(&self.shared.counters.rejected);
            }
        }
    }

    /// Reaps children as they end, until none is left or `deadline` (`None`: never) passes.
    fn wait_children(&mut self, deadline: Option<Instant>) {
        self.reap();
        while !self.children.is_empty() {
            let left = time::left(deadline);
            if left == Some(Duration::ZERO) {
                return;
            }
            let _ = sys::poll(&[(self.sig_rx.as_raw_fd(), Interest::Read)], left);
            self.reap();
        }
    }

    pub(crate) fn finish(mut self, grace: Duration) {
        self.wait_children(time::after(grace));
        if self.children.is_empty() {
            return;
        }
        log::warn!("grace period of {grace:?} over: shutting down the connections still open");
        for stream in self.children.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.wait_children(time::after(FORCE_WAIT));
        let left: Vec<libc::pid_t> = self.children.keys().copied().collect();
        for pid in left {
            log::error!("child {pid} still running after shutdown; killing it");
            let _ = sys::kill_child(pid);
            match sys::reap_blocking(pid) {
                Ok(Some(exit)) => self.account(pid, exit),
                _ => {
                    self.children.remove(&pid);
                    self.shared.end_request();
                }
            }
        }
    }
}

impl<J> Drop for Forking<J> {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.sig_id);
    }
}

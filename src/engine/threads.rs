//! Tracking of live worker threads: finished ones are joined promptly, never kept.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::shared::Shared;

/// The live threads of a flavour. Memory is O(live threads): each thread reports its own end
/// on a channel and is joined at the next `reap` (Python's bpo-37193 kept every finished
/// thread instead).
pub(crate) struct ThreadSet {
    live: HashMap<u64, JoinHandle<()>>,
    next: u64,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    shared: Arc<Shared>,
}

/// Reports a thread's end, however it ends: to the set (to be joined) and to the `threads`
/// gauge at once, so `Stats::threads` counts running threads even while the accept loop
/// sleeps and has not joined the ended ones yet.
struct Done(u64, Sender<u64>, Arc<Shared>);

impl Drop for Done {
    fn drop(&mut self) {
        self.2.counters.threads.fetch_sub(1, Relaxed);
        let _ = self.1.send(self.0);
    }
}

impl ThreadSet {
    pub(crate) fn new(shared: Arc<Shared>) -> ThreadSet {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        ThreadSet {
            live: HashMap::new(),
            next: 0,
            done_tx,
            done_rx,
            shared,
        }
    }

    pub(crate) fn spawn(
        &mut self,
        name: &str,
        f: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let id = self.next;
        self.next += 1;
        // Counted before the thread can end (and uncount itself).
        self.shared.counters.threads.fetch_add(1, Relaxed);
        let done = Done(id, self.done_tx.clone(), Arc::clone(&self.shared));
        let spawned = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _done = done;
                f();
            });
        // On failure the closure, and so `done`, was dropped: the count is already undone.
        self.live.insert(id, spawned?);
        Ok(())
    }

    /// Joins the threads that have ended.
    pub(crate) fn reap(&mut self) {
        while let Ok(id) = self.done_rx.try_recv() {
            self.join(id);
        }
    }

    /// The channel on which ended threads report their id (to `join` them).
    pub(crate) fn done_receiver(&self) -> Receiver<u64> {
        self.done_rx.clone()
    }

    /// Joins the thread `id` (ended, as reported on `done_receiver`).
    pub(crate) fn join(&mut self, id: u64) {
        if let Some(h) = self.live.remove(&id) {
            let _ = h.join();
        }
    }

    /// Waits until fewer than `limit` threads are live, joining those that end; `false`
    /// when `stop` (the server's shutdown channel) fires first. Nothing is allocated per
    /// permit, so any limit is as cheap as a small one.
    pub(crate) fn wait_below(&mut self, limit: usize, stop: &Receiver<()>) -> bool {
        self.reap();
        while self.live.len() >= limit {
            crossbeam_channel::select! {
                recv(self.done_rx) -> id => {
                    if let Ok(id) = id {
                        self.join(id);
                    }
                }
                recv(stop) -> _ => return false,
            }
        }
        true
    }

    /// Joins threads as they end, until none is left or `deadline` passes.
    pub(crate) fn join_until(&mut self, deadline: Option<Instant>) -> bool {
        self.reap();
        while !self.live.is_empty() {
            let done = match deadline {
                Some(d) => self.done_rx.recv_deadline(d).map_err(drop),
                None => self.done_rx.recv().map_err(drop),
            };
            match done {
                Ok(id) => self.join(id),
                Err(_) => break,
            }
        }
        self.live.is_empty()
    }

    /// Gives up on threads that outlived the grace period and the forced close (a handler
    /// stuck outside socket I/O): they are detached and reported, never waited for forever.
    /// They stay counted in `Stats::threads` until they end.
    pub(crate) fn detach_rest(&mut self) {
        if !self.live.is_empty() {
            log::error!(
                "{} handler thread(s) still running after shutdown; detaching them",
                self.live.len()
            );
            self.live.clear();
        }
    }
}

//! The one thread per process that sends the backlogs of pushed connections: it waits in an
//! event set of its own (epoll, kqueue) for the sockets that have bytes waiting to become
//! writable, sends what they take, and closes the ones that take nothing for their stall
//! timeout. A socket is in it only while a backlog waits (registered when one begins,
//! removed when it drains), so an idle server costs it nothing: it sleeps without a
//! timeout while nothing is watched.
//!
//! It is per process, not per server, and started at the first backlog: a forked child
//! (which copied the parent's memory but not its threads) starts its own.

use std::collections::HashMap;
use std::io;
use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::{Outbound, TICK};

/// The waker's key (queue ids start at 1).
const WAKER: Token = Token(0);

struct Flusher {
    registry: Registry,
    waker: Waker,
    watched: Mutex<HashMap<usize, Arc<Outbound>>>,
}

/// The process's flusher, with the pid it was started in.
static FLUSHER: Mutex<Option<(u32, Arc<Flusher>)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The flusher of this process, started if it is not running.
fn flusher() -> io::Result<Arc<Flusher>> {
    let mut current = lock(&FLUSHER);
    let pid = std::process::id();
    if let Some((started_in, f)) = &*current {
        if *started_in == pid {
            return Ok(Arc::clone(f));
        }
    }
    let poll = Poll::new()?;
    let flusher = Arc::new(Flusher {
        registry: poll.registry().try_clone()?,
        waker: Waker::new(poll.registry(), WAKER)?,
        watched: Mutex::new(HashMap::new()),
    });
    let running = Arc::clone(&flusher);
    std::thread::Builder::new()
        .name("socketserver-push".into())
        .spawn(move || running.run(poll))?;
    *current = Some((pid, Arc::clone(&flusher)));
    Ok(flusher)
}

/// Watches `out`'s socket (`fd`) for writability until `unwatch`. Called under `out`'s lock
/// (the lock order is the queue's, then the flusher's map).
pub(super) fn watch(out: &Arc<Outbound>, fd: RawFd) -> io::Result<()> {
    let f = flusher()?;
    let first = {
        let mut watched = lock(&f.watched);
        watched.insert(out.id, Arc::clone(out));
        watched.len() == 1
    };
    // Registering reports at once if the socket is writable already.
    if let Err(e) = f
        .registry
        .register(&mut SourceFd(&fd), Token(out.id), Interest::WRITABLE)
    {
        lock(&f.watched).remove(&out.id);
        return Err(e);
    }
    if first {
        // The thread sleeps without a timeout while nothing is watched: the stall sweep
        // must begin.
        let _ = f.waker.wake();
    }
    Ok(())
}

/// Stops watching queue `id` (its socket `fd`, if still open).
pub(super) fn unwatch(id: usize, fd: Option<RawFd>) {
    let Some(f) = lock(&FLUSHER).as_ref().map(|(_, f)| Arc::clone(f)) else {
        return;
    };
    if let Some(fd) = fd {
        let _ = f.registry.deregister(&mut SourceFd(&fd));
    }
    lock(&f.watched).remove(&id);
}

impl Flusher {
    fn run(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + TICK;
        loop {
            let timeout = match lock(&self.watched).is_empty() {
                true => None,
                false => Some(next_sweep.saturating_duration_since(Instant::now())),
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("push: waiting for writable sockets failed: {e}");
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let out = lock(&self.watched).get(&event.token().0).cloned();
                if let Some(out) = out {
                    out.writable();
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                let all: Vec<_> = lock(&self.watched).values().cloned().collect();
                for out in all {
                    out.check_stall(now);
                }
                next_sweep = now + TICK;
            }
        }
    }
}

//! The accept loop (streams) and the receive loop (datagrams): one classification of
//! their errors and one back-off.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Exec;
use crate::addr::Addr;
use crate::config::Config;
use crate::conn::{verified, Accepted, Datagram};
use crate::net::sealed::Listen;
use crate::net::DgramSocket;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::sys::{self, Interest};

/// What to do about an error from `accept` or `recvfrom`.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Nothing pending: wait for readiness.
    WouldBlock,
    /// A connection died in the queue, or a signal: try again at once.
    Retry,
    /// Out of descriptors or memory: back off (the condition persists while we spin).
    Backoff,
    /// Anything else ends `serve` with the error.
    Fatal,
}

fn classify(e: &io::Error) -> Class {
    if e.kind() == io::ErrorKind::WouldBlock {
        return Class::WouldBlock;
    }
    match e.raw_os_error() {
        Some(
            libc::EINTR
            | libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::ECONNREFUSED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EOPNOTSUPP
            | libc::ETIMEDOUT,
        ) => Class::Retry,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Class::Backoff,
        _ => Class::Fatal,
    }
}

/// Go's accept back-off: 5 ms doubling to 1 s, reset by a success.
#[derive(Debug, Default)]
struct Backoff(Option<Duration>);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let d = self.0.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.0 = Some(d);
        d
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}

/// What the caller of `accept`/`recvfrom` does about an error (see `AcceptErrors`).
#[derive(Debug)]
pub(crate) enum OnError {
    /// Nothing pending: wait for readiness.
    Wait,
    /// Try again at once (a connection died in the queue, a signal).
    Retry,
    /// Out of descriptors or memory: take no work for this long. One place backs off: the
    /// accept loop, a worker of the self-serving pool (whose wait for work is the same
    /// wait), or the event set's serving thread, never a worker of the parked pool.
    Backoff(Duration),
    /// Give up: `serve` ends with this error.
    Fatal(io::Error),
}

/// The one classification of accept and receive errors, with the server's one back-off
/// (shared by every thread that accepts: each that meets EMFILE doubles it, so the server
/// as a whole retries about as often as one accept loop would), its counter and its log.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    shared: Arc<Shared>,
    what: &'static str,
    backoff: Mutex<Backoff>,
    /// Set while a back-off is running: the common success path reads this flag, not
    /// the lock (every accepting worker passes there, once per connection).
    backing_off: AtomicBool,
    /// The warning of the last back-off: at most one a second is logged.
    warned: Throttle,
}

impl AcceptErrors {
    pub(crate) fn new(shared: &Arc<Shared>, what: &'static str) -> AcceptErrors {
        AcceptErrors {
            shared: Arc::clone(shared),
            what,
            backoff: Mutex::new(Backoff::default()),
            backing_off: AtomicBool::new(false),
            warned: Throttle::new(),
        }
    }

    /// Classifies `e`, counts it (a `WouldBlock` is no error), logs it, and says what to do.
    pub(crate) fn on_error(&self, e: io::Error) -> OnError {
        let what = self.what;
        let class = classify(&e);
        if class != Class::WouldBlock {
            Counters::bump(&self.shared.counters.accept_errors);
        }
        match class {
            Class::WouldBlock => OnError::Wait,
            Class::Retry => {
                log::debug!("{what} failed, retrying: {e}");
                OnError::Retry
            }
            Class::Backoff => {
                let d = lock(&self.backoff).next();
                self.backing_off.store(true, Relaxed);
                if self.warned.allow() {
                    log::warn!("{what} failed: {e}; taking no new work for {d:?}");
                }
                OnError::Backoff(d)
            }
            Class::Fatal if self.shared.is_stopping() => {
                // The socket was shut down under us: that is the stop, not a failure.
                log::trace!("{what} ended at shutdown: {e}");
                OnError::Retry
            }
            Class::Fatal => {
                log::error!("{what} failed, stopping the server: {e}");
                OnError::Fatal(e)
            }
        }
    }

    /// A connection or datagram was taken: the back-off starts over.
    pub(crate) fn success(&self) {
        // No lock when there is nothing to reset (the usual case).
        if self.backing_off.swap(false, Relaxed) {
            lock(&self.backoff).reset();
        }
    }
}

/// Lets one event through per `Throttle::EVERY`: a warning that could come once per
/// accept attempt (descriptors exhausted, the connection limit reached) is logged at most
/// once a second instead of thousands of times.
#[derive(Debug)]
pub(crate) struct Throttle {
    start: Instant,
    /// Milliseconds after `start` of the last event let through, plus one (0: none yet).
    last: AtomicU64,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Throttle {
        Throttle {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether this event is let through.
    pub(crate) fn allow(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Relaxed);
        let every = Self::EVERY.as_millis() as u64;
        (last == 0 || now >= last + every)
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop state shared by both loops: the descriptors to wait on and error handling.
struct Waiter<'a> {
    shared: &'a Arc<Shared>,
    fds: Vec<(RawFd, Interest)>,
    errors: AcceptErrors,
}

impl<'a> Waiter<'a> {
    fn new(
        shared: &'a Arc<Shared>,
        socket: RawFd,
        extra: Option<RawFd>,
        what: &'static str,
    ) -> Waiter<'a> {
        let mut fds = vec![(socket, Interest::Read), (shared.wake_fd(), Interest::Read)];
        fds.extend(extra.map(|fd| (fd, Interest::Read)));
        Waiter {
            shared,
            fds,
            errors: AcceptErrors::new(shared, what),
        }
    }

    /// Handles a failed `accept`/`recvfrom`: waits, retries, backs off, or gives up.
    fn on_error(&mut self, e: io::Error) -> io::Result<()> {
        match self.errors.on_error(e) {
            OnError::Wait => {
                let ready = sys::poll(&self.fds, None)?;
                // The wake socket is readable: shutdown was asked, perhaps from a forked
                // child, whose flag this process cannot see. Take it as ours.
                if ready.is(1) {
                    self.shared.stop();
                }
            }
            OnError::Retry => {}
            OnError::Backoff(d) => {
                // The wake socket turning readable is a stop request, perhaps from a forked
                // child whose flag this process cannot see: take it as ours. (Ignoring it
                // would also make every later back-off return at once, a spin.)
                if sys::poll(&self.fds[1..2], Some(d))?.is(0) {
                    self.shared.stop();
                }
            }
            OnError::Fatal(e) => return Err(e),
        }
        Ok(())
    }
}

/// Accepts connections and hands them to the flavour until shutdown or a fatal error.
pub(crate) fn accept_loop<L: Listen>(
    listener: &L,
    exec: &mut Exec<Accepted>,
    shared: &Arc<Shared>,
    cfg: &Config,
) -> io::Result<()> {
    let mut waiter = Waiter::new(shared, listener.as_raw_fd(), exec.extra_fd(), "accept");
    loop {
        if shared.is_stopping() {
            return Ok(());
        }
        exec.reap();
        if !exec.ready()? {
            return Ok(());
        }
        match listener.accept_stream() {
            Ok((stream, peer)) => {
                // Taken at once, in the order of the accepts (see `PassedOn`).
                let options = shared.passed_on.take();
                waiter.errors.success();
                if verified(cfg, shared, &peer) {
                    let job = Accepted {
                        stream,
                        peer,
                        options,
                    };
                    exec.execute(job, Some(listener.as_raw_fd()));
                }
            }
            Err(e) => waiter.on_error(e)?,
        }
    }
}

/// Receives datagrams and hands them to the flavour until shutdown or a fatal error.
pub(crate) fn recv_loop(
    socket: &DgramSocket,
    exec: &mut Exec<Datagram>,
    shared: &Arc<Shared>,
    cfg: &Config,
) -> io::Result<()> {
    let mut waiter = Waiter::new(shared, socket.as_raw_fd(), exec.extra_fd(), "recvfrom");
    // One byte more than the largest datagram served: a datagram that fills it was cut.
    let mut buf = vec![0u8; cfg.max_datagram + 1];
    loop {
        if shared.is_stopping() {
            return Ok(());
        }
        exec.reap();
        if !exec.ready()? {
            return Ok(());
        }
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                waiter.errors.success();
                if n > cfg.max_datagram {
                    dropped_oversize(shared, cfg, &peer);
                } else if verified(cfg, shared, &peer) {
                    let data = buf[..n].to_vec();
                    exec.execute(Datagram { data, peer }, None);
                }
            }
            Err(e) => waiter.on_error(e)?,
        }
    }
}

pub(crate) fn dropped_oversize(shared: &Shared, cfg: &Config, peer: &Addr) {
    Counters::bump(&shared.counters.oversize_dropped);
    log::warn!(
        "{peer}: dropped a datagram larger than {} bytes (max_datagram_size)",
        cfg.max_datagram
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::ECONNABORTED)), Class::Retry);
        assert_eq!(classify(&os(libc::EINTR)), Class::Retry);
        assert_eq!(classify(&os(libc::EMFILE)), Class::Backoff);
        assert_eq!(classify(&os(libc::ENFILE)), Class::Backoff);
        assert_eq!(classify(&os(libc::ENOBUFS)), Class::Backoff);
        assert_eq!(classify(&os(libc::ENOMEM)), Class::Backoff);
        assert_eq!(classify(&os(libc::EBADF)), Class::Fatal);
        assert_eq!(classify(&os(libc::EINVAL)), Class::Fatal);
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::WouldBlock)),
            Class::WouldBlock
        );
    }

    #[test]
    fn backoff_doubles_to_one_second_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u128> = (0..10).map(|_| b.next().as_millis()).collect();
        assert_eq!(seq, vec![5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(5));
    }
}

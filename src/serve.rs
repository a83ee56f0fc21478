//! The accept loop (streams) and the receive loop (datagrams), and what runs one request.

use std::io::{self, Write};
use std::os::unix::io::{AsRawFd, RawFd};

use socket2::SockRef;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::config::Config;
use crate::flavors::pool::{Classify, Source};
use crate::flavors::{Exec, Job, Runner};
use crate::handler::{run_phases, DatagramHandler, HandlerError, Outcome, StreamHandler};
use crate::proxy;
use crate::request::{DatagramRequest, StreamRequest, TimedOut};
use crate::shutdown::{ConnSlot, Shared};
use crate::stats::Counters;
use crate::stream::Stream;
use crate::sys::{self, Interest};
use crate::transport::sealed::Listen;
use crate::transport::DgramSocket;

/// An accepted connection on its way to a worker.
pub(crate) struct Accepted {
    stream: Stream,
    peer: Addr,
}

impl Job for Accepted {
    fn into_kept(self) -> Option<Stream> {
        Some(self.stream)
    }
}

/// A received datagram on its way to a worker.
pub(crate) struct Datagram {
    data: Vec<u8>,
    peer: Addr,
}

impl Job for Datagram {
    fn into_kept(self) -> Option<Stream> {
        None
    }
}

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

/// The loop state shared by both loops: the descriptors to wait on and error handling.
struct Waiter<'a> {
    shared: &'a Arc<Shared>,
    fds: Vec<(RawFd, Interest)>,
    backoff: Backoff,
}

impl<'a> Waiter<'a> {
    fn new(shared: &'a Arc<Shared>, socket: RawFd, extra: Option<RawFd>) -> Waiter<'a> {
        let mut fds = vec![(socket, Interest::Read), (shared.wake_fd(), Interest::Read)];
        fds.extend(extra.map(|fd| (fd, Interest::Read)));
        Waiter {
            shared,
            fds,
            backoff: Backoff::default(),
        }
    }

    /// Handles a failed `accept`/`recvfrom`: waits, retries, backs off, or gives up.
    fn on_error(&mut self, e: io::Error, what: &str) -> io::Result<()> {
        let class = classify(&e);
        if class != Class::WouldBlock {
            Counters::bump(&self.shared.counters.accept_errors);
        }
        match class {
            Class::WouldBlock => {
                let ready = sys::poll(&self.fds, None)?;
                // The wake socket is readable: shutdown was asked, perhaps from a forked
                // child, whose flag this process cannot see. Take it as ours.
                if ready.is(1) {
                    self.shared.stop();
                }
            }
            Class::Retry => log::debug!("{what} failed, retrying: {e}"),
            Class::Backoff => {
                let d = self.backoff.next();
                log::warn!("{what} failed: {e}; retrying in {d:?}");
                // The wake socket turning readable is a stop request, perhaps from a forked
                // child whose flag this process cannot see: take it as ours. (Ignoring it
                // would also make every later back-off return at once, a spin.)
                if sys::poll(&self.fds[1..2], Some(d))?.is(0) {
                    self.shared.stop();
                }
            }
            Class::Fatal => {
                log::error!("{what} failed, stopping the server: {e}");
                return Err(e);
            }
        }
        Ok(())
    }
}

pub(crate) fn verified(cfg: &Config, shared: &Shared, peer: &Addr) -> bool {
    Counters::bump(&shared.counters.accepted);
    match &cfg.verify {
        Some(verify) if !catch_unwind(AssertUnwindSafe(|| verify(peer))).unwrap_or(false) => {
            log::debug!("{peer}: refused by the verify hook");
            Counters::bump(&shared.counters.rejected);
            false
        }
        _ => true,
    }
}

/// Accepts connections and hands them to the flavour until shutdown or a fatal error.
pub(crate) fn accept_loop<L: Listen>(
    listener: &L,
    exec: &mut Exec<Accepted>,
    shared: &Arc<Shared>,
    cfg: &Config,
) -> io::Result<()> {
    let mut waiter = Waiter::new(shared, listener.as_raw_fd(), exec.extra_fd());
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
                waiter.backoff.reset();
                if verified(cfg, shared, &peer) {
                    exec.execute(Accepted { stream, peer }, Some(listener.as_raw_fd()));
                }
            }
            Err(e) => waiter.on_error(e, "accept")?,
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
    let mut waiter = Waiter::new(shared, socket.as_raw_fd(), exec.extra_fd());
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
                waiter.backoff.reset();
                if n > cfg.max_datagram {
                    dropped_oversize(shared, cfg, &peer);
                } else if verified(cfg, shared, &peer) {
                    let data = buf[..n].to_vec();
                    exec.execute(Datagram { data, peer }, None);
                }
            }
            Err(e) => waiter.on_error(e, "recvfrom")?,
        }
    }
}

/// How a pool worker treats a failed `accept`/`recvfrom`: the accept loop's classes, with
/// one back-off for the whole pool (each worker that meets EMFILE doubles it, so the pool
/// as a whole retries about as often as one accept loop would).
#[derive(Clone)]
pub(crate) struct PoolErrors {
    shared: Arc<Shared>,
    what: &'static str,
    backoff: Arc<std::sync::Mutex<Backoff>>,
}

impl PoolErrors {
    pub(crate) fn new(shared: &Arc<Shared>, what: &'static str) -> PoolErrors {
        PoolErrors {
            shared: Arc::clone(shared),
            what,
            backoff: Arc::default(),
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Classify for PoolErrors {
    fn on_error(&mut self, e: io::Error) -> io::Result<Option<Duration>> {
        let what = self.what;
        let class = classify(&e);
        if class != Class::WouldBlock {
            Counters::bump(&self.shared.counters.accept_errors);
        }
        match class {
            Class::WouldBlock => Ok(None),
            Class::Retry => {
                log::debug!("{what} failed, retrying: {e}");
                Ok(None)
            }
            Class::Backoff => {
                let d = self.backoff().next();
                log::warn!("{what} failed: {e}; retrying in {d:?}");
                Ok(Some(d))
            }
            Class::Fatal => {
                log::error!("{what} failed, stopping the server: {e}");
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        self.backoff().reset();
    }
}

/// A listener whose pool workers accept for themselves (blocking `accept`).
pub(crate) struct AcceptSource<L> {
    listener: L,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
}

impl<L: Listen> AcceptSource<L> {
    /// Makes the listener blocking: idle workers wait in `accept` itself.
    pub(crate) fn new(listener: L, shared: &Arc<Shared>, cfg: &Arc<Config>) -> io::Result<Self> {
        SockRef::from(&listener).set_nonblocking(false)?;
        Ok(AcceptSource {
            listener,
            shared: Arc::clone(shared),
            cfg: Arc::clone(cfg),
        })
    }
}

impl<L: Listen> Source for AcceptSource<L> {
    type Job = Accepted;

    fn take(&self, _scratch: &mut Vec<u8>) -> io::Result<Option<Accepted>> {
        let (stream, peer) = self.listener.accept_stream()?;
        // Linux gives an accepted socket the listener's receive timeout (the pool's wait
        // timeout): set the connection's own. (Should it fail, the connection keeps the
        // pool's timeout; nothing for the pool to stop over.)
        let _ = stream.set_read_timeout(self.cfg.read_timeout);
        Ok(verified(&self.cfg, &self.shared, &peer).then_some(Accepted { stream, peer }))
    }

    fn set_wait_timeout(&self, d: Duration) -> io::Result<()> {
        SockRef::from(&self.listener).set_read_timeout(Some(d))
    }

    fn interrupt(&self) {
        // Linux: blocked accepts fail with EINVAL, new clients are refused.
        let _ = SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
    }

    fn scratch_len(&self) -> usize {
        0
    }
}

/// A datagram socket whose pool workers receive for themselves (blocking `recvfrom`).
pub(crate) struct RecvSource {
    socket: Arc<DgramSocket>,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
}

impl RecvSource {
    /// Makes the socket blocking: idle workers wait in `recvfrom` itself (replies never
    /// block on it: they are sent with `MSG_DONTWAIT`).
    pub(crate) fn new(
        socket: Arc<DgramSocket>,
        shared: &Arc<Shared>,
        cfg: &Arc<Config>,
    ) -> io::Result<Self> {
        SockRef::from(&*socket).set_nonblocking(false)?;
        Ok(RecvSource {
            socket,
            shared: Arc::clone(shared),
            cfg: Arc::clone(cfg),
        })
    }
}

impl Source for RecvSource {
    type Job = Datagram;

    fn take(&self, scratch: &mut Vec<u8>) -> io::Result<Option<Datagram>> {
        let (n, peer) = self.socket.recv_from(scratch)?;
        // After `interrupt`, recvfrom returns 0 at once: the stop, not an empty datagram.
        if n == 0 && self.shared.is_stopping() {
            return Ok(None);
        }
        if n > self.cfg.max_datagram {
            dropped_oversize(&self.shared, &self.cfg, &peer);
            return Ok(None);
        }
        Ok(verified(&self.cfg, &self.shared, &peer).then(|| Datagram {
            data: scratch[..n].to_vec(),
            peer,
        }))
    }

    fn set_wait_timeout(&self, d: Duration) -> io::Result<()> {
        SockRef::from(&*self.socket).set_read_timeout(Some(d))
    }

    fn interrupt(&self) {
        // Linux: blocked recvfroms return 0 (the call itself reports ENOTCONN on an
        // unconnected socket, and still shuts reading down).
        let _ = SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read);
    }

    fn scratch_len(&self) -> usize {
        // One byte more than the largest datagram served: a datagram that fills it was cut.
        self.cfg.max_datagram + 1
    }
}

fn dropped_oversize(shared: &Shared, cfg: &Config, peer: &Addr) {
    Counters::bump(&shared.counters.oversize_dropped);
    log::warn!(
        "{peer}: dropped a datagram larger than {} bytes (max_datagram_size)",
        cfg.max_datagram
    );
}

/// Applies the per-connection socket options, on the worker (not the accept loop).
pub(crate) fn configure(stream: &Stream, cfg: &Config) -> io::Result<()> {
    if let (Stream::Tcp(s), true) = (stream, cfg.nodelay) {
        s.set_nodelay(true)?;
    }
    // macOS has no MSG_NOSIGNAL (see `sys::send`): the socket itself must not raise SIGPIPE.
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    socket2::SockRef::from(stream).set_nosigpipe(true)?;
    if cfg.read_timeout.is_some() {
        stream.set_read_timeout(cfg.read_timeout)?;
    }
    if cfg.write_timeout.is_some() {
        stream.set_write_timeout(cfg.write_timeout)?;
    }
    crate::keepalive::apply(stream, cfg.keepalive)
}

/// Runs the TLS handshake, on the worker, if the server has TLS.
#[cfg(feature = "tls")]
pub(crate) fn tls_handshake(
    stream: &Stream,
    cfg: &Config,
) -> io::Result<Option<crate::tls::TlsSession>> {
    let Some(config) = &cfg.tls else {
        return Ok(None);
    };
    let after = crate::tls::Timeouts {
        read: cfg.read_timeout,
        write: cfg.write_timeout,
    };
    crate::tls::TlsSession::accept(stream, config, cfg.tls_handshake_timeout, after).map(Some)
}

/// The runner of stream connections: handler lifecycle, registry, polite close, report.
pub(crate) fn stream_runner<F, H>(
    factory: F,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
) -> Runner<Accepted>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: StreamHandler,
{
    Arc::new(move |job: Accepted, forked: bool| {
        let Accepted { stream, mut peer } = job;
        let result = match configure(&stream, &cfg) {
            Ok(()) => {
                let slot = Arc::new(ConnSlot { stream });
                let _registration = (!forked).then(|| shared.register(Arc::clone(&slot)));
                // Behind a balancer: the PROXY header comes first, before TLS or the handler.
                let header = match cfg.proxy.enabled() {
                    true => match proxy::accept(&slot.stream, &peer, &cfg.proxy, &shared) {
                        Some(header) => Some(header),
                        None => return Outcome::Ok, // logged and counted; closed on drop
                    },
                    false => None,
                };
                // Logs and `on_error` name the client, as `peer_addr` does.
                if let Some(header) = &header {
                    peer = proxy::client_addr(header);
                }
                #[cfg(feature = "tls")]
                let tls = match tls_handshake(&slot.stream, &cfg) {
                    Ok(tls) => tls,
                    Err(e) => {
                        log::debug!("{peer}: TLS handshake failed: {e}");
                        Counters::bump(&shared.counters.tls_handshake_failures);
                        let _ = slot.stream.shutdown(std::net::Shutdown::Both);
                        return Outcome::TlsFailed;
                    }
                };
                let mut req =
                    StreamRequest::new(slot, peer.clone(), Arc::clone(&shared), &cfg, forked);
                #[cfg(feature = "tls")]
                if let Some(tls) = tls {
                    req.set_tls(tls);
                }
                if let Some(header) = header {
                    req.set_proxy_header(header);
                }
                let result = run_phases(&factory, &mut req, H::setup, H::handle, H::finish);
                // The reply's last buffered bytes: failing to send them fails the request.
                let flushed = req.flush();
                let timed_out = req.timed_out();
                req.close();
                match (result, flushed) {
                    (Ok(()), Err(e)) => (Err(HandlerError::Io(e)), timed_out),
                    (result, _) => (result, timed_out),
                }
            }
            Err(e) => (Err(HandlerError::Io(e)), None),
        };
        report(&shared, &cfg, &peer, result.0, result.1)
    })
}

/// The runner of datagrams.
pub(crate) fn datagram_runner<F, H>(
    factory: F,
    socket: Arc<DgramSocket>,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
) -> Runner<Datagram>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: DatagramHandler,
{
    Arc::new(move |job: Datagram, forked: bool| {
        let Datagram { data, peer } = job;
        let mut req = DatagramRequest::new(
            data,
            peer.clone(),
            Arc::clone(&socket),
            Arc::clone(&shared),
            &cfg,
            forked,
        );
        let result = run_phases(&factory, &mut req, H::setup, H::handle, H::finish);
        report(&shared, &cfg, &peer, result, None)
    })
}

/// Counts, logs and hands a request's result to the `on_error` hook.
///
/// Log levels say whose fault it is: ERROR for the server's own (a panic, an I/O error the
/// client did not cause), INFO for what a client caused (invalid data, an oversize frame,
/// a request timeout), DEBUG for routine ends (the client went away, an idle timeout).
pub(crate) fn report(
    shared: &Shared,
    cfg: &Config,
    peer: &Addr,
    result: Result<(), HandlerError>,
    timed_out: Option<TimedOut>,
) -> Outcome {
    let c = &shared.counters;
    Counters::bump(&c.completed);
    let err = match result {
        Ok(()) => return Outcome::Ok,
        Err(err) => err,
    };
    let timeout = match &err {
        HandlerError::Io(e) if e.kind() == io::ErrorKind::TimedOut => timed_out,
        _ => None,
    };
    let outcome = match (&err, timeout) {
        (HandlerError::Io(e), Some(TimedOut::Idle)) => {
            // The client had nothing more to ask: a normal end, not a failure.
            Counters::bump(&c.idle_timeouts);
            log::debug!("{peer}: {e}");
            return Outcome::IdleTimeout;
        }
        (HandlerError::Io(e), Some(TimedOut::Request)) => {
            Counters::bump(&c.request_timeouts);
            log::info!("{peer}: {e}");
            Outcome::RequestTimeout
        }
        (HandlerError::Panic(_), _) => {
            Counters::bump(&c.panics);
            log::error!("{peer}: {err}");
            Outcome::Panic
        }
        (HandlerError::Io(e), None) if err.is_disconnect() => {
            // Not the handler's failure: counted apart (a TCP health check is one).
            Counters::bump(&c.disconnects);
            log::debug!("{peer}: client went away: {e}");
            Outcome::Disconnect
        }
        (HandlerError::Io(_), None) => {
            Counters::bump(&c.handler_errors);
            if err.is_client_fault() {
                log::info!("{peer}: {err}");
            } else {
                log::error!("{peer}: {err}");
            }
            Outcome::Error
        }
    };
    if let Some(hook) = &cfg.on_error {
        if catch_unwind(AssertUnwindSafe(|| hook(peer, &err))).is_err() {
            log::error!("{peer}: the on_error hook panicked");
        }
    }
    outcome
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

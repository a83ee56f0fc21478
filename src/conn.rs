//! One way to open a connection (socket options, verify, PROXY header, TLS) and run it,
//! and one way to report how a request ended.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::config::Config;
use crate::error::HandlerError;
use crate::handler::{contained, run_phases, DatagramHandler, Outcome, StreamHandler};
use crate::net::options;
use crate::net::stream::Stream;
use crate::net::DgramSocket;
use crate::proxy;
use crate::request::{DatagramRequest, StreamRequest, TimedOut};
use crate::shared::{ConnSlot, Options, Shared};
use crate::stats::Counters;

/// Runs one job; `true` when running in a forked child.
pub(crate) type Runner<J> = Arc<dyn Fn(J, bool) -> Outcome + Send + Sync>;

/// A unit of work the accept (or receive) loop hands to a flavour.
pub(crate) trait Job: Send + 'static {
    /// What a forking parent keeps of the job to shut the connection down at the deadline.
    fn into_kept(self) -> Option<Stream>;
}

/// An accepted connection on its way to a worker.
pub(crate) struct Accepted {
    pub(crate) stream: Stream,
    pub(crate) peer: Addr,
    /// Taken by the accept loop, in the order of the accepts.
    pub(crate) options: Options,
}

impl Job for Accepted {
    fn into_kept(self) -> Option<Stream> {
        Some(self.stream)
    }
}

/// A received datagram on its way to a worker.
pub(crate) struct Datagram {
    pub(crate) data: Vec<u8>,
    pub(crate) peer: Addr,
}

impl Job for Datagram {
    fn into_kept(self) -> Option<Stream> {
        None
    }
}

pub(crate) fn verified(cfg: &Config, shared: &Shared, peer: &Addr) -> bool {
    Counters::bump(&shared.counters.accepted);
    match &cfg.verify {
        Some(verify) if !contained(|| verify(peer)).unwrap_or(false) => {
            log::debug!("{peer}: refused by the verify hook");
            Counters::bump(&shared.counters.rejected_verify);
            Counters::bump(&shared.counters.rejected);
            false
        }
        _ => true,
    }
}

/// Runs the TLS handshake, on the worker, if the server has TLS.
#[cfg(feature = "tls")]
pub(crate) fn tls_handshake(
    stream: &Stream,
    cfg: &Config,
    shared: &Shared,
) -> io::Result<Option<crate::tls::TlsSession>> {
    let Some(config) = &cfg.tls else {
        return Ok(None);
    };
    let after = crate::tls::Timeouts {
        read: cfg.read_timeout,
        write: cfg.write_timeout,
    };
    let started = Instant::now();
    let session = crate::tls::TlsSession::accept(stream, config, cfg.tls_handshake_timeout, after);
    let h = &shared.counters.tls_handshake;
    h.observe(crate::metrics::Buckets::handshakes(), started.elapsed());
    session.map(Some)
}

/// Opens an accepted connection for its handler, the one way every engine does it:
/// `accept` (socket options, registration with the server, so that the grace period's end
/// can cut whatever follows), then `handshake` (behind a balancer the PROXY header, then
/// the TLS handshake), each on the calling thread within its own deadline. A failure is
/// logged and counted here, and is the outcome the caller reports (the socket closes on
/// drop).
pub(crate) fn open(
    stream: Stream,
    peer: Addr,
    options: Options,
    shared: &Arc<Shared>,
    cfg: &Config,
    forked: bool,
) -> Result<StreamRequest, Outcome> {
    let mut req = accept(stream, peer, options, shared, cfg, forked)?;
    handshake(&mut req, shared, cfg)?;
    Ok(req)
}

/// The first half of `open`: socket options and registration, nothing read yet. An engine
/// that can wait for the client's first bytes without a thread (the parked pool) calls
/// `handshake` when they come.
pub(crate) fn accept(
    stream: Stream,
    peer: Addr,
    options: Options,
    shared: &Arc<Shared>,
    cfg: &Config,
    forked: bool,
) -> Result<StreamRequest, Outcome> {
    // The socket options, on the worker (not the accept loop), unless the connection has
    // them from its listener.
    if let Options::Configure { explicit } = options {
        if let Err(e) = options::configure(&stream, cfg, explicit) {
            // Almost always a client already gone (the options of a reset socket fail).
            log::debug!("{peer}: cannot configure the connection: {e}");
            return Err(Outcome::Error);
        }
    }
    let slot = Arc::new(ConnSlot::new(stream));
    let registration = (!forked).then(|| shared.register(Arc::clone(&slot)));
    let mut req = StreamRequest::new(slot, peer, Arc::clone(shared), cfg, forked);
    if let Options::Inherited { read } = options {
        req.socket_read_timeout_is(read);
    }
    req.keep_registration(registration);
    Ok(req)
}

/// Whether connections start with something to read before the handler's first request
/// (a PROXY header, a TLS handshake): `handshake` has work to do.
pub(crate) fn has_handshake(cfg: &Config) -> bool {
    #[cfg(feature = "tls")]
    if cfg.tls.is_some() {
        return true;
    }
    cfg.proxy.enabled()
}

/// The longest a client may take to start its handshake before it is dropped: the PROXY
/// header's deadline when one comes first, else the TLS handshake's.
pub(crate) fn handshake_deadline(cfg: &Config) -> Duration {
    if cfg.proxy.enabled() {
        return cfg.proxy.timeout;
    }
    #[cfg(feature = "tls")]
    if cfg.tls.is_some() {
        return cfg.tls_handshake_timeout;
    }
    Duration::MAX
}

/// The second half of `open`: behind a balancer the PROXY header (logs and `on_error` then
/// name the client, as `peer_addr` does), then the TLS handshake.
pub(crate) fn handshake(
    req: &mut StreamRequest,
    shared: &Arc<Shared>,
    cfg: &Config,
) -> Result<(), Outcome> {
    if cfg.proxy.enabled() {
        match proxy::accept(req.stream(), req.peer_addr(), &cfg.proxy, shared) {
            Some(header) => req.set_proxy_header(header),
            None => return Err(Outcome::Ok), // logged and counted; closed on drop
        }
    }
    #[cfg(feature = "tls")]
    match tls_handshake(req.stream(), cfg, shared) {
        Ok(Some(tls)) => req.set_tls(tls),
        Ok(None) => {}
        Err(e) => {
            log::debug!("{}: TLS handshake failed: {e}", req.peer_addr());
            Counters::bump(&shared.counters.tls_handshake_failures);
            let _ = req.stream().shutdown(std::net::Shutdown::Both);
            return Err(Outcome::TlsFailed);
        }
    }
    Ok(())
}

/// A handler's result once its reply's last buffered bytes are sent: failing to send them
/// fails the request.
pub(crate) fn flushed<T>(
    req: &mut StreamRequest,
    result: Result<T, HandlerError>,
) -> Result<T, HandlerError> {
    let flushed = req.flush();
    match (result, flushed) {
        (Ok(_), Err(e)) => Err(HandlerError::Io(e)),
        (result, _) => result,
    }
}

/// The runner of stream connections: open, the handler's lifecycle, polite close, report.
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
        let Accepted {
            stream,
            peer,
            options,
        } = job;
        let _timed = ConnectionTimer {
            shared: &shared,
            opened: Instant::now(),
        };
        let mut req = match open(stream, peer, options, &shared, &cfg, forked) {
            Ok(req) => req,
            Err(outcome) => return outcome,
        };
        let started = Instant::now();
        let result = run_phases(&factory, &mut req, H::setup, H::handle, H::finish);
        let result = flushed(&mut req, result);
        let timed_out = req.timed_out();
        req.close();
        report(
            &shared,
            &cfg,
            req.peer_addr(),
            result,
            timed_out,
            started.elapsed(),
        )
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
        let started = Instant::now();
        Counters::add(&shared.counters.received_bytes, data.len());
        let mut req = DatagramRequest::new(
            data,
            peer.clone(),
            Arc::clone(&socket),
            Arc::clone(&shared),
            &cfg,
            forked,
        );
        let result = run_phases(&factory, &mut req, H::setup, H::handle, H::finish);
        report(&shared, &cfg, &peer, result, None, started.elapsed())
    })
}

/// Times a connection from its accept (on the worker) to its close, whatever way the
/// runner leaves.
struct ConnectionTimer<'a> {
    shared: &'a Shared,
    opened: Instant,
}

impl Drop for ConnectionTimer<'_> {
    fn drop(&mut self) {
        let h = &self.shared.counters.connection_duration;
        h.observe(
            crate::metrics::Buckets::connections(),
            self.opened.elapsed(),
        );
    }
}

/// Counts (and times: `took` is how long the request was served), logs and hands a
/// request's result to the `on_error` hook.
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
    took: Duration,
) -> Outcome {
    let c = &shared.counters;
    // Counted and timed together: the histogram's count is the request count.
    c.request_duration
        .observe(&cfg.metrics.request_buckets, took);
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
        if contained(|| hook(peer, &err)).is_err() {
            log::error!("{peer}: the on_error hook panicked");
        }
    }
    outcome
}

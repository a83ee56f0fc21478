//! Metrics: what a server counts, read at scrape time from its counters (`stats::Counters`,
//! the one source of truth), and written out in the Prometheus text format 0.0.4 or
//! OpenMetrics 1.0.
//!
//! Nothing here runs on the request path except [`histogram::Histogram::observe`]; the
//! rest reads atomics when a scraper asks. The admin listener (`crate::admin`) serves it;
//! [`Metrics::render`] gives it to a program that serves it itself.

mod expose;
pub(crate) mod histogram;
mod snapshot;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use self::expose::render;
pub use self::expose::MetricsFormat;
pub(crate) use self::histogram::Buckets;
pub(crate) use self::snapshot::{ListenerSnapshot, Workers};
use crate::shared::Shared;

/// What the running engine can say about itself at scrape time (a pool its workers, the
/// parked flavour its connections): read on the scraping thread, never on the request path.
pub(crate) trait EngineView: Send + Sync {
    /// Workers serving a request (or a connection) and workers waiting for one.
    fn workers(&self) -> Workers;
    /// Connections open and, of them, parked idle between requests, when the engine
    /// keeps connections itself (`serve_requests` in the pool); `None` where every open
    /// connection is a request in flight.
    fn connections(&self) -> Option<(u64, u64)> {
        None
    }
    /// The most connections it keeps open, when that is its own bound (`max_connections`)
    /// rather than the flavour's.
    fn limit(&self) -> Option<u64> {
        None
    }
}

/// A server's life as readiness sees it, and its engine's view: part of the server's
/// shared state.
#[derive(Default)]
pub(crate) struct Status {
    /// `serve` has started its loop and not yet returned.
    serving: AtomicBool,
    /// Shutdown (or a restart's drain) has begun: not ready, though perhaps still serving
    /// through the shutdown delay.
    draining: AtomicBool,
    /// When `serve` started, in ms since the Unix epoch (0: not yet).
    started_ms: AtomicU64,
    engine: Mutex<Option<Weak<dyn EngineView>>>,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("serving", &self.serving)
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl Status {
    /// The serve loop runs: ready, unless shutdown has begun.
    pub(crate) fn serving(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self
            .started_ms
            .compare_exchange(0, now.max(1), SeqCst, SeqCst);
        self.serving.store(true, SeqCst);
    }

    /// The serve loop has ended.
    pub(crate) fn stopped(&self) {
        self.draining.store(true, SeqCst);
        self.serving.store(false, SeqCst);
    }

    /// Readiness ends now (shutdown or a drain began); the server may serve on a while.
    /// Returns whether it had ended already.
    pub(crate) fn begin_drain(&self) -> bool {
        self.draining.swap(true, SeqCst)
    }

    /// As `begin_drain`.
    pub(crate) fn drain(&self) {
        self.draining.store(true, SeqCst);
    }

    /// Whether the serve loop runs (`/livez`).
    pub(crate) fn is_live(&self) -> bool {
        self.serving.load(SeqCst)
    }

    /// Whether the server takes new work and is not going away (`/readyz`).
    pub(crate) fn is_ready(&self) -> bool {
        self.serving.load(SeqCst) && !self.draining.load(SeqCst)
    }

    /// When `serve` started, in seconds since the Unix epoch.
    pub(crate) fn started(&self) -> Option<f64> {
        match self.started_ms.load(SeqCst) {
            0 => None,
            ms => Some(ms as f64 / 1e3),
        }
    }

    /// Gives the scrapers a view of the engine while it runs (it is held weakly: a
    /// finished engine is simply gone).
    pub(crate) fn set_engine(&self, engine: Weak<dyn EngineView>) {
        *self.engine.lock().unwrap_or_else(|e| e.into_inner()) = Some(engine);
    }

    pub(crate) fn engine(&self) -> Option<Arc<dyn EngineView>> {
        self.engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }
}

/// The options of a server's metrics, part of its `Config`.
#[derive(Clone, Debug)]
pub(crate) struct MetricsConfig {
    /// The `listener` label (default: the bound address).
    pub(crate) name: Option<String>,
    pub(crate) request_buckets: Buckets,
    /// Where the server's own admin listener binds (`Builder::admin`), resolved, or why
    /// the address could not be resolved.
    pub(crate) admin: Option<Result<Vec<std::net::SocketAddr>, String>>,
    /// An invalid setting, reported by `bind`.
    pub(crate) invalid: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            name: None,
            request_buckets: Buckets::requests(),
            admin: None,
            invalid: None,
        }
    }
}

/// What the metrics say about one server, besides its counters: fixed when it is bound.
#[derive(Debug)]
pub(crate) struct ListenerView {
    pub(crate) name: String,
    /// The bound address (a Unix socket's path).
    pub(crate) address: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) flavor: &'static str,
    /// Stream (connections) or datagrams.
    pub(crate) stream: bool,
    pub(crate) tls: bool,
    /// The most connections (stream) or requests (datagram) served at once.
    pub(crate) limit: u64,
    pub(crate) request_buckets: Buckets,
    pub(crate) connection_buckets: Buckets,
    pub(crate) handshake_buckets: Buckets,
}

/// One server's metrics: its counters and state as a Prometheus scraper or a status page
/// sees them. Get it from [`StreamServer::metrics`](crate::StreamServer::metrics) or
/// [`DatagramServer::metrics`](crate::DatagramServer::metrics); clone it freely (it is a
/// handle), give it to an [`AdminServer`](crate::AdminServer), or render it yourself.
///
/// ```
/// use socketserver::{MetricsFormat, TcpServer};
///
/// let server = TcpServer::builder().listener_name("web").bind("127.0.0.1:0")?;
/// let metrics = server.metrics();
/// let text = metrics.render(MetricsFormat::Prometheus);
/// assert!(text.contains("socketserver_connections_accepted_total{listener=\"web\"} 0\n"));
/// assert!(text.contains("socketserver_ready{listener=\"web\"} 0\n")); // not serving yet
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    pub(crate) view: Arc<ListenerView>,
}

impl Metrics {
    /// The `listener` label: the name given to
    /// [`Builder::listener_name`](crate::Builder::listener_name), or the bound address.
    pub fn name(&self) -> &str {
        &self.view.name
    }

    /// Whether the server is ready: serving, and neither shutting down nor draining for a
    /// restart (what `/readyz` answers).
    pub fn is_ready(&self) -> bool {
        self.view.shared.status.is_ready()
    }

    /// Whether the server's serve loop runs (what `/livez` answers).
    pub fn is_live(&self) -> bool {
        self.view.shared.status.is_live()
    }

    /// The metrics now, in `format` (a whole exposition: HELP and TYPE lines included,
    /// and OpenMetrics' final `# EOF`).
    pub fn render(&self, format: MetricsFormat) -> String {
        render(&[self.snapshot()], format)
    }

    pub(crate) fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot::read(&self.view)
    }
}

/// The address a socket is bound to, as the `listener` label and the status page show it.
pub(crate) fn address_of(socket: socket2::SockRef<'_>) -> String {
    match socket.local_addr() {
        Ok(a) => match (a.as_socket(), a.as_pathname()) {
            (Some(inet), _) => inet.to_string(),
            (None, Some(path)) => path.display().to_string(),
            (None, None) if a.is_unnamed() => "unnamed".into(),
            (None, None) => "abstract".into(),
        },
        Err(_) => "unknown".into(),
    }
}

/// The metrics of a server being built: its options, shared state and address.
pub(crate) fn view(
    cfg: &crate::config::Config,
    shared: &Arc<Shared>,
    address: String,
    stream: bool,
) -> Metrics {
    #[cfg(feature = "tls")]
    let tls = cfg.tls.is_some();
    #[cfg(not(feature = "tls"))]
    let tls = false;
    let flavor = &cfg.flavor;
    let max_workers = match flavor.name() {
        "single" => 1,
        _ => flavor.get_limit() as u64,
    };
    Metrics {
        view: Arc::new(ListenerView {
            name: cfg.metrics.name.clone().unwrap_or_else(|| address.clone()),
            address,
            shared: Arc::clone(shared),
            flavor: flavor.name(),
            stream,
            tls,
            limit: max_workers,
            request_buckets: cfg.metrics.request_buckets.clone(),
            connection_buckets: Buckets::connections().clone(),
            handshake_buckets: Buckets::handshakes().clone(),
        }),
    }
}

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
pub(crate) mod state;

use std::sync::Arc;

pub(crate) use self::expose::render;
pub use self::expose::MetricsFormat;
pub(crate) use self::histogram::Buckets;
pub(crate) use self::snapshot::ListenerSnapshot;
pub(crate) use self::state::{EngineView, Workers};
use crate::shared::Shared;

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

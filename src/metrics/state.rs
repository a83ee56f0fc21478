//! The metrics' state that the server's own state and options hold (readiness, the engine's
//! view, the options): a leaf, so that the server's shared state and its options need
//! nothing else of the metrics.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::histogram::Buckets;

/// Workers serving and waiting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Workers {
    pub(crate) busy: u64,
    pub(crate) idle: u64,
}

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
    /// Work accepted and waiting for a worker, and the most that may wait, when the engine
    /// has a queue (the hand-off pool).
    fn queue(&self) -> Option<(u64, u64)> {
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

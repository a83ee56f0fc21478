//! The handle that stops a server from any thread.

use std::sync::Arc;

use crate::shared::Shared;
use crate::stats::Stats;

/// Stops a server from any thread: a clonable, `Send + Sync` handle.
///
/// [`shutdown`](ShutdownHandle::shutdown) never blocks and may be called any number of times,
/// from any thread, from inside a handler, and before [`serve`](crate::StreamServer::serve)
/// has even started (the server then returns at once). What happens next:
///
/// 1. the accept loop wakes at once (no polling interval) and closes the listening socket;
/// 2. handlers see [`is_shutting_down`](crate::StreamRequest::is_shutting_down) turn true, and
///    handlers blocked waiting for their client's next request read EOF;
/// 3. requests in flight get the grace period (5 s by default) to finish;
/// 4. connections still open are shut down so blocked reads return, every worker thread is
///    joined and every child reaped, and `serve` returns.
///
/// ```
/// use socketserver::TcpServer;
/// use std::io;
///
/// let server = TcpServer::bind("127.0.0.1:0")?;
/// let handle = server.shutdown_handle();
/// handle.shutdown(); // before serve: serve returns at once
/// server.serve(|_req: &mut socketserver::StreamRequest| Ok(()))?;
/// assert!(handle.is_shutting_down());
/// # Ok::<(), io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Begins a graceful shutdown; see the type's documentation. Returns at once.
    ///
    /// With a [shutdown delay](crate::Builder::shutdown_delay), the server first stops
    /// being ready (`/readyz` answers 503, `socketserver_ready` is 0) and serves on,
    /// accepting, for the delay; shutdown proper begins when it ends.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Whether the server is ready: serving, and not shutting down (a shutdown delay
    /// included) nor draining for a restart.
    pub fn is_ready(&self) -> bool {
        self.shared.status.is_ready()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_stopping()
    }

    /// The server's counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

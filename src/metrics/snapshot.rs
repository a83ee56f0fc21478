//! One server's figures read at one moment, for the exposition and the status page.

use std::sync::atomic::Ordering::Relaxed;

use super::histogram::HistogramSnapshot;
use super::state::Workers;
use super::ListenerView;

/// Everything exposed about one server.
#[derive(Clone, Debug)]
pub(crate) struct ListenerSnapshot {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) flavor: &'static str,
    pub(crate) stream: bool,
    pub(crate) tls: bool,
    pub(crate) live: bool,
    pub(crate) ready: bool,
    pub(crate) started: Option<f64>,
    pub(crate) accepted: u64,
    pub(crate) connections_active: u64,
    pub(crate) connections_idle: u64,
    pub(crate) limit: u64,
    pub(crate) rejected_verify: u64,
    pub(crate) rejected_shutdown: u64,
    pub(crate) rejected_fork: u64,
    pub(crate) rejected_proxy: u64,
    pub(crate) rejected_tls: u64,
    pub(crate) requests: u64,
    pub(crate) in_flight: u64,
    pub(crate) handler_errors: u64,
    pub(crate) disconnects: u64,
    pub(crate) panics: u64,
    pub(crate) idle_timeouts: u64,
    pub(crate) request_timeouts: u64,
    pub(crate) received_bytes: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) pushed_bytes: u64,
    pub(crate) push_dropped: u64,
    pub(crate) push_overflows: u64,
    pub(crate) push_stalls: u64,
    pub(crate) accept_errors: u64,
    pub(crate) oversize: u64,
    pub(crate) workers: Workers,
    /// Waiting in the engine's queue, and its capacity (the hand-off pool only).
    pub(crate) queue: Option<(u64, u64)>,
    pub(crate) request_duration: HistogramSnapshot,
    pub(crate) connection_duration: HistogramSnapshot,
    pub(crate) tls_handshake: HistogramSnapshot,
}

impl ListenerSnapshot {
    pub(crate) fn read(view: &ListenerView) -> ListenerSnapshot {
        let shared = &view.shared;
        let c = &shared.counters;
        let s = c.snapshot();
        let engine = shared.status.engine();
        let in_flight = s.active;
        let (connections_active, connections_idle) = match view.stream {
            false => (0, 0),
            true => engine
                .as_ref()
                .and_then(|e| e.connections())
                .unwrap_or((in_flight, 0)),
        };
        let queue = engine.as_ref().and_then(|e| e.queue());
        let workers = match &engine {
            Some(e) => e.workers(),
            // Threads (or children) each serve one request: busy while it lasts.
            None => {
                let running = match view.flavor {
                    "single" => 1,
                    _ => s.threads,
                };
                let busy = in_flight.min(running);
                Workers {
                    busy,
                    idle: running - busy,
                }
            }
        };
        let rejected_verify = c.rejected_verify.load(Relaxed);
        let rejected_fork = c.rejected_fork.load(Relaxed);
        ListenerSnapshot {
            name: view.name.clone(),
            address: view.address.clone(),
            flavor: view.flavor,
            stream: view.stream,
            tls: view.tls,
            live: shared.status.is_live(),
            ready: shared.status.is_ready(),
            started: shared.status.started(),
            accepted: s.accepted,
            connections_active,
            connections_idle,
            limit: engine
                .as_ref()
                .and_then(|e| e.limit())
                .unwrap_or(view.limit),
            rejected_verify,
            rejected_fork,
            rejected_shutdown: s
                .rejected
                .saturating_sub(rejected_verify)
                .saturating_sub(rejected_fork),
            rejected_proxy: s.proxy_rejected,
            rejected_tls: s.tls_handshake_failures,
            requests: s.completed,
            in_flight,
            handler_errors: s.handler_errors,
            disconnects: s.disconnects,
            panics: s.panics,
            idle_timeouts: s.idle_timeouts,
            request_timeouts: s.request_timeouts,
            received_bytes: s.received_bytes,
            sent_bytes: s.sent_bytes,
            pushed_bytes: s.pushed_bytes,
            push_dropped: s.push_dropped,
            push_overflows: s.push_overflows,
            push_stalls: s.push_stalls,
            accept_errors: s.accept_errors,
            oversize: s.oversize_dropped,
            workers,
            queue,
            request_duration: c.request_duration.read(&view.request_buckets),
            connection_duration: c.connection_duration.read(&view.connection_buckets),
            tls_handshake: c.tls_handshake.read(&view.handshake_buckets),
        }
    }
}

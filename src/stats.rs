//! Counters a program reads while the server runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::histogram::Histogram;

/// A snapshot of a server's counters, from [`ShutdownHandle::stats`](crate::ShutdownHandle::stats).
///
/// Counters only grow, except `active` and `threads`, which are gauges. For datagram servers
/// "accepted" counts datagrams received. In a forking server the children count into memory
/// they share with the parent (mapped before the first fork), so their requests, errors and
/// bytes are in the parent's figures; a child killed by a signal is counted by the parent
/// as a completed request that panicked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted (datagrams received).
    pub accepted: u64,
    /// Requests being handled now (queued in a pool included).
    pub active: u64,
    /// Requests whose handler ran to the end (successfully or not). Under `serve` one per
    /// connection (its handler serves all its requests); under
    /// [`serve_requests`](crate::StreamServer::serve_requests) one per request (each call
    /// of the request handler), so a connection that made ten requests counts ten.
    pub completed: u64,
    /// Requests refused by the `verify` hook, or dropped because the server was stopping.
    pub rejected: u64,
    /// Handlers that returned `Err` from `setup`, `handle` or `finish`, except for a
    /// client that went away (counted in `disconnects`).
    pub handler_errors: u64,
    /// Connections whose client went away: a handler's error was a reset, a broken pipe,
    /// `NotConnected`, or `UnexpectedEof` (EOF where a request was expected, as a TCP
    /// health check that connects and closes). A routine end, logged at debug level; not
    /// a handler error, though the `on_error` hook still sees it.
    pub disconnects: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Errors from `accept`/`recvfrom` (retried or backed off; fatal ones end `serve`).
    pub accept_errors: u64,
    /// Datagrams larger than `max_datagram_size`, dropped before any handler and reported
    /// (never cut). Called `truncated` before 0.2.0.
    pub oversize_dropped: u64,
    /// Connections closed because the client sent no next request within the idle timeout:
    /// a normal end, not a handler error.
    pub idle_timeouts: u64,
    /// Requests cut because they did not arrive whole within the request timeout (or a
    /// deadline the handler set): the client's fault, not a handler error.
    pub request_timeouts: u64,
    /// Connections closed because of their PROXY protocol header: missing, malformed,
    /// incomplete at the header deadline, failing its CRC32C, or sent from a source not
    /// trusted (see `Builder::proxy_protocol`). A connection closed before sending any byte
    /// (a TCP health check) is not counted.
    pub proxy_rejected: u64,
    /// TLS handshakes that failed or timed out (plain text on a TLS port, an unknown CA, no
    /// common ALPN protocol, a client too slow): the connection was closed and no handler
    /// ran. Always 0 without the `tls` feature.
    pub tls_handshake_failures: u64,
    /// Worker threads running, or child processes not yet reaped, right now (bounded by the
    /// flavour's limit: finished ones are joined or reaped, never kept).
    pub threads: u64,
    /// Bytes handlers read from their connections or received as datagrams (plaintext,
    /// after TLS and the PROXY header).
    pub received_bytes: u64,
    /// Bytes handlers sent (plaintext, before TLS).
    pub sent_bytes: u64,
    /// Bytes pushed to connections through a [`Pusher`](crate::push::Pusher) (plaintext,
    /// before TLS), accepted for sending.
    pub pushed_bytes: u64,
    /// Pushed messages dropped because the connection's backlog was full
    /// ([`Overflow::DropMessage`](crate::push::Overflow::DropMessage), or a full backlog
    /// at shutdown with `Overflow::Wait`).
    pub push_dropped: u64,
    /// Connections closed because a push found their backlog over its limit
    /// ([`Overflow::Close`](crate::push::Overflow::Close)).
    pub push_overflows: u64,
    /// Connections closed because they took no bytes for their stall timeout while pushed
    /// bytes waited.
    pub push_stalls: u64,
}

/// The server's counters: the one source of every figure (`Stats`, the metrics, the status
/// page). They live in memory shared with forked children (`sys::SharedMem`), so a child's
/// counts are the parent's: only atomics here, valid when all zero.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) oversize_dropped: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) proxy_rejected: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) threads: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) pushed_bytes: AtomicU64,
    pub(crate) push_dropped: AtomicU64,
    pub(crate) push_overflows: AtomicU64,
    pub(crate) push_stalls: AtomicU64,
    /// The part of `rejected` refused by the `verify` hook, and dropped because a fork
    /// failed (the rest were dropped because the server was stopping).
    pub(crate) rejected_verify: AtomicU64,
    pub(crate) rejected_fork: AtomicU64,
    /// Each completed request's duration (`completed` is its count).
    pub(crate) request_duration: Histogram,
    /// Each closed connection's life, from accept to close.
    pub(crate) connection_duration: Histogram,
    /// Each TLS handshake, successful or not.
    pub(crate) tls_handshake: Histogram,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            accepted: self.accepted.load(Relaxed),
            active: self.active.load(Relaxed),
            completed: self.completed.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            handler_errors: self.handler_errors.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            panics: self.panics.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            oversize_dropped: self.oversize_dropped.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            request_timeouts: self.request_timeouts.load(Relaxed),
            proxy_rejected: self.proxy_rejected.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            threads: self.threads.load(Relaxed),
            received_bytes: self.received_bytes.load(Relaxed),
            sent_bytes: self.sent_bytes.load(Relaxed),
            pushed_bytes: self.pushed_bytes.load(Relaxed),
            push_dropped: self.push_dropped.load(Relaxed),
            push_overflows: self.push_overflows.load(Relaxed),
            push_stalls: self.push_stalls.load(Relaxed),
        }
    }
}

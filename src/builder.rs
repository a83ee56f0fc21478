//! The builder: every option of every server, set before binding. Every setter block
//! lives here, grouped by the transports that offer it.

use std::fmt;
use std::marker::PhantomData;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::config::Config;
use crate::error::HandlerError;
use crate::flavor::Flavor;
use crate::net::{Datagram, Inet, Listener};
use ipnet::IpNet;

/// Options for a server of transport `T`, set before the socket is bound (options set after
/// binding could not take effect, a classic Python `socketserver` trap).
///
/// Get one from `TcpServer::builder()`, `UdpServer::builder()`,
/// `UnixStreamServer::builder()` or `UnixDatagramServer::builder()`. Every setter names its
/// default; options that make no sense for a transport are not offered for it.
///
/// ```
/// use socketserver::{Flavor, TcpServer};
/// use std::time::Duration;
///
/// let server = TcpServer::builder()
///     .flavor(Flavor::fixed_pool(8))
///     .backlog(128)
///     .read_timeout(Some(Duration::from_secs(30)))
///     .grace_period(Duration::from_secs(2))
///     .bind("127.0.0.1:0")?;
/// assert_ne!(server.local_addr()?.port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder<T> {
    pub(crate) cfg: Config,
    _transport: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder").field("cfg", &self.cfg).finish()
    }
}

impl<T> Builder<T> {
    pub(crate) fn new(reuse_address: bool) -> Builder<T> {
        Builder {
            cfg: Config::new(reuse_address),
            _transport: PhantomData,
        }
    }

    /// Sets how requests are run. By default, [`Flavor::pool`] (a growing thread pool).
    pub fn flavor(&mut self, flavor: Flavor) -> &mut Self {
        self.cfg.flavor = flavor;
        self
    }

    /// Sets how long requests in flight may run on after shutdown begins, before their
    /// sockets are shut down under them. By default, 5 s.
    pub fn grace_period(&mut self, d: Duration) -> &mut Self {
        self.cfg.grace_period = d;
        self
    }

    /// Sets `SO_SNDTIMEO` on every connection (a stream write, or a datagram reply, that
    /// cannot proceed for this long fails with `TimedOut`). By default, none; on a stream
    /// server with a `request_timeout`, that timeout then bounds each write of a reply
    /// instead (a client that never reads its replies must not hold a worker for ever).
    pub fn write_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.cfg.write_timeout = t;
        self
    }

    /// Sets a check run on the accepting thread for each new peer, before any handler:
    /// returning `false` refuses it (the connection is closed at once, the datagram dropped)
    /// and counts it as rejected. Python's `verify_request`. By default, every peer is served.
    ///
    /// It runs on the accept loop: keep it fast (an address lookup, not I/O).
    #[doc(alias = "verify_request")]
    pub fn verify<F>(&mut self, f: F) -> &mut Self
    where
        F: Fn(&Addr) -> bool + Send + Sync + 'static,
    {
        self.cfg.verify = Some(Arc::new(f));
        self
    }

    /// Sets a hook called with the peer address whenever a handler fails (returns `Err` or
    /// panics), after the failure is logged and counted. Python's `handle_error`. In a forking
    /// server it runs in the child. By default, none (the log line is the report).
    #[doc(alias = "handle_error")]
    pub fn on_error<F>(&mut self, f: F) -> &mut Self
    where
        F: Fn(&Addr, &HandlerError) + Send + Sync + 'static,
    {
        self.cfg.on_error = Some(Arc::new(f));
        self
    }

    /// Sets `SO_RCVBUF` on the socket: the kernel's receive buffer, in bytes (Linux doubles
    /// the value set, for its own bookkeeping, and caps it at `net.core.rmem_max`). By
    /// default, for a datagram server the largest the system allows (`net.core.rmem_max`),
    /// and for a stream server the system's default (`net.core.rmem_default`, often
    /// 208 KiB).
    ///
    /// A datagram server takes bursts: datagrams that arrive while the buffer is full are
    /// dropped by the kernel before the server sees them (`netstat -su`, "receive buffer
    /// errors"), hence its default; raise `net.core.rmem_max` for more, or set a smaller
    /// size here to bound the memory. The size in effect is readable from the bound server
    /// (`recv_buffer_size()`). On a stream server it is the listener's, inherited by every
    /// accepted connection (set before `listen`, so TCP window scaling can use it).
    #[doc(alias = "SO_RCVBUF")]
    pub fn recv_buffer_size(&mut self, n: usize) -> &mut Self {
        self.cfg.recv_buffer = Some(n);
        self
    }

    /// Sets `SO_SNDBUF` on the socket: the kernel's send buffer, in bytes. By default, the
    /// system's (`net.core.wmem_default`; Linux doubles the value set). On a stream server
    /// it is inherited by every accepted connection. The size in effect is readable from
    /// the bound server (`send_buffer_size()`).
    #[doc(alias = "SO_SNDBUF")]
    pub fn send_buffer_size(&mut self, n: usize) -> &mut Self {
        self.cfg.send_buffer = Some(n);
        self
    }

    pub(crate) fn set_reuse_address(&mut self, on: bool) -> &mut Self {
        self.cfg.reuse_address = on;
        self
    }
    pub(crate) fn set_reuse_port(&mut self, on: bool) -> &mut Self {
        self.cfg.reuse_port = on;
        self
    }
    pub(crate) fn set_only_v6(&mut self, on: bool) -> &mut Self {
        self.cfg.only_v6 = on;
        self
    }
    pub(crate) fn set_backlog(&mut self, n: i32) -> &mut Self {
        self.cfg.backlog = n.max(1);
        self
    }
    pub(crate) fn set_read_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.cfg.read_timeout = t;
        self
    }
    pub(crate) fn set_idle_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.cfg.idle_timeout = t;
        self
    }
    pub(crate) fn set_max_datagram(&mut self, n: usize) -> &mut Self {
        self.cfg.max_datagram = n.max(1);
        self
    }
    pub(crate) fn set_max_connections(&mut self, n: usize) -> &mut Self {
        self.cfg.max_connections = n;
        self
    }
    pub(crate) fn set_request_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.cfg.request_timeout = t;
        self
    }
}

/// TLS, for TCP and Unix stream servers (cargo feature `tls`); see [`crate::tls`].
#[cfg(feature = "tls")]
impl<L: crate::net::Listener> Builder<L> {
    /// Serves every connection over TLS with `config`: the handshake runs on the worker
    /// under [`tls_handshake_timeout`](Self::tls_handshake_timeout), then the handler reads
    /// and writes plaintext. By default, no TLS.
    ///
    /// Any `ServerConfig` works; [`tls::server_config`](crate::tls::server_config) builds
    /// one from PEM files (with client certificates, and a certificate that can be
    /// reloaded), with the `ring` provider chosen explicitly (see [`crate::tls`] for why).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    /// # let key = rcgen::KeyPair::generate().unwrap();
    /// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap()
    /// #     .self_signed(&key).unwrap();
    /// # std::fs::write(&cert_pem, cert.pem())?;
    /// # std::fs::write(&key_pem, key.serialize_pem())?;
    /// use socketserver::{tls, TcpServer};
    /// use std::sync::Arc;
    ///
    /// let cert = tls::ReloadableCert::from_pem_files(&cert_pem, &key_pem)?;
    /// let config = tls::server_config(cert, None)?;
    /// let server = TcpServer::builder().tls(Arc::new(config)).bind("127.0.0.1:0")?;
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tls(&mut self, config: Arc<rustls::ServerConfig>) -> &mut Self {
        self.cfg.tls = Some(config);
        self
    }

    /// Serves every connection over TLS with the certificate chain and private key of two
    /// PEM files (no client certificates): a shortcut for [`tls`](Self::tls) with
    /// [`tls::server_config`](crate::tls::server_config). A file that cannot be read, holds
    /// no certificate or key, or a key that does not match the certificate, is an error
    /// naming the file.
    pub fn tls_pem(
        &mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> std::io::Result<&mut Self> {
        let cert = crate::tls::ReloadableCert::from_pem_files(cert, key)?;
        let config = crate::tls::server_config(cert, None)?;
        Ok(self.tls(Arc::new(config)))
    }

    /// Sets how long a client has to complete the TLS handshake, for the whole handshake
    /// (not per read: a client sending one byte a second is cut at this deadline). A
    /// client that misses it is disconnected and counted in
    /// [`Stats::tls_handshake_failures`](crate::Stats::tls_handshake_failures). By
    /// default, 10 s.
    pub fn tls_handshake_timeout(&mut self, limit: Duration) -> &mut Self {
        self.cfg.tls_handshake_timeout = limit.max(Duration::from_millis(1));
        self
    }
}

impl<T: Inet> Builder<T> {
    /// Sets `SO_REUSEADDR`, so a restarted server can bind while old connections sit in
    /// TIME_WAIT. By default, on for TCP; off for UDP, where on Linux it would let a second
    /// server bind the same port and silently take its datagrams.
    pub fn reuse_address(&mut self, on: bool) -> &mut Self {
        self.set_reuse_address(on)
    }

    /// Sets `SO_REUSEPORT`: several processes bind the same port and the kernel spreads
    /// clients across them. By default, off: it is for load-balancing, not for fast
    /// restarts, and a stale process would silently keep receiving clients. Offered for IP
    /// sockets only (Linux refuses it on Unix sockets).
    pub fn reuse_port(&mut self, on: bool) -> &mut Self {
        self.set_reuse_port(on)
    }

    /// Sets `IPV6_V6ONLY` on IPv6 addresses (ignored for IPv4). By default, on: a server on
    /// `[::]` takes IPv6 only, and a second server can bind `0.0.0.0` on the same port.
    /// Turn it off for one dual-stack socket.
    pub fn only_v6(&mut self, on: bool) -> &mut Self {
        self.set_only_v6(on)
    }
}

impl<T: Listener> Builder<T> {
    /// Sets the `listen(2)` backlog: how many connected clients the kernel holds while the
    /// server is busy (the kernel caps it at `net.core.somaxconn`). By default, 1024 (Python
    /// used 5 until 3.15, which resets clients under bursts).
    pub fn backlog(&mut self, n: i32) -> &mut Self {
        self.set_backlog(n)
    }

    /// Sets `SO_RCVTIMEO` on every connection: a read that waits this long for data fails
    /// with `TimedOut`, and the handler decides what that means. By default, none.
    pub fn read_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.set_read_timeout(t)
    }

    /// Sets the idle timeout: how long a connection may wait for the client's *next*
    /// request (before its first one, or after the handler has written a reply and reads
    /// again with nothing of the next request buffered). The read then fails with
    /// `TimedOut`, and the close is counted in `Stats::idle_timeouts`, not as a handler
    /// error. By default, none; the read timeout, if set, applies instead.
    ///
    /// It does not bound a request that has begun: a client that stops half-way through a
    /// line is bounded by the read timeout (each read) and the request timeout (the whole
    /// request). The three side by side:
    ///
    /// | timeout | bounds | starts |
    /// |---|---|---|
    /// | `idle_timeout` | the wait between requests | after a reply, or at connect |
    /// | `read_timeout` | each read within a request | at each read |
    /// | `request_timeout` | a whole request, however it trickles in | at its first byte |
    pub fn idle_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.set_idle_timeout(t)
    }

    /// Sets the request timeout: a deadline for each whole request, from its first byte
    /// until the handler begins its reply (its first write). A client that trickles a
    /// request in a byte at a time (slowloris) cannot hold a worker past it, however short
    /// each read's wait. The read that meets the deadline fails with `TimedOut`, counted in
    /// `Stats::request_timeouts`. By default, none.
    ///
    /// The reply has a deadline too: when no [`write_timeout`](Self::write_timeout) is
    /// set, each write of the reply may block at most this long on a client that does not
    /// read (then `TimedOut`, counted in `Stats::request_timeouts` as well).
    ///
    /// A handler that legitimately reads for long (an upload) moves or clears the deadline
    /// with [`StreamRequest::set_deadline`](crate::StreamRequest::set_deadline). See
    /// [`idle_timeout`](Self::idle_timeout) for the three timeouts side by side.
    pub fn request_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.set_request_timeout(t)
    }

    /// Sets whether connections waiting for their client's next request end at once when
    /// shutdown begins. By default, on.
    ///
    /// On: such a read waits in `poll(2)` on the connection and the server's wake-up socket,
    /// so shutdown ends it at once and never cuts a request that is arriving (a request
    /// already there is read and answered first). It costs one extra system call per
    /// request, about 1 us of server CPU: 5-10% of a 64-byte echo on loopback, nothing
    /// measurable for larger requests (see BENCHMARKS.md).
    ///
    /// Off: the read waits in `read(2)`, as a hand-written server's does, and connections
    /// still idle at shutdown are shut down when the grace period ends.
    pub fn end_idle_on_shutdown(&mut self, on: bool) -> &mut Self {
        self.cfg.end_idle_on_shutdown = on;
        self
    }

    /// Sets the most connections `serve_requests` keeps open in the pool flavour (parked
    /// between requests or being served). By default, 65 536, far above the thread limit:
    /// idle connections there hold no thread, only a few KiB each. At the limit the server
    /// stops accepting (new clients wait in the kernel's backlog, then are refused by it)
    /// until a connection closes. The process's descriptor limit (`ulimit -n`) must be
    /// above it; below it, accepts fail with EMFILE and are backed off from.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.set_max_connections(n)
    }

    /// Sets the size of each connection's read buffer. By default, 8 KiB; at most 16 MiB
    /// (`bind` refuses more).
    ///
    /// The buffer takes no memory until the connection's first buffered read (a handler
    /// reading into a buffer at least this large reads past it), and a read that fills it
    /// whole doubles it for the next, up to eight times this size: a client whose requests
    /// are larger than the buffer is still read in one system call per request.
    pub fn read_buffer(&mut self, n: usize) -> &mut Self {
        self.cfg.read_buffer = n.max(1);
        self
    }
}

impl Builder<TcpListener> {
    /// Sets `TCP_NODELAY` on every connection, so a small reply leaves at once instead of
    /// waiting for Nagle's algorithm. By default, on (as in Go): a request/response server
    /// writing in pieces otherwise stalls up to 40 ms per reply. On Linux it is set once,
    /// with the timeouts and keepalive, on the listening socket, which passes it on to each
    /// connection it accepts (no system call per connection).
    pub fn nodelay(&mut self, on: bool) -> &mut Self {
        self.cfg.nodelay = on;
        self
    }
}

impl<T: Datagram> Builder<T> {
    /// Sets the largest datagram the server receives whole. A larger one is dropped before
    /// any handler sees it, logged and counted in `Stats::oversize_dropped`: never silently
    /// cut (Python's 8192-byte `max_packet_size` cut it). By default, 65535; at most 16 MiB
    /// (`bind` refuses more: the receive buffer is allocated once, whole).
    #[doc(alias = "max_packet_size")]
    pub fn max_datagram_size(&mut self, n: usize) -> &mut Self {
        self.set_max_datagram(n)
    }
}

impl<T: Listener> Builder<T> {
    /// Expects every connection to start with a PROXY protocol header (v1 or v2, as sent by
    /// HAProxy's `send-proxy` / `send-proxy-v2`, nginx's `proxy_protocol on`, and cloud TCP
    /// balancers), accepted only from the `trusted` sources: addresses or CIDR blocks of the
    /// balancers. By default, off.
    ///
    /// When on:
    /// * a connection from a trusted source must start with a complete, valid header within
    ///   the header timeout (see [`proxy_header_timeout`](Self::proxy_header_timeout));
    ///   it is read on the worker, never on the accept loop, and exactly: the handler reads
    ///   from the first byte after it;
    /// * [`StreamRequest::peer_addr`](crate::StreamRequest::peer_addr) is then the client's
    ///   address from the header, and
    ///   [`StreamRequest::proxy_header`](crate::StreamRequest::proxy_header) the header
    ///   itself: the balancer's address, the TLVs (ALPN, authority, unique id...);
    /// * a v2 `LOCAL` header (health checks) or a v1 `UNKNOWN` one keeps the socket's own
    ///   addresses; a connection closed before sending anything (a TCP health check) is
    ///   logged at debug level only;
    /// * a missing, malformed or incomplete header, a CRC32C mismatch, or any connection
    ///   from a source not in `trusted`, closes that connection (logged, counted in
    ///   [`Stats::proxy_rejected`](crate::Stats::proxy_rejected)); the server goes on.
    ///
    /// Logs and the `on_error` hook name the client too. The `verify` hook, which runs on
    /// the accept loop before any byte is read, sees the socket's peer: the balancer.
    ///
    /// Unix-domain connections are always trusted (the socket file's permissions decide
    /// who connects). There is no default list: loopback-only would be wrong for a public
    /// port, so the caller names the balancers.
    ///
    /// ```
    /// use socketserver::{IpNet, TcpServer};
    /// use std::net::IpAddr;
    ///
    /// let balancers: Vec<IpNet> = vec![
    ///     "10.0.0.0/24".parse().unwrap(),
    ///     IpAddr::from([127, 0, 0, 1]).into(),
    /// ];
    /// let server = TcpServer::builder().proxy_protocol(balancers).bind("127.0.0.1:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn proxy_protocol<I>(&mut self, trusted: I) -> &mut Self
    where
        I: IntoIterator,
        I::Item: Into<IpNet>,
    {
        self.cfg.proxy.trusted = Some(trusted.into_iter().map(Into::into).collect());
        self
    }

    /// Sets how long a connection may take to send its whole PROXY protocol header before
    /// it is closed (the protocol asks for at least 3 s). By default, 5 s; zero is refused
    /// by `bind`. Takes effect only with [`proxy_protocol`](Self::proxy_protocol), called
    /// before it or after.
    pub fn proxy_header_timeout(&mut self, t: Duration) -> &mut Self {
        self.cfg.proxy.timeout = t;
        self
    }
}

/// Metrics, the admin listener and the shutdown delay (see `crate::metrics`, `crate::admin`
/// and the observability chapter of the guide).
impl<T> Builder<T> {
    /// Serves this server's metrics, health and status on a small HTTP listener of its
    /// own at `addr` ([`AdminServer`](crate::AdminServer)): `/metrics`, `/livez`,
    /// `/readyz`, `/status` and `/status.json`. Bound with the server (port 0 picks a free
    /// port: see `admin_addr()` on the server), it answers from then until `serve`
    /// returns. By default, none.
    ///
    /// Bind it to loopback or a private network: it tells anyone who asks what the server
    /// is doing. For several servers on one admin port, bind an `AdminServer` yourself and
    /// [`watch`](crate::AdminServer::watch) each server's metrics.
    pub fn admin(&mut self, addr: impl std::net::ToSocketAddrs) -> &mut Self {
        self.cfg.metrics.admin = Some(
            addr.to_socket_addrs()
                .map(|a| a.collect())
                .map_err(|e| e.to_string()),
        );
        self
    }

    /// Sets the `listener` label of this server's metrics and its name on the status
    /// page. By default, the bound address (a Unix socket's path).
    pub fn listener_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.cfg.metrics.name = Some(name.into());
        self
    }

    /// Sets the upper bounds, in seconds, of the buckets of
    /// `socketserver_request_duration_seconds`: finite, positive, strictly increasing, at
    /// most 31 (`+Inf` is added). An invalid list is an `InvalidInput` error from `bind`.
    /// By default, 0.5 ms to 10 s: 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    /// 0.25, 0.5, 1, 2.5, 5, 10.
    pub fn request_duration_buckets(&mut self, bounds: &[f64]) -> &mut Self {
        match crate::metrics::Buckets::new(bounds) {
            Ok(b) => self.cfg.metrics.request_buckets = b,
            Err(e) => self.cfg.metrics.invalid = Some(format!("request_duration_buckets: {e}")),
        }
        self
    }

    /// Sets how long the server serves on after [`shutdown`](crate::ShutdownHandle::shutdown)
    /// (SIGTERM, with `shutdown_on_signals`) before shutting down gracefully: readiness
    /// (`/readyz`, `socketserver_ready`) ends at once, and the server keeps accepting and
    /// serving for the delay, so that a balancer or Kubernetes, which stop sending to it
    /// in parallel with the signal, never meet a refused connection. By default, 0 (shut
    /// down at once).
    pub fn shutdown_delay(&mut self, d: Duration) -> &mut Self {
        self.cfg.shutdown_delay = d;
        self
    }
}

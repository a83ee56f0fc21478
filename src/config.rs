//! Server options and the builder that sets them.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::flavor::Flavor;
use crate::handler::HandlerError;
use crate::proxy::ProxyConfig;

pub(crate) type VerifyHook = Arc<dyn Fn(&Addr) -> bool + Send + Sync>;
pub(crate) type ErrorHook = Arc<dyn Fn(&Addr, &HandlerError) + Send + Sync>;

/// Every option of every server, with its default.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) flavor: Flavor,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) nodelay: bool,
    pub(crate) only_v6: bool,
    pub(crate) max_datagram: usize,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    /// TCP keepalive's idle time (`Builder::tcp_keepalive`, in keepalive.rs).
    pub(crate) keepalive: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) recv_buffer: Option<usize>,
    pub(crate) send_buffer: Option<usize>,
    pub(crate) grace_period: Duration,
    pub(crate) read_buffer: usize,
    pub(crate) end_idle_on_shutdown: bool,
    pub(crate) verify: Option<VerifyHook>,
    pub(crate) on_error: Option<ErrorHook>,
    /// PROXY protocol (stream servers): `Builder::proxy_protocol`, in proxy.rs.
    pub(crate) proxy: ProxyConfig,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    #[cfg(feature = "tls")]
    pub(crate) tls_handshake_timeout: Duration,
}

impl Config {
    fn new(reuse_address: bool) -> Config {
        Config {
            flavor: Flavor::default(),
            reuse_address,
            reuse_port: false,
            backlog: 1024,
            nodelay: true,
            only_v6: true,
            max_datagram: 65535,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            request_timeout: None,
            keepalive: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            recv_buffer: None,
            send_buffer: None,
            grace_period: Duration::from_secs(5),
            read_buffer: 8 * 1024,
            end_idle_on_shutdown: true,
            verify: None,
            on_error: None,
            proxy: ProxyConfig::default(),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The default bound on connections kept open by `serve_requests` in the pool flavour.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// The largest per-connection read buffer and datagram size a builder takes: each is
/// allocated whole, so a typo must not become a multi-gigabyte allocation.
pub(crate) const MAX_BUFFER: usize = 16 * 1024 * 1024;

impl Config {
    /// Checks the options together, before any socket exists: a setting that cannot work
    /// is a clear `InvalidInput` error from `bind`, never a panic or a silent misbehaviour
    /// later.
    pub(crate) fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        for (name, t) in [
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
            ("tcp_keepalive", self.keepalive),
        ] {
            if t == Some(Duration::ZERO) {
                return invalid(format!(
                    "{name} of zero would fail every call at once; use None for no timeout"
                ));
            }
        }
        if self.proxy.enabled() {
            self.proxy.validate()?;
        }
        if self.max_datagram > MAX_BUFFER {
            return invalid(format!(
                "max_datagram_size {} is over the largest buffer taken, {MAX_BUFFER} bytes",
                self.max_datagram
            ));
        }
        if self.read_buffer > MAX_BUFFER {
            return invalid(format!(
                "read_buffer {} is over the largest buffer taken, {MAX_BUFFER} bytes",
                self.read_buffer
            ));
        }
        for (name, n) in [
            ("recv_buffer_size", self.recv_buffer),
            ("send_buffer_size", self.send_buffer),
        ] {
            if n.is_some_and(|n| n == 0 || n > i32::MAX as usize / 2) {
                return invalid(format!(
                    "{name} must be between 1 and {} bytes",
                    i32::MAX / 2
                ));
            }
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".to_string());
        }
        self.flavor.validate()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Config");
        f.field("flavor", &self.flavor)
            .field("reuse_address", &self.reuse_address)
            .field("reuse_port", &self.reuse_port)
            .field("backlog", &self.backlog)
            .field("nodelay", &self.nodelay)
            .field("only_v6", &self.only_v6)
            .field("max_datagram", &self.max_datagram)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive", &self.keepalive)
            .field("max_connections", &self.max_connections)
            .field("recv_buffer", &self.recv_buffer)
            .field("send_buffer", &self.send_buffer)
            .field("grace_period", &self.grace_period)
            .field("end_idle_on_shutdown", &self.end_idle_on_shutdown)
            .field("verify", &self.verify.is_some())
            .field("on_error", &self.on_error.is_some())
            .field("proxy", &self.proxy);
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls.is_some())
            .field("tls_handshake_timeout", &self.tls_handshake_timeout);
        f.finish()
    }
}

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

    /// Sets `SO_RCVBUF` on the socket: the kernel's receive buffer, in bytes. By default,
    /// the system's (`net.core.rmem_default`, often 208 KiB; Linux doubles the value set,
    /// for its own bookkeeping, and caps it at `net.core.rmem_max`).
    ///
    /// Raise it for UDP servers that take bursts: datagrams that arrive while the buffer is
    /// full are dropped by the kernel before the server sees them (`netstat -su`, "receive
    /// buffer errors"). The size in effect is readable from the bound server
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
impl<L: crate::transport::Listener> Builder<L> {
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

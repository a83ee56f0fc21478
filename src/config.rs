//! Server options and the builder that sets them.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::error::HandlerError;
use crate::flavor::Flavor;
use crate::metrics::state::MetricsConfig;
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
    /// TCP keepalive's idle time (`Builder::tcp_keepalive`, in net/keepalive.rs).
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
    /// Metrics and the admin listener (`crate::metrics`, `crate::admin`).
    pub(crate) metrics: MetricsConfig,
    pub(crate) shutdown_delay: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    #[cfg(feature = "tls")]
    pub(crate) tls_handshake_timeout: Duration,
}

impl Config {
    pub(crate) fn new(reuse_address: bool) -> Config {
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
            metrics: MetricsConfig::default(),
            shutdown_delay: Duration::ZERO,
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
        if let Some(Err(e)) = &self.metrics.admin {
            return invalid(format!("admin address: {e}"));
        }
        if let Some(e) = &self.metrics.invalid {
            return invalid(e.clone());
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
            .field("proxy", &self.proxy)
            .field("metrics", &self.metrics)
            .field("shutdown_delay", &self.shutdown_delay);
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls.is_some())
            .field("tls_handshake_timeout", &self.tls_handshake_timeout);
        f.finish()
    }
}

//! What every example server shares: the command line of the examples' contract
//! (`--addr`, `--mode`, `--workers`, `--grace`, the stream servers' bounds
//! `--request-timeout`, `--write-timeout`, `--idle-timeout`, `--keepalive` (the last two
//! default to what the example's protocol suits: see [`Service`]), and the deployment options
//! `--proxy-protocol`, `--trusted-proxy`, `--reuseport`, `--metrics-addr`,
//! `--shutdown-delay`), logging, the socket (inherited
//! from systemd or a restart when `LISTEN_FDS` is set, else bound), the `listening on ADDR`
//! line, a graceful exit on SIGINT/SIGTERM and, for stream servers, a restart on SIGHUP.
//! Not an example itself.
//!
//! TLS (`--tls-cert FILE --tls-key FILE`, and `--tls-client-ca FILE` for client
//! certificates) needs the crate's `tls` feature:
//! `cargo run --features tls --example echo -- --tls-cert cert.pem --tls-key key.pem`.
//! The SIGHUP restart reads the certificate files again (the new process loads them).
#![allow(dead_code)] // each example uses the part it needs

use std::io::{self, Write};
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use socketserver::{
    Builder, DatagramHandler, Flavor, IpNet, RequestHandler, ShutdownHandle, StreamHandler,
    TcpServer, UdpServer,
};

/// The options every example server takes.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free port). Default: 127.0.0.1 and
    /// the example's own port.
    #[arg(long)]
    pub addr: Option<String>,
    /// How requests run: single, threading, pool or fork.
    #[arg(long, default_value = "pool")]
    pub mode: Flavor,
    /// Warm workers of the pool (it grows when all are busy).
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Seconds requests in flight get to finish after SIGINT/SIGTERM (or a SIGHUP restart).
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Seconds a request may take to arrive whole, from its first byte (stream servers;
    /// 0 for no limit). Bounds clients that trickle a request in (slowloris).
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Expect a PROXY protocol header (v1 or v2, from HAProxy, nginx...) on every
    /// connection (stream servers).
    #[arg(long)]
    pub proxy_protocol: bool,
    /// A balancer allowed to send PROXY headers: address or CIDR, repeatable. Default
    /// (for the examples only): loopback, 127.0.0.0/8 and ::1.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_net)]
    pub trusted_proxy: Vec<IpNet>,
    /// Seconds a reply may block on a client that does not read it, per write (stream
    /// servers; 0 for no limit). Bounds clients that send requests and never read.
    #[arg(long, default_value = "15", value_parser = seconds)]
    pub write_timeout: Duration,
    /// Seconds a connection may wait for the client's next request (stream servers; 0 for
    /// no limit). Default: the example's own, suited to its protocol (see its `--help`).
    #[arg(long, value_parser = seconds)]
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive: seconds of silence before the kernel probes the peer (3 probes,
    /// `idle / 3` apart), to find peers that vanished without closing (0 for off).
    /// Default: the example's own.
    #[arg(long, value_parser = seconds)]
    pub keepalive: Option<Duration>,
    /// Set SO_REUSEPORT: several processes serve one port, the kernel spreads clients.
    #[arg(long)]
    pub reuseport: bool,
    /// Serve TLS with this PEM certificate chain (with --tls-key; the `tls` feature).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by the CAs of this PEM file (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub observability: ObservabilityArgs,
}

/// A number of seconds from the command line: finite and not negative (`inf`, `nan` or
/// `-1` is an argument error, not a panic later).
pub fn seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?}: give a finite number of seconds, 0 or more"));
    }
    Duration::try_from_secs_f64(n).map_err(|_| format!("{s:?} seconds is too long"))
}

/// `None` for a zero duration (the examples' "0 for no limit").
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// What an example's protocol asks of the shared stream options: its port, how long its
/// connections may wait for the client's next request, and how soon a silent peer is
/// probed by TCP keepalive. `--idle-timeout` and `--keepalive` override the last two.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    /// The example's default port (`--addr` overrides it).
    pub port: u16,
    /// The idle timeout suited to the protocol.
    pub idle: Duration,
    /// The keepalive idle time suited to the protocol.
    pub keepalive: Duration,
}

impl Service {
    /// A request/reply protocol on `port`: a client may wait 5 minutes between requests
    /// (someone typing at `nc`); a silent peer is probed after 1 minute.
    pub const fn new(port: u16) -> Service {
        Service {
            port,
            idle: Duration::from_secs(300),
            keepalive: Duration::from_secs(60),
        }
    }

    /// The same, with an idle timeout of `secs` seconds.
    pub const fn idle_secs(self, secs: u64) -> Service {
        Service {
            idle: Duration::from_secs(secs),
            ..self
        }
    }
}

// --- Observability (issue 21): metrics, health, status page, shutdown delay. ---

/// The admin listener and the shutdown delay.
#[derive(Args, Debug, Clone)]
pub struct ObservabilityArgs {
    /// Serve /metrics (Prometheus), /livez, /readyz, /status and /status.json on this
    /// HOST:PORT (port 0 picks a free port). Off by default; bind it to loopback.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Seconds to keep serving, not ready (/readyz 503), after SIGTERM before shutting
    /// down gracefully: time for a balancer to stop sending new clients.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub shutdown_delay: f64,
}

impl ObservabilityArgs {
    /// Applies `--metrics-addr` and `--shutdown-delay` to a builder.
    pub fn apply<T>(&self, b: &mut Builder<T>) {
        if let Some(addr) = &self.metrics_addr {
            b.admin(addr.as_str());
        }
        b.shutdown_delay(
            Duration::try_from_secs_f64(self.shutdown_delay.max(0.0)).unwrap_or(Duration::MAX),
        );
    }
}

/// Prints `metrics on ADDR` (the admin listener's real address), flushed, right after the
/// `listening on` line, when the server has an admin listener.
pub fn announce_admin(admin: Option<std::net::SocketAddr>) -> io::Result<()> {
    if let Some(addr) = admin {
        let mut out = io::stdout().lock();
        writeln!(out, "metrics on {addr}")?;
        out.flush()?;
    }
    Ok(())
}

// --- end of observability ---

/// An address or a CIDR block.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block"))
}

impl ServerArgs {
    /// The address to bind: `--addr`, or 127.0.0.1 on the example's port.
    pub fn addr(&self, default_port: u16) -> String {
        self.addr
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{default_port}"))
    }

    /// The flavour from `--mode` and `--workers`.
    pub fn flavor(&self) -> Flavor {
        match self.mode.name() {
            // The mode's own settings (an example may have set a limit) are kept.
            "pool" => self.mode.clone().workers(self.workers),
            _ => self.mode.clone(),
        }
    }

    /// Applies the shared options to a builder.
    pub fn apply<T>(&self, b: &mut Builder<T>) {
        b.flavor(self.flavor()).grace_period(
            Duration::try_from_secs_f64(self.grace.max(0.0)).unwrap_or(Duration::MAX),
        );
        self.observability.apply(b);
    }

    /// The request timeout from `--request-timeout` (`None` for 0).
    pub fn request_timeout(&self) -> Option<Duration> {
        // A value too large for a Duration is no limit at all.
        (self.request_timeout > 0.0)
            .then(|| Duration::try_from_secs_f64(self.request_timeout).ok())
            .flatten()
    }

    /// Whether `--tls-cert` was given.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// A TCP builder with the shared options applied, TLS included (the certificate files
    /// are read now: an unreadable file is an error naming it), and the timeouts and
    /// keepalive of `service` unless the command line gave its own.
    pub fn tcp(&self, service: Service) -> io::Result<Builder<TcpListener>> {
        let mut b = TcpServer::builder();
        self.apply(&mut b);
        let write = nonzero(self.write_timeout);
        let idle = nonzero(self.idle_timeout.unwrap_or(service.idle));
        let keepalive = nonzero(self.keepalive.unwrap_or(service.keepalive));
        let show = |d: Option<Duration>| d.map_or("none".to_string(), |d| format!("{d:?}"));
        log::info!(
            "bounds: request timeout {}, write timeout {}, idle timeout {}, TCP keepalive {}",
            show(self.request_timeout()),
            show(write),
            show(idle),
            show(keepalive)
        );
        b.request_timeout(self.request_timeout())
            .write_timeout(write)
            .idle_timeout(idle)
            .tcp_keepalive(keepalive);
        b.reuse_port(self.reuseport);
        if self.proxy_protocol {
            b.proxy_protocol(self.trusted());
        }
        self.apply_tls(&mut b)?;
        Ok(b)
    }

    #[cfg(feature = "tls")]
    fn apply_tls<L: socketserver::Listener>(&self, b: &mut Builder<L>) -> io::Result<()> {
        use socketserver::tls;
        use std::sync::Arc;

        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(());
        };
        let resolver = tls::ReloadableCert::from_pem_files(cert, key)?;
        let config = tls::server_config(resolver, self.tls_client_ca.as_deref())?;
        b.tls(Arc::new(config));
        Ok(())
    }

    #[cfg(not(feature = "tls"))]
    fn apply_tls<L: socketserver::Listener>(&self, _: &mut Builder<L>) -> io::Result<()> {
        if self.tls_enabled() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "--tls-cert needs TLS support: build with `--features tls`",
            ));
        }
        Ok(())
    }

    /// The balancers trusted to send PROXY headers: `--trusted-proxy`, or loopback.
    pub fn trusted(&self) -> Vec<IpNet> {
        if self.trusted_proxy.is_empty() {
            vec![
                "127.0.0.0/8".parse().expect("a CIDR block"),
                "::1/128".parse().expect("a CIDR block"),
            ]
        } else {
            self.trusted_proxy.clone()
        }
    }

    /// A UDP builder with the shared options applied.
    pub fn udp(&self) -> Builder<UdpSocket> {
        let mut b = UdpServer::builder();
        self.apply(&mut b);
        b.reuse_port(self.reuseport);
        b
    }

    /// The TCP server of the options: the socket inherited from systemd (or from the
    /// previous process of a SIGHUP restart) when `LISTEN_FDS` is set, `--addr` ignored;
    /// else bound on `--addr`.
    pub fn tcp_server(&self, service: Service) -> io::Result<TcpServer> {
        let b = self.tcp(service)?;
        match b.from_systemd()? {
            Some(server) => Ok(server),
            None => b.bind(self.addr(service.port)),
        }
    }

    /// The UDP server of the options, inherited from systemd or bound (see `tcp_server`).
    pub fn udp_server(&self, port: u16) -> io::Result<UdpServer> {
        if self.tls_enabled() {
            // Serving plain datagrams when TLS was asked for would be a quiet surprise.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--tls-cert: TLS is for stream servers, and this one serves UDP",
            ));
        }
        let b = self.udp();
        match b.from_systemd()? {
            Some(server) => Ok(server),
            None => b.bind(self.addr(port)),
        }
    }
}

/// Parses the command line of an example that takes only the shared options; `about` is
/// its one-line description for `--help`.
pub fn parse(about: &'static str) -> ServerArgs {
    let cmd = ServerArgs::augment_args(clap::Command::new(env!("CARGO_CRATE_NAME")));
    let matches = cmd.about(about).get_matches();
    ServerArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Starts `env_logger` at `info` unless `RUST_LOG` says otherwise; logs go to stderr.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Prints the contract's first stdout line, flushed, and arms SIGINT/SIGTERM.
pub fn announce(addr: impl std::fmt::Display, handle: &ShutdownHandle) -> io::Result<()> {
    socketserver::shutdown_on_signals(handle)?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// Makes a TCP server from the shared options (see `ServerArgs::tcp_server`), arms the
/// SIGHUP restart, announces it and serves `handler`.
pub fn serve_tcp<H: StreamHandler + Clone>(
    args: &ServerArgs,
    service: Service,
    handler: H,
) -> io::Result<()> {
    armed_tcp_server(args, service)?.serve(handler)
}

/// Makes a TCP server from the shared options (see `ServerArgs::tcp_server`), arms the
/// SIGHUP restart, announces it and serves `handler` one request at a time (in the pool
/// mode, idle connections hold no thread).
pub fn serve_tcp_requests<H: RequestHandler + Clone>(
    args: &ServerArgs,
    service: Service,
    handler: H,
) -> io::Result<()> {
    armed_tcp_server(args, service)?.serve_requests(handler)
}

/// Like [`serve_tcp_requests`], each connection's handler made by `factory` (for a
/// per-connection state that is not `Clone`).
pub fn serve_tcp_requests_with<F, H>(
    args: &ServerArgs,
    service: Service,
    factory: F,
) -> io::Result<()>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: RequestHandler,
{
    armed_tcp_server(args, service)?.serve_requests_with(factory)
}

/// A TCP server from the shared options, its SIGHUP restart armed, its address announced.
fn armed_tcp_server(args: &ServerArgs, service: Service) -> io::Result<TcpServer> {
    let server = args.tcp_server(service)?;
    server.restart_on_sighup()?;
    announce(server.local_addr()?, &server.shutdown_handle())?;
    announce_admin(server.admin_addr())?;
    Ok(server)
}

/// Makes a UDP server from the shared options (see `ServerArgs::udp_server`), announces
/// it and serves `handler`.
pub fn serve_udp<H: DatagramHandler + Clone>(
    args: &ServerArgs,
    port: u16,
    handler: H,
) -> io::Result<()> {
    let server = args.udp_server(port)?;
    announce(server.local_addr()?, &server.shutdown_handle())?;
    announce_admin(server.admin_addr())?;
    server.serve(handler)
}

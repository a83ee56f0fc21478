//! What every example server shares: the command line of the examples' contract
//! (`--addr`, `--mode`, `--workers`), logging, the `listening on ADDR` line, and a graceful
//! exit on SIGINT/SIGTERM. Not an example itself.
#![allow(dead_code)] // each example uses the part it needs

use std::io::{self, Write};
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use clap::{Args, FromArgMatches};
use socketserver::{
    Builder, DatagramHandler, Flavor, RequestHandler, ShutdownHandle, StreamHandler, TcpServer,
    UdpServer,
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
    /// Seconds requests in flight get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Seconds a request may take to arrive whole, from its first byte (stream servers;
    /// 0 for no limit). Bounds clients that trickle a request in (slowloris).
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout: f64,
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
            "pool" => Flavor::pool().workers(self.workers),
            _ => self.mode.clone(),
        }
    }

    /// Applies the shared options to a builder.
    pub fn apply<T>(&self, b: &mut Builder<T>) {
        b.flavor(self.flavor()).grace_period(
            Duration::try_from_secs_f64(self.grace.max(0.0)).unwrap_or(Duration::MAX),
        );
    }

    /// The request timeout from `--request-timeout` (`None` for 0).
    pub fn request_timeout(&self) -> Option<Duration> {
        // A value too large for a Duration is no limit at all.
        (self.request_timeout > 0.0)
            .then(|| Duration::try_from_secs_f64(self.request_timeout).ok())
            .flatten()
    }

    /// A TCP builder with the shared options applied.
    pub fn tcp(&self) -> Builder<TcpListener> {
        let mut b = TcpServer::builder();
        self.apply(&mut b);
        b.request_timeout(self.request_timeout());
        b
    }

    /// A UDP builder with the shared options applied.
    pub fn udp(&self) -> Builder<UdpSocket> {
        let mut b = UdpServer::builder();
        self.apply(&mut b);
        b
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

/// Binds a TCP server from the shared options, announces it and serves `handler`.
pub fn serve_tcp<H: StreamHandler + Clone>(
    args: &ServerArgs,
    port: u16,
    handler: H,
) -> io::Result<()> {
    let server = args.tcp().bind(args.addr(port))?;
    announce(server.local_addr()?, &server.shutdown_handle())?;
    server.serve(handler)
}

/// Binds a TCP server from the shared options, announces it and serves `handler` one
/// request at a time (in the pool mode, idle connections hold no thread).
pub fn serve_tcp_requests<H: RequestHandler + Clone>(
    args: &ServerArgs,
    port: u16,
    handler: H,
) -> io::Result<()> {
    let server = args.tcp().bind(args.addr(port))?;
    announce(server.local_addr()?, &server.shutdown_handle())?;
    server.serve_requests(handler)
}

/// Binds a UDP server from the shared options, announces it and serves `handler`.
pub fn serve_udp<H: DatagramHandler + Clone>(
    args: &ServerArgs,
    port: u16,
    handler: H,
) -> io::Result<()> {
    let server = args.udp().bind(args.addr(port))?;
    announce(server.local_addr()?, &server.shutdown_handle())?;
    server.serve(handler)
}

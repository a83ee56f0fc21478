//! Python's `socketserver`, done right for Rust: write `handle`, get a server.
//!
//! You write a handler, the few lines that serve one connection or one datagram. The crate
//! supplies the rest: binding with the right socket options, the accept loop, running
//! requests in the flavour you choose, graceful shutdown, error isolation and counters.
//!
//! ```no_run
//! use socketserver::{StreamRequest, TcpServer};
//! use std::io::{self, Read, Write};
//!
//! fn main() -> io::Result<()> {
//!     TcpServer::bind("127.0.0.1:8002")?.serve(|req: &mut StreamRequest| {
//!         let mut buf = [0; 16 * 1024];
//!         loop {
//!             let n = req.read(&mut buf)?;
//!             if n == 0 {
//!                 return Ok(());
//!             }
//!             req.write_all(&buf[..n].to_ascii_uppercase())?;
//!         }
//!     })
//! }
//! ```
//!
//! The [`guide`] takes it from there, chapter by chapter: getting started, handlers and
//! flavours, framing, timeouts and limits, deployment, reliability.
//!
//! # Three independent choices
//!
//! As in Python's module, a server is three choices:
//!
//! * **Transport**: [`TcpServer`], [`UdpServer`], [`UnixStreamServer`],
//!   [`UnixDatagramServer`]. Stream servers give the handler a [`StreamRequest`]
//!   (`Read` + `BufRead` + `Write`); datagram servers a [`DatagramRequest`] (the packet and
//!   `reply`). IPv6 comes from the address (`[::1]:8001`), no subclass needed.
//! * **Flavour** ([`Flavor`]), how requests run: `single` (one at a time), `threading` (a
//!   thread each, bounded), `pool` (warm threads that take turns at the server's event set
//!   and serve what they take, growing when all are busy; the default),
//!   `forking` (a process each, bounded). Python's `ThreadingTCPServer` is
//!   `TcpServer` + `Flavor::threading()`.
//! * **Handler**: a closure, or a type implementing [`StreamHandler`] or
//!   [`DatagramHandler`] with `setup` / `handle` / `finish`.
//!
//! # Where it differs from Python, and why
//!
//! * Shutdown is immediate and never deadlocks: [`ShutdownHandle::shutdown`] wakes the
//!   accept loop at once (no 0.5 s polling), works from a handler and before `serve`, and
//!   `serve` returns only after requests in flight finished or the grace period ended.
//! * Everything is bounded: threads, children, queues. Finished threads are joined, never
//!   kept; `max_children` holds before `fork`, and only the server's own children are reaped.
//! * Accept errors are classified: transient ones retried, descriptor exhaustion backed off
//!   (5 ms doubling to 1 s) instead of spinning, anything else returned from `serve`.
//! * Defaults a server wants: `SO_REUSEADDR` on TCP, a backlog of 1024, `TCP_NODELAY`,
//!   65535-byte datagrams with oversize ones reported (never cut), Unix socket files removed
//!   on close.
//! * TCP is a byte stream: the [`framing`] module sends and receives whole messages
//!   (length-prefixed frames, JSON header + body) so no handler loops over `recv(1024)`.
//! * TLS (cargo feature `tls`, rustls) is one builder call, `Builder::tls`; the handshake
//!   runs on the worker under a deadline, never on the accept loop (Python's `wrap_socket`
//!   on the listening socket lets one silent client stop everyone); see the `tls` module.
//!
//! # Platforms
//!
//! Linux, macOS and the BSDs (anything `cfg(unix)`): the accept loop is built on `poll(2)`,
//! the pool's event set on epoll or kqueue, and forking and Unix sockets are unix concepts.
//! On Linux a datagram pool's workers wait in `recvfrom(2)` themselves (shutdown wakes them
//! with `shutdown(2)` on the socket, a Linux behaviour); elsewhere it is fed through a
//! queue. Windows is not supported.
#![deny(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_code
)]
#![warn(unreachable_pub)]

#[cfg(not(unix))]
compile_error!("socketserver supports Unix-like systems (Linux, macOS, BSD) only");

mod addr;
mod admin;
mod builder;
mod config;
mod conn;
mod deploy;
mod engine;
mod error;
mod flavor;
pub mod framing;
pub mod guide;
mod handler;
mod metrics;
mod net;
mod proxy;
pub mod push;
mod request;
mod server;
mod shared;
mod shutdown;
mod stats;
#[allow(unsafe_code)]
mod sys;
mod time;
#[cfg(feature = "tls")]
pub mod tls;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use crate::addr::Addr;
pub use crate::admin::AdminServer;
pub use crate::builder::Builder;
pub use crate::deploy::signal::shutdown_on_signals;
pub use crate::error::HandlerError;
pub use crate::flavor::{Flavor, ParseFlavorError};
pub use crate::handler::{DatagramHandler, Next, RequestHandler, StreamHandler};
pub use crate::metrics::{Metrics, MetricsFormat};
pub use crate::net::stream::Stream;
pub use crate::net::{Datagram, Inet, Listener};
pub use crate::proxy::{ProxyHeader, Tlvs};
pub use crate::request::{DatagramRequest, Received, StreamRequest};
pub use crate::server::{
    DatagramServer, StreamServer, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer,
};
pub use crate::shutdown::ShutdownHandle;
pub use crate::stats::Stats;
/// A CIDR block (`10.0.0.0/8`, `::1/128`) or, through `From<IpAddr>`, one address: the
/// trusted sources of [`Builder::proxy_protocol`]. Re-exported from the `ipnet` crate.
pub use ipnet::IpNet;

//! The guide: how to build, run and deploy servers with this crate, chapter by chapter.
//!
//! Each chapter is a page of its own, written as markdown under `docs/` in the repository
//! and compiled into these documentation-only modules, so every code block in it is a
//! doc test: it compiles and runs (most bind `127.0.0.1:0`, talk to the server and shut
//! it down) on every `cargo test`. The reference for each item is on the item itself.
//!
//! 1. [Getting started](getting_started): a first server, stopping it, the examples.
//! 2. [Handlers and flavours](handlers_and_flavours): the three choices, the Python names,
//!    handler traits, request-at-a-time handlers for many idle clients.
//! 3. [Framing](framing): whole messages over TCP (frames, JSON, lines, header + body).
//! 4. [Timeouts and limits](timeouts_and_limits): the three timeouts, every bound, the
//!    defaults.
//! 5. [Deployment](deployment): TLS, behind a load balancer, systemd, restarts that
//!    refuse nobody.
//! 6. [Reliability](reliability): what is promised and how it is tested.
//! 7. [Observability](observability): Prometheus metrics, health and readiness, the
//!    status page, the systemd watchdog.
//! 8. [Server push](server_push): writing to any connection from any thread (TLS
//!    included), bounded backlogs, topics, a last word at shutdown.
//!
//! Measurements (throughput per flavour, deployment, TLS, file transfer, the reliability
//! suites' figures) are in
//! [BENCHMARKS.md](https://docs.rs/crate/socketserver/latest/source/BENCHMARKS.md), each
//! dated by its run.

#[doc = include_str!("../docs/getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("../docs/handlers-and-flavours.md")]
pub mod handlers_and_flavours {}

#[doc = include_str!("../docs/framing.md")]
pub mod framing {}

#[doc = include_str!("../docs/timeouts-and-limits.md")]
pub mod timeouts_and_limits {}

#[doc = include_str!("../docs/deployment.md")]
pub mod deployment {}

#[doc = include_str!("../docs/reliability.md")]
pub mod reliability {}

#[doc = include_str!("../docs/observability.md")]
pub mod observability {}

#[doc = include_str!("../docs/server-push.md")]
pub mod server_push {}

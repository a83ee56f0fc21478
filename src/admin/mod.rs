//! The admin listener: metrics, health, readiness and a status page over HTTP, served by
//! the crate on a thread of its own.
//!
//! One thread runs an event loop (`mio`) over the listener and every admin connection, so
//! that a silent or slow client holds a few bytes of memory, never the thread: 50 idle
//! connections do not delay a scrape. Each connection carries one request (8 KiB at most,
//! within 5 s of its accept) and is closed after the answer. The main port never waits for
//! this one: scrapes read the servers' atomics, take no lock a request takes, and run on
//! this thread only.

mod http;
mod pages;
mod watchdog;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Socket, Type};

use self::http::{Parsed, Response, State};
use self::pages::{Overview, Rates};
use crate::metrics::{render, ListenerSnapshot, Metrics, MetricsFormat};

/// How long a client has to send its whole request, and then to read the answer.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// The most admin connections open at once; past it, the oldest one still sending its
/// request is closed to make room (a client that trickles bytes cannot fill the table).
const MAX_CONNECTIONS: usize = 128;
/// How often the counts are sampled for the status page's rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// What the admin thread and the `AdminServer` share.
#[derive(Debug, Default)]
struct Watched {
    listeners: Mutex<Vec<Metrics>>,
    stop: AtomicBool,
}

impl Watched {
    fn all(&self) -> Vec<Metrics> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// An HTTP listener serving the metrics, health and status of one or more servers.
///
/// | path | answer |
/// |---|---|
/// | `GET /metrics` | every watched server's metrics, Prometheus text 0.0.4, or OpenMetrics 1.0 when the `Accept` header prefers it |
/// | `GET /livez` | 200 while a watched server's serve loop runs, else 503 |
/// | `GET /readyz` | 200 while every watched server serves and accepts; 503 from the moment shutdown (a [shutdown delay](crate::Builder::shutdown_delay) included) or a restart's drain begins |
/// | `GET /status` | an HTML page for a person: version, pid, uptime, per server its state, connections, rates over 10 s and 1 min, p50/p99, errors, timeouts, workers; it refreshes itself every 5 s, without JavaScript |
/// | `GET /status.json` | the same as JSON: `{"pid", "ready", "uptime_seconds", "listeners": [{"address", "accepted", "active", "requests", ...}]}` |
///
/// `HEAD` works on each; other methods get 405, other paths 404, malformed requests 400,
/// requests over 8 KiB 431, requests not whole within 5 s 408. Every answer closes its
/// connection.
///
/// It serves from `bind` until it is dropped, on one thread of its own (an event loop:
/// idle or slow admin clients hold no thread). Bind it to loopback or a private network:
/// it tells anyone who asks what the servers do. Most programs use
/// [`Builder::admin`](crate::Builder::admin), which binds one for a single server and
/// stops it when `serve` returns; bind one yourself to watch several servers on one port:
///
/// ```
/// use socketserver::{AdminServer, TcpServer, UdpServer};
/// use std::io::{Read, Write};
///
/// let tcp = TcpServer::bind("127.0.0.1:0")?;
/// let udp = UdpServer::bind("127.0.0.1:0")?;
/// let admin = AdminServer::bind("127.0.0.1:0")?;
/// admin.watch(tcp.metrics());
/// admin.watch(udp.metrics());
///
/// let mut client = std::net::TcpStream::connect(admin.local_addr())?;
/// client.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
/// let mut answer = String::new();
/// client.read_to_string(&mut answer)?;
/// assert!(answer.starts_with("HTTP/1.1 503 ")); // neither serves yet
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// On SIGHUP, a server's [restart](crate::StreamServer::restart_on_sighup) starts a new
/// process that binds the same admin address (the socket has `SO_REUSEPORT`, so both can
/// hold it for the moment of the hand-over); the old process closes its admin listener
/// when it hands over.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    watched: Arc<Watched>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds the admin listener (the first address that works) and starts serving it on
    /// its own thread.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<AdminServer> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match bind_listener(a) {
                Ok(l) => return AdminServer::start(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to bind the admin listener",
            )
        }))
    }

    fn start(listener: StdListener) -> io::Result<AdminServer> {
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let watched = Arc::new(Watched::default());
        let mut looping = Loop {
            poll,
            listener: Some(listener),
            watched: Arc::clone(&watched),
            conns: HashMap::new(),
            next: FIRST_CONN,
            rates: Rates::default(),
            next_sample: Instant::now(),
            born: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("socketserver-admin".into())
            .spawn(move || looping.run())?;
        Ok(AdminServer {
            addr,
            watched,
            waker,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a server to what this listener serves (its metrics, and its state in
    /// `/livez`, `/readyz` and the status page).
    pub fn watch(&self, metrics: Metrics) {
        self.watched
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(metrics);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.watched.stop.store(true, SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening socket with `SO_REUSEADDR` and `SO_REUSEPORT` (see `AdminServer`).
fn bind_listener(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(not(any(target_os = "solaris", target_os = "illumos")))]
    socket.set_reuse_port(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// One admin connection.
struct Conn {
    stream: TcpStream,
    state: State,
    /// When it was accepted, to pick the oldest when the table is full.
    opened: Instant,
}

/// The admin thread's event loop.
struct Loop {
    poll: Poll,
    listener: Option<TcpListener>,
    watched: Arc<Watched>,
    conns: HashMap<usize, Conn>,
    next: usize,
    rates: Rates,
    next_sample: Instant,
    born: Instant,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        while !self.watched.stop.load(SeqCst) {
            let now = Instant::now();
            let next = self
                .conns
                .values()
                .map(|c| c.state.deadline())
                .chain([self.next_sample])
                .min()
                .unwrap_or(self.next_sample);
            let timeout = next.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("admin listener: poll failed, stopping it: {e}");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => self.ready(key),
                }
            }
            self.tick();
            if crate::deploy::notify::handed_over() && self.listener.is_some() {
                // A restart handed the service to a new process, which serves this
                // address now: answering here too would mix two processes' figures.
                log::info!("admin listener closed: a restart handed over");
                self.listener = None;
            }
        }
    }

    /// Closes connections past their deadline (408 to a request never completed) and
    /// samples the counts when it is time.
    fn tick(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state.deadline() <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            if let Some(mut c) = self.conns.remove(&key) {
                if let State::Reading { buf, .. } = &c.state {
                    if !buf.is_empty() {
                        let _ = c.stream.write(
                            &Response::text(408, "request not received within 5 s").encode(false),
                        );
                    }
                }
            }
        }
        if now >= self.next_sample {
            let snaps = self.snapshots();
            self.rates.sample(now, &snaps);
            self.next_sample = now + SAMPLE_EVERY;
        }
    }

    fn snapshots(&self) -> Vec<ListenerSnapshot> {
        self.watched.all().iter().map(Metrics::snapshot).collect()
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or a dying connection: the next event retries.
                    log::debug!("admin listener: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                self.evict_oldest();
            }
            let key = self.next;
            self.next = self.next.checked_add(1).unwrap_or(FIRST_CONN);
            let mut conn = Conn {
                stream,
                state: State::Reading {
                    buf: Vec::new(),
                    deadline: Instant::now() + REQUEST_TIME,
                },
                opened: Instant::now(),
            };
            if self
                .poll
                .registry()
                .register(&mut conn.stream, Token(key), Interest::READABLE)
                .is_ok()
            {
                self.conns.insert(key, conn);
                // Edge-triggered: the request may be there already.
                self.ready(key);
            }
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Reading { .. }))
            .min_by_key(|(_, c)| c.opened)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.conns.remove(&k);
        }
    }

    /// Reads what is there, answers once the request is whole, sends what fits.
    fn ready(&mut self, key: usize) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        if let State::Reading { buf, deadline } = &mut conn.state {
            let deadline = *deadline;
            let mut chunk = [0u8; 4096];
            let answer = loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => return, // closed before a whole request: drop it
                    Ok(n) => {
                        // Keep at most one byte past the limit: enough to know it is over.
                        let room = (http::MAX_REQUEST + 1).saturating_sub(buf.len());
                        buf.extend_from_slice(&chunk[..n.min(room)]);
                        match http::parse(buf) {
                            Parsed::Partial => continue,
                            Parsed::Done(req) => break self.route(&req),
                            Parsed::Reject(status, why) => {
                                break (Response::text(status, why), false)
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.conns.insert(key, conn);
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            };
            let (response, head) = answer;
            conn.state = State::Writing {
                out: response.encode(head),
                sent: 0,
                deadline,
            };
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(key), Interest::WRITABLE);
        }
        if let State::Writing { out, sent, .. } = &mut conn.state {
            while *sent < out.len() {
                match conn.stream.write(&out[*sent..]) {
                    Ok(0) => return,
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.conns.insert(key, conn);
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            // All sent: close (after telling the client no more comes).
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
    }

    /// The answer to a whole request, and whether it is to a `HEAD`.
    fn route(&mut self, req: &http::Request) -> (Response, bool) {
        let known = matches!(
            req.path.as_str(),
            "/" | "/metrics" | "/livez" | "/readyz" | "/status" | "/status.json"
        );
        if !known {
            return (Response::text(404, "not found"), req.method == "HEAD");
        }
        let head = req.method == "HEAD";
        if req.method != "GET" && !head {
            let mut r = Response::text(405, "only GET and HEAD");
            r.allow = true;
            return (r, false);
        }
        let all = self.watched.all();
        let answer = match req.path.as_str() {
            "/metrics" => {
                let format = MetricsFormat::from_accept(&req.accept);
                let snaps: Vec<_> = all.iter().map(Metrics::snapshot).collect();
                Response::new(200, format.content_type(), render(&snaps, format))
            }
            "/livez" => match !all.is_empty() && all.iter().any(Metrics::is_live) {
                true => Response::text(200, "ok"),
                false => Response::text(503, "not serving"),
            },
            "/readyz" => match !all.is_empty() && all.iter().all(Metrics::is_ready) {
                true => Response::text(200, "ready"),
                false => Response::text(503, "not ready"),
            },
            json_or_html => {
                let snaps: Vec<_> = all.iter().map(Metrics::snapshot).collect();
                let now = Instant::now();
                let rates = snaps
                    .iter()
                    .enumerate()
                    .map(|(i, l)| self.rates.of(i, now, l))
                    .collect();
                let unix_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let uptime = snaps
                    .iter()
                    .filter_map(|l| l.started)
                    .reduce(f64::min)
                    .map_or(self.born.elapsed().as_secs_f64(), |s| unix_now - s);
                let overview = Overview {
                    pid: std::process::id(),
                    uptime: uptime.max(0.0) as u64,
                    live: snaps.iter().any(|l| l.live),
                    ready: !snaps.is_empty() && snaps.iter().all(|l| l.ready),
                    listeners: &snaps,
                    rates,
                };
                match json_or_html {
                    "/status.json" => {
                        Response::new(200, "application/json", pages::status_json(&overview))
                    }
                    _ => Response::new(
                        200,
                        "text/html; charset=utf-8",
                        pages::status_html(&overview),
                    ),
                }
            }
        };
        (answer, head)
    }
}

/// The admin listener a server's options ask for (`Builder::admin`), watching it.
pub(crate) fn for_server(
    cfg: &crate::config::Config,
    metrics: &Metrics,
) -> io::Result<Option<AdminServer>> {
    let Some(addrs) = &cfg.metrics.admin else {
        return Ok(None);
    };
    let addrs = addrs
        .as_ref()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.clone()))?;
    let admin = AdminServer::bind(&addrs[..])?;
    admin.watch(metrics.clone());
    Ok(Some(admin))
}

/// A server's serve loop runs on socket `fd`: ready (unless shutdown began), and watched
/// by the systemd watchdog if there is one.
pub(crate) fn serving(shared: &Arc<crate::shared::Shared>, fd: std::os::unix::io::RawFd) {
    shared.status.serving();
    watchdog::watch(shared, fd);
}

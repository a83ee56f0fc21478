//! How requests are run: the concurrency choice, as a value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a server runs its requests: one at a time, a thread each, a thread pool, or a process
/// each. A value, not a type: every server takes any flavour.
///
/// | flavour | Python name | use it when |
/// |---|---|---|
/// | [`single`](Flavor::single) | `TCPServer` | requests are short and a second client may wait |
/// | [`threading`](Flavor::threading) | `ThreadingMixIn` | few, long-lived connections; bounded by a limit |
/// | [`pool`](Flavor::pool) (default) | (none) | the general case: warm threads, grows when all are busy |
/// | [`fixed_pool`](Flavor::fixed_pool) | (none) | short requests and a hard cap on threads |
/// | [`forking`](Flavor::forking) | `ForkingMixIn` | isolation: a crash or leak dies with its process (unix) |
///
/// The default is a growing pool: 16 warm workers, growing up to 4096 threads while every
/// worker is busy, extra threads leaving after 10 s idle. For streams its idle workers wait
/// at the server's event set (epoll, kqueue), accept there and serve on the same thread
/// (for a request handler on a TCP socket on Linux, half of them, at most 8, wait in
/// `accept(2)` itself, as a thread per connection does): a
/// connection handler ([`serve`](crate::StreamServer::serve)) holds its worker to the
/// connection's end (the pool grows, within about a millisecond, for the clients waiting to
/// be accepted while every worker holds a connection), a request handler
/// ([`serve_requests`](crate::StreamServer::serve_requests)) only while it has a request.
/// For datagrams, on Linux, idle workers wait in `recvfrom(2)` themselves; elsewhere a
/// receiving thread hands datagrams over a bounded queue (see [`queue`](Flavor::queue)).
/// Short connections cost no thread spawn each.
///
/// ```
/// use socketserver::Flavor;
/// let f: Flavor = "pool".parse().unwrap();
/// assert_eq!(f, Flavor::pool());
/// let small = Flavor::pool().workers(4).limit(64);
/// assert_eq!(small.get_workers(), 4);
/// assert_eq!(small.get_limit(), 64);
/// assert_eq!(Flavor::forking().get_limit(), 40);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Flavor {
    pub(crate) kind: Kind,
    pub(crate) workers: usize,
    pub(crate) limit: usize,
    pub(crate) queue: Option<usize>,
    pub(crate) worker_idle_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Single,
    Threading,
    Pool,
    Forking,
}

/// The largest `limit` a flavour takes (threads or children).
const MAX_LIMIT: usize = 1_000_000;
/// The largest pool queue.
const MAX_QUEUE: usize = 65_536;

/// Default thread limit of the threading and pool flavours.
const DEFAULT_THREADS: usize = 4096;

impl Flavor {
    const fn new(kind: Kind, workers: usize, limit: usize) -> Flavor {
        Flavor {
            kind,
            workers,
            limit,
            queue: None,
            worker_idle_timeout: Duration::from_secs(10),
        }
    }

    /// One request at a time on the thread that called `serve`; the next waits in the
    /// kernel's backlog. Python's plain `TCPServer`/`UDPServer`.
    #[doc(alias = "TCPServer")]
    #[doc(alias = "UDPServer")]
    pub const fn single() -> Flavor {
        Flavor::new(Kind::Single, 0, 1)
    }

    /// A new thread per request, at most 4096 at once (see [`limit`](Flavor::limit)); when
    /// the limit is reached the server stops accepting until a thread ends. Finished threads
    /// are joined, never kept. Python's `ThreadingMixIn`, bounded.
    #[doc(alias = "ThreadingMixIn")]
    #[doc(alias = "ThreadingTCPServer")]
    #[doc(alias = "ThreadingUDPServer")]
    pub const fn threading() -> Flavor {
        Flavor::new(Kind::Threading, 0, DEFAULT_THREADS)
    }

    /// A growing thread pool: 16 warm workers, up to 4096 threads while all are busy.
    pub const fn pool() -> Flavor {
        Flavor::new(Kind::Pool, 16, DEFAULT_THREADS)
    }

    /// A fixed pool of `workers` threads that never grows. Connections beyond `workers` wait
    /// in the kernel backlog: long-lived idle clients starve the rest.
    pub const fn fixed_pool(workers: usize) -> Flavor {
        Flavor::new(Kind::Pool, workers, workers)
    }

    /// A new process per request (`fork(2)`), at most 40 at once (Python's `max_children`),
    /// enforced before forking. Children are reaped as soon as they end (SIGCHLD), and only
    /// the server's own children are ever reaped. Unix only.
    ///
    /// # Fork safety: rules for the handler
    ///
    /// `fork(2)` copies only the thread that calls it. Whatever another thread of the
    /// program held locked at that instant (the allocator, a logger, a `Mutex` of yours)
    /// stays locked for ever in the child, and a handler that touches it hangs. So:
    ///
    /// * fork from a program whose other threads are idle or absent (the forking flavour
    ///   starts no thread; `shutdown_on_signals` starts one that only waits for signals);
    /// * in the handler, use what the child owns: the connection, its own allocations,
    ///   files it opens. Do not rely on state shared with other threads of the parent.
    ///
    /// What the crate does in the child before the handler, with no allocation and no lock:
    /// it restores the default dispositions of `SIGINT`, `SIGTERM`, `SIGHUP` and `SIGCHLD`
    /// (a child can be stopped like any process), and closes the descriptors it owns that
    /// the child must not keep: the listening socket, the other children's connections
    /// (else a child that died without closing would leave its client hanging until its
    /// siblings end) and the server's SIGCHLD pipe. Descriptors the *program* opened (a
    /// second server's listener, files) are inherited as `fork` always does: open them with
    /// `O_CLOEXEC` where an `exec` follows, or close them in `setup`. The child leaves with
    /// `_exit`: its exit status reports the handler's result to the parent, and none of the
    /// parent's destructors run in it.
    #[doc(alias = "ForkingMixIn")]
    #[doc(alias = "ForkingTCPServer")]
    #[doc(alias = "ForkingUDPServer")]
    #[doc(alias = "max_children")]
    pub const fn forking() -> Flavor {
        Flavor::new(Kind::Forking, 0, 40)
    }

    /// Sets the number of warm pool workers (pool only). By default, 16.
    ///
    /// Raises the limit to at least `n`. Ignored by the other flavours.
    pub fn workers(mut self, n: usize) -> Flavor {
        self.workers = n.max(1);
        self.limit = self.limit.max(self.workers);
        self
    }

    /// Sets the most requests handled at once: threads for `threading` and `pool` (by
    /// default 4096), child processes for `forking` (by default 40). When the limit is
    /// reached the server stops accepting and the kernel's backlog holds new clients.
    /// `single` always handles one.
    #[doc(alias = "max_workers")]
    #[doc(alias = "max_threads")]
    pub fn limit(mut self, n: usize) -> Flavor {
        if self.kind != Kind::Single {
            self.limit = n.max(1).max(self.workers);
        }
        self
    }

    /// Puts a queue of `n` accepted connections (or datagrams) between a receiving thread
    /// and the pool's workers: the hand-off pool. At most 65 536 (`bind` refuses more: the
    /// queue's slots are allocated up front). Ignored by the other flavours.
    ///
    /// By default the pool has no queue: its workers accept from the event set (or in
    /// `accept(2)` itself, see [`Flavor::pool`]) and serve what they take, and on Linux
    /// idle workers wait in `recvfrom(2)` themselves, with no hand-off between threads (fewer system calls and context switches per connection;
    /// see BENCHMARKS.md). A queue accepts eagerly instead: clients leave the kernel's
    /// backlog as soon as they arrive and wait in the queue, which adds `n` to what the
    /// backlog holds (plus one: the connection the accepting thread holds while it waits
    /// for room). [`serve_requests`](crate::StreamServer::serve_requests) ignores it (its
    /// connections wait in the event set). Elsewhere than Linux a datagram pool always
    /// hands off, with a queue as large as the warm workers by default: waking workers
    /// blocked in `recvfrom` at shutdown is Linux's behaviour.
    pub fn queue(mut self, n: usize) -> Flavor {
        self.queue = Some(n.max(1));
        self
    }

    /// Sets how long a pool thread above the warm count waits for work before it exits. By
    /// default, 10 s. Ignored by the other flavours.
    ///
    /// Warm workers never time out (they wait for work without a timeout), so a tiny or
    /// zero value costs no CPU while the pool is idle: it only makes extra threads leave as
    /// soon as they find no work.
    pub fn worker_idle_timeout(mut self, d: Duration) -> Flavor {
        self.worker_idle_timeout = d;
        self
    }

    /// The most requests handled at once (see [`limit`](Flavor::limit)).
    pub fn get_limit(&self) -> usize {
        self.limit
    }

    /// The warm pool workers (0 for flavours without a pool), as set by
    /// [`workers`](Flavor::workers).
    pub fn get_workers(&self) -> usize {
        self.workers
    }

    /// The pool's queue capacity (see [`queue`](Flavor::queue)).
    pub fn get_queue(&self) -> usize {
        self.queue_capacity()
    }

    /// How long extra pool threads wait for work (see
    /// [`worker_idle_timeout`](Flavor::worker_idle_timeout)).
    pub fn get_worker_idle_timeout(&self) -> Duration {
        self.worker_idle_timeout
    }

    /// Checks the limits before a server is bound: a clear error instead of a panic or an
    /// allocation of the whole limit.
    pub(crate) fn validate(&self) -> std::io::Result<()> {
        let invalid = |msg: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        if self.limit > MAX_LIMIT {
            return invalid(format!(
                "flavour limit {} is over {MAX_LIMIT} (no system runs that many threads or processes)",
                self.limit
            ));
        }
        if self.kind == Kind::Pool && self.queue_capacity() > MAX_QUEUE {
            return invalid(format!(
                "pool queue of {} slots is over {MAX_QUEUE} (the slots are allocated up front)",
                self.queue_capacity()
            ));
        }
        Ok(())
    }

    /// Renamed [`worker_idle_timeout`](Flavor::worker_idle_timeout) in 0.2.0: it is how
    /// long spare pool threads live, not a client timeout.
    #[deprecated(since = "0.2.0", note = "renamed `worker_idle_timeout`")]
    pub fn idle_timeout(self, d: Duration) -> Flavor {
        self.worker_idle_timeout(d)
    }

    /// Renamed [`get_limit`](Flavor::get_limit) in 0.2.0.
    #[deprecated(since = "0.2.0", note = "renamed `get_limit`")]
    pub fn max(&self) -> usize {
        self.get_limit()
    }

    /// Renamed [`get_workers`](Flavor::get_workers) in 0.2.0.
    #[deprecated(since = "0.2.0", note = "renamed `get_workers`")]
    pub fn worker_count(&self) -> usize {
        self.get_workers()
    }

    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue.unwrap_or(self.workers).max(1)
    }

    /// The flavour's name as [`FromStr`] accepts it: `single`, `threading`, `pool`, `fork`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Single => "single",
            Kind::Threading => "threading",
            Kind::Pool => "pool",
            Kind::Forking => "fork",
        }
    }
}

impl Default for Flavor {
    /// The growing pool, [`Flavor::pool`].
    fn default() -> Flavor {
        Flavor::pool()
    }
}

impl fmt::Debug for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Flavor");
        d.field("kind", &self.name()).field("limit", &self.limit);
        if self.kind == Kind::Pool {
            d.field("workers", &self.workers)
                .field("queue", &self.queue_capacity())
                .field("worker_idle_timeout", &self.worker_idle_timeout);
        }
        d.finish()
    }
}

/// The error of parsing a [`Flavor`] name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFlavorError(String);

impl fmt::Display for ParseFlavorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown mode {:?}: expected single, threading, pool or fork",
            self.0
        )
    }
}

impl std::error::Error for ParseFlavorError {}

impl FromStr for Flavor {
    type Err = ParseFlavorError;

    /// Parses `single`, `threading`, `pool`, `fixed-pool` or `fork` (also `forking`), the
    /// `--mode` values of the examples.
    fn from_str(s: &str) -> Result<Flavor, ParseFlavorError> {
        match s {
            "single" => Ok(Flavor::single()),
            "threading" | "thread" => Ok(Flavor::threading()),
            "pool" => Ok(Flavor::pool()),
            "fixed-pool" => Ok(Flavor::fixed_pool(16)),
            "fork" | "forking" => Ok(Flavor::forking()),
            other => Err(ParseFlavorError(other.to_string())),
        }
    }
}

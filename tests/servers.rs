//! The CPython `test_socketserver` scenarios, for every transport x thread flavour (the
//! forking flavour runs in `tests/forking.rs`, in a helper process), plus the regressions of
//! Python's known faults. Real sockets on loopback; every client read has a timeout.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::{
    Addr, Builder, DatagramRequest, Flavor, HandlerError, ShutdownHandle, StreamRequest, TcpServer,
    UdpServer, UnixDatagramServer, UnixStreamServer,
};
use util::{TempPath, TIMEOUT};

#[derive(Clone, Copy, Debug, PartialEq)]
enum T {
    Tcp,
    Unix,
    Udp,
    UnixDgram,
}

impl T {
    fn is_stream(self) -> bool {
        matches!(self, T::Tcp | T::Unix)
    }
}

/// Where a test server listens.
#[derive(Clone, Debug)]
enum Target {
    Inet(SocketAddr),
    Path(PathBuf),
}

/// Hooks a scenario may set on the builder.
#[derive(Default, Clone)]
struct Opts {
    refuse_all: bool,
    grace: Option<Duration>,
    errors: Option<Arc<Mutex<Vec<String>>>>,
}

fn apply<X>(b: &mut Builder<X>, flavor: &Flavor, opts: &Opts) {
    b.flavor(flavor.clone());
    b.grace_period(opts.grace.unwrap_or(Duration::from_secs(5)));
    if opts.refuse_all {
        b.verify(|_| false);
    }
    if let Some(errors) = opts.errors.clone() {
        b.on_error(move |peer, err| errors.lock().unwrap().push(format!("{peer}: {err}")));
    }
}

/// A server running on a background thread.
struct Running {
    handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
    target: Target,
    tmp: Option<TempPath>,
    calls: Arc<AtomicUsize>,
}

impl Running {
    /// Shuts down and waits (bounded) for `serve` to return, which must be `Ok`.
    #[track_caller]
    fn stop(&mut self) {
        self.handle.shutdown();
        let join = self.join.take().unwrap();
        util::within(TIMEOUT, move || join.join())
            .expect("serve thread panicked")
            .expect("serve returned an error");
        assert_eq!(
            self.handle.stats().threads,
            0,
            "threads left after serve returned"
        );
        assert_eq!(self.handle.stats().active, 0);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// The handlers of the CPython suite: echo one line (stream) or the datagram. A line
/// `fail` makes the handler return an error, `panic` makes it panic.
fn line_handler(
    calls: Arc<AtomicUsize>,
) -> impl FnMut(&mut StreamRequest) -> io::Result<()> + Clone {
    move |req: &mut StreamRequest| {
        calls.fetch_add(1, SeqCst);
        let mut line = String::new();
        req.read_line(&mut line)?;
        match line.as_str() {
            "fail\n" => Err(io::Error::other("asked to fail")),
            "panic\n" => panic!("asked to panic"),
            _ => req.write_all(line.as_bytes()),
        }
    }
}

fn dgram_handler(
    calls: Arc<AtomicUsize>,
) -> impl FnMut(&mut DatagramRequest) -> io::Result<()> + Clone {
    move |req: &mut DatagramRequest| {
        calls.fetch_add(1, SeqCst);
        match req.packet() {
            b"fail\n" => Err(io::Error::other("asked to fail")),
            b"panic\n" => panic!("asked to panic"),
            _ => {
                let data = req.packet().to_vec();
                req.reply(&data)
            }
        }
    }
}

fn start(t: T, flavor: &Flavor, opts: &Opts) -> Running {
    let calls = Arc::new(AtomicUsize::new(0));
    let (h, c) = (line_handler(calls.clone()), dgram_handler(calls.clone()));
    // Builds a server of type $server with the scenario's options, binds it, and serves
    // $handler on a thread; $target says where clients find it.
    macro_rules! spawn {
        ($server:ty, $bind:expr, $s:ident => $target:expr, $handler:expr) => {{
            let mut b = <$server>::builder();
            apply(&mut b, flavor, opts);
            let $s = b.bind($bind).unwrap();
            let target = $target;
            let s = $s;
            let handler = $handler;
            (
                s.shutdown_handle(),
                thread::spawn(move || s.serve(handler)),
                target,
            )
        }};
    }
    let (handle, join, target, tmp) = match t {
        T::Tcp => {
            let (h, j, t) =
                spawn!(TcpServer, "127.0.0.1:0", s => Target::Inet(s.local_addr().unwrap()), h);
            (h, j, t, None)
        }
        T::Udp => {
            let (h, j, t) =
                spawn!(UdpServer, "127.0.0.1:0", s => Target::Inet(s.local_addr().unwrap()), c);
            (h, j, t, None)
        }
        T::Unix | T::UnixDgram => {
            let tmp = TempPath::new("s");
            let at = Target::Path(tmp.path().to_path_buf());
            let (h, j, t) = if t == T::Unix {
                spawn!(UnixStreamServer, tmp.path(), _s => at, h)
            } else {
                spawn!(UnixDatagramServer, tmp.path(), _s => at, c)
            };
            (h, j, t, Some(tmp))
        }
    };
    Running {
        handle,
        join: Some(join),
        target,
        tmp,
        calls,
    }
}

/// A connected stream client with timeouts.
enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Client {
    #[track_caller]
    fn connect(target: &Target) -> Client {
        match target {
            Target::Inet(a) => Client::Tcp(util::tcp_client(*a)),
            Target::Path(p) => {
                let s = UnixStream::connect(p).expect("connect");
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.set_write_timeout(Some(TIMEOUT)).unwrap();
                Client::Unix(s)
            }
        }
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Client::Tcp(s) => s,
            Client::Unix(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<X: Read + Write> ReadWrite for X {}

/// Sends `line` and returns what comes back: up to a newline or EOF for streams, one
/// datagram for datagram transports.
#[track_caller]
fn exchange(r: &Running, t: T, line: &[u8]) -> Vec<u8> {
    match (t, &r.target) {
        (T::Tcp | T::Unix, target) => {
            let mut c = Client::connect(target);
            c.io().write_all(line).unwrap();
            util::read_until(c.io(), |got| got.ends_with(b"\n"))
        }
        (T::Udp, Target::Inet(a)) => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.send_to(line, a).unwrap();
            let mut buf = vec![0; 65536];
            let (n, from) = s.recv_from(&mut buf).expect("reply datagram");
            assert_eq!(from, *a, "the reply comes from the server's socket");
            buf.truncate(n);
            buf
        }
        (T::UnixDgram, Target::Path(p)) => {
            let tmp = r.tmp.as_ref().unwrap();
            static N: AtomicUsize = AtomicUsize::new(0);
            let me = tmp.sibling(&format!("c{}", N.fetch_add(1, SeqCst)));
            let s = UnixDatagram::bind(&me).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.send_to(line, p).unwrap();
            let mut buf = vec![0; 65536];
            let n = s.recv(&mut buf).expect("reply datagram");
            buf.truncate(n);
            buf
        }
        _ => unreachable!(),
    }
}

/// Waits (bounded) until `cond` holds, checking every millisecond.
/// After shutdown, nothing listens any more (and a Unix socket file is gone).
#[track_caller]
fn assert_closed(t: T, target: &Target) {
    match (t, target) {
        (T::Tcp, Target::Inet(a)) => {
            let e = TcpStream::connect_timeout(a, TIMEOUT).expect_err("listener still open");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        }
        (T::Unix | T::UnixDgram, Target::Path(p)) => {
            assert!(!p.exists(), "socket file {} left behind", p.display())
        }
        (T::Udp, Target::Inet(a)) => {
            // The port is free again: it can be bound without SO_REUSEADDR.
            UdpSocket::bind(a).expect("UDP port still bound");
        }
        _ => unreachable!(),
    }
}

// ---- the scenarios ------------------------------------------------------------------------

/// test_TCPServer & co: three sequential clients each get their line back; after shutdown
/// the socket is closed and no worker is left.
fn three_clients_then_closed(t: T, flavor: Flavor) {
    let mut r = start(t, &flavor, &Opts::default());
    for i in 0..3 {
        let line = format!("hello world {i}\n");
        assert_eq!(exchange(&r, t, line.as_bytes()), line.as_bytes());
    }
    r.stop();
    let stats = r.handle.stats();
    assert_eq!(stats.completed, 3);
    assert_eq!(stats.accepted, 3);
    assert_closed(t, &r.target.clone());
}

/// test_shutdown: 20 servers started and stopped back to back; every other one is stopped
/// before `serve` has even started.
fn start_stop_twenty(t: T, flavor: Flavor) {
    let servers: Vec<Running> = (0..20)
        .map(|i| {
            let r = start(t, &flavor, &Opts::default());
            if i % 2 == 0 {
                r.handle.shutdown();
            }
            r
        })
        .collect();
    for mut r in servers {
        r.stop();
    }
}

/// ErrorHandlerTest: an `Err` reaches the hook, the client sees the connection closed, and
/// the server goes on.
fn handler_error_reaches_hook(t: T, flavor: Flavor) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let opts = Opts {
        errors: Some(errors.clone()),
        ..Opts::default()
    };
    let mut r = start(t, &flavor, &opts);
    if t.is_stream() {
        assert_eq!(exchange(&r, t, b"fail\n"), b"", "client must see EOF");
    } else {
        fire_and_forget(&r, t, b"fail\n");
    }
    util::wait_until("the error hook", || !errors.lock().unwrap().is_empty());
    assert!(errors.lock().unwrap()[0].contains("asked to fail"));
    assert_eq!(exchange(&r, t, b"still here\n"), b"still here\n");
    r.stop();
    assert_eq!(r.handle.stats().handler_errors, 1);
}

/// A panicking handler is caught and counted; the server and its workers keep serving.
fn panic_does_not_stop_server(t: T, flavor: Flavor) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let opts = Opts {
        errors: Some(errors.clone()),
        ..Opts::default()
    };
    let mut r = start(t, &flavor, &opts);
    for _ in 0..3 {
        if t.is_stream() {
            assert_eq!(exchange(&r, t, b"panic\n"), b"");
        } else {
            fire_and_forget(&r, t, b"panic\n");
        }
    }
    util::wait_until("three panics", || r.handle.stats().panics == 3);
    assert!(errors.lock().unwrap()[0].contains("panicked: asked to panic"));
    assert_eq!(exchange(&r, t, b"alive\n"), b"alive\n");
    r.stop();
}

/// bpo-26309: a refused peer never reaches the handler and its connection is closed once.
fn refused_peer_never_handled(t: T, flavor: Flavor) {
    let opts = Opts {
        refuse_all: true,
        ..Opts::default()
    };
    let mut r = start(t, &flavor, &opts);
    if t.is_stream() {
        // (A refused client that had sent data may see a reset instead: the server closes
        // without reading, as a firewall would.)
        let mut c = Client::connect(&r.target);
        assert_eq!(
            util::read_to_end(c.io()),
            b"",
            "refused client must see EOF"
        );
    } else {
        fire_and_forget(&r, t, b"hello\n");
    }
    util::wait_until("the rejection", || r.handle.stats().rejected == 1);
    r.stop();
    assert_eq!(r.calls.load(SeqCst), 0, "handler ran for a refused peer");
    assert_eq!(r.handle.stats().completed, 0);
}

fn fire_and_forget(r: &Running, t: T, data: &[u8]) {
    match (t, &r.target) {
        (T::Udp, Target::Inet(a)) => {
            UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .send_to(data, a)
                .unwrap();
        }
        (T::UnixDgram, Target::Path(p)) => {
            UnixDatagram::unbound().unwrap().send_to(data, p).unwrap();
        }
        _ => unreachable!(),
    }
}

macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[test] fn tcp_single() { super::$scenario(T::Tcp, Flavor::single()) }
            #[test] fn tcp_threading() { super::$scenario(T::Tcp, Flavor::threading()) }
            #[test] fn tcp_pool() { super::$scenario(T::Tcp, Flavor::pool().workers(2)) }
            #[test] fn tcp_fixed_pool() { super::$scenario(T::Tcp, Flavor::fixed_pool(2)) }
            #[test] fn tcp_queued_pool() { super::$scenario(T::Tcp, Flavor::pool().workers(2).queue(4)) }
            #[test] fn unix_single() { super::$scenario(T::Unix, Flavor::single()) }
            #[test] fn unix_threading() { super::$scenario(T::Unix, Flavor::threading()) }
            #[test] fn unix_pool() { super::$scenario(T::Unix, Flavor::pool().workers(2)) }
            #[test] fn udp_single() { super::$scenario(T::Udp, Flavor::single()) }
            #[test] fn udp_threading() { super::$scenario(T::Udp, Flavor::threading()) }
            #[test] fn udp_pool() { super::$scenario(T::Udp, Flavor::pool().workers(2)) }
            #[test] fn udp_queued_pool() { super::$scenario(T::Udp, Flavor::pool().workers(2).queue(4)) }
            #[test] fn unix_dgram_single() { super::$scenario(T::UnixDgram, Flavor::single()) }
            #[test] fn unix_dgram_threading() { super::$scenario(T::UnixDgram, Flavor::threading()) }
            #[test] fn unix_dgram_pool() { super::$scenario(T::UnixDgram, Flavor::pool().workers(2)) }
        }
    )*};
}

matrix!(
    three_clients_then_closed,
    start_stop_twenty,
    handler_error_reaches_hook,
    panic_does_not_stop_server,
    refused_peer_never_handled,
);

// ---- stream scenarios ---------------------------------------------------------------------

macro_rules! stream_matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[test] fn tcp_single() { super::$scenario(T::Tcp, Flavor::single()) }
            #[test] fn tcp_threading() { super::$scenario(T::Tcp, Flavor::threading()) }
            #[test] fn tcp_pool() { super::$scenario(T::Tcp, Flavor::pool().workers(2)) }
            #[test] fn tcp_queued_pool() { super::$scenario(T::Tcp, Flavor::pool().workers(2).queue(4)) }
            #[test] fn unix_single() { super::$scenario(T::Unix, Flavor::single()) }
            #[test] fn unix_threading() { super::$scenario(T::Unix, Flavor::threading()) }
            #[test] fn unix_pool() { super::$scenario(T::Unix, Flavor::pool().workers(2)) }
        }
    )*};
}

/// A custom server for stream scenarios that need their own handler.
fn start_stream<H>(t: T, flavor: Flavor, grace: Duration, handler: H) -> Running
where
    H: socketserver::StreamHandler + Clone,
{
    let (handle, join, target, tmp) = match t {
        T::Tcp => {
            let s = TcpServer::builder()
                .flavor(flavor)
                .grace_period(grace)
                .bind("127.0.0.1:0")
                .unwrap();
            let target = Target::Inet(s.local_addr().unwrap());
            (
                s.shutdown_handle(),
                thread::spawn(move || s.serve(handler)),
                target,
                None,
            )
        }
        T::Unix => {
            let tmp = TempPath::new("x");
            let s = UnixStreamServer::builder()
                .flavor(flavor)
                .grace_period(grace)
                .bind(tmp.path())
                .unwrap();
            let target = Target::Path(tmp.path().to_path_buf());
            (
                s.shutdown_handle(),
                thread::spawn(move || s.serve(handler)),
                target,
                Some(tmp),
            )
        }
        _ => unreachable!(),
    };
    Running {
        handle,
        join: Some(join),
        target,
        tmp,
        calls: Arc::default(),
    }
}

/// SocketWriterTest.test_write: an unbuffered first write arrives without a flush, then a
/// 16 MiB + 1 byte write arrives whole.
fn big_write_arrives_whole(t: T, flavor: Flavor) {
    const SIZE: usize = 16 * 1024 * 1024 + 1;
    let mut r = start_stream(
        t,
        flavor,
        Duration::from_secs(5),
        |req: &mut StreamRequest| {
            req.write_all(b"write data\n")?;
            let mut line = String::new();
            req.read_line(&mut line)?;
            assert_eq!(line, "client response\n");
            req.write_all(&vec![0u8; SIZE])
        },
    );
    let mut c = Client::connect(&r.target);
    let first = util::read_until(c.io(), |g| g.ends_with(b"\n"));
    assert_eq!(first, b"write data\n");
    c.io().write_all(b"client response\n").unwrap();
    let rest = util::read_to_end(c.io());
    assert_eq!(rest.len(), SIZE);
    assert!(rest.iter().all(|&b| b == 0));
    r.stop();
}

/// gh-84485 / werkzeug#770: a client idle between requests does not hold shutdown for the
/// grace period; it reads EOF at once.
fn idle_client_gets_eof_at_shutdown(t: T, flavor: Flavor) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut r = start_stream(t, flavor, Duration::from_secs(30), line_echo_loop(calls));
    let mut c = Client::connect(&r.target);
    c.io().write_all(b"one\n").unwrap();
    assert_eq!(util::read_until(c.io(), |g| g.ends_with(b"\n")), b"one\n");
    let started = Instant::now();
    r.stop(); // bounded by TIMEOUT (10 s), far below the 30 s grace period
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(util::read_to_end(c.io()), b"");
}

fn line_echo_loop(
    calls: Arc<AtomicUsize>,
) -> impl FnMut(&mut StreamRequest) -> io::Result<()> + Clone {
    move |req: &mut StreamRequest| {
        calls.fetch_add(1, SeqCst);
        let mut line = String::new();
        while req.read_line(&mut line)? > 0 {
            req.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok(())
    }
}

/// A request in flight when shutdown begins finishes within the grace period: the client
/// gets its whole reply, then EOF.
fn inflight_request_finishes(t: T, flavor: Flavor) {
    let mut r = start_stream(
        t,
        flavor,
        Duration::from_secs(30),
        |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?; // the request...
            req.read_line(&mut line)?; // ...has two lines; shutdown comes between them
            assert!(req.is_shutting_down());
            req.write_all(line.as_bytes())
        },
    );
    let mut c = Client::connect(&r.target);
    c.io().write_all(b"first\n").unwrap();
    util::wait_until("the request to be in flight", || {
        r.handle.stats().active == 1
    });
    r.handle.shutdown();
    c.io().write_all(b"second\n").unwrap();
    assert_eq!(util::read_to_end(c.io()), b"first\nsecond\n");
    r.stop();
}

/// A handler stuck mid-request is cut off when the grace period ends: its blocked read
/// returns and `serve` returns.
fn stuck_handler_cut_after_grace(t: T, flavor: Flavor) {
    let mut r = start_stream(
        t,
        flavor,
        Duration::from_millis(200),
        |req: &mut StreamRequest| {
            let mut line = String::new();
            req.read_line(&mut line)?; // first half of a request
            let mut rest = Vec::new();
            req.read_to_end(&mut rest)?; // the client never sends the rest
            Ok(())
        },
    );
    let mut c = Client::connect(&r.target);
    c.io().write_all(b"half a request\n").unwrap();
    util::wait_until("the request to be in flight", || {
        r.handle.stats().active == 1
    });
    r.stop();
    assert_eq!(util::read_to_end(c.io()), b"");
}

/// gh-83978: shutdown called from inside a handler neither deadlocks nor panics.
fn shutdown_from_handler(t: T, flavor: Flavor) {
    let handle: Arc<Mutex<Option<ShutdownHandle>>> = Arc::default();
    let h2 = handle.clone();
    let mut r = start_stream(
        t,
        flavor,
        Duration::from_secs(5),
        move |req: &mut StreamRequest| {
            h2.lock().unwrap().as_ref().unwrap().shutdown();
            req.write_all(b"bye\n")
        },
    );
    *handle.lock().unwrap() = Some(r.handle.clone());
    let mut c = Client::connect(&r.target);
    assert_eq!(util::read_to_end(c.io()), b"bye\n");
    r.stop();
}

stream_matrix!(
    big_write_arrives_whole,
    idle_client_gets_eof_at_shutdown,
    inflight_request_finishes,
    stuck_handler_cut_after_grace,
    shutdown_from_handler,
);

// ---- single tests -------------------------------------------------------------------------

/// test_close_immediately / test_context_manager: a server dropped without serving closes
/// its socket at once.
#[test]
fn never_served_server_closes_at_once() {
    let s = TcpServer::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    util::within(TIMEOUT, move || drop(s));
    assert_closed(T::Tcp, &Target::Inet(addr));

    let tmp = TempPath::new("n");
    let s = UnixStreamServer::bind(tmp.path()).unwrap();
    assert!(tmp.path().exists());
    drop(s);
    assert!(!tmp.path().exists());
}

/// bpo-37193: 10 000 sequential connections keep the tracked workers bounded by the live
/// connections (finished threads are joined, never kept).
#[test]
fn ten_thousand_connections_keep_tracking_bounded() {
    for flavor in [Flavor::threading(), Flavor::pool().workers(2)] {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut r = start_stream(
            T::Tcp,
            flavor.clone(),
            Duration::from_secs(5),
            line_echo_loop(calls),
        );
        let Target::Inet(addr) = r.target else {
            unreachable!()
        };
        let mut most = 0;
        for i in 0..10_000 {
            let mut c = util::tcp_client(addr);
            c.write_all(b"x\n").unwrap();
            assert_eq!(
                util::read_until(&mut c, |g| g.ends_with(b"\n")),
                b"x\n",
                "connection {i}"
            );
            drop(c);
            most = most.max(r.handle.stats().threads);
        }
        // Pool: its 2 warm workers plus a few transient ones; threading: the few whose
        // end has not been reaped yet. Never thousands.
        assert!(most <= 64, "{flavor:?}: tracked {most} threads");
        r.stop();
        assert_eq!(r.handle.stats().completed, 10_000);
    }
}

/// Threading is bounded: with a limit of 2, a third client waits for a slot.
#[test]
fn threading_limit_holds() {
    let gate = Arc::new(Mutex::new(()));
    let mut r = start_stream(
        T::Tcp,
        Flavor::threading().limit(2),
        Duration::from_secs(5),
        move |req: &mut StreamRequest| {
            req.write_all(b"hi\n")?;
            let mut line = String::new();
            req.read_line(&mut line)?;
            Ok(())
        },
    );
    drop(gate);
    let Target::Inet(addr) = r.target else {
        unreachable!()
    };
    let mut a = util::tcp_client(addr);
    let mut b = util::tcp_client(addr);
    assert_eq!(util::read_until(&mut a, |g| g.ends_with(b"\n")), b"hi\n");
    assert_eq!(util::read_until(&mut b, |g| g.ends_with(b"\n")), b"hi\n");
    let mut c = util::tcp_client(addr);
    util::wait_until("two active", || r.handle.stats().active == 2);
    // The third is connected (kernel backlog) but not accepted while two threads run.
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    let e = c
        .read(&mut buf)
        .expect_err("third client served beyond the limit");
    assert!(matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ));
    assert_eq!(r.handle.stats().accepted, 2);
    a.write_all(b"done\n").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"hi\n");
    drop((b, c));
    r.stop();
}

/// A fixed pool serves at most `workers` long-lived clients; the growing pool grows.
#[test]
fn growing_pool_serves_more_clients_than_warm_workers() {
    let handler = |req: &mut StreamRequest| {
        req.write_all(b"hi\n")?;
        let mut line = String::new();
        req.read_line(&mut line)?;
        Ok(())
    };
    let mut r = start_stream(
        T::Tcp,
        Flavor::pool().workers(2),
        Duration::from_secs(5),
        handler,
    );
    let Target::Inet(addr) = r.target else {
        unreachable!()
    };
    // 64 long-lived clients at once, 2 warm workers: every one is served (a pool that
    // counted a worker as free while it was taking a job left some queued forever).
    let mut clients: Vec<TcpStream> = (0..64).map(|_| util::tcp_client(addr)).collect();
    for c in &mut clients {
        assert_eq!(util::read_until(c, |g| g.ends_with(b"\n")), b"hi\n");
    }
    assert!(r.handle.stats().threads >= 64);
    drop(clients);
    r.stop();

    let mut r = start_stream(
        T::Tcp,
        Flavor::fixed_pool(2).queue(1),
        Duration::from_secs(5),
        handler,
    );
    let Target::Inet(addr) = r.target else {
        unreachable!()
    };
    let mut clients: Vec<TcpStream> = (0..3).map(|_| util::tcp_client(addr)).collect();
    for c in &mut clients[..2] {
        assert_eq!(util::read_until(c, |g| g.ends_with(b"\n")), b"hi\n");
    }
    clients[2]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert!(
        clients[2].read(&mut buf).is_err(),
        "fixed pool served a third client"
    );
    assert_eq!(r.handle.stats().threads, 2);
    clients[0].write_all(b"done\n").unwrap();
    clients[2].set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(
        util::read_until(&mut clients[2], |g| g.ends_with(b"\n")),
        b"hi\n"
    );
    drop(clients);
    r.stop();
}

/// gh-102156: a silent client does not block a single-threaded server forever when a read
/// timeout is set; the next client is served.
#[test]
fn read_timeout_frees_a_single_server() {
    let s = TcpServer::builder()
        .flavor(Flavor::single())
        .read_timeout(Some(Duration::from_millis(100)))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let handle = s.shutdown_handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let join = thread::spawn(move || s.serve(line_handler(calls)));
    let mut silent = util::tcp_client(addr);
    let mut ok = util::tcp_client(addr);
    ok.write_all(b"hi\n").unwrap();
    assert_eq!(util::read_until(&mut ok, |g| g.ends_with(b"\n")), b"hi\n");
    assert_eq!(util::read_to_end(&mut silent), b"");
    assert_eq!(
        handle.stats().handler_errors,
        1,
        "the timeout is reported as an error"
    );
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

/// The idle timeout ends a connection that waits too long for its next request, whether
/// idle reads wait in poll(2) (the default) or in read(2).
fn check_idle_timeout(end_idle_on_shutdown: bool) {
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let e2 = errors.clone();
    let s = TcpServer::builder()
        .end_idle_on_shutdown(end_idle_on_shutdown)
        .idle_timeout(Some(Duration::from_millis(100)))
        .on_error(move |_, err: &HandlerError| e2.lock().unwrap().push(err.to_string()))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let handle = s.shutdown_handle();
    let join = thread::spawn(move || s.serve(line_echo_loop(Arc::default())));
    let mut c = util::tcp_client(addr);
    c.write_all(b"a\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"a\n");
    assert_eq!(util::read_to_end(&mut c), b"");
    // An idle timeout is a normal end: counted on its own, not a handler error.
    util::wait_until("the idle timeout count", || {
        handle.stats().idle_timeouts == 1
    });
    assert_eq!(handle.stats().handler_errors, 0);
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

#[test]
fn idle_timeout_closes_waiting_connections() {
    check_idle_timeout(true);
}

/// gh-64414: IPv6 comes from the address, no subclass needed.
#[test]
fn ipv6_loopback() {
    let s = match TcpServer::bind("[::1]:0") {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => return, // no IPv6 here
        Err(e) => panic!("{e}"),
    };
    let addr = s.local_addr().unwrap();
    assert!(addr.is_ipv6());
    let handle = s.shutdown_handle();
    let join = thread::spawn(move || s.serve(line_echo_loop(Arc::default())));
    let mut c = util::tcp_client(addr);
    c.write_all(b"v6\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"v6\n");
    drop(c);
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

/// Python's 8192-byte UDP buffer silently cut datagrams: 9000 bytes arrive whole, and a
/// datagram over the configured maximum is reported and dropped, never cut.
#[test]
fn datagrams_arrive_whole_or_are_reported() {
    for flavor in [Flavor::single(), Flavor::pool()] {
        let mut r = start(T::Udp, &flavor, &Opts::default());
        let big: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(exchange(&r, T::Udp, &big), big);
        r.stop();
    }
    let s = UdpServer::builder()
        .max_datagram_size(1000)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let handle = s.shutdown_handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let join = thread::spawn(move || s.serve(dgram_handler(c2)));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(&[7u8; 1001], addr).unwrap();
    util::wait_until("the truncation report", || {
        handle.stats().oversize_dropped == 1
    });
    assert_eq!(calls.load(SeqCst), 0);
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.send_to(&[7u8; 1000], addr).unwrap();
    let mut buf = [0u8; 2000];
    assert_eq!(client.recv(&mut buf).unwrap(), 1000);
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

/// A Unix datagram client with no address of its own cannot get a reply: the handler's
/// `reply` fails with a clear error instead of the server dying.
#[test]
fn unix_datagram_unbound_client_gets_clear_error() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut r = start(
        T::UnixDgram,
        &Flavor::single(),
        &Opts {
            errors: Some(errors.clone()),
            ..Opts::default()
        },
    );
    fire_and_forget(&r, T::UnixDgram, b"who am i\n");
    util::wait_until("the error", || !errors.lock().unwrap().is_empty());
    assert!(errors.lock().unwrap()[0].contains("no address to reply to"));
    assert_eq!(exchange(&r, T::UnixDgram, b"bound\n"), b"bound\n");
    r.stop();
}

/// Unix socket files: a stale one is replaced, a live server's is refused, anything that is
/// not a socket is never touched, and the file is removed on close.
#[test]
fn unix_socket_file_lifecycle() {
    let tmp = TempPath::new("l");
    // A stale file: bound, then the socket closed without removing it.
    drop(std::os::unix::net::UnixListener::bind(tmp.path()).unwrap());
    assert!(tmp.path().exists());
    let live = UnixStreamServer::bind(tmp.path()).expect("stale file replaced");
    let e = UnixStreamServer::bind(tmp.path()).expect_err("bound over a live server");
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    drop(live);
    assert!(!tmp.path().exists());

    std::fs::write(tmp.path(), b"precious").unwrap();
    let e = UnixStreamServer::bind(tmp.path()).expect_err("replaced a regular file");
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), b"precious");

    let p2 = tmp.sibling("dg.sock");
    drop(UnixDatagram::bind(&p2).unwrap());
    let d = UnixDatagramServer::bind(&p2).expect("stale datagram file replaced");
    drop(d);
    assert!(!p2.exists());
}

/// The backlog default holds a burst: 200 clients connect at once to a busy single server
/// and none is reset; each is then served.
#[test]
fn burst_of_connections_fits_the_backlog() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut r = start_stream(
        T::Tcp,
        Flavor::single(),
        Duration::from_secs(5),
        line_handler(calls),
    );
    let Target::Inet(addr) = r.target else {
        unreachable!()
    };
    let mut clients: Vec<TcpStream> = (0..200).map(|_| util::tcp_client(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let line = format!("{i}\n");
        c.write_all(line.as_bytes()).unwrap();
        assert_eq!(util::read_until(c, |g| g.ends_with(b"\n")), line.as_bytes());
    }
    r.stop();
}

/// Counters are readable while serving and the peer address is the client's.
#[test]
fn peer_address_and_stats() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let mut r = start_stream(
        T::Tcp,
        Flavor::pool(),
        Duration::from_secs(5),
        move |req: &mut StreamRequest| {
            s2.lock().unwrap().push(req.peer_addr().to_string());
            let local = req.local_addr()?;
            writeln!(req, "{local}")
        },
    );
    let Target::Inet(addr) = r.target else {
        unreachable!()
    };
    let mut c = util::tcp_client(addr);
    let me = c.local_addr().unwrap();
    let reply = util::read_to_end(&mut c);
    assert_eq!(String::from_utf8(reply).unwrap(), format!("{addr}\n"));
    assert_eq!(seen.lock().unwrap()[0], me.to_string());
    // `completed` is counted as the request is reported, `active` drops just after, when
    // the worker is done with it: wait for both.
    util::wait_until("completion", || {
        let s = r.handle.stats();
        s.completed == 1 && s.active == 0
    });
    let stats = r.handle.stats();
    assert_eq!(
        (stats.accepted, stats.active, stats.handler_errors),
        (1, 0, 0)
    );
    r.stop();
    let _ = Addr::Inet(addr);
}

/// A server built from an already bound socket (an inherited descriptor, as under systemd
/// socket activation) serves like a bound one, for every transport.
#[test]
fn servers_from_inherited_sockets() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let s = TcpServer::builder().from_listener(l).unwrap();
    let h = s.shutdown_handle();
    let j = thread::spawn(move || s.serve(line_echo_loop(Arc::default())));
    let mut c = util::tcp_client(addr);
    c.write_all(b"inherited\n").unwrap();
    assert_eq!(
        util::read_until(&mut c, |g| g.ends_with(b"\n")),
        b"inherited\n"
    );
    drop(c);
    h.shutdown();
    util::within(TIMEOUT, move || j.join()).unwrap().unwrap();

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uaddr = u.local_addr().unwrap();
    let s = UdpServer::builder().from_socket(u).unwrap();
    let h = s.shutdown_handle();
    let j = thread::spawn(move || s.serve(dgram_handler(Arc::default())));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.send_to(b"dgram", uaddr).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(client.recv(&mut buf).unwrap(), 5);
    h.shutdown();
    util::within(TIMEOUT, move || j.join()).unwrap().unwrap();

    // A Unix listener we bound ourselves: the server serves it and leaves its file alone.
    let tmp = TempPath::new("i");
    let l = std::os::unix::net::UnixListener::bind(tmp.path()).unwrap();
    let s = UnixStreamServer::builder().from_listener(l).unwrap();
    assert!(s.path().is_none());
    let h = s.shutdown_handle();
    let j = thread::spawn(move || s.serve(line_echo_loop(Arc::default())));
    let mut c = UnixStream::connect(tmp.path()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"unix\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"unix\n");
    drop(c);
    h.shutdown();
    util::within(TIMEOUT, move || j.join()).unwrap().unwrap();
    assert!(
        tmp.path().exists(),
        "a file the server did not create was removed"
    );
}

/// With `end_idle_on_shutdown(false)` idle reads wait in read(2): the idle timeout still
/// applies, and at shutdown idle clients are ended when the grace period is over.
#[test]
fn idle_reads_without_wakeup() {
    check_idle_timeout(false);

    let s = TcpServer::builder()
        .end_idle_on_shutdown(false)
        .grace_period(Duration::from_millis(200))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let handle = s.shutdown_handle();
    let join = thread::spawn(move || s.serve(line_echo_loop(Arc::default())));
    let mut c = util::tcp_client(addr);
    c.write_all(b"b\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"b\n");
    handle.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
    assert_eq!(
        util::read_to_end(&mut c),
        b"",
        "idle client ended at the grace period"
    );
    assert_eq!(handle.stats().active, 0);
}

/// A connection accepted as shutdown begins is still served: its request, already sent, is
/// answered, then the connection ends with EOF (the pool used to drop such a connection at
/// random, unread, which the client saw as a reset).
#[test]
fn request_accepted_as_shutdown_begins_is_answered() {
    for _ in 0..100 {
        let mut r = start_stream(
            T::Tcp,
            Flavor::pool().workers(2),
            Duration::from_secs(5),
            line_echo_loop(Arc::default()),
        );
        let Target::Inet(addr) = r.target else {
            unreachable!()
        };
        let mut c = util::tcp_client(addr);
        c.write_all(b"last words\n").unwrap();
        // Shut down the moment the connection counts as active (spinning, not sleeping, to
        // land inside the accept loop's hand-off), bounded by a deadline.
        let deadline = Instant::now() + TIMEOUT;
        while r.handle.stats().active == 0 {
            assert!(Instant::now() < deadline, "connection never accepted");
            std::hint::spin_loop();
        }
        r.stop();
        assert_eq!(util::read_to_end(&mut c), b"last words\n");
    }
}

/// The UDP pool serves at its socket one worker at a time (the leader); a handler that
/// blocks hands the socket over to another worker, started if none is free, so the
/// datagrams behind it are served meanwhile. Each slow handler waits until the test has
/// the fast reply: without a hand-over the fast datagram would wait behind them and the
/// test would time out. With one warm worker (the pool must grow) and with two; three slow
/// handlers in a row (each holds a worker).
#[test]
fn udp_pool_hands_the_socket_over_past_a_blocked_handler() {
    for warm in [1, 2] {
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let s = UdpServer::builder()
            .flavor(Flavor::pool().workers(warm).limit(8))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = s.local_addr().unwrap();
        let handle = s.shutdown_handle();
        let join = thread::spawn(move || {
            s.serve(move |req: &mut DatagramRequest| {
                if req.packet() == b"slow" {
                    // Held until the test says so (or TIMEOUT, so a failure cannot hang).
                    let _ = release_rx.recv_timeout(TIMEOUT);
                }
                let reply = req.packet().to_vec();
                req.reply(&reply)
            })
        });
        let slow = UdpSocket::bind("127.0.0.1:0").unwrap();
        slow.set_read_timeout(Some(TIMEOUT)).unwrap();
        for _ in 0..3 {
            slow.send_to(b"slow", addr).unwrap();
        }
        let fast = UdpSocket::bind("127.0.0.1:0").unwrap();
        fast.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        for i in 0..20 {
            fast.send_to(format!("fast {i}").as_bytes(), addr).unwrap();
            let n = fast
                .recv(&mut buf)
                .expect("a fast datagram waited behind slow handlers");
            assert_eq!(&buf[..n], format!("fast {i}").as_bytes(), "warm {warm}");
        }
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..3 {
            let n = slow.recv(&mut buf).expect("the slow replies");
            assert_eq!(&buf[..n], b"slow");
        }
        let st = handle.stats();
        assert!(st.threads >= 4, "three held handlers and a leader: {st:?}");
        handle.shutdown();
        util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
    }
}

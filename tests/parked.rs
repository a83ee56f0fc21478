//! Request-at-a-time handlers (`serve_requests`, issue 12): connections waiting for their
//! next request are parked in the server's event set and hold no thread. Real sockets on
//! loopback; every client read has a timeout.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::{
    Flavor, Next, Received, RequestHandler, ShutdownHandle, StreamRequest, TcpServer,
};
use util::{Running, TIMEOUT};

/// Echoes what one read returns; closes at EOF; `panic` panics, `fail` errs.
fn echo_request(req: &mut StreamRequest) -> io::Result<Next> {
    let mut buf = [0u8; 4096];
    let n = req.read(&mut buf)?;
    match &buf[..n] {
        [] => Ok(Next::Close),
        b"panic\n" => panic!("asked to panic"),
        b"fail\n" => Err(io::Error::other("asked to fail")),
        b"bye\n" => {
            req.write_all(b"bye\n")?;
            Ok(Next::Close)
        }
        data => {
            req.write_all(data)?;
            Ok(Next::Continue)
        }
    }
}

/// Echoes a line; a line `hold` makes the request go on until the client sends its next
/// line (a long upload, a client that trickles), which is echoed.
fn hold_or_echo(req: &mut StreamRequest) -> io::Result<Next> {
    let mut line = String::new();
    if req.read_line(&mut line)? == 0 {
        return Ok(Next::Close);
    }
    if line == "hold\n" {
        line.clear();
        req.read_line(&mut line)?;
    }
    req.write_all(line.as_bytes())?;
    Ok(Next::Continue)
}

/// `hold_or_echo` on a pool of `workers` warm workers whose extra threads leave after
/// 200 ms idle: its address, shutdown handle and serving thread.
fn serve_hold_or_echo(workers: usize) -> (SocketAddr, ShutdownHandle, JoinHandle<io::Result<()>>) {
    let s = TcpServer::builder()
        .flavor(
            Flavor::pool()
                .workers(workers)
                .worker_idle_timeout(Duration::from_millis(200)),
        )
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let handle = s.shutdown_handle();
    (
        addr,
        handle,
        thread::spawn(move || s.serve_requests(hold_or_echo)),
    )
}

fn exchange(c: &mut TcpStream, data: &[u8]) {
    c.write_all(data).unwrap();
    assert_eq!(util::read_until(c, |g| g.len() >= data.len()), data);
}

/// Many silent connections hold no thread: with 2 workers and 1 000 idle clients, an
/// active client is served, and the server runs 2 worker threads (the limit is 2 too, so
/// that two requests overlapping cannot grow it: growth is tested below).
#[test]
fn idle_connections_hold_no_thread() {
    let _serial = util::serial();
    let mut srv = Running::serve_requests(
        TcpServer::builder().flavor(Flavor::pool().workers(2).limit(2)),
        echo_request,
    );
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut c = util::tcp_client(srv.addr);
        if i % 100 == 0 {
            // Some of them served once, then idle.
            exchange(&mut c, b"once");
        }
        idle.push(c);
    }
    util::wait_until("every connection accepted", || {
        srv.handle.stats().accepted == 1000
    });
    let mut active = util::tcp_client(srv.addr);
    for i in 0..100 {
        exchange(&mut active, format!("request {i}").as_bytes());
    }
    assert_eq!(srv.handle.stats().threads, 2, "workers only");
    // Shutdown closes the parked connections at once.
    srv.handle.shutdown();
    for c in idle.iter_mut().step_by(97) {
        assert_eq!(util::read_to_end(c), b"");
    }
    srv.stop();
}

/// A request that holds its worker (a long upload, a client that trickles) does not stop
/// the others: the pool grows past its one warm worker while the request lasts, and the
/// extra worker leaves after its idle timeout.
#[test]
fn a_long_request_grows_the_pool_and_it_shrinks_back() {
    let (addr, handle, join) = serve_hold_or_echo(1);
    let mut holder = util::tcp_client(addr);
    holder.write_all(b"hold\n").unwrap();
    util::wait_until("the held request began", || handle.stats().active == 1);
    // The one warm worker is inside the held request: another serves this client.
    let mut other = util::tcp_client(addr);
    exchange(&mut other, b"still served\n");
    assert!(handle.stats().threads >= 2, "{:?}", handle.stats());
    exchange(&mut holder, b"released\n");
    exchange(&mut other, b"again\n");
    util::wait_until("the extra workers left", || handle.stats().threads == 1);
    // The one left still serves both.
    exchange(&mut holder, b"after\n");
    exchange(&mut other, b"after\n");
    handle.shutdown();
    util::within(TIMEOUT, move || join.join())
        .expect("serve panicked")
        .expect("serve failed");
}

/// A pool that can grow accepts in threads blocked in `accept` (half its warm workers,
/// here one), each serving what it accepted: a long first request holds one. Requests that
/// hold every accepting thread do not stop new clients (one more accepting thread starts
/// while clients wait with none free), and the extra ones leave once they are not needed.
#[test]
fn long_requests_on_every_accepting_thread_do_not_stop_new_clients() {
    let (addr, handle, join) = serve_hold_or_echo(2);
    let mut holders = Vec::new();
    for held in 1..=3 {
        let mut holder = util::tcp_client(addr);
        holder.write_all(b"hold\n").unwrap();
        util::wait_until("the held request began", || handle.stats().active == held);
        holders.push(holder);
    }
    // Three requests hold more threads than the pool's two warm ones: others serve this.
    let mut other = util::tcp_client(addr);
    exchange(&mut other, b"still served\n");
    assert!(handle.stats().threads >= 4, "{:?}", handle.stats());
    for holder in &mut holders {
        exchange(holder, b"released\n");
    }
    exchange(&mut other, b"again\n");
    util::wait_until("the extra threads left", || handle.stats().threads == 2);
    // The two left serve every client, new ones too.
    for holder in &mut holders {
        exchange(holder, b"after\n");
    }
    exchange(&mut util::tcp_client(addr), b"new\n");
    handle.shutdown();
    util::within(TIMEOUT, move || join.join())
        .expect("serve panicked")
        .expect("serve failed");
}

/// On a socket shared with another process (armed for SIGHUP restarts, as the examples
/// are; a clone of the socket stands for the restart's new process) the pool still
/// accepts in threads blocked in `accept`, and shutdown ends them without shutting the
/// socket down: the server connects to itself once per thread blocked in `accept` and
/// closes those connections unserved. After `serve` returns, a new client reaches the
/// clone, bytes included: no thread of the stopped server is left in `accept` to take it
/// (the kernel hands a connection to the thread that has waited longest).
#[test]
fn a_shared_socket_is_not_shut_down_and_its_accepting_threads_end() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let other = listener.try_clone().unwrap();
    let server = TcpServer::builder()
        .flavor(Flavor::pool().workers(8))
        .from_listener(listener)
        .unwrap();
    server.restart_on_sighup().unwrap();
    let handle = server.shutdown_handle();
    let join = thread::spawn(move || server.serve_requests(hold_or_echo));
    let mut clients: Vec<TcpStream> = (0..4).map(|_| util::tcp_client(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        exchange(c, format!("hello {i}\n").as_bytes());
    }
    drop(clients);
    // Each connection's EOF is a request too: then every thread is back in `accept`.
    util::wait_until("the clients' EOFs were served", || {
        handle.stats().completed >= 8
    });
    handle.shutdown();
    util::within(TIMEOUT, move || join.join())
        .expect("serve panicked")
        .expect("serve failed");

    // Clients the socket's other holder must get, each with its bytes: a thread of the
    // stopped server left in `accept` would be handed the first (it waited longest).
    let mut clients: Vec<TcpStream> = (0..8).map(|_| util::tcp_client(addr)).collect();
    let mut mine = std::collections::HashMap::new();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("after {i}\n").as_bytes()).unwrap();
        mine.insert(c.local_addr().unwrap(), i);
    }
    // A blocking accept, bounded by the listener's receive timeout (which `accept` honours),
    // queued behind any thread of the stopped server still in `accept`.
    let deadline = Instant::now() + TIMEOUT;
    let mut skipped = 0;
    while !mine.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        socket2::SockRef::from(&other)
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match other.accept() {
            Ok((mut s, peer)) => match mine.remove(&peer) {
                Some(i) => {
                    s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    let want = format!("after {i}\n");
                    let mut got = vec![0u8; want.len()];
                    s.read_exact(&mut got).unwrap();
                    assert_eq!(got, want.as_bytes());
                }
                // A connection the server made to itself, left in the queue by a thread
                // that saw the shutdown before its `accept`.
                None => skipped += 1,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                panic!(
                    "{} of 8 clients never reached the socket's other holder: a thread \
                     of the stopped server took them",
                    mine.len()
                );
            }
            Err(e) => panic!("accept on the shared socket after shutdown: {e}"),
        }
    }
    assert!(
        skipped <= 8,
        "{skipped} of the server's own connections were left queued"
    );
}

/// Busy clients keep a worker each while they are quick (it waits on their connection for
/// the next request, another watches the event set): the pool grows for that up to the
/// flavour's limit (not its warm count: a busy client must not park every round), never
/// past it, and every request is answered.
#[test]
fn busy_clients_grow_the_pool_up_to_its_limit() {
    let mut srv = Running::serve_requests(
        TcpServer::builder().flavor(Flavor::pool().workers(2).limit(5)),
        echo_request,
    );
    let addr = srv.addr;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let mut c = util::tcp_client(addr);
                for j in 0..200 {
                    exchange(&mut c, format!("client {i} request {j}").as_bytes());
                }
            })
        })
        .collect();
    // Sampled until every client is done (each exchange has the read timeout): bounded.
    let mut most = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        most = most.max(srv.handle.stats().threads);
        thread::sleep(Duration::from_millis(1));
    }
    for c in clients {
        c.join().expect("a client failed");
    }
    most = most.max(srv.handle.stats().threads);
    assert!(most <= 5, "{most} workers for a limit of 5");
    assert!(
        most > 2,
        "busy clients were held to the warm workers ({most})"
    );
    assert_eq!(srv.handle.stats().handler_errors, 0);
    srv.stop();
}

/// Pipelined requests are served from the buffer without waiting for the network, and a
/// request split across segments is read whole.
#[test]
fn pipelined_and_split_requests() {
    let received = Arc::new(AtomicUsize::new(0));
    let s = TcpServer::builder()
        .flavor(Flavor::pool().workers(1))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let h = s.shutdown_handle();
    let r2 = received.clone();
    let join = thread::spawn(move || {
        s.serve_requests(move |req: &mut StreamRequest| {
            let mut line = Vec::new();
            if io::BufRead::read_until(req, b'\n', &mut line)? == 0 {
                return Ok(Next::Close);
            }
            r2.fetch_add(1, SeqCst);
            req.write_all(&line)?;
            Ok(Next::Continue)
        })
    });
    let mut c = util::tcp_client(addr);
    c.write_all(b"one\ntwo\nthree\nfo").unwrap();
    assert_eq!(
        util::read_until(&mut c, |g| g.len() >= 14),
        b"one\ntwo\nthree\n"
    );
    c.write_all(b"ur\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.len() >= 5), b"four\n");
    assert_eq!(received.load(SeqCst), 4);
    drop(c);
    h.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

/// A line-echo `serve_requests` server whose handler, given the line "block", says so on
/// `entered` and waits for `go` (at most `TIMEOUT`) before it answers.
struct Gated {
    addr: SocketAddr,
    handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
    entered: crossbeam_channel::Receiver<()>,
    go: crossbeam_channel::Sender<()>,
}

impl Gated {
    fn start(flavor: Flavor) -> Gated {
        let (entered_tx, entered) = crossbeam_channel::bounded::<()>(1);
        let (go, go_rx) = crossbeam_channel::bounded::<()>(1);
        let s = TcpServer::builder()
            .flavor(flavor)
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = s.local_addr().unwrap();
        let handle = s.shutdown_handle();
        let join = Some(thread::spawn(move || {
            s.serve_requests(move |req: &mut StreamRequest| {
                let mut line = Vec::new();
                if io::BufRead::read_until(req, b'\n', &mut line)? == 0 {
                    return Ok(Next::Close);
                }
                if line == b"block\n" {
                    let _ = entered_tx.send(());
                    let _ = go_rx.recv_timeout(TIMEOUT);
                }
                req.write_all(&line)?;
                Ok(Next::Continue)
            })
        }));
        Gated {
            addr,
            handle,
            join,
            entered,
            go,
        }
    }

    /// Waits until the handler is inside a "block" request.
    fn wait_entered(&self) {
        self.entered
            .recv_timeout(TIMEOUT)
            .expect("the handler never ran");
    }

    fn stop(&mut self) {
        self.handle.shutdown();
        let join = self.join.take().unwrap();
        util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
    }
}

/// A request that arrives while the one before is being served is not lost: the
/// connection's registration stays armed while it is served (parking costs no system
/// call), so the event finds it busy, and the worker that parks it reads again instead.
/// The client is slow enough (20 ms before its first request) that its worker does not
/// wait on it after the reply: the connection goes straight back to the event set.
#[test]
fn a_request_that_arrives_while_one_is_served_is_not_lost() {
    let mut srv = Gated::start(Flavor::pool().workers(2));
    for round in 0..3 {
        let mut c = util::tcp_client(srv.addr);
        // Parked, and not a quick client, before its first request.
        thread::sleep(Duration::from_millis(20));
        c.write_all(b"block\n").unwrap();
        srv.wait_entered();
        // On loopback the bytes are in the server's socket when the write returns.
        c.write_all(b"second\n").unwrap();
        srv.go.send(()).unwrap();
        assert_eq!(
            util::read_until(&mut c, |g| g.len() >= 13),
            b"block\nsecond\n",
            "round {round}"
        );
    }
    srv.stop();
}

/// Input that arrived before the event that woke the connection raises no new event (the
/// registration is edge-triggered): more pipelined requests than one read buffer holds are
/// still all read. The pool's one worker is held in another client's request while the
/// input arrives whole, so that a single event announces it all.
#[test]
fn input_past_one_read_buffer_is_read() {
    let mut srv = Gated::start(Flavor::pool().workers(1).limit(1));
    let mut b = util::tcp_client(srv.addr);
    exchange(&mut b, b"hello\n"); // accepted and parked
    let mut a = util::tcp_client(srv.addr);
    a.write_all(b"block\n").unwrap();
    srv.wait_entered();
    // 48 lines of 1 KiB (six 8 KiB read buffers), all in b's socket before it is served.
    let line: Vec<u8> = [vec![b'x'; 1023], vec![b'\n']].concat();
    let all: Vec<u8> = line.repeat(48);
    b.write_all(&all).unwrap();
    srv.go.send(()).unwrap();
    assert_eq!(util::read_until(&mut a, |g| g.len() >= 6), b"block\n");
    let mut got = vec![0u8; all.len()];
    b.read_exact(&mut got)
        .expect("b's requests were not all answered");
    assert!(got == all, "the echo differs");
    drop((a, b));
    srv.stop();
}

/// `recv` lends a large request in the connection's read buffer and copies a small one:
/// the bytes come back exact and in order, one request at a time or pipelined, and a
/// `Received` a handler keeps across requests is not overwritten by the reads after it.
#[test]
fn recv_returns_what_arrived_and_a_kept_value_stays_intact() {
    /// Echoes what `recv` returns, keeping the last value (and a copy of it) until the next
    /// request, when it checks that value against the copy.
    #[derive(Clone, Default)]
    struct Keeper {
        kept: Option<(Received, Vec<u8>)>,
    }
    impl RequestHandler for Keeper {
        fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
            let data = req.recv()?;
            if let Some((kept, copy)) = &self.kept {
                if kept[..] != copy[..] {
                    req.write_all(b"CORRUPT")?;
                    return Ok(Next::Close);
                }
            }
            if data.is_empty() {
                return Ok(Next::Close);
            }
            req.write_all(&data)?;
            let copy = data.to_vec();
            self.kept = Some((data, copy));
            Ok(Next::Continue)
        }
    }
    // Bytes that differ from request to request and along each one.
    let request = |n: usize, seed: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + seed * 13) % 251) as u8).collect()
    };
    let sizes = [20_000, 5, 30_000, 100, 64_000, 3, 8192, 16_384];
    let mut srv = Running::serve_requests(
        TcpServer::builder().flavor(Flavor::pool().workers(2)),
        Keeper::default(),
    );
    let mut c = util::tcp_client(srv.addr);
    for (seed, &n) in sizes.iter().enumerate() {
        let data = request(n, seed);
        c.write_all(&data).unwrap();
        let back = util::read_until(&mut c, |g| g.len() >= n || g.starts_with(b"CORRUPT"));
        assert!(
            back == data,
            "request {seed} ({n} bytes) came back different"
        );
    }
    // All at once: the server's reads cut them where they fall.
    let all: Vec<u8> = sizes
        .iter()
        .enumerate()
        .flat_map(|(seed, &n)| request(n, seed + 100))
        .collect();
    let writer = {
        let mut w = c.try_clone().unwrap();
        let all = all.clone();
        thread::spawn(move || w.write_all(&all))
    };
    let back = util::read_until(&mut c, |g| {
        g.len() >= all.len() || g.starts_with(b"CORRUPT")
    });
    writer.join().unwrap().unwrap();
    assert!(back == all, "the pipelined requests came back different");
    drop(c);
    srv.stop();
}

/// Errors and panics close that connection only, counted; the workers keep serving.
#[test]
fn faults_close_one_connection() {
    let mut srv = Running::serve_requests(
        TcpServer::builder().flavor(Flavor::pool().workers(1)),
        echo_request,
    );
    for bad in [&b"panic\n"[..], b"fail\n", b"panic\n"] {
        let mut c = util::tcp_client(srv.addr);
        exchange(&mut c, b"first");
        c.write_all(bad).unwrap();
        assert_eq!(util::read_to_end(&mut c), b"");
    }
    let mut c = util::tcp_client(srv.addr);
    exchange(&mut c, b"still served");
    c.write_all(b"bye\n").unwrap();
    assert_eq!(util::read_to_end(&mut c), b"bye\n");
    let s = srv.handle.stats();
    assert_eq!((s.panics, s.handler_errors), (2, 1));
    srv.stop();
}

/// The idle timeout closes parked connections (counted apart), not busy ones; a client
/// that was quick (a worker waited on its connection for the next request) and then goes
/// quiet is parked like any other, and closed too.
#[test]
fn idle_timeout_closes_parked_connections() {
    let mut srv = Running::serve_requests(
        TcpServer::builder()
            .flavor(Flavor::pool().workers(2))
            .idle_timeout(Some(Duration::from_millis(100))),
        echo_request,
    );
    let mut quiet = util::tcp_client(srv.addr);
    for i in 0..50 {
        exchange(&mut quiet, format!("request {i}").as_bytes());
    }
    assert_eq!(util::read_to_end(&mut quiet), b"");
    util::wait_until("the idle timeout count", || {
        srv.handle.stats().idle_timeouts >= 1
    });
    assert_eq!(srv.handle.stats().handler_errors, 0);
    srv.stop();
}

/// `max_connections`: at the limit the server stops accepting; a closed connection makes
/// room and the waiting client is served.
#[test]
fn max_connections_bounds_open_connections() {
    let mut srv = Running::serve_requests(
        TcpServer::builder()
            .flavor(Flavor::pool().workers(2))
            .max_connections(3),
        echo_request,
    );
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = util::tcp_client(srv.addr);
            exchange(&mut c, b"x");
            c
        })
        .collect();
    let mut fourth = util::tcp_client(srv.addr);
    fourth.write_all(b"waiting").unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(fourth.read(&mut buf).is_err(), "served beyond the limit");
    assert_eq!(srv.handle.stats().accepted, 3);
    drop(open.remove(0));
    fourth.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(util::read_until(&mut fourth, |g| g.len() >= 7), b"waiting");
    srv.stop();
}

/// The other flavours run a connection's requests in a loop on its thread.
#[test]
fn other_flavours_loop_on_a_thread() {
    for flavor in [Flavor::single(), Flavor::threading()] {
        let mut srv =
            Running::serve_requests(TcpServer::builder().flavor(flavor.clone()), echo_request);
        let mut c = util::tcp_client(srv.addr);
        exchange(&mut c, b"a");
        exchange(&mut c, b"b");
        c.write_all(b"bye\n").unwrap();
        assert_eq!(util::read_to_end(&mut c), b"bye\n", "{flavor:?}");
        srv.stop();
    }
}

/// Threads of process `pid`, from /proc.
fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The attack of issue 12 on the default echo example: 4 300 clients connect and stay
/// silent (they used to take every thread of the pool up to its 4 096 limit); a new client
/// is still answered at once, and the server runs its 8 workers plus the serve thread and
/// the one signal thread (SIGINT, SIGTERM and the SIGHUP restart), whatever the number of
/// connections.
#[test]
fn silent_clients_do_not_starve_the_default_echo() {
    let _serial = util::serial();
    util::build_examples();
    let srv = util::ExampleServer::start("echo", &["--addr", "127.0.0.1:0"]);
    let addr = srv.socket_addr();
    let mut silent = Vec::with_capacity(4300);
    let connecting = Instant::now();
    for _ in 0..4300 {
        // A connect that finds the backlog full waits for SYN retransmissions (1, 2, 4, 8 s).
        silent.push(TcpStream::connect_timeout(&addr, 3 * TIMEOUT).expect("connect"));
    }
    eprintln!(
        "4300 silent clients connected in {:?}",
        connecting.elapsed()
    );
    let started = Instant::now();
    let mut c = util::tcp_client(addr);
    exchange(&mut c, b"am I served?");
    let took = started.elapsed();
    eprintln!("a new client beside 4300 silent ones answered in {took:?}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert!(
        threads_of(srv.pid()) <= 8 + 2,
        "{} threads",
        threads_of(srv.pid())
    );
    drop(silent);
}

/// `framing::per_frame`: one frame per request, a frame split across segments read whole,
/// two frames in one segment both answered, an oversize frame closing that connection only.
#[test]
fn frames_as_requests() {
    use socketserver::framing::{self, Codec};
    let codec = Codec::new().max_frame_len(1024);
    let s = TcpServer::builder()
        .flavor(Flavor::pool().workers(2))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let h = s.shutdown_handle();
    let join = thread::spawn(move || {
        s.serve_requests(framing::per_frame(
            codec,
            move |frame: Vec<u8>, req: &mut StreamRequest| codec.write_frame(req, &frame),
        ))
    });
    let frame = |p: &[u8]| codec.encode(p).unwrap();
    let mut c = util::tcp_client(addr);
    let mut two = frame(b"one");
    two.extend(frame(b"two"));
    c.write_all(&two).unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.len() >= two.len()), two);
    let split = frame(b"split across writes");
    c.write_all(&split[..3]).unwrap();
    thread::sleep(Duration::from_millis(50));
    c.write_all(&split[3..]).unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.len() >= split.len()), split);
    let mut big = util::tcp_client(addr);
    big.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    assert_eq!(util::read_to_end(&mut big), b"");
    c.write_all(&frame(b"still")).unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.len() >= 9), frame(b"still"));
    drop(c);
    h.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

/// `framing::per_message`: one "JSON header + body" message per request; the body the
/// handler leaves unread is dropped so the next message is read where it starts; two
/// messages in one write are both answered; a malformed header closes that connection only.
#[cfg(feature = "json")]
#[test]
fn messages_as_requests() {
    use serde_json::{json, Value};
    use socketserver::framing::{self, Body, MessageCodec};
    let codec = MessageCodec::new();
    let s = TcpServer::builder()
        .flavor(Flavor::pool().workers(2))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = s.local_addr().unwrap();
    let h = s.shutdown_handle();
    let join = thread::spawn(move || {
        s.serve_requests(framing::per_message(
            codec,
            move |header: Value, body: &mut Body<'_, StreamRequest>| {
                // "peek" reads 2 bytes of its body and leaves the rest; others read it all.
                let mut got = Vec::new();
                if header["cmd"] == "peek" {
                    let mut two = [0u8; 2];
                    body.read_exact(&mut two)?;
                    got.extend_from_slice(&two);
                } else {
                    body.copy_to(&mut got)?;
                }
                let reply = json!({"cmd": header["cmd"], "got": String::from_utf8_lossy(&got)});
                codec.write_json_header(body.get_mut(), &reply)
            },
        ))
    });
    let message = |cmd: &str, body: &[u8]| {
        let mut wire = Vec::new();
        codec
            .write_message(
                &mut wire,
                &json!({"cmd": cmd}),
                body.len() as u64,
                &mut &body[..],
            )
            .unwrap();
        wire
    };
    let answer = |c: &mut TcpStream| -> Value {
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        let mut json = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut json).unwrap();
        serde_json::from_slice(&json).unwrap()
    };
    let mut c = util::tcp_client(addr);
    let mut two = message("peek", b"abcdef");
    two.extend(message("all", b"xyz"));
    c.write_all(&two).unwrap();
    assert_eq!(answer(&mut c), json!({"cmd": "peek", "got": "ab"}));
    assert_eq!(answer(&mut c), json!({"cmd": "all", "got": "xyz"}));
    let mut bad = util::tcp_client(addr);
    bad.write_all(&[0, 0, 0, 3, b'n', b'o', b'!']).unwrap();
    assert_eq!(util::read_to_end(&mut bad), b"");
    c.write_all(&message("empty", b"")).unwrap();
    assert_eq!(answer(&mut c), json!({"cmd": "empty", "got": ""}));
    drop(c);
    h.shutdown();
    util::within(TIMEOUT, move || join.join()).unwrap().unwrap();
}

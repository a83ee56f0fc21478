//! The servers under test, each in its own process so that its CPU time and memory can be
//! read from `/proc`.
//!
//! The bench binary re-executes itself as `__server <tcp|udp> <kind>`: the child binds
//! `127.0.0.1:0`, prints `listening on ADDR` (the examples' contract) and echoes until
//! SIGTERM. Kinds are the crate's flavours and the anchors written without the crate: a
//! plain `std::net` thread-per-connection server (one blocking loop for UDP), a std pool of
//! 16 threads that each accept on the shared listener, a tokio server, and (UDP only)
//! Python's `ThreadingUDPServer`, run by `python3`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{DatagramRequest, Flavor, Next, StreamRequest, TcpServer, UdpServer};

use crate::procfs::{self, ProcStat};

/// The first argument that makes the bench binary a server.
pub const SERVER_ARG: &str = "__server";

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// The grace period of the crate's servers: clients are gone when they are stopped.
const GRACE: Duration = Duration::from_millis(500);
/// Threads of the std pool anchor, as many as the crate pool's warm workers.
const STD_POOL_THREADS: usize = 16;
/// The anchors' `listen(2)` backlog: the crate's default, so that all hold the same number
/// of waiting clients (std's `TcpListener::bind` and tokio's ask for 128: a burst of 15 000
/// connects overflows that and waits for SYN retransmissions, which measures the backlog,
/// not the server).
const ANCHOR_BACKLOG: i32 = 1024;
/// `Builder::max_connections` of `parked-max`: above any row's connections, so that the
/// descriptor limit bounds them instead (the default, 65 536, is below 100 000).
const RAISED_MAX_CONNECTIONS: usize = 1 << 20;

/// Stream or datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// One server implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `std::net` without the crate: a thread per connection (TCP), one blocking loop (UDP).
    Std,
    /// `std::net` without the crate: 16 threads, each blocking in `accept` on the shared
    /// listener and serving the connection it takes to its end (TCP only).
    StdPool,
    /// A tokio echo server: multi-threaded runtime, a task per connection (TCP only).
    Tokio,
    Single,
    Threading,
    /// `Flavor::fixed_pool(16)`.
    FixedPool,
    /// `Flavor::pool()`, the crate's default: 16 warm workers growing to 4096.
    Pool,
    /// `Flavor::pool().queue(16)`: the hand-off pool (a receiving thread queues accepted
    /// connections or datagrams for the workers), the default before issue 7.
    PoolQueued,
    /// The default pool with `end_idle_on_shutdown(false)`: idle reads wait in read(2),
    /// not poll(2) (what the default's prompt, race-free idle shutdown costs).
    PoolRead,
    /// The default pool serving one request at a time (`serve_requests`): connections
    /// waiting for their next request are parked in the event set and hold no thread.
    Parked,
    /// `Parked` with `Builder::max_connections` raised to `RAISED_MAX_CONNECTIONS`: the
    /// same engine where more than the default 65 536 connections are open.
    ParkedMax,
    /// The echo example as shipped (issue 19's subject): `examples/echo.rs`'s handler on
    /// the server its shared options build with no flag but `--addr 127.0.0.1:0`
    /// (`examples/common`: the pool with 8 warm workers, its request, write and idle
    /// timeouts and keepalive, armed for SIGHUP restarts), run in the bench binary.
    Example,
    Forking,
    /// Python's `socketserver.ThreadingUDPServer` (UDP only).
    Python,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 14] = [
        Kind::Std,
        Kind::StdPool,
        Kind::Tokio,
        Kind::Single,
        Kind::Threading,
        Kind::FixedPool,
        Kind::Pool,
        Kind::PoolQueued,
        Kind::PoolRead,
        Kind::Parked,
        Kind::ParkedMax,
        Kind::Example,
        Kind::Forking,
        Kind::Python,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Std => "std",
            Kind::StdPool => "std-pool",
            Kind::Tokio => "tokio",
            Kind::Single => "single",
            Kind::Threading => "threading",
            Kind::FixedPool => "fixed-pool",
            Kind::Pool => "pool",
            Kind::PoolQueued => "pool-queued",
            Kind::PoolRead => "pool-read",
            Kind::Parked => "parked",
            Kind::ParkedMax => "parked-max",
            Kind::Example => "echo-example",
            Kind::Forking => "fork",
            Kind::Python => "python",
        }
    }

    /// Whether this is a server a user could pick instead of the crate, written without it
    /// in Rust: the rows' anchors (Python is slower than all of them: it is no anchor).
    pub fn is_anchor(self) -> bool {
        matches!(self, Kind::Std | Kind::StdPool | Kind::Tokio)
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The crate's flavour, for the kinds that are one.
    pub fn flavor(self) -> Option<Flavor> {
        match self {
            Kind::Single => Some(Flavor::single()),
            Kind::Threading => Some(Flavor::threading()),
            Kind::FixedPool => Some(Flavor::fixed_pool(16)),
            Kind::Pool | Kind::PoolRead | Kind::Parked | Kind::ParkedMax => Some(Flavor::pool()),
            Kind::PoolQueued => Some(Flavor::pool().queue(16)),
            // What the example's `--mode pool --workers 8` defaults make.
            Kind::Example => Some(Flavor::pool().workers(8)),
            Kind::Forking => Some(Flavor::forking()),
            Kind::Std | Kind::StdPool | Kind::Tokio | Kind::Python => None,
        }
    }

    /// The warm workers of its pool (the library's default, 16, and the examples' 8).
    pub fn warm_workers(self) -> u64 {
        self.flavor().map_or(16, |f| f.get_workers()) as u64
    }

    /// Whether it holds a thread for every open connection, idle ones included (so
    /// `limits::threads_refused` applies to it in the rows of idle connections).
    pub fn thread_per_connection(self) -> bool {
        matches!(
            self,
            Kind::Std | Kind::Threading | Kind::Pool | Kind::PoolQueued | Kind::PoolRead
        )
    }
}

// ---------------------------------------------------------------------------------------
// The child side.

/// Runs the server named by `args` (what follows `__server`) until it is killed or stopped.
pub fn child_main(args: &[String]) -> io::Result<()> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error"))
        .try_init();
    exit_with_parent()?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad server args {args:?}"),
        )
    };
    let proto = args.first().and_then(|s| Proto::parse(s)).ok_or_else(bad)?;
    let kind = args.get(1).and_then(|s| Kind::parse(s)).ok_or_else(bad)?;
    match (proto, kind.flavor()) {
        (Proto::Tcp, Some(_)) if kind == Kind::Example => example_echo(),
        (Proto::Tcp, Some(flavor)) if kind == Kind::Parked => crate_tcp_requests(flavor, None),
        (Proto::Tcp, Some(flavor)) if kind == Kind::ParkedMax => {
            crate_tcp_requests(flavor, Some(RAISED_MAX_CONNECTIONS))
        }
        (Proto::Tcp, Some(flavor)) => crate_tcp(flavor, kind != Kind::PoolRead),
        (Proto::Udp, Some(flavor)) => crate_udp(flavor),
        (Proto::Tcp, None) if kind == Kind::Std => std_tcp(),
        (Proto::Tcp, None) if kind == Kind::StdPool => std_pool_tcp(),
        (Proto::Tcp, None) if kind == Kind::Tokio => tokio_tcp(),
        (Proto::Udp, None) if kind == Kind::Std => std_udp(),
        _ => Err(bad()),
    }
}

/// The parent holds our stdin open: when it dies, however it dies, we read EOF and exit, so
/// no server outlives its bench.
fn exit_with_parent() -> io::Result<()> {
    thread::Builder::new()
        .name("parent-watch".into())
        .spawn(|| {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            std::process::exit(0);
        })?;
    Ok(())
}

fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// The echo handler of the examples: a 16 KiB buffer, every byte written back.
fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let mut buf = [0; 16 * 1024];
    loop {
        let n = req.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.write_all(&buf[..n])?;
    }
}

fn crate_tcp(flavor: Flavor, end_idle_on_shutdown: bool) -> io::Result<()> {
    let server = TcpServer::builder()
        .flavor(flavor)
        .end_idle_on_shutdown(end_idle_on_shutdown)
        .grace_period(GRACE)
        .bind("127.0.0.1:0")?;
    socketserver::shutdown_on_signals(&server.shutdown_handle())?;
    announce(server.local_addr()?)?;
    server.serve(echo)
}

/// The echo of the examples written one request at a time, as `examples/echo.rs` is: what
/// has arrived is written back, then the connection is parked until its next bytes.
/// `max_connections`: the builder's, where it is not left at its default.
fn crate_tcp_requests(flavor: Flavor, max_connections: Option<usize>) -> io::Result<()> {
    let mut builder = TcpServer::builder();
    builder.flavor(flavor).grace_period(GRACE);
    if let Some(n) = max_connections {
        builder.max_connections(n);
    }
    let server = builder.bind("127.0.0.1:0")?;
    socketserver::shutdown_on_signals(&server.shutdown_handle())?;
    announce(server.local_addr()?)?;
    server.serve_requests(echo_request)
}

/// The echo example's handler (`examples/echo.rs`): what has arrived is written back.
fn echo_request(req: &mut StreamRequest) -> io::Result<Next> {
    let data = req.recv()?;
    if data.is_empty() {
        return Ok(Next::Close);
    }
    req.write_all(&data)?;
    Ok(Next::Continue)
}

/// The echo example as shipped: its options parsed from a command line with no flag but
/// the address, its server built, armed and announced by the examples' shared code.
fn example_echo() -> io::Result<()> {
    use clap::{Args, FromArgMatches};
    let cmd = crate::common::ServerArgs::augment_args(clap::Command::new("echo"));
    let matches = cmd
        .try_get_matches_from(["echo", "--addr", "127.0.0.1:0"])
        .map_err(io::Error::other)?;
    let args = crate::common::ServerArgs::from_arg_matches(&matches).map_err(io::Error::other)?;
    crate::common::serve_tcp_requests(&args, crate::common::Service::new(8001), echo_request)
}

fn crate_udp(flavor: Flavor) -> io::Result<()> {
    let server = UdpServer::builder()
        .flavor(flavor)
        .grace_period(GRACE)
        .bind("127.0.0.1:0")?;
    socketserver::shutdown_on_signals(&server.shutdown_handle())?;
    announce(server.local_addr()?)?;
    server.serve(|req: &mut DatagramRequest| {
        let data = req.take_packet();
        req.reply(&data)
    })
}

/// The baseline: a plain accept loop spawning one thread per connection, each echoing with
/// a 16 KiB buffer and `TCP_NODELAY` (as the crate sets by default). SIGTERM ends it.
fn std_tcp() -> io::Result<()> {
    let listener = anchor_listener()?;
    announce(listener.local_addr()?)?;
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let spawned = thread::Builder::new().spawn(move || std_echo(stream));
                if let Err(e) = spawned {
                    eprintln!("std server: cannot spawn a thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("std server: accept: {e}");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    Ok(())
}

fn std_echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// The std pool anchor: 16 threads, each blocking in `accept` on the shared listener (the
/// kernel hands each connection to one of them) and echoing on the connection it took until
/// the client closes, as `std_echo` does. Like the crate's fixed pool, it cannot serve more
/// than 16 long-lived clients at once. The listener is made with socket2 only to give it
/// the crate's backlog (1024; std's `TcpListener::bind` asks for 128), so that clients
/// beyond the 16 wait in the backlog as they would with the crate, instead of seeing
/// their SYNs dropped. SIGTERM ends it.
fn std_pool_tcp() -> io::Result<()> {
    let listener = Arc::new(anchor_listener()?);
    announce(listener.local_addr()?)?;
    let mut workers = Vec::with_capacity(STD_POOL_THREADS);
    for _ in 0..STD_POOL_THREADS {
        let listener = Arc::clone(&listener);
        workers.push(thread::Builder::new().spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = std_echo(stream);
                }
                Err(e) => {
                    eprintln!("std pool: accept: {e}");
                    thread::sleep(Duration::from_millis(5));
                }
            }
        })?);
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// A listener on 127.0.0.1 with the crate's backlog (`ANCHOR_BACKLOG`), made with socket2
/// only for that.
fn anchor_listener() -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ANCHOR_BACKLOG)?;
    Ok(TcpListener::from(socket))
}

/// The tokio anchor: a multi-threaded runtime (a worker per CPU, tokio's default), a task
/// per connection, echoing through a 16 KiB buffer with `TCP_NODELAY`, as a tokio user
/// writes it. SIGTERM ends it.
fn tokio_tcp() -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let std_listener = anchor_listener()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        announce(listener.local_addr()?)?;
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // The accept loop runs on this (block_on) thread, not on a worker: a
                    // blocking pause here delays only accepting, as the std servers' does.
                    eprintln!("tokio server: accept: {e}");
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            tokio::spawn(async move {
                stream.set_nodelay(true)?;
                let mut buf = vec![0; 16 * 1024];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<(), io::Error>(());
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            });
        }
    })
}

/// The UDP baseline: one thread, blocking `recv_from` / `send_to`.
fn std_udp() -> io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    announce(socket.local_addr()?)?;
    let mut buf = vec![0; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer);
            }
            Err(e) => eprintln!("std udp server: {e}"),
        }
    }
}

/// Python's `ThreadingUDPServer` echo, as the tutorials write it.
const PYTHON_UDP: &str = r#"
import os, socketserver, sys, threading
def exit_with_parent():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=exit_with_parent, daemon=True).start()
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)
server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Echo)
print("listening on %s:%d" % server.server_address, flush=True)
server.serve_forever()
"#;

/// Whether `python3` runs here (the Python server is skipped where it does not).
pub fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// The parent side.

/// A running server process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts a server of `kind` and waits for its `listening on ADDR` line.
    pub fn start(proto: Proto, kind: Kind) -> io::Result<Server> {
        let mut cmd = if kind == Kind::Python {
            let mut c = Command::new("python3");
            c.args(["-c", PYTHON_UDP]);
            c
        } else {
            let mut c = Command::new(std::env::current_exe()?);
            c.args([SERVER_ARG, proto.name(), kind.name()]);
            c
        };
        // The child's stdin stays open while `child` lives: see `exit_with_parent`.
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        match read_address(stdout) {
            Ok(addr) => Ok(Server { child, addr }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the server's CPU time, peak RSS and thread count.
    pub fn stat(&self) -> io::Result<ProcStat> {
        procfs::process(self.child.id())
    }

    /// Stops the server with SIGTERM (by its own pid), killing it if it does not exit soon.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill").args(["-TERM", &pid]).status();
        if termed.map(|s| s.success()).unwrap_or(false) {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            eprintln!("server {pid} ignored SIGTERM for {STOP_TIMEOUT:?}: killing it");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the first stdout line on a helper thread, so a silent server cannot hang the bench.
fn read_address(stdout: impl Read + Send + 'static) -> io::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let res = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(res);
    });
    let line = rx
        .recv_timeout(START_TIMEOUT)
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "server did not start"))??;
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected first line {line:?}"),
            )
        })
}

//! The public server types: one per transport, any flavour.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use socket2::Type;

use crate::admin::AdminServer;
use crate::builder::Builder;
use crate::config::Config;
use crate::conn::{datagram_runner, stream_runner, Job, Runner};
use crate::engine::accept::{accept_loop, recv_loop};
use crate::engine::parked::Parked;
use crate::engine::pool::{self, Pool, RecvSource, Source};
use crate::engine::Exec;
use crate::flavor::{Flavor, Kind};
use crate::handler::{DatagramHandler, Looping, RequestHandler, StreamHandler, Whole};
use crate::metrics::Metrics;
use crate::net::bind::{bind_inet, bind_unix, buffer_sizes, SocketFile};
use crate::net::{Datagram, DgramSocket, Listener};
use crate::shared::Shared;
use crate::shutdown::ShutdownHandle;

/// A server on a listening stream socket. Use it as [`TcpServer`] or [`UnixStreamServer`].
///
/// It is bound and listening as soon as it exists (clients can connect and wait in the
/// backlog); [`serve`](StreamServer::serve) runs the accept loop until shutdown. Dropping a
/// server that never served closes its socket at once.
pub struct StreamServer<L: Listener> {
    listener: L,
    core: Core,
}

/// What every server has besides its socket.
struct Core {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    file: Option<SocketFile>,
    /// The socket is shared with another process (inherited from systemd, or handed on by a
    /// SIGHUP restart): it must never be shut down, which would stop it for them too.
    shared_socket: AtomicBool,
    /// The server's metrics, and its own admin listener (`Builder::admin`), which serves
    /// until `serve` returns (it is dropped with the rest of the core).
    metrics: Metrics,
    admin: Option<AdminServer>,
    /// The socket's descriptor (for the watchdog's look at its backlog while it serves).
    fd: RawFd,
}

impl Core {
    fn new(
        cfg: Config,
        file: Option<SocketFile>,
        fd: RawFd,
        address: String,
        stream: bool,
    ) -> io::Result<Core> {
        cfg.validate()?;
        let shared = Shared::new(cfg.grace_period, cfg.shutdown_delay)?;
        let metrics = crate::metrics::view(&cfg, &shared, address, stream);
        let admin = crate::admin::for_server(&cfg, &metrics)?;
        Ok(Core {
            cfg: Arc::new(cfg),
            shared,
            file,
            shared_socket: AtomicBool::new(false),
            metrics,
            admin,
            fd,
        })
    }

    fn handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether a datagram server's flavour is a pool whose workers take their own work (see
    /// `engine::pool`): the pool, unless a queue was asked for or the system cannot, or the
    /// socket is shared with another process (that pool ends by shutting the socket down).
    fn self_serving_pool(&self) -> bool {
        let f = &self.cfg.flavor;
        f.kind == Kind::Pool
            && f.queue.is_none()
            && pool::SUPPORTED
            && !self.shared_socket.load(Ordering::SeqCst)
    }

    /// Runs the pool whose workers take their own work from `source` until shutdown or a
    /// fatal error; then stops the socket taking work (and removes its file), lets requests
    /// finish, and joins the workers.
    fn serve_pool<S: Source>(
        self,
        source: S,
        runner: Runner<S::Job>,
        what: &'static str,
    ) -> io::Result<()> {
        let Core {
            cfg,
            shared,
            file,
            fd,
            ..
        } = self;
        let source = Arc::new(source);
        let pool = Pool::start(Arc::clone(&source), runner, &shared, &cfg.flavor, what)?;
        crate::deploy::notify::serving(&shared);
        crate::admin::serving(&shared, fd);
        let result = pool.wait();
        crate::deploy::notify::stopping();
        shared.stop();
        source.interrupt();
        drop(file);
        pool.finish(cfg.grace_period);
        shared.status.stopped();
        result
    }

    /// Runs `serve_loop` on `socket` with the flavour until shutdown or a fatal error; then
    /// closes the socket (removing its file), lets requests finish, and joins or reaps.
    fn serve<S, J: Job>(
        self,
        socket: S,
        runner: Runner<J>,
        serve_loop: impl FnOnce(&S, &mut Exec<J>, &Arc<Shared>, &Config) -> io::Result<()>,
    ) -> io::Result<()> {
        let Core {
            cfg,
            shared,
            file,
            fd,
            ..
        } = self;
        let mut exec = match Exec::new(&cfg.flavor, runner, &shared) {
            Ok(exec) => exec,
            Err(e) => {
                // The handle must see a stopped server, like after any other end of serve.
                shared.stop();
                return Err(e);
            }
        };
        crate::deploy::notify::serving(&shared);
        crate::admin::serving(&shared, fd);
        let result = serve_loop(&socket, &mut exec, &shared, &cfg);
        crate::deploy::notify::stopping();
        drop(socket);
        drop(file);
        shared.stop();
        exec.finish(cfg.grace_period);
        shared.status.stopped();
        result
    }
}

/// A factory that clones `handler` for each request.
fn cloning<H: Clone + Send>(handler: H) -> impl Fn() -> H + Send + Sync {
    let proto = Mutex::new(handler);
    move || proto.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A TCP server: Python's `TCPServer`, `ThreadingTCPServer` and `ForkingTCPServer` in one
/// type; the [`Flavor`] chooses how requests run.
///
/// ```
/// use socketserver::{StreamRequest, TcpServer};
/// use std::io::{self, BufRead, Read, Write};
/// use std::net::TcpStream;
///
/// let server = TcpServer::bind("127.0.0.1:0")?;
/// let addr = server.local_addr()?;
/// let handle = server.shutdown_handle();
/// let serving = std::thread::spawn(move || {
///     server.serve(|req: &mut StreamRequest| {
///         let mut line = String::new();
///         req.read_line(&mut line)?;
///         req.write_all(line.to_uppercase().as_bytes())
///     })
/// });
///
/// let mut client = TcpStream::connect(addr)?;
/// client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
/// client.write_all(b"hello\n")?;
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "HELLO\n");
///
/// handle.shutdown();
/// serving.join().unwrap()?;
/// # Ok::<(), io::Error>(())
/// ```
#[doc(alias = "TCPServer")]
#[doc(alias = "ThreadingTCPServer")]
#[doc(alias = "ForkingTCPServer")]
pub type TcpServer = StreamServer<TcpListener>;

/// A Unix-domain stream server (unix only): Python's `UnixStreamServer`,
/// `ThreadingUnixStreamServer` and `ForkingUnixStreamServer`.
///
/// The socket file is created at bind (a stale file left by a dead server is replaced; a
/// live server's file, or a file that is not a socket, is an `AddrInUse` error) and removed
/// when the server closes.
#[doc(alias = "ThreadingUnixStreamServer")]
#[doc(alias = "ForkingUnixStreamServer")]
pub type UnixStreamServer = StreamServer<UnixListener>;

impl<L: Listener> StreamServer<L> {
    fn new(listener: L, cfg: Config, file: Option<SocketFile>) -> io::Result<Self> {
        listener.prepare()?;
        let address = crate::metrics::address_of(socket2::SockRef::from(&listener));
        let core = Core::new(cfg, file, listener.as_raw_fd(), address, true)?;
        // Set once here, the connection options cost no system call per connection where
        // the system passes them on (Linux).
        let (cfg, passed) = (&core.cfg, &core.shared.passed_on);
        crate::net::options::pass_on(&listener, cfg, cfg.read_timeout, passed);
        Ok(StreamServer { listener, core })
    }

    /// This server's metrics (see [`Metrics`]): for an [`AdminServer`] that watches
    /// several servers, or a program that serves them itself.
    pub fn metrics(&self) -> Metrics {
        self.core.metrics.clone()
    }

    /// The address of this server's own admin listener ([`Builder::admin`]), if it has
    /// one (with the real port when bound to port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.core.admin.as_ref().map(AdminServer::local_addr)
    }

    /// A handle that stops this server from any thread; see [`ShutdownHandle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.core.handle()
    }

    /// The flavour this server runs requests with.
    pub fn flavor(&self) -> &Flavor {
        &self.core.cfg.flavor
    }

    /// The listening socket's `SO_RCVBUF` in effect, which accepted connections inherit
    /// (Linux reports twice the size set with `Builder::recv_buffer_size`).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        Ok(buffer_sizes(&self.listener)?.0)
    }

    /// The listening socket's `SO_SNDBUF` in effect, which accepted connections inherit.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        Ok(buffer_sizes(&self.listener)?.1)
    }

    pub(crate) fn listener(&self) -> &L {
        &self.listener
    }

    /// Marks the listening socket as shared with another process (see `Core`).
    pub(crate) fn share_socket(&self) {
        self.core.shared_socket.store(true, Ordering::SeqCst);
    }

    /// Serves connections until shutdown, giving each one a clone of `handler`.
    ///
    /// Write the closure's parameter type out, `|req: &mut StreamRequest|`: `serve` takes
    /// any [`StreamHandler`], and Rust turns a closure into one only once it knows what the
    /// closure takes. Without it the compiler stops with E0282 ("type annotations needed").
    ///
    /// ```no_run
    /// use socketserver::{StreamRequest, TcpServer};
    /// use std::io::{self, BufRead, Write};
    ///
    /// TcpServer::bind("127.0.0.1:8002")?.serve(|req: &mut StreamRequest| {
    ///     let mut line = String::new();
    ///     req.read_line(&mut line)?;
    ///     writeln!(req, "{}", line.trim_end().to_uppercase())
    /// })
    /// # ; Ok::<(), io::Error>(())
    /// ```
    ///
    /// Blocks the calling thread: it runs the accept loop (and, in the `single` flavour, the
    /// handlers). Returns `Ok(())` after a shutdown, once every request has ended (see
    /// [`ShutdownHandle`]), or the error that made accepting impossible (not a transient one:
    /// those are retried, and running out of descriptors is backed off from).
    /// The listening socket is closed when it returns.
    #[doc(alias = "serve_forever")]
    pub fn serve<H: StreamHandler + Clone>(self, handler: H) -> io::Result<()> {
        self.serve_with(cloning(handler))
    }

    /// Serves connections until shutdown, making each one's handler with `factory` (on the
    /// worker, so a slow factory never delays the accept loop). See [`serve`](Self::serve).
    pub fn serve_with<F, H>(self, factory: F) -> io::Result<()>
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: StreamHandler,
    {
        let flavor = &self.core.cfg.flavor;
        if flavor.kind == Kind::Pool && flavor.queue.is_none() {
            // One engine for both handler shapes: a connection handler is a request that
            // never parks.
            let make: Arc<dyn Fn() -> H + Send + Sync> = Arc::new(factory);
            let whole = move || Whole {
                make: Arc::clone(&make),
            };
            return self.serve_engine(Box::new(whole), true);
        }
        let StreamServer { listener, core } = self;
        let runner = stream_runner(factory, Arc::clone(&core.shared), Arc::clone(&core.cfg));
        core.serve(listener, runner, accept_loop)
    }
}

impl<L: Listener> StreamServer<L> {
    /// Serves connections one request at a time until shutdown, giving each connection a
    /// clone of `handler` (see [`RequestHandler`]).
    ///
    /// In the pool flavour (the default), a connection holds a thread only while it has
    /// work. Waiting for its client's next request it sits in the server's event set
    /// (epoll, kqueue), and the pool's workers (`Flavor::workers`, 16 by default) serve
    /// requests as they arrive. A busy client (its last request came within 10 ms of the
    /// reply before) is served as a thread per connection serves it: the worker that
    /// answered waits on that connection with a blocking read for up to 10 ms, so a quick
    /// exchange costs one read and one write per request, no event-set call; while it
    /// waits, another worker watches the event set. Busy clients are bounded by
    /// `Flavor::limit`, not by the warm count. The pool also grows when every worker is
    /// stuck inside a request (a long upload, a slow client), and shrinks after
    /// `Flavor::worker_idle_timeout`. Thousands of mostly idle clients cost memory (a few
    /// KiB each), not threads; `max_connections` bounds them. A client that connects and
    /// says nothing waits for its PROXY header or TLS ClientHello in the event set too (up
    /// to the header's or the handshake's deadline), and its handshake runs on a worker
    /// once it speaks; plaintext already decrypted counts as a request that has arrived.
    /// At shutdown a request that has already arrived is answered (pipelined ones
    /// included); idle connections are closed. In the other flavours each connection runs
    /// its requests in a loop on its own thread or process.
    ///
    /// ```no_run
    /// use socketserver::{Next, StreamRequest, TcpServer};
    /// use std::io::{self, BufRead, Write};
    ///
    /// TcpServer::bind("127.0.0.1:8002")?.serve_requests(|req: &mut StreamRequest| {
    ///     let mut line = String::new();
    ///     if req.read_line(&mut line)? == 0 {
    ///         return Ok(Next::Close);
    ///     }
    ///     req.write_all(line.to_uppercase().as_bytes())?;
    ///     Ok(Next::Continue)
    /// })
    /// # ; Ok::<(), io::Error>(())
    /// ```
    pub fn serve_requests<H: RequestHandler + Clone>(self, handler: H) -> io::Result<()> {
        self.serve_requests_with(cloning(handler))
    }

    /// Serves connections one request at a time, making each connection's handler with
    /// `factory`. See [`serve_requests`](Self::serve_requests).
    pub fn serve_requests_with<F, H>(self, factory: F) -> io::Result<()>
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: RequestHandler,
    {
        if self.core.cfg.flavor.kind != Kind::Pool {
            return self.serve_with(move || Looping(factory()));
        }
        self.serve_engine(Box::new(factory), false)
    }

    /// Runs the pool's engine (`engine::parked`) until shutdown or a fatal error; then
    /// stops accepting (removing the socket's file), answers what arrived, lets requests
    /// finish and joins the workers. `whole`: the handlers are connection handlers.
    fn serve_engine<H: RequestHandler>(
        self,
        factory: Box<dyn Fn() -> H + Send + Sync>,
        whole: bool,
    ) -> io::Result<()> {
        let StreamServer { listener, core } = self;
        let Core {
            cfg,
            shared,
            file,
            shared_socket,
            admin: _admin,
            fd,
            ..
        } = core;
        let parked = Parked::start(
            listener,
            factory,
            &shared,
            &cfg,
            whole,
            shared_socket.load(std::sync::atomic::Ordering::SeqCst),
        )?;
        crate::deploy::notify::serving(&shared);
        crate::admin::serving(&shared, fd);
        let result = parked.wait();
        crate::deploy::notify::stopping();
        shared.stop();
        drop(file);
        parked.finish(cfg.grace_period, shared_socket.into_inner());
        shared.status.stopped();
        result
    }
}

impl<L: Listener + fmt::Debug> fmt::Debug for StreamServer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("listener", &self.listener)
            .field("flavor", &self.core.cfg.flavor)
            .finish()
    }
}

impl StreamServer<TcpListener> {
    /// Binds a TCP server with every default (see [`Builder`]).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpServer> {
        Self::builder().bind(addr)
    }

    /// Options for a TCP server.
    pub fn builder() -> Builder<TcpListener> {
        Builder::new(true)
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Builder<TcpListener> {
    /// Binds and listens on the first address that works, with these options.
    pub fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<TcpServer> {
        let socket = bind_inet(addr, Type::STREAM, &self.cfg)?;
        StreamServer::new(socket.into(), self.cfg.clone(), None)
    }

    /// Serves an already bound and listening socket, such as one inherited from a process
    /// manager (systemd socket activation). Options applied at bind time (address reuse,
    /// backlog, IPv6-only) are the caller's; the others apply.
    pub fn from_listener(&self, listener: TcpListener) -> io::Result<TcpServer> {
        StreamServer::new(listener, self.cfg.clone(), None)
    }
}

impl StreamServer<UnixListener> {
    /// Binds a Unix stream server at `path` with every default.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixStreamServer> {
        Self::builder().bind(path)
    }

    /// Options for a Unix stream server.
    pub fn builder() -> Builder<UnixListener> {
        Builder::new(false)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<UnixAddr> {
        self.listener.local_addr()
    }

    /// The socket file this server removes when it closes, if it bound one itself.
    pub fn path(&self) -> Option<&Path> {
        self.core.file.as_ref().map(SocketFile::path)
    }
}

impl Builder<UnixListener> {
    /// Binds and listens at `path`; see [`UnixStreamServer`] for how an existing file is
    /// treated.
    pub fn bind(&self, path: impl AsRef<Path>) -> io::Result<UnixStreamServer> {
        let (socket, file) = bind_unix(path.as_ref(), Type::STREAM, &self.cfg)?;
        StreamServer::new(socket.into(), self.cfg.clone(), Some(file))
    }

    /// Serves an already bound and listening socket. Its file, if any, is left in place.
    pub fn from_listener(&self, listener: UnixListener) -> io::Result<UnixStreamServer> {
        StreamServer::new(listener, self.cfg.clone(), None)
    }
}

/// A server on a datagram socket. Use it as [`UdpServer`] or [`UnixDatagramServer`].
///
/// Each datagram is one request. The receive loop reads it whole (see
/// `max_datagram_size`) and hands it to the flavour; replies leave from the server's socket.
pub struct DatagramServer<S: Datagram> {
    socket: DgramSocket,
    core: Core,
    _transport: PhantomData<fn() -> S>,
}

/// A UDP server: Python's `UDPServer`, `ThreadingUDPServer` and `ForkingUDPServer`.
///
/// ```
/// use socketserver::{DatagramRequest, Flavor, UdpServer};
/// use std::net::UdpSocket;
/// use std::time::Duration;
///
/// let server = UdpServer::builder().flavor(Flavor::single()).bind("127.0.0.1:0")?;
/// let addr = server.local_addr()?;
/// let handle = server.shutdown_handle();
/// let serving = std::thread::spawn(move || {
///     server.serve(|req: &mut DatagramRequest| {
///         let reply = req.packet().to_ascii_uppercase();
///         req.reply(&reply)
///     })
/// });
///
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.set_read_timeout(Some(Duration::from_secs(5)))?;
/// client.send_to(b"hello", addr)?;
/// let mut buf = [0; 64];
/// let (n, _) = client.recv_from(&mut buf)?;
/// assert_eq!(&buf[..n], b"HELLO");
///
/// handle.shutdown();
/// serving.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "UDPServer")]
#[doc(alias = "ThreadingUDPServer")]
#[doc(alias = "ForkingUDPServer")]
pub type UdpServer = DatagramServer<UdpSocket>;

/// A Unix-domain datagram server (unix only): Python's `UnixDatagramServer` and its
/// threading and forking variants. A client must bind its own path to receive replies.
#[doc(alias = "ThreadingUnixDatagramServer")]
#[doc(alias = "ForkingUnixDatagramServer")]
pub type UnixDatagramServer = DatagramServer<UnixDatagram>;

impl<S: Datagram> DatagramServer<S> {
    fn new(socket: S, cfg: Config, file: Option<SocketFile>) -> io::Result<Self> {
        let socket = socket.into_dgram()?;
        let address = crate::metrics::address_of(socket2::SockRef::from(&socket));
        let core = Core::new(cfg, file, socket.as_raw_fd(), address, false)?;
        Ok(DatagramServer {
            socket,
            core,
            _transport: PhantomData,
        })
    }

    /// This server's metrics (see [`Metrics`]).
    pub fn metrics(&self) -> Metrics {
        self.core.metrics.clone()
    }

    /// The address of this server's own admin listener ([`Builder::admin`]), if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.core.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Marks the socket as shared with another process (see `Core`).
    pub(crate) fn share_socket(&self) {
        self.core.shared_socket.store(true, Ordering::SeqCst);
    }

    /// A handle that stops this server from any thread; see [`ShutdownHandle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.core.handle()
    }

    /// The flavour this server runs requests with.
    pub fn flavor(&self) -> &Flavor {
        &self.core.cfg.flavor
    }

    /// The socket's `SO_RCVBUF` in effect: how many bytes of datagrams the kernel queues
    /// while the server is busy (Linux reports twice the size set with
    /// `Builder::recv_buffer_size`). Datagrams that arrive when it is full are lost.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        Ok(buffer_sizes(&self.socket)?.0)
    }

    /// The socket's `SO_SNDBUF` in effect.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        Ok(buffer_sizes(&self.socket)?.1)
    }

    /// Serves datagrams until shutdown, giving each one a clone of `handler`. See
    /// [`StreamServer::serve`].
    #[doc(alias = "serve_forever")]
    pub fn serve<H: DatagramHandler + Clone>(self, handler: H) -> io::Result<()> {
        self.serve_with(cloning(handler))
    }

    /// Serves datagrams until shutdown, making each one's handler with `factory`.
    pub fn serve_with<F, H>(self, factory: F) -> io::Result<()>
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: DatagramHandler,
    {
        let DatagramServer { socket, core, .. } = self;
        let socket = Arc::new(socket);
        let runner = datagram_runner(
            factory,
            Arc::clone(&socket),
            Arc::clone(&core.shared),
            Arc::clone(&core.cfg),
        );
        if core.self_serving_pool() {
            let source = RecvSource::new(socket, &core.shared, &core.cfg)?;
            return core.serve_pool(source, runner, "recvfrom");
        }
        core.serve(socket, runner, |s, exec, shared, cfg| {
            recv_loop(s, exec, shared, cfg)
        })
    }
}

impl<S: Datagram> fmt::Debug for DatagramServer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramServer")
            .field("socket", &self.socket)
            .field("flavor", &self.core.cfg.flavor)
            .finish()
    }
}

impl DatagramServer<UdpSocket> {
    /// Binds a UDP server with every default (see [`Builder`]).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpServer> {
        Self::builder().bind(addr)
    }

    /// Options for a UDP server.
    pub fn builder() -> Builder<UdpSocket> {
        Builder::new(false)
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.socket {
            DgramSocket::Udp(s) => s.local_addr(),
            DgramSocket::Unix(_) => unreachable!("a UdpServer holds a UDP socket"),
        }
    }
}

impl Builder<UdpSocket> {
    /// Binds the first address that works, with these options.
    pub fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<UdpServer> {
        let socket = bind_inet(addr, Type::DGRAM, &self.cfg)?;
        DatagramServer::new(UdpSocket::from(socket), self.cfg.clone(), None)
    }

    /// Serves an already bound socket (an inherited descriptor).
    pub fn from_socket(&self, socket: UdpSocket) -> io::Result<UdpServer> {
        DatagramServer::new(socket, self.cfg.clone(), None)
    }
}

impl DatagramServer<UnixDatagram> {
    /// Binds a Unix datagram server at `path` with every default.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagramServer> {
        Self::builder().bind(path)
    }

    /// Options for a Unix datagram server.
    pub fn builder() -> Builder<UnixDatagram> {
        Builder::new(false)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<UnixAddr> {
        match &self.socket {
            DgramSocket::Unix(s) => s.local_addr(),
            DgramSocket::Udp(_) => unreachable!("a UnixDatagramServer holds a Unix socket"),
        }
    }

    /// The socket file this server removes when it closes, if it bound one itself.
    pub fn path(&self) -> Option<&Path> {
        self.core.file.as_ref().map(SocketFile::path)
    }
}

impl Builder<UnixDatagram> {
    /// Binds at `path`; an existing file is treated as for [`UnixStreamServer`].
    pub fn bind(&self, path: impl AsRef<Path>) -> io::Result<UnixDatagramServer> {
        let (socket, file) = bind_unix(path.as_ref(), Type::DGRAM, &self.cfg)?;
        DatagramServer::new(UnixDatagram::from(socket), self.cfg.clone(), Some(file))
    }

    /// Serves an already bound socket. Its file, if any, is left in place.
    pub fn from_socket(&self, socket: UnixDatagram) -> io::Result<UnixDatagramServer> {
        DatagramServer::new(socket, self.cfg.clone(), None)
    }
}

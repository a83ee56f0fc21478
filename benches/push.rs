//! Server push fan-out (issue 22's numbers): a pub/sub broker on `push::Topics` (the
//! `pubsub` example's protocol and pool settings) with 1 000 and 10 000 subscribers on
//! loopback, plain and TLS: messages delivered per second, memory per idle subscriber, and
//! the server's threads.
//!
//! ```text
//! cargo bench --features tls --bench push                  # 3 runs x 1 000 and 10 000 subscribers
//! BENCH_QUICK=1 cargo bench --features tls --bench push    # 100 and 1 000, 1 run: proves the harness
//! ```
//!
//! The broker runs in a process of its own (this binary again, as `__server plain|tls CERT
//! KEY`): the pool flavour with at most 32 workers, as the example, so its memory (VmRSS
//! from `/proc/PID/status`), threads and CPU time are its own. One run of a case: start
//! the broker; read its RSS; connect the subscribers (four connecting threads, each
//! subscriber says `SUB bench` and waits for `OK SUB bench`); read the RSS again (the
//! difference over the subscribers is the memory per idle subscriber) and the threads; then
//! one publisher sends `PUB bench <text>` lines (in windows of 100, each reply checked to
//! be `OK PUB <subscribers>`) and one reader thread here takes every subscriber's bytes
//! through an event set, until each subscriber received every message (64 bytes each line).
//! Delivered per second is subscribers x messages over the time from the first `PUB` to
//! the last line read. Both sides share the machine's cores: the reader's work counts
//! against the rate as the broker's does, and "other" says how busy the rest of the
//! machine was. The server's CPU time per delivered message is given beside the rate, as a
//! shared machine disturbs it less. Cases run alternately (plain, TLS, plain, TLS...);
//! medians of the runs. `BENCH_RUNS` overrides the number of runs. No timing is asserted:
//! the harness fails only when a message is missing or a reply is wrong.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use socketserver::push::{Pusher, Topics};
use socketserver::tls::rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use socketserver::tls::{self as sstls};
use socketserver::{framing, Flavor, Next, RequestHandler, StreamRequest, TcpServer};

#[allow(dead_code)] // the flavours bench's helpers; this bench needs some of them
#[path = "flavours/procfs.rs"]
mod procfs;

const TOPIC: &str = "bench";
/// Each delivered line, `MSG bench <text>\n`, is this long.
const LINE: usize = 64;
/// PUB lines sent before their replies are read.
const WINDOW: usize = 100;
const CONNECTORS: usize = 4;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The pubsub example's pool limit.
const POOL_LIMIT: usize = 32;

// ---- the broker (server process) -------------------------------------------------------

/// One client of the broker: the pubsub example's handler, SUB and PUB only.
struct Client {
    topics: Arc<Topics>,
    me: Option<Pusher>,
    buf: Vec<u8>,
}

impl RequestHandler for Client {
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        let line = match framing::read_text_line(req, &mut self.buf, 64 * 1024)? {
            Some(Ok(line)) => line,
            Some(Err(_)) => {
                writeln!(req, "ERROR line is not UTF-8")?;
                return Ok(Next::Continue);
            }
            None => return Ok(Next::Close),
        };
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (cmd, rest.split_once(' ')) {
            ("SUB", _) => {
                let me = self.me.get_or_insert_with(|| req.pusher());
                self.topics.subscribe(rest.to_owned(), me);
                writeln!(req, "OK SUB {rest}")?;
            }
            ("PUB", Some((topic, text))) => {
                let n = self
                    .topics
                    .publish(topic, format!("MSG {topic} {text}\n").as_bytes());
                writeln!(req, "OK PUB {n}")?;
            }
            _ => writeln!(req, "ERROR unknown command")?,
        }
        Ok(Next::Continue)
    }
}

fn serve(tls: Option<(&Path, &Path)>) -> io::Result<()> {
    let mut b = TcpServer::builder();
    b.flavor(Flavor::pool().limit(POOL_LIMIT))
        .idle_timeout(Some(Duration::from_secs(3600)))
        .grace_period(Duration::from_secs(1));
    if let Some((cert, key)) = tls {
        let resolver = sstls::ReloadableCert::from_pem_files(cert, key)?;
        b.tls(Arc::new(sstls::server_config(resolver, None)?));
    }
    let server = b.bind("127.0.0.1:0")?;
    socketserver::shutdown_on_signals(&server.shutdown_handle())?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {}", server.local_addr()?)?;
    out.flush()?;
    drop(out);
    let topics = Arc::new(Topics::new());
    server.serve_requests_with(move || Client {
        topics: Arc::clone(&topics),
        me: None,
        buf: Vec::new(),
    })
}

/// The broker's process, ended by its pid (SIGTERM, then SIGKILL) when dropped.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start(tls: bool, certs: &Certs) -> io::Result<Broker> {
        let mut child = Command::new(env::current_exe()?)
            .arg("__server")
            .arg(if tls { "tls" } else { "plain" })
            .arg(&certs.cert)
            .arg(&certs.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("broker said {line:?}")))?;
        Ok(Broker { child, addr })
    }

    /// Resident memory now (VmRSS), KiB.
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
                l[6..].split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    }

    fn stat(&self) -> procfs::ProcStat {
        procfs::process(self.child.id()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- certificates ------------------------------------------------------------------------

struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    client: Arc<ClientConfig>,
}

fn certs() -> Certs {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(sstls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Certs {
        _dir: dir,
        cert: cert_pem,
        key: key_pem,
        client: Arc::new(client),
    }
}

// ---- clients -------------------------------------------------------------------------------

/// A client connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> io::Result<Conn> {
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_nodelay(true)?;
        Ok(match tls {
            None => Conn::Plain(sock),
            Some(cfg) => {
                let conn = ClientConnection::new(Arc::clone(cfg), "localhost".try_into().unwrap())
                    .map_err(io::Error::other)?;
                Conn::Tls(Box::new(StreamOwned::new(conn, sock)))
            }
        })
    }

    fn sock(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    /// Sends `out` and reads exactly `back.len()` bytes.
    fn exchange(&mut self, out: &[u8], back: &mut [u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(out)?;
                s.read_exact(back)
            }
            Conn::Tls(t) => {
                t.write_all(out)?;
                t.flush()?;
                t.read_exact(back)
            }
        }
    }

    /// Reads what is there without waiting (the socket is non-blocking); returns the number
    /// of `\n` in the plaintext, or an error at the end of the stream.
    fn drain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut lines = 0;
        loop {
            let got = match self {
                Conn::Plain(s) => s.read(buf),
                Conn::Tls(t) => {
                    // Plaintext rustls holds first, then more records from the socket.
                    match t.conn.reader().read(buf) {
                        Ok(n) if n > 0 => Ok(n),
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                        _ => match t.conn.read_tls(&mut t.sock) {
                            Ok(0) => Ok(0),
                            Ok(_) => {
                                t.conn.process_new_packets().map_err(io::Error::other)?;
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                    }
                }
            };
            match got {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(lines),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `n` subscribers, each subscribed (its `OK SUB` read), connected by a few threads.
fn subscribe(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>, n: usize) -> io::Result<Vec<Conn>> {
    let sub = format!("SUB {TOPIC}\n");
    let ok = format!("OK SUB {TOPIC}\n");
    thread::scope(|s| {
        let workers: Vec<_> = (0..CONNECTORS)
            .map(|i| {
                let count = n / CONNECTORS + usize::from(i < n % CONNECTORS);
                let (sub, ok) = (&sub, &ok);
                s.spawn(move || -> io::Result<Vec<Conn>> {
                    let mut conns = Vec::with_capacity(count);
                    let mut back = vec![0; ok.len()];
                    for _ in 0..count {
                        let mut c = Conn::connect(addr, tls)?;
                        c.exchange(sub.as_bytes(), &mut back)?;
                        if back != ok.as_bytes() {
                            return Err(io::Error::other(format!(
                                "SUB answered {:?}",
                                String::from_utf8_lossy(&back)
                            )));
                        }
                        conns.push(c);
                    }
                    Ok(conns)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for w in workers {
            all.extend(w.join().expect("connecting thread")?);
        }
        Ok(all)
    })
}

/// Reads every subscriber until each received `per_sub` lines; returns when the last one
/// arrived.
fn read_all(mut subs: Vec<Conn>, per_sub: usize, go: &AtomicBool) -> io::Result<Instant> {
    let mut poll = Poll::new()?;
    for (i, c) in subs.iter().enumerate() {
        c.sock().set_nonblocking(true)?;
        poll.registry().register(
            &mut SourceFd(&c.sock().as_raw_fd()),
            Token(i),
            Interest::READABLE,
        )?;
    }
    go.store(true, Relaxed);
    let mut got = vec![0usize; subs.len()];
    let mut missing = subs.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Edge-triggered: a subscriber whose lines arrived before it was registered is read once.
    let mut ready: Vec<usize> = (0..subs.len()).collect();
    loop {
        for &i in &ready {
            let before = got[i];
            got[i] += subs[i].drain(&mut buf)?;
            if before < per_sub && got[i] >= per_sub {
                missing -= 1;
            }
        }
        if missing == 0 {
            let end = Instant::now();
            if let Some((i, n)) = got.iter().enumerate().find(|(_, &n)| n != per_sub) {
                return Err(io::Error::other(format!(
                    "subscriber {i} got {n} lines, {per_sub} were sent"
                )));
            }
            return Ok(end);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::other(format!(
                "{missing} subscribers still waited for messages after 120 s"
            )));
        }
        poll.poll(&mut events, Some(left))?;
        ready.clear();
        ready.extend(events.iter().map(|e| e.token().0));
    }
}

// ---- one run --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Sample {
    per_sec: f64,
    rss_before_mib: f64,
    per_idle_kib: f64,
    threads_idle: u64,
    threads_max: u64,
    cpu_ns: f64,
    other_cores: f64,
    setup_secs: f64,
}

fn measure(tls: bool, subs: usize, messages: usize, certs: &Certs) -> io::Result<Sample> {
    let cfg = tls.then_some(&certs.client);
    let broker = Broker::start(tls, certs)?;
    // A first connection (a publisher) warms up the pool and its buffers before the RSS.
    let mut publisher = Conn::connect(broker.addr, cfg)?;
    let mut back = vec![0; "OK PUB 0\n".len()];
    publisher.exchange(format!("PUB {TOPIC} warm\n").as_bytes(), &mut back)?;
    let rss_before = broker.rss_kib();
    let began = Instant::now();
    let conns = subscribe(broker.addr, cfg, subs)?;
    let setup_secs = began.elapsed().as_secs_f64();
    // Let the pool park the burst of subscribers, then read memory and threads.
    thread::sleep(Duration::from_millis(500));
    let (rss_after, idle) = (broker.rss_kib(), broker.stat());

    let text_len = LINE - "MSG  \n".len() - TOPIC.len();
    let reply = format!("OK PUB {subs}\n");
    let go = AtomicBool::new(false);
    let threads_max = AtomicU64::new(idle.threads);
    let done = AtomicBool::new(false);
    let ticks = procfs::clock_ticks() as f64;
    let (start, end, cpu, machine, own) = thread::scope(|s| -> io::Result<_> {
        let reader = s.spawn(|| read_all(conns, messages, &go));
        s.spawn(|| {
            while !done.load(Relaxed) {
                threads_max.fetch_max(broker.stat().threads, Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        });
        while !go.load(Relaxed) {
            thread::sleep(Duration::from_millis(1));
        }
        let (cpu0, machine0, own0) = (
            broker.stat().cpu_ticks,
            procfs::machine_busy_ticks()?,
            procfs::own_ticks()?,
        );
        let start = Instant::now();
        let mut back = vec![0; reply.len() * WINDOW];
        let mut sent = 0;
        while sent < messages {
            let batch = WINDOW.min(messages - sent);
            let mut out = String::with_capacity(batch * LINE);
            for i in sent..sent + batch {
                let text = format!("{i:08} {}", "x".repeat(text_len - 9));
                out.push_str(&format!("PUB {TOPIC} {text}\n"));
            }
            let back = &mut back[..reply.len() * batch];
            publisher.exchange(out.as_bytes(), back)?;
            if back.chunks(reply.len()).any(|r| r != reply.as_bytes()) {
                return Err(io::Error::other(format!(
                    "PUB answered {:?}, not {reply:?}",
                    String::from_utf8_lossy(&back[..reply.len()])
                )));
            }
            sent += batch;
        }
        let end = reader.join().expect("reader thread");
        done.store(true, Relaxed);
        let end = end?;
        Ok((
            start,
            end,
            broker.stat().cpu_ticks - cpu0,
            procfs::machine_busy_ticks()? - machine0,
            procfs::own_ticks()? - own0,
        ))
    })?;
    let secs = (end - start).as_secs_f64();
    let delivered = (subs * messages) as f64;
    Ok(Sample {
        per_sec: delivered / secs,
        rss_before_mib: rss_before as f64 / 1024.0,
        per_idle_kib: rss_after.saturating_sub(rss_before) as f64 / subs as f64,
        threads_idle: idle.threads,
        threads_max: threads_max.load(Relaxed),
        cpu_ns: cpu as f64 / ticks * 1e9 / delivered,
        other_cores: machine.saturating_sub(cpu + own) as f64 / ticks / secs,
        setup_secs,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__server") {
        let tls = (args[1] == "tls").then(|| (Path::new(&args[2]), Path::new(&args[3])));
        return match serve(tls) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("broker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Each side holds every subscriber: raise the descriptor limit (the broker inherits it).
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    let quick = env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
        || !args.iter().any(|a| a == "--bench");
    let (cases, deliveries, runs) = match quick {
        true => (vec![100, 1_000], 20_000, 1),
        false => (vec![1_000, 10_000], 1_000_000, 3),
    };
    let runs = env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(runs)
        .max(1);
    let certs = certs();
    eprintln!(
        "push ({} mode): {runs} run(s) of {cases:?} subscribers, plain and TLS, {deliveries} deliveries each",
        if quick { "quick" } else { "full" }
    );
    let mut samples: Vec<((usize, bool), Vec<Sample>)> = cases
        .iter()
        .flat_map(|&n| [((n, false), Vec::new()), ((n, true), Vec::new())])
        .collect();
    let mut failed = false;
    for run in 1..=runs {
        for ((subs, tls), got) in &mut samples {
            let messages = (deliveries / *subs).max(1);
            match measure(*tls, *subs, messages, &certs) {
                Ok(s) => {
                    eprintln!(
                        "  run {run} {:>6} subscribers {:<5} {:>10.0} delivered/s  CPU {:.0} ns/msg  {:.2} KiB/idle subscriber  threads {} idle, {} max  setup {:.1} s  other load {:.2} cores",
                        subs, if *tls { "tls" } else { "plain" }, s.per_sec, s.cpu_ns,
                        s.per_idle_kib, s.threads_idle, s.threads_max, s.setup_secs, s.other_cores
                    );
                    got.push(s);
                }
                Err(e) => {
                    eprintln!("  run {run} {subs} subscribers tls={tls}: failed: {e}");
                    failed = true;
                }
            }
        }
    }
    println!(
        "\npush fan-out, median of {runs} run(s); 64-byte lines, one publisher, one reader thread\n"
    );
    println!("| subscribers | transport | messages | delivered/s | server CPU ns/delivery | RSS before (MiB) | RSS per idle subscriber (KiB) | server threads idle / max | other load (cores) |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for ((subs, tls), got) in &samples {
        if got.is_empty() {
            continue;
        }
        let m = |f: fn(&Sample) -> f64| median(got.iter().map(f).collect());
        println!(
            "| {subs} | {} | {} | {:.0} | {:.0} | {:.1} | {:.2} | {:.0} / {:.0} | {:.2} |",
            if *tls { "TLS" } else { "plain" },
            (deliveries / subs).max(1),
            m(|s| s.per_sec),
            m(|s| s.cpu_ns),
            m(|s| s.rss_before_mib),
            m(|s| s.per_idle_kib),
            m(|s| s.threads_idle as f64),
            m(|s| s.threads_max as f64),
            m(|s| s.other_cores),
        );
    }
    if failed {
        eprintln!("push: a run failed (above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

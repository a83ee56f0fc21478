//! TLS cost, in one run: the crate's TLS server beside the same server without TLS and a
//! minimal rustls-over-std server (a thread per connection, `rustls::StreamOwned`, no
//! idle poll, no shutdown machinery), all with the same certificate, ring provider and
//! client.
//!
//! ```text
//! cargo bench --features tls --bench tls                  # 5 runs x 2 s per server
//! BENCH_QUICK=1 cargo bench --features tls --bench tls    # 1 run x 0.3 s: proves the harness
//! ```
//!
//! Scenarios: `handshakes` (each client thread connects, completes a full handshake
//! (resumption off), echoes one byte and closes, again and again: connections per second)
//! and `pingpong-16k` (each client connection sends 16 KiB and reads it back, again and
//! again: MiB/s echoed). Two client threads, as many connections. Each server runs in a
//! process of its own (this binary again, as `__server KIND CERT KEY`), so that its CPU
//! time comes from `/proc`: besides the rate, the table gives the server's CPU time per
//! operation, which a busy shared machine disturbs much less than the rate. Servers run
//! alternately (A B C A B C); medians of the runs, and each server's ratio to the minimal
//! rustls server (for CPU, the minimal server's CPU per operation divided by this one's:
//! above 1 is cheaper). `BENCH_RUNS` and `BENCH_SECS` override the number of runs and
//! seconds per run. No timing is asserted: the issue's targets (0.9x of the minimal server)
//! are judged from the table (README, section TLS).

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use socketserver::tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore};
use socketserver::tls::{self as sstls};
use socketserver::{Flavor, StreamRequest, TcpServer};

const CLIENTS: usize = 2;
const CHUNK: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `TcpServer` (default pool flavour) with `Builder::tls`.
    Tls,
    /// The same server without TLS.
    Plain,
    /// rustls over std: accept loop, a thread per connection, `StreamOwned` echo.
    Minimal,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tls => "socketserver + tls",
            Kind::Plain => "socketserver, no tls",
            Kind::Minimal => "minimal rustls server",
        }
    }

    fn tls(self) -> bool {
        self != Kind::Plain
    }

    fn arg(self) -> &'static str {
        match self {
            Kind::Tls => "tls",
            Kind::Plain => "plain",
            Kind::Minimal => "minimal",
        }
    }

    fn from_arg(s: &str) -> Kind {
        match s {
            "tls" => Kind::Tls,
            "plain" => Kind::Plain,
            _ => Kind::Minimal,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    Handshakes,
    PingPong,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Handshakes => "handshakes",
            Scenario::PingPong => "pingpong-16k",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Scenario::Handshakes => "conn/s",
            Scenario::PingPong => "MiB/s",
        }
    }

    /// The unit of server CPU time per operation.
    fn cpu_unit(self) -> &'static str {
        match self {
            Scenario::Handshakes => "µs/conn",
            Scenario::PingPong => "µs/MiB",
        }
    }
}

// ---- certificates ---------------------------------------------------------------------------

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
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(sstls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    Certs {
        _dir: dir,
        cert: cert_pem,
        key: key_pem,
        client: Arc::new(client),
    }
}

fn server_config(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    let resolver = sstls::ReloadableCert::from_pem_files(cert, key).unwrap();
    Arc::new(sstls::server_config(resolver, None).unwrap())
}

// ---- servers --------------------------------------------------------------------------------

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let mut buf = [0; CHUNK];
    loop {
        let n = req.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.write_all(&buf[..n])?;
    }
}

/// The server process's side: serves `kind` until SIGTERM.
fn serve(kind: Kind, cert: &Path, key: &Path) -> io::Result<()> {
    let announce = |addr: SocketAddr| -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()
    };
    match kind {
        Kind::Tls | Kind::Plain => {
            let mut b = TcpServer::builder();
            b.flavor(Flavor::pool())
                .grace_period(Duration::from_secs(1));
            if kind == Kind::Tls {
                b.tls(server_config(cert, key));
            }
            let server = b.bind("127.0.0.1:0")?;
            socketserver::shutdown_on_signals(&server.shutdown_handle())?;
            announce(server.local_addr()?)?;
            server.serve(echo)
        }
        Kind::Minimal => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            announce(listener.local_addr()?)?;
            minimal_server(listener, server_config(cert, key));
            Ok(())
        }
    }
}

/// A server process, killed by its pid when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(kind: Kind, certs: &Certs) -> ServerProcess {
        let mut child = Command::new(env::current_exe().unwrap())
            .arg("__server")
            .arg(kind.arg())
            .arg(&certs.cert)
            .arg(&certs.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the server's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        ServerProcess { child, addr }
    }

    /// User + system CPU time of the process (its threads, live or ended), in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/PID/stat");
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3 of stat(5), utime 14 and stime 15.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / clock_ticks()
    }
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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

/// The reference: what a careful user writes by hand with rustls and std.
fn minimal_server(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        let config = Arc::clone(&config);
        thread::spawn(move || {
            let _ = sock.set_nodelay(true);
            let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut buf = [0; CHUNK];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tls.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
    }
}

// ---- clients --------------------------------------------------------------------------------

/// A client connection, with TLS or without.
enum Client {
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Client {
    fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> io::Result<Client> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(match tls {
            Some(cfg) => {
                let name = "localhost".try_into().unwrap();
                let conn =
                    ClientConnection::new(Arc::clone(cfg), name).map_err(io::Error::other)?;
                Client::Tls(Box::new(rustls::StreamOwned::new(conn, sock)))
            }
            None => Client::Plain(sock),
        })
    }

    fn echo(&mut self, out: &[u8], back: &mut [u8]) -> io::Result<()> {
        match self {
            Client::Tls(s) => {
                s.write_all(out)?;
                s.flush()?;
                s.read_exact(back)
            }
            Client::Plain(s) => {
                s.write_all(out)?;
                s.read_exact(back)
            }
        }
    }

    fn close(self) {
        if let Client::Tls(mut s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

/// Runs `CLIENTS` threads of `scenario` against `addr` for `secs`; returns the rate and the
/// amount done (connections, or MiB).
fn measure(
    scenario: Scenario,
    kind: Kind,
    addr: SocketAddr,
    certs: &Certs,
    secs: f64,
) -> (f64, f64) {
    let tls = kind.tls().then(|| Arc::clone(&certs.client));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (tls, done) = (tls.clone(), Arc::clone(&done));
            thread::spawn(move || -> io::Result<()> {
                match scenario {
                    Scenario::Handshakes => {
                        let mut b = [0u8; 1];
                        while Instant::now() < until {
                            let mut c = Client::connect(addr, tls.as_ref())?;
                            c.echo(b"x", &mut b)?;
                            c.close();
                            done.fetch_add(1, Relaxed);
                        }
                    }
                    Scenario::PingPong => {
                        let mut c = Client::connect(addr, tls.as_ref())?;
                        let out = vec![7u8; CHUNK];
                        let mut back = vec![0u8; CHUNK];
                        while Instant::now() < until {
                            c.echo(&out, &mut back)?;
                            done.fetch_add(CHUNK as u64, Relaxed);
                        }
                        c.close();
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("client failed");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let amount = match scenario {
        Scenario::Handshakes => done.load(Relaxed) as f64,
        Scenario::PingPong => done.load(Relaxed) as f64 / (1024.0 * 1024.0),
    };
    (amount / elapsed, amount)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.get(1).map(String::as_str) == Some("__server") {
        let kind = Kind::from_arg(&args[2]);
        if let Err(e) = serve(kind, Path::new(&args[3]), Path::new(&args[4])) {
            eprintln!("server failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo test --benches` runs bench targets with no `--bench` argument: be quick then.
    let quick = env::var_os("BENCH_QUICK").is_some() || !args.iter().any(|a| a == "--bench");
    let runs: usize = env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let secs: f64 = env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 0.3 } else { 2.0 });
    let filter: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let certs = certs();
    let kinds = [Kind::Tls, Kind::Plain, Kind::Minimal];
    println!(
        "TLS bench: {runs} run(s) x {secs} s per server, {CLIENTS} client threads, {} CPUs",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| scenario | server | rate (median) | runs | vs minimal | server CPU (median) | vs minimal |");
    println!("|---|---|---:|---|---:|---:|---:|");
    for scenario in [Scenario::Handshakes, Scenario::PingPong] {
        if !filter.is_empty() && !filter.iter().any(|f| scenario.name().contains(f.as_str())) {
            continue;
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        for _ in 0..runs {
            for (i, kind) in kinds.iter().enumerate() {
                let server = ServerProcess::start(*kind, &certs);
                // One untimed round first: threads, pages and caches warm.
                measure(scenario, *kind, server.addr, &certs, (secs / 10.0).min(0.1));
                let cpu0 = server.cpu_secs();
                let (rate, amount) = measure(scenario, *kind, server.addr, &certs, secs);
                let cpu = server.cpu_secs() - cpu0;
                rates[i].push(rate);
                cpus[i].push(match scenario {
                    Scenario::Handshakes => cpu * 1e6 / amount.max(1.0),
                    Scenario::PingPong => cpu * 1e6 / amount.max(1e-9),
                });
            }
        }
        let rate: Vec<f64> = rates.iter_mut().map(|s| median(s)).collect();
        let cpu: Vec<f64> = cpus.iter_mut().map(|s| median(s)).collect();
        for (i, kind) in kinds.iter().enumerate() {
            let runs: Vec<String> = rates[i].iter().map(|v| format!("{v:.0}")).collect();
            println!(
                "| {} | {} | {:.0} {} | {} | {:.2}x | {:.0} {} | {:.2}x |",
                scenario.name(),
                kind.name(),
                rate[i],
                scenario.unit(),
                runs.join(" "),
                rate[i] / rate[2],
                cpu[i],
                scenario.cpu_unit(),
                cpu[2] / cpu[i],
            );
        }
    }
}

//! The file server's speed and memory: `put` and `get` of a 1 GiB file over loopback with
//! the real `ftp_server` and `ftp_client` (release builds, SHA-256 verified end to end),
//! beside a plain TCP copy of the same bytes in the same run (read the file, send it over
//! loopback, write it and `fsync` it: the same work without the protocol and the hashing),
//! and the server's peak RSS (`VmHWM` in `/proc/PID/status`).
//!
//! `cargo bench --bench transfer`; `BENCH_QUICK=1` moves 8 MiB once, to check that the
//! harness runs (no figure is meaningful then, none is checked); `BENCH_MIB=N` moves N MiB
//! instead of 1024.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 256 * 1024;
const PASSWORD: &str = "bench password";

fn main() -> io::Result<()> {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let mib: u64 = match std::env::var("BENCH_MIB") {
        Ok(n) => n
            .parse()
            .map_err(|_| io::Error::other("BENCH_MIB: a number of MiB"))?,
        Err(_) if quick => 8,
        Err(_) => 1024,
    };
    let (size, runs) = (mib << 20, if quick { 1 } else { 3 });
    let examples = build_examples()?;
    let work = tempfile::Builder::new().prefix("ftpbench").tempdir()?;
    let src = work.path().join("source.bin");
    write_source(&src, size)?;

    let root = work.path().join("root");
    adduser(&examples, &root)?;
    let mut server = Server::start(&examples, &root)?;
    let rss_idle = server.peak_rss_kib()?;
    let client = Client {
        exe: examples.join("ftp_client"),
        addr: server.addr.clone(),
        dir: work.path().to_owned(),
    };

    let mut plain = Vec::new();
    let mut put = Vec::new();
    let mut get = Vec::new();
    for _ in 0..runs {
        plain.push(plain_copy(&src, &work.path().join("plain.bin"), size)?);
        put.push(client.time(&format!("put {} remote.bin", src.display()))?);
        let _ = fs::remove_file(work.path().join("copy.bin"));
        get.push(client.time("get remote.bin copy.bin")?);
    }
    if fs::metadata(work.path().join("copy.bin"))?.len() != size {
        return Err(io::Error::other("the downloaded copy has the wrong size"));
    }
    let rss_peak = server.peak_rss_kib()?;
    server.stop();

    let mb = size as f64 / 1e6;
    let rate = |d: Duration| mb / d.as_secs_f64();
    let (plain, put, get) = (median(plain), median(put), median(get));
    println!("transfer of {mib} MiB over loopback, median of {runs} run(s):");
    println!("  plain TCP copy  {:>8.0} MB/s", rate(plain));
    println!(
        "  put             {:>8.0} MB/s  ({:.2}x plain)",
        rate(put),
        plain.as_secs_f64() / put.as_secs_f64()
    );
    println!(
        "  get             {:>8.0} MB/s  ({:.2}x plain)",
        rate(get),
        plain.as_secs_f64() / get.as_secs_f64()
    );
    println!(
        "  server peak RSS {:>8.1} MiB  (after start: {:.1} MiB)",
        rss_peak as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
    if quick {
        println!("  (BENCH_QUICK: one small run, figures not meaningful)");
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Builds the release examples and returns their directory.
fn build_examples() -> io::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--example",
            "ftp_server",
            "--example",
            "ftp_client",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    if !status.success() {
        return Err(io::Error::other("cargo build of the examples failed"));
    }
    // target/release/deps/transfer-HASH -> target/release/examples
    let exe = std::env::current_exe()?;
    let profile = exe.parent().and_then(Path::parent).expect("target dir");
    Ok(profile.join("examples"))
}

/// `size` bytes of pseudo-random data (xorshift), written 1 MiB at a time.
fn write_source(path: &Path, size: u64) -> io::Result<()> {
    let mut file = io::BufWriter::new(File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()
}

fn adduser(examples: &Path, root: &Path) -> io::Result<()> {
    let mut child = Command::new(examples.join("ftp_server"))
        .arg("--root")
        .arg(root)
        .args(["adduser", "bench", "--quota", "8G"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    writeln!(child.stdin.take().expect("stdin"), "{PASSWORD}")?;
    if child.wait()?.success() {
        Ok(())
    } else {
        Err(io::Error::other("adduser failed"))
    }
}

/// The server under test, stopped (SIGTERM, by its pid) at the end.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(examples: &Path, root: &Path) -> io::Result<Server> {
        let mut child = Command::new(examples.join("ftp_server"))
            .arg("--root")
            .arg(root)
            .args(["--addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| io::Error::other(format!("unexpected first line {line:?}")))?
            .to_owned();
        Ok(Server { child, addr })
    }

    /// `VmHWM` of the server process, in KiB.
    fn peak_rss_kib(&self) -> io::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::other("no VmHWM"))
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The real client, run with `-c`.
struct Client {
    exe: PathBuf,
    addr: String,
    dir: PathBuf,
}

impl Client {
    /// Runs `commands` and returns how long the client took, start to exit.
    fn time(&self, commands: &str) -> io::Result<Duration> {
        let start = Instant::now();
        let out = Command::new(&self.exe)
            .args(["--addr", &self.addr, "--user", "bench", "-c", commands])
            .env("FTP_PASSWORD", PASSWORD)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ftp_client -c {commands:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(took)
    }
}

/// The limit: read `src`, send it over loopback TCP, write it to `dst` and fsync it.
fn plain_copy(src: &Path, dst: &Path, size: u64) -> io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dst = dst.to_owned();
    let start = Instant::now();
    let receiver = thread::spawn(move || -> io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut out = File::create(&dst)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
        out.sync_data()?;
        Ok(total)
    });
    let mut conn = TcpStream::connect(addr)?;
    let mut file = File::open(src)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        conn.write_all(&buf[..n])?;
    }
    drop(conn);
    let received = receiver.join().expect("receiver thread")?;
    let took = start.elapsed();
    if received != size {
        return Err(io::Error::other("plain copy lost bytes"));
    }
    Ok(took)
}

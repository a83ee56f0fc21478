//! Client of the `remote_cmd` example: runs a command on the server and prints its stdout
//! (to stdout) and stderr (to stderr), streamed, never loaded whole.
//!
//! With a command on its command line it runs that one and exits with the remote exit code
//! (128+N if the remote program was killed by signal N, 255 if the server refused or could
//! not run it, like `ssh`). One argument is sent as a command line (`'ls -l /tmp'`); several
//! are quoted for you (`ls -l '/my dir'`). Without a command it reads command lines from
//! stdin, one per line, like the tutorial's `input('>>: ')` loop, and exits with the last
//! exit code.
//!
//! ```text
//! cargo run --example remote_cmd -- --allow ls,echo      # in one terminal
//! cargo run --example remote_cmd_client -- ls -l         # in another
//! cargo run --example remote_cmd_client                  # interactive
//! ```
//! Options: `--addr HOST:PORT` (default 127.0.0.1:8005), `--timeout SECONDS` (default 60);
//! `--tls-ca FILE` talks TLS to a server started with `--tls-cert`, trusting the CAs of that
//! PEM file, and checks the server's name (the host of `--addr`, or `--tls-name NAME`);
//! both need `--features tls`.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use socketserver::framing;

#[derive(Parser)]
#[command(about = "Runs a command on a remote_cmd server")]
struct Cli {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8005")]
    addr: String,
    /// Seconds to wait for the server at each read.
    #[arg(long, default_value = "60", value_parser = seconds)]
    timeout: Duration,
    /// Talk TLS, trusting the CA certificates of this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry. Default: the host of --addr.
    #[arg(long, requires = "tls_ca")]
    tls_name: Option<String>,
    /// The command; without one, command lines are read from stdin.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Deserialize)]
struct Header {
    exit_code: Option<i32>,
    stdout_size: u64,
    stderr_size: u64,
    error: Option<String>,
}

/// The connection: plain TCP, or TLS over it.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Sends one command line and prints its result; returns the exit status to report.
/// A number of seconds: finite and not negative (`inf` is an argument error, not a panic).
fn seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?}: give a finite number of seconds, 0 or more"));
    }
    Duration::try_from_secs_f64(n).map_err(|_| format!("{s:?} seconds is too long"))
}

fn run(conn: &mut BufReader<Box<dyn Conn>>, line: &str) -> io::Result<u8> {
    framing::write_frame(conn.get_mut(), line.as_bytes())?;
    conn.get_mut().flush()?;
    let header: Header = framing::read_json_header(conn)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"))?;
    copy_exact(conn, header.stdout_size, &mut io::stdout().lock())?;
    copy_exact(conn, header.stderr_size, &mut io::stderr().lock())?;
    Ok(match (header.exit_code, header.error) {
        (Some(code), None) if code < 0 => (128 - code).min(255) as u8, // killed by signal -code
        (Some(code), None) => code.clamp(0, 255) as u8,
        (_, error) => {
            eprintln!("remote_cmd: {}", error.as_deref().unwrap_or("no exit code"));
            255
        }
    })
}

fn main() -> io::Result<ExitCode> {
    let cli = Cli::parse();
    let stream = TcpStream::connect(&cli.addr)?;
    stream.set_read_timeout(Some(cli.timeout.max(Duration::from_millis(1))))?;
    let mut conn = BufReader::new(connect(&cli, stream)?);
    let code = match cli.command.as_slice() {
        [] => interactive(&mut conn)?,
        [line] => run(&mut conn, line)?,
        argv => {
            let line = shlex::try_join(argv.iter().map(String::as_str))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            run(&mut conn, &line)?
        }
    };
    Ok(ExitCode::from(code))
}

/// The connection, with TLS when `--tls-ca` is given.
#[cfg(feature = "tls")]
fn connect(cli: &Cli, stream: TcpStream) -> io::Result<Box<dyn Conn>> {
    use socketserver::tls::{self, rustls};
    use std::sync::Arc;

    let Some(ca) = &cli.tls_ca else {
        return Ok(Box::new(stream));
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match &cli.tls_name {
        Some(name) => name.clone(),
        None => match cli.addr.rsplit_once(':') {
            Some((host, _)) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            None => cli.addr.clone(),
        },
    };
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(Box::new(rustls::StreamOwned::new(conn, stream)))
}

#[cfg(not(feature = "tls"))]
fn connect(cli: &Cli, stream: TcpStream) -> io::Result<Box<dyn Conn>> {
    if cli.tls_ca.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--tls-ca needs TLS support: build with `--features tls`",
        ));
    }
    Ok(Box::new(stream))
}

/// Reads command lines from stdin until EOF; empty lines are skipped.
fn interactive(conn: &mut BufReader<Box<dyn Conn>>) -> io::Result<u8> {
    let mut code = 0;
    let mut line = String::new();
    let prompt = io::stdin().is_terminal();
    loop {
        if prompt {
            eprint!(">>: ");
        }
        line.clear();
        if io::stdin().lock().read_line(&mut line)? == 0 {
            return Ok(code);
        }
        if !line.trim().is_empty() {
            code = run(conn, line.trim())?;
        }
    }
}

/// Copies exactly `n` bytes from `r` to `w`.
fn copy_exact(r: &mut impl Read, n: u64, w: &mut impl Write) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "output cut short",
        ));
    }
    w.flush()
}

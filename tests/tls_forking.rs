//! TLS in the forking flavour, in a helper process: the handshake runs in the forked child,
//! and a child whose handshake failed is counted by the parent in
//! `Stats::tls_handshake_failures` (from its exit status), not as a completed request.
//!
//! `fork` belongs in a process whose other threads hold no locks, and the test harness is
//! threaded, so this test has its own `main` (`harness = false`), as tests/forking.rs does:
//! run by cargo, it starts itself again as `tls_forking __serve CERT KEY`; that helper runs
//! a forking TLS server and, after SIGTERM, prints its counters.

#[path = "tls_pki/mod.rs"]
mod tls_pki;
mod util;

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{Flavor, StreamRequest, TcpServer};
use tls_pki::Pki;
use util::TIMEOUT;

/// The helper: a forking TLS server whose handler answers the child's pid and the TLS
/// version, then its counters after shutdown.
fn helper(cert: &str, key: &str) -> io::Result<()> {
    let server = TcpServer::builder()
        .flavor(Flavor::forking())
        .grace_period(Duration::from_secs(5))
        .tls_handshake_timeout(Duration::from_secs(5))
        .tls_pem(cert, key)?
        .bind("127.0.0.1:0")?;
    let handle = server.shutdown_handle();
    socketserver::shutdown_on_signals(&handle)?;
    println!("listening on {}", server.local_addr()?);
    println!("pid {}", std::process::id());
    io::stdout().flush()?;
    server.serve(|req: &mut StreamRequest| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        let version = req.tls_info().map_or("none", |i| i.version());
        writeln!(req, "child {} {version}", std::process::id())
    })?;
    let s = handle.stats();
    println!(
        "stats completed={} errors={} tls_handshake_failures={}",
        s.completed, s.handler_errors, s.tls_handshake_failures
    );
    Ok(())
}

fn forked_tls_handshakes_and_their_failures() {
    let pki = Pki::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["__serve", &pki.p("server.pem"), &pki.p("server.key")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || lines.recv_timeout(TIMEOUT).expect("a line from the helper");
    let addr = next()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    let helper_pid = next().strip_prefix("pid ").expect("pid line").to_string();

    // Plain text: the child's handshake fails.
    let mut plain = util::tcp_client(addr.parse().unwrap());
    plain.write_all(b"plain text, not TLS\n").unwrap();
    let reply = util::read_to_end(&mut plain);
    assert!(!reply.starts_with(b"child"), "{reply:?}");

    // A real client: served by a child, over TLS 1.3.
    let out = util::python(
        r#"
import socket, ssl, sys
host, port = sys.argv[1].rsplit(':', 1)
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname='localhost')
s.sendall(b'hi\n')
print(s.recv(100).decode().strip())
"#,
        &[&addr, &pki.p("ca.pem")],
    );
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{out}");
    assert_eq!((words[0], words[2]), ("child", "TLSv1.3"), "{out}");
    assert_ne!(words[1], helper_pid, "the handshake ran in a forked child");

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper did not exit after SIGTERM");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "helper exited with {status}");
    let stats = next();
    assert_eq!(
        stats, "stats completed=1 errors=0 tls_handshake_failures=1",
        "the failed handshake is counted, and not as a completed request"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__serve") {
        if let Err(e) = helper(&args[2], &args[3]) {
            eprintln!("helper failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let filter: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let name = "forked_tls_handshakes_and_their_failures";
    if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
        println!("0 passed, 0 failed (filtered out)");
        return;
    }
    match std::panic::catch_unwind(forked_tls_handshakes_and_their_failures) {
        Ok(()) => println!("test tls_forking::{name} ... ok\n1 passed, 0 failed"),
        Err(_) => {
            println!("test tls_forking::{name} ... FAILED");
            std::process::exit(1);
        }
    }
}

//! Three `whoami` processes behind a real HAProxy (Debian's package; `.ci/run` installs it)
//! on loopback, with `send-proxy-v2 check` and with v1 `send-proxy check`: every answer
//! names the client's own source port, every backend serves, health checks are not logged
//! as warnings or errors, and a backend killed mid-run leaves the other clients unharmed.

mod deploy;
mod util;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use deploy::{free_port, signal, wait_gone, warnings, whoami, whoami_traced, Proc, Reply};

const CLIENTS: usize = 300;
const THREADS: usize = 4;

/// The HAProxy binary, or `None` (with the reason printed) when it is not installed.
fn haproxy() -> Option<&'static str> {
    match Command::new("haproxy").arg("-v").output() {
        Ok(out) if out.status.success() => Some("haproxy"),
        _ => {
            eprintln!(
                "SKIPPED: haproxy is not installed (apt-get install haproxy; .ci/run does it)"
            );
            None
        }
    }
}

/// Starts HAProxy in the foreground with a frontend on a free loopback port and one
/// `server` line per backend; waits until it answers.
fn start_haproxy(
    bin: &str,
    dir: &tempfile::TempDir,
    backends: &[SocketAddr],
    send: &str,
) -> (Proc, SocketAddr) {
    let fe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cfg = format!(
        "global\n    maxconn 2000\n    log stderr format raw local0 info\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    \
         timeout connect 2s\n    timeout client 10s\n    \
         timeout server 10s\n    retries 3\n    option redispatch\n\
         frontend fe\n    bind {fe}\n    default_backend be\n\
         backend be\n    balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} {b} {send} check inter 100ms fall 1 rise 1\n"
        ));
    }
    let path = dir.path().join("haproxy.cfg");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(cfg.as_bytes())
        .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&path);
    let p = Proc::spawn(cmd);
    // Wait for the frontend to answer with a backend's reply (bounded).
    let deadline = Instant::now() + util::TIMEOUT;
    loop {
        if whoami(fe).is_ok() {
            return (p, fe);
        }
        assert!(
            Instant::now() < deadline,
            "haproxy did not start: {}",
            p.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn behind_haproxy(send: &str) {
    util::build_examples();
    let Some(bin) = haproxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut backends: Vec<(Proc, SocketAddr)> = (0..3)
        .map(|_| {
            Proc::example(
                "whoami",
                &["--addr", "127.0.0.1:0", "--proxy-protocol"],
                &[],
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.1).collect();
    let pids: Vec<u32> = backends.iter().map(|b| b.0.pid()).collect();
    let (mut lb, fe) = start_haproxy(bin, &dir, &addrs, send);

    // Part 1: 300 connections, 4 at a time.
    let (replies, _) = run_clients(fe, CLIENTS, None);
    let ok: Vec<&Reply> = replies
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    let failed: Vec<_> = replies
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    assert!(failed.is_empty(), "failed clients: {failed:?}");
    for r in &ok {
        assert_eq!(
            r.peer,
            r.client.to_string(),
            "the answer must name the client's own address and port"
        );
    }
    let served: HashSet<u32> = ok.iter().map(|r| r.pid).collect();
    assert_eq!(
        served,
        pids.iter().copied().collect(),
        "all three backends serve"
    );

    // Part 2: one backend killed (SIGKILL) mid-run, the clients going on meanwhile.
    let victim = pids[1];
    let (replies, kill) = run_clients(fe, CLIENTS, Some((CLIENTS / 2, victim, addrs[1])));
    let kill = kill.expect("the backend was killed");
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    let mut failed = Vec::new();
    for o in &replies {
        match &o.result {
            Ok(r) => {
                assert_eq!(r.peer, r.client.to_string());
                *by_pid.entry(r.pid).or_default() += 1;
            }
            // A failed client must have been HAProxy's client of the victim (its log names
            // the server of each connection) and open while the victim died: a client of
            // the others must never fail.
            Err(e) => failed.push((o.client, o.began, o.ended, e.clone())),
        }
    }
    assert!(by_pid[&pids[0]] > 0 && by_pid[&pids[2]] > 0, "{by_pid:?}");
    // After the kill, HAProxy routes around it: every answer comes from the others.
    let (after, _) = run_clients(fe, 30, None);
    for o in &after {
        let r = o
            .result
            .as_ref()
            .expect("a client failed after the balancer routed around");
        assert_ne!(r.pid, victim);
    }

    // Stop HAProxy to have all of its log (it writes a connection's line when it ends).
    let _ = lb.child.kill();
    let _ = lb.child.wait();
    let log = lb.stderr();
    for (client, began, ended, e) in &failed {
        let client = client.unwrap_or_else(|| panic!("a client could not connect: {e}"));
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{client} ")))
            .unwrap_or_else(|| panic!("no HAProxy log line for client {client}: {e}"));
        assert!(
            line.contains("be/s1 "),
            "a client of another backend failed ({e}): {line}"
        );
        assert!(
            *began <= kill.gone && *ended >= kill.sent,
            "a client of the victim failed outside its death: {e}: {line}"
        );
    }
    for (i, (b, _)) in backends.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        let w = warnings(&b.stderr());
        assert!(
            w.is_empty(),
            "health checks and clients must not be logged as warnings: {w:?}"
        );
    }
    if !failed.is_empty() {
        eprintln!(
            "{} client(s) of the killed backend failed (HAProxy's log names it)",
            failed.len()
        );
    }
}

/// One client's outcome and when its connection was open.
struct Outcome {
    result: Result<Reply, String>,
    client: Option<SocketAddr>,
    began: Instant,
    ended: Instant,
}

/// When a backend was killed: from the signal to its port refusing connections.
#[derive(Clone, Copy)]
struct Kill {
    sent: Instant,
    gone: Instant,
}

/// Runs `n` whoami clients through `fe`, `THREADS` at a time. With `kill = Some((k, pid))`,
/// `pid` (listening on the address) is killed with SIGKILL (by another thread, while the
/// clients go on) once `k` clients have finished.
fn run_clients(
    fe: SocketAddr,
    n: usize,
    kill: Option<(usize, u32, SocketAddr)>,
) -> (Vec<Outcome>, Option<Kill>) {
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let next = Arc::new(AtomicUsize::new(0));
    let killer = kill.map(|(k, pid, addr)| {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let deadline = Instant::now() + util::TIMEOUT;
            while done.load(Ordering::SeqCst) < k {
                assert!(Instant::now() < deadline, "the clients stalled");
                thread::sleep(Duration::from_millis(1));
            }
            let sent = Instant::now();
            assert!(signal(pid, "KILL"));
            // Its listening socket is closed when the last of its threads has exited (the
            // process may look like a zombie before): then its port refuses.
            while TcpStream::connect(addr).is_ok() {
                assert!(
                    Instant::now() < deadline + util::TIMEOUT,
                    "the victim lives on"
                );
                thread::sleep(Duration::from_millis(1));
            }
            assert!(wait_gone(pid, util::TIMEOUT));
            Kill {
                sent,
                gone: Instant::now(),
            }
        })
    });
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (done, results, next) =
                (Arc::clone(&done), Arc::clone(&results), Arc::clone(&next));
            thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let began = Instant::now();
                    let (client, result) = whoami_traced(fe);
                    let result = result.map_err(|e| e.to_string());
                    let ended = Instant::now();
                    results.lock().unwrap().push(Outcome {
                        result,
                        client,
                        began,
                        ended,
                    });
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let kill = killer.map(|k| k.join().unwrap());
    let v = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(v.len(), n);
    (v, kill)
}

#[test]
fn behind_haproxy_send_proxy_v2() {
    behind_haproxy("send-proxy-v2");
}

#[test]
fn behind_haproxy_send_proxy_v1() {
    behind_haproxy("send-proxy");
}

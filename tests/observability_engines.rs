//! The admin listener with the engines operators run (issue 21), each from Debian's
//! packages (`.ci/run` installs them): a real Prometheus scraping an example, the status
//! page in headless Chromium (a screenshot kept under target/), and a rolling stop behind
//! HAProxy that checks `/readyz`, with zero failed exchanges.

mod deploy;
mod obs;
mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use deploy::{free_port, Proc};
use obs::get;

/// Whether `bin` runs (`--version`); else prints why the test is skipped.
fn installed(bin: &str, package: &str) -> bool {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: {bin} is not installed (apt-get install {package}; .ci/run does it)");
    }
    ok
}

/// An echo example with the admin listener on: the process, its address, its admin
/// address.
fn echo_with_metrics(extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let mut args = vec!["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (p, addr) = Proc::example("echo", &args, &[]);
    let line = p.next_line();
    let admin = line
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("second line {line:?}"))
        .parse()
        .unwrap();
    (p, addr, admin)
}

fn echo_once(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, util::TIMEOUT)?;
    s.set_read_timeout(Some(util::TIMEOUT))?;
    s.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply)?;
    Ok(reply)
}

/// Runs `cmd` to its end within `limit` (killed by its pid past it): its output.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            deploy::signal(pid, "KILL");
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

/// `target/`, where the screenshot is kept.
fn target_dir() -> PathBuf {
    let examples = util::example_path("x");
    examples.ancestors().nth(3).unwrap().to_path_buf()
}

#[test]
fn a_real_prometheus_scrapes_an_example() {
    util::build_examples();
    if !installed("prometheus", "prometheus") {
        return;
    }
    let (_echo, addr, admin) = echo_with_metrics(&[]);
    const N: usize = 15;
    for _ in 0..N {
        assert_eq!(echo_once(addr, "scraped\n").unwrap(), "scraped\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: echo\n    static_configs:\n      \
             - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"));
    let prom = Proc::spawn(cmd);
    // The query API answers the scraped values (Prometheus scrapes every second).
    let query = |q: &str| -> Option<String> {
        let raw = format!(
            "GET /api/v1/query?query={q} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let answer = obs::exchange(web, raw.as_bytes(), Duration::from_secs(5)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let accepted = loop {
        if let Some(v) = query("socketserver_connections_accepted_total") {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the sample; its log: {}",
            prom.stderr()
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(accepted, N.to_string());
    assert_eq!(query("up").as_deref(), Some("1"));
    assert!(
        query("socketserver_requests_total%3E0").is_some(),
        "requests counted"
    );
}

#[test]
fn status_page_in_headless_chromium() {
    util::build_examples();
    if !installed("chromium", "chromium") {
        return;
    }
    let (_echo, addr, admin) = echo_with_metrics(&[]);
    for _ in 0..7 {
        assert_eq!(echo_once(addr, "page\n").unwrap(), "page\n");
    }
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[String]| {
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("http://{admin}/status"));
        run_bounded(cmd, Duration::from_secs(60))
    };
    let dom = chromium(&["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains(&format!("<h2>{addr}</h2>")), "{dom}");
    assert!(dom.contains("connections accepted"), "{dom}");
    assert!(dom.contains("<td>7</td>"), "the 7 connections: {dom}");
    assert!(dom.contains(">ready<"), "{dom}");

    let shot = target_dir().join("observability-status.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1100,900".to_string(),
        "--hide-scrollbars".to_string(),
    ]);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000,
        "a PNG"
    );
}

#[test]
fn rolling_stop_behind_haproxy_with_readyz_checks_loses_no_exchange() {
    util::build_examples();
    if !installed("haproxy", "haproxy") {
        return;
    }
    let backends: Vec<(Proc, SocketAddr, SocketAddr)> = (0..2)
        .map(|_| echo_with_metrics(&["--shutdown-delay", "2"]))
        .collect();
    let fe: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cfg = format!(
        "global\n    maxconn 2000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    \
         timeout server 10s\n    retries 0\n\
         frontend fe\n    bind {fe}\n    default_backend be\n\
         backend be\n    balance roundrobin\n    option httpchk GET /readyz\n    \
         http-check expect status 200\n"
    );
    for (i, (_, addr, admin)) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} {addr} check port {} inter 100ms fall 1 rise 1\n",
            admin.port()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let lb = Proc::spawn(cmd);
    util::wait_for(
        "HAProxy serving",
        || echo_once(fe, "up\n").ok(),
        |r| r.as_deref() == Some("up\n"),
    );

    // Clients run all along: one exchange per connection, four at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && i < 100_000 {
                    let line = format!("{t}-{i}\n");
                    match echo_once(fe, &line) {
                        Ok(reply) if reply == line => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("{line:?}: {other:?}")),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let served = |admin: SocketAddr| {
        let m = get(admin, "/metrics").body;
        obs::sample(&m, "socketserver_connections_accepted_total", "").unwrap_or(0.0)
    };
    // Both backends take clients before the stop.
    util::wait_until("both backends serving", || {
        backends.iter().all(|(_, _, admin)| served(*admin) >= 20.0)
    });
    let mut backends = backends;
    let (mut victim, _, _) = backends.remove(0);
    let _survivor = backends; // serving until the end
    deploy::signal(victim.pid(), "TERM");
    let code = victim.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "the stopped backend exits 0");
    // A little more traffic on the survivor, then the verdict.
    let after = done.load(Ordering::SeqCst);
    util::wait_until("clients served after the stop", || {
        done.load(Ordering::SeqCst) >= after + 50
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed exchanges of {}: {:?}; HAProxy: {}",
        failures.len(),
        done.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)],
        lb.stderr()
    );
}

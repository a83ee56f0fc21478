//! systemd socket activation, as `systemd-socket-activate` does it: a bound, listening
//! socket passed as descriptor 3 with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES (here by a
//! python3 launcher that execs the example, keeping its pid); a LISTEN_PID for another
//! process is ignored; READY=1 and STOPPING=1 reach NOTIFY_SOCKET. And `--reuseport`:
//! four processes on one port all serve.

mod deploy;
mod util;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use deploy::{signal, whoami, Proc};
use util::{example_path, TempPath, TIMEOUT};

/// Binds a socket (a listening TCP one, or UDP when $SOCK_TYPE is "udp"), prints
/// `bound ADDR`, puts it at fd 3 and execs the example with LISTEN_FDS=1,
/// LISTEN_PID=(own pid, or argv[1] when not "self"), LISTEN_FDNAMES.
const LAUNCHER: &str = r#"
import os, socket, sys
udp = os.environ.get("SOCK_TYPE") == "udp"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
if not udp:
    s.listen(16)
print("bound %s:%d" % s.getsockname(), flush=True)
if s.fileno() == 3:
    os.set_inheritable(3, True)
else:
    os.dup2(s.fileno(), 3)
env = dict(os.environ)
env["LISTEN_FDS"] = "1"
env["LISTEN_PID"] = str(os.getpid()) if sys.argv[1] == "self" else sys.argv[1]
env["LISTEN_FDNAMES"] = "whoami"
os.execve(sys.argv[2], sys.argv[2:], env)
"#;

fn activated(listen_pid: &str) -> (Proc, SocketAddr, SocketAddr) {
    activated_example("whoami", listen_pid, "tcp")
}

fn activated_example(name: &str, listen_pid: &str, ty: &str) -> (Proc, SocketAddr, SocketAddr) {
    util::build_examples();
    let exe = example_path(name);
    let mut cmd = Command::new("python3");
    cmd.args(["-c", LAUNCHER, listen_pid])
        .arg(&exe)
        .args(["--addr", "127.0.0.1:0"])
        .env("SOCK_TYPE", ty)
        .env("RUST_LOG", "info");
    let p = Proc::spawn(cmd);
    let bound: SocketAddr = p
        .next_line()
        .strip_prefix("bound ")
        .expect("the launcher's line")
        .parse()
        .unwrap();
    let listening = p.listening();
    (p, bound, listening)
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let (p, bound, listening) = activated("self");
    assert_eq!(
        listening, bound,
        "the listening line names the inherited socket"
    );
    let r = whoami(bound).unwrap();
    assert_eq!(r.pid, p.pid(), "the launcher exec'd: same pid");
    assert_eq!(r.local, bound.to_string());
    assert_eq!(r.peer, r.client.to_string());
}

#[test]
fn udp_socket_activation() {
    let (_p, bound, listening) = activated_example("echo_udp", "self", "udp");
    assert_eq!(listening, bound);
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_to(b"activated", bound).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"activated"[..], bound));
}

#[test]
fn activated_server_restarts_on_sighup_with_the_same_socket() {
    let (mut p, bound, _) = activated("self");
    let old = p.pid();
    assert!(signal(old, "HUP"));
    assert_eq!(
        p.listening(),
        bound,
        "the new process serves the systemd socket"
    );
    let deadline = std::time::Instant::now() + TIMEOUT;
    let new = loop {
        let r = whoami(bound).expect("served across the restart");
        if r.pid != old {
            break r.pid;
        }
        assert!(std::time::Instant::now() < deadline, "no new process");
    };
    let guard = deploy::PidGuard(new);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(signal(new, "TERM"));
    assert!(deploy::wait_gone(new, Duration::from_secs(10)));
    guard.defuse();
}

#[test]
fn wrong_listen_pid_is_ignored() {
    let (p, bound, listening) = activated("1");
    assert_ne!(
        listening, bound,
        "descriptors for another pid are not taken"
    );
    assert_eq!(listening.ip().to_string(), "127.0.0.1");
    assert_eq!(whoami(listening).unwrap().pid, p.pid());
    assert!(
        p.stderr().contains("ignoring LISTEN_FDS=1"),
        "{}",
        p.stderr()
    );
}

#[test]
fn ready_and_stopping_notifications() {
    util::build_examples();
    let tmp = TempPath::new("notify");
    let sock = UnixDatagram::bind(tmp.path()).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let path = tmp.path().to_str().unwrap().to_string();
    let (mut p, addr) = Proc::example(
        "whoami",
        &["--addr", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", &path)],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within the timeout");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert!(whoami(addr).is_ok());
    assert!(signal(p.pid(), "TERM"));
    let n = sock.recv(&mut buf).expect("STOPPING=1 within the timeout");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn notifications_across_a_sighup_restart() {
    util::build_examples();
    let tmp = TempPath::new("notify");
    let sock = UnixDatagram::bind(tmp.path()).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let path = tmp.path().to_str().unwrap().to_string();
    let (mut p, addr) = Proc::example(
        "whoami",
        &["--addr", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", &path)],
    );
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock
            .recv(&mut buf)
            .expect("a notification within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\n");
    assert!(signal(p.pid(), "HUP"));
    assert_eq!(next(), "READY=1\n", "the new process is ready");
    let main_pid = next();
    let new: u32 = main_pid
        .strip_prefix("MAINPID=")
        .and_then(|s| s.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("expected MAINPID=, got {main_pid:?}"));
    let guard = deploy::PidGuard(new);
    assert_eq!(whoami(addr).unwrap().pid, new);
    // The old process drains and exits without telling the manager the service stops.
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    sock.set_nonblocking(true).unwrap();
    let pending = sock
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(pending.is_err(), "unexpected notification {pending:?}");
    sock.set_nonblocking(false).unwrap();
    assert!(signal(new, "TERM"));
    let n = sock
        .recv(&mut buf)
        .expect("STOPPING=1 from the new process");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(deploy::wait_gone(new, Duration::from_secs(10)));
    guard.defuse();
}

#[test]
fn reuseport_four_processes_share_one_port() {
    util::build_examples();
    let (first, addr) = Proc::example("whoami", &["--addr", "127.0.0.1:0", "--reuseport"], &[]);
    let a = addr.to_string();
    let mut procs = vec![first];
    for _ in 0..3 {
        let (p, got) = Proc::example("whoami", &["--addr", &a, "--reuseport"], &[]);
        assert_eq!(got, addr);
        procs.push(p);
    }
    let pids: HashSet<u32> = procs.iter().map(Proc::pid).collect();
    // A churn load: 400 short connections, each a new 4-tuple for the kernel's hash.
    let mut served = HashSet::new();
    for _ in 0..400 {
        let r = whoami(addr).expect("every connection is served");
        assert_eq!(r.peer, r.client.to_string());
        served.insert(r.pid);
    }
    assert_eq!(
        served, pids,
        "the kernel spread the connections over all four"
    );
}

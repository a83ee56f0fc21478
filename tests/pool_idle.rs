//! Issue 13, finding 4: `Flavor::pool().worker_idle_timeout(Duration::ZERO)` made every warm
//! worker spin (about 2 CPU-seconds per second with 2 workers). Warm workers now wait for
//! work without a timeout. Alone in its test binary, so the process's CPU time is the
//! pool's.

mod util;

use std::io::Write;
use std::thread;
use std::time::Duration;

use socketserver::{Flavor, TcpServer};
use util::Running;

/// CPU time this process has used (user + system), from /proc/self/stat, in clock ticks
/// of 10 ms (USER_HZ is 100 on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file; 3rd and later after the comm.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_zero_worker_idle_timeout_does_not_spin() {
    let mut srv = Running::serve(
        TcpServer::builder().flavor(
            Flavor::pool()
                .workers(2)
                .worker_idle_timeout(Duration::ZERO),
        ),
        util::line_echo,
    );
    let (addr, handle) = (srv.addr, srv.handle.clone());
    // The pool grows past its warm workers under 4 clients, and the extra threads leave
    // as soon as they find no work.
    let mut clients: Vec<_> = (0..4).map(|_| util::tcp_client(addr)).collect();
    for c in &mut clients {
        c.write_all(b"hi\n").unwrap();
        assert_eq!(util::read_until(c, |g| g.ends_with(b"\n")), b"hi\n");
    }
    // Four busy workers and one more waiting for the next client (it starts within a
    // look of the serving thread, about a millisecond, and no more start after it).
    util::wait_until("a worker started for the next client", || {
        handle.stats().threads >= 5
    });
    let mut c = util::tcp_client(addr);
    c.write_all(b"fifth\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"fifth\n");
    assert!(
        handle.stats().threads <= 6,
        "{} threads",
        handle.stats().threads
    );
    clients.push(c);
    drop(clients);
    util::wait_until("the extra workers leaving", || handle.stats().threads <= 2);
    // Idle now: measure the CPU the process uses over half a second. Spinning workers used
    // about 100 ticks (two cores) in that window; waiting ones use none.
    let before = cpu_ticks();
    thread::sleep(Duration::from_millis(500)); // the window measured, not a wait for an event
    let used = cpu_ticks() - before;
    assert!(
        used <= 10,
        "the idle pool used {used} ticks of CPU in 500 ms"
    );
    // And it still serves.
    let mut c = util::tcp_client(addr);
    c.write_all(b"again\n").unwrap();
    assert_eq!(util::read_until(&mut c, |g| g.ends_with(b"\n")), b"again\n");
    drop(c);
    srv.stop();
}

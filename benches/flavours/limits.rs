//! What the system allows the rows of many connections, read from `/proc`: descriptors
//! (`RLIMIT_NOFILE`, `fs.nr_open`, `fs.file-max`), threads (`kernel.pid_max`,
//! `kernel.threads-max`, `vm.max_map_count`), ephemeral ports
//! (`net.ipv4.ip_local_port_range`), the listen backlog (`net.core.somaxconn`), and what the
//! kernel's TCP sockets hold (`/proc/net/sockstat` against `net.ipv4.tcp_mem`).
//!
//! Only the descriptor limits are ever raised, and only when a chosen row needs more than
//! the hard limit: the process's own limit (root may raise it), and `fs.nr_open` and
//! `fs.file-max` if they are below what that takes (root only; every change is printed with
//! the value it replaced). Thread limits are read, never raised: a thread-per-connection
//! server that does not fit in them is skipped with the numbers that rule it out.

use std::fs;
use std::net::Ipv4Addr;

/// Memory maps a Rust thread adds to its process (measured with `std::thread::spawn`: its
/// stack, the stack's guard page, its signal stack and that stack's guard page); the
/// process may hold `vm.max_map_count`.
const MAPS_PER_THREAD: u64 = 4;
/// Tasks left for the rest of the machine when a server's threads are counted against the
/// system-wide `pid_max` and `threads-max` (the machine is shared: a server that took the
/// last pids would break other people's work, not only its own).
const TASK_RESERVE: u64 = 1024;
/// The part of one source address's ephemeral ports the idle connections take: `bind`'s
/// search for a free port gets slower as the range fills.
const PORT_SHARE: (u64, u64) = (3, 4);
/// Descriptors a process holds besides its connections (listener, event set, pipes,
/// standard streams, libraries).
pub const SPARE_DESCRIPTORS: u64 = 256;

/// `/proc/sys/NAME` (`NAME` in its path form, `fs/nr_open`), trimmed.
fn sysctl(name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/sys/{name}")).ok()?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The first number of `/proc/sys/NAME`.
fn sysctl_u64(name: &str) -> Option<u64> {
    sysctl(name)?.split_whitespace().next()?.parse().ok()
}

/// `fs/nr_open` as `sysctl` spells it: `fs.nr_open`.
fn dotted(name: &str) -> String {
    name.replace('/', ".")
}

/// Raises `/proc/sys/NAME` to `want` if it is below (root only), saying what it did or why
/// it could not; returns the value in force.
fn raise_sysctl(name: &str, want: u64) -> Option<u64> {
    let now = sysctl_u64(name)?;
    if now >= want {
        return Some(now);
    }
    let key = dotted(name);
    match fs::write(format!("/proc/sys/{name}"), want.to_string()) {
        Ok(()) => {
            eprintln!(
                "{key} raised from {now} to {want} for this run (root); restore with: sysctl -w {key}={now}"
            );
            Some(want)
        }
        Err(e) => {
            eprintln!("{key} is {now}, below the {want} this run needs, and cannot be raised here ({e}): as root, sysctl -w {key}={want}");
            Some(now)
        }
    }
}

/// Whether this process may raise a hard resource limit: `CAP_SYS_RESOURCE` (bit 24) in
/// its effective capabilities (`CapEff` of `/proc/self/status`). Root usually has it; a
/// container or sandbox may run root without it.
fn may_raise_hard_limits() -> Option<bool> {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps >> CAP_SYS_RESOURCE & 1 == 1)
}

/// Makes room for `needed` descriptors in this process and in the servers it starts (they
/// inherit its limit), `processes` such processes at once, and returns the soft limit in
/// force. Within the hard limit, the soft one is raised to it (as for every run); above it,
/// the hard limit is raised to `needed` where this process may (`CAP_SYS_RESOURCE`, which
/// root usually has), after `fs.nr_open` (the most any process may be given) and
/// `fs.file-max` (descriptors open in the whole system) are checked and, as root, raised if
/// they are below.
pub fn descriptors(needed: u64, processes: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if needed <= hard {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return hard;
        }
        return soft;
    }
    if may_raise_hard_limits() == Some(false) {
        eprintln!("RLIMIT_NOFILE: the hard limit {hard} is below the {needed} needed, and this process cannot raise it: it lacks CAP_SYS_RESOURCE (CapEff in /proc/self/status; root in a container or sandbox may run without it). Raise it where the bench is started (ulimit -Hn, LimitNOFILE=, prlimit by a process that has the capability)");
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return hard;
        }
        return soft;
    }
    raise_sysctl("fs/nr_open", needed);
    let open_now = sysctl_u64("fs/file-nr").unwrap_or(0);
    raise_sysctl("fs/file-max", needed * processes + open_now);
    match setrlimit(Resource::RLIMIT_NOFILE, needed, needed) {
        Ok(()) => {
            eprintln!("RLIMIT_NOFILE raised from {soft} (soft) / {hard} (hard) to {needed} for this bench and its servers");
            needed
        }
        Err(e) => {
            eprintln!("RLIMIT_NOFILE: the hard limit {hard} is below the {needed} needed and cannot be raised here ({e}): raise it as root (ulimit -Hn, LimitNOFILE=)");
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                return hard;
            }
            soft
        }
    }
}

/// Tasks (threads) on the whole machine now: the total of `/proc/loadavg`'s 4th field.
fn tasks_now() -> Option<u64> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Why a server that holds a thread per connection cannot run `threads` threads here, if
/// it cannot: the system-wide `kernel.pid_max` and `kernel.threads-max` (less the tasks
/// running now and `TASK_RESERVE`), and the per-process `vm.max_map_count`.
pub fn threads_refused(threads: u64) -> Option<String> {
    let tasks = tasks_now().unwrap_or(0);
    let mut short = Vec::new();
    for name in ["kernel/pid_max", "kernel/threads-max"] {
        let Some(max) = sysctl_u64(name) else {
            continue;
        };
        let room = max.saturating_sub(tasks + TASK_RESERVE);
        if room < threads {
            short.push(format!(
                "{} is {max}, with {tasks} tasks running and {TASK_RESERVE} left to the rest of the machine: room for {room}",
                dotted(name)
            ));
        }
    }
    if let Some(maps) = sysctl_u64("vm/max_map_count") {
        let room = maps / MAPS_PER_THREAD;
        if room < threads {
            short.push(format!(
                "vm.max_map_count is {maps}, {MAPS_PER_THREAD} maps per thread (stack, guard page, signal stack and its guard): room for {room}"
            ));
        }
    }
    (!short.is_empty()).then(|| {
        format!(
            "a thread per connection needs {threads} threads here; {} (not raised: the row measures the servers as this machine allows them)",
            short.join("; ")
        )
    })
}

/// Ephemeral ports of one source address (`net.ipv4.ip_local_port_range`, both ends
/// included).
fn ephemeral_ports() -> Option<(u64, u64)> {
    let range = sysctl("net/ipv4/ip_local_port_range")?;
    let mut ends = range.split_whitespace().map(|v| v.parse::<u64>());
    let (low, high) = (ends.next()?.ok()?, ends.next()?.ok()?);
    (high >= low).then_some((low, high))
}

/// Idle connections given to one source address: `PORT_SHARE` of its ephemeral ports, or
/// `BENCH_IDLE_PER_SOURCE` (to spread a smaller row over several addresses, say).
fn per_source() -> u64 {
    if let Some(n) = std::env::var("BENCH_IDLE_PER_SOURCE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let (low, high) = ephemeral_ports().unwrap_or((32768, 60999));
    ((high - low + 1) * PORT_SHARE.0 / PORT_SHARE.1).max(1)
}

/// The source addresses `n` idle connections to 127.0.0.1 are spread over (round robin):
/// none where one address's ephemeral ports hold them (the kernel picks 127.0.0.1 and a
/// port, as every other row does), else 127.0.0.2, 127.0.0.3, ... (every 127/8 address is
/// local on Linux), each taking at most `per_source` of them. A connection is a
/// (source address, source port) pair to the one server address: one source's ports
/// would run out near 28 000.
pub fn idle_sources(n: usize) -> Vec<Ipv4Addr> {
    let per = per_source();
    if n as u64 <= per {
        return Vec::new();
    }
    let count = (n as u64).div_ceil(per).min(250) as u8;
    (0..count)
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
        .collect()
}

/// What bounds a row of `idle` silent connections besides the descriptors, for its
/// report: ports, backlog, TCP memory, open files.
pub fn summary(idle: usize) -> String {
    let sources = idle_sources(idle);
    let ports = match ephemeral_ports() {
        Some((low, high)) => format!(
            "ip_local_port_range {low}-{high} ({} ports a source address)",
            high - low + 1
        ),
        None => "ip_local_port_range unknown".into(),
    };
    let spread = match (sources.first(), sources.last()) {
        (Some(first), Some(last)) => format!(
            "idle connections from {first}-{last} ({} addresses, at most {} each)",
            sources.len(),
            per_source()
        ),
        _ => "idle connections from 127.0.0.1".into(),
    };
    let get = |name: &str| sysctl(name).unwrap_or_else(|| "?".into());
    format!(
        "{ports}, {spread}; net.core.somaxconn {} (the servers ask for 1024), tcp_max_syn_backlog {}; tcp_mem {} pages; fs.nr_open {}, fs.file-max {}, fs.file-nr {}",
        get("net/core/somaxconn"),
        get("net/ipv4/tcp_max_syn_backlog"),
        get("net/ipv4/tcp_mem"),
        get("fs/nr_open"),
        get("fs/file-max"),
        get("fs/file-nr"),
    )
}

/// The kernel's TCP sockets now (`/proc/net/sockstat`: sockets in use, in TIME_WAIT,
/// and the pages their buffers hold, which `net.ipv4.tcp_mem` bounds), and the
/// connection-tracking table's entries where it exists.
pub fn sockstat() -> String {
    let tcp = fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("TCP:")).map(str::to_owned))
        .unwrap_or_else(|| "TCP: ?".into());
    match sysctl_u64("net/netfilter/nf_conntrack_count") {
        Some(n) => format!("{tcp}; nf_conntrack_count {n}"),
        None => tcp,
    }
}

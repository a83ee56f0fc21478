//! What `/proc` tells: a server's CPU time and memory, this process's CPU time, and how busy
//! the whole machine is (other people's work on a shared machine shows up there).

use std::fs;
use std::io;
use std::process::Command;

/// A process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    /// User + system time of the process, its threads and its children (live or reaped),
    /// in clock ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Threads now.
    pub threads: u64,
    /// Of them, the crate's pool workers (threads named `socketserver-worker`, and the
    /// accepting threads, `socketserver-accept`, which are workers that accept).
    pub workers: u64,
}

/// Reads process `pid`'s CPU time (children included), peak RSS and thread count.
pub fn process(pid: u32) -> io::Result<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let own = stat_fields(&stat).ok_or_else(|| parse_error("stat"))?;
    Ok(ProcStat {
        cpu_ticks: own.cpu_ticks() + live_children_ticks(pid),
        peak_rss_kib: status_field(&status, "VmHWM:").ok_or_else(|| parse_error("VmHWM"))?,
        threads: status_field(&status, "Threads:").unwrap_or(0),
        workers: worker_threads(pid),
    })
}

/// How many of process `pid`'s threads are the crate's pool workers, accepting threads
/// included (the kernel keeps the first 15 bytes of a thread's name).
fn worker_threads(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("socketserver-wo") || comm.starts_with("socketserver-ac"))
        .count() as u64
}

/// CPU time of this process (the bench and its client threads, not its children), in clock
/// ticks.
pub fn own_ticks() -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let own = stat_fields(&stat).ok_or_else(|| parse_error("stat"))?;
    Ok(own.times[0] + own.times[1])
}

/// Busy time of the whole machine, every CPU added up, in clock ticks (user, nice, system,
/// irq, softirq and steal from the first line of `/proc/stat`).
pub fn machine_busy_ticks() -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| parse_error("/proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Ok(busy)
}

fn parse_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cannot parse /proc {what}"),
    )
}

/// The fields of `/proc/PID/stat` this bench uses.
#[derive(Clone, Copy, Debug)]
struct StatFields {
    ppid: u32,
    /// utime, stime, cutime, cstime.
    times: [u64; 4],
}

impl StatFields {
    /// CPU time of the process and of its children already reaped.
    fn cpu_ticks(&self) -> u64 {
        self.times.iter().sum()
    }
}

/// Parses `/proc/PID/stat`: fields are counted after the command name's closing
/// parenthesis (the name may hold spaces), so field N (1-based) is at index N - 3.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        ppid: u32::try_from(num(4)?).ok()?,
        times: [num(14)?, num(15)?, num(16)?, num(17)?],
    })
}

/// User + system time of the live children of `pid` (a forking server's connections):
/// their time reaches the parent's `cutime` only once they are reaped.
fn live_children_ticks(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| stat_fields(&s))
        .filter(|f| f.ppid == pid)
        .map(|f| f.times[0] + f.times[1])
        .sum()
}

/// A `Name:   123 kB`-style field of `/proc/PID/status`.
fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 if that cannot be asked.
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

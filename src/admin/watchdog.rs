//! The systemd watchdog: with `WATCHDOG_USEC` set (and `WATCHDOG_PID` unset or ours),
//! `WATCHDOG=1` is sent every half interval, but only while every serving server's
//! accept loop makes progress: a server whose socket has work waiting (a connection in
//! the backlog, a datagram queued) that was not taken since the last look, twice in a row,
//! is stuck, and the pings stop until it moves again (a free-running timer would tell
//! systemd all is well while nothing is served). An idle server, with nothing waiting, is
//! not stuck.

use std::os::unix::io::RawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::shared::Shared;
use crate::sys;

/// One server the watchdog looks at.
struct Watched {
    shared: Weak<Shared>,
    fd: RawFd,
    /// Work taken (accepted, received or dropped as oversize) at the last look.
    taken: u64,
    /// Work was waiting at the last look.
    waiting: bool,
}

struct Watchdog {
    every: Duration,
    servers: Mutex<Vec<Watched>>,
}

/// The process's watchdog, if systemd asked for one (read once).
fn watchdog() -> Option<&'static Watchdog> {
    static W: OnceLock<Option<Watchdog>> = OnceLock::new();
    W.get_or_init(|| {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        (usec > 0).then(|| Watchdog {
            every: Duration::from_micros(usec / 2),
            servers: Mutex::new(Vec::new()),
        })
    })
    .as_ref()
}

/// A server's serve loop started on socket `fd`: the watchdog (started with the first
/// one) looks at it from now on, while it serves.
pub(crate) fn watch(shared: &Arc<Shared>, fd: RawFd) {
    let Some(w) = watchdog() else { return };
    let mut servers = w.servers.lock().unwrap_or_else(|e| e.into_inner());
    let first = servers.is_empty();
    servers.push(Watched {
        shared: Arc::downgrade(shared),
        fd,
        taken: taken(shared),
        waiting: false,
    });
    drop(servers);
    if first {
        let spawned = std::thread::Builder::new()
            .name("socketserver-watchdog".into())
            .spawn(move || run(w));
        if let Err(e) = spawned {
            log::warn!("cannot start the systemd watchdog thread: {e}");
        }
    }
}

fn taken(shared: &Shared) -> u64 {
    let c = &shared.counters;
    c.accepted
        .load(Relaxed)
        .wrapping_add(c.oversize_dropped.load(Relaxed))
}

fn run(w: &'static Watchdog) {
    loop {
        std::thread::sleep(w.every);
        let mut servers = w.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|s| s.shared.strong_count() > 0);
        let mut serving = 0;
        let mut stuck = false;
        for s in servers.iter_mut() {
            let Some(shared) = s.shared.upgrade() else {
                continue;
            };
            if !shared.status.is_live() {
                continue;
            }
            serving += 1;
            let now = taken(&shared);
            let waiting = sys::readable_now(s.fd);
            if waiting && s.waiting && now == s.taken {
                stuck = true;
            }
            s.taken = now;
            s.waiting = waiting;
        }
        drop(servers);
        if serving > 0 && !stuck {
            if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                log::warn!("sd_notify WATCHDOG=1: {e}");
            }
        } else if stuck {
            log::warn!("an accept loop is stuck with work waiting: no WATCHDOG=1");
        }
    }
}

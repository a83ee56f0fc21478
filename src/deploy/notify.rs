//! The service manager's notifications (READY, STOPPING, MAINPID) and the "ready" of a
//! SIGHUP restart's previous generation.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::shared::Shared;

/// What the previous generation writes once it has handed the service over to us.
pub(crate) const HANDOVER: &[u8] = b"HANDOVER\n";
/// How long the new process waits for the hand-over after its "ready" (the previous one
/// answers at once; the bound is for a previous process that hangs).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The previous generation of a restart waits on this for our "ready" (set when the
/// inherited descriptors are read), and whether it confirms its hand-over on it
/// (`RESTART_HANDOVER`).
static READY: Mutex<Option<(UnixStream, bool)>> = Mutex::new(None);

/// Keeps the socket on which the previous generation of a restart waits for "ready".
pub(crate) fn set_ready_socket(ready: UnixStream, handover: bool) {
    *READY.lock().unwrap_or_else(|e| e.into_inner()) = Some((ready, handover));
}

/// Sends `READY=1` to the service manager (when `NOTIFY_SOCKET` is set) and tells the
/// previous generation of a restart, if any, that this process now serves. Called by
/// `serve` as it starts; only the first call tells the previous generation.
///
/// A previous generation that confirms hand-overs is then waited for (a round trip): if it
/// abandons the restart instead (shutdown began there first: a SIGTERM right behind the
/// SIGHUP) or is gone, this server shuts down too, so that no process is left serving
/// after the operator stopped the service.
pub(crate) fn serving(shared: &Arc<Shared>) {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        log::warn!("sd_notify READY=1: {e}");
    }
    // Only if `from_systemd` read the environment: `serve` never touches it by itself.
    let taken = READY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((mut ready, handover)) = taken else {
        return;
    };
    let told = ready.write_all(b"READY=1\n");
    if !handover {
        if let Err(e) = told {
            log::warn!("restart: telling the previous process we are ready: {e}");
        }
        return;
    }
    match told.and_then(|()| await_handover(&mut ready)) {
        Ok(()) => log::debug!("restart: the previous process handed the service over"),
        Err(e) => {
            log::warn!("restart abandoned by the previous process ({e}): stopping");
            shared.stop();
        }
    }
}

/// Waits (bounded) for the previous generation's [`HANDOVER`] line.
fn await_handover(ready: &mut UnixStream) -> io::Result<()> {
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while got.len() < HANDOVER.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no hand-over in time",
            ));
        }
        ready.set_read_timeout(Some(left))?;
        match ready.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "it closed the ready socket without handing over",
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    if got.starts_with(HANDOVER) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected message {got:?}"),
        ))
    }
}

/// Set once a restart handed the service over to a new process: this one is no longer the
/// service, and must not tell the manager it stops.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Whether a restart handed this process's listening socket over to a new process (which
/// then owns the socket file of a Unix server, too).
pub(crate) fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::SeqCst)
}

/// Sends `STOPPING=1` to the service manager (when `NOTIFY_SOCKET` is set). Called by
/// `serve` when shutdown begins; not after a restart handed the service over (the manager
/// would take the new process's service for stopping).
pub(crate) fn stopping() {
    if handed_over() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Stopping]) {
        log::warn!("sd_notify STOPPING=1: {e}");
    }
}

/// Marks this process as handed over (or not, when the hand-over lost a race with
/// shutdown), before the manager is told.
pub(crate) fn set_handed_over(yes: bool) {
    HANDED_OVER.store(yes, Ordering::SeqCst);
}

/// Tells the service manager that `pid` is now the service's main process (a restart
/// handed over to it), and that this process no longer speaks for the service. Needs
/// `NotifyAccess=` `main` or `all` in the unit.
pub(crate) fn handed_over_to(pid: u32) {
    HANDED_OVER.store(true, Ordering::SeqCst);
    if let Err(e) = sd_notify::notify(false, &[NotifyState::MainPid(pid)]) {
        log::warn!("sd_notify MAINPID={pid}: {e}");
    }
}

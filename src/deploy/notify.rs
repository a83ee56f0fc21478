//! The service manager's notifications (READY, STOPPING, MAINPID) and the "ready" of a
//! SIGHUP restart's previous generation.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use sd_notify::NotifyState;

/// The previous generation of a restart waits on this for our "ready" (set when the
/// inherited descriptors are read).
static READY: Mutex<Option<UnixStream>> = Mutex::new(None);

/// Keeps the socket on which the previous generation of a restart waits for "ready".
pub(crate) fn set_ready_socket(ready: UnixStream) {
    *READY.lock().unwrap_or_else(|e| e.into_inner()) = Some(ready);
}

/// Sends `READY=1` to the service manager (when `NOTIFY_SOCKET` is set) and tells the
/// previous generation of a restart, if any, that this process now serves. Called by
/// `serve` as it starts; only the first call tells the previous generation.
pub(crate) fn serving() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        log::warn!("sd_notify READY=1: {e}");
    }
    // Only if `from_systemd` read the environment: `serve` never touches it by itself.
    let ready = READY.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut ready) = ready {
        if let Err(e) = ready.write_all(b"READY=1\n") {
            log::warn!("restart: telling the previous process we are ready: {e}");
        }
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

/// Tells the service manager that `pid` is now the service's main process (a restart
/// handed over to it), and that this process no longer speaks for the service. Needs
/// `NotifyAccess=` `main` or `all` in the unit.
pub(crate) fn handed_over_to(pid: u32) {
    HANDED_OVER.store(true, Ordering::SeqCst);
    if let Err(e) = sd_notify::notify(false, &[NotifyState::MainPid(pid)]) {
        log::warn!("sd_notify MAINPID={pid}: {e}");
    }
}

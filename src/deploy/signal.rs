//! Turning SIGINT and SIGTERM into a graceful shutdown, and SIGHUP into a restart: one
//! thread per process waits for every signal the crate handles.

use std::io;
use std::os::raw::c_int;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::shutdown::ShutdownHandle;

/// What the signal thread does, by signal.
#[derive(Default)]
pub(crate) struct Actions {
    /// SIGINT and SIGTERM: these servers shut down; a second such signal exits.
    pub(crate) shutdown: Vec<ShutdownHandle>,
    /// SIGHUP: each runs (a restart, which starts its own thread for the time it takes).
    pub(crate) hangup: Vec<Box<dyn FnMut() + Send>>,
    terminations: u32,
}

/// The process's one signal thread: its handle (to add signals) and its actions.
struct SignalThread {
    handle: Handle,
    actions: Arc<Mutex<Actions>>,
}

static THREAD: Mutex<Option<SignalThread>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds an action (`add`) for `signals` to the process's signal thread, starting the
/// thread on first use. The action is in place before its signals are handled.
pub(crate) fn on_signals(signals: &[c_int], add: impl FnOnce(&mut Actions)) -> io::Result<()> {
    let mut thread = lock(&THREAD);
    if let Some(t) = &*thread {
        add(&mut lock(&t.actions));
        for &sig in signals {
            t.handle.add_signal(sig)?;
        }
        return Ok(());
    }
    let actions = Arc::new(Mutex::new(Actions::default()));
    add(&mut lock(&actions));
    let mut incoming = Signals::new(signals)?;
    let handle = incoming.handle();
    let acting = Arc::clone(&actions);
    thread::Builder::new()
        .name("socketserver-signals".into())
        .spawn(move || {
            for sig in incoming.forever() {
                dispatch(&acting, sig);
            }
        })?;
    *thread = Some(SignalThread { handle, actions });
    Ok(())
}

fn dispatch(actions: &Mutex<Actions>, sig: c_int) {
    let mut a = lock(actions);
    if sig == SIGINT || sig == SIGTERM {
        a.terminations += 1;
        if a.terminations == 1 {
            log::info!("signal {sig} received: shutting down gracefully");
            for handle in &a.shutdown {
                handle.shutdown();
            }
        } else {
            log::warn!("second signal {sig} received: exiting now");
            std::process::exit(130);
        }
    } else {
        for action in &mut a.hangup {
            action();
        }
    }
}

/// Shuts the server down gracefully on the first SIGINT (Ctrl-C) or SIGTERM; a second one
/// exits the process at once with status 130.
///
/// The signals are waited for on one thread per process (a handler must not do more than
/// set a flag, so the work happens there), the same that waits for the SIGHUP of
/// [`restart_on_sighup`](crate::StreamServer::restart_on_sighup); called for several
/// servers, the first signal shuts them all down. Call it before `serve`:
///
/// ```no_run
/// use socketserver::{StreamRequest, TcpServer};
///
/// let server = TcpServer::bind("127.0.0.1:8001")?;
/// socketserver::shutdown_on_signals(&server.shutdown_handle())?;
/// server.serve(|_req: &mut StreamRequest| Ok(()))?; // returns after Ctrl-C
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn shutdown_on_signals(handle: &ShutdownHandle) -> io::Result<()> {
    let handle = handle.clone();
    on_signals(&[SIGINT, SIGTERM], |a| a.shutdown.push(handle))
}

//! Turning SIGINT and SIGTERM into a graceful shutdown.

use std::io;
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::shutdown::ShutdownHandle;

/// Shuts the server down gracefully on the first SIGINT (Ctrl-C) or SIGTERM; a second one
/// exits the process at once with status 130.
///
/// It starts one thread that waits for the signals (a handler must not do more than set a
/// flag, so the work happens there). Call it once per program, before `serve`:
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
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let handle = handle.clone();
    thread::Builder::new()
        .name("socketserver-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    log::info!("signal {sig} received: shutting down gracefully");
                    handle.shutdown();
                } else {
                    log::warn!("second signal {sig} received: exiting now");
                    std::process::exit(130);
                }
            }
        })?;
    Ok(())
}

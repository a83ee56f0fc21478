//! Deployment: sockets inherited from systemd or a restart's previous generation, the
//! service manager's notifications, SIGHUP restarts and signal handling.

pub(crate) mod inherit;
pub(crate) mod notify;
mod restart;
pub(crate) mod signal;

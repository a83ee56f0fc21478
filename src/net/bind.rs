//! Binding: the socket options, the address, the Unix socket file.

use std::fs;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsFd;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::config::Config;

/// `SO_RCVBUF` and `SO_SNDBUF` in effect on a socket, as the kernel reports them (Linux
/// reports double the size set: half of it is its own bookkeeping).
pub(crate) fn buffer_sizes(fd: &impl AsFd) -> io::Result<(usize, usize)> {
    let sock = SockRef::from(fd);
    Ok((sock.recv_buffer_size()?, sock.send_buffer_size()?))
}

/// Binds the first address of `addrs` that works, with the builder's socket options.
pub(crate) fn bind_inet(addrs: impl ToSocketAddrs, ty: Type, cfg: &Config) -> io::Result<Socket> {
    let mut last = None;
    for addr in addrs.to_socket_addrs()? {
        match bind_one(addr, ty, cfg) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")))
}

/// Creates, configures and binds one socket. On any error the socket is dropped (closed):
/// a failed bind never leaks a descriptor.
fn bind_one(addr: SocketAddr, ty: Type, cfg: &Config) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if cfg.reuse_address {
        socket.set_reuse_address(true)?;
    }
    if cfg.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(cfg.only_v6)?;
    }
    set_buffers(&socket, cfg)?;
    socket.bind(&addr.into())?;
    if ty == Type::STREAM {
        socket.listen(cfg.backlog)?;
    }
    Ok(socket)
}

fn in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("a server is already listening on {}", path.display()),
    )
}

/// Sets `SO_RCVBUF`/`SO_SNDBUF` when the builder asked for them.
fn set_buffers(socket: &Socket, cfg: &Config) -> io::Result<()> {
    if let Some(n) = cfg.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    } else if socket.r#type()? == Type::DGRAM {
        // A datagram server takes bursts: datagrams that come while the receive buffer is
        // full are dropped by the kernel unseen. By default it takes the largest buffer
        // the system allows an unprivileged socket (Linux: net.core.rmem_max), and says
        // what it got.
        if let Some(max) = system_recv_buffer_max() {
            if max > socket.recv_buffer_size()? {
                socket.set_recv_buffer_size(max)?;
            }
        }
        log::debug!(
            "datagram receive buffer: {} bytes (the system's largest; raise net.core.rmem_max for more)",
            socket.recv_buffer_size()?
        );
    }
    if let Some(n) = cfg.send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    Ok(())
}

/// Binds a Unix socket at `path`, replacing a stale socket file only when no live server
/// answers on it. Never removes anything that is not a socket.
pub(crate) fn bind_unix(path: &Path, ty: Type, cfg: &Config) -> io::Result<(Socket, SocketFile)> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        // A non-blocking probe: against a live server whose backlog is full, a blocking
        // connect would wait for ever; non-blocking, it fails with EAGAIN, which means live.
        let probe = Socket::new(Domain::UNIX, ty, None).and_then(|s| {
            s.set_nonblocking(true)?;
            s.connect(&SockAddr::unix(path)?)
        });
        match probe {
            // EAGAIN (backlog full) and EINPROGRESS: a live server is there.
            Ok(()) => return Err(in_use(path)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINPROGRESS)) => {
                return Err(in_use(path))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("removing stale socket file {}", path.display());
                fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    let socket = Socket::new(Domain::UNIX, ty, None)?;
    set_buffers(&socket, cfg)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let file = SocketFile::new(path)?;
    if ty == Type::STREAM {
        socket.listen(cfg.backlog)?;
    }
    Ok((socket, file))
}

/// The socket file of a bound Unix server, removed when the server closes, but only while it
/// is still the same file (another server may have replaced it since).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // After a SIGHUP restart the new process serves the same socket: its file stays.
        if crate::deploy::notify::handed_over() {
            return;
        }
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// The largest `SO_RCVBUF` the system grants without privilege, where it says
/// (`/proc/sys/net/core/rmem_max` on Linux); `None` elsewhere.
fn system_recv_buffer_max() -> Option<usize> {
    let max: usize = fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The setsockopt takes an int; the kernel doubles what it is given.
    Some(max.min(i32::MAX as usize / 2))
}

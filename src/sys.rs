//! The crate's only `unsafe` code: `poll(2)`, `epoll_wait(2)` (Linux), `send(2)`/`sendmsg(2)`
//! without `SIGPIPE`, `fork(2)` and what a forked child does before its handler,
//! `waitpid(2)`, `kill(2)`, `_exit(2)`, `recv(2)` with `MSG_PEEK`, a listener's accept queue
//! (`TCP_INFO`), and the descriptor passing of a restart (`dup2(2)` between fork and exec).
//!
//! Every function here is a thin, safe wrapper over one system call. A `-1` return becomes
//! `io::Error::last_os_error()` through [`cvt`].

use std::io::{self, IoSlice};
use std::os::unix::io::RawFd;
use std::time::Duration;

/// Maps a C return value of `-1` to the thread's last OS error.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// What `poll` is asked about one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// Which of the descriptors given to [`poll`] are ready, by position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready(u8);

impl Ready {
    /// Whether the descriptor at position `i` is ready.
    pub(crate) fn is(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

/// The most descriptors one `poll` call takes (socket, waker, SIGCHLD pipe, one spare).
const MAX_POLL_FDS: usize = 4;

/// Waits until one of `fds` (at most 4) is ready for its interest, or the timeout (`None`:
/// forever) ends. It is on the per-request path, so it allocates nothing.
///
/// Hang-up and error count as ready, so a caller's next read or write sees the condition.
/// `EINTR` returns nothing ready: callers loop.
pub(crate) fn poll(fds: &[(RawFd, Interest)], timeout: Option<Duration>) -> io::Result<Ready> {
    assert!(
        fds.len() <= MAX_POLL_FDS,
        "poll takes at most {MAX_POLL_FDS} descriptors"
    );
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_POLL_FDS];
    for (p, &(fd, interest)) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
        p.events = match interest {
            Interest::Read => libc::POLLIN,
            Interest::Write => libc::POLLOUT,
        };
    }
    let ms = timeout_ms(timeout);
    // SAFETY: `pfds` is a valid, exclusively borrowed array of at least `fds.len()` pollfd
    // structs that outlives the call; poll only writes their `revents` fields.
    let ret = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    match cvt(ret) {
        Ok(_) => Ok(Ready(
            pfds[..fds.len()]
                .iter()
                .enumerate()
                .filter(|(_, p)| p.revents != 0)
                .fold(0, |bits, (i, _)| bits | 1 << i),
        )),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Ready::default()),
        Err(e) => Err(e),
    }
}

/// A timeout in the milliseconds of `poll(2)` and `epoll_wait(2)` (`None`: forever, -1).
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        // Round up so that a 0.5 ms wait does not become a busy 0 ms poll.
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

/// One event of an epoll instance (`epfd`, a `mio::Poll`'s), or `None` when the timeout
/// (`None`: forever) ended first: the registration's data (mio's token) and its event bits.
///
/// Several threads may wait on the same instance at once (mio's `Poll::poll` takes it
/// `&mut`, one thread at a time): the kernel wakes one waiter per ready event (the one that
/// began waiting last), and a waiter that leaves events behind in the ready list wakes the
/// next. `EINTR` is returned as the error.
#[cfg(target_os = "linux")]
pub(crate) fn epoll_wait_one(
    epfd: RawFd,
    timeout: Option<Duration>,
) -> io::Result<Option<(u64, u32)>> {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: `event` is a valid, exclusively borrowed epoll_event that outlives the call,
    // and maxevents (1) is its length; the kernel writes at most that one entry.
    let n = cvt(unsafe { libc::epoll_wait(epfd, &mut event, 1, timeout_ms(timeout)) })?;
    Ok((n == 1).then_some((event.u64, event.events)))
}

/// Whether `fd` is readable right now (a zero-timeout poll).
pub(crate) fn readable_now(fd: RawFd) -> bool {
    poll(&[(fd, Interest::Read)], Some(Duration::ZERO))
        .map(|r| r.is(0))
        .unwrap_or(false)
}

/// `send(2)` flags that keep a write to a closed connection from raising `SIGPIPE`: the
/// error comes back as `EPIPE` instead of killing a host program that does not ignore the
/// signal (a C host, a `cdylib`). macOS has no such flag; there the socket gets
/// `SO_NOSIGPIPE` when the connection is set up (see `serve::configure`).
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(any(target_os = "macos", target_os = "ios"))]
const SEND_FLAGS: libc::c_int = 0;

/// Maps a `ssize_t` return of `-1` to the thread's last OS error.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Writes `buf` to the connected socket `fd` (`send(2)` with `MSG_NOSIGNAL`).
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice for `buf.len()` bytes for the whole call; send
    // does not keep the pointer.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), SEND_FLAGS) })
}

/// Writes what the socket `fd` takes now of `buf` (`send(2)` with `MSG_DONTWAIT` and
/// `MSG_NOSIGNAL`), failing with `WouldBlock` if it takes nothing, whatever the socket's
/// blocking mode: the server-push path, which never waits for a client.
pub(crate) fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice for `buf.len()` bytes for the whole call; send
    // does not keep the pointer.
    cvt_size(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            SEND_FLAGS | libc::MSG_DONTWAIT,
        )
    })
}

/// Waits until the socket `fd` has something to read (or its end of stream), without
/// consuming it: a blocking `recv(2)` of one byte with `MSG_PEEK`, under the socket's
/// `SO_RCVTIMEO` (a timeout fails with `WouldBlock`). `Ok(0)` at end of stream.
#[cfg(feature = "tls")]
pub(crate) fn peek_wait(fd: RawFd) -> io::Result<usize> {
    let mut byte = 0u8;
    // SAFETY: `byte` is a valid writable byte for the whole call; recv writes at most one
    // byte into it and does not keep the pointer.
    cvt_size(unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK) })
}

/// Reads what is there now from the socket `fd` (`recv(2)` with `MSG_DONTWAIT`), failing
/// with `WouldBlock` if nothing is, whatever the socket's blocking mode.
pub(crate) fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice for `buf.len()` bytes for the whole call;
    // recv writes at most that many bytes and does not keep the pointer.
    cvt_size(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// `recvfrom(2)` on an IP datagram socket: the datagram's length and its sender, or `None`
/// for the sender when the kernel gave no address. A socket woken by `shutdown(2)` returns
/// 0 bytes and no address, on which std's `UdpSocket::recv_from` asserts (a panic in the
/// worker at every stop of a UDP pool).
pub(crate) fn recv_from_ip(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<std::net::SocketAddr>)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value (family AF_UNSPEC).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `storage` for `len` bytes
    // for the whole call; recvfrom writes within both and keeps neither pointer.
    let n = cvt_size(unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    let len = len as usize;
    let addr = match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, length checked) at
            // the start of `storage`, which is aligned for any socket address.
            let a = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(std::net::SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a sockaddr_in6 (family AF_INET6, length checked).
            let a = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    };
    Ok((n, addr))
}

/// Writes the slices in order to the connected socket `fd` (`sendmsg(2)` with
/// `MSG_NOSIGNAL`): a gathered write that never raises `SIGPIPE`.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid value (null name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with `struct iovec` on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    // SAFETY: `msg` points at `bufs`, valid readable iovecs for the whole call; sendmsg only
    // reads them and does not keep the pointers.
    cvt_size(unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
}

/// Forks a child that runs `child` and leaves with its exit code; the parent gets the
/// child's pid.
///
/// # What the child does, and the rules that follow
///
/// `fork(2)` copies only the calling thread. Anything another thread held locked at that
/// moment (the allocator's arenas, a logger's lock, a `Mutex` of the program) stays locked
/// in the child for ever. So the child does as little of its own as it can before the
/// handler: with no allocation and no lock, it resets the signal dispositions the server's
/// signal handling installed (`SIGINT`, `SIGTERM`, `SIGHUP`, `SIGCHLD` back to their
/// defaults, so the child can be stopped like any process), closes `close_fds` (the
/// listening socket, the other children's connections, the SIGCHLD pipe: descriptors the
/// parent owns and the child must not keep alive), and then calls `child`, which runs the
/// user's handler, and `_exit`s with the code it returns, running no destructor of the
/// parent's state. The documentation of `Flavor::forking` states the rules for handlers.
pub(crate) fn fork_child(
    close_fds: &[RawFd],
    child: impl FnOnce() -> i32,
) -> io::Result<libc::pid_t> {
    // SAFETY: fork has no memory-safety preconditions of its own. The child runs only the
    // async-signal-safe calls below, then `child` (the request, confined to this thread), and
    // leaves through `_exit` without returning into the parent's code. The hazards of forking
    // a multi-threaded program (locks held by other threads) are documented for users on
    // `Flavor::forking`; the flavour itself starts no thread.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid != 0 {
        return Ok(pid);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
        // SAFETY: signal(2) with SIG_DFL is async-signal-safe and touches no Rust state.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    for &fd in close_fds {
        // SAFETY: each descriptor belongs to the parent's state (its Rust owners are never
        // dropped in the child, which leaves through `_exit`) and nothing in the child uses
        // it after this point.
        unsafe {
            libc::close(fd);
        }
    }
    // A panic must never unwind out of the child into the parent's serving loop.
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
        Ok(code) => code,
        Err(payload) => {
            // Its destructor could panic again; the process ends next anyway.
            std::mem::forget(payload);
            101
        }
    };
    exit_child(code)
}

/// Ends the current (child) process at once with `code`, running no destructors and flushing
/// nothing: the parent's buffers and atexit handlers belong to the parent.
fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns; skipping destructors is the
    // point (they belong to the parent's copy of the state).
    unsafe { libc::_exit(code) }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildExit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Reaps `pid` if it has ended (`WNOHANG`); `Ok(None)` while it still runs. Only ever called
/// with pids this process forked itself, so a child forked by someone else is never reaped.
pub(crate) fn try_reap(pid: libc::pid_t) -> io::Result<Option<ChildExit>> {
    reap(pid, libc::WNOHANG)
}

/// Waits for `pid` to end and reaps it.
pub(crate) fn reap_blocking(pid: libc::pid_t) -> io::Result<Option<ChildExit>> {
    reap(pid, 0)
}

fn reap(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<ChildExit>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable c_int for the duration of the call; the pid
        // is one of our own children.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        match cvt(ret) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                return Ok(Some(if libc::WIFEXITED(status) {
                    ChildExit::Code(libc::WEXITSTATUS(status))
                } else {
                    ChildExit::Signal(libc::WTERMSIG(status))
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends SIGKILL to our own child `pid`.
pub(crate) fn kill_child(pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child we have not reaped
    // yet, so the pid cannot have been reused by an unrelated process.
    cvt(unsafe { libc::kill(pid, libc::SIGKILL) }).map(drop)
}

/// Sends SIGTERM to our own child `pid` (a graceful stop, where SIGKILL is not).
pub(crate) fn terminate_child(pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child we have not reaped
    // yet, so the pid cannot have been reused by an unrelated process.
    cvt(unsafe { libc::kill(pid, libc::SIGTERM) }).map(drop)
}

/// Copies up to `buf.len()` bytes waiting on socket `fd` without consuming them and without
/// blocking (`recv(2)` with `MSG_PEEK | MSG_DONTWAIT`): `WouldBlock` when nothing is there,
/// `Ok(0)` at end of stream. `EINTR` is retried.
pub(crate) fn peek_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid, exclusively borrowed byte buffer of `buf.len()` bytes
        // for the duration of the call; recv writes at most that many bytes into it.
        let ret = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// How many established connections wait in a TCP listener's accept queue (Linux: on a
/// listening socket, `TCP_INFO`'s `tcpi_unacked` is the accept queue's length).
#[cfg(target_os = "linux")]
pub(crate) fn accept_queue_len(fd: RawFd) -> io::Result<usize> {
    // SAFETY: `tcp_info` is plain old data: all zero bytes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a valid, exclusively borrowed `tcp_info` of `len` bytes for the
    // call; the kernel writes at most `len` bytes into it and updates `len`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    Ok(info.tcpi_unacked as usize)
}

/// The most descriptors `pass_fds` hands a new process.
pub(crate) const MAX_PASSED_FDS: usize = 32;

/// Makes `cmd`'s process start with `fds` as its descriptors 3, 4, ... (what systemd's
/// socket activation passes), whatever their numbers here, all without `FD_CLOEXEC`. At
/// most `MAX_PASSED_FDS` (more is an `InvalidInput` error).
pub(crate) fn pass_fds(cmd: &mut std::process::Command, fds: &[RawFd]) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors to pass, at most {MAX_PASSED_FDS}",
                fds.len()
            ),
        ));
    }
    // Copied into a fixed array before the fork: the child allocates nothing.
    let n = fds.len();
    let mut list = [0 as RawFd; MAX_PASSED_FDS];
    list[..n].copy_from_slice(fds);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it calls only fcntl and dup2, and allocates
    // nothing (the array is moved in before the fork). First every descriptor is copied
    // above 64 with FD_CLOEXEC (so no target can clobber a source not yet copied); then
    // dup2 puts each copy at 3 + i, which clears FD_CLOEXEC there; the copies close at exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0 as RawFd; MAX_PASSED_FDS];
            for (h, &fd) in high.iter_mut().zip(list[..n].iter()) {
                *h = cvt(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64))?;
            }
            for (i, &h) in high[..n].iter().enumerate() {
                cvt(libc::dup2(h, 3 + i as RawFd))?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Types for which every byte being zero is a valid value, and which hold no pointer or
/// descriptor: they may live in memory shared with forked children (see [`SharedMem`]).
///
/// # Safety
///
/// An implementor must be valid when all its bytes are zero, must not own heap memory,
/// descriptors or anything a `Drop` releases, and must be usable from several processes at
/// once through shared mappings (atomics only, no locks that record a thread).
pub(crate) unsafe trait ZeroShareable: Sync {}

// SAFETY: `Counters` is a struct of `AtomicU64`s and arrays of them only (no pointer, no
// `Drop`); an all-zero `AtomicU64` is 0, and lock-free atomics work across processes that
// map the same pages.
unsafe impl ZeroShareable for crate::stats::Counters {}

/// A `T` in an anonymous `MAP_SHARED` mapping (`mmap(2)`), made before any fork: a forked
/// child's writes to it are the parent's too, as in Apache's scoreboard. Zero-filled by the
/// kernel; unmapped on drop (a child leaves through `_exit`, never dropping the parent's).
pub(crate) struct SharedMem<T: ZeroShareable> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone and `T: Sync` (shared access through `&T`
// from any thread is what `T` allows).
unsafe impl<T: ZeroShareable> Send for SharedMem<T> {}
// SAFETY: as above: only `&T` is ever handed out.
unsafe impl<T: ZeroShareable> Sync for SharedMem<T> {}

impl<T: ZeroShareable> SharedMem<T> {
    /// Maps a zeroed `T` shared with the children this process will fork.
    pub(crate) fn new() -> io::Result<SharedMem<T>> {
        let len = std::mem::size_of::<T>().max(1);
        assert!(
            std::mem::align_of::<T>() <= 4096,
            "a page aligns anything smaller"
        );
        // SAFETY: a new anonymous mapping: no address hint, no descriptor; the kernel
        // returns page-aligned, zero-filled memory of `len` bytes or MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<T>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(SharedMem { ptr, len })
    }
}

impl<T: ZeroShareable> std::ops::Deref for SharedMem<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping is live until drop, page-aligned (so aligned for T), at least
        // size_of::<T>() bytes, and all-zero at first, a valid T (`ZeroShareable`); it is
        // only ever accessed through `&T`, whose atomics make shared mutation sound.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ZeroShareable> Drop for SharedMem<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and no reference to it
        // outlives `self` (every `&T` borrows `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl<T: ZeroShareable + std::fmt::Debug> std::fmt::Debug for SharedMem<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

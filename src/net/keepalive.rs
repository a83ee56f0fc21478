//! TCP keepalive on accepted connections: the one way a server notices a peer that vanished
//! without closing (a machine powered off, a NAT that dropped the flow) while the
//! connection waits for the peer's next request and no timeout is set.

use std::net::TcpListener;
use std::time::Duration;

use crate::builder::Builder;

impl Builder<TcpListener> {
    /// Turns TCP keepalive on for every connection (`SO_KEEPALIVE`): after `idle` without
    /// any traffic the kernel sends a probe (`TCP_KEEPIDLE`), then one every `idle / 3`,
    /// at least 1 s (`TCP_KEEPINTVL`), and after 3 unanswered probes (`TCP_KEEPCNT`) it
    /// ends the connection: the handler's read or write fails and the connection closes.
    /// A peer that vanished without closing is so found within about twice `idle`. By
    /// default, off (`None`): the kernel's own default waits two hours before the first
    /// probe, which is no bound at all.
    ///
    /// It finds peers that are *gone*; a peer that is there and merely silent answers the
    /// probes, and is bounded by [`idle_timeout`](Self::idle_timeout) instead. Set both for
    /// untrusted clients on long-lived connections. A zero duration is an `InvalidInput`
    /// error from `bind`.
    ///
    /// ```
    /// use socketserver::TcpServer;
    /// use std::time::Duration;
    ///
    /// let server = TcpServer::builder()
    ///     .idle_timeout(Some(Duration::from_secs(300)))
    ///     .tcp_keepalive(Some(Duration::from_secs(60)))
    ///     .bind("127.0.0.1:0")?;
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tcp_keepalive(&mut self, idle: Option<Duration>) -> &mut Self {
        self.cfg.keepalive = idle;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;
    use std::net::TcpStream;

    #[test]
    fn keepalive_is_set_with_its_timings() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let sock = SockRef::from(&s);
        crate::net::options::set_keepalive(&sock, Some(Duration::from_secs(30)), false).unwrap();
        assert!(sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
            assert_eq!(
                sock.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(10)
            );
            assert_eq!(
                sock.tcp_keepalive_retries().unwrap(),
                crate::net::options::KEEPALIVE_PROBES
            );
        }
    }
}

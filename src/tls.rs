//! TLS for TCP and Unix stream servers, with rustls (cargo feature `tls`).
//!
//! One builder call turns a stream server into a TLS server; the handler does not change:
//! [`StreamRequest`](crate::StreamRequest) stays `Read + BufRead + Write`, reading and
//! writing plaintext, and [`StreamRequest::tls_info`](crate::StreamRequest::tls_info) gives
//! the facts of the session (protocol version, SNI name, ALPN protocol, client certificates).
//!
//! ```no_run
//! use socketserver::{StreamRequest, TcpServer};
//! use std::io::{self, BufRead, Write};
//!
//! let server = TcpServer::builder()
//!     .tls_pem("cert.pem", "key.pem")?
//!     .bind("127.0.0.1:8443")?;
//! server.serve(|req: &mut StreamRequest| {
//!     let mut line = String::new();
//!     while req.read_line(&mut line)? > 0 {
//!         req.write_all(line.as_bytes())?;
//!         line.clear();
//!     }
//!     Ok(())
//! })
//! # ; Ok::<(), io::Error>(())
//! ```
//!
//! A whole round trip, with a rustls client (certificates made by `rcgen` for the example):
//!
//! ```
//! # use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
//! # let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
//! # ca.distinguished_name.push(DnType::CommonName, "example CA");
//! # ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! # let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
//! # let mut leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
//! # leaf.use_authority_key_identifier_extension = true;
//! # let key = KeyPair::generate().unwrap();
//! # let cert = leaf.signed_by(&key, &ca).unwrap();
//! # let dir = tempfile::tempdir()?;
//! # let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
//! # std::fs::write(&cert_pem, cert.pem())?;
//! # std::fs::write(&key_pem, key.serialize_pem())?;
//! # let ca_der = ca.der().clone();
//! use socketserver::tls::{self, rustls};
//! use socketserver::{StreamRequest, TcpServer};
//! use std::io::{self, BufRead, Read, Write};
//! use std::sync::Arc;
//!
//! let server = TcpServer::builder().tls_pem(&cert_pem, &key_pem)?.bind("127.0.0.1:0")?;
//! let addr = server.local_addr()?;
//! let handle = server.shutdown_handle();
//! let serving = std::thread::spawn(move || {
//!     server.serve(|req: &mut StreamRequest| {
//!         let mut line = String::new();
//!         req.read_line(&mut line)?;
//!         let info = req.tls_info().expect("a TLS connection");
//!         let reply = format!("{} {} {}", info.version(), info.sni().unwrap_or("-"), line);
//!         req.write_all(reply.to_uppercase().as_bytes())
//!     })
//! });
//!
//! // The client trusts the CA that signed the server's certificate.
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(ca_der).unwrap();
//! let config = rustls::ClientConfig::builder_with_provider(tls::provider())
//!     .with_safe_default_protocol_versions()
//!     .unwrap()
//!     .with_root_certificates(roots)
//!     .with_no_client_auth();
//! let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
//!     .unwrap();
//! let sock = std::net::TcpStream::connect(addr)?;
//! sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
//! let mut client = rustls::StreamOwned::new(conn, sock);
//! client.write_all(b"hello\n")?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?; // until the server's close_notify
//! assert_eq!(reply, "TLSV1.3 LOCALHOST HELLO\n");
//!
//! handle.shutdown();
//! serving.join().unwrap()?;
//! # Ok::<(), io::Error>(())
//! ```
//!
//! # What it does for you, and the traps it avoids
//!
//! * **The handshake runs on the worker** (the thread or forked child that serves the
//!   connection), never on the accept loop: a client that connects and says nothing delays
//!   nobody else (in the `single` flavour, which serves one connection at a time, it delays
//!   the next connection until the deadline). It runs under one deadline for the whole handshake (by default 10 s, see
//!   `Builder::tls_handshake_timeout`): the time left is set as the socket's timeout before
//!   every read and write, so a client sending one byte a second is cut at the deadline
//!   (a plain per-read timeout would let it go on for ever).
//! * **A failed handshake closes that connection only** (plain text on the TLS port, an
//!   unknown CA, no common ALPN protocol, a timeout): it is logged at debug level, counted
//!   in [`Stats::tls_handshake_failures`](crate::Stats::tls_handshake_failures), and the
//!   handler never runs.
//! * **Idle waits see decrypted data**: rustls may already hold the plaintext of a client's
//!   next request (two requests in one TLS record) while the socket has nothing more to
//!   read. Before waiting in `poll(2)` for the next request, such plaintext counts as
//!   readable, so a pipelined request is answered at once, and graceful shutdown still ends
//!   only connections that are really idle.
//! * **Closing is polite**: the server sends `close_notify` and flushes before closing.
//!   A client that closes the TCP connection without `close_notify` after a complete
//!   request is a normal end (EOF to the handler), as the rustls manual advises for
//!   protocols that frame their own messages; a protocol that needs to detect truncation
//!   frames its messages (see [`framing`](crate::framing)), and a cut inside a frame is
//!   still an error there.
//! * Writes are encrypted and sent at once (one TLS record per write of up to 16 KiB):
//!   nothing sits unsent in the session while the handler waits.
//!
//! # Why the `ring` provider is chosen explicitly
//!
//! rustls needs a cryptography provider. Its `ServerConfig::builder()` uses the
//! *process-wide* default provider, which depends on which rustls features every crate in
//! the program enabled: with none it panics, with two (`ring` and `aws-lc-rs`, pulled in by
//! some other dependency) it panics too, and a provider installed by other code changes
//! this crate's behaviour. So this crate builds rustls without default features, enables
//! `ring` only (pure Rust and assembly: no C toolchain or cmake needed, quick to build),
//! and passes the provider explicitly everywhere ([`provider`], [`config_builder`],
//! [`client_verifier`], [`ReloadableCert`]). A `ServerConfig` you build yourself with
//! another provider works too: [`Builder::tls`](crate::Builder::tls) takes any.
//!
//! # Certificate reload
//!
//! [`ReloadableCert`] is a certificate resolver whose key pair can be swapped while the
//! server runs: [`ReloadableCert::reload`] re-reads its PEM files, and the next handshake
//! uses the new certificate (connections already open keep theirs). The examples call it
//! on SIGHUP.
//!
//! # Limits
//!
//! A TLS session has one owner: the handler. Writing to the raw
//! [`Stream`] (`req.stream()`, or a clone of it written by another thread)
//! bypasses the encryption and breaks the session; a design with a separate writer thread
//! needs its own channel back into the handler.
//!
//! In the forking flavour each child starts from a copy of the server's `ServerConfig`:
//! sessions a child stores in rustls's (stateful) session cache die with it, so clients
//! resume only with stateless tickets (set `config.ticketer` to
//! `rustls::crypto::ring::Ticketer::new()?`).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ConfigBuilder, ProtocolVersion, RootCertStore, ServerConfig, ServerConnection, WantsVerifier,
};

use crate::net::stream::Stream;

pub use rustls;

/// How long closing a connection may wait to send `close_notify`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The `ring` cryptography provider this crate uses (see the module docs for why it is
/// explicit). Built once, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    // rustls 0.23.48 deprecated this function because ring has no post-quantum key
    // exchange; it is still how the ring provider is made (its parts are private), and
    // ring is the deliberate choice here (no C toolchain or cmake needed, unlike
    // aws-lc-rs). Allowed here so that no user's build warns.
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider;
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(ring())))
}

/// A `ServerConfig` builder with the `ring` provider and rustls's safe default protocol
/// versions (TLS 1.2 and 1.3), ready for its client verifier and certificate.
///
/// ```
/// use socketserver::tls;
///
/// let builder = tls::config_builder()?;
/// // ... .with_no_client_auth().with_cert_resolver(...) or .with_single_cert(...)
/// # drop(builder);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn config_builder() -> io::Result<ConfigBuilder<ServerConfig, WantsVerifier>> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid_input)
}

/// Reads every certificate of a PEM file (a chain: the server's certificate first, then
/// the intermediates). A file without any certificate is an error naming the file.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, "certificates", e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "private key", e))
}

/// A client certificate verifier (mutual TLS) that requires every client to present a
/// certificate issued by one of the CAs in `ca_file` (PEM): rustls's
/// `WebPkiClientVerifier`, with the `ring` provider.
///
/// For optional client certificates, build it yourself with
/// `WebPkiClientVerifier::builder_with_provider(roots, tls::provider())
/// .allow_unauthenticated()`.
pub fn client_verifier(ca_file: impl AsRef<Path>) -> io::Result<Arc<dyn ClientCertVerifier>> {
    let ca_file = ca_file.as_ref();
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots.add(cert).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a usable CA certificate: {e}", ca_file.display()),
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| invalid_input(format!("{}: {e}", ca_file.display())))
}

/// A `ServerConfig` that presents the certificate `cert` resolves (for example a
/// [`ReloadableCert`]) and, with `client_ca`, requires client certificates issued by
/// the CAs in that PEM file (mutual TLS). Set `alpn_protocols` on the result if the
/// protocol uses ALPN.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap()
/// #     .self_signed(&key).unwrap();
/// # std::fs::write(&cert_pem, cert.pem())?;
/// # std::fs::write(&key_pem, key.serialize_pem())?;
/// use socketserver::{tls, TcpServer};
/// use std::sync::Arc;
///
/// let cert = tls::ReloadableCert::from_pem_files(&cert_pem, &key_pem)?;
/// let mut config = tls::server_config(cert.clone(), None)?;
/// config.alpn_protocols = vec![b"echo/1".to_vec()];
/// let server = TcpServer::builder().tls(Arc::new(config)).bind("127.0.0.1:0")?;
/// // Later, after the files were replaced (e.g. on SIGHUP):
/// cert.reload()?;
/// # drop(server);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn server_config(
    cert: Arc<dyn ResolvesServerCert>,
    client_ca: Option<&Path>,
) -> io::Result<ServerConfig> {
    let builder = config_builder()?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(cert))
}

/// A server certificate that can be replaced while the server runs: a rustls
/// `ResolvesServerCert` whose key pair is swapped by [`reload`](Self::reload) (re-reading
/// the PEM files it was made from) or [`replace`](Self::replace). The next handshake uses
/// the new one; connections already open are not disturbed.
///
/// A reload that fails (a missing file, a key that does not match the certificate) changes
/// nothing and returns the error: the server keeps presenting the previous certificate.
pub struct ReloadableCert {
    files: Option<(PathBuf, PathBuf)>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Loads a certificate chain and its private key from PEM files, remembering the paths
    /// for [`reload`](Self::reload).
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<Arc<ReloadableCert>> {
        let files = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let current = load_certified_key(&files.0, &files.1)?;
        Ok(Arc::new(ReloadableCert {
            files: Some(files),
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Starts with a certificate and key already loaded (for instance from a secret store).
    /// [`reload`](Self::reload) then has no files to read: use [`replace`](Self::replace).
    pub fn new(cert: CertifiedKey) -> Arc<ReloadableCert> {
        Arc::new(ReloadableCert {
            files: None,
            current: RwLock::new(Arc::new(cert)),
        })
    }

    /// Reads the PEM files again and, if they hold a valid certificate chain and a
    /// matching key, presents them from the next handshake on.
    pub fn reload(&self) -> io::Result<()> {
        let (cert, key) = self.files.as_ref().ok_or_else(|| {
            invalid_input("this certificate was not loaded from files: use replace()")
        })?;
        self.replace(load_certified_key(cert, key)?);
        Ok(())
    }

    /// Presents `cert` from the next handshake on.
    pub fn replace(&self, cert: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cert);
    }

    /// The certificate and key presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("files", &self.files)
            .field("chain_len", &self.current().cert.len())
            .finish()
    }
}

fn load_certified_key(cert: &Path, key: &Path) -> io::Result<CertifiedKey> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} with {}: unusable certificate or key: {e}",
                cert.display(),
                key.display()
            ),
        )
    })
}

fn pem_error(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> io::Error {
    let kind = match &e {
        rustls::pki_types::pem::Error::Io(io) => io.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    let detail = match e {
        rustls::pki_types::pem::Error::NoItemsFound => "none found in the file".to_string(),
        e => e.to_string(),
    };
    io::Error::new(
        kind,
        format!("{}: cannot read {what}: {detail}", path.display()),
    )
}

fn invalid_input(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// The facts of a TLS session, from
/// [`StreamRequest::tls_info`](crate::StreamRequest::tls_info).
#[derive(Clone, Debug)]
pub struct TlsInfo {
    version: ProtocolVersion,
    cipher_suite: Option<rustls::CipherSuite>,
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    peer_certificates: Vec<CertificateDer<'static>>,
}

impl TlsInfo {
    fn of(conn: &ServerConnection) -> TlsInfo {
        TlsInfo {
            version: conn
                .protocol_version()
                .unwrap_or(ProtocolVersion::Unknown(0)),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            sni: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates: conn
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// The protocol version, as rustls names it.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.version
    }

    /// The protocol version as OpenSSL and Python's `ssl` name it: `"TLSv1.3"` or
    /// `"TLSv1.2"`.
    pub fn version(&self) -> &'static str {
        match self.version {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "unknown",
        }
    }

    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.cipher_suite
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The application protocol agreed by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The client's certificate chain (its own certificate first), verified by the server's
    /// client verifier; empty when the client presented none.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }
}

/// One server-side TLS session over a blocking [`Stream`]: the handshake under a deadline,
/// then plaintext reads and writes. The stream is passed to each call (the request owns it
/// through its connection slot).
pub(crate) struct TlsSession {
    conn: ServerConnection,
    records: RecordTrack,
    info: TlsInfo,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("info", &self.info)
            .finish()
    }
}

/// The socket timeouts a connection has after its handshake.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) read: Option<Duration>,
    pub(crate) write: Option<Duration>,
}

impl TlsSession {
    /// Runs the server side of the handshake on `stream` within `limit` (for the whole
    /// handshake), then restores the socket's read and write timeouts to `after`.
    pub(crate) fn accept(
        stream: &Stream,
        config: &Arc<ServerConfig>,
        limit: Duration,
        after: Timeouts,
    ) -> io::Result<TlsSession> {
        let mut conn = ServerConnection::new(Arc::clone(config))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut records = RecordTrack::default();
        let deadline = Instant::now() + limit;
        let done = handshake(&mut conn, &mut records, stream, deadline, limit);
        stream.set_read_timeout(after.read)?;
        stream.set_write_timeout(after.write)?;
        done?;
        let info = TlsInfo::of(&conn);
        Ok(TlsSession {
            conn,
            records,
            info,
        })
    }

    pub(crate) fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// Whether a read would return at once without touching the socket: decrypted bytes
    /// are waiting, or the client has closed the session (or a TLS error is pending).
    pub(crate) fn has_plaintext_buffered(&mut self) -> bool {
        match self.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true,
        }
    }

    /// After `poll` said the socket is readable (so one read does not block): takes in what
    /// arrived. `true` when the client's next request has begun arriving: plaintext, part
    /// of a record (the rest is read like the rest of any half-arrived request, not as an
    /// idle wait), the client's `close_notify` or EOF. `false` when only a record without
    /// data came whole (a key update): wait again.
    pub(crate) fn pump(&mut self, stream: &Stream) -> io::Result<bool> {
        let n = match self.conn.read_tls(&mut self.records.reader(stream)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        };
        let state = self.process(stream)?;
        if state.tls_bytes_to_write() > 0 {
            self.flush(stream)?;
        }
        Ok(n == 0
            || state.plaintext_bytes_to_read() > 0
            || state.peer_has_closed()
            || self.records.mid_record())
    }

    /// Reads plaintext, reading records from the socket (under its `SO_RCVTIMEO`) as
    /// needed. `Ok(0)` at the client's `close_notify`, and also at a TCP EOF without it
    /// (a normal end, see the module docs).
    ///
    /// Before each socket read made while part of a record is in (a request arriving, its
    /// plaintext not yet readable), `arriving` runs: it starts the request's deadline and
    /// sets the socket's timeout to what is left of it, so that a record trickling in byte
    /// by byte cannot outlast the request timeout.
    pub(crate) fn read(
        &mut self,
        stream: &Stream,
        buf: &mut [u8],
        arriving: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    log::trace!("client closed the connection without TLS close_notify");
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
            // Whatever rustls has to say first (a key update's answer) goes out before we
            // wait for the client.
            self.flush(stream)?;
            if self.records.mid_record() {
                arriving()?;
            }
            match self.conn.read_tls(&mut self.records.reader(stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.process(stream)?;
        }
    }

    /// Encrypts `buf` (as much as the session takes, at most its 64 KiB buffer) and sends it.
    pub(crate) fn write(&mut self, stream: &Stream, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.flush(stream)?;
        Ok(n)
    }

    /// [`write`](Self::write) from several buffers.
    pub(crate) fn write_vectored(
        &mut self,
        stream: &Stream,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let n = self.conn.writer().write_vectored(bufs)?;
        self.flush(stream)?;
        Ok(n)
    }

    /// Sends every TLS record the session holds (under the socket's `SO_SNDTIMEO`).
    pub(crate) fn flush(&mut self, stream: &Stream) -> io::Result<()> {
        flush_tls(&mut self.conn, stream)
    }

    /// Sends `close_notify` and flushes, waiting at most 1 s; errors are the end anyway.
    pub(crate) fn close(&mut self, stream: &Stream) {
        self.conn.send_close_notify();
        let _ = stream.set_write_timeout(Some(CLOSE_TIMEOUT));
        if let Err(e) = self.flush(stream) {
            log::debug!("could not send TLS close_notify: {e}");
        }
    }

    /// The plaintext rustls has decrypted and the handler has not read yet, in bytes.
    pub(crate) fn plaintext_pending(&mut self) -> usize {
        match self.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read(),
            Err(_) => 0,
        }
    }

    // The session shared with pushers (see `push.rs`): every record it makes goes into the
    // connection's outbound queue (`out`), written by whoever holds the queue, never straight
    // to the socket.

    /// Reads decrypted plaintext, without touching the socket: `None` when rustls has none.
    /// `Ok(0)` at the client's `close_notify` or a TCP EOF (a normal end, see the module docs).
    pub(crate) fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.conn.reader().read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// Whether part of a record has arrived and not the rest.
    pub(crate) fn mid_record(&self) -> bool {
        self.records.mid_record()
    }

    /// Reads what the socket has (the caller knows it is readable: this does not block) and
    /// decrypts it; an alert saying why a record was bad goes into `out`. Returns the bytes
    /// read (0 at EOF) and the session's state.
    pub(crate) fn receive(
        &mut self,
        stream: &Stream,
        out: &mut Vec<u8>,
    ) -> io::Result<(usize, rustls::IoState)> {
        let n = loop {
            match self.conn.read_tls(&mut self.records.reader(stream)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let state = self.conn.process_new_packets().map_err(|e| {
            self.drain_to(out);
            io::Error::new(io::ErrorKind::InvalidData, e)
        });
        self.drain_to(out);
        Ok((n, state?))
    }

    /// `pump` for the shared session: after `poll` said the socket is readable, whether a
    /// request has begun arriving (see [`pump`](Self::pump)).
    pub(crate) fn pump_into(&mut self, stream: &Stream, out: &mut Vec<u8>) -> io::Result<bool> {
        let (n, state) = self.receive(stream, out)?;
        Ok(n == 0
            || state.plaintext_bytes_to_read() > 0
            || state.peer_has_closed()
            || self.records.mid_record())
    }

    /// Encrypts all of `plain` into records appended to `out`.
    pub(crate) fn encrypt_into(&mut self, mut plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        while !plain.is_empty() {
            let n = self.conn.writer().write(plain)?;
            plain = &plain[n..];
            self.drain_to(out);
        }
        Ok(())
    }

    /// Appends the records rustls has to send (answers to a key update, alerts) to `out`.
    pub(crate) fn drain_to(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break; // writing into a Vec cannot fail
            }
        }
    }

    /// Queues `close_notify` into `out`.
    pub(crate) fn close_into(&mut self, out: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.drain_to(out);
    }

    fn process(&mut self, stream: &Stream) -> io::Result<rustls::IoState> {
        match self.conn.process_new_packets() {
            Ok(state) => Ok(state),
            Err(e) => {
                // The alert describing the error, if rustls queued one, is worth a try.
                let _ = self.flush(stream);
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }
}

/// Where the client's byte stream stands in the TLS record layer: every byte the server
/// reads passes through it (from the first byte of the handshake on), so it knows whether
/// a record has begun arriving and not ended. rustls does not say whether its buffer holds
/// part of a record; the idle wait needs to know (part of a record is a request arriving,
/// a whole record without data, such as a key update, is not).
#[derive(Debug, Default)]
struct RecordTrack {
    /// Bytes of the current record's 5-byte header seen so far.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current record's body still to come.
    body_left: usize,
}

impl RecordTrack {
    fn reader<'a>(&'a mut self, stream: &'a Stream) -> TrackedReader<'a> {
        TrackedReader {
            stream,
            track: self,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == 5 {
                self.header_len = 0;
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }

    fn mid_record(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }
}

/// The socket as rustls reads it, through the record tracker.
struct TrackedReader<'a> {
    stream: &'a Stream,
    track: &'a mut RecordTrack,
}

impl Read for TrackedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = { self.stream }.read(buf)?;
        self.track.feed(&buf[..n]);
        Ok(n)
    }
}

fn flush_tls(conn: &mut ServerConnection, stream: &Stream) -> io::Result<()> {
    let mut out = stream;
    while conn.wants_write() {
        match conn.write_tls(&mut out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The handshake loop: before every read and write the socket's timeout is set to the time
/// left, so the whole handshake, not each read, is bounded.
fn handshake(
    conn: &mut ServerConnection,
    records: &mut RecordTrack,
    stream: &Stream,
    deadline: Instant,
    limit: Duration,
) -> io::Result<()> {
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not finished within {limit:?}"),
        )
    };
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timed_out())
        } else {
            Ok(left)
        }
    };
    // Also flushes what follows the handshake at once (TLS 1.3 session tickets).
    while conn.is_handshaking() || conn.wants_write() {
        if conn.wants_write() {
            stream.set_write_timeout(Some(left()?))?;
            match flush_tls(conn, stream) {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(timed_out()),
                other => other?,
            }
            continue;
        }
        stream.set_read_timeout(Some(left()?))?;
        match conn.read_tls(&mut records.reader(stream)) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = conn.process_new_packets() {
            // Send the alert that says why, within what is left of the deadline.
            if let Ok(t) = left() {
                let _ = stream.set_write_timeout(Some(t));
                let _ = flush_tls(conn, stream);
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RecordTrack;

    #[test]
    fn record_track_follows_records_split_anywhere() {
        // Two records: 3 bytes of body, then 0 bytes, then one of 300 bytes.
        let mut stream = vec![23, 3, 3, 0, 3, 1, 2, 3, 21, 3, 3, 0, 0, 23, 3, 3, 1, 44];
        stream.extend(std::iter::repeat(9).take(300));
        let ends = [8, 13, stream.len()]; // where a record ends
        for split in 1..stream.len() {
            let mut t = RecordTrack::default();
            t.feed(&stream[..split]);
            assert_eq!(t.mid_record(), !ends.contains(&split), "split at {split}");
            t.feed(&stream[split..]);
            assert!(!t.mid_record());
        }
        let mut t = RecordTrack::default();
        for b in &stream {
            t.feed(std::slice::from_ref(b));
        }
        assert!(!t.mid_record());
    }
}

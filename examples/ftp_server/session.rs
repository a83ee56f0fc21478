//! One connection: reads requests in turn, keeps the login and the current directory, and
//! answers each request.

use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use socketserver::framing::Body;
use socketserver::{Next, RequestHandler, StreamRequest};

use crate::hashpipe::CHUNK;
use crate::paths::VPath;
use crate::protocol::{error, ok, send, Put, Request, CODEC};
use crate::storage::Home;
use crate::upload::ReceiveError;
use crate::users::{Users, ANONYMOUS};

/// A failed login is answered no sooner than this after it arrived.
const LOGIN_DELAY: Duration = Duration::from_millis(500);
/// The failed login that closes the connection.
const MAX_LOGIN_FAILURES: u32 = 3;
/// How long a transfer may wait for the client's next bytes before it is given up (the
/// partial upload stays, to be resumed).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// The most body bytes of a refused upload read and discarded to keep the connection
/// usable; a larger body closes it instead (a refused client must not keep a worker busy
/// reading whatever it declared).
const REFUSED_BODY_LIMIT: u64 = 64 * 1024;
/// How long the discard of a refused upload's body (at most `REFUSED_BODY_LIMIT`) may take.
const REFUSED_BODY_TIME: Duration = Duration::from_secs(10);

/// What every connection shares.
#[derive(Debug)]
pub struct Context {
    pub root: PathBuf,
    pub users: Users,
    /// With `--anonymous`: the quota of the anonymous home.
    pub anonymous_quota: Option<u64>,
    /// Idle partial uploads older than this are removed (`--partial-expiry`).
    pub partial_expiry: Option<Duration>,
}

/// One connection's state, kept between its requests: the login, the current directory.
/// Served one request at a time (`serve_requests`): between requests the connection waits
/// in the server's event set and holds no thread.
pub struct Session {
    ctx: Arc<Context>,
    /// The logged-in user's home.
    home: Option<Home>,
    cwd: VPath,
    failures: u32,
    /// The anonymous home, opened on the first anonymous upload.
    anonymous: Option<Home>,
}

impl Session {
    /// A new connection's session: not logged in, at `/`.
    pub fn new(ctx: Arc<Context>) -> Session {
        Session {
            ctx,
            home: None,
            cwd: VPath::default(),
            failures: 0,
            anonymous: None,
        }
    }
}

impl RequestHandler for Session {
    /// Serves one request: the client quits or closes, or a bad frame, ends the connection.
    fn handle_request(&mut self, req: &mut StreamRequest) -> io::Result<Next> {
        let header = match CODEC.read_json_header::<Map<String, Value>, _>(req) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Next::Close),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                log::info!("{}: bad message, closing: {e}", req.peer_addr());
                let _ = send(req, &error(format!("bad message: {e}")));
                return Ok(Next::Close);
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                log::info!("{}: closed inside a message", req.peer_addr());
                return Ok(Next::Close);
            }
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                log::info!("{}: request not complete in time, closing", req.peer_addr());
                return Ok(Next::Close);
            }
            Err(e) => return Err(e),
        };
        let received = Instant::now();
        self.handle(req, Request::parse(&header), received)
    }
}

impl Session {
    fn handle(&mut self, req: &mut StreamRequest, r: Request, at: Instant) -> io::Result<Next> {
        let answer = match r {
            Request::Login { username, password } => {
                return self.login(req, &username, &password, at)
            }
            Request::Quit => {
                send(req, &ok(json!({})))?;
                return Ok(Next::Close);
            }
            Request::Unframed(msg) => {
                send(req, &error(format!("{msg}; closing")))?;
                return Ok(Next::Close);
            }
            Request::Put(put) => return self.put(req, put),
            Request::Get { filename, offset } => return self.get(req, &filename, offset),
            Request::BadLogin(msg) => error(msg),
            // Before a login, every command but login and quit gets the same answer.
            Request::Invalid(_) if self.home.is_none() => error("not logged in"),
            Request::Invalid(msg) => error(msg),
            other => self.command(other).unwrap_or_else(error),
        };
        send(req, &answer)?;
        Ok(Next::Continue)
    }

    /// The commands that only look at or change the home, logged in.
    fn command(&mut self, r: Request) -> Result<Value, String> {
        let home = self.home.as_ref().ok_or("not logged in")?;
        Ok(match r {
            Request::Pwd => ok(json!({"cwd": self.cwd.to_string()})),
            Request::Cd { path } => {
                let v = self.cwd.join(&path)?;
                home.check_dir(&v)?;
                self.cwd = v;
                ok(json!({"cwd": self.cwd.to_string()}))
            }
            Request::Mkdir { path } => {
                home.mkdir(&self.cwd.join(&path)?)?;
                ok(json!({}))
            }
            Request::Rm { path } => {
                home.rm(&self.cwd.join(&path)?)?;
                ok(json!({}))
            }
            Request::Ls { path } => {
                let v = self.cwd.join(path.as_deref().unwrap_or("."))?;
                let (entries, cut) = home.ls(&v)?;
                let mut answer = ok(json!({ "entries": entries }));
                if cut {
                    answer["truncated"] = true.into();
                }
                answer
            }
            Request::Stat { filename } => ok(home.stat(&self.cwd.join(&filename)?)?),
            Request::Quota => {
                let (used, limit) = home.quota().map_err(|e| e.to_string())?;
                let free = home.disk_free().map_err(|e| e.to_string())?;
                ok(json!({"used": used, "limit": limit, "free": free}))
            }
            other => return Err(format!("unexpected request {other:?}")),
        })
    }

    fn login(
        &mut self,
        req: &mut StreamRequest,
        name: &str,
        password: &str,
        at: Instant,
    ) -> io::Result<Next> {
        let user = match self.ctx.users.check(name, password) {
            Ok(user) => user,
            Err(e) => {
                log::error!("login of {name:?}: {e}");
                None
            }
        };
        if let Some(user) = user {
            match Home::open(&self.ctx.root, &user.name, user.quota) {
                Ok(mut home) => {
                    home.partial_expiry = self.ctx.partial_expiry;
                    log::info!("{}: {name} logged in", req.peer_addr());
                    self.home = Some(home);
                    self.cwd = VPath::default();
                    send(req, &ok(json!({"cwd": "/"})))?;
                    return Ok(Next::Continue);
                }
                Err(e) => log::error!("home of {name:?}: {e}"),
            }
        }
        self.failures += 1;
        log::info!(
            "{}: failed login as {name:?} ({} of {MAX_LOGIN_FAILURES})",
            req.peer_addr(),
            self.failures
        );
        thread::sleep(LOGIN_DELAY.saturating_sub(at.elapsed()));
        send(req, &error("login incorrect"))?;
        Ok(if self.failures >= MAX_LOGIN_FAILURES {
            Next::Close
        } else {
            Next::Continue
        })
    }

    /// The home an upload goes to: the user's, or the anonymous one with `--anonymous`.
    fn upload_home(&mut self) -> io::Result<Option<(&Home, VPath)>> {
        if let Some(home) = &self.home {
            return Ok(Some((home, self.cwd.clone())));
        }
        let Some(quota) = self.ctx.anonymous_quota else {
            return Ok(None);
        };
        if self.anonymous.is_none() {
            let mut home = Home::open(&self.ctx.root, ANONYMOUS, quota)?;
            home.partial_expiry = self.ctx.partial_expiry;
            self.anonymous = Some(home);
        }
        Ok(self.anonymous.as_ref().map(|h| (h, VPath::default())))
    }

    fn put(&mut self, req: &mut StreamRequest, put: Put) -> io::Result<Next> {
        let peer = req.peer_addr().clone();
        let target = match self.upload_home()? {
            None => Err("not logged in".to_string()),
            Some((home, cwd)) => home.begin_put(&cwd, &put).map(|up| (home, up)),
        };
        let (home, mut up) = match target {
            Ok(target) => target,
            Err(msg) => return refuse_put(req, &put, msg),
        };
        // The header arrived within the server's request timeout; the body may take as long
        // as it needs, as long as it keeps coming.
        req.set_deadline(None);
        req.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
        let mut body = Body::new(req, put.body_len());
        let answer = match up.receive(&mut body) {
            Ok(()) => match home.finish_put(up) {
                Ok((size, sum)) => ok(json!({"size": size, "sha256": sum})),
                Err(msg) => error(msg),
            },
            Err(ReceiveError::Client(e)) => {
                log::info!(
                    "{peer}: upload of {} cut off, {} of {} bytes missing: {e}",
                    up.vpath(),
                    body.remaining(),
                    put.body_len()
                );
                return Ok(Next::Close);
            }
            Err(ReceiveError::Disk(e)) => {
                log::error!("{peer}: storing {}: {e}", up.vpath());
                if is_out_of_space(&e) {
                    // Nothing can resume it until space is freed, and it holds space (and
                    // quota) meanwhile: it goes.
                    up.discard();
                } else {
                    drop(up);
                }
                // The rest will not be stored: read and dropped only when small (the
                // connection goes on), else the answer is sent and the connection closed,
                // the rest never read.
                let rest = body.remaining();
                if rest > REFUSED_BODY_LIMIT {
                    log::info!("{peer}: closing rather than reading the {rest} bytes left");
                    let mut answer = error(format!(
                        "cannot store the file: {e}; closing: the rest is not read"
                    ));
                    answer["closing"] = true.into();
                    send(req, &answer)?;
                    return Ok(Next::Close);
                }
                body.get_mut().set_read_timeout(None)?;
                body.get_mut()
                    .set_deadline(Some(Instant::now() + REFUSED_BODY_TIME));
                let skipped = body.skip();
                req.set_deadline(None);
                if let Err(e) = skipped {
                    log::info!("{peer}: the rest of the failed upload did not come: {e}");
                    return Ok(Next::Close);
                }
                error(format!("cannot store the file: {e}"))
            }
        };
        req.set_read_timeout(None)?;
        send(req, &answer)?;
        Ok(Next::Continue)
    }

    fn get(&mut self, req: &mut StreamRequest, filename: &str, offset: u64) -> io::Result<Next> {
        let Some(home) = &self.home else {
            send(req, &error("not logged in"))?;
            return Ok(Next::Continue);
        };
        let opened = self
            .cwd
            .join(filename)
            .and_then(|v| home.open_get(&v, offset));
        let (file, size, sum) = match opened {
            Ok(o) => o,
            Err(msg) => {
                send(req, &error(msg))?;
                return Ok(Next::Continue);
            }
        };
        let header = ok(json!({"filesize": size, "offset": offset, "sha256": sum}));
        // A client that stops reading must not hold this worker for ever.
        req.set_write_timeout(Some(TRANSFER_TIMEOUT))?;
        CODEC.write_json_header(req, &header)?;
        let mut rest = file.take(size - offset);
        let mut buf = vec![0u8; CHUNK];
        let mut sent = offset;
        while sent < size {
            let n = rest.read(&mut buf)?;
            if n == 0 {
                // The file shrank under us: the promised length cannot be kept.
                log::error!("{filename}: changed while being sent; closing");
                return Ok(Next::Close);
            }
            req.write_all(&buf[..n])?;
            sent += n as u64;
        }
        req.flush()?;
        req.set_write_timeout(None)?;
        Ok(Next::Continue)
    }
}

/// Whether a write failed for lack of space (the disk, or a filesystem quota).
fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Answers a refused `put`. A small body (at most 64 KiB, arriving within 10 s) is read
/// and discarded, and the connection goes on. A larger one is never read, whoever sent it
/// (a client not logged in declaring 2^62 bytes, or a logged-in user declaring what the
/// quota allows): the answer, marked `"closing": true`, is the connection's last, and a
/// refused client cannot keep a worker reading a body the server will not store.
///
/// The close is the library's polite one (`Next::Close`): the answer is flushed, the
/// write side shut down (the client reads the answer, then EOF), and up to 256 KiB of the
/// body already received are drained before the socket closes, so that the kernel does
/// not answer unread bytes with a reset that could destroy the answer in flight.
fn refuse_put(req: &mut StreamRequest, put: &Put, msg: String) -> io::Result<Next> {
    let len = put.body_len();
    if len > REFUSED_BODY_LIMIT {
        log::info!(
            "{}: put refused ({msg}); closing rather than reading its {len} bytes",
            req.peer_addr()
        );
        let mut answer = error(format!("{msg}; closing: the body is not read"));
        answer["closing"] = true.into();
        send(req, &answer)?;
        return Ok(Next::Close);
    }
    req.set_deadline(Some(Instant::now() + REFUSED_BODY_TIME));
    let skipped = Body::new(&mut *req, len).skip();
    req.set_deadline(None);
    if let Err(e) = skipped {
        log::info!("{}: refused put's body did not come: {e}", req.peer_addr());
        return Ok(Next::Close);
    }
    send(req, &error(msg))?;
    Ok(Next::Continue)
}

//! `put` and `get`: resumed where a previous attempt stopped, verified with SHA-256, with a
//! progress bar on a terminal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::conn::{number, text, Conn, Failure, CHUNK};
use crate::hashpipe::HashPipe;

/// What a finished transfer did.
pub struct Done {
    pub bytes: u64,
    /// Where it started: more than 0 when a partial transfer was resumed.
    pub resumed_at: u64,
    pub sha256: String,
}

/// A progress bar (bytes, rate, ETA) on stderr if it is a terminal, else nothing.
fn progress_bar(total: u64, start: u64, label: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar.set_position(start);
    bar
}

fn refused(msg: impl Into<String>) -> Failure {
    Failure::Refused(msg.into())
}

/// SHA-256 of `file` from its start, lowercase hex, into `hasher` for `len` bytes.
fn hash_into(file: &mut File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; CHUNK];
    let mut part = file.take(len);
    loop {
        let n = part.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Uploads `local` as `remote`, continuing the server's partial upload of it if it holds a
/// beginning of the same size.
pub fn put(conn: &mut Conn, local: &Path, remote: &str) -> Result<Done, Failure> {
    let mut file = File::open(local).map_err(|e| refused(format!("{}: {e}", local.display())))?;
    let meta = file.metadata().map_err(|e| refused(e.to_string()))?;
    if !meta.is_file() {
        return Err(refused(format!("{}: not a file", local.display())));
    }
    let size = meta.len();
    // Ask first, hash after: a file the server would refuse for its size is refused before
    // the (long) hashing pass and before a byte is sent.
    let (offset, partial) = match conn.call(&json!({"cmd": "stat", "filename": remote})) {
        Ok(a) if text(&a, "type") == "partial" => {
            let held = number(&a, "size");
            let resumable = number(&a, "filesize") == size && held <= size;
            (if resumable { held } else { 0 }, held)
        }
        Ok(_) | Err(Failure::Refused(_)) => (0, 0),
        Err(e) => return Err(e),
    };
    check_room(conn, remote, size, offset, partial)?;
    let mut hasher = Sha256::new();
    hash_into(&mut file, size, &mut hasher).map_err(|e| refused(e.to_string()))?;
    let sum = format!("{:x}", hasher.finalize());
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| refused(e.to_string()))?;
    conn.send_header(&json!({
        "cmd": "put", "filename": remote, "filesize": size, "offset": offset, "sha256": sum,
    }))?;
    let bar = progress_bar(size, offset, &format!("put {remote}"));
    let answer = conn
        .send_body(&mut file, size - offset, |n| bar.inc(n))
        .and_then(|()| conn.answer());
    match &answer {
        Ok(_) => bar.finish(),
        Err(_) => bar.abandon(),
    }
    let answer = answer?;
    if text(&answer, "sha256") != sum {
        return Err(refused(format!(
            "the server stored {remote} with SHA-256 {}, expected {sum}",
            text(&answer, "sha256")
        )));
    }
    Ok(Done {
        bytes: size,
        resumed_at: offset,
        sha256: sum,
    })
}

/// Refuses an upload of `size` bytes (resumed at `offset`; `partial` bytes of an earlier
/// partial upload of it are held, and replaced) that the server's quota or disk cannot
/// take, as the server would, but before hashing and sending. A server that does not say
/// (no login, an older server) is left to decide.
fn check_room(
    conn: &mut Conn,
    remote: &str,
    size: u64,
    offset: u64,
    partial: u64,
) -> Result<(), Failure> {
    let a = match conn.call(&json!({"cmd": "quota"})) {
        Ok(a) => a,
        Err(Failure::Refused(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (used, limit) = (number(&a, "used"), number(&a, "limit"));
    let others = used.saturating_sub(partial);
    if a.get("limit").is_some() && others.saturating_add(size) > limit {
        return Err(refused(format!(
            "quota exceeded: {used} of {limit} bytes used, {remote} needs {size}"
        )));
    }
    if let Some(free) = a.get("free").and_then(serde_json::Value::as_u64) {
        if size - offset > free {
            return Err(refused(format!(
                "no space left on the server's disk: {free} bytes free, {remote} needs {} more",
                size - offset
            )));
        }
    }
    Ok(())
}

/// The local partial file of a download to `local`.
fn partial_path(local: &Path) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_owned();
    name.push(".part");
    local.with_file_name(name)
}

/// Downloads `remote` to `local`, continuing `local.part` if a previous download stopped.
/// A resumed download whose checksum fails (the remote file changed) starts over once.
pub fn get(conn: &mut Conn, remote: &str, local: &Path) -> Result<Done, Failure> {
    let part = partial_path(local);
    match get_once(conn, remote, local, &part) {
        Err(Retry::FromStart(why)) => {
            log_retry(&why);
            let _ = fs::remove_file(&part);
            get_once(conn, remote, local, &part).map_err(Retry::into_failure)
        }
        other => other.map_err(Retry::into_failure),
    }
}

fn log_retry(why: &str) {
    eprintln!("{why}; downloading again from the start");
}

/// A download that failed, and whether starting over may help.
enum Retry {
    FromStart(String),
    Fail(Failure),
}

impl Retry {
    fn into_failure(self) -> Failure {
        match self {
            Retry::FromStart(msg) => Failure::Refused(msg),
            Retry::Fail(f) => f,
        }
    }
}

impl From<Failure> for Retry {
    fn from(f: Failure) -> Retry {
        Retry::Fail(f)
    }
}

fn get_once(conn: &mut Conn, remote: &str, local: &Path, part: &Path) -> Result<Done, Retry> {
    let local_err = |e: io::Error| Retry::Fail(refused(format!("{}: {e}", part.display())));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(local_err)?;
    let held = file.metadata().map_err(local_err)?.len();
    let answer = match conn.call(&json!({"cmd": "get", "filename": remote, "offset": held})) {
        Ok(a) => a,
        Err(Failure::Refused(msg)) if held > 0 => return Err(Retry::FromStart(msg)),
        Err(Failure::Refused(msg)) => {
            let _ = fs::remove_file(part);
            return Err(Retry::Fail(Failure::Refused(msg)));
        }
        Err(e) => return Err(e.into()),
    };
    let size = number(&answer, "filesize");
    // Numbers from the server are checked before any arithmetic on them.
    if size < held {
        return Err(Retry::FromStart(format!(
            "{remote} is {size} bytes on the server, shorter than the {held} bytes held in {}",
            part.display()
        )));
    }
    let expected = text(&answer, "sha256").to_owned();
    let mut hasher = Sha256::new();
    hash_into(&mut file, held, &mut hasher).map_err(local_err)?;
    file.seek(SeekFrom::Start(held)).map_err(local_err)?;
    let bar = progress_bar(size, held, &format!("get {remote}"));
    let mut body = conn.body(size - held);
    let mut pipe = HashPipe::new(hasher);
    loop {
        let mut buf = pipe.buffer();
        let (n, failed) = fill(&mut body, &mut buf);
        // What arrived before a failure is kept: `LOCAL.part` then holds it, for a resume.
        if let Err(e) = file.write_all(&buf[..n]) {
            bar.abandon();
            // The rest of the body cannot be skipped cheaply: the connection is given up.
            return Err(Retry::Fail(Failure::Broken(e)));
        }
        pipe.hash(buf, n);
        bar.inc(n as u64);
        if let Some(e) = failed {
            bar.abandon();
            return Err(Retry::Fail(Failure::Broken(e)));
        }
        if n < CHUNK {
            break;
        }
    }
    bar.finish();
    let sum = format!("{:x}", pipe.finish().finalize());
    if sum != expected {
        let _ = fs::remove_file(part);
        let msg = format!("checksum mismatch for {remote}: expected {expected}, received {sum}");
        return Err(if held > 0 {
            Retry::FromStart(msg)
        } else {
            Retry::Fail(refused(msg))
        });
    }
    file.sync_data().map_err(local_err)?;
    fs::rename(part, local).map_err(local_err)?;
    Ok(Done {
        bytes: size,
        resumed_at: held,
        sha256: sum,
    })
}

/// Reads from `r` until `buf` is full or `r` ends: how many bytes were read, and the
/// error that stopped it early, if any (the bytes read before it are still counted, so
/// that they can be kept). `Interrupted` is retried.
fn fill<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

//! Uploads: the partial file that receives a `put` (`.ftp-part.N.NAME`, locked while a
//! connection writes it), the quota decision that admits it, and the atomic rename that
//! ends it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs4::{FileExt, TryLockError};
use sha2::{Digest, Sha256};

use crate::checksums::{sum_path_of, write_sum};
use crate::hashpipe::HashPipe;
use crate::paths::{describe, Refusal, VPath};
use crate::protocol::Put;
use crate::storage::Home;

/// The name prefix of partial uploads: `.ftp-part.N.NAME`.
pub const PART: &str = ".ftp-part.";

/// A partial upload found next to its target.
pub struct Partial {
    pub path: PathBuf,
    pub filesize: u64,
    pub held: u64,
}

impl Home {
    /// Starts a `put`: checks the name, the offset and the quota, and opens (and locks) the
    /// partial upload that will receive the body.
    pub fn begin_put(&self, cwd: &VPath, put: &Put) -> Result<Upload, Refusal> {
        let filename = put.filename.as_ref().map_err(Clone::clone)?;
        let v = cwd.join(filename)?;
        let (dir, name) = self.new_entry(&v)?;
        let target = dir.join(&name);
        if target.is_dir() {
            return Err(format!("{v}: is a directory"));
        }
        if put.filesize > self.quota {
            return Err(format!(
                "quota exceeded: {v} has {} bytes, the quota is {} bytes",
                put.filesize, self.quota
            ));
        }
        let _lock = self.lock().map_err(|e| describe(e, &v))?;
        let part_path = dir.join(format!("{PART}{}.{name}", put.filesize));
        let file = if put.offset > 0 {
            resume_partial(&dir, &name, &part_path, put)?
        } else {
            fresh_partial(&dir, &name, &part_path)?
        };
        let used = self.usage(Some(&part_path)).map_err(|e| describe(e, &v))?;
        if used.saturating_add(put.filesize) > self.quota {
            if put.offset == 0 {
                let _ = fs::remove_file(&part_path);
            }
            return Err(format!(
                "quota exceeded: {used} of {} bytes used, {v} needs {}",
                self.quota, put.filesize
            ));
        }
        // The disk may be fuller than the quota says: refused before a byte is written.
        let free = fs4::available_space(&dir).unwrap_or(u64::MAX);
        if put.body_len() > free {
            if put.offset == 0 {
                let _ = fs::remove_file(&part_path);
            }
            return Err(format!(
                "no space left on the server's disk: {free} bytes free, {v} needs {} more",
                put.body_len()
            ));
        }
        Ok(Upload {
            file,
            part_path,
            target,
            vpath: v,
            filesize: put.filesize,
            offset: put.offset,
            expected: put.sha256.clone(),
            hasher: Sha256::new(),
        })
    }

    /// Commits a fully received upload: verified, then renamed over the target at once.
    pub fn finish_put(&self, up: Upload) -> Result<(u64, String), Refusal> {
        let v = &up.vpath;
        let sum = format!("{:x}", up.hasher.finalize());
        if let Some(expected) = &up.expected {
            if *expected != sum {
                let _ = fs::remove_file(&up.part_path);
                return Err(format!(
                    "checksum mismatch for {v}: expected {expected}, received {sum}; upload discarded"
                ));
            }
        }
        up.file.sync_data().map_err(|e| describe(e, v))?;
        let _lock = self.lock().map_err(|e| describe(e, v))?;
        if up.target.is_dir() {
            let _ = fs::remove_file(&up.part_path);
            return Err(format!("{v}: is a directory"));
        }
        fs::rename(&up.part_path, &up.target).map_err(|e| describe(e, v))?;
        if let Ok(meta) = up.file.metadata() {
            write_sum(&sum_path_of(&up.target), &meta, &sum);
        }
        Ok((up.filesize, sum))
    }
}

/// An upload in progress: its partial file (locked) and the hash so far.
pub struct Upload {
    file: File,
    part_path: PathBuf,
    target: PathBuf,
    vpath: VPath,
    filesize: u64,
    offset: u64,
    expected: Option<String>,
    hasher: Sha256,
}

/// Why receiving a body stopped.
pub enum ReceiveError {
    /// The client's stream failed (closed, reset, timed out): the partial upload keeps
    /// what arrived.
    Client(io::Error),
    /// The disk failed: the rest of the body must still be read.
    Disk(io::Error),
}

impl Upload {
    /// Hashes the bytes already held (a resumed upload), then appends the body to the
    /// partial file, hashing it on the way (on a helper thread).
    pub fn receive<R: Read + ?Sized>(&mut self, body: &mut R) -> Result<(), ReceiveError> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ReceiveError::Disk)?;
        let mut pipe = HashPipe::new(std::mem::take(&mut self.hasher));
        let mut held = (&mut self.file).take(self.offset);
        loop {
            let mut buf = pipe.buffer();
            let n = held.read(&mut buf).map_err(ReceiveError::Disk)?;
            pipe.hash(buf, n);
            if n == 0 {
                break;
            }
        }
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(ReceiveError::Disk)?;
        // Each piece is written as it arrives, so that the partial upload always holds
        // everything received (`stat` shows the progress; a cut upload loses nothing).
        loop {
            let mut buf = pipe.buffer();
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReceiveError::Client(e)),
            };
            self.file.write_all(&buf[..n]).map_err(ReceiveError::Disk)?;
            pipe.hash(buf, n);
        }
        self.hasher = pipe.finish();
        Ok(())
    }

    /// The target, as the client named it.
    pub fn vpath(&self) -> &VPath {
        &self.vpath
    }

    /// Gives the upload up and removes its partial file (it cannot be resumed).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.part_path);
        drop(self.file);
    }
}

/// Opens the partial upload `put` resumes: it must exist for the same size and hold exactly
/// `put.offset` bytes.
pub fn resume_partial(
    dir: &Path,
    name: &str,
    part_path: &Path,
    put: &Put,
) -> Result<File, Refusal> {
    let file = match OpenOptions::new().read(true).write(true).open(part_path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(match find_partials(dir, name).first() {
                Some(p) => format!(
                    "the partial upload of {name} is for a file of {} bytes, not {}; start again at offset 0",
                    p.filesize, put.filesize
                ),
                None => format!("no partial upload of {name} to resume; start at offset 0"),
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    lock_partial(&file, name)?;
    let held = file.metadata().map_err(|e| e.to_string())?.len();
    if held != put.offset {
        return Err(format!(
            "offset {} does not match the partial upload of {name}, which holds {held} bytes",
            put.offset
        ));
    }
    Ok(file)
}

/// Removes the idle partial uploads of `name` and starts an empty one at `part_path`.
pub fn fresh_partial(dir: &Path, name: &str, part_path: &Path) -> Result<File, Refusal> {
    let others = find_partials(dir, name);
    remove_partials(&others, name)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part_path)
        .map_err(|e| e.to_string())?;
    lock_partial(&file, name)?;
    file.set_len(0).map_err(|e| e.to_string())?;
    Ok(file)
}

pub fn lock_partial(file: &File, name: &str) -> Result<(), Refusal> {
    match FileExt::try_lock(file) {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => {
            Err(format!("{name} is being uploaded by another connection"))
        }
        Err(TryLockError::Error(e)) => Err(e.to_string()),
    }
}

pub fn remove_partials(partials: &[Partial], name: &str) -> Result<(), Refusal> {
    for p in partials {
        if is_busy(&p.path) {
            return Err(format!("{name} is being uploaded by another connection"));
        }
        fs::remove_file(&p.path).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether another connection holds the lock of this partial upload (it is being written).
pub fn is_busy(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| matches!(FileExt::try_lock(&f), Err(TryLockError::WouldBlock)))
}

/// `(filesize, name)` of a partial upload's file name.
pub fn parse_partial(file_name: &str) -> Option<(u64, &str)> {
    let rest = file_name.strip_prefix(PART)?;
    let (size, name) = rest.split_once('.')?;
    Some((size.parse().ok()?, name))
}

/// The partial uploads of `name` in `dir`.
pub fn find_partials(dir: &Path, name: &str) -> Vec<Partial> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((filesize, of)) = file_name.to_str().and_then(parse_partial) else {
            continue;
        };
        if of == name {
            if let Ok(meta) = entry.metadata() {
                found.push(Partial {
                    path: entry.path(),
                    filesize,
                    held: meta.len(),
                });
            }
        }
    }
    found
}

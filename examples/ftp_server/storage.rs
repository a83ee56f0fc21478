//! The files of one home: virtual paths and the checks that keep them inside the home,
//! listings, the quota, partial uploads and cached checksums.
//!
//! On disk, next to the user's files, hidden names starting with `.ftp-` (which clients
//! can neither name nor see):
//!
//! * `.ftp-part.N.NAME`: a partial upload of `NAME`, a file of `N` bytes. While a connection
//!   writes it, that connection holds an exclusive `flock` on it; the quota counts a locked
//!   partial at `N` (the space is reserved), an idle one at the bytes it holds.
//! * `.ftp-sum.NAME`: the SHA-256 of `NAME`, valid while the file's inode, size and mtime are
//!   those recorded with it (so `get` does not hash a file twice).
//! * `.ftp-tmp.*`: a checksum being written.
//!
//! Decisions that change the quota (starting an upload, committing it, removing a partial)
//! are taken under the user's lock file, `ROOT/.ftp/locks/NAME.lock` (an exclusive `flock`),
//! so they hold across the threads of one process and across the processes of `--mode fork`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fs4::{FileExt, TryLockError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::hashpipe::HashPipe;
pub use crate::hashpipe::CHUNK;
use crate::protocol::Put;

/// Names starting with this are the server's own: refused in requests, hidden in listings.
const RESERVED: &str = ".ftp-";
const PART: &str = ".ftp-part.";
const SUM: &str = ".ftp-sum.";
const TMP: &str = ".ftp-tmp.";
/// A listing keeps at most this many entries (the smallest names) before it is encoded.
const LS_MAX_ENTRIES: usize = 2000;
/// A listing's entries stop before the answer header would pass this many bytes.
const LS_MAX_JSON: usize = 60 * 1024;

/// What a refused request is told.
pub type Refusal = String;

/// A path inside a home, as the client sees it: `/` is the home. Normalised: no empty, `.`
/// or `..` components, none reserved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VPath(Vec<String>);

impl VPath {
    /// `input` taken from this directory (from the home if it starts with `/`). `..` stops
    /// at the home; NUL bytes and reserved names are refused.
    pub fn join(&self, input: &str) -> Result<VPath, Refusal> {
        if input.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        let mut parts = if input.starts_with('/') {
            Vec::new()
        } else {
            self.0.clone()
        };
        for part in input.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name if name.starts_with(RESERVED) => {
                    return Err(format!("names starting with {RESERVED} are reserved"))
                }
                name if name.len() > 255 => return Err("a path component is too long".into()),
                name => parts.push(name.to_owned()),
            }
        }
        Ok(VPath(parts))
    }

    /// The parent and the last component; `None` for the home itself.
    fn split_last(&self) -> Option<(VPath, &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((VPath(parent.to_vec()), last))
    }
}

impl std::fmt::Display for VPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

/// One user's home directory.
#[derive(Debug)]
pub struct Home {
    /// The canonical path of the home.
    dir: PathBuf,
    lock_path: PathBuf,
    quota: u64,
}

/// The user's lock, held while it lives.
struct UserLock(#[allow(dead_code)] File);

/// A partial upload found next to its target.
struct Partial {
    path: PathBuf,
    filesize: u64,
    held: u64,
}

impl Home {
    /// The home `root/name` (created if missing) with `quota` bytes.
    pub fn open(root: &Path, name: &str, quota: u64) -> io::Result<Home> {
        let dir = root.join(name);
        fs::create_dir_all(&dir)?;
        let locks = root.join(".ftp").join("locks");
        fs::create_dir_all(&locks)?;
        Ok(Home {
            dir: dir.canonicalize()?,
            lock_path: locks.join(format!("{name}.lock")),
            quota,
        })
    }

    fn lock(&self) -> io::Result<UserLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)?;
        FileExt::lock(&file)?;
        Ok(UserLock(file))
    }

    /// The real path of an existing `v`, symbolic links resolved; refused if it is missing or
    /// leads outside the home.
    fn existing(&self, v: &VPath) -> Result<PathBuf, Refusal> {
        let mut real = self.dir.clone();
        real.extend(&v.0);
        let real = real.canonicalize().map_err(|e| describe(e, v))?;
        if real.starts_with(&self.dir) {
            Ok(real)
        } else {
            Err(format!("{v}: symbolic link leads outside the home"))
        }
    }

    /// The real parent directory of `v` and its last name, for a file that may not exist
    /// yet. If it exists as a symbolic link, that must lead inside the home too.
    fn new_entry(&self, v: &VPath) -> Result<(PathBuf, String), Refusal> {
        let (parent, name) = v.split_last().ok_or("a name is needed, not /")?;
        let dir = self.existing(&parent)?;
        if !dir.is_dir() {
            return Err(format!("{parent}: not a directory"));
        }
        let path = dir.join(name);
        if path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            match path.canonicalize() {
                Ok(target) if target.starts_with(&self.dir) => {}
                _ => return Err(format!("{v}: symbolic link leads outside the home")),
            }
        }
        Ok((dir, name.to_owned()))
    }

    /// `cd`: `v` must be a directory.
    pub fn check_dir(&self, v: &VPath) -> Result<(), Refusal> {
        if self.existing(v)?.is_dir() {
            Ok(())
        } else {
            Err(format!("{v}: not a directory"))
        }
    }

    /// `mkdir`: one new directory, its parent existing.
    pub fn mkdir(&self, v: &VPath) -> Result<(), Refusal> {
        let (dir, name) = self.new_entry(v)?;
        fs::create_dir(dir.join(name)).map_err(|e| describe(e, v))
    }

    /// `ls`: the visible entries of directory `v` sorted by name (or `v` alone if it is a
    /// file), and whether the list was cut to fit one answer.
    pub fn ls(&self, v: &VPath) -> Result<(Vec<Value>, bool), Refusal> {
        let path = self.existing(v)?;
        let mut found = BTreeMap::new();
        let mut cut = false;
        if path.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| describe(e, v))? {
                let entry = entry.map_err(|e| describe(e, v))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(RESERVED) {
                    continue;
                }
                if let Some(kind) = self.entry_kind(&entry.path()) {
                    found.insert(name, kind);
                    if found.len() > LS_MAX_ENTRIES {
                        found.pop_last();
                        cut = true;
                    }
                }
            }
        } else if let (Some((_, name)), Some(kind)) = (v.split_last(), self.entry_kind(&path)) {
            found.insert(name.to_owned(), kind);
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (name, (kind, size)) in found {
            let entry = json!({"name": name, "type": kind, "size": size});
            bytes += entry.to_string().len() + 1;
            if bytes > LS_MAX_JSON {
                cut = true;
                break;
            }
            entries.push(entry);
        }
        Ok((entries, cut))
    }

    /// "file" or "dir" and the size, following a symbolic link only if it stays inside.
    fn entry_kind(&self, path: &Path) -> Option<(&'static str, u64)> {
        let meta = path.symlink_metadata().ok()?;
        let meta = if meta.file_type().is_symlink() {
            let target = path.canonicalize().ok()?;
            if !target.starts_with(&self.dir) {
                return None;
            }
            target.metadata().ok()?
        } else {
            meta
        };
        if meta.is_dir() {
            Some(("dir", 0))
        } else if meta.is_file() {
            Some(("file", meta.len()))
        } else {
            None
        }
    }

    /// `stat`: a partial upload of `v` if one exists, else the file (or directory).
    pub fn stat(&self, v: &VPath) -> Result<Value, Refusal> {
        if v.0.is_empty() {
            return Ok(json!({"type": "dir", "size": 0}));
        }
        let (dir, name) = self.new_entry(v)?;
        if let Some(p) = find_partials(&dir, &name).into_iter().next() {
            return Ok(json!({"type": "partial", "size": p.held, "filesize": p.filesize}));
        }
        match self.entry_kind(&dir.join(&name)) {
            Some((kind, size)) => Ok(json!({"type": kind, "size": size})),
            None => Err(format!("{v}: not found")),
        }
    }

    /// `rm`: a file, an empty directory, or (if no file has the name) the partial upload of
    /// that name. A symbolic link is removed itself, not what it leads to.
    pub fn rm(&self, v: &VPath) -> Result<(), Refusal> {
        let (dir, name) = self.new_entry(v)?;
        let path = dir.join(&name);
        let _lock = self.lock().map_err(|e| describe(e, v))?;
        let meta = match path.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let partials = find_partials(&dir, &name);
                if partials.is_empty() {
                    return Err(format!("{v}: not found"));
                }
                return remove_partials(&partials, &name);
            }
            Err(e) => return Err(describe(e, v)),
        };
        if meta.is_dir() {
            return self.rmdir(&path, v);
        }
        fs::remove_file(&path).map_err(|e| describe(e, v))?;
        let _ = fs::remove_file(dir.join(format!("{SUM}{name}")));
        Ok(())
    }

    /// Removes a directory that holds nothing a client can see (hidden checksums and idle
    /// partial uploads go with it).
    fn rmdir(&self, path: &Path, v: &VPath) -> Result<(), Refusal> {
        if path == self.dir {
            return Err("cannot remove the home directory".into());
        }
        let mut hidden = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| describe(e, v))? {
            let entry = entry.map_err(|e| describe(e, v))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(RESERVED) {
                return Err(format!("{v}: directory not empty"));
            }
            hidden.push(entry.path());
        }
        for file in hidden {
            if let Ok(f) = File::open(&file) {
                if matches!(FileExt::try_lock(&f), Err(TryLockError::WouldBlock)) {
                    return Err(format!("{v}: an upload into it is in progress"));
                }
            }
            fs::remove_file(&file).map_err(|e| describe(e, v))?;
        }
        fs::remove_dir(path).map_err(|e| describe(e, v))
    }

    /// `quota`: bytes used (partial uploads included) and the limit.
    pub fn quota(&self) -> io::Result<(u64, u64)> {
        let _lock = self.lock()?;
        Ok((self.usage(None)?, self.quota))
    }

    /// Bytes stored in the home: files at their size; partial uploads at the bytes they hold,
    /// or at their full size while being written (reserved); `skip` not counted. Call with
    /// the user's lock held.
    fn usage(&self, skip: Option<&Path>) -> io::Result<u64> {
        let mut used = 0u64;
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue; // removed meanwhile
                };
                let path = entry.path();
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if !meta.is_file() || Some(path.as_path()) == skip {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                used += if let Some((filesize, _)) = parse_partial(&name) {
                    if is_busy(&path) {
                        meta.len().max(filesize)
                    } else {
                        meta.len()
                    }
                } else if name.starts_with(SUM) || name.starts_with(TMP) {
                    0
                } else {
                    meta.len()
                };
            }
        }
        Ok(used)
    }

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

    /// Opens file `v` for a `get` from `offset`: the file, its size and its SHA-256.
    pub fn open_get(&self, v: &VPath, offset: u64) -> Result<(File, u64, String), Refusal> {
        let path = self.existing(v)?;
        let mut file = File::open(&path).map_err(|e| describe(e, v))?;
        let meta = file.metadata().map_err(|e| describe(e, v))?;
        if !meta.is_file() {
            return Err(format!("{v}: not a file"));
        }
        if offset > meta.len() {
            return Err(format!(
                "offset {offset} is past the end of {v} ({} bytes)",
                meta.len()
            ));
        }
        let sum_path = sum_path_of(&path);
        let sum = match read_sum(&sum_path, &meta) {
            Some(sum) => sum,
            None => {
                let sum = hash_reader(&mut file, meta.len()).map_err(|e| describe(e, v))?;
                write_sum(&sum_path, &meta, &sum);
                sum
            }
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| describe(e, v))?;
        Ok((file, meta.len(), sum))
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
}

/// Opens the partial upload `put` resumes: it must exist for the same size and hold exactly
/// `put.offset` bytes.
fn resume_partial(dir: &Path, name: &str, part_path: &Path, put: &Put) -> Result<File, Refusal> {
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
fn fresh_partial(dir: &Path, name: &str, part_path: &Path) -> Result<File, Refusal> {
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

fn lock_partial(file: &File, name: &str) -> Result<(), Refusal> {
    match FileExt::try_lock(file) {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => {
            Err(format!("{name} is being uploaded by another connection"))
        }
        Err(TryLockError::Error(e)) => Err(e.to_string()),
    }
}

fn remove_partials(partials: &[Partial], name: &str) -> Result<(), Refusal> {
    for p in partials {
        if is_busy(&p.path) {
            return Err(format!("{name} is being uploaded by another connection"));
        }
        fs::remove_file(&p.path).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether another connection holds the lock of this partial upload (it is being written).
fn is_busy(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| matches!(FileExt::try_lock(&f), Err(TryLockError::WouldBlock)))
}

/// `(filesize, name)` of a partial upload's file name.
fn parse_partial(file_name: &str) -> Option<(u64, &str)> {
    let rest = file_name.strip_prefix(PART)?;
    let (size, name) = rest.split_once('.')?;
    Some((size.parse().ok()?, name))
}

/// The partial uploads of `name` in `dir`.
fn find_partials(dir: &Path, name: &str) -> Vec<Partial> {
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

/// SHA-256 of the first `len` bytes of `r`, lowercase hex.
fn hash_reader<R: Read>(r: &mut R, len: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut r = r.take(len);
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn sum_path_of(file: &Path) -> PathBuf {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    file.with_file_name(format!("{SUM}{name}"))
}

/// What identifies the contents a checksum was computed for.
fn sum_key(meta: &fs::Metadata) -> String {
    format!(
        "{} {} {} {}",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn read_sum(path: &Path, meta: &fs::Metadata) -> Option<String> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(512)
        .read_to_string(&mut text)
        .ok()?;
    let (key, sum) = text.trim_end().rsplit_once(' ')?;
    (key == sum_key(meta) && sum.len() == 64).then(|| sum.to_owned())
}

/// Records `sum` for the file described by `meta` (best effort: a cache).
fn write_sum(path: &Path, meta: &fs::Metadata, sum: &str) {
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_file_name(format!(
        "{TMP}{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let written =
        fs::write(&tmp, format!("{} {sum}\n", sum_key(meta))).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// A refusal message for an I/O error on `v`.
fn describe(e: io::Error, v: &VPath) -> Refusal {
    match e.kind() {
        ErrorKind::NotFound => format!("{v}: not found"),
        ErrorKind::AlreadyExists => format!("{v}: already exists"),
        ErrorKind::PermissionDenied => format!("{v}: permission denied"),
        _ if e.raw_os_error() == Some(libc::ENOTEMPTY) => format!("{v}: directory not empty"),
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => format!("{v}: not a directory"),
        _ => format!("{v}: {e}"),
    }
}

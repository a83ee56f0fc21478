//! The files of one home: the checks that keep every path inside it, listings, `stat`,
//! `rm`, the quota, and opening files for `get`. (Uploads are in `upload`, client paths in
//! `paths`, the checksum cache in `checksums`.)
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
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fs4::{FileExt, TryLockError};
use serde_json::{json, Value};

use crate::checksums::{hash_reader, read_sum, sum_path_of, write_sum, SUM, TMP};
use crate::paths::{describe, Refusal, VPath, RESERVED};
use crate::upload::{find_partials, is_busy, parse_partial, remove_partials};

/// A listing keeps at most this many entries (the smallest names) before it is encoded.
const LS_MAX_ENTRIES: usize = 2000;
/// A listing's entries stop before the answer header would pass this many bytes.
const LS_MAX_JSON: usize = 60 * 1024;

/// One user's home directory.
#[derive(Debug)]
pub struct Home {
    /// The canonical path of the home.
    dir: PathBuf,
    lock_path: PathBuf,
    /// Bytes the user may store.
    pub quota: u64,
    /// Idle partial uploads older than this (by their last write) are removed when the
    /// quota is next counted; `None` keeps them until resumed or removed.
    pub partial_expiry: Option<Duration>,
}

/// The user's lock, held while it lives.
pub struct UserLock(#[allow(dead_code)] File);

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
            partial_expiry: None,
        })
    }

    pub fn lock(&self) -> io::Result<UserLock> {
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
    pub fn existing(&self, v: &VPath) -> Result<PathBuf, Refusal> {
        let mut real = self.dir.clone();
        real.extend(v.names());
        let real = real.canonicalize().map_err(|e| describe(e, v))?;
        if real.starts_with(&self.dir) {
            Ok(real)
        } else {
            Err(format!("{v}: symbolic link leads outside the home"))
        }
    }

    /// The real parent directory of `v` and its last name, for a file that may not exist
    /// yet. If it exists as a symbolic link, that must lead inside the home too.
    pub fn new_entry(&self, v: &VPath) -> Result<(PathBuf, String), Refusal> {
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
    /// file), and whether the list was cut to fit one answer. Partial uploads are listed
    /// too, under their target's name, as `"type":"partial"` with the bytes they hold and
    /// the `filesize` they are for: the owner sees what holds space, and `rm` removes it.
    pub fn ls(&self, v: &VPath) -> Result<(Vec<Value>, bool), Refusal> {
        let path = self.existing(v)?;
        // (name, kind) -> (size, filesize of a partial)
        let mut found = BTreeMap::new();
        let mut cut = false;
        if path.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| describe(e, v))? {
                let entry = entry.map_err(|e| describe(e, v))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let listed = if let Some((filesize, of)) = parse_partial(&name) {
                    let held = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    Some(((of.to_owned(), "partial"), (held, Some(filesize))))
                } else if name.starts_with(RESERVED) {
                    None
                } else {
                    self.entry_kind(&entry.path())
                        .map(|(kind, size)| ((name, kind), (size, None)))
                };
                if let Some((key, value)) = listed {
                    found.insert(key, value);
                    if found.len() > LS_MAX_ENTRIES {
                        found.pop_last();
                        cut = true;
                    }
                }
            }
        } else if let (Some((_, name)), Some((kind, size))) =
            (v.split_last(), self.entry_kind(&path))
        {
            found.insert((name.to_owned(), kind), (size, None));
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        for ((name, kind), (size, filesize)) in found {
            let mut entry = json!({"name": name, "type": kind, "size": size});
            if let Some(filesize) = filesize {
                entry["filesize"] = filesize.into();
            }
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
        if v.names().is_empty() {
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
    pub fn usage(&self, skip: Option<&Path>) -> io::Result<u64> {
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
                    } else if self.expired(&meta) {
                        log::info!("removing partial upload {}: expired", path.display());
                        let _ = fs::remove_file(&path);
                        0
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

    /// Whether an idle partial upload (its metadata) is older than the expiry.
    fn expired(&self, meta: &fs::Metadata) -> bool {
        let (Some(expiry), Ok(written)) = (self.partial_expiry, meta.modified()) else {
            return false;
        };
        SystemTime::now()
            .duration_since(written)
            .is_ok_and(|age| age >= expiry)
    }

    /// Bytes free on the disk of the home, for this user (`statvfs`'s available blocks).
    pub fn disk_free(&self) -> io::Result<u64> {
        fs4::available_space(&self.dir)
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
}

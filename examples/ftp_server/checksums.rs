//! The checksum kept beside each file (`.ftp-sum.NAME`), so that a `get` does not read a
//! file twice: valid while the file's inode, size and mtime are those recorded with it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::hashpipe::CHUNK;

/// The name prefix of checksum files: `.ftp-sum.NAME`.
pub const SUM: &str = ".ftp-sum.";
/// The name prefix of checksum files being written.
pub const TMP: &str = ".ftp-tmp.";

/// SHA-256 of the first `len` bytes of `r`, lowercase hex.
pub fn hash_reader<R: Read>(r: &mut R, len: u64) -> io::Result<String> {
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

pub fn sum_path_of(file: &Path) -> PathBuf {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    file.with_file_name(format!("{SUM}{name}"))
}

/// What identifies the contents a checksum was computed for.
pub fn sum_key(meta: &fs::Metadata) -> String {
    format!(
        "{} {} {} {}",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

pub fn read_sum(path: &Path, meta: &fs::Metadata) -> Option<String> {
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
pub fn write_sum(path: &Path, meta: &fs::Metadata, sum: &str) {
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

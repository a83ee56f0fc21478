//! The user database: one JSON file per user under `ROOT/.ftp/users/`, holding an argon2
//! hash of the password (salted, in PHC string form) and the quota. Never the password.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, ErrorKind, IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::sync::{Condvar, Mutex};

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

/// The home of clients that never log in, with `--anonymous`; not a name `adduser` takes.
pub const ANONYMOUS: &str = "anonymous";

/// What the database keeps about a user.
#[derive(Serialize, Deserialize)]
struct Record {
    /// Argon2id PHC string: algorithm, parameters, salt and hash.
    password: String,
    /// Bytes the user may store, partial uploads included.
    quota: u64,
}

/// A user who logged in (or the anonymous uploader).
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub quota: u64,
}

/// Argon2id cost: 7 MiB of memory, 5 passes, 1 lane (one of OWASP's recommended
/// equivalents of the crate's default 19 MiB x 2, chosen for a smaller server footprint).
const ARGON2_M_KIB: u32 = 7 * 1024;
const ARGON2_T: u32 = 5;
/// At most this many password checks run at once (each takes `ARGON2_M_KIB` of memory),
/// so a flood of logins costs time, not memory.
const MAX_CONCURRENT_CHECKS: usize = 2;

/// A hash checked when the user does not exist, so that an unknown name costs as much time
/// as a wrong password and names cannot be probed by timing. Its password is unknown and
/// unused: the check's result is ignored.
const DECOY: &str = "$argon2id$v=19$m=7168,t=5,p=1$BKq+H5A8UEx2/zSBBnMhDw$QcEXRMTIF6Ds5SmpSgX+SVR58CWt9WMUGhvdyHbQX0g";

/// The users of one server root.
#[derive(Debug, Clone)]
pub struct Users {
    dir: PathBuf,
}

impl Users {
    /// The database of `root`, created if missing.
    pub fn open(root: &Path) -> io::Result<Users> {
        let dir = root.join(".ftp").join("users");
        fs::create_dir_all(&dir)?;
        Ok(Users { dir })
    }

    /// Adds `name` with `password` and `quota`, creating its home `root/name`. Refuses a
    /// name already taken.
    pub fn add(&self, root: &Path, name: &str, password: &str, quota: u64) -> io::Result<()> {
        check_name(name)?;
        if password.is_empty() {
            return Err(invalid("the password is empty"));
        }
        let record = Record {
            password: hash_password(password)?,
            quota,
        };
        let path = self.record_path(name);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(invalid(format!("user {name:?} already exists")))
            }
            Err(e) => return Err(e),
        };
        let written = serde_json::to_writer_pretty(&mut file, &record)
            .map_err(io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        fs::create_dir_all(root.join(name))
    }

    /// The user `name` if `password` is theirs. Takes the same time for unknown names.
    pub fn check(&self, name: &str, password: &str) -> io::Result<Option<User>> {
        let record = match self.load(name)? {
            Some(r) => r,
            None => {
                let _ = verify(DECOY, password);
                return Ok(None);
            }
        };
        Ok(verify(&record.password, password).then(|| User {
            name: name.to_owned(),
            quota: record.quota,
        }))
    }

    fn load(&self, name: &str) -> io::Result<Option<Record>> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let mut text = String::new();
        match File::open(self.record_path(name)) {
            Ok(f) => f.take(64 * 1024).read_to_string(&mut text)?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| invalid(format!("user record of {name:?} is damaged: {e}")))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }
}

/// A user name: 1 to 32 of `A-Z a-z 0-9 _ - .`, not starting with `.` or `-`, and not
/// `anonymous`. It names the home directory, so nothing else is allowed.
pub fn check_name(name: &str) -> io::Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && !name.starts_with(['.', '-'])
        && name != ANONYMOUS;
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bad user name {name:?}: use 1 to 32 of A-Z a-z 0-9 _ - . (not starting with . or -), not {ANONYMOUS:?}"
        )))
    }
}

/// Reads the password for `adduser`: one line from stdin (without its line end), asked for
/// without echo if stdin is a terminal.
pub fn read_password_line(name: &str) -> io::Result<String> {
    if io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("password for {name}: "));
    }
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    Ok(password.to_owned())
}

/// A salted argon2id hash in PHC form (algorithm, cost, salt and hash in one string).
fn hash_password(password: &str) -> io::Result<String> {
    let mut salt = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| invalid(e.to_string()))?;
    let params =
        Params::new(ARGON2_M_KIB, ARGON2_T, 1, None).map_err(|e| invalid(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| invalid(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (whose own cost parameters are used).
///
/// The argon2 work memory comes from a pool of `MAX_CONCURRENT_CHECKS` buffers kept for
/// the life of the process: allocated per check instead, each thread's malloc arena would
/// keep its own 7 MiB after the first login it served.
fn verify(phc: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) =
        (Params::try_from(&hash), Algorithm::try_from(hash.algorithm))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    let mut memory = WorkMemory::take(blocks);
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut out,
        &mut memory.blocks[..blocks],
    );
    // `Output`'s comparison takes the same time wherever the first difference is.
    hashed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

/// The most argon2 memory a stored hash may ask for: 64 MiB (1 KiB blocks).
const MAX_BLOCKS: usize = 64 * 1024;

/// Work memory for one password check, returned to the pool when dropped.
struct WorkMemory {
    blocks: Vec<Block>,
}

/// Buffers not in use, and how many are.
static POOL: Mutex<(Vec<Vec<Block>>, usize)> = Mutex::new((Vec::new(), 0));
static FREED: Condvar = Condvar::new();

impl WorkMemory {
    /// Waits for one of the `MAX_CONCURRENT_CHECKS` places, with at least `blocks` blocks.
    fn take(blocks: usize) -> WorkMemory {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        while pool.1 >= MAX_CONCURRENT_CHECKS {
            pool = FREED.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
        pool.1 += 1;
        let mut buf = pool.0.pop().unwrap_or_default();
        drop(pool);
        if buf.len() < blocks {
            buf.resize(blocks, Block::default());
        }
        WorkMemory { blocks: buf }
    }
}

impl Drop for WorkMemory {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.0.push(std::mem::take(&mut self.blocks));
        pool.1 -= 1;
        FREED.notify_one();
    }
}

/// Parses a size: plain bytes or a K/M/G suffix (powers of 1024), e.g. `100M`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("bad size {s:?}: use bytes or a K, M or G suffix")),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("bad size {s:?}: use bytes or a K, M or G suffix"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg.into())
}

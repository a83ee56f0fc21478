//! The user database: one JSON file per user under `ROOT/.ftp/users/`, holding an argon2
//! hash of the password (salted, in PHC string form) and the quota. Never the password.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
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

/// The users of one server root.
#[derive(Debug, Clone)]
pub struct Users {
    dir: PathBuf,
    /// A hash checked when the user does not exist, so that an unknown name costs as much
    /// time as a wrong password and names cannot be probed by timing.
    decoy: String,
}

impl Users {
    /// The database of `root`, created if missing.
    pub fn open(root: &Path) -> io::Result<Users> {
        let dir = root.join(".ftp").join("users");
        fs::create_dir_all(&dir)?;
        let decoy = hash_password("decoy password, never matches")?;
        Ok(Users { dir, decoy })
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
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
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
                let _ = verify(&self.decoy, password);
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

/// Reads one line from stdin: the password for `adduser` (without its line end).
pub fn read_password_line() -> io::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    Ok(password.to_owned())
}

/// A salted argon2id hash (the crate's default parameters: 19 MiB, 2 passes) in PHC form.
fn hash_password(password: &str) -> io::Result<String> {
    let mut salt = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| invalid(e.to_string()))
}

fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
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

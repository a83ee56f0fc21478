//! Paths as clients see them: `/` is the home, `..` stops there, and the server's own
//! hidden names cannot be named.

use std::io::{self, ErrorKind};

/// Names starting with this are the server's own: refused in requests, hidden in listings.
pub const RESERVED: &str = ".ftp-";

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
    pub fn split_last(&self) -> Option<(VPath, &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((VPath(parent.to_vec()), last))
    }
}

impl VPath {
    /// The names from the home down, e.g. `["docs", "a.txt"]`; empty for the home.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for VPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

/// A refusal message for an I/O error on `v`.
pub fn describe(e: io::Error, v: &VPath) -> Refusal {
    match e.kind() {
        ErrorKind::NotFound => format!("{v}: not found"),
        ErrorKind::AlreadyExists => format!("{v}: already exists"),
        ErrorKind::PermissionDenied => format!("{v}: permission denied"),
        _ if e.raw_os_error() == Some(libc::ENOTEMPTY) => format!("{v}: directory not empty"),
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => format!("{v}: not a directory"),
        _ => format!("{v}: {e}"),
    }
}

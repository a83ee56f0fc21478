//! The shell's commands: parsed from a line, run against the server, printed.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::conn::{number, text, Conn, Failure};
use crate::transfer;

pub const HELP: &str = "\
commands:
  ls [PATH]             list a directory (or one file)
  cd PATH               change the remote directory (/ is your home)
  pwd                   print the remote directory
  mkdir PATH            make a remote directory
  rm PATH               remove a file, an empty directory or a partial upload
  put LOCAL [REMOTE]    upload, to REMOTE or into it if it is a directory
                        (resumes a partial upload, verifies SHA-256)
  get REMOTE [LOCAL]    download (resumes LOCAL.part, verifies SHA-256)
  stat NAME             size and type of a remote file or partial upload
  quota                 space used and allowed
  help                  this text
  quit                  leave";

/// What the shell does after a command.
pub enum Next {
    Continue,
    Quit,
}

/// Runs one command line (already split into words); `cwd` follows `cd`.
pub fn run(conn: &mut Conn, words: &[String], cwd: &mut String) -> Result<Next, Failure> {
    let Some((cmd, args)) = words.split_first() else {
        return Ok(Next::Continue);
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match (cmd.as_str(), args.as_slice()) {
        ("ls", [] | [_]) => ls(conn, args.first().copied())?,
        ("cd", [path]) => {
            *cwd = text(&conn.call(&json!({"cmd": "cd", "path": path}))?, "cwd").to_owned();
        }
        ("pwd", []) => println!("{}", text(&conn.call(&json!({"cmd": "pwd"}))?, "cwd")),
        ("mkdir", [path]) => {
            conn.call(&json!({"cmd": "mkdir", "path": path}))?;
        }
        ("rm", [path]) => {
            conn.call(&json!({"cmd": "rm", "path": path}))?;
        }
        ("stat", [name]) => stat(conn, name)?,
        ("quota", []) => {
            let a = conn.call(&json!({"cmd": "quota"}))?;
            let (used, limit) = (number(&a, "used"), number(&a, "limit"));
            let pct = (used.saturating_mul(100)).checked_div(limit).unwrap_or(100);
            println!("used {} of {} ({pct}%)", human(used), human(limit));
        }
        ("put", [local] | [local, _]) => {
            let remote = match args.get(1) {
                Some(r) if is_remote_dir(conn, r)? => format!("{r}/{}", base_name(local)?),
                Some(r) => (*r).to_owned(),
                None => base_name(local)?,
            };
            let done = transfer::put(conn, Path::new(local), &remote)?;
            report("put", local, &remote, &done);
        }
        ("get", [remote] | [remote, _]) => {
            let local = local_target(remote, args.get(1).copied())?;
            let done = transfer::get(conn, remote, &local)?;
            report("get", remote, &local.display().to_string(), &done);
        }
        ("help", _) => println!("{HELP}"),
        ("quit" | "exit", []) => {
            // The server answers and closes; a connection already gone is fine too.
            let _ = conn.call(&json!({"cmd": "quit"}));
            return Ok(Next::Quit);
        }
        (
            "ls" | "cd" | "pwd" | "mkdir" | "rm" | "stat" | "quota" | "put" | "get" | "quit"
            | "exit",
            _,
        ) => {
            return Err(Failure::Refused(format!(
                "{cmd}: wrong arguments (see help)"
            )))
        }
        _ => {
            return Err(Failure::Refused(format!(
                "{cmd}: unknown command (see help)"
            )))
        }
    }
    Ok(Next::Continue)
}

fn ls(conn: &mut Conn, path: Option<&str>) -> Result<(), Failure> {
    let mut request = json!({"cmd": "ls"});
    if let Some(p) = path {
        request["path"] = p.into();
    }
    let a = conn.call(&request)?;
    let entries = a.get("entries").and_then(Value::as_array);
    for e in entries.into_iter().flatten() {
        let kind = e["type"].as_str().unwrap_or("?");
        let name = e["name"].as_str().unwrap_or("?");
        let slash = if kind == "dir" { "/" } else { "" };
        let size = e["size"].as_u64().unwrap_or(0);
        if kind == "partial" {
            // An upload that stopped: `put` resumes it, `rm NAME` removes it.
            let of = e["filesize"].as_u64().unwrap_or(0);
            println!("part {size:>12}  {name} (partial upload of {of} bytes)");
        } else {
            println!("{kind:<4} {size:>12}  {name}{slash}");
        }
    }
    if a.get("truncated") == Some(&Value::Bool(true)) {
        println!("(list cut short)");
    }
    Ok(())
}

fn stat(conn: &mut Conn, name: &str) -> Result<(), Failure> {
    let a = conn.call(&json!({"cmd": "stat", "filename": name}))?;
    let size = number(&a, "size");
    match text(&a, "type") {
        "partial" => println!(
            "{name}: partial upload, {size} of {} bytes",
            number(&a, "filesize")
        ),
        kind => println!("{name}: {kind}, {size} bytes"),
    }
    Ok(())
}

/// Whether `path` names a directory on the server (then `put` uploads into it).
fn is_remote_dir(conn: &mut Conn, path: &str) -> Result<bool, Failure> {
    match conn.call(&json!({"cmd": "stat", "filename": path})) {
        Ok(a) => Ok(text(&a, "type") == "dir"),
        Err(Failure::Refused(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn report(verb: &str, from: &str, to: &str, done: &transfer::Done) {
    let resumed = if done.resumed_at > 0 {
        format!(", resumed at {}", done.resumed_at)
    } else {
        String::new()
    };
    println!(
        "{verb} {from} -> {to}: {} bytes{resumed}, sha256 {} verified",
        done.bytes,
        &done.sha256[..16]
    );
}

/// The last component of a path, for a default target name.
fn base_name(path: &str) -> Result<String, Failure> {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Failure::Refused(format!("{path}: no file name in it")))
}

/// Where `get` writes: `local`, inside it if it is a directory, or the remote base name.
fn local_target(remote: &str, local: Option<&str>) -> Result<PathBuf, Failure> {
    let name = base_name(remote)?;
    Ok(match local {
        Some(l) if Path::new(l).is_dir() => Path::new(l).join(name),
        Some(l) => PathBuf::from(l),
        None => PathBuf::from(name),
    })
}

/// `1536` -> `1.5 KiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

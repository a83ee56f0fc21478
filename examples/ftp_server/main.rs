//! The tutorials' homework, done for real: a multi-user file server. Each user logs in with
//! a password (stored as a salted argon2 hash), works in a home directory of their own
//! under a disk quota, and moves files with resumable, SHA-256-verified uploads and
//! downloads. `ftp_client` is its client.
//!
//! ```text
//! echo 's3cret' | cargo run --example ftp_server -- --root /srv/ftp adduser alice --quota 1G
//! cargo run --example ftp_server -- --root /srv/ftp        # listening on 127.0.0.1:8080
//! cargo run --example ftp_client -- --user alice            # asks for the password
//! ```
//!
//! Options: `--addr HOST:PORT`, `--mode single|threading|pool|fork`, `--workers N`,
//! `--grace SECONDS`, `--request-timeout SECONDS` (default 30: how long a request header may
//! take to arrive; an upload's body is bounded only by a 60 s stall), `--anonymous` (accept uploads from clients that never log in, into
//! the home `anonymous`, so the tutorials' upload clients work unchanged) with
//! `--anonymous-quota SIZE` (default 100M), `--partial-expiry SECONDS` (default 86400).
//! Sizes take K, M or G suffixes (powers of 1024).
//!
//! # Wire protocol
//!
//! Every message: a 4-byte little-endian signed header length N (Python `struct.pack('<i',
//! n)`, the same bytes as the tutorials' `struct.pack('i', n)`), 1 <= N <= 65536; then N bytes
//! of a UTF-8 JSON object; then, for `put` requests and successful `get` answers only,
//! exactly `filesize - offset` raw bytes (`offset` defaults to 0). Answers carry `"ok"`, and
//! `"error"` when it is false; an error with `"closing":true` is the connection's last (the
//! server closes it after).
//!
//! | request | answer |
//! |---|---|
//! | `{"cmd":"login","username":U,"password":P}` | `{"ok":true,"cwd":"/"}`; a failure no sooner than 0.5 s later, the third closes the connection |
//! | `{"cmd":"pwd"}`, `{"cmd":"cd","path":P}` | `{"ok":true,"cwd":"/docs"}` |
//! | `{"cmd":"mkdir","path":P}`, `{"cmd":"rm","path":P}` | `{"ok":true}` (rm: a file, an empty directory, or a partial upload) |
//! | `{"cmd":"ls","path":P?}` | `{"ok":true,"entries":[{"name":..,"type":"file"\|"dir"\|"partial","size":n}]}` sorted by name (a partial upload is listed under its target's name, with `filesize`) |
//! | `{"cmd":"put","filename":F,"filesize":N,"offset":K?,"sha256":H?}` + N-K bytes | `{"ok":true,"size":N,"sha256":hex}` |
//! | `{"cmd":"stat","filename":F}` | `{"ok":true,"type":"file"\|"dir"\|"partial","size":n}` (a partial also gives `filesize`) |
//! | `{"cmd":"get","filename":F,"offset":K?}` | `{"ok":true,"filesize":N,"offset":K,"sha256":hex}` + N-K bytes |
//! | `{"cmd":"quota"}` | `{"ok":true,"used":u,"limit":l,"free":f}` (`free`: bytes free on the server's disk) |
//! | `{"cmd":"quit"}` | `{"ok":true}`, then the server closes |
//!
//! Before a login every command but `login` and `quit` is answered `not logged in` (with
//! `--anonymous`, `put` is accepted into the anonymous home, and so is the tutorials' older
//! header `{"file_name":F,"file_size":N}`). A header length out of range or a header that
//! is not a JSON object is answered with an error, then the connection is closed.
//!
//! Paths are virtual: `/` is the user's home, a leading `/` starts from it (so `/etc/passwd`
//! is `HOME/etc/passwd`, never the real one), `..` stops at it, NUL bytes and names starting
//! with `.ftp-` are refused, and symbolic links are followed only while they stay inside the
//! home.
//!
//! An upload is written to a hidden partial file next to its target, reported by `stat`
//! and counted in the quota, and renamed over the target (atomically) only once complete and
//! matching its `sha256`: the final name only ever holds a complete file. A refused upload's
//! bytes are read and discarded, so the connection stays usable, when they are at most
//! 64 KiB (and arrive within 10 s). A refused upload with a larger body, logged in or not,
//! is never read: its answer carries `"closing":true` (the client reads it, then EOF; a
//! client still sending gets a broken pipe or a reset on a write, and the answer is still
//! there to read after it). An upload larger than the disk's free space is
//! refused before a byte is written; a write that fails for lack of space removes the
//! partial file (it could not be resumed, and would hold the space).
//! `ls` lists partial uploads (`"type":"partial"`), `rm NAME` removes one, and an idle one
//! is removed a day after its last write (`--partial-expiry SECONDS`, 0 to keep them).
//! `ftp_client`'s `put` asks the quota and the free space first, then hashes. While an upload runs, the
//! quota counts its full size (the space is reserved; replacing a file needs room for both
//! copies until the new one is complete); the reservations and the quota
//! decisions are made under a per-user lock file, so they hold between the threads of one
//! process and between the processes of `--mode fork`. Files are streamed 256 KiB at a time,
//! never held whole in memory. A transfer whose client sends or reads nothing for 60 s is
//! given up (an upload's partial file stays, to be resumed).

mod checksums;
#[path = "../common/mod.rs"]
mod common;
mod hashpipe;
mod paths;
mod protocol;
mod session;
mod storage;
mod upload;
mod users;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::session::{Context, Session};
use crate::users::{parse_size, Users};

#[derive(Parser)]
#[command(
    about = "Multi-user file server: homes, quotas, resumable verified transfers (default 127.0.0.1:8080)"
)]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// Directory of the users' homes (`ROOT/NAME`) and of the user database (`ROOT/.ftp`).
    #[arg(long)]
    root: PathBuf,
    /// Accept uploads from clients that never log in, into the home `anonymous`.
    #[arg(long)]
    anonymous: bool,
    /// Quota of the anonymous home (bytes, or a K/M/G suffix).
    #[arg(long, default_value = "100M", value_parser = parse_size)]
    anonymous_quota: u64,
    /// Seconds after its last write an idle partial upload is removed (0: kept until
    /// resumed or removed with `rm`). Default: one day.
    #[arg(long, default_value = "86400", value_parser = common::seconds)]
    partial_expiry: std::time::Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Adds a user, reading the password from stdin (one line; asked for without echo on a
    /// terminal), and creates its home. The user database keeps only a salted argon2 hash.
    Adduser {
        /// The user name (1 to 32 of A-Z a-z 0-9 _ - .).
        name: String,
        /// How much the user may store (bytes, or a K/M/G suffix).
        #[arg(long, value_parser = parse_size)]
        quota: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_logging();
    let result = match &cli.command {
        Some(Command::Adduser { name, quota }) => adduser(&cli, name, *quota),
        None => serve(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftp_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn adduser(cli: &Cli, name: &str, quota: u64) -> io::Result<()> {
    let password = users::read_password_line(name)?;
    Users::open(&cli.root)?.add(&cli.root, name, &password, quota)?;
    println!("added user {name} with a quota of {quota} bytes");
    Ok(())
}

fn serve(cli: &Cli) -> io::Result<()> {
    std::fs::create_dir_all(&cli.root)?;
    let root = cli.root.canonicalize()?;
    let ctx = Arc::new(Context {
        users: Users::open(&root)?,
        root,
        anonymous_quota: cli.anonymous.then_some(cli.anonymous_quota),
        partial_expiry: (!cli.partial_expiry.is_zero()).then_some(cli.partial_expiry),
    });
    common::serve_tcp_requests_with(&cli.server, common::Service::new(8080), move || {
        Session::new(Arc::clone(&ctx))
    })
}

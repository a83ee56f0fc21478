//! The client of `ftp_server`: an interactive shell with line editing and history, or a
//! list of commands given with `-c`.
//!
//! ```text
//! cargo run --example ftp_client -- --addr 127.0.0.1:8080 --user alice
//! FTP_PASSWORD=s3cret cargo run --example ftp_client -- --user alice -c "mkdir docs; cd docs; put notes.txt; ls"
//! ```
//!
//! The password comes from `FTP_PASSWORD`, or is asked for without echo. Commands: `ls
//! [PATH]`, `cd PATH`, `pwd`, `mkdir PATH`, `rm PATH`, `put LOCAL [REMOTE]`, `get REMOTE
//! [LOCAL]`, `stat NAME`, `quota`, `help`, `quit`; words are split shell-style, so quote
//! names with spaces. `put` and `get` show a progress bar (bytes, rate, ETA) when stderr is
//! a terminal, resume an interrupted transfer (`put` continues the server's partial upload,
//! `get` continues `LOCAL.part`) and verify SHA-256 end to end.
//!
//! With `-c "cmd; cmd"` the commands run in turn; each failure is printed to stderr and the
//! exit status is 1 if any failed, 2 if the connection or the login failed.
//!
//! The server closes the connection after refusing an upload whose body it will not read
//! (one over 64 KiB): the client prints the server's reason, logs in again and goes back to
//! the directory it was in. `put` asks the quota and the free space first, so this is rare.

mod commands;
mod conn;
#[path = "../ftp_server/hashpipe.rs"]
mod hashpipe;
mod transfer;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use serde_json::json;

use crate::commands::Next;
use crate::conn::{text, Conn, Failure};

#[derive(Parser)]
#[command(about = "Client of ftp_server: interactive shell, or -c \"cmd; cmd\"")]
struct Cli {
    /// The server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The user to log in as.
    #[arg(long)]
    user: String,
    /// Commands to run, separated by `;`, instead of the interactive shell.
    #[arg(short = 'c', value_name = "COMMANDS")]
    commands: Option<String>,
}

/// A command failed (in `-c` mode).
const EXIT_FAILED: u8 = 1;
/// The connection or the login failed.
const EXIT_BROKEN: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let connected = Login::ask(&cli).and_then(|login| {
        let (conn, cwd) = login.connect()?;
        Ok((login, conn, cwd))
    });
    let (login, mut conn, cwd) = match connected {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("ftp_client: {msg}");
            return ExitCode::from(EXIT_BROKEN);
        }
    };
    match &cli.commands {
        Some(list) => run_list(&login, &mut conn, list, cwd),
        None => shell(&login, &mut conn, cwd),
    }
}

/// Asks for a password on the terminal without echoing it. `rpassword` shows its prompt
/// first and turns the echo off after: what is typed (or pasted) as soon as the prompt
/// appears was echoed. The echo goes off here before the prompt shows, and comes back
/// after (rpassword restores the state it found, echo off).
fn prompt_password(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    let saved = tty.as_ref().ok().and_then(|t| tcgetattr(t).ok());
    if let (Ok(t), Some(saved)) = (&tty, &saved) {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(t, SetArg::TCSANOW, &quiet)?;
    }
    let password = rpassword::prompt_password(prompt);
    if let (Ok(t), Some(saved)) = (&tty, &saved) {
        tcsetattr(t, SetArg::TCSANOW, saved)?;
    }
    password
}

/// Where and as whom to log in, kept to log in again when the server closes the
/// connection after a refusal.
struct Login {
    addr: String,
    user: String,
    password: String,
}

impl Login {
    /// The password from `FTP_PASSWORD`, or asked for without echo.
    fn ask(cli: &Cli) -> Result<Login, String> {
        let password = match std::env::var("FTP_PASSWORD") {
            Ok(p) => p,
            Err(_) => prompt_password(&format!("password for {}: ", cli.user))
                .map_err(|e| format!("cannot read the password: {e}"))?,
        };
        Ok(Login {
            addr: cli.addr.clone(),
            user: cli.user.clone(),
            password,
        })
    }

    /// Connects and logs in; the home's path on success.
    fn connect(&self) -> Result<(Conn, String), String> {
        let mut conn = Conn::connect(&self.addr).map_err(|e| format!("{}: {e}", self.addr))?;
        let request = json!({"cmd": "login", "username": self.user, "password": self.password});
        match conn.call(&request) {
            Ok(answer) => Ok((conn, text(&answer, "cwd").to_owned())),
            Err(e) => Err(format!("login failed: {e}")),
        }
    }

    /// After the server closed the connection: a new one, logged in, back in `cwd` (or
    /// at the home, saying so, if `cwd` is gone).
    fn reconnect(&self, conn: &mut Conn, cwd: &mut String) -> Result<(), String> {
        let (mut new, home) = self.connect()?;
        *cwd = match new.call(&json!({"cmd": "cd", "path": cwd.as_str()})) {
            Ok(a) => text(&a, "cwd").to_owned(),
            Err(e) => {
                eprintln!("ftp_client: {cwd}: {e}; now in {home}");
                home
            }
        };
        *conn = new;
        Ok(())
    }
}

/// The server closed the connection after a refusal: logs in again, or says why it could
/// not (then nothing more can run).
fn recover(login: &Login, conn: &mut Conn, cwd: &mut String) -> Result<(), ExitCode> {
    match login.reconnect(conn, cwd) {
        Ok(()) => {
            eprintln!("ftp_client: connected and logged in again");
            Ok(())
        }
        Err(msg) => {
            eprintln!("ftp_client: cannot connect again: {msg}");
            Err(ExitCode::from(EXIT_BROKEN))
        }
    }
}

/// `-c`: runs each command; failures go to stderr.
fn run_list(login: &Login, conn: &mut Conn, list: &str, mut cwd: String) -> ExitCode {
    let mut failed = false;
    for line in list.split(';') {
        let Some(words) = split(line) else {
            eprintln!("ftp_client: {}: unbalanced quotes", line.trim());
            failed = true;
            continue;
        };
        match commands::run(conn, &words, &mut cwd) {
            Ok(Next::Continue) => {}
            Ok(Next::Quit) => break,
            Err(Failure::Refused(msg)) => {
                eprintln!("ftp_client: {}: {msg}", line.trim());
                failed = true;
            }
            Err(e @ Failure::Closed(_)) => {
                eprintln!("ftp_client: {}: {e}", line.trim());
                failed = true;
                if let Err(code) = recover(login, conn, &mut cwd) {
                    return code;
                }
            }
            Err(e @ Failure::Broken(_)) => {
                eprintln!("ftp_client: {}: {e}", line.trim());
                return ExitCode::from(EXIT_BROKEN);
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The interactive shell, with line editing and history.
fn shell(login: &Login, conn: &mut Conn, mut cwd: String) -> ExitCode {
    let user = &login.user;
    let mut editor = match DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ftp_client: no line editor: {e}");
            return ExitCode::from(EXIT_BROKEN);
        }
    };
    if io::stdin().is_terminal() {
        println!("logged in as {user}; type help for the commands");
    }
    loop {
        let line = match editor.readline(&format!("{user}@ftp:{cwd}> ")) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                let _ = conn.call(&json!({"cmd": "quit"}));
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("ftp_client: {e}");
                return ExitCode::from(EXIT_BROKEN);
            }
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        let Some(words) = split(&line) else {
            eprintln!("unbalanced quotes");
            continue;
        };
        match commands::run(conn, &words, &mut cwd) {
            Ok(Next::Continue) => {}
            Ok(Next::Quit) => return ExitCode::SUCCESS,
            Err(Failure::Refused(msg)) => eprintln!("error: {msg}"),
            Err(e @ Failure::Closed(_)) => {
                eprintln!("error: {e}");
                if let Err(code) = recover(login, conn, &mut cwd) {
                    return code;
                }
            }
            Err(e @ Failure::Broken(_)) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_BROKEN);
            }
        }
    }
}

/// Words of a command line, shell-style; `None` if quotes are unbalanced.
fn split(line: &str) -> Option<Vec<String>> {
    shlex::split(line)
}

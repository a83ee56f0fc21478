//! The registry: names and their addresses, with expiry and a size limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::MAX_DATAGRAM;

/// The longest name, in bytes of UTF-8 (what a name costs in every `USERS` reply).
const MAX_NAME: usize = 32;
/// Room kept at the end of a cut `USERS` list for ` ... and N more`.
const MORE_ROOM: usize = 24;

/// One registration.
struct Entry {
    addr: SocketAddr,
    last_used: Instant,
}

/// Names and their addresses, both ways.
pub(crate) struct Registry {
    by_name: HashMap<String, Entry>,
    by_addr: HashMap<SocketAddr, String>,
    expiry: Duration,
    max: usize,
}

impl Registry {
    pub(crate) fn new(expiry: Duration, max: usize) -> Registry {
        Registry {
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            expiry,
            max,
        }
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_used) >= self.expiry
    }

    pub(crate) fn remove(&mut self, name: &str) {
        if let Some(e) = self.by_name.remove(name) {
            self.by_addr.remove(&e.addr);
        }
    }

    /// The live name registered at `addr`, marked used now.
    pub(crate) fn name_of(&mut self, addr: SocketAddr, now: Instant) -> Option<String> {
        let name = self.by_addr.get(&addr)?.clone();
        let e = self.by_name.get(&name)?;
        if self.expired(e, now) {
            log::info!("{name} at {addr}: registration expired");
            self.remove(&name);
            return None;
        }
        self.by_name.get_mut(&name)?.last_used = now;
        Some(name)
    }

    /// The live address of `name`.
    pub(crate) fn lookup(&mut self, name: &str, now: Instant) -> Option<SocketAddr> {
        let e = self.by_name.get(name)?;
        if self.expired(e, now) {
            log::info!("{name} at {}: registration expired", e.addr);
            self.remove(name);
            return None;
        }
        Some(e.addr)
    }

    fn sweep(&mut self, now: Instant) {
        let dead: Vec<String> = (self.by_name.iter())
            .filter(|(_, e)| self.expired(e, now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in dead {
            self.remove(&name);
        }
    }

    /// Registers `name` at `addr` (dropping the address's former name).
    pub(crate) fn hello(
        &mut self,
        name: &str,
        addr: SocketAddr,
        now: Instant,
    ) -> Result<(), &'static str> {
        if self.lookup(name, now).is_some_and(|a| a != addr) {
            return Err("ERROR name taken");
        }
        if let Some(old) = self.by_addr.get(&addr).cloned() {
            self.remove(&old);
        }
        if self.by_name.len() >= self.max {
            self.sweep(now);
            if self.by_name.len() >= self.max {
                return Err("ERROR server full");
            }
        }
        let entry = Entry {
            addr,
            last_used: now,
        };
        self.by_name.insert(name.to_string(), entry);
        self.by_addr.insert(addr, name.to_string());
        Ok(())
    }

    /// `USERS a,b,c`, cut to fit one datagram.
    pub(crate) fn users(&mut self, now: Instant) -> String {
        self.sweep(now);
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut out = String::from("USERS");
        for (i, name) in names.iter().enumerate() {
            if out.len() + 1 + name.len() + MORE_ROOM > MAX_DATAGRAM {
                out.push_str(&format!(" ... and {} more", names.len() - i));
                break;
            }
            out.push(if i == 0 { ' ' } else { ',' });
            out.push_str(name);
        }
        out
    }
}

/// Whether `name` may be registered: 1 to 32 bytes of UTF-8 (so 32 ASCII characters, or
/// 10 CJK ones), none of them whitespace, a control character, a comma (the `USERS`
/// separator) or a colon (the end of `TO NAME:`).
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ':')
}

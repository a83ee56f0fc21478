//! A small broadcast helper: topics and their subscribers' pushers.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::io::IoSlice;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Pusher;

/// Topics, each with the connections subscribed to it: subscribe, unsubscribe, publish to
/// all. Not a message broker: a message goes to the subscribers of the moment, queued by
/// each one's [`Pusher`] under its limits, and is not kept.
///
/// [`publish`](Topics::publish) pushes under a shared lock: publishers run in parallel, each
/// subscriber gets one publisher's messages in the order it published them, and connections
/// found closed are forgotten. With pushers that never wait (the default
/// [`Overflow::Close`](super::Overflow::Close)), a publisher is never held up by a slow
/// subscriber.
///
/// ```
/// use socketserver::push::Topics;
///
/// let topics: Topics = Topics::new();
/// assert_eq!(topics.publish("news", b"nobody listens\n"), 0);
/// assert_eq!(topics.subscribers("news"), 0);
/// ```
pub struct Topics<K = String> {
    map: RwLock<HashMap<K, Vec<Pusher>>>,
}

impl<K> Default for Topics<K> {
    fn default() -> Topics<K> {
        Topics {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K> fmt::Debug for Topics<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topics")
            .field(
                "topics",
                &self.map.read().unwrap_or_else(|e| e.into_inner()).len(),
            )
            .finish()
    }
}

impl<K: Hash + Eq> Topics<K> {
    /// No topics.
    pub fn new() -> Topics<K> {
        Topics::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Vec<Pusher>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<K, Vec<Pusher>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes `pusher`'s connection to `topic`; `false` if it was already.
    pub fn subscribe(&self, topic: K, pusher: &Pusher) -> bool {
        let mut map = self.write();
        let subs = map.entry(topic).or_default();
        if subs.contains(pusher) {
            return false;
        }
        subs.push(pusher.clone());
        true
    }

    /// Unsubscribes `pusher`'s connection from `topic`; `false` if it was not subscribed.
    pub fn unsubscribe<Q>(&self, topic: &Q, pusher: &Pusher) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.write();
        let Some(subs) = map.get_mut(topic) else {
            return false;
        };
        let Some(at) = subs.iter().position(|p| p == pusher) else {
            return false;
        };
        subs.swap_remove(at);
        if subs.is_empty() {
            map.remove(topic);
        }
        true
    }

    /// Pushes `msg` to every subscriber of `topic`; returns how many it was queued for.
    /// Subscribers whose connection is closed are forgotten.
    pub fn publish<Q>(&self, topic: &Q, msg: &[u8]) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.publish_vectored(topic, &[IoSlice::new(msg)])
    }

    /// [`publish`](Self::publish) of a message in parts (one message: never interleaved).
    pub fn publish_vectored<Q>(&self, topic: &Q, parts: &[IoSlice<'_>]) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (queued, closed) = {
            let map = self.read();
            let Some(subs) = map.get(topic) else {
                return 0;
            };
            let mut queued = 0;
            let mut closed = false;
            for p in subs {
                match p.push_vectored(parts) {
                    Ok(()) => queued += 1,
                    Err(_) => closed |= p.is_closed(),
                }
            }
            (queued, closed)
        };
        if closed {
            let mut map = self.write();
            if let Some(subs) = map.get_mut(topic) {
                subs.retain(|p| !p.is_closed());
                if subs.is_empty() {
                    map.remove(topic);
                }
            }
        }
        queued
    }

    /// How many connections are subscribed to `topic`.
    pub fn subscribers<Q>(&self, topic: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read().get(topic).map_or(0, Vec::len)
    }
}

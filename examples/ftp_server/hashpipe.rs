//! SHA-256 on a helper thread, so that hashing a transfer overlaps with the socket and disk
//! I/O that feeds it. Buffers go round between the two threads: at most `DEPTH` of `CHUNK`
//! bytes exist per transfer. (Shared by `ftp_server` and `ftp_client`.)

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use sha2::{Digest, Sha256};

/// Size of one buffer.
pub const CHUNK: usize = 256 * 1024;
/// Buffers in circulation.
const DEPTH: usize = 4;

/// A hashing thread and the buffers it hands back.
pub struct HashPipe {
    full: Option<SyncSender<(Vec<u8>, usize)>>,
    empty: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Sha256>>,
}

impl HashPipe {
    /// Continues `hasher` on a new thread.
    pub fn new(mut hasher: Sha256) -> HashPipe {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
        let (empty_tx, empty_rx) = mpsc::channel();
        for _ in 0..DEPTH {
            let _ = empty_tx.send(vec![0; CHUNK]);
        }
        let thread = thread::spawn(move || {
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                let _ = empty_tx.send(buf);
            }
            hasher
        });
        HashPipe {
            full: Some(full_tx),
            empty: empty_rx,
            thread: Some(thread),
        }
    }

    /// A buffer of `CHUNK` bytes to fill (waits for the hasher to give one back).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.empty.recv().unwrap_or_else(|_| vec![0; CHUNK])
    }

    /// Hashes the first `n` bytes of `buf`, in the background.
    pub fn hash(&mut self, buf: Vec<u8>, n: usize) {
        if let Some(full) = &self.full {
            let _ = full.send((buf, n));
        }
    }

    /// Waits for the hashing to finish and returns the hasher.
    pub fn finish(mut self) -> Sha256 {
        drop(self.full.take());
        let thread = self.thread.take().expect("finished once");
        thread.join().expect("hashing thread")
    }
}

impl Drop for HashPipe {
    fn drop(&mut self) {
        drop(self.full.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

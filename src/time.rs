//! Deadlines that saturate: a timeout too large to add to `Instant::now()` means "no
//! deadline" (wait for ever), never an overflow panic.

use std::time::{Duration, Instant};

/// The instant `d` from now, or `None` (no deadline) when it cannot be represented.
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// `after(d)` for an optional timeout: `None` in, `None` out.
pub(crate) fn after_opt(d: Option<Duration>) -> Option<Instant> {
    d.and_then(after)
}

/// What is left until `deadline` (zero once it passed); `None` for no deadline.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Whether `deadline` has passed (never, for no deadline).
pub(crate) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The earlier of two optional deadlines (`None` is the latest).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_no_deadline() {
        assert_eq!(after(Duration::MAX), None);
        assert_eq!(left(None), None);
        assert!(!passed(None));
        let soon = after(Duration::from_secs(1));
        assert!(soon.is_some());
        assert_eq!(earliest(soon, None), soon);
        assert_eq!(earliest(None, soon), soon);
        assert!(passed(after(Duration::ZERO)));
    }
}

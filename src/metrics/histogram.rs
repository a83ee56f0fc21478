//! A fixed-bucket histogram of atomics: one `fetch_add` on its bucket and one on its sum
//! per observation, no lock, no allocation; it lives in the server's counters (shared with
//! forked children) and is read whole at scrape time.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The most finite bucket bounds a histogram takes (one more slot counts `+Inf`).
pub(crate) const MAX_BUCKETS: usize = 31;

/// The counts of one histogram. Bucket `i` counts observations `<= bounds[i]` and
/// `> bounds[i-1]` (not cumulative: cumulated when exposed); the slot after the last bound
/// counts the rest (`+Inf`).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `d` against `bounds`.
    pub(crate) fn observe(&self, bounds: &Buckets, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = bounds
            .ns
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(bounds.ns.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// The counts now, cumulated per bound (as exposed), with the sum in seconds.
    pub(crate) fn read(&self, bounds: &Buckets) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(bounds.ns.len() + 1);
        let mut total = 0u64;
        for b in &self.buckets[..=bounds.ns.len()] {
            total = total.wrapping_add(b.load(Relaxed));
            cumulative.push(total);
        }
        HistogramSnapshot {
            bounds: Arc::clone(&bounds.secs),
            cumulative,
            sum: self.sum_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// The finite upper bounds, in seconds.
    pub(crate) bounds: Arc<[f64]>,
    /// Observations `<=` each bound, then the total (`+Inf`): one more entry than `bounds`.
    pub(crate) cumulative: Vec<u64>,
    /// The sum of the observations, in seconds.
    pub(crate) sum: f64,
}

impl HistogramSnapshot {
    /// Every observation (the `+Inf` bucket).
    pub(crate) fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The `q` quantile (0..1), linearly interpolated inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without observations. Past the last bound it is
    /// the last bound (the histogram knows nothing larger).
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &c) in self.cumulative.iter().enumerate() {
            if (c as f64) >= rank && c > below {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let within = (rank - below as f64) / (c - below) as f64;
                return Some(lower + (upper - lower) * within);
            }
            below = c;
        }
        self.bounds.last().copied()
    }
}

/// The bucket bounds of a histogram, in seconds (as exposed) and in nanoseconds (as
/// compared on the hot path).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Buckets {
    pub(crate) secs: Arc<[f64]>,
    ns: Arc<[u64]>,
}

impl Buckets {
    /// Bounds in seconds: finite, positive, strictly increasing, at most [`MAX_BUCKETS`].
    pub(crate) fn new(secs: &[f64]) -> io::Result<Buckets> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if secs.is_empty() || secs.len() > MAX_BUCKETS {
            return Err(invalid(format!(
                "a histogram takes 1 to {MAX_BUCKETS} bucket bounds, not {}",
                secs.len()
            )));
        }
        if secs.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(invalid(
                "bucket bounds must be finite and positive (seconds)".into(),
            ));
        }
        if secs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("bucket bounds must be strictly increasing".into()));
        }
        let ns: Vec<u64> = secs.iter().map(|s| (s * 1e9).round() as u64).collect();
        Ok(Buckets {
            secs: secs.into(),
            ns: ns.into(),
        })
    }

    /// Fixed bounds known to be valid.
    fn fixed(secs: &[f64]) -> Buckets {
        Buckets::new(secs).expect("the crate's own bucket bounds are valid")
    }

    /// Requests: 0.5 ms to 10 s (socket servers answer faster than the 5 ms where
    /// OpenTelemetry's HTTP defaults begin).
    pub(crate) fn requests() -> Buckets {
        Buckets::fixed(&DEFAULT_REQUEST_BUCKETS)
    }

    /// Connections: 10 ms to 1 h (made once: it is on the connection's path).
    pub(crate) fn connections() -> &'static Buckets {
        static B: OnceLock<Buckets> = OnceLock::new();
        B.get_or_init(|| {
            Buckets::fixed(&[
                0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
            ])
        })
    }

    /// TLS handshakes: 1 ms to 5 s.
    pub(crate) fn handshakes() -> &'static Buckets {
        static B: OnceLock<Buckets> = OnceLock::new();
        B.get_or_init(|| {
            Buckets::fixed(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        })
    }
}

/// The default bounds of `socketserver_request_duration_seconds`, in seconds.
pub(crate) const DEFAULT_REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_cumulate() {
        let b = Buckets::new(&[0.001, 0.01, 0.1]).unwrap();
        let h = Histogram::default();
        h.observe(&b, Duration::from_micros(1000)); // == bound: le
        h.observe(&b, Duration::from_micros(1001));
        h.observe(&b, Duration::from_millis(50));
        h.observe(&b, Duration::from_secs(3));
        let s = h.read(&b);
        assert_eq!(s.cumulative, vec![1, 2, 3, 4]);
        assert_eq!(s.count(), 4);
        assert!((s.sum - 3.052001).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn bounds_are_checked() {
        assert!(Buckets::new(&[]).is_err());
        assert!(Buckets::new(&[0.1, 0.1]).is_err());
        assert!(Buckets::new(&[0.2, 0.1]).is_err());
        assert!(Buckets::new(&[-1.0]).is_err());
        assert!(Buckets::new(&[f64::NAN]).is_err());
        assert!(Buckets::new(&[1.0; MAX_BUCKETS + 1]).is_err());
        assert!(Buckets::new(&DEFAULT_REQUEST_BUCKETS).is_ok());
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = Buckets::new(&[1.0, 2.0, 4.0]).unwrap();
        let h = Histogram::default();
        assert_eq!(h.read(&b).quantile(0.5), None);
        for _ in 0..10 {
            h.observe(&b, Duration::from_millis(1500));
        }
        let s = h.read(&b);
        // All ten in (1, 2]: the median is halfway through it.
        assert_eq!(s.quantile(0.5), Some(1.5));
        assert_eq!(s.quantile(1.0), Some(2.0));
        h.observe(&b, Duration::from_secs(100));
        assert_eq!(h.read(&b).quantile(1.0), Some(4.0));
    }
}

//! A lock-free histogram of positive values on a log scale (four buckets per doubling), for
//! quantiles of model calls' latency and rows per call over a whole run in fixed memory.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this have a bucket each.
const EXACT: u64 = 8;
/// Buckets per doubling above them.
const PER_DOUBLING: u64 = 4;
/// Buckets: the exact ones, then four per doubling from 8 to 2^64.
const BUCKETS: usize = (EXACT + (64 - 3) * PER_DOUBLING) as usize;

/// Counts of values by bucket, and the largest value seen.
#[derive(Debug)]
pub(super) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

/// The bucket of `value`: the value itself below 8, then by its leading one and the two bits
/// below it (the quarter of its doubling).
fn bucket(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let exponent = u64::from(63 - value.leading_zeros());
    let quarter = (value >> (exponent - 2)) & 0b11;
    (EXACT + (exponent - 3) * PER_DOUBLING + quarter) as usize
}

/// The smallest value of bucket `index`.
fn lower_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let (exponent, quarter) = (
        3 + (index - EXACT) / PER_DOUBLING,
        (index - EXACT) % PER_DOUBLING,
    );
    (4 + quarter) << (exponent - 2)
}

impl Histogram {
    /// Counts `value`.
    pub(super) fn record(&self, value: u64) {
        self.buckets[bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// The largest value counted (0 when none).
    pub(super) fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The `q` quantile (0 to 1) of the values counted, to within a bucket (at most a fifth low),
    /// never above the largest; 0 when none.
    pub(super) fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        // The rank of the value sought, 1-based: the smallest value with at least q of the
        // values at or below it.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return lower_bound(index).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::{Histogram, bucket, lower_bound};

    #[test]
    fn a_bucket_holds_the_values_from_its_lower_bound_to_the_next() {
        for value in (0..5000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket(value);
            assert!(lower_bound(b) <= value, "{value} in bucket {b}");
            if b + 1 < super::BUCKETS {
                assert!(value < lower_bound(b + 1), "{value} below bucket {}", b + 1);
            }
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_exact_ones() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        // 1..=1000 once each, and one outlier.
        for v in 1..=1000u64 {
            h.record(v);
        }
        h.record(1_000_000);
        assert_eq!(h.max(), 1_000_000);
        let p50 = h.quantile(0.5);
        assert!((421..=501).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99);
        assert!((811..=991).contains(&p99), "p99 {p99}");
        assert_eq!(
            h.quantile(1.0),
            1_000_000u64.min(lower_bound(bucket(1_000_000)))
        );
    }
}

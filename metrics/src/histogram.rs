//! Latency histograms with fixed buckets, as Prometheus reads them.

/// The upper bounds (seconds) of every latency histogram's buckets: 1 ms to 10 s, then +Inf.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How many observations fell in each bucket, their count and their sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    /// Observations at most each bound of [`LATENCY_BUCKETS`] and above the last one
    /// (not cumulative: one more entry than bounds).
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; LATENCY_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Records one observation of `seconds` (a negative or NaN one counts as 0).
    pub fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_nan() || seconds < 0.0 {
            0.0
        } else {
            seconds
        };
        let bucket = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// The sum of every observation.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// `(upper bound, observations in the bucket)` per bucket, `+Inf` last: not cumulative
    /// (a bucket holds what is above the previous bound), as `prometheus-client` takes them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        for s in [0.0005, 0.001, 0.0011, 0.3, 100.0, f64::NAN] {
            h.observe(s);
        }
        let buckets = h.buckets();
        assert_eq!(buckets[0], (0.001, 3), "0.0005, 0.001 and NaN read as 0");
        assert_eq!(buckets[1], (0.0025, 1));
        assert_eq!(buckets[7], (0.25, 0));
        assert_eq!(buckets[8], (0.5, 1));
        assert_eq!(buckets.last().copied(), Some((f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 6);
        assert_eq!(h.count(), 6);
        assert!((h.sum() - 100.3026).abs() < 1e-9);
    }
}

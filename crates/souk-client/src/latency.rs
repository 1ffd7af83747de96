//! A fixed-bucket latency histogram: cheap to record into from the packet path, and
//! cheap to subtract, so a benchmark can take the latencies of one window out of a
//! running count.

/// Bucket width. Forwarding latencies of interest are a few milliseconds.
const BUCKET_MICROS: u64 = 100;
/// The default range: forwarding latencies above 200 ms are all "too slow".
const DEFAULT_RANGE_MS: u64 = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u32>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::with_range_ms(DEFAULT_RANGE_MS)
    }
}

impl LatencyHistogram {
    /// Tells apart times up to `range_ms`; slower samples count as that.
    pub fn with_range_ms(range_ms: u64) -> LatencyHistogram {
        LatencyHistogram {
            counts: vec![0; (range_ms * 1000 / BUCKET_MICROS).max(1) as usize],
        }
    }

    /// The slowest time told apart; slower samples count as this.
    pub fn range_ms(&self) -> f64 {
        (self.counts.len() as u64 * BUCKET_MICROS) as f64 / 1000.0
    }

    pub fn record_micros(&mut self, micros: u64) {
        let bucket = ((micros / BUCKET_MICROS) as usize).min(self.counts.len() - 1);
        self.counts[bucket] += 1;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Adds `other`'s samples (to sum many receivers).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// The samples recorded since `earlier`, a snapshot of this same histogram.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// The `q` quantile (0.0..=1.0) in milliseconds, as the upper edge of its bucket;
    /// `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(((i as u64 + 1) * BUCKET_MICROS) as f64 / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_window_and_merge() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for us in [150, 250, 250, 950, 5_000_000] {
            h.record_micros(us);
        }
        assert_eq!(h.quantile_ms(0.5), Some(0.3));
        assert_eq!(h.quantile_ms(0.8), Some(1.0));
        // The slow sample is clamped into the last bucket rather than lost.
        assert_eq!(h.quantile_ms(1.0), Some(200.0));

        let before = h.clone();
        h.record_micros(1_000);
        let window = h.since(&before);
        assert_eq!(window.count(), 1);
        assert_eq!(window.quantile_ms(0.99), Some(1.1));

        let mut sum = LatencyHistogram::default();
        sum.merge(&window);
        sum.merge(&window);
        assert_eq!(sum.count(), 2);
    }

    #[test]
    fn a_wider_range_tells_slow_samples_apart() {
        let mut h = LatencyHistogram::with_range_ms(5_000);
        assert_eq!(h.range_ms(), 5_000.0);
        h.record_micros(350_000);
        h.record_micros(9_000_000);
        assert_eq!(h.quantile_ms(0.5), Some(350.1));
        assert_eq!(h.quantile_ms(1.0), Some(5_000.0));
    }
}

//! Latency histograms (HdrHistogram, microseconds, 3 significant digits) and their summaries.
//!
//! Connections record into a few shared shards (chosen by connection number) in batches, once
//! per socket read, so that a million deliveries a second cost a few thousand lock
//! acquisitions, not a million, and no connection carries a histogram of its own.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded: two minutes (larger values are clamped).
const MAX_US: u64 = 120_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 µs to 2 minutes with 3 significant digits.
    pub fn new() -> Latency {
        Latency {
            h: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        let _ = self.h.record(us.clamp(1, MAX_US));
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.h.add(&other.h);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1000.0
    }

    /// The summary that reports print.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if self.h.is_empty() {
                0.0
            } else {
                self.h.max() as f64 / 1000.0
            },
            mean_ms: if self.h.is_empty() {
                0.0
            } else {
                self.h.mean() / 1000.0
            },
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Histograms shared by many connections, in shards, one set per ramp step.
#[derive(Debug)]
pub struct Shared {
    /// `shards[step][shard]`.
    shards: Vec<Vec<Mutex<Latency>>>,
}

impl Shared {
    /// Histograms for `steps` steps with `shards` shards each.
    pub fn new(steps: usize, shards: usize) -> Shared {
        Shared {
            shards: (0..steps.max(1))
                .map(|_| (0..shards.max(1)).map(|_| Mutex::default()).collect())
                .collect(),
        }
    }

    /// Records a batch of `(step, microseconds)` for connection `conn`; steps out of range are
    /// ignored.
    pub fn record_batch(&self, conn: usize, batch: &[(u32, u64)]) {
        let mut i = 0;
        while i < batch.len() {
            let step = batch[i].0;
            let Some(shards) = self.shards.get(step as usize) else {
                i += 1;
                continue;
            };
            let mut h = shards[conn % shards.len()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            while i < batch.len() && batch[i].0 == step {
                h.record(batch[i].1);
                i += 1;
            }
        }
    }

    /// All shards of `step` merged.
    pub fn merged(&self, step: usize) -> Latency {
        let mut out = Latency::new();
        if let Some(shards) = self.shards.get(step) {
            for s in shards {
                out.merge(&s.lock().unwrap_or_else(|e| e.into_inner()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Latency::new();
        // 1..=1000 ms, one each.
        for ms in 1..=1000u64 {
            h.record(ms * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999_ms - 999.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() <= 1.0, "{s:?}");
        assert!((s.mean_ms - 500.5).abs() <= 0.5, "{s:?}");
    }

    #[test]
    fn a_tail_shows_in_p99_not_in_p50() {
        let mut h = Latency::new();
        for _ in 0..985 {
            h.record(200);
        }
        for _ in 0..15 {
            h.record(80_000);
        }
        let s = h.summary();
        assert!((s.p50_ms - 0.2).abs() < 0.001, "{s:?}");
        assert!((s.p99_ms - 80.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn shards_merge_per_step_and_clamp() {
        let shared = Shared::new(2, 4);
        shared.record_batch(0, &[(0, 100), (0, 200), (1, 300)]);
        shared.record_batch(3, &[(1, 400), (7, 1), (0, 0)]);
        shared.record_batch(5, &[(0, u64::MAX)]);
        assert_eq!(shared.merged(0).count(), 4);
        assert_eq!(shared.merged(1).count(), 2);
        assert!((shared.merged(0).summary().max_ms - 120_000.0).abs() < 100.0);
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }
}

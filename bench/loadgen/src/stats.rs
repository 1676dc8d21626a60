//! Percentiles over sorted samples (microseconds): exact, and cheap at benchmark sample counts.

use serde::Serialize;

/// Summary of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Nearest-rank percentile of an ascending slice (`q` in 0..=1).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises samples given in microseconds; sorts them in place.
pub fn summarize(samples: &mut [u64]) -> Summary {
    samples.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let n = samples.len();
    let mean = if n == 0 {
        0.0
    } else {
        samples.iter().map(|&s| s as f64).sum::<f64>() / n as f64 / 1000.0
    };
    Summary {
        n,
        mean_ms: mean,
        p50_ms: ms(percentile(samples, 0.50)),
        p90_ms: ms(percentile(samples, 0.90)),
        p99_ms: ms(percentile(samples, 0.99)),
        p999_ms: ms(percentile(samples, 0.999)),
        max_ms: ms(samples.last().copied().unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let sum = summarize(&mut s);
        assert_eq!(sum.n, 1000);
        assert_eq!(sum.p50_ms, 500.0);
        assert_eq!(sum.p99_ms, 990.0);
        assert_eq!(sum.p999_ms, 999.0);
        assert_eq!(sum.max_ms, 1000.0);
        assert_eq!(sum.mean_ms, 500.5);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(summarize(&mut []).p99_ms, 0.0);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[7], 0.0), 7);
    }
}

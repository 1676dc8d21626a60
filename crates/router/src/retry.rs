use std::time::Duration;

use serde::Deserialize;

/// How often one target is tried again before the route moves on, and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Extra attempts on the same target after a retryable failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff; doubles with each retry.
    #[serde(default = "default_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest wait before a retry. A provider `Retry-After` longer than this sends the
    /// request to the next target instead of waiting.
    #[serde(default = "default_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_retries() -> u32 {
    1
}
fn default_base_ms() -> u64 {
    100
}
fn default_max_ms() -> u64 {
    2_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: default_retries(),
            backoff_base_ms: default_base_ms(),
            backoff_max_ms: default_max_ms(),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based) on the same target, or `None` to move
    /// on: retries used up, or the provider asked for a longer wait than we allow.
    /// `jitter` in [0, 1) spreads retries of concurrent requests (full jitter on the backoff).
    pub fn backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if retry == 0 || retry > self.retries {
            return None;
        }
        let max = Duration::from_millis(self.backoff_max_ms);
        let exp = self
            .backoff_base_ms
            .saturating_mul(1u64 << (retry - 1).min(20))
            .min(self.backoff_max_ms);
        let backoff =
            Duration::from_millis((exp as f64 * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))) as u64);
        match retry_after {
            Some(ra) if ra > max => None,
            Some(ra) => Some(ra.max(backoff)),
            None => Some(backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            backoff_base_ms: 100,
            backoff_max_ms: 350,
        };
        assert_eq!(p.backoff(1, None, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(p.backoff(2, None, 1.0), Some(Duration::from_millis(200)));
        assert_eq!(p.backoff(3, None, 1.0), Some(Duration::from_millis(350)));
        assert_eq!(p.backoff(1, None, 0.0), Some(Duration::from_millis(50)));
        assert_eq!(p.backoff(6, None, 0.5), None, "retries used up");
        assert_eq!(p.backoff(0, None, 0.5), None);
    }

    #[test]
    fn retry_after_is_honoured_or_skipped() {
        let p = RetryPolicy {
            retries: 2,
            backoff_base_ms: 100,
            backoff_max_ms: 2000,
        };
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(1)), 0.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(30)), 0.0),
            None,
            "too long: fall back instead"
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_millis(10)), 1.0),
            Some(Duration::from_millis(100)),
            "never shorter than our own backoff"
        );
    }
}

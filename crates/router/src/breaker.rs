use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// When a target's breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long an open breaker refuses the target before letting one probe through.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
}

fn default_failures() -> u32 {
    5
}
fn default_open_ms() -> u64 {
    30_000
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_failures(),
            open_ms: default_open_ms(),
        }
    }
}

/// A per-target circuit breaker and `Retry-After` cool-down, lock-free: the request path reads
/// two atomics.
///
/// Closed → (N consecutive failures) → open for `open_ms` → half-open: one probe is let
/// through; its success closes the breaker, its failure opens it again.
#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the target is not tried (breaker open or the
    /// provider asked us to wait). 0 = available.
    blocked_until_ms: AtomicU64,
    /// Set while a half-open probe is in flight, so only one goes through.
    probing: AtomicU32,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        CircuitBreaker {
            cfg,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            blocked_until_ms: AtomicU64::new(0),
            probing: AtomicU32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// Whether an attempt may go to this target now. Past an open period, the first caller
    /// becomes the probe.
    pub fn try_acquire(&self) -> bool {
        let until = self.blocked_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if self.now_ms() < until {
            return false;
        }
        if self.consecutive_failures.load(Ordering::Acquire) < self.cfg.failures {
            // A Retry-After cool-down that has passed: no probe needed.
            self.blocked_until_ms.store(0, Ordering::Release);
            return true;
        }
        // Half-open: one probe at a time.
        self.probing
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// How long until the target may be tried again (zero if it may now).
    pub fn blocked_for(&self) -> Duration {
        let until = self.blocked_until_ms.load(Ordering::Acquire);
        Duration::from_millis(until.saturating_sub(self.now_ms()))
    }

    pub fn is_open(&self) -> bool {
        self.consecutive_failures.load(Ordering::Acquire) >= self.cfg.failures
    }

    pub fn on_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Release);
        }
        if self.blocked_until_ms.load(Ordering::Relaxed) != 0 {
            self.blocked_until_ms.store(0, Ordering::Release);
        }
        self.probing.store(0, Ordering::Release);
    }

    /// Records a failed attempt; `retry_after` is the provider's own request to wait.
    pub fn on_failure(&self, retry_after: Option<Duration>) {
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let now = self.now_ms();
        let mut until = 0;
        if n >= self.cfg.failures {
            until = now + self.cfg.open_ms;
        }
        if let Some(ra) = retry_after {
            until = until.max(now + ra.as_millis() as u64);
        }
        if until > 0 {
            self.blocked_until_ms.fetch_max(until, Ordering::AcqRel);
        }
        self.probing.store(0, Ordering::Release);
    }

    /// An attempt that ended for reasons that say nothing of the target's health
    /// (the client went away, the client's request was invalid).
    pub fn on_neutral(&self) {
        self.probing.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_once() {
        let b = CircuitBreaker::new(BreakerConfig {
            failures: 3,
            open_ms: 1000,
        });
        for _ in 0..2 {
            b.on_failure(None);
            assert!(b.try_acquire(), "still closed below the threshold");
        }
        b.on_failure(None);
        assert!(b.is_open());
        assert!(!b.try_acquire());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!b.try_acquire());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            b.try_acquire(),
            "the first caller after the open period probes"
        );
        assert!(!b.try_acquire(), "only one probe at a time");
        b.on_failure(None);
        assert!(!b.try_acquire(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.try_acquire());
        b.on_success();
        assert!(!b.is_open());
        assert!(b.try_acquire() && b.try_acquire(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_the_target_for_that_long() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        b.on_failure(Some(Duration::from_secs(2)));
        assert!(!b.try_acquire());
        assert_eq!(b.blocked_for(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(b.try_acquire());
        assert!(b.try_acquire(), "no probe needed after a plain cool-down");
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_failure_count() {
        let b = CircuitBreaker::new(BreakerConfig {
            failures: 2,
            open_ms: 1000,
        });
        b.on_failure(None);
        b.on_success();
        b.on_failure(None);
        assert!(b.try_acquire(), "failures must be consecutive");
    }
}

//! Peak-EWMA latency estimate, after Finagle's `PeakEwma` and `tower::load::PeakEwma`.
//!
//! A sample above the current estimate replaces it at once (the peak); a lower sample pulls it
//! down with weight `1 - exp(-Δt/τ)`, where Δt is the time since the previous sample and τ the
//! decay time. Between samples the estimate decays towards zero with the same τ, as tower's does,
//! so a replica that was penalised and then left alone is eventually probed again.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct PeakEwma {
    /// Seconds; `None` until the first sample.
    estimate: Option<f64>,
    stamp: Instant,
    decay_s: f64,
}

impl PeakEwma {
    pub fn new(decay: Duration, now: Instant) -> Self {
        PeakEwma {
            estimate: None,
            stamp: now,
            decay_s: decay.as_secs_f64().max(1e-9),
        }
    }

    /// The estimate at `now` in seconds, or `None` before any sample.
    pub fn get(&self, now: Instant) -> Option<f64> {
        self.estimate.map(|e| e * self.weight(now))
    }

    /// Records one sample taken at `now`.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let s = sample.as_secs_f64();
        let next = match self.estimate {
            None => s,
            Some(e) => {
                let w = self.weight(now);
                let decayed = e * w;
                if s > decayed {
                    s
                } else {
                    decayed + s * (1.0 - w)
                }
            }
        };
        self.estimate = Some(next);
        self.stamp = now;
    }

    fn weight(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.stamp).as_secs_f64();
        (-dt / self.decay_s).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[tokio::test(start_paused = true)]
    async fn higher_sample_replaces_at_once_lower_decays() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_secs(10), t0);
        assert_eq!(e.get(t0), None);
        e.observe(Duration::from_millis(100), t0);
        assert!(close(e.get(t0).unwrap(), 0.1));
        // A slow sample 1 ms later: the estimate jumps to it, no averaging.
        let t1 = t0 + Duration::from_millis(1);
        e.observe(Duration::from_secs(2), t1);
        assert!(close(e.get(t1).unwrap(), 2.0));
        // A fast sample one decay time later moves it part of the way only.
        let t2 = t1 + Duration::from_secs(10);
        e.observe(Duration::from_millis(100), t2);
        let w = (-1.0f64).exp();
        let want = 2.0 * w + 0.1 * (1.0 - w);
        assert!(close(e.get(t2).unwrap(), want), "{:?} vs {want}", e.get(t2));
        assert!(e.get(t2).unwrap() > 0.1 && e.get(t2).unwrap() < 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_fast_samples_converge_and_idle_decays() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_secs(10), t0);
        e.observe(Duration::from_secs(3), t0);
        let mut t = t0;
        for _ in 0..600 {
            t += Duration::from_millis(100);
            e.observe(Duration::from_millis(200), t);
        }
        let v = e.get(t).unwrap();
        assert!((v - 0.2).abs() < 0.01, "converged to {v}");
        // Left alone for three decay times, the estimate falls by e^-3.
        let later = t + Duration::from_secs(30);
        assert!(close(e.get(later).unwrap(), v * (-3.0f64).exp()));
    }
}

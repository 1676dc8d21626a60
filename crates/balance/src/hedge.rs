//! First-token hedging under a budget, after Dean & Barroso, "The Tail at Scale" (CACM 2013):
//! send a second copy of a request once the first has waited longer than the p95 time to first
//! token, keep whichever streams first, cancel the other, and cap the extra load at a few percent.
//!
//! Only the decision lives here: the delay to wait ([`Hedger::delay`]) and a token-bucket budget
//! (every request deposits `max_extra`, a hedge withdraws 1, like Finagle's retry budget). The
//! caller owns the timers and the cancelling.

use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeConfig {
    /// Quantile of recent TTFTs after which a request is hedged.
    pub quantile: f64,
    /// Hedges per request allowed over time (0.05 = at most ~5% extra requests).
    pub max_extra: f64,
    /// Hedges that may be spent at once after a quiet period.
    pub burst: f64,
    /// TTFT samples kept for the quantile.
    pub window: usize,
    /// No hedging until this many samples are known.
    pub min_samples: usize,
    /// Never hedge sooner than this.
    pub min_delay_ms: u64,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            quantile: 0.95,
            max_extra: 0.05,
            burst: 5.0,
            window: 512,
            min_samples: 20,
            min_delay_ms: 50,
        }
    }
}

impl HedgeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(format!(
                "hedge.quantile: {} must be in (0, 1)",
                self.quantile
            ));
        }
        if !(0.0..=1.0).contains(&self.max_extra) {
            return Err(format!(
                "hedge.max_extra: {} must be in [0, 1]",
                self.max_extra
            ));
        }
        if self.burst.is_nan() || self.burst < 1.0 {
            return Err(format!("hedge.burst: {} must be at least 1", self.burst));
        }
        if self.window == 0 || self.min_samples == 0 || self.min_samples > self.window {
            return Err("hedge.min_samples must be in 1..=hedge.window".into());
        }
        Ok(())
    }
}

/// Hedging state for one pool of equivalent replicas.
#[derive(Debug, Clone)]
pub struct Hedger {
    cfg: HedgeConfig,
    ttfts: VecDeque<Duration>,
    balance: f64,
    hedges: u64,
    requests: u64,
}

impl Hedger {
    pub fn new(cfg: HedgeConfig) -> Self {
        Hedger {
            ttfts: VecDeque::with_capacity(cfg.window),
            cfg,
            balance: 0.0,
            hedges: 0,
            requests: 0,
        }
    }

    /// A primary request starts: it earns `max_extra` of a hedge.
    pub fn on_request(&mut self) {
        self.requests += 1;
        self.balance = (self.balance + self.cfg.max_extra).min(self.cfg.burst);
    }

    /// A first token arrived after `ttft` (from the primary or the winning hedge).
    pub fn record_ttft(&mut self, ttft: Duration) {
        if self.ttfts.len() == self.cfg.window {
            self.ttfts.pop_front();
        }
        self.ttfts.push_back(ttft);
    }

    /// How long to wait for a first token before hedging; `None` until enough samples.
    pub fn delay(&self) -> Option<Duration> {
        if self.ttfts.len() < self.cfg.min_samples {
            return None;
        }
        let mut v: Vec<Duration> = self.ttfts.iter().copied().collect();
        let rank = ((v.len() as f64) * self.cfg.quantile).ceil() as usize;
        let i = rank.clamp(1, v.len()) - 1;
        let (_, q, _) = v.select_nth_unstable(i);
        Some((*q).max(Duration::from_millis(self.cfg.min_delay_ms)))
    }

    /// The delay passed without a first token: may a hedge be sent? Spends budget if so.
    pub fn try_hedge(&mut self) -> bool {
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            self.hedges += 1;
            true
        } else {
            false
        }
    }

    /// (hedges sent, primary requests seen).
    pub fn counts(&self) -> (u64, u64) {
        (self.hedges, self.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_the_p95_of_recent_ttfts() {
        let mut h = Hedger::new(HedgeConfig::default());
        for ms in 1..=19 {
            h.record_ttft(Duration::from_millis(ms * 10));
        }
        assert_eq!(h.delay(), None, "not enough samples yet");
        for ms in 20..=100 {
            h.record_ttft(Duration::from_millis(ms * 10));
        }
        assert_eq!(h.delay(), Some(Duration::from_millis(950)));
    }

    #[test]
    fn budget_caps_extra_load() {
        let cfg = HedgeConfig::default();
        let mut h = Hedger::new(cfg.clone());
        // Every request is slow and asks for a hedge: only ~5% may get one.
        let mut sent = 0;
        for _ in 0..10_000 {
            h.on_request();
            if h.try_hedge() {
                sent += 1;
            }
        }
        assert!(sent <= 500, "{sent} hedges for 10000 requests");
        assert!(sent >= 490, "the budget is spent when needed: {sent}");
        // After a quiet period the burst is capped too.
        let mut h = Hedger::new(cfg.clone());
        for _ in 0..10_000 {
            h.on_request();
        }
        let burst = std::iter::from_fn(|| h.try_hedge().then_some(())).count();
        assert_eq!(burst as f64, cfg.burst);
        assert_eq!(h.counts(), (5, 10_000));
    }

    #[test]
    fn validate_names_the_key() {
        let bad = HedgeConfig {
            quantile: 1.5,
            ..HedgeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("hedge.quantile"));
        assert!(HedgeConfig::default().validate().is_ok());
    }
}

//! Balancer configuration (serde), validated without I/O.

use serde::{Deserialize, Serialize};

use crate::hedge::HedgeConfig;

/// How a replica is chosen among equivalent targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Each eligible replica in turn.
    RoundRobin,
    /// Fewest requests in flight.
    LeastLoaded,
    /// Power of two choices over Peak-EWMA cost (latency estimate × (pending + 1)).
    P2cPeakEwma,
    /// SGLang's cache-aware policy: shortest queue when imbalanced, else the replica holding the
    /// longest prefix of the prompt, else the fallback.
    PrefixAffinity,
}

/// What prefix affinity does when no replica holds enough of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The replica with the fewest indexed blocks (SGLang's choice): spreads cache contents.
    SmallestTree,
    /// Power of two choices over Peak-EWMA cost.
    P2c,
    /// Fewest requests in flight.
    LeastLoaded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Imbalance guard, absolute: max − min pending must exceed this...
    pub balance_abs_threshold: u32,
    /// ...and max must exceed this × min, for the least-loaded replica to win over affinity.
    pub balance_rel_threshold: f64,
    /// Share of the prompt's blocks a replica must hold for affinity to pick it.
    pub cache_threshold: f64,
    /// Prefix keys (blocks) remembered per replica, least recently used evicted first.
    pub max_blocks_per_replica: usize,
    /// Prompt bytes per block when keys are cut from text (≈ 4 bytes per token).
    pub block_bytes: usize,
    pub fallback: Fallback,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        // Thresholds are SGLang router's defaults (balance_abs_threshold 32, balance_rel_threshold
        // 1.0001, cache_threshold 0.5).
        PrefixConfig {
            balance_abs_threshold: 32,
            balance_rel_threshold: 1.0001,
            cache_threshold: 0.5,
            max_blocks_per_replica: 65_536,
            block_bytes: 2048,
            fallback: Fallback::SmallestTree,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    pub policy: Policy,
    /// Peak-EWMA decay time τ.
    pub decay_ms: u64,
    /// Time to first token assumed for a replica with no samples yet.
    pub initial_ttft_ms: u64,
    /// Latency estimate = TTFT + this many × time per output token.
    pub tpot_weight_tokens: f64,
    /// A failed, 429 or 503 reply counts as a TTFT sample this slow.
    pub error_penalty_ms: u64,
    pub prefix: PrefixConfig,
    /// First-token hedging; off when absent.
    pub hedge: Option<HedgeConfig>,
    /// Seed of the power-of-two-choices draws (fixed so runs repeat).
    pub seed: u64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            policy: Policy::P2cPeakEwma,
            decay_ms: 10_000,
            initial_ttft_ms: 500,
            tpot_weight_tokens: 32.0,
            error_penalty_ms: 5_000,
            prefix: PrefixConfig::default(),
            hedge: None,
            seed: 0x5eed,
        }
    }
}

impl BalanceConfig {
    /// Checks values no I/O is needed for; the error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.decay_ms == 0 {
            return Err("decay_ms must be above 0".into());
        }
        if !(self.tpot_weight_tokens >= 0.0 && self.tpot_weight_tokens.is_finite()) {
            return Err(format!(
                "tpot_weight_tokens: {} must be a finite number ≥ 0",
                self.tpot_weight_tokens
            ));
        }
        let p = &self.prefix;
        if !(p.balance_rel_threshold >= 1.0 && p.balance_rel_threshold.is_finite()) {
            return Err(format!(
                "prefix.balance_rel_threshold: {} must be ≥ 1",
                p.balance_rel_threshold
            ));
        }
        if !(0.0..=1.0).contains(&p.cache_threshold) {
            return Err(format!(
                "prefix.cache_threshold: {} must be in [0, 1]",
                p.cache_threshold
            ));
        }
        if p.max_blocks_per_replica == 0 {
            return Err("prefix.max_blocks_per_replica must be above 0".into());
        }
        if p.block_bytes == 0 {
            return Err("prefix.block_bytes must be above 0".into());
        }
        if let Some(h) = &self.hedge {
            h.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults_and_rejects_bad_values() {
        let cfg: BalanceConfig = toml::from_str(
            r#"
            policy = "prefix_affinity"
            decay_ms = 5000
            [prefix]
            cache_threshold = 0.6
            fallback = "p2c"
            [hedge]
            max_extra = 0.02
            "#,
        )
        .unwrap();
        assert_eq!(cfg.policy, Policy::PrefixAffinity);
        assert_eq!(cfg.prefix.balance_abs_threshold, 32);
        assert_eq!(cfg.prefix.fallback, Fallback::P2c);
        assert_eq!(cfg.hedge.as_ref().unwrap().quantile, 0.95);
        assert!(cfg.validate().is_ok());

        let bad = BalanceConfig {
            prefix: PrefixConfig {
                cache_threshold: 2.0,
                ..PrefixConfig::default()
            },
            ..BalanceConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .starts_with("prefix.cache_threshold"));
        assert!(toml::from_str::<BalanceConfig>("polcy = \"round_robin\"").is_err());
    }
}

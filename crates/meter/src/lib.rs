//! Metering: turns what happened to a request ([`Outcome`]) into a [`LedgerRecord`] with token
//! counts, cost, energy and carbon; writes records to the ledger off the request path through a
//! bounded queue and a batched writer ([`Meter`], [`MeterTask`]); keeps the Prometheus metrics;
//! and reads the ledger back for the `switchyard usage` report ([`report`]).
//!
//! How each figure is obtained is described in `docs/metering.md`.

pub mod energy;
pub mod ledger;
pub mod metrics;
pub mod prices;
mod record;
pub mod report;
pub mod tokens;
mod writer;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use serde::Deserialize;

pub use energy::EnergyProfile;
pub use ledger::{Ledger, SqliteLedger};
pub use prices::{cost, Price, PriceCatalog};
pub use record::{LedgerRecord, Outcome};
pub use writer::{to_record, Meter, MeterTask};

/// Errors of the meter and the ledger.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("price catalog: {0}")]
    Catalog(String),
    #[error("meter config: {0}")]
    Config(String),
    #[error("ledger schema version {found}; this build reads version {supported}")]
    SchemaVersion { found: i64, supported: i64 },
    #[error("the ledger writer stopped unexpectedly")]
    WriterGone,
}

/// How the meter runs and what it knows about targets.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    pub ledger_path: PathBuf,
    /// Outcomes waiting for the writer; when full, `record` waits (backpressure, no drops).
    pub queue_capacity: usize,
    /// Records per transaction.
    pub batch_size: usize,
    /// Longest a record waits before its batch is written.
    pub flush_interval: Duration,
    pub prices: PriceCatalog,
    /// Per-target facts, keyed by target id (`provider/model`).
    pub targets: HashMap<String, TargetMeterConfig>,
}

impl MeterConfig {
    /// Defaults (queue 65,536, batches of 512, flush every 200 ms, the built-in catalog).
    pub fn new(ledger_path: PathBuf) -> Result<MeterConfig, MeterError> {
        Ok(MeterConfig {
            ledger_path,
            queue_capacity: 65_536,
            batch_size: 512,
            flush_interval: Duration::from_millis(200),
            prices: PriceCatalog::builtin()?,
            targets: HashMap::new(),
        })
    }

    /// Checks sizes and every target's price and energy profile; errors name the target.
    pub fn validate(&self) -> Result<(), MeterError> {
        if self.queue_capacity == 0 || self.batch_size == 0 {
            return Err(MeterError::Config(
                "queue_capacity and batch_size must be at least 1".into(),
            ));
        }
        for (id, t) in &self.targets {
            t.validate()
                .map_err(|e| MeterError::Config(format!("targets.{id:?}.{e}")))?;
        }
        Ok(())
    }
}

/// `[targets."provider/model"]` in config: metering facts for one target.
#[derive(Debug, Deserialize, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetMeterConfig {
    /// Replaces the catalog price (self-hosted models, negotiated prices).
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    pub energy: Option<EnergyProfile>,
    /// Grid carbon intensity where the target runs, gCO2e/kWh (location-based unless noted).
    #[serde(default)]
    pub grid_g_co2e_per_kwh: Option<f64>,
}

impl TargetMeterConfig {
    /// Checks the figures; the error starts with the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.price {
            p.validate().map_err(|e| format!("price: {e}"))?;
        }
        if let Some(e) = &self.energy {
            e.validate().map_err(|e| format!("energy: {e}"))?;
        }
        if let Some(g) = self.grid_g_co2e_per_kwh {
            if !g.is_finite() || g < 0.0 {
                return Err(format!(
                    "grid_g_co2e_per_kwh: must be a non-negative number, not {g}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_config_parses_the_documented_form() {
        let t: HashMap<String, TargetMeterConfig> = toml::from_str(
            r#"
            ["vllm/meta-llama/Llama-3.1-8B-Instruct"]
            price = { input_per_mtok = 0.05, output_per_mtok = 0.10, source = "own estimate", as_of = "2026-11-01" }
            energy = { method = "j_per_token", input_j = 0.012, output_j = 0.12, source = "ML.ENERGY v3" }
            grid_g_co2e_per_kwh = 350.0

            ["openai/gpt-4o"]
            energy = { method = "power_time", watts = 1300.0, utilization = 0.7, pue = 1.12 }
            "#,
        )
        .unwrap();
        let v = &t["vllm/meta-llama/Llama-3.1-8B-Instruct"];
        assert_eq!(v.price.as_ref().unwrap().output_per_mtok, 0.10);
        assert_eq!(v.grid_g_co2e_per_kwh, Some(350.0));
        assert!(
            matches!(t["openai/gpt-4o"].energy, Some(EnergyProfile::PowerTime { pue, .. }) if pue == 1.12)
        );
        assert!(t.values().all(|t| t.validate().is_ok()));
        assert!(toml::from_str::<TargetMeterConfig>("grid = 1.0").is_err());
        let bad = TargetMeterConfig {
            grid_g_co2e_per_kwh: Some(-1.0),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .starts_with("grid_g_co2e_per_kwh"));
    }
}

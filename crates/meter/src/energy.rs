//! Energy and carbon per request, from a per-target profile or the provider's own figure.

use serde::{Deserialize, Serialize};

/// How a target's energy is estimated, from config:
/// `energy = { method = "j_per_token", input_j = .., output_j = .., source = .. }` or
/// `energy = { method = "power_time", watts = .., utilization = .., pue = .., source = .. }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnergyProfile {
    /// Measured joules per token (e.g. the ML.ENERGY leaderboard): E = input·input_j + output·output_j.
    JPerToken {
        input_j: f64,
        output_j: f64,
        #[serde(default)]
        source: Option<String>,
    },
    /// Power × time (Jegham et al., "How Hungry is AI?", 2025):
    /// E = (TTFT + decode time) × watts × utilization × PUE / 3600 Wh.
    PowerTime {
        /// Power drawn by the hardware share serving one request, W.
        watts: f64,
        #[serde(default = "one")]
        utilization: f64,
        #[serde(default = "one")]
        pue: f64,
        #[serde(default)]
        source: Option<String>,
    },
}

fn one() -> f64 {
    1.0
}

pub const METHOD_J_PER_TOKEN: &str = "estimated-j-per-token";
pub const METHOD_POWER_TIME: &str = "estimated-power-time";
pub const METHOD_UNKNOWN: &str = "unknown";

impl EnergyProfile {
    /// Checks that every figure is finite and non-negative (utilization at most 1, PUE at least 1).
    pub fn validate(&self) -> Result<(), String> {
        let ok = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a non-negative number, not {v}"))
            }
        };
        match self {
            EnergyProfile::JPerToken {
                input_j, output_j, ..
            } => {
                ok("input_j", *input_j)?;
                ok("output_j", *output_j)
            }
            EnergyProfile::PowerTime {
                watts,
                utilization,
                pue,
                ..
            } => {
                ok("watts", *watts)?;
                ok("utilization", *utilization)?;
                ok("pue", *pue)?;
                if *utilization > 1.0 {
                    return Err(format!(
                        "utilization is a share, at most 1, not {utilization}"
                    ));
                }
                if *pue < 1.0 {
                    return Err(format!("pue is at least 1, not {pue}"));
                }
                Ok(())
            }
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            EnergyProfile::JPerToken { .. } => METHOD_J_PER_TOKEN,
            EnergyProfile::PowerTime { .. } => METHOD_POWER_TIME,
        }
    }
}

/// What an energy estimate needs to know about a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnergyInputs {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Time the provider spent serving, ms: TTFT + decode time.
    pub serve_ms: f64,
}

/// Watt-hours by a profile.
pub fn estimate_wh(profile: &EnergyProfile, r: &EnergyInputs) -> f64 {
    match profile {
        EnergyProfile::JPerToken {
            input_j, output_j, ..
        } => (r.input_tokens as f64 * input_j + r.output_tokens as f64 * output_j) / 3600.0,
        EnergyProfile::PowerTime {
            watts,
            utilization,
            pue,
            ..
        } => (r.serve_ms.max(0.0) / 1000.0) * watts * utilization * pue / 3600.0,
    }
}

/// Energy and the method that produced it: the provider's own figure wins, then the target's
/// profile, else unknown (`None`, never 0).
pub fn energy(
    provider_wh: Option<f64>,
    provider_method: Option<&str>,
    profile: Option<&EnergyProfile>,
    r: &EnergyInputs,
) -> (Option<f64>, String) {
    if let Some(wh) = provider_wh.filter(|w| w.is_finite() && *w >= 0.0) {
        return (Some(wh), provider_method.unwrap_or("measured").to_string());
    }
    match profile {
        Some(p) => (Some(estimate_wh(p, r)), p.method().to_string()),
        None => (None, METHOD_UNKNOWN.to_string()),
    }
}

/// gCO2e = kWh × grid intensity (gCO2e/kWh); unknown when either is.
pub fn carbon_g(energy_wh: Option<f64>, grid_g_co2e_per_kwh: Option<f64>) -> Option<f64> {
    Some(energy_wh? / 1000.0 * grid_g_co2e_per_kwh?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn j_per_token_counts_input_and_output_joules() {
        let p = EnergyProfile::JPerToken {
            input_j: 0.012,
            output_j: 0.12,
            source: None,
        };
        let r = EnergyInputs {
            input_tokens: 1000,
            output_tokens: 500,
            serve_ms: 9_999.0,
        };
        assert!(close(estimate_wh(&p, &r), (12.0 + 60.0) / 3600.0));
        assert_eq!(energy(None, None, Some(&p), &r).1, "estimated-j-per-token");
    }

    #[test]
    fn power_time_multiplies_power_time_utilization_and_pue() {
        let p: EnergyProfile = toml::from_str(
            "method = \"power_time\"\nwatts = 1300.0\nutilization = 0.7\npue = 1.12",
        )
        .unwrap();
        let r = EnergyInputs {
            input_tokens: 1,
            output_tokens: 1,
            serve_ms: 3_000.0,
        };
        let (wh, method) = energy(None, None, Some(&p), &r);
        assert!(close(wh.unwrap(), 3.0 * 1300.0 * 0.7 * 1.12 / 3600.0));
        assert_eq!(method, "estimated-power-time");
    }

    #[test]
    fn power_time_defaults_utilization_and_pue_to_one() {
        let p: EnergyProfile = toml::from_str("method = \"power_time\"\nwatts = 360.0").unwrap();
        let r = EnergyInputs {
            serve_ms: 10_000.0,
            ..Default::default()
        };
        assert!(close(estimate_wh(&p, &r), 1.0));
    }

    #[test]
    fn provider_figure_wins_and_no_profile_is_unknown() {
        let p = EnergyProfile::JPerToken {
            input_j: 1.0,
            output_j: 1.0,
            source: None,
        };
        let r = EnergyInputs {
            input_tokens: 3600,
            ..Default::default()
        };
        assert_eq!(
            energy(Some(0.5), Some("measured-rapl"), Some(&p), &r),
            (Some(0.5), "measured-rapl".into())
        );
        assert_eq!(energy(None, None, None, &r), (None, "unknown".into()));
    }

    #[test]
    fn carbon_is_kwh_times_grid_intensity() {
        assert!(close(carbon_g(Some(2.0), Some(400.0)).unwrap(), 0.8));
        assert_eq!(carbon_g(None, Some(400.0)), None);
        assert_eq!(carbon_g(Some(2.0), None), None);
    }

    #[test]
    fn profiles_reject_unknown_methods_fields_and_bad_figures() {
        assert!(toml::from_str::<EnergyProfile>("method = \"guess\"\nwatts = 1.0").is_err());
        assert!(toml::from_str::<EnergyProfile>("method = \"power_time\"\nwats = 1.0").is_err());
        let p: EnergyProfile =
            toml::from_str("method = \"power_time\"\nwatts = 100.0\nutilization = 7.0").unwrap();
        assert!(p.validate().is_err());
    }
}

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Deserialize;
use switchyard_providers::DynProvider;

use crate::{CircuitBreaker, RetryPolicy};

/// Time limits for one attempt at a target.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTimeouts {
    /// TCP + TLS connect.
    #[serde(default = "default_connect")]
    pub connect_ms: u64,
    /// From sending the request to the first content (streams) or the whole answer's headers.
    #[serde(default = "default_first_token")]
    pub first_token_ms: u64,
    /// The whole attempt, stream included.
    #[serde(default = "default_total")]
    pub total_ms: u64,
    /// Longest silence between two stream events once a stream has started.
    #[serde(default = "default_idle")]
    pub stream_idle_ms: u64,
}

fn default_connect() -> u64 {
    5_000
}
fn default_first_token() -> u64 {
    60_000
}
fn default_total() -> u64 {
    600_000
}
fn default_idle() -> u64 {
    60_000
}

impl Default for TargetTimeouts {
    fn default() -> Self {
        TargetTimeouts {
            connect_ms: default_connect(),
            first_token_ms: default_first_token(),
            total_ms: default_total(),
            stream_idle_ms: default_idle(),
        }
    }
}

impl TargetTimeouts {
    pub fn first_token(&self) -> Duration {
        Duration::from_millis(self.first_token_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
    pub fn stream_idle(&self) -> Duration {
        Duration::from_millis(self.stream_idle_ms)
    }
}

/// A provider + model, with its limits and health.
pub struct Target {
    /// `provider/model`, the name used in the ledger, metrics and headers. Names are shared
    /// (`Arc<str>`): every request hands them to its ledger record, and a reference count is
    /// no allocation on the request's thread and no free on the ledger's.
    pub id: Arc<str>,
    pub provider: DynProvider,
    /// The provider instance's name (`provider.name()`), shared like `id`.
    pub provider_name: Arc<str>,
    pub model: Arc<str>,
    pub timeouts: TargetTimeouts,
    pub retry: RetryPolicy,
    pub breaker: CircuitBreaker,
    /// Self-hosted (data does not leave our machines): policy may require it.
    pub self_hosted: bool,
    /// USD per 1M input and output tokens, when the target has a price (for `cheapest`).
    pub price_per_mtok: Option<(f64, f64)>,
    /// Peak-EWMA of time to first token in µs (0 = no sample yet), for `fastest`.
    ttft_ewma_us: AtomicU64,
}

impl Target {
    // Every field is a distinct, required fact about the target; a builder would add nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        provider: DynProvider,
        model: String,
        timeouts: TargetTimeouts,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        self_hosted: bool,
        price_per_mtok: Option<(f64, f64)>,
    ) -> Self {
        Target {
            id: id.into(),
            provider_name: provider.name().into(),
            provider,
            model: model.into(),
            timeouts,
            retry,
            breaker,
            self_hosted,
            price_per_mtok,
            ttft_ewma_us: AtomicU64::new(0),
        }
    }

    /// Records a time to first token. A slower sample replaces the estimate at once; a faster
    /// one moves it a fifth of the way (Peak-EWMA without a clock: lock-free, one CAS loop).
    pub fn observe_ttft(&self, ttft: Duration) {
        let sample = ttft.as_micros().min(u64::MAX as u128).max(1) as u64;
        let _ = self
            .ttft_ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 || sample >= old {
                    sample
                } else {
                    old - (old - sample) / 5
                })
            });
    }

    /// The current time-to-first-token estimate, if any request has been seen.
    pub fn ttft_estimate(&self) -> Option<Duration> {
        match self.ttft_ewma_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// A blended price for ranking: input and output per 1M tokens, averaged.
    pub fn blended_price(&self) -> Option<f64> {
        self.price_per_mtok.map(|(i, o)| (i + o) / 2.0)
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A public model name: the targets that serve it by default, and per workload class.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub default: crate::Choice,
    pub classes: std::collections::HashMap<String, crate::Choice>,
}

impl Route {
    /// The choice for a request of `class`: the class's own, else the route's default.
    pub fn choice(&self, class: Option<&str>) -> &crate::Choice {
        class
            .and_then(|c| self.classes.get(c))
            .unwrap_or(&self.default)
    }

    /// Every target of the route, default and per class.
    pub fn all_targets(&self) -> impl Iterator<Item = &std::sync::Arc<Target>> {
        self.default
            .candidates
            .iter()
            .chain(self.classes.values().flat_map(|c| c.candidates.iter()))
            .map(|c| &c.target)
    }
}

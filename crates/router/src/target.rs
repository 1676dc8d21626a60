use std::time::Duration;

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
    /// `provider/model`, the name used in the ledger, metrics and headers.
    pub id: String,
    pub provider: DynProvider,
    pub model: String,
    pub timeouts: TargetTimeouts,
    pub retry: RetryPolicy,
    pub breaker: CircuitBreaker,
    /// Self-hosted (data does not leave our machines): policy may require it.
    pub self_hosted: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A public model name and the targets that serve it, in order of preference.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub targets: Vec<std::sync::Arc<Target>>,
}

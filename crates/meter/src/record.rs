use std::{borrow::Cow, sync::Arc};

use switchyard_api::{openai::ChatRequest, TokenUsage};

/// What the gateway knows when a request finishes: facts only. The meter derives everything
/// else (token estimates, cost, energy, carbon) off the request path.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Request id (also sent to the client as `x-request-id`).
    pub id: String,
    /// Unix epoch milliseconds.
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// `chat` or `embeddings` (the OpenTelemetry `gen_ai.operation.name`).
    pub operation: &'static str,
    /// The public model name the client asked for. This and the names below that come from the
    /// config are shared (`Arc<str>`): a reference count, not an allocation per request.
    pub route: Arc<str>,
    /// Workload class, when one was assigned.
    pub class: Option<String>,
    /// Virtual key name, its team, and the caller's task label (`x-switchyard-task`).
    pub key: Option<String>,
    pub team: Option<String>,
    pub task: Option<String>,
    /// Provider instance name that served the request (or was tried last), its kind
    /// (`gen_ai.provider.name`), the target id, and the model the target was asked for.
    pub provider: Option<Arc<str>>,
    pub provider_kind: Option<&'static str>,
    pub target: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    /// The model the provider said answered.
    pub response_model: Option<String>,
    pub stream: bool,
    /// HTTP status sent to the client (for a stream that failed after its start: 200 with an
    /// `error_type`).
    pub status: u16,
    pub error_type: Option<String>,
    /// Usage as the provider reported it; `None` when it reported none.
    pub usage: Option<TokenUsage>,
    /// The request, for a token estimate when `usage` is `None`.
    pub request: Option<Arc<ChatRequest>>,
    /// Text to count for embeddings when usage is missing.
    pub input_text: Option<String>,
    /// The answer's text, for a token estimate when `usage` is `None`.
    pub output_text: Option<String>,
    /// Time to first content byte sent to the client, ms (streams).
    pub ttft_ms: Option<f64>,
    /// Whole request, from accept to last byte, ms.
    pub latency_ms: f64,
    /// Time spent waiting on the provider in the attempt that served, ms.
    pub upstream_latency_ms: Option<f64>,
    /// Time the gateway itself added, microseconds.
    pub overhead_us: Option<f64>,
    /// Attempts made (1 = first try served), and how many of them moved to another target.
    pub attempts: u32,
    pub fallbacks: u32,
    /// Energy reported by the provider itself (the local engine measures its own).
    pub provider_energy_wh: Option<f64>,
    pub provider_energy_method: Option<&'static str>,
}

impl Outcome {
    /// Drops the request and the texts when the provider reported usage: only a token estimate
    /// needs them. Called on the request's own thread before the outcome is queued, so they are
    /// freed where they were allocated; freed on the ledger thread, each allocation cost
    /// jemalloc a flush to another thread's arena (about half of that thread's CPU in the
    /// benchmark's profile).
    pub fn shed_estimate_inputs(&mut self) {
        if self.usage.is_some() {
            self.request = None;
            self.input_text = None;
            self.output_text = None;
        }
    }
}

/// One row of the ledger.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LedgerRecord {
    pub id: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub operation: String,
    /// The names that come from the config are the gateway's shared ones (see [`Outcome`]), so
    /// the writer does not copy them per row.
    pub route: Arc<str>,
    pub class: Option<String>,
    pub key: Option<String>,
    pub team: Option<String>,
    pub task: Option<String>,
    pub provider: Option<Arc<str>>,
    pub provider_kind: Option<Cow<'static, str>>,
    pub target: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub response_model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub error_type: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// Token counts came from our tokenizer, not the provider.
    pub tokens_estimated: bool,
    /// USD; `None` when the model has no price (never recorded as 0).
    pub cost_usd: Option<f64>,
    /// The price entry used: `catalog:<provider>/<model>@<date>` or `config:<target>`.
    pub price_source: Option<String>,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    pub upstream_latency_ms: Option<f64>,
    pub overhead_us: Option<f64>,
    pub attempts: u32,
    pub fallbacks: u32,
    pub energy_wh: Option<f64>,
    /// `measured-rapl`, `estimated-cpu-time`, `estimated-j-per-token`, `estimated-power-time`, `unknown`.
    pub energy_method: String,
    pub carbon_g: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_inputs_are_shed_only_when_usage_was_reported() {
        let with_texts = |usage| Outcome {
            usage,
            request: Some(Arc::new(ChatRequest::default())),
            input_text: Some("in".into()),
            output_text: Some("out".into()),
            ..Default::default()
        };
        let mut reported = with_texts(Some(TokenUsage::default()));
        reported.shed_estimate_inputs();
        assert!(reported.request.is_none());
        assert!(reported.input_text.is_none() && reported.output_text.is_none());
        // Without usage the ledger estimates tokens from them: kept.
        let mut missing = with_texts(None);
        missing.shed_estimate_inputs();
        assert!(missing.request.is_some());
        assert_eq!(missing.output_text.as_deref(), Some("out"));
        assert_eq!(missing.input_text.as_deref(), Some("in"));
    }
}

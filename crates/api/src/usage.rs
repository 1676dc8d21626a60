//! Provider-neutral token counts.

use serde::{Deserialize, Serialize};

/// Token counts for one request, normalised across providers.
///
/// `input_tokens` is the whole prompt, including tokens read from or written to a prompt cache
/// (OpenAI's `prompt_tokens` already is; Anthropic's `input_tokens` is not, so its adapter adds
/// `cache_read_input_tokens` and `cache_creation_input_tokens`). `output_tokens` includes
/// reasoning tokens, as OpenAI's `completion_tokens` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's cache (billed at the cached-input price).
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic bills these above the input price).
    pub cache_creation_input_tokens: u64,
    /// Output tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
}

impl TokenUsage {
    /// Prompt tokens billed at the plain input price.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_creation_input_tokens)
    }
}

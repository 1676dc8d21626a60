//! Hardware profiles: how fast one replica prefills and decodes, and how much KV cache it has.

use serde::{Deserialize, Serialize};

/// One replica's performance model (serde/TOML).
///
/// Step time of one engine iteration (continuous batching with chunked prefill, as vLLM's V1
/// scheduler runs it):
/// `max(decode_step_base_ms, prefill_tokens / prefill_tokens_per_s + loaded_tokens /
/// host_load_tokens_per_s) + decode_seqs ×
/// decode_step_per_seq_ms + context_tokens × decode_ns_per_context_token`, where `context_tokens` sums the KV length of every decoding sequence (decode is bound by
/// reading weights once per step plus each sequence's KV cache).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Prompt tokens computed per second when prefilling (compute-bound).
    pub prefill_tokens_per_s: f64,
    /// Time of a decode step at batch 1 (reading the weights once).
    pub decode_step_base_ms: f64,
    /// Extra step time per sequence in the batch (its share of compute).
    pub decode_step_per_seq_ms: f64,
    /// Extra step time per token of KV cache read by decoding sequences.
    pub decode_ns_per_context_token: f64,
    /// Sequences running at once (vLLM's `max_num_seqs`).
    pub max_batch: usize,
    /// Tokens per step, decode and prefill chunks together (vLLM's `max_num_batched_tokens`).
    pub max_batched_tokens: u32,
    /// KV cache capacity in tokens.
    pub kv_capacity_tokens: u64,
    /// Tokens per cache block; prefix-cache hits count whole blocks.
    pub block_tokens: u32,
    /// Requests allowed in the engine beyond `max_batch` (waiting for a slot); more are refused
    /// with 429. `None`: no limit.
    #[serde(default)]
    pub max_waiting: Option<usize>,
    /// KV tokens kept in host memory after eviction from the GPU (0: no second tier).
    #[serde(default)]
    pub host_cache_tokens: u64,
    /// Tokens per second copied back from the host tier (PCIe bandwidth / KV bytes per token).
    #[serde(default)]
    pub host_load_tokens_per_s: f64,
    /// Where the figures come from.
    #[serde(default)]
    pub source: String,
}

/// Names of the built-in profiles.
pub const PRESETS: &[&str] = &["h100-llama3-8b", "h100-llama3-8b-offload", "l4-llama3-8b"];

const DERIVATION: &str = "illustrative, derived from datasheet peaks, not measured: \
prefill = 2 × 8.0e9 FLOP/token at 40% of dense BF16 peak; decode base = 16 GB of BF16 weights \
read at 75% of HBM bandwidth; per context token = 131,072 B of KV (32 layers × 8 KV heads × \
128 dims × K,V × 2 B) at 75% of bandwidth; KV capacity = 90% of memory − weights − 4 GB \
(H100) / 1 GB (L4) headroom, divided by 131,072 B; max_batch and max_batched_tokens are vLLM \
defaults; 512-token blocks match the Mooncake trace";

impl Profile {
    /// A built-in profile by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Option<Profile> {
        match name {
            // H100 SXM: 989 TFLOP/s dense BF16, 3.35 TB/s, 80 GB (NVIDIA H100 datasheet).
            "h100-llama3-8b" => Some(Profile {
                name: name.into(),
                prefill_tokens_per_s: 24_700.0,
                decode_step_base_ms: 6.4,
                decode_step_per_seq_ms: 0.04,
                decode_ns_per_context_token: 52.0,
                max_batch: 256,
                max_batched_tokens: 8192,
                kv_capacity_tokens: 396_000,
                block_tokens: 512,
                max_waiting: None,
                host_cache_tokens: 0,
                host_load_tokens_per_s: 0.0,
                source: format!("H100 SXM datasheet (989 TFLOP/s, 3.35 TB/s, 80 GB); {DERIVATION}"),
            }),
            // The same replica with a second KV tier in host memory, as vLLM's CPU offloading,
            // LMCache or Mooncake's store add: 256 GB per GPU (a DGX H100 has 2 TB for 8 GPUs)
            // = 1.95 M tokens, copied back over PCIe Gen5 x16 at ~50 GB/s = 380 k tokens/s.
            "h100-llama3-8b-offload" => Profile::preset("h100-llama3-8b").map(|p| Profile {
                name: name.into(),
                host_cache_tokens: 1_950_000,
                host_load_tokens_per_s: 380_000.0,
                source: format!(
                    "{}; host tier: 256 GB per GPU (DGX H100: 2 TB / 8 GPUs) / 131,072 B per token, \
                     loaded at 50 GB/s (PCIe Gen5 x16, illustrative)",
                    p.source
                ),
                ..p
            }),
            // L4: 121 TFLOP/s dense BF16, 300 GB/s, 24 GB (NVIDIA L4 datasheet).
            "l4-llama3-8b" => Some(Profile {
                name: name.into(),
                prefill_tokens_per_s: 3_000.0,
                decode_step_base_ms: 71.0,
                decode_step_per_seq_ms: 0.33,
                decode_ns_per_context_token: 583.0,
                max_batch: 256,
                max_batched_tokens: 2048,
                kv_capacity_tokens: 35_000,
                block_tokens: 512,
                max_waiting: None,
                host_cache_tokens: 0,
                host_load_tokens_per_s: 0.0,
                source: format!("L4 datasheet (121 TFLOP/s, 300 GB/s, 24 GB); {DERIVATION}"),
            }),
            _ => None,
        }
    }

    /// A preset name, or the path of a TOML file holding a profile.
    pub fn load(spec: &str) -> anyhow::Result<Profile> {
        if let Some(p) = Profile::preset(spec) {
            return Ok(p);
        }
        let text = std::fs::read_to_string(spec).map_err(|e| {
            anyhow::anyhow!(
                "profile {spec:?} is neither a preset ({}) nor a readable file: {e}",
                PRESETS.join(", ")
            )
        })?;
        let p: Profile = toml::from_str(&text)?;
        p.validate().map_err(|e| anyhow::anyhow!("{spec}: {e}"))?;
        Ok(p)
    }

    /// Checks the figures without I/O; the error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("prefill_tokens_per_s", self.prefill_tokens_per_s),
            ("decode_step_base_ms", self.decode_step_base_ms),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{key}: {v} must be a finite number above 0"));
            }
        }
        let non_negative = [
            ("decode_step_per_seq_ms", self.decode_step_per_seq_ms),
            (
                "decode_ns_per_context_token",
                self.decode_ns_per_context_token,
            ),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{key}: {v} must be a finite number ≥ 0"));
            }
        }
        if self.max_batch == 0 {
            return Err("max_batch must be above 0".into());
        }
        if self.max_batched_tokens == 0 {
            return Err("max_batched_tokens must be above 0".into());
        }
        if self.block_tokens == 0 {
            return Err("block_tokens must be above 0".into());
        }
        if self.host_cache_tokens > 0
            && !(self.host_load_tokens_per_s.is_finite() && self.host_load_tokens_per_s > 0.0)
        {
            return Err(format!(
                "host_load_tokens_per_s: {} must be above 0 when host_cache_tokens is set",
                self.host_load_tokens_per_s
            ));
        }
        if self.kv_capacity_tokens < u64::from(self.block_tokens) {
            return Err("kv_capacity_tokens must hold at least one block".into());
        }
        Ok(())
    }

    /// Seconds one engine step takes.
    pub fn step_seconds(
        &self,
        prefill_tokens: u64,
        loaded_tokens: u64,
        decode_seqs: usize,
        context_tokens: u64,
    ) -> f64 {
        let mut prefill = prefill_tokens as f64 / self.prefill_tokens_per_s;
        if loaded_tokens > 0 {
            prefill += loaded_tokens as f64 / self.host_load_tokens_per_s;
        }
        let base = self.decode_step_base_ms / 1e3;
        base.max(prefill)
            + decode_seqs as f64 * self.decode_step_per_seq_ms / 1e3
            + context_tokens as f64 * self.decode_ns_per_context_token / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_toml() {
        for name in PRESETS {
            let p = Profile::preset(name).unwrap();
            p.validate().unwrap();
            let text = toml::to_string(&p).unwrap();
            assert_eq!(toml::from_str::<Profile>(&text).unwrap(), p);
        }
        assert!(Profile::preset("nope").is_none());
        let err = Profile::load("no-such-profile").unwrap_err().to_string();
        assert!(err.contains("h100-llama3-8b"), "{err}");
    }

    #[test]
    fn validate_names_the_key() {
        let mut p = Profile::preset("l4-llama3-8b").unwrap();
        p.prefill_tokens_per_s = 0.0;
        assert!(p
            .validate()
            .unwrap_err()
            .starts_with("prefill_tokens_per_s"));
    }
}

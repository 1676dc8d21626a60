use std::path::PathBuf;

use serde::Deserialize;

/// `[providers.NAME]` with `kind = "local"`.
///
/// ```toml
/// [providers.local]
/// kind = "local"
/// model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
/// max_concurrency = 2
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// A GGUF file on disk. Either this or `hf_repo` + `hf_file`.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// A Hugging Face repository (`owner/name`) to download `hf_file` from at build time,
    /// for machines with network access; cached under `$SWITCHYARD_MODEL_DIR` or
    /// `~/.cache/switchyard/models`.
    #[serde(default)]
    pub hf_repo: Option<String>,
    #[serde(default)]
    pub hf_file: Option<String>,
    /// Kernel threads. Default: all cores. Candle's kernel pool is process-wide, so the first
    /// local engine built in a process fixes it.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Requests decoding at once, each with its own KV cache; the rest wait in FIFO order.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Context window in tokens (prompt + completion). Default: the GGUF's
    /// `llama.context_length`, capped at what the engine supports.
    #[serde(default)]
    pub context_length: Option<usize>,
    /// Watts drawn per busy core, for the energy estimate when RAPL counters cannot be read.
    /// The default, 15 W, is an assumption (a server CPU's TDP divided by its cores, e.g.
    /// 120 W / 8 cores); set it from your own hardware.
    #[serde(default = "default_cpu_watts")]
    pub cpu_watts: f64,
    /// What to do with weights the file stores in a format candle has no SIMD kernel for
    /// (Q4_1, Q5_0, Q5_1): re-encode them at load (default `q8_0`), or keep them (`as_file`).
    #[serde(default)]
    pub weight_format: WeightFormat,
}

/// The format the engine runs a weight in when the file's own format (Q4_1, Q5_0, Q5_1) has
/// only a scalar dot product in candle 0.11. Other formats are kept as they are.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum WeightFormat {
    /// 8-bit blocks: near-lossless from 4- or 5-bit (a step ~1/17 of Q4_1's), AVX2 and
    /// AVX-512-VNNI kernels, twice the memory of 4-bit.
    #[default]
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks without an offset: the file's memory size, AVX2 kernel, but a second
    /// rounding of every weight.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// Keep the file's format (scalar kernels for Q4_1/Q5_x: several times slower).
    #[serde(rename = "as_file")]
    AsFile,
}

fn default_concurrency() -> usize {
    2
}

fn default_cpu_watts() -> f64 {
    15.0
}

impl LocalConfig {
    /// A config that loads the given GGUF file, with every other setting at its default.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        LocalConfig {
            model_path: Some(path.into()),
            hf_repo: None,
            hf_file: None,
            threads: None,
            max_concurrency: default_concurrency(),
            context_length: None,
            cpu_watts: default_cpu_watts(),
            weight_format: WeightFormat::default(),
        }
    }

    /// Checks the config without I/O; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.model_path, &self.hf_repo, &self.hf_file) {
            (Some(p), None, None) => {
                if p.as_os_str().is_empty() {
                    return Err("model_path must not be empty".into());
                }
            }
            (None, Some(repo), Some(file)) => {
                let parts: Vec<&str> = repo.split('/').collect();
                if parts.len() != 2 || parts.iter().any(|p| p.is_empty() || p.starts_with('.')) {
                    return Err(format!("hf_repo '{repo}' must look like 'owner/name'"));
                }
                if file.is_empty() || file.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "hf_file '{file}' must be a file path inside the repository"
                    ));
                }
            }
            (Some(_), _, _) => {
                return Err("set either model_path or hf_repo + hf_file, not both".into())
            }
            (None, Some(_), None) => return Err("hf_repo needs hf_file".into()),
            (None, None, Some(_)) => return Err("hf_file needs hf_repo".into()),
            (None, None, None) => {
                return Err("model_path (or hf_repo + hf_file) is required".into())
            }
        }
        if self.threads == Some(0) {
            return Err("threads must be at least 1".into());
        }
        if self.max_concurrency == 0 {
            return Err("max_concurrency must be at least 1".into());
        }
        if self.context_length.is_some_and(|c| c < 16) {
            return Err("context_length must be at least 16".into());
        }
        if !(self.cpu_watts.is_finite() && self.cpu_watts >= 0.0) {
            return Err("cpu_watts must be a non-negative number".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        let ok: LocalConfig = toml_like(r#"{"model_path":"m.gguf"}"#);
        assert!(ok.validate().is_ok());
        assert_eq!(ok.max_concurrency, 2);
        let both: LocalConfig =
            toml_like(r#"{"model_path":"m.gguf","hf_repo":"a/b","hf_file":"f"}"#);
        assert!(both.validate().unwrap_err().contains("not both"));
        let repo: LocalConfig = toml_like(r#"{"hf_repo":"nope","hf_file":"f.gguf"}"#);
        assert!(repo.validate().unwrap_err().contains("hf_repo"));
        let conc: LocalConfig = toml_like(r#"{"model_path":"m","max_concurrency":0}"#);
        assert!(conc.validate().unwrap_err().contains("max_concurrency"));
        let watts: LocalConfig = toml_like(r#"{"model_path":"m","cpu_watts":-1}"#);
        assert!(watts.validate().unwrap_err().contains("cpu_watts"));
        assert!(serde_json::from_str::<LocalConfig>(r#"{"model_path":"m","modle":1}"#).is_err());
        assert_eq!(ok.weight_format, WeightFormat::Q8_0);
        let q4: LocalConfig = toml_like(r#"{"model_path":"m","weight_format":"q4_0"}"#);
        assert_eq!(q4.weight_format, WeightFormat::Q4_0);
        let keep: LocalConfig = toml_like(r#"{"model_path":"m","weight_format":"as_file"}"#);
        assert_eq!(keep.weight_format, WeightFormat::AsFile);
        assert!(serde_json::from_str::<LocalConfig>(
            r#"{"model_path":"m","weight_format":"q4_1"}"#
        )
        .is_err());
    }

    fn toml_like(json: &str) -> LocalConfig {
        serde_json::from_str(json).unwrap()
    }
}

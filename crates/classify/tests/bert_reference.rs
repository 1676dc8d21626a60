//! This crate's BERT forward against candle-transformers' `BertModel` (the implementation the
//! embedder used before) on the same weights: the F32 forward must give the same sentence
//! embedding up to float rounding, and the quantized formats must stay close to it.
// Test helpers outside #[test] fns: a failed unwrap should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use switchyard_classify::{default_model_dir, dot, Embedder, Weights};
use tokenizers::Tokenizer;

const PROMPTS: [&str; 5] = [
    "How do I sort a list in Python?",
    "Summarize the following article in three bullet points.",
    "Is the sentiment of this review positive, negative or neutral? The food was cold, but the staff were lovely and we will come back.",
    "x",
    "Extract the invoice number, date and total amount from the following text: Invoice #4471, issued 2024-03-02 to ACME GmbH, Hauptstrasse 5, Berlin, for 12 widgets at 4.50 EUR each, total 54.00 EUR, due within 30 days of receipt, late payments incur 2% monthly interest.",
];

/// Budget that cuts the last prompt (it has more word pieces than this).
const MAX_TOKENS: usize = 48;

/// Sentence embeddings as sentence-transformers computes them, via candle's `BertModel`.
fn candle_reference() -> &'static Vec<Vec<f32>> {
    static R: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    R.get_or_init(|| {
        let dir = default_model_dir();
        let config: Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let dev = Device::Cpu;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &dev).unwrap();
        let model =
            BertModel::load(VarBuilder::from_tensors(weights, DType::F32, &dev), &config).unwrap();
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .unwrap();
        PROMPTS
            .iter()
            .map(|p| {
                let enc = tokenizer.encode(*p, true).unwrap();
                let ids = Tensor::new(enc.get_ids(), &dev)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let types = ids.zeros_like().unwrap();
                let hidden = model.forward(&ids, &types, None).unwrap(); // (1, len, 384)
                let mean = hidden.mean(1).unwrap().squeeze(0).unwrap();
                let norm = mean.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
                mean.broadcast_div(&norm).unwrap().to_vec1::<f32>().unwrap()
            })
            .collect()
    })
}

fn ours(weights: Weights) -> Vec<Vec<f32>> {
    let e = Embedder::load_with(&default_model_dir(), MAX_TOKENS, weights)
        .unwrap_or_else(|e| panic!("MiniLM is required for this test: {e}"));
    assert!(e.token_count(PROMPTS[4]).unwrap() == MAX_TOKENS);
    e.embed_batch(&PROMPTS).unwrap()
}

#[test]
fn f32_forward_matches_candle_bert() {
    for (i, (a, b)) in ours(Weights::F32)
        .iter()
        .zip(candle_reference())
        .enumerate()
    {
        let max_diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "f32 prompt {i}: max |diff| {max_diff:e}, cosine {}",
            dot(a, b)
        );
        // Unit vectors of 384 values around ±0.05; this forward and candle's differ by ~2e-7
        // (summation order). 1e-5 leaves room for other CPUs' kernels and is still far below
        // what a wrong step gives (GELU's tanh form instead of erf: ~1e-4 and more).
        assert!(
            max_diff < 1e-5,
            "prompt {i}: max |diff| {max_diff}, cosine {}",
            dot(a, b)
        );
    }
}

#[test]
fn quantized_forwards_stay_close_to_candle_bert() {
    for weights in [Weights::Q8_0, Weights::Q8_0Vnni, Weights::I8, Weights::I8W7] {
        for (i, (a, b)) in ours(weights).iter().zip(candle_reference()).enumerate() {
            let cos = dot(a, b);
            eprintln!("{weights} prompt {i}: cosine {cos}");
            assert!(cos > 0.99, "{weights} prompt {i}: cosine {cos}");
        }
    }
}

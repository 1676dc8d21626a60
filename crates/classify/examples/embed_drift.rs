//! How far quantized layer weights move the embeddings: cosine between each format's embedding
//! and the F32 one, over the prompts in `tests/data/*.toml` (class examples and held-out
//! prompts) and concatenations of them, at a few token budgets:
//! `cargo run --release -p switchyard-classify --example embed_drift`.
use std::path::Path;

use switchyard_classify::{default_model_dir, dot, Embedder, Weights};

fn main() -> Result<(), String> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let read = |name: &str| -> Result<toml::Value, String> {
        let text = std::fs::read_to_string(data.join(name)).map_err(|e| e.to_string())?;
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    let mut texts: Vec<String> = Vec::new();
    // The class examples of classes.toml, then the held-out prompts of heldout.toml.
    let classes = read("classes.toml")?;
    let examples = classes
        .get("semantic")
        .and_then(|s| s.get("examples"))
        .and_then(|e| e.as_table())
        .ok_or("classes.toml: no [semantic.examples]")?;
    for list in examples.values() {
        let list = list.as_array().ok_or("classes.toml: examples not lists")?;
        texts.extend(list.iter().filter_map(|t| t.as_str()).map(String::from));
    }
    let heldout = read("heldout.toml")?;
    let cases = heldout
        .get("case")
        .and_then(|c| c.as_array())
        .ok_or("heldout.toml: no [[case]]")?;
    texts.extend(
        cases
            .iter()
            .filter_map(|c| c.get("prompt").and_then(|p| p.as_str()))
            .map(String::from),
    );
    // Long inputs as well, so the cut at the token budget is exercised.
    let long: Vec<String> = texts.chunks(8).map(|c| c.join(" ")).collect();
    let long_count = long.len();
    texts.extend(long);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    println!(
        "{} texts ({} prompts, {} concatenations of 8)",
        refs.len(),
        refs.len() - long_count,
        long_count
    );
    for max_tokens in [16, 32, 64, 128] {
        let reference = Embedder::load_with(&default_model_dir(), max_tokens, Weights::F32)?
            .embed_batch(&refs)?;
        for weights in [Weights::Q8_0, Weights::Q8_0Vnni, Weights::I8, Weights::I8W7] {
            let e = Embedder::load_with(&default_model_dir(), max_tokens, weights)?;
            let cos: Vec<f32> = e
                .embed_batch(&refs)?
                .iter()
                .zip(&reference)
                .map(|(a, b)| dot(a, b))
                .collect();
            let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
            let mean = cos.iter().sum::<f32>() / cos.len() as f32;
            println!(
                "max_tokens {max_tokens:<4} {weights:<10} cosine to f32: min {min:.5} mean {mean:.5}"
            );
        }
    }
    Ok(())
}

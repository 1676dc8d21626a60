//! The MiniLM semantic step. Needs `all-MiniLM-L6-v2/` under `$SWITCHYARD_MODEL_DIR` or
//! `<repo>/models/` (`scripts/fetch-models.sh models minilm`); fails, loudly, without it.
// Test helpers outside #[test] fns: a failed unwrap should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use switchyard_api::openai::{ChatRequest, Message};
use switchyard_classify::{
    default_model_dir, dot, ClassesConfig, ClassifiedBy, Classifier, Embedder, Vote, Weights,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn embedder() -> Arc<Embedder> {
    static E: OnceLock<Arc<Embedder>> = OnceLock::new();
    E.get_or_init(|| {
        let dir = default_model_dir();
        match Embedder::load(&dir, 128) {
            Ok(e) => Arc::new(e),
            Err(e) => panic!("MiniLM is required for this test: {e}"),
        }
    })
    .clone()
}

fn classes() -> ClassesConfig {
    toml::from_str(&std::fs::read_to_string(data("classes.toml")).unwrap()).unwrap()
}

#[derive(Deserialize)]
struct Heldout {
    case: Vec<Case>,
}
#[derive(Deserialize)]
struct Case {
    class: String,
    prompt: String,
}

fn heldout() -> Vec<Case> {
    toml::from_str::<Heldout>(&std::fs::read_to_string(data("heldout.toml")).unwrap())
        .unwrap()
        .case
}

fn user(text: &str) -> ChatRequest {
    ChatRequest {
        model: "default".into(),
        messages: vec![
            Message::text("system", "You are a helpful assistant."),
            Message::text("user", text),
        ],
        ..Default::default()
    }
}

#[test]
fn embeddings_are_unit_length_and_meaningful() {
    let e = embedder();
    let a = e.embed("How do I sort a list in Python?").unwrap();
    let b = e.embed("What is the way to order a Python list?").unwrap();
    let c = e.embed("The Eiffel Tower is in Paris.").unwrap();
    assert_eq!(a.len(), 384);
    assert!((dot(&a, &a) - 1.0).abs() < 1e-4);
    assert!(
        dot(&a, &b) > dot(&a, &c) + 0.3,
        "{} vs {}",
        dot(&a, &b),
        dot(&a, &c)
    );
    // A text's embedding does not depend on the others in its batch.
    let batch = e
        .embed_batch(&["How do I sort a list in Python?", "short"])
        .unwrap();
    assert!(dot(&batch[0], &a) > 0.9999, "{}", dot(&batch[0], &a));
}

#[test]
fn long_prompts_are_cut_to_the_token_budget() {
    let e = embedder();
    let long = "word ".repeat(2000);
    assert_eq!(e.token_count(&long).unwrap(), 128);
    assert_eq!(e.embed(&long).unwrap().len(), 384);
}

fn accuracy(vote: Vote) -> (usize, usize, Vec<String>) {
    let mut cfg = classes();
    cfg.rules.clear();
    if let Some(s) = cfg.semantic.as_mut() {
        s.vote = vote;
    }
    let c = Classifier::build_with(&cfg, Some(embedder())).unwrap();
    let cases = heldout();
    let mut misses = Vec::new();
    for case in &cases {
        let got = c.classify(&user(&case.prompt), None, None).unwrap();
        if got.class.as_deref() != Some(case.class.as_str()) {
            misses.push(format!(
                "{:?} -> {:?} ({:?})",
                case.prompt, got.class, got.by
            ));
        }
    }
    (cases.len() - misses.len(), cases.len(), misses)
}

#[test]
fn knn_gets_most_held_out_prompts_right() {
    let (right, total, misses) = accuracy(Vote::Knn);
    eprintln!("k-NN: {right}/{total} right; misses: {misses:#?}");
    assert!(right * 4 >= total * 3, "only {right}/{total}: {misses:#?}");
}

#[test]
fn centroid_gets_most_held_out_prompts_right() {
    let (right, total, misses) = accuracy(Vote::Centroid);
    eprintln!("centroid: {right}/{total} right; misses: {misses:#?}");
    assert!(right * 4 >= total * 3, "only {right}/{total}: {misses:#?}");
}

#[test]
fn below_min_similarity_falls_back_to_the_default() {
    let mut cfg = classes();
    cfg.rules.clear();
    if let Some(s) = cfg.semantic.as_mut() {
        s.min_similarity = 0.99;
    }
    let c = Classifier::build_with(&cfg, Some(embedder())).unwrap();
    let out = c
        .classify(
            &user("Write a Python function that reverses a string."),
            None,
            None,
        )
        .unwrap();
    assert_eq!(
        (out.class.as_deref(), out.by),
        (Some("chat"), ClassifiedBy::Default)
    );
}

#[tokio::test]
async fn rules_come_before_semantic_and_header_before_both() {
    let c = Arc::new(Classifier::build_with(&classes(), Some(embedder())).unwrap());
    // Reads like summarization, but the JSON output rule decides first.
    let mut r = user("Summarize this article in three bullet points.");
    r.response_format = Some(serde_json::json!({"type": "json_object"}));
    let out = c.classify_async(&r, None, None).await.unwrap();
    assert_eq!(out.class.as_deref(), Some("extraction"));
    assert_eq!(
        out.by,
        ClassifiedBy::Rule {
            name: "json-out".into()
        }
    );
    r.response_format = None;
    let out = c.classify_async(&r, None, None).await.unwrap();
    assert_eq!(out.class.as_deref(), Some("summarization"));
    assert!(matches!(out.by, ClassifiedBy::Semantic { score } if score > 0.25));
    let out = c.classify_async(&r, Some("coding"), None).await.unwrap();
    assert_eq!(out.by, ClassifiedBy::Header);
}

#[test]
fn build_without_the_model_names_the_folder() {
    let mut cfg = classes();
    if let Some(s) = cfg.semantic.as_mut() {
        s.model_dir = Some(PathBuf::from("/nonexistent/minilm"));
    }
    let e = Classifier::build(&cfg).unwrap_err();
    assert!(
        e.contains("/nonexistent/minilm") && e.contains("classes.semantic"),
        "{e}"
    );
}

#[test]
fn a_repeated_prompt_is_served_from_the_embedding_cache() {
    let c = Classifier::build_with(&classes(), Some(embedder())).unwrap();
    let r = user("Write a haiku about autumn leaves falling on a quiet pond.");
    let first = c.classify(&r, None, None).unwrap();
    let after_first = c.embedding_cache_stats().unwrap();
    let second = c.classify(&r, None, None).unwrap();
    let after_second = c.embedding_cache_stats().unwrap();
    assert_eq!(first, second);
    assert_eq!((after_first.hits, after_first.misses), (0, 1));
    assert_eq!((after_second.hits, after_second.misses), (1, 1));
    // Another prompt is a miss, and a rule hit never reaches the cache.
    c.classify(&user("Translate 'good morning' into French."), None, None)
        .unwrap();
    let mut json = user("Give me the fields.");
    json.response_format = Some(serde_json::json!({"type": "json_object"}));
    c.classify(&json, None, None).unwrap();
    let end = c.embedding_cache_stats().unwrap();
    assert_eq!((end.hits, end.misses, end.entries), (1, 2, 2));
}

#[test]
fn cache_off_embeds_every_time() {
    let mut cfg = classes();
    if let Some(s) = cfg.semantic.as_mut() {
        s.cache_entries = 0;
    }
    let c = Classifier::build_with(&cfg, Some(embedder())).unwrap();
    let r = user("Write a haiku about autumn leaves.");
    c.classify(&r, None, None).unwrap();
    c.classify(&r, None, None).unwrap();
    let s = c.embedding_cache_stats().unwrap();
    assert_eq!((s.hits, s.misses, s.entries), (0, 2, 0));
}

#[test]
fn the_configured_weights_format_is_loaded_and_a_wrong_one_named() {
    let build = |weights: &str| {
        let mut cfg = classes();
        let s = cfg
            .semantic
            .as_mut()
            .expect("classes.toml has a semantic section");
        s.model_dir = Some(default_model_dir());
        s.weights = Some(weights.into());
        Classifier::build(&cfg)
    };
    let e = build("i8-w8").unwrap_err();
    assert!(
        e.contains("classes.semantic.weights") && e.contains("i8-w8"),
        "{e}"
    );
    for (name, weights) in [("i8", Weights::I8), ("i8-w7", Weights::I8W7)] {
        let c = build(name).unwrap_or_else(|e| panic!("MiniLM is required: {e}"));
        let e = c.embedder().expect("a semantic step");
        assert_eq!(e.weights(), weights);
    }
}

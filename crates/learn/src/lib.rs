//! Learned strong/weak model choice from an outcome table (prompt × model → correct), after
//! RouteLLM (Ong et al., ICLR 2025): a router scores each request with P(strong needed) and
//! sends it to the strong model when the score ≥ a threshold, set for a target share of strong
//! calls (or a cost ceiling, via [`share_for_cost_ceiling`]).
//!
//! - [`train`] / [`evaluate`]: what `switchyard router train|evaluate` call.
//! - [`LearnedRouter`]: the saved model (a small JSON file); [`LearnedRouter::p_strong`] per request.
//! - [`metrics`]: PGR, APGR, CPT(50%), CPT(80%) and cost/quality points, as RouteLLM defines them.
//! - [`cross_validate`]: train on some subjects, score the held-out ones.

pub mod cache;
pub mod data;
pub mod features;
pub mod metrics;
pub mod model;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_classify::{Embedder, DEFAULT_MAX_TOKENS, MINILM_DIR_NAME};

pub use cache::EmbeddingCache;
pub use data::{load_outcomes, Outcome};
pub use metrics::{evaluate_scores, Metrics};
pub use model::{fit_logistic, Logistic};

/// Identifies the file format of a saved router.
pub const ROUTER_FORMAT: &str = "switchyard-learned-router/1";

/// A saved learned router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedRouter {
    pub format: String,
    /// The embedding the weights expect.
    pub embedding_model: String,
    /// Word pieces embedded per prompt (must match at run time).
    pub max_tokens: usize,
    /// What the score predicts.
    pub label: Label,
    pub model: Logistic,
    /// For [`Label::Gain`]: P(weak model right), subtracted from `model`'s P(strong model right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minus: Option<Logistic>,
    /// Route strong when `p_strong ≥ threshold`.
    pub threshold: f32,
    /// The share of strong calls the threshold was set for (on the training prompts).
    pub target_strong_share: f64,
    /// Training-set score quantiles 0%, 1%, ..., 100%, to re-aim the threshold without retraining.
    pub score_quantiles: Vec<f32>,
    pub trained_on_subjects: Vec<String>,
    pub trained_on_rows: usize,
}

impl LearnedRouter {
    pub fn load(path: &Path) -> Result<LearnedRouter, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let r: LearnedRouter =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if r.format != ROUTER_FORMAT {
            return Err(format!(
                "{}: format \"{}\", expected \"{ROUTER_FORMAT}\"",
                path.display(),
                r.format
            ));
        }
        if r.model.weights.len() != switchyard_classify::MINILM_DIMS {
            return Err(format!(
                "{}: {} weights, expected {}",
                path.display(),
                r.model.weights.len(),
                switchyard_classify::MINILM_DIMS
            ));
        }
        Ok(r)
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// P(strong needed) for a prompt's unit MiniLM embedding (see [`Embedder::embed`]).
    pub fn p_strong(&self, embedding: &[f32]) -> f32 {
        let p = self.model.predict(embedding);
        match &self.minus {
            Some(m) => p - m.predict(embedding),
            None => p,
        }
    }

    /// Embeds `text` (CPU work: call off async workers) and scores it.
    pub fn p_strong_text(&self, embedder: &Embedder, text: &str) -> Result<f32, String> {
        Ok(self.p_strong(&embedder.embed(text)?))
    }

    /// Whether the request should go to the strong model.
    pub fn route_strong(&self, p_strong: f32) -> bool {
        p_strong >= self.threshold
    }

    /// The threshold that sent `share` (0..1) of the training prompts to the strong model.
    pub fn threshold_for_share(&self, share: f64) -> f32 {
        threshold_from_quantiles(&self.score_quantiles, share)
    }

    /// Re-aims the router at another share of strong calls.
    pub fn set_strong_share(&mut self, share: f64) {
        self.threshold = self.threshold_for_share(share);
        self.target_strong_share = share.clamp(0.0, 1.0);
    }
}

fn threshold_from_quantiles(q: &[f32], share: f64) -> f32 {
    let share = share.clamp(0.0, 1.0);
    if share <= 0.0 {
        return f32::INFINITY;
    }
    if q.is_empty() {
        return 0.5;
    }
    // Quantile (1 - share) of the scores: that fraction lies below the threshold.
    let pos = (1.0 - share) * (q.len() - 1) as f64;
    let idx = (pos.floor() as usize).min(q.len() - 1);
    q[idx]
}

/// The share of strong calls whose mean cost per request is `ceiling` (relative to all-strong = 1),
/// when a weak call costs `weak_cost_ratio` of a strong one.
pub fn share_for_cost_ceiling(ceiling: f64, weak_cost_ratio: f64) -> f64 {
    if weak_cost_ratio >= 1.0 {
        return 1.0;
    }
    ((ceiling - weak_cost_ratio) / (1.0 - weak_cost_ratio)).clamp(0.0, 1.0)
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// What the router learns to predict.
    pub label: Label,
    /// Subjects left out of training (held out for evaluation).
    pub exclude_subjects: Vec<String>,
    /// The threshold is set so this share of training prompts go strong.
    pub strong_share: f64,
    /// L2 penalty on the weights.
    pub l2: f64,
    pub max_tokens: usize,
    /// The all-MiniLM-L6-v2 folder (default: see [`switchyard_classify::default_model_dir`]).
    pub model_dir: Option<PathBuf>,
    /// Where to keep prompt embeddings between runs (embedding ~10k prompts takes minutes).
    pub cache: Option<PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            label: Label::default(),
            exclude_subjects: Vec::new(),
            strong_share: 0.5,
            l2: 1.0,
            max_tokens: DEFAULT_MAX_TOKENS,
            model_dir: None,
            cache: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Only these subjects (empty: all).
    pub subjects: Vec<String>,
    pub weak_cost_ratio: f64,
    pub model_dir: Option<PathBuf>,
    pub cache: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            subjects: Vec::new(),
            weak_cost_ratio: metrics::DEFAULT_WEAK_COST_RATIO,
            model_dir: None,
            cache: None,
        }
    }
}

/// Loads the embedder and returns unit embeddings of all `prompts`, through the cache if given.
pub fn embed_prompts(
    prompts: &[&str],
    max_tokens: usize,
    model_dir: Option<&Path>,
    cache_path: Option<&Path>,
) -> Result<Vec<Vec<f32>>, String> {
    let weights = switchyard_classify::Weights::for_this_cpu();
    let format = weights.revision_tag();
    let mut cache = match cache_path {
        Some(p) => EmbeddingCache::load(p, max_tokens, format)?,
        None => EmbeddingCache::new(max_tokens, format),
    };
    let missing: Vec<&str> = prompts
        .iter()
        .copied()
        .filter(|p| cache.get(p).is_none())
        .collect();
    if !missing.is_empty() {
        let dir = model_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(switchyard_classify::default_model_dir);
        let embedder = Embedder::load_with(&dir, max_tokens, weights)?;
        // Batches of similar length waste little on padding.
        let mut order: Vec<&str> = missing;
        order.sort_by_key(|p| p.len());
        order.dedup();
        for (i, chunk) in order.chunks(16).enumerate() {
            let embs = embedder.embed_batch(chunk)?;
            for (p, e) in chunk.iter().zip(embs) {
                cache.insert(p, e);
            }
            if let Some(path) = cache_path {
                // Save now and then so an interrupted run keeps its work.
                if i % 64 == 63 {
                    cache.save(path)?;
                }
            }
        }
        if let Some(path) = cache_path {
            cache.save(path)?;
        }
    }
    prompts
        .iter()
        .map(|p| {
            cache
                .get(p)
                .cloned()
                .ok_or_else(|| "embedding missing from cache".to_string())
        })
        .collect()
}

/// What a router's score predicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// P(weak model wrong and strong model right): the requests only the strong model gets right.
    #[default]
    StrongNeeded,
    /// P(weak model wrong), whatever the strong model does.
    WeakWrong,
    /// P(strong right) − P(weak right), from two regressions: the expected gain of going strong.
    Gain,
}

impl std::str::FromStr for Label {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strong_needed" => Ok(Label::StrongNeeded),
            "weak_wrong" => Ok(Label::WeakWrong),
            "gain" => Ok(Label::Gain),
            _ => Err(format!(
                "label \"{s}\": expected strong_needed, weak_wrong or gain"
            )),
        }
    }
}

/// Fits a router on the given rows and their embeddings.
pub fn fit(
    items: &[Outcome],
    embeddings: &[Vec<f32>],
    opts: &TrainOptions,
) -> Result<LearnedRouter, String> {
    let labels = |f: fn(&Outcome) -> bool| -> Vec<bool> { items.iter().map(f).collect() };
    let (model, minus) = match opts.label {
        Label::StrongNeeded => (
            fit_logistic(
                embeddings,
                &labels(|o| model::strong_needed(o.weak, o.strong)),
                opts.l2,
                25,
            )?,
            None,
        ),
        Label::WeakWrong => (
            fit_logistic(embeddings, &labels(|o| !o.weak), opts.l2, 25)?,
            None,
        ),
        Label::Gain => (
            fit_logistic(embeddings, &labels(|o| o.strong), opts.l2, 25)?,
            Some(fit_logistic(embeddings, &labels(|o| o.weak), opts.l2, 25)?),
        ),
    };
    let scorer = LearnedRouter {
        format: ROUTER_FORMAT.into(),
        embedding_model: MINILM_DIR_NAME.into(),
        max_tokens: opts.max_tokens,
        label: opts.label,
        model,
        minus,
        threshold: 0.5,
        target_strong_share: opts.strong_share,
        score_quantiles: Vec::new(),
        trained_on_subjects: data::subjects(items),
        trained_on_rows: items.len(),
    };
    let mut scores: Vec<f32> = embeddings.iter().map(|e| scorer.p_strong(e)).collect();
    scores.sort_by(f32::total_cmp);
    let score_quantiles: Vec<f32> = (0..=100)
        .map(|k| scores[((k as f64 / 100.0) * (scores.len() - 1) as f64).round() as usize])
        .collect();
    let mut r = LearnedRouter {
        score_quantiles,
        ..scorer
    };
    r.set_strong_share(opts.strong_share);
    Ok(r)
}

/// `switchyard router train --data DIR --out FILE`: trains on every table in `data_dir` except
/// `opts.exclude_subjects`.
pub fn train(data_dir: &Path, opts: &TrainOptions) -> Result<LearnedRouter, String> {
    let items: Vec<Outcome> = load_outcomes(data_dir)?
        .into_iter()
        .filter(|o| !opts.exclude_subjects.contains(&o.subject))
        .collect();
    if items.is_empty() {
        return Err("no training rows left".into());
    }
    let prompts: Vec<&str> = items.iter().map(|o| o.prompt.as_str()).collect();
    let embs = embed_prompts(
        &prompts,
        opts.max_tokens,
        opts.model_dir.as_deref(),
        opts.cache.as_deref(),
    )?;
    fit(&items, &embs, opts)
}

/// `switchyard router evaluate --model FILE --data DIR`: the router's metrics on the tables in `data_dir`.
pub fn evaluate(
    router: &LearnedRouter,
    data_dir: &Path,
    opts: &EvalOptions,
) -> Result<Metrics, String> {
    let items: Vec<Outcome> = load_outcomes(data_dir)?
        .into_iter()
        .filter(|o| opts.subjects.is_empty() || opts.subjects.contains(&o.subject))
        .collect();
    if items.is_empty() {
        return Err("no evaluation rows".into());
    }
    let prompts: Vec<&str> = items.iter().map(|o| o.prompt.as_str()).collect();
    let embs = embed_prompts(
        &prompts,
        router.max_tokens,
        opts.model_dir.as_deref(),
        opts.cache.as_deref(),
    )?;
    let scores: Vec<f32> = embs.iter().map(|e| router.p_strong(e)).collect();
    let outcomes: Vec<(bool, bool)> = items.iter().map(|o| (o.weak, o.strong)).collect();
    evaluate_scores(&scores, &outcomes, opts.weak_cost_ratio)
}

/// Held-out results of [`cross_validate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Subjects per fold (each fold is scored by a router trained on the others).
    pub folds: Vec<Vec<String>>,
    /// Every row's held-out score, in `items` order.
    #[serde(skip)]
    pub scores: Vec<f32>,
    /// Metrics over all rows, each scored by a router that never saw its subject.
    pub pooled: Metrics,
    /// Metrics per fold; `None` where the strong model is not better than the weak one on that
    /// fold's rows (PGR is undefined there; the pooled figure still is). With many small folds,
    /// e.g. one subject each, some subjects are like that.
    pub per_fold: Vec<Option<Metrics>>,
}

/// The subjects in `folds` groups, round-robin over the sorted names.
pub fn subject_folds(items: &[Outcome], folds: usize) -> Vec<Vec<String>> {
    let subjects = data::subjects(items);
    (0..folds)
        .map(|f| subjects.iter().skip(f).step_by(folds).cloned().collect())
        .collect()
}

/// Cross-validation by subject with any scorer: for each group of subjects, `score(train, test)`
/// gets the row indices of the other groups (to fit on) and of this group (to score), and
/// returns one score per test row.
pub fn cross_validate_with<F>(
    items: &[Outcome],
    folds: usize,
    weak_cost_ratio: f64,
    mut score: F,
) -> Result<CrossValidation, String>
where
    F: FnMut(&[usize], &[usize]) -> Result<Vec<f32>, String>,
{
    if folds < 2 {
        return Err("at least 2 folds".into());
    }
    let groups = subject_folds(items, folds);
    let mut scores = vec![0f32; items.len()];
    let mut per_fold = Vec::new();
    for group in &groups {
        let (train_idx, test_idx): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| !group.contains(&items[i].subject));
        let fold_scores = score(&train_idx, &test_idx)?;
        if fold_scores.len() != test_idx.len() {
            return Err(format!(
                "{} scores for {} held-out rows",
                fold_scores.len(),
                test_idx.len()
            ));
        }
        let fold_outcomes: Vec<(bool, bool)> = test_idx
            .iter()
            .map(|&i| (items[i].weak, items[i].strong))
            .collect();
        for (&i, &s) in test_idx.iter().zip(&fold_scores) {
            scores[i] = s;
        }
        per_fold.push(if strong_better(&fold_outcomes) {
            Some(evaluate_scores(
                &fold_scores,
                &fold_outcomes,
                weak_cost_ratio,
            )?)
        } else {
            None
        });
    }
    let outcomes: Vec<(bool, bool)> = items.iter().map(|o| (o.weak, o.strong)).collect();
    let pooled = evaluate_scores(&scores, &outcomes, weak_cost_ratio)?;
    Ok(CrossValidation {
        folds: groups,
        scores,
        pooled,
        per_fold,
    })
}

/// Whether the strong model answers more rows right than the weak one (so PGR is defined).
fn strong_better(outcomes: &[(bool, bool)]) -> bool {
    outcomes.iter().filter(|o| o.1).count() > outcomes.iter().filter(|o| o.0).count()
}

/// Splits the subjects into `folds` groups (round-robin over the sorted names), trains on all
/// groups but one and scores that one, for each group.
pub fn cross_validate(
    items: &[Outcome],
    embeddings: &[Vec<f32>],
    folds: usize,
    opts: &TrainOptions,
    weak_cost_ratio: f64,
) -> Result<CrossValidation, String> {
    cross_validate_with(items, folds, weak_cost_ratio, |train, test| {
        let train_items: Vec<Outcome> = train.iter().map(|&i| items[i].clone()).collect();
        let train_embs: Vec<Vec<f32>> = train.iter().map(|&i| embeddings[i].clone()).collect();
        let router = fit(&train_items, &train_embs, opts)?;
        Ok(test
            .iter()
            .map(|&i| router.p_strong(&embeddings[i]))
            .collect())
    })
}

/// k-nearest-neighbour soft labels: for each query, the similarity-weighted mean label of the
/// `k` most similar reference vectors (dot product; cosine for unit vectors).
pub fn knn_scores(reference: &[&[f32]], labels: &[f32], queries: &[&[f32]], k: usize) -> Vec<f32> {
    let k = k.clamp(1, reference.len().max(1));
    queries
        .iter()
        .map(|q| {
            let mut sims: Vec<(f32, f32)> = reference
                .iter()
                .zip(labels)
                .map(|(r, &y)| (switchyard_classify::dot(q, r), y))
                .collect();
            sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            let (mut num, mut den) = (0f32, 0f32);
            for &(s, y) in &sims[..k] {
                let w = s.max(0.0) + 1e-6;
                num += w * y;
                den += w;
            }
            num / den
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(subject: &str, weak: bool, strong: bool) -> Outcome {
        Outcome {
            subject: subject.into(),
            prompt: format!("{subject} {weak} {strong}"),
            weak,
            strong,
        }
    }

    #[test]
    fn a_fold_where_the_strong_model_is_not_better_has_no_metrics_and_the_pool_still_does() {
        // Subjects a and b: the strong model wins some rows; subject c: the weak one is as good.
        let mut items = Vec::new();
        for s in ["a", "b"] {
            items.extend([
                row(s, false, true),
                row(s, true, true),
                row(s, false, false),
            ]);
        }
        items.extend([
            row("c", true, true),
            row("c", true, false),
            row("c", false, true),
        ]);
        // Score = "strong needed" for the rows where it is, so the router is an oracle.
        let cv = cross_validate_with(&items, 3, 0.01, |_, test| {
            Ok(test
                .iter()
                .map(|&i| (items[i].strong && !items[i].weak) as u8 as f32)
                .collect())
        })
        .unwrap();
        assert_eq!(cv.folds, vec![vec!["a"], vec!["b"], vec!["c"]]);
        assert!(cv.per_fold[0].is_some() && cv.per_fold[1].is_some());
        assert!(
            cv.per_fold[2].is_none(),
            "subject c: weak 2 right, strong 2 right"
        );
        assert!(
            cv.pooled.apgr > 0.9,
            "an oracle's pooled APGR: {}",
            cv.pooled.apgr
        );
    }
}

//! Workload classes for requests (extraction, coding, summarization, ...), so the gateway can
//! route, budget and report by the kind of work.
//!
//! A request gets its class by the first step that decides, in this order:
//! 1. the `x-switchyard-class` header (must name a defined class, else an error naming it);
//! 2. the calling key's default class;
//! 3. rules, in config order: prompt length, tools, `response_format`, regex, keywords, model alias;
//! 4. the semantic classifier: all-MiniLM-L6-v2 embedding of the last user message, voting
//!    among labelled example prompts (k-NN or centroid), abstaining below a minimum similarity;
//! 5. the configured default class (or none).
//!
//! Steps 1–3 cost microseconds; step 4 is CPU work (a few ms): call [`Classifier::classify`] from
//! a blocking thread, or [`Classifier::classify_async`], which runs only step 4 on tokio's
//! blocking pool.

mod bert;
pub mod beside;
pub mod config;
mod crew;
pub mod embed;
mod int8;
mod lru;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use regex::Regex;
use serde::Serialize;
use switchyard_api::openai::ChatRequest;

pub use config::{ClassesConfig, RuleConfig, SemanticConfig, Vote};
pub use crew::{split_counts, SplitCounts};
pub use embed::{
    default_model_dir, dot, Embedder, Weights, DEFAULT_MAX_TOKENS, DEFAULT_SEMANTIC_MAX_TOKENS,
    MINILM_DIMS, MINILM_DIR_NAME,
};
pub use lru::CacheStats;

/// The header a client names its class with.
pub const CLASS_HEADER: &str = "x-switchyard-class";

/// The outcome: the class (none when nothing decided and no default is set) and what decided it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub class: Option<String>,
    pub by: ClassifiedBy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum ClassifiedBy {
    Header,
    KeyDefault,
    /// The rule's name.
    Rule {
        name: String,
    },
    /// Cosine similarity behind the vote (see [`Vote`]).
    Semantic {
        score: f32,
    },
    /// Every MiniLM forward was taken for longer than `max_wait_ms`: `busy_class` or the default.
    Busy,
    Default,
}

impl ClassifiedBy {
    /// Short text for logs and the ledger: `header`, `key_default`, `rule:NAME`, `semantic`,
    /// `busy`, `default`.
    pub fn label(&self) -> String {
        match self {
            ClassifiedBy::Header => "header".into(),
            ClassifiedBy::KeyDefault => "key_default".into(),
            ClassifiedBy::Rule { name } => format!("rule:{name}"),
            ClassifiedBy::Semantic { .. } => "semantic".into(),
            ClassifiedBy::Busy => "busy".into(),
            ClassifiedBy::Default => "default".into(),
        }
    }
}

/// A class named by the client or a key that the config does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("unknown class \"{name}\" in the {CLASS_HEADER} header; defined classes: {defined:?}")]
    UnknownHeaderClass { name: String, defined: Vec<String> },
    #[error("the key's default class \"{name}\" is not defined; defined classes: {defined:?}")]
    UnknownKeyClass { name: String, defined: Vec<String> },
}

struct Rule {
    name: String,
    class: String,
    min_tokens: Option<u64>,
    max_tokens: Option<u64>,
    tools: Option<bool>,
    response_format: Option<Vec<String>>,
    regex: Option<Regex>,
    /// The keywords as one case-insensitive alternation, so a prompt is scanned once.
    keywords: Option<Regex>,
    models: Option<Vec<String>>,
}

impl Rule {
    fn matches(&self, req: &ChatRequest, text: &str, est_tokens: u64) -> bool {
        if self.min_tokens.is_some_and(|lo| est_tokens < lo)
            || self.max_tokens.is_some_and(|hi| est_tokens > hi)
        {
            return false;
        }
        if let Some(want) = self.tools {
            let has = req.tools.as_ref().is_some_and(|t| !t.is_empty());
            if has != want {
                return false;
            }
        }
        if let Some(formats) = &self.response_format {
            let kind = req
                .response_format
                .as_ref()
                .and_then(|f| f.get("type"))
                .and_then(|t| t.as_str());
            if !kind.is_some_and(|k| formats.iter().any(|f| f == k)) {
                return false;
            }
        }
        if let Some(models) = &self.models {
            if !models.iter().any(|m| m == &req.model) {
                return false;
            }
        }
        if self.regex.as_ref().is_some_and(|r| !r.is_match(text)) {
            return false;
        }
        if self.keywords.as_ref().is_some_and(|r| !r.is_match(text)) {
            return false;
        }
        true
    }
}

struct Semantic {
    embedder: Arc<Embedder>,
    vote: Vote,
    k: usize,
    min_similarity: f32,
    /// (class, unit embedding) per example; for [`Vote::Centroid`], one unit centroid per class.
    points: Vec<(String, Vec<f32>)>,
    cache: Mutex<lru::EmbeddingLru>,
    gate: Arc<ForwardGate>,
    busy_class: Option<String>,
}

/// A classification begun by [`Classifier::begin`]: decided, or waiting on MiniLM.
pub enum Begun {
    Done(Classification),
    Semantic(SemanticStep),
}

/// The MiniLM step of one request's classification, not yet run. It owns what it needs, so it
/// can run in a task of its own.
pub struct SemanticStep {
    classifier: Arc<Classifier>,
    text: String,
}

impl SemanticStep {
    /// Embeds and votes on tokio's blocking pool, after waiting for a forward at the gate; the
    /// busy class when none came free within `max_wait_ms`, the default class if the forward
    /// failed. The forward takes the helper thread when `split_forward` allows.
    pub async fn run(self) -> Classification {
        let this = self.classifier;
        let Some(s) = &this.semantic else {
            return this.default_classification();
        };
        let Some(permit) = s.gate.enter().await else {
            return this.busy_classification();
        };
        let text = self.text;
        let on_pool = Arc::clone(&this);
        let step = move || {
            let _forward = permit;
            on_pool.semantic_step(&text, true)
        };
        match tokio::task::spawn_blocking(step).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "semantic classification task failed; using the default class");
                this.default_classification()
            }
        }
    }

    /// As [`SemanticStep::run`], for a step that runs beside its request rather than before
    /// it: on the idle-priority lane instead of the gate and the blocking pool, the forward on
    /// one thread, never with the helper. The busy class when the lane's queue is full.
    pub async fn run_beside(self) -> Classification {
        let this = self.classifier;
        let Some(s) = &this.semantic else {
            return this.default_classification();
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let on_lane = Arc::clone(&this);
        let text = self.text;
        let job = Box::new(move || {
            let _ = tx.send(on_lane.semantic_step(&text, false));
        });
        if beside::submit(job).is_err() {
            s.gate.busy.fetch_add(1, Ordering::Relaxed);
            return this.busy_classification();
        }
        rx.await.unwrap_or_else(|_| {
            tracing::warn!(
                "semantic classification beside the request failed; using the default class"
            );
            this.default_classification()
        })
    }
}

/// How many MiniLM forwards run at once on the async path and how long a request waits for
/// one. One per gateway: the semantic step and the learned routers share it, since their
/// forwards share the cores. Forwards beside requests ([`SemanticStep::run_beside`]) do not
/// pass it: they take only CPU the requests leave, and their lane bounds its own queue.
pub struct ForwardGate {
    /// Fair (first come, first served) permits, one per forward.
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    max_wait: Option<std::time::Duration>,
    waiting: AtomicU64,
    busy: AtomicU64,
}

/// A gate's load, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLoad {
    /// Forwards that may run at once (`max_concurrent`).
    pub max_concurrent: usize,
    /// Forwards running now.
    pub running: usize,
    /// Requests waiting for a forward now.
    pub waiting: u64,
    /// Requests that went without their forward since start: they waited `max_wait_ms`, or found
    /// the queue of forwards beside requests full.
    pub busy_total: u64,
}

impl Semantic {
    /// The embedding of `text` if the cache holds it.
    fn cached(&self, text: &str) -> Option<Vec<f32>> {
        self.lock_cache().get(lru::text_key(text))
    }

    /// The embedding of `text`, from the cache when this exact text was embedded recently.
    /// `share`: the forward may take the helper thread.
    fn embed(&self, text: &str, share: bool) -> Result<Vec<f32>, String> {
        let key = lru::text_key(text);
        if let Some(e) = self.lock_cache().get(key) {
            return Ok(e);
        }
        // The lock is not held while MiniLM runs, so other requests can use the cache meanwhile.
        let e = if share {
            self.embedder.embed(text)?
        } else {
            self.embedder.embed_beside(text)?
        };
        self.lock_cache().insert(key, e.clone());
        Ok(e)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, lru::EmbeddingLru> {
        // A panic while holding the lock cannot leave the map half-updated in a harmful way
        // (worst case a stale recency order), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Built once from a validated [`ClassesConfig`]; cheap to share (`Arc`).
pub struct Classifier {
    names: Vec<String>,
    default: Option<String>,
    rules: Vec<Rule>,
    semantic: Option<Semantic>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("names", &self.names)
            .field("rules", &self.rules.len())
            .field("semantic", &self.semantic.is_some())
            .finish()
    }
}

/// Characters per token for the prompt-length rules (the usual English estimate).
const CHARS_PER_TOKEN: u64 = 4;

/// Estimated prompt tokens: characters / 4, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(CHARS_PER_TOKEN)
}

/// The text the semantic step embeds: the last user message (what is asked now), else all text.
/// Cut to `max_chars` on a character boundary so a huge prompt is not tokenized in full.
pub fn semantic_text(req: &ChatRequest, max_chars: usize) -> String {
    let text = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_ref())
        .map(|c| c.as_text())
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| req.prompt_text());
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text,
    }
}

enum Early {
    Done(Classification),
    NeedsSemantic,
}

impl Classifier {
    /// Validates `config`, compiles the rules, and, only if semantic examples are configured,
    /// loads MiniLM and embeds the examples once.
    pub fn build(config: &ClassesConfig) -> Result<Classifier, String> {
        Classifier::build_with(config, None)
    }

    /// As [`Classifier::build`], reusing an already loaded embedder (e.g. shared with the learned router).
    pub fn build_with(
        config: &ClassesConfig,
        embedder: Option<Arc<Embedder>>,
    ) -> Result<Classifier, String> {
        config.validate()?;
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let key = format!("classes.rules[{i}]");
            let regex = r
                .regex
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| format!("{key}.regex: {e}"))?;
            let keywords = r
                .keywords
                .as_ref()
                .map(|kws| {
                    let alt: Vec<String> = kws.iter().map(|k| regex::escape(k)).collect();
                    Regex::new(&format!("(?i){}", alt.join("|")))
                })
                .transpose()
                .map_err(|e| format!("{key}.keywords: {e}"))?;
            rules.push(Rule {
                name: r.name.clone(),
                class: r.class.clone(),
                min_tokens: r.min_tokens,
                max_tokens: r.max_tokens,
                tools: r.tools,
                response_format: r.response_format.clone(),
                regex,
                keywords,
                models: r.models.clone(),
            });
        }
        let semantic = match &config.semantic {
            None => None,
            Some(s) => Some(build_semantic(s, embedder)?),
        };
        Ok(Classifier {
            names: config.names.clone(),
            default: config.default.clone(),
            rules,
            semantic,
        })
    }

    /// The defined class names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Hits, misses and entries of the semantic step's embedding cache (none without that step).
    pub fn embedding_cache_stats(&self) -> Option<CacheStats> {
        self.semantic.as_ref().map(|s| s.lock_cache().stats())
    }

    /// The gate the semantic step's forwards pass (none without that step), to share with the
    /// learned routers and to read its load.
    pub fn forward_gate(&self) -> Option<&Arc<ForwardGate>> {
        self.semantic.as_ref().map(|s| &s.gate)
    }

    /// The loaded MiniLM, if the semantic step is configured (to share with other users).
    pub fn embedder(&self) -> Option<&Arc<Embedder>> {
        self.semantic.as_ref().map(|s| &s.embedder)
    }

    fn is_defined(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    fn early(
        &self,
        req: &ChatRequest,
        header_class: Option<&str>,
        key_default: Option<&str>,
    ) -> Result<Early, ClassifyError> {
        if let Some(h) = header_class {
            if !self.is_defined(h) {
                return Err(ClassifyError::UnknownHeaderClass {
                    name: h.to_string(),
                    defined: self.names.clone(),
                });
            }
            return Ok(Early::Done(Classification {
                class: Some(h.to_string()),
                by: ClassifiedBy::Header,
            }));
        }
        if let Some(k) = key_default {
            if !self.is_defined(k) {
                return Err(ClassifyError::UnknownKeyClass {
                    name: k.to_string(),
                    defined: self.names.clone(),
                });
            }
            return Ok(Early::Done(Classification {
                class: Some(k.to_string()),
                by: ClassifiedBy::KeyDefault,
            }));
        }
        if !self.rules.is_empty() {
            let text = req.prompt_text();
            let est = estimate_tokens(&text);
            if let Some(rule) = self.rules.iter().find(|r| r.matches(req, &text, est)) {
                return Ok(Early::Done(Classification {
                    class: Some(rule.class.clone()),
                    by: ClassifiedBy::Rule {
                        name: rule.name.clone(),
                    },
                }));
            }
        }
        if self.semantic.is_some() {
            Ok(Early::NeedsSemantic)
        } else {
            Ok(Early::Done(self.default_classification()))
        }
    }

    /// For a request that went without its forward: `busy_class`, else the default.
    fn busy_classification(&self) -> Classification {
        Classification {
            class: self
                .semantic
                .as_ref()
                .and_then(|s| s.busy_class.clone())
                .or_else(|| self.default.clone()),
            by: ClassifiedBy::Busy,
        }
    }

    fn default_classification(&self) -> Classification {
        Classification {
            class: self.default.clone(),
            by: ClassifiedBy::Default,
        }
    }

    /// Classifies a request (synchronously; may run MiniLM — keep it off async workers).
    /// `header_class` is the `x-switchyard-class` header value, `key_default` the caller's key default.
    pub fn classify(
        &self,
        req: &ChatRequest,
        header_class: Option<&str>,
        key_default: Option<&str>,
    ) -> Result<Classification, ClassifyError> {
        match self.early(req, header_class, key_default)? {
            Early::Done(c) => Ok(c),
            Early::NeedsSemantic => Ok(self.semantic_step(&self.semantic_input(req), true)),
        }
    }

    /// As [`Classifier::classify`], but the MiniLM step (only) runs on tokio's blocking pool, at
    /// most `max_concurrent` at once; a request that waited `max_wait_ms` for its turn takes the
    /// busy class instead. A prompt whose embedding is cached neither waits nor leaves the task.
    pub async fn classify_async(
        self: &Arc<Self>,
        req: &ChatRequest,
        header_class: Option<&str>,
        key_default: Option<&str>,
    ) -> Result<Classification, ClassifyError> {
        match self.begin(req, header_class, key_default)? {
            Begun::Done(c) => Ok(c),
            Begun::Semantic(step) => Ok(step.run().await),
        }
    }

    /// Everything of [`Classifier::classify_async`] that needs no MiniLM forward: the header,
    /// the key's default, the rules, a cached embedding. What is left is a [`SemanticStep`] the
    /// caller may await now or run beside other work (the gateway does so where the class
    /// cannot change a request's targets, so the forward is not on the request's path).
    pub fn begin(
        self: &Arc<Self>,
        req: &ChatRequest,
        header_class: Option<&str>,
        key_default: Option<&str>,
    ) -> Result<Begun, ClassifyError> {
        match self.early(req, header_class, key_default)? {
            Early::Done(c) => Ok(Begun::Done(c)),
            Early::NeedsSemantic => {
                let Some(s) = &self.semantic else {
                    return Ok(Begun::Done(self.default_classification()));
                };
                let text = self.semantic_input(req);
                if let Some(emb) = s.cached(&text) {
                    return Ok(Begun::Done(self.vote_on(s, &emb)));
                }
                Ok(Begun::Semantic(SemanticStep {
                    classifier: Arc::clone(self),
                    text,
                }))
            }
        }
    }

    fn semantic_input(&self, req: &ChatRequest) -> String {
        // A word piece is rarely longer than 8 characters, so this keeps every piece we use.
        let max_chars = self
            .semantic
            .as_ref()
            .map_or(0, |s| s.embedder.max_tokens() * 8);
        semantic_text(req, max_chars)
    }

    /// Votes for `text`; abstains (default class) below the minimum similarity or on a model error.
    pub fn classify_text(&self, text: &str) -> Classification {
        self.semantic_step(text, true)
    }

    fn semantic_step(&self, text: &str, share: bool) -> Classification {
        let Some(s) = &self.semantic else {
            return self.default_classification();
        };
        let emb = match s.embed(text, share) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "embedding the prompt failed; using the default class");
                return self.default_classification();
            }
        };
        self.vote_on(s, &emb)
    }

    /// The class the examples vote for `emb`, or the default below the minimum similarity.
    fn vote_on(&self, s: &Semantic, emb: &[f32]) -> Classification {
        match s.vote(emb) {
            Some((class, score)) if score >= s.min_similarity => Classification {
                class: Some(class),
                by: ClassifiedBy::Semantic { score },
            },
            _ => self.default_classification(),
        }
    }
}

impl Semantic {
    /// The winning class and its score, or none without examples.
    fn vote(&self, emb: &[f32]) -> Option<(String, f32)> {
        let mut sims: Vec<(usize, f32)> = self
            .points
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (i, dot(emb, p)))
            .collect();
        sims.sort_by(|a, b| b.1.total_cmp(&a.1));
        match self.vote {
            Vote::Centroid => sims.first().map(|&(i, s)| (self.points[i].0.clone(), s)),
            Vote::Knn => {
                // Per class among the k nearest: (summed similarity, best similarity).
                let mut tally: Vec<(&str, f32, f32)> = Vec::new();
                for &(i, s) in sims.iter().take(self.k) {
                    let class = self.points[i].0.as_str();
                    match tally.iter_mut().find(|t| t.0 == class) {
                        Some(t) => {
                            t.1 += s;
                            t.2 = t.2.max(s);
                        }
                        None => tally.push((class, s, s)),
                    }
                }
                tally
                    .into_iter()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(c, _, best)| (c.to_string(), best))
            }
        }
    }
}

impl ForwardGate {
    /// At most `max_concurrent` forwards at once (default: twice the CPU count: with one per
    /// CPU, a forward preempted by another process left its core idle while requests waited,
    /// docs/routing-classes.md, "Past the classifier's capacity"); a request waits at most
    /// `max_wait` for its turn (none: as long as it takes).
    pub fn new(max_concurrent: Option<usize>, max_wait: Option<std::time::Duration>) -> Self {
        let max = max_concurrent
            .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(1, |n| n.get()));
        ForwardGate {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            max_wait,
            waiting: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }

    /// A permit to run one forward (hold it until the forward ends), after waiting for it at
    /// most `max_wait`; none (counted as busy) when the wait ran out.
    pub async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The uncontended case takes no timer.
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(p);
        }
        // Counted while waiting, also if the request is dropped meanwhile (client gone).
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.waiting);
        let wait = Arc::clone(&self.permits).acquire_owned();
        let permit = match self.max_wait {
            Some(limit) => tokio::time::timeout(limit, wait).await.ok(),
            None => Some(wait.await),
        };
        drop(waiting);
        // The semaphore is never closed, so `acquire_owned` does not fail.
        let permit = permit.and_then(Result::ok);
        if permit.is_none() {
            self.busy.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// Forwards running, requests waiting, and requests that went without a forward.
    pub fn load(&self) -> ForwardLoad {
        ForwardLoad {
            max_concurrent: self.max,
            running: self.max.saturating_sub(self.permits.available_permits()),
            waiting: self.waiting.load(Ordering::Relaxed),
            busy_total: self.busy.load(Ordering::Relaxed),
        }
    }
}

fn build_semantic(s: &SemanticConfig, embedder: Option<Arc<Embedder>>) -> Result<Semantic, String> {
    let embedder = match embedder {
        Some(e) => e,
        None => {
            let dir = s.model_dir.clone().unwrap_or_else(default_model_dir);
            let weights = match &s.weights {
                Some(name) => name
                    .parse::<Weights>()
                    .map_err(|e| format!("classes.semantic.weights: {e}"))?,
                None => Weights::for_this_cpu(),
            };
            let mut embedder = Embedder::load_with(&dir, s.max_tokens, weights)
                .map_err(|e| format!("classes.semantic: {e}"))?;
            embedder.set_split_forward(s.split_forward);
            Arc::new(embedder)
        }
    };
    let mut points = Vec::new();
    for (class, texts) in &s.examples {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embs = embedder
            .embed_batch(&refs)
            .map_err(|e| format!("classes.semantic.examples.{class}: {e}"))?;
        match s.vote {
            Vote::Knn => points.extend(embs.into_iter().map(|e| (class.clone(), e))),
            Vote::Centroid => {
                let mut c = vec![0f32; MINILM_DIMS];
                for e in &embs {
                    for (a, b) in c.iter_mut().zip(e) {
                        *a += b;
                    }
                }
                let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                c.iter_mut().for_each(|x| *x /= norm);
                points.push((class.clone(), c));
            }
        }
    }
    Ok(Semantic {
        embedder,
        vote: s.vote,
        k: s.k,
        min_similarity: s.min_similarity,
        points,
        cache: Mutex::new(lru::EmbeddingLru::new(s.cache_entries)),
        gate: Arc::new(ForwardGate::new(
            s.max_concurrent,
            s.max_wait_ms.map(std::time::Duration::from_millis),
        )),
        busy_class: s.busy_class.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::openai::Message;

    /// The tests' classes (tests/data/classes.toml) with the semantic step's gate set as given.
    fn classifier(max_wait_ms: Option<u64>, busy_class: Option<&str>) -> Arc<Classifier> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/classes.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut config: ClassesConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let semantic = config
            .semantic
            .as_mut()
            .unwrap_or_else(|| panic!("no semantic"));
        semantic.max_tokens = 32;
        semantic.max_concurrent = Some(1);
        semantic.max_wait_ms = max_wait_ms;
        semantic.busy_class = busy_class.map(str::to_string);
        // Needs MiniLM (scripts/fetch-models.sh); fails loudly without it.
        Arc::new(Classifier::build(&config).unwrap_or_else(|e| panic!("{e}")))
    }

    fn user(text: &str) -> ChatRequest {
        ChatRequest {
            model: "default".into(),
            messages: vec![Message::text("user", text)],
            ..Default::default()
        }
    }

    fn load_of(c: &Classifier) -> ForwardLoad {
        c.forward_gate()
            .unwrap_or_else(|| panic!("no semantic step"))
            .load()
    }

    /// Classifies [`PROMPT`] on the async path.
    async fn classify(c: &Arc<Classifier>) -> Classification {
        c.classify_async(&user(PROMPT), None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Takes every forward, as requests running MiniLM would.
    fn hold_forwards(c: &Classifier) -> tokio::sync::OwnedSemaphorePermit {
        let s = c.semantic.as_ref().unwrap_or_else(|| panic!("no semantic"));
        Arc::clone(&s.gate.permits)
            .try_acquire_owned()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const PROMPT: &str = "Condense this quarterly report into three bullet points for the board.";

    #[tokio::test]
    async fn a_request_that_waited_max_wait_takes_the_busy_class() {
        let c = classifier(Some(20), Some("sensitive"));
        let held = hold_forwards(&c);
        let out = classify(&c).await;
        assert_eq!(out.class.as_deref(), Some("sensitive"));
        assert_eq!(out.by, ClassifiedBy::Busy);
        let load = load_of(&c);
        assert_eq!((load.running, load.waiting, load.busy_total), (1, 0, 1));
        // Once a forward is free the same prompt gets its semantic class.
        drop(held);
        let out = classify(&c).await;
        assert!(matches!(out.by, ClassifiedBy::Semantic { .. }), "{out:?}");
        assert_eq!(out.class.as_deref(), Some("summarization"));
    }

    #[tokio::test]
    async fn without_a_busy_class_the_default_class_applies() {
        let c = classifier(Some(5), None);
        let _held = hold_forwards(&c);
        let out = classify(&c).await;
        assert_eq!(
            (out.class.as_deref(), out.by),
            (Some("chat"), ClassifiedBy::Busy)
        );
    }

    #[tokio::test]
    async fn without_max_wait_a_request_waits_for_its_turn() {
        let c = classifier(None, None);
        let held = hold_forwards(&c);
        let request = user(PROMPT);
        let mut waiting = std::pin::pin!(c.classify_async(&request, None, None));
        // Far longer than any wait limit a config would set: still waiting, and counted.
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut waiting).await;
        assert!(
            early.is_err(),
            "classified while every forward was taken: {early:?}"
        );
        let load = load_of(&c);
        assert_eq!((load.waiting, load.busy_total), (1, 0));
        drop(held);
        let out = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.class.as_deref(), Some("summarization"));
        assert_eq!(load_of(&c).waiting, 0);
    }

    #[tokio::test]
    async fn a_request_dropped_while_waiting_is_no_longer_counted() {
        let c = classifier(None, None);
        let _held = hold_forwards(&c);
        let request = user(PROMPT);
        {
            let mut waiting = std::pin::pin!(c.classify_async(&request, None, None));
            let early =
                tokio::time::timeout(std::time::Duration::from_millis(20), &mut waiting).await;
            assert!(early.is_err());
            assert_eq!(load_of(&c).waiting, 1);
        }
        assert_eq!(load_of(&c).waiting, 0);
    }

    #[tokio::test]
    async fn a_cached_prompt_does_not_wait_for_a_forward() {
        let c = classifier(Some(5), Some("sensitive"));
        let first = classify(&c).await;
        let _held = hold_forwards(&c);
        let again = classify(&c).await;
        assert_eq!(again, first);
        assert_eq!(load_of(&c).busy_total, 0);
    }
}

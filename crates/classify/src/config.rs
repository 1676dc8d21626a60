//! `[classes]`: the workload classes and how a request gets one. Validation is pure (no file
//! access) and names the key at fault.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::embed::DEFAULT_SEMANTIC_MAX_TOKENS;

/// ```toml
/// [classes]
/// names = ["extraction", "classification", "summarization", "coding", "reasoning", "sensitive", "chat"]
/// default = "chat"
///
/// [[classes.rules]]
/// name = "json-out"
/// class = "extraction"
/// response_format = ["json_object", "json_schema"]
///
/// [classes.semantic]
/// min_similarity = 0.35
/// [classes.semantic.examples]
/// coding = ["Write a Rust function that parses a date", "Fix this Python stack trace"]
/// summarization = ["Summarize this article in three bullet points"]
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassesConfig {
    /// The defined classes. Headers, key defaults, rules and examples may only name these.
    pub names: Vec<String>,
    /// The class when nothing else decides; none leaves the request unclassified.
    #[serde(default)]
    pub default: Option<String>,
    /// Tried in order; the first rule whose conditions all hold decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Nearest labelled examples by MiniLM embedding, tried after the rules.
    #[serde(default)]
    pub semantic: Option<SemanticConfig>,
}

/// One rule: every condition given must hold (AND); at least one condition is required.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub class: String,
    /// Prompt length bounds (inclusive) in estimated tokens: characters of all message text / 4.
    #[serde(default)]
    pub min_tokens: Option<u64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// `true`: the request declares tools; `false`: it declares none.
    #[serde(default)]
    pub tools: Option<bool>,
    /// `response_format.type` is one of these (`json_object`, `json_schema`, `text`).
    #[serde(default)]
    pub response_format: Option<Vec<String>>,
    /// A regular expression (Rust `regex` syntax) found anywhere in the message text. Prefer
    /// `(?-u:\b)` to `\b`: a Unicode word boundary makes the `regex` crate leave its fast DFA
    /// on text with any non-ASCII character (on the latency bench's long documents, ~1.2 ms
    /// per request instead of ~0.1 ms; docs/routing-classes.md, "Classifier cost").
    #[serde(default)]
    pub regex: Option<String>,
    /// Any of these, case-insensitive, as a substring of the message text.
    #[serde(default)]
    pub keywords: Option<Vec<String>>,
    /// The requested `model` is one of these aliases.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

impl RuleConfig {
    fn has_condition(&self) -> bool {
        self.min_tokens.is_some()
            || self.max_tokens.is_some()
            || self.tools.is_some()
            || self.response_format.is_some()
            || self.regex.is_some()
            || self.keywords.is_some()
            || self.models.is_some()
    }
}

/// How the nearest examples vote.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    /// The `k` most similar examples vote, each with its similarity; the score is the best
    /// similarity among the winning class's voters.
    #[default]
    Knn,
    /// The class whose mean example embedding is most similar wins; the score is that similarity.
    Centroid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SemanticConfig {
    /// The all-MiniLM-L6-v2 folder; default `$SWITCHYARD_MODEL_DIR/all-MiniLM-L6-v2` or `<repo>/models/...`.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Word pieces of the prompt that are embedded (the rest is cut): the CPU cost per request.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default)]
    pub vote: Vote,
    #[serde(default = "default_k")]
    pub k: usize,
    /// Below this cosine similarity the semantic step abstains and the default class applies.
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f32,
    /// Labelled example prompts, by class.
    pub examples: BTreeMap<String, Vec<String>>,
    /// Embeddings of recent prompts kept in memory (least recently used evicted first; ~1.6 KB
    /// each), so a repeated prompt skips MiniLM. 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// MiniLM forwards that run at once (each holds one core for a few ms); requests past it
    /// wait in arrival order. Default: twice the machine's CPU count. A prompt found in the
    /// cache does not wait.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// The longest a request waits for a free forward, in ms; past it the request takes
    /// `busy_class` (or `classes.default`) without the semantic step, so an overloaded
    /// classifier adds at most this wait instead of a growing queue. Unset: requests wait; 0:
    /// a request that finds every forward taken does not wait at all.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// The class a request takes when `max_wait_ms` passed (default: `classes.default`). A
    /// class in `policies.self_hosted_only` (e.g. `sensitive`) keeps such requests on
    /// self-hosted targets: the safe choice when the examples decide what is sensitive.
    #[serde(default)]
    pub busy_class: Option<String>,
    /// A forward with int8 weights shares its matrix products and attention heads with helper
    /// threads (one per CPU past the first, at most 3), when no other forward is running: on 2
    /// cores a third to two fifths less time per forward, for more CPU in all (docs/routing-classes.md, "Sharing a forward"). Off,
    /// each forward runs on its one thread.
    #[serde(default = "default_split_forward")]
    pub split_forward: bool,
    /// How MiniLM's layer weights are stored and multiplied: `i8`, `i8-w7`, `f32`, `q8_0` or
    /// `q8_0-vnni` (`Weights`). Default: the fastest for this CPU, `i8` with AVX-512 VNNI,
    /// `i8-w7` with AVX2 only, else `f32`. Replicas on different CPUs give the same classes
    /// when they name the same format here (the int8 ones run, slowly, without AVX2 too).
    #[serde(default)]
    pub weights: Option<String>,
}

fn default_split_forward() -> bool {
    true
}

fn default_max_tokens() -> usize {
    DEFAULT_SEMANTIC_MAX_TOKENS
}
fn default_k() -> usize {
    5
}
fn default_min_similarity() -> f32 {
    0.3
}
fn default_cache_entries() -> usize {
    4096
}

impl Default for SemanticConfig {
    fn default() -> Self {
        SemanticConfig {
            model_dir: None,
            max_tokens: default_max_tokens(),
            vote: Vote::default(),
            k: default_k(),
            min_similarity: default_min_similarity(),
            examples: BTreeMap::new(),
            cache_entries: default_cache_entries(),
            max_concurrent: None,
            max_wait_ms: None,
            busy_class: None,
            split_forward: default_split_forward(),
            weights: None,
        }
    }
}

const RESPONSE_FORMATS: [&str; 3] = ["json_object", "json_schema", "text"];

impl ClassesConfig {
    /// Whether `name` is a defined class.
    pub fn is_defined(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// For callers holding class references elsewhere (e.g. a key's default class):
    /// `Err` names `key` and the class.
    pub fn check_class_ref(&self, key: &str, name: &str) -> Result<(), String> {
        if self.is_defined(name) {
            Ok(())
        } else {
            Err(format!(
                "{key}: \"{name}\" is not a defined class (classes.names = {:?})",
                self.names
            ))
        }
    }

    /// Checks the config without touching files; the error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (i, n) in self.names.iter().enumerate() {
            if n.trim().is_empty() {
                return Err(format!(
                    "classes.names[{i}]: a class name must not be empty"
                ));
            }
            if !seen.insert(n.as_str()) {
                return Err(format!("classes.names[{i}]: \"{n}\" is listed twice"));
            }
        }
        if let Some(d) = &self.default {
            self.check_class_ref("classes.default", d)?;
        }
        let mut rule_names = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let key = format!("classes.rules[{i}]");
            if r.name.trim().is_empty() {
                return Err(format!("{key}.name: a rule needs a name"));
            }
            if !rule_names.insert(r.name.as_str()) {
                return Err(format!(
                    "{key}.name: \"{}\" is used by an earlier rule",
                    r.name
                ));
            }
            self.check_class_ref(&format!("{key}.class"), &r.class)?;
            if !r.has_condition() {
                return Err(format!(
                    "{key} (\"{}\"): a rule needs at least one condition (min_tokens, max_tokens, tools, \
                     response_format, regex, keywords, models); use classes.default for a catch-all",
                    r.name
                ));
            }
            if let (Some(lo), Some(hi)) = (r.min_tokens, r.max_tokens) {
                if lo > hi {
                    return Err(format!("{key}.min_tokens: {lo} is above max_tokens {hi}"));
                }
            }
            if let Some(formats) = &r.response_format {
                if formats.is_empty() {
                    return Err(format!("{key}.response_format: list at least one type"));
                }
                for (j, f) in formats.iter().enumerate() {
                    if !RESPONSE_FORMATS.contains(&f.as_str()) {
                        return Err(format!(
                            "{key}.response_format[{j}]: \"{f}\" is not one of {RESPONSE_FORMATS:?}"
                        ));
                    }
                }
            }
            if let Some(re) = &r.regex {
                regex::Regex::new(re).map_err(|e| format!("{key}.regex: {e}"))?;
            }
            if let Some(kws) = &r.keywords {
                if kws.is_empty() {
                    return Err(format!("{key}.keywords: list at least one keyword"));
                }
                if let Some(j) = kws.iter().position(|k| k.is_empty()) {
                    return Err(format!("{key}.keywords[{j}]: a keyword must not be empty"));
                }
            }
            if let Some(models) = &r.models {
                if models.is_empty() {
                    return Err(format!("{key}.models: list at least one model alias"));
                }
            }
        }
        if let Some(s) = &self.semantic {
            if s.examples.is_empty() {
                return Err(
                    "classes.semantic.examples: give at least one class with example prompts"
                        .into(),
                );
            }
            for (class, texts) in &s.examples {
                self.check_class_ref(&format!("classes.semantic.examples.{class}"), class)?;
                if texts.is_empty() {
                    return Err(format!(
                        "classes.semantic.examples.{class}: give at least one example"
                    ));
                }
                if let Some(j) = texts.iter().position(|t| t.trim().is_empty()) {
                    return Err(format!(
                        "classes.semantic.examples.{class}[{j}]: an example must not be empty"
                    ));
                }
            }
            if s.k == 0 {
                return Err("classes.semantic.k: must be at least 1".into());
            }
            if !(2..=512).contains(&s.max_tokens) {
                return Err(format!(
                    "classes.semantic.max_tokens: {} is outside 2..=512 (MiniLM's window)",
                    s.max_tokens
                ));
            }
            if !(-1.0..=1.0).contains(&s.min_similarity) {
                return Err(format!(
                    "classes.semantic.min_similarity: {} is not a cosine similarity in -1..=1",
                    s.min_similarity
                ));
            }
            if s.max_concurrent == Some(0) {
                return Err("classes.semantic.max_concurrent: must be at least 1".into());
            }
            if let Some(busy) = &s.busy_class {
                self.check_class_ref("classes.semantic.busy_class", busy)?;
                if s.max_wait_ms.is_none() {
                    return Err(
                        "classes.semantic.busy_class: set max_wait_ms too (without a \
                                wait limit requests wait, and busy_class is never used)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

//! The price catalog (`prices/catalog.toml`, compiled in, replaceable by a file) and the cost of
//! a request's tokens.

use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_api::TokenUsage;

use crate::MeterError;

/// The only unit the catalog and config overrides may use.
pub const UNIT: &str = "USD per 1M tokens";

const BUILTIN: &str = include_str!("../../../prices/catalog.toml");

fn default_unit() -> String {
    UNIT.to_string()
}

/// Prices of one model, USD per 1M tokens. Comes from the catalog, or from config as a
/// per-target override (`price = { input_per_mtok = .., output_per_mtok = .., source = .., as_of = .. }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Prompt-cache reads; billed at `input_per_mtok` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    /// Prompt-cache writes; billed at `input_per_mtok` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
    /// Prices that apply to the whole request once the prompt exceeds a size (Gemini 2.5 Pro,
    /// Claude Sonnet 4.x above 200k tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextPrice>,
    #[serde(default = "default_unit")]
    pub unit: String,
    /// Where the figure comes from (a URL, or how a self-hosted price was worked out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The date the figure was checked, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

/// A long-context tier: applies when the prompt has more than `above_input_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextPrice {
    pub above_input_tokens: u64,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    /// Checks the unit and that every figure is a finite, non-negative number.
    pub fn validate(&self) -> Result<(), String> {
        if self.unit != UNIT {
            return Err(format!("unit must be {UNIT:?}, not {:?}", self.unit));
        }
        let mut figures = vec![
            ("input_per_mtok", Some(self.input_per_mtok)),
            ("output_per_mtok", Some(self.output_per_mtok)),
            ("cached_input_per_mtok", self.cached_input_per_mtok),
            ("cache_write_per_mtok", self.cache_write_per_mtok),
        ];
        if let Some(l) = &self.long_context {
            figures.extend([
                ("long_context.input_per_mtok", Some(l.input_per_mtok)),
                ("long_context.output_per_mtok", Some(l.output_per_mtok)),
                (
                    "long_context.cached_input_per_mtok",
                    l.cached_input_per_mtok,
                ),
                ("long_context.cache_write_per_mtok", l.cache_write_per_mtok),
            ]);
        }
        for (name, v) in figures {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("{name} must be a non-negative number, not {v}"));
                }
            }
        }
        Ok(())
    }
}

/// USD for a request's tokens: uncached input at the input price, cache reads at the cached
/// price, cache writes at the cache-write price (each falling back to the input price), output
/// (reasoning included) at the output price.
pub fn cost(price: &Price, usage: &TokenUsage) -> f64 {
    let (input, output, cached, write) = match &price.long_context {
        Some(l) if usage.input_tokens > l.above_input_tokens => (
            l.input_per_mtok,
            l.output_per_mtok,
            l.cached_input_per_mtok.unwrap_or(l.input_per_mtok),
            l.cache_write_per_mtok.unwrap_or(l.input_per_mtok),
        ),
        _ => (
            price.input_per_mtok,
            price.output_per_mtok,
            price.cached_input_per_mtok.unwrap_or(price.input_per_mtok),
            price.cache_write_per_mtok.unwrap_or(price.input_per_mtok),
        ),
    };
    let micro = usage.uncached_input_tokens() as f64 * input
        + usage.cached_input_tokens as f64 * cached
        + usage.cache_creation_input_tokens as f64 * write
        + usage.output_tokens as f64 * output;
    micro / 1_000_000.0
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// Provider kind (`gen_ai.provider.name`) the price applies to.
    pub provider: String,
    pub model: String,
    pub price: Price,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    price: Vec<RawEntry>,
}

/// A catalog entry as written: `Price`'s fields beside `provider` and `model` (spelled out
/// rather than `#[serde(flatten)]`, which would let misspelt keys through).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    provider: String,
    model: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: Option<f64>,
    cache_write_per_mtok: Option<f64>,
    long_context: Option<LongContextPrice>,
    #[serde(default = "default_unit")]
    unit: String,
    source: Option<String>,
    as_of: Option<String>,
}

impl From<RawEntry> for CatalogEntry {
    fn from(r: RawEntry) -> Self {
        CatalogEntry {
            provider: r.provider,
            model: r.model,
            price: Price {
                input_per_mtok: r.input_per_mtok,
                output_per_mtok: r.output_per_mtok,
                cached_input_per_mtok: r.cached_input_per_mtok,
                cache_write_per_mtok: r.cache_write_per_mtok,
                long_context: r.long_context,
                unit: r.unit,
                source: r.source,
                as_of: r.as_of,
            },
        }
    }
}

/// Model prices by provider kind and model name.
#[derive(Debug, Clone, Default)]
pub struct PriceCatalog {
    entries: Vec<CatalogEntry>,
}

impl PriceCatalog {
    /// The catalog compiled into the binary (`prices/catalog.toml`).
    pub fn builtin() -> Result<PriceCatalog, MeterError> {
        Self::from_toml(BUILTIN)
    }

    /// A catalog file that replaces the built-in one.
    pub fn from_path(path: &Path) -> Result<PriceCatalog, MeterError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MeterError::Catalog(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses and checks a catalog: every entry needs a valid price, a `source` and an `as_of`
    /// date, and no (provider, model) may appear twice.
    pub fn from_toml(text: &str) -> Result<PriceCatalog, MeterError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| MeterError::Catalog(e.to_string()))?;
        let entries: Vec<CatalogEntry> = file.price.into_iter().map(CatalogEntry::from).collect();
        let mut seen = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let at = format!("price[{i}] ({}/{})", e.provider, e.model);
            e.price
                .validate()
                .map_err(|m| MeterError::Catalog(format!("{at}: {m}")))?;
            if e.price.source.as_deref().unwrap_or("").is_empty() {
                return Err(MeterError::Catalog(format!("{at}: source is required")));
            }
            if !e.price.as_of.as_deref().is_some_and(is_date) {
                return Err(MeterError::Catalog(format!(
                    "{at}: as_of must be a YYYY-MM-DD date"
                )));
            }
            if !seen.insert((
                e.provider.to_ascii_lowercase(),
                e.model.to_ascii_lowercase(),
            )) {
                return Err(MeterError::Catalog(format!("{at}: listed twice")));
            }
        }
        Ok(PriceCatalog { entries })
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// Finds the price of `model` served through a provider of kind `provider_kind`.
    ///
    /// Names compare case-insensitively, after dropping a `models/` prefix (Gemini) and a
    /// `vendor/` prefix equal to the provider kind. Tried in order:
    /// 1. the exact name (so a snapshot with its own price, `gpt-4o-2024-05-13`, keeps it);
    /// 2. the name without a trailing snapshot date: `-YYYY-MM-DD` (OpenAI), `-YYYYMMDD` or
    ///    `@YYYYMMDD` (Anthropic, Vertex), or `-latest`;
    /// 3. for the `openai` kind only, which fronts many vendors through the OpenAI-compatible
    ///    adapter: the same two names under any provider, if exactly one entry matches.
    pub fn lookup(&self, provider_kind: &str, model: &str) -> Option<&CatalogEntry> {
        let kind = provider_kind.to_ascii_lowercase();
        let mut name = model.trim().to_ascii_lowercase();
        if let Some(rest) = name.strip_prefix("models/") {
            name = rest.to_string();
        }
        if let Some(rest) = name.strip_prefix(&format!("{kind}/")) {
            name = rest.to_string();
        }
        let undated = strip_snapshot(&name);
        let candidates: Vec<&str> = match &undated {
            Some(u) => vec![name.as_str(), u.as_str()],
            None => vec![name.as_str()],
        };
        for c in &candidates {
            if let Some(e) = self
                .entries
                .iter()
                .find(|e| e.provider.eq_ignore_ascii_case(&kind) && e.model.eq_ignore_ascii_case(c))
            {
                return Some(e);
            }
        }
        if kind == "openai" {
            for c in &candidates {
                let mut hits = self
                    .entries
                    .iter()
                    .filter(|e| e.model.eq_ignore_ascii_case(c));
                if let (Some(e), None) = (hits.next(), hits.next()) {
                    return Some(e);
                }
            }
        }
        None
    }
}

impl CatalogEntry {
    /// `catalog:<provider>/<model>@<as_of>`, the ledger's `price_source`.
    pub fn source_label(&self) -> String {
        // `concat`, not `format!`: this runs per ledger record.
        [
            "catalog:",
            &self.provider,
            "/",
            &self.model,
            "@",
            self.price.as_of.as_deref().unwrap_or("?"),
        ]
        .concat()
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The model name without a trailing snapshot date or `-latest`, if it has one.
fn strip_snapshot(name: &str) -> Option<String> {
    if let Some(base) = name.strip_suffix("-latest") {
        return Some(base.to_string());
    }
    let b = name.as_bytes();
    let n = b.len();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    // -YYYY-MM-DD
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && digits(n - 10..n - 6)
        && digits(n - 5..n - 3)
        && digits(n - 2..n)
    {
        return Some(name[..n - 11].to_string());
    }
    // -YYYYMMDD or @YYYYMMDD
    if n > 9 && (b[n - 9] == b'-' || b[n - 9] == b'@') && digits(n - 8..n) {
        return Some(name[..n - 9].to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64) -> Price {
        Price {
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            long_context: None,
            unit: UNIT.into(),
            source: Some("test".into()),
            as_of: Some("2026-01-01".into()),
        }
    }

    fn usage(input: u64, cached: u64, written: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            cache_creation_input_tokens: written,
            reasoning_tokens: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cost_charges_each_kind_of_token_at_its_price() {
        let mut p = price(3.0, 15.0);
        p.cached_input_per_mtok = Some(0.3);
        p.cache_write_per_mtok = Some(3.75);
        // 1M prompt tokens: 600k uncached, 300k cache reads, 100k cache writes; 200k output.
        let c = cost(&p, &usage(1_000_000, 300_000, 100_000, 200_000));
        assert!(
            close(c, 0.6 * 3.0 + 0.3 * 0.3 + 0.1 * 3.75 + 0.2 * 15.0),
            "{c}"
        );
    }

    #[test]
    fn cached_and_written_tokens_fall_back_to_the_input_price() {
        let p = price(2.0, 8.0);
        let c = cost(&p, &usage(1_000, 400, 100, 10));
        assert!(close(c, (1_000.0 * 2.0 + 10.0 * 8.0) / 1e6), "{c}");
    }

    #[test]
    fn long_context_price_applies_above_its_threshold() {
        let cat = PriceCatalog::builtin().unwrap();
        let p = &cat.lookup("gemini", "gemini-2.5-pro").unwrap().price;
        let short = cost(p, &usage(200_000, 0, 0, 1_000_000));
        let long = cost(p, &usage(200_001, 0, 0, 1_000_000));
        assert!(close(short, 0.2 * 1.25 + 10.0), "{short}");
        assert!(close(long, 0.200001 * 2.5 + 15.0), "{long}");
    }

    #[test]
    fn builtin_catalog_has_reference_prices() {
        let cat = PriceCatalog::builtin().unwrap();
        let io = |k: &str, m: &str| {
            let p = &cat.lookup(k, m).unwrap().price;
            (p.input_per_mtok, p.output_per_mtok)
        };
        assert_eq!(io("openai", "gpt-4o"), (2.5, 10.0));
        assert_eq!(io("openai", "gpt-5"), (1.25, 10.0));
        assert_eq!(io("anthropic", "claude-sonnet-4-5"), (3.0, 15.0));
        assert_eq!(io("anthropic", "claude-opus-4-5"), (5.0, 25.0));
        assert_eq!(io("gemini", "gemini-2.5-pro"), (1.25, 10.0));
        assert_eq!(io("gemini", "gemini-2.5-flash"), (0.30, 2.50));
    }

    #[test]
    fn lookup_matches_dated_snapshots() {
        let cat = PriceCatalog::builtin().unwrap();
        let model = |k: &str, m: &str| cat.lookup(k, m).map(|e| e.model.clone());
        assert_eq!(
            model("openai", "gpt-4o-2024-08-06").as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            model("openai", "GPT-4.1-mini-2025-04-14").as_deref(),
            Some("gpt-4.1-mini")
        );
        // A snapshot with its own entry keeps its own price.
        assert_eq!(
            model("openai", "gpt-4o-2024-05-13").as_deref(),
            Some("gpt-4o-2024-05-13")
        );
        assert_eq!(
            model("anthropic", "claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            model("anthropic", "claude-haiku-4-5@20251001").as_deref(),
            Some("claude-haiku-4-5")
        );
        assert_eq!(
            model("anthropic", "claude-3-5-haiku-latest").as_deref(),
            Some("claude-3-5-haiku")
        );
        assert_eq!(
            model("gemini", "models/gemini-2.5-flash").as_deref(),
            Some("gemini-2.5-flash")
        );
        // Through the OpenAI-compatible adapter a unique model name is found under its vendor.
        assert_eq!(
            model("openai", "gemini-2.5-pro").as_deref(),
            Some("gemini-2.5-pro")
        );
        // Other kinds do not borrow across vendors, and unknown models have no price.
        assert_eq!(model("anthropic", "gpt-4o"), None);
        assert_eq!(model("openai", "gpt-4o-mini-tts"), None);
        assert_eq!(model("openai", "llama-3.1-8b"), None);
        // A date that is not at the end is part of the name.
        assert_eq!(model("openai", "gpt-4o-2024-08-06-ft"), None);
    }

    #[test]
    fn catalog_rejects_entries_without_source_date_or_unit() {
        let entry = |extra: &str| {
            format!("[[price]]\nprovider = \"p\"\nmodel = \"m\"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n{extra}")
        };
        assert!(PriceCatalog::from_toml(&entry("source = \"s\"\nas_of = \"2026-01-01\"")).is_ok());
        assert!(PriceCatalog::from_toml(&entry("as_of = \"2026-01-01\"")).is_err());
        assert!(PriceCatalog::from_toml(&entry("source = \"s\"\nas_of = \"Jan 2026\"")).is_err());
        assert!(PriceCatalog::from_toml(&entry(
            "source = \"s\"\nas_of = \"2026-01-01\"\nunit = \"USD per 1K tokens\""
        ))
        .is_err());
        assert!(PriceCatalog::from_toml(&entry(
            "source = \"s\"\nas_of = \"2026-01-01\"\ninput_per_mtok_typo = 1"
        ))
        .is_err());
    }

    #[test]
    fn price_override_parses_from_config_form() {
        let p: Price = toml::from_str(
            "input_per_mtok = 0.05\noutput_per_mtok = 0.10\nsource = \"own estimate\"\nas_of = \"2026-11-01\"",
        )
        .unwrap();
        assert_eq!(p.unit, UNIT);
        assert!(p.validate().is_ok());
        assert_eq!(p.cached_input_per_mtok, None);
    }
}

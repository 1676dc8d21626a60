//! Configuration: raw TOML → validated (pure, no I/O) → built (reads env vars, opens files).
//!
//! Validation names the key at fault (`routes[0].targets[1].provider: ...`) so that
//! `switchyard config check` explains a bad file without starting anything.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
};

use serde::Deserialize;
use switchyard_balance::BalanceConfig;
use switchyard_classify::ClassesConfig;
use switchyard_meter::TargetMeterConfig;
use switchyard_providers::{
    anthropic::AnthropicConfig, gemini::GeminiConfig, openai::OpenAiConfig,
};
use switchyard_router::{BreakerConfig, ChoicePolicy, RetryPolicy, TargetTimeouts};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, bytes (larger → 413).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before closing them.
    #[serde(default = "default_drain_ms")]
    pub shutdown_grace_ms: u64,
    /// Requests (POST /v1/...) served at once, streams included until they end; more are
    /// refused at once with 503 and `Retry-After` instead of queueing. Each one in flight holds
    /// ~70 KB of connection buffers (client and upstream side), so this bounds memory under
    /// overload: 4,096 ≈ 300 MB.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Worker threads serving requests, each a single-threaded runtime with its own listening
    /// socket. Default: two per CPU this process may use (`WORKERS_PER_CPU`, see `serve_blocking`).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Client connections: how long the gateway waits on a client before closing.
    #[serde(default)]
    pub connections: ConnectionsSection,
    #[serde(default)]
    pub ledger: LedgerSection,
    #[serde(default)]
    pub prices: PricesSection,
    /// Virtual keys. With none configured, the gateway asks for no key.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Defaults for every target, overridable per target.
    #[serde(default)]
    pub defaults: TargetDefaults,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    /// Metering facts per target id (`provider/model`): price override, energy profile, grid.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetMeterConfig>,
    /// Workload classes and how a request gets one.
    #[serde(default)]
    pub classes: Option<ClassesConfig>,
    #[serde(default)]
    pub policies: Policies,
}

/// Governance rules that hold whatever the route says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Requests of these classes only ever go to self-hosted targets, fallbacks included
    /// (e.g. `["sensitive"]`); a route with none for them answers 403.
    #[serde(default)]
    pub self_hosted_only: Vec<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4000))
}
fn default_max_body() -> usize {
    8 * 1024 * 1024
}
fn default_max_in_flight() -> usize {
    4096
}
fn default_drain_ms() -> u64 {
    30_000
}

/// Timeouts on client connections (the gateway's HTTP/1.1 server, `switchyard-h1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsSection {
    /// A request's head must be complete this long after its first byte (else 408).
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Longest wait for the next piece of a request body (else 408).
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Longest wait for a client to take more of an answer before the connection is closed.
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
}

fn default_header_timeout_ms() -> u64 {
    30_000
}
fn default_body_timeout_ms() -> u64 {
    60_000
}
fn default_idle_timeout_ms() -> u64 {
    75_000
}
fn default_send_timeout_ms() -> u64 {
    60_000
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        ConnectionsSection {
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            send_timeout_ms: default_send_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    #[serde(default = "default_ledger_path")]
    pub path: PathBuf,
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
}

fn default_ledger_path() -> PathBuf {
    PathBuf::from("switchyard-ledger.sqlite")
}
fn default_queue() -> usize {
    65_536
}
fn default_batch() -> usize {
    512
}
fn default_flush_ms() -> u64 {
    200
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            path: default_ledger_path(),
            queue_capacity: default_queue(),
            batch_size: default_batch(),
            flush_interval_ms: default_flush_ms(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesSection {
    /// A catalog file replacing the built-in one.
    #[serde(default)]
    pub catalog: Option<PathBuf>,
}

/// A virtual key. The secret itself comes from an environment variable, never the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    pub key_env: String,
    #[serde(default)]
    pub team: Option<String>,
    /// Routes this key may use; empty = all.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Workload class given to this key's requests when nothing else decides.
    #[serde(default)]
    pub default_class: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDefaults {
    #[serde(default)]
    pub timeouts: Option<TargetTimeouts>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
}

/// `[providers.NAME]`: which adapter, and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    Openai(OpenAiConfig),
    Anthropic(AnthropicConfig),
    Gemini(GeminiConfig),
    #[cfg(feature = "local")]
    Local(switchyard_local::LocalConfig),
    /// Read so that the error says what is missing, rather than "unknown variant".
    #[cfg(not(feature = "local"))]
    Local(toml::Table),
}

impl ProviderConfig {
    fn validate(&self) -> Result<(), String> {
        match self {
            ProviderConfig::Openai(c) => c.validate(),
            ProviderConfig::Anthropic(c) => c.validate(),
            ProviderConfig::Gemini(c) => c.validate(),
            #[cfg(feature = "local")]
            ProviderConfig::Local(c) => c.validate(),
            #[cfg(not(feature = "local"))]
            ProviderConfig::Local(_) => Err(
                "this build has no local engine: build switchyard with `--features local`".into(),
            ),
        }
    }

    /// Whether data sent to this provider stays on machines we run.
    pub fn is_self_hosted(&self) -> bool {
        match self {
            ProviderConfig::Openai(c) => is_local_url(&c.base_url),
            ProviderConfig::Anthropic(_) => false,
            ProviderConfig::Gemini(c) => is_local_url(&c.base_url),
            ProviderConfig::Local(_) => true,
        }
    }
}

fn is_local_url(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The public model name clients ask for.
    pub name: String,
    /// Targets for requests without a class entry below, tried as `policy` orders them.
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub policy: ChoicePolicy,
    /// Targets whose `quality` is below this are not used by this choice.
    #[serde(default)]
    pub quality_floor: Option<f64>,
    /// The targets are equivalent replicas: a balancer picks among them.
    #[serde(default)]
    pub balance: Option<BalanceConfig>,
    /// The `learned` policy's router.
    #[serde(default)]
    pub learned: Option<LearnedConfig>,
    /// Per workload class: its own candidates and policy.
    #[serde(default)]
    pub classes: BTreeMap<String, ClassChoiceConfig>,
}

/// A router trained with `switchyard router train`, for `policy = "learned"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedConfig {
    /// The JSON file `switchyard router train` wrote.
    pub model: PathBuf,
    /// Re-aim the threshold at this share of strong calls (default: as trained).
    #[serde(default)]
    pub strong_share: Option<f64>,
    /// The all-MiniLM-L6-v2 folder (default: `$SWITCHYARD_MODEL_DIR` or `models/`).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
}

/// `[routes.classes.NAME]`: the targets a class deserves on this route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassChoiceConfig {
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub policy: ChoicePolicy,
    #[serde(default)]
    pub quality_floor: Option<f64>,
    #[serde(default)]
    pub balance: Option<BalanceConfig>,
    #[serde(default)]
    pub learned: Option<LearnedConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub timeouts: Option<TargetTimeouts>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Overrides whether the target counts as self-hosted (default: derived from the provider).
    #[serde(default)]
    pub self_hosted: Option<bool>,
    /// The target's quality for this choice (e.g. eval accuracy, 0..1), for `quality_floor`.
    #[serde(default)]
    pub quality: Option<f64>,
    /// Relative weight for the `weighted` policy.
    #[serde(default)]
    pub weight: Option<f64>,
}

impl TargetConfig {
    pub fn id(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// A config problem, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Parses TOML text; errors say the line and the key.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| {
                    let start = s.start.min(text.len());
                    let line = text[..start].matches('\n').count() + 1;
                    // Name the key written on that line, when there is one.
                    let written = text.lines().nth(line - 1).unwrap_or("");
                    match written.split_once('=') {
                        Some((k, _)) if !k.trim().is_empty() => {
                            format!("line {line} ({})", k.trim())
                        }
                        _ => format!("line {line}"),
                    }
                })
                .unwrap_or_else(|| "config".to_string());
            err(key, e.message().to_string())
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        let cfg = Self::from_toml(&text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything that can be checked without I/O; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(err("max_body_bytes", "must be at least 1024"));
        }
        if self.max_in_flight == 0 {
            return Err(err("max_in_flight", "must be at least 1"));
        }
        if self.workers == Some(0) {
            return Err(err("workers", "must be at least 1"));
        }
        let c = &self.connections;
        for (key, ms) in [
            ("connections.header_timeout_ms", c.header_timeout_ms),
            ("connections.body_timeout_ms", c.body_timeout_ms),
            ("connections.idle_timeout_ms", c.idle_timeout_ms),
            ("connections.send_timeout_ms", c.send_timeout_ms),
        ] {
            if ms == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        if self.ledger.queue_capacity == 0 {
            return Err(err("ledger.queue_capacity", "must be at least 1"));
        }
        if self.ledger.batch_size == 0 {
            return Err(err("ledger.batch_size", "must be at least 1"));
        }
        if self.providers.is_empty() {
            return Err(err("providers", "at least one provider is needed"));
        }
        for (name, p) in &self.providers {
            if name.is_empty() || name.contains('/') {
                return Err(err(
                    format!("providers.{name}"),
                    "a provider name must be non-empty and hold no '/'",
                ));
            }
            p.validate()
                .map_err(|m| err(format!("providers.{name}"), m))?;
        }
        if self.routes.is_empty() {
            return Err(err("routes", "at least one route is needed"));
        }
        let mut names = HashSet::new();
        let mut target_ids = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if r.name.is_empty() {
                return Err(err(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(r.name.as_str()) {
                return Err(err(
                    format!("{key}.name"),
                    format!("route '{}' is defined twice", r.name),
                ));
            }
            if r.targets.is_empty() {
                return Err(err(
                    format!("{key}.targets"),
                    "a route needs at least one target",
                ));
            }
            self.validate_targets(&format!("{key}.targets"), &r.targets, &mut target_ids)?;
            check_learned(&key, r.policy, r.learned.as_ref())?;
            if let Some(b) = &r.balance {
                b.validate().map_err(|m| err(format!("{key}.balance"), m))?;
            }
            for (class, c) in &r.classes {
                let ckey = format!("{key}.classes.{class}");
                match &self.classes {
                    Some(cc) => cc
                        .check_class_ref(&ckey, class)
                        .map_err(|m| err(ckey.clone(), m))?,
                    None => {
                        return Err(err(
                            ckey,
                            "class choices need a [classes] section defining the classes",
                        ))
                    }
                }
                if c.targets.is_empty() {
                    return Err(err(
                        format!("{ckey}.targets"),
                        "a class choice needs at least one target",
                    ));
                }
                self.validate_targets(&format!("{ckey}.targets"), &c.targets, &mut target_ids)?;
                check_learned(&ckey, c.policy, c.learned.as_ref())?;
                if let Some(b) = &c.balance {
                    b.validate()
                        .map_err(|m| err(format!("{ckey}.balance"), m))?;
                }
            }
        }
        for id in self.targets.keys() {
            if !target_ids.contains(id) {
                return Err(err(
                    format!("targets.\"{id}\""),
                    "no route uses this target (ids are `provider/model`)",
                ));
            }
        }
        if let Some(c) = &self.classes {
            c.validate().map_err(|m| err("classes", m))?;
        }
        for (i, class) in self.policies.self_hosted_only.iter().enumerate() {
            let key = format!("policies.self_hosted_only[{i}]");
            match &self.classes {
                Some(c) => c
                    .check_class_ref(&key, class)
                    .map_err(|m| err(key.clone(), m))?,
                None => return Err(err(key, "needs a [classes] section defining the class")),
            }
        }
        for (id, t) in &self.targets {
            let key = format!("targets.\"{id}\"");
            if let Some(p) = &t.price {
                p.validate().map_err(|m| err(format!("{key}.price"), m))?;
            }
            if let Some(e) = &t.energy {
                e.validate().map_err(|m| err(format!("{key}.energy"), m))?;
            }
        }
        let mut key_names = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if !key_names.insert(k.name.as_str()) {
                return Err(err(
                    format!("keys[{i}].name"),
                    format!("key '{}' is defined twice", k.name),
                ));
            }
            if k.key_env.is_empty() {
                return Err(err(
                    format!("keys[{i}].key_env"),
                    "must name an environment variable",
                ));
            }
            for r in &k.routes {
                if !names.contains(r.as_str()) {
                    return Err(err(
                        format!("keys[{i}].routes"),
                        format!("no route named '{r}'"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_targets(
        &self,
        key: &str,
        targets: &[TargetConfig],
        target_ids: &mut HashSet<String>,
    ) -> Result<(), ConfigError> {
        for (j, t) in targets.iter().enumerate() {
            let tkey = format!("{key}[{j}]");
            if !self.providers.contains_key(&t.provider) {
                return Err(err(
                    format!("{tkey}.provider"),
                    format!(
                        "no provider named '{}' (known: {})",
                        t.provider,
                        self.provider_names()
                    ),
                ));
            }
            if t.model.is_empty() {
                return Err(err(format!("{tkey}.model"), "must not be empty"));
            }
            let timeouts = t.timeouts.or(self.defaults.timeouts).unwrap_or_default();
            if timeouts.first_token_ms == 0 || timeouts.total_ms == 0 || timeouts.connect_ms == 0 {
                return Err(err(
                    format!("{tkey}.timeouts"),
                    "timeouts must be above 0 ms",
                ));
            }
            if timeouts.first_token_ms > timeouts.total_ms {
                return Err(err(
                    format!("{tkey}.timeouts.first_token_ms"),
                    "must not exceed total_ms",
                ));
            }
            let breaker = t.breaker.or(self.defaults.breaker).unwrap_or_default();
            if breaker.failures == 0 {
                return Err(err(
                    format!("{tkey}.breaker.failures"),
                    "must be at least 1",
                ));
            }
            if t.weight.is_some_and(|w| !(w >= 0.0 && w.is_finite())) {
                return Err(err(format!("{tkey}.weight"), "must be a number ≥ 0"));
            }
            target_ids.insert(t.id());
        }
        Ok(())
    }

    fn provider_names(&self) -> String {
        self.providers
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What `switchyard serve` runs with no config: the built-in local engine serving SmolLM2
/// as `local/smollm2`, the SQLite ledger in the working directory. `model_dir` holds
/// `SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/fetch-models.sh puts it in `models/`).
pub fn embedded_default(model_dir: &std::path::Path) -> Result<Config, ConfigError> {
    let gguf = model_dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let text = format!(
        r#"
listen = "127.0.0.1:4000"
[ledger]
path = "switchyard-ledger.sqlite"
[providers.local]
kind = "local"
model_path = {gguf:?}
[[routes]]
name = "local/smollm2"
targets = [{{ provider = "local", model = "smollm2" }}]
"#,
        gguf = gguf.display().to_string()
    );
    Config::from_toml(&text)
}

fn check_learned(
    key: &str,
    policy: ChoicePolicy,
    learned: Option<&LearnedConfig>,
) -> Result<(), ConfigError> {
    match (policy, learned) {
        (ChoicePolicy::Learned, None) => Err(err(
            format!("{key}.learned"),
            "policy \"learned\" needs `learned = { model = \"router.json\" }`",
        )),
        (p, Some(_)) if p != ChoicePolicy::Learned => Err(err(
            format!("{key}.learned"),
            "only used with policy = \"learned\"",
        )),
        (_, Some(l)) if l.strong_share.is_some_and(|s| !(0.0..=1.0).contains(&s)) => Err(err(
            format!("{key}.learned.strong_share"),
            "must be between 0 and 1",
        )),
        _ => Ok(()),
    }
}

/// The commented example config that `switchyard init` writes.
pub const EXAMPLE: &str = include_str!("../../../switchyard.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8080/v1"

[[routes]]
name = "chat"
targets = [{ provider = "local", model = "m" }]
"#;

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert!(c.providers["local"].is_self_hosted());
    }

    #[cfg(feature = "local")]
    #[test]
    fn embedded_default_is_valid() {
        let c = embedded_default(std::path::Path::new("models")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.routes[0].name, "local/smollm2");
    }

    #[test]
    fn example_config_is_valid() {
        let c = Config::from_toml(EXAMPLE).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn unknown_provider_is_named_by_key() {
        let bad = MIN.replace("provider = \"local\"", "provider = \"nope\"");
        let e = Config::from_toml(&bad).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "routes[0].targets[0].provider");
        assert!(e.message.contains("nope"));
    }

    #[test]
    fn unknown_field_is_reported_with_its_line() {
        let bad = format!("{MIN}\n[ledger]\npathh = \"x\"\n");
        let e = Config::from_toml(&bad).unwrap_err();
        assert!(e.message.contains("pathh"), "{e}");
        assert!(e.key.starts_with("line "), "{e}");
    }

    #[test]
    fn bad_base_url_and_duplicate_routes() {
        let bad = MIN.replace("http://127.0.0.1:8080/v1", "ftp://x");
        let e = Config::from_toml(&bad).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "providers.local");
        let dup = format!("{MIN}\n[[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"local\", model = \"m\" }}]\n");
        let e = Config::from_toml(&dup).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "routes[1].name");
    }

    #[test]
    fn gemini_provider_is_read_validated_and_remote_unless_local() {
        let gemini = MIN.replace(
            "kind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"",
            "kind = \"gemini\"\napi_key_env = \"GEMINI_API_KEY\"",
        );
        let c = Config::from_toml(&gemini).unwrap();
        c.validate().unwrap();
        let ProviderConfig::Gemini(g) = &c.providers["local"] else {
            panic!("{:?}", c.providers["local"])
        };
        assert_eq!(
            g.base_url,
            "https://generativelanguage.googleapis.com/v1beta"
        );
        assert!(!c.providers["local"].is_self_hosted());
        let local = gemini.replace(
            "api_key_env = \"GEMINI_API_KEY\"",
            "base_url = \"http://127.0.0.1:9/v1beta\"",
        );
        assert!(Config::from_toml(&local).unwrap().providers["local"].is_self_hosted());
        let bad = gemini.replace("GEMINI_API_KEY", "");
        let e = Config::from_toml(&bad).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "providers.local");
        assert!(e.message.contains("api_key_env"), "{e}");
        // The example's commented block, uncommented, is a valid provider.
        let block: String = EXAMPLE
            .lines()
            .skip_while(|l| *l != "# [providers.gemini]")
            .take(3)
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        assert!(
            block.starts_with("[providers.gemini]\nkind = \"gemini\""),
            "{block}"
        );
        let with_block = format!("{block}{}", MIN);
        Config::from_toml(&with_block).unwrap().validate().unwrap();
    }

    #[test]
    fn first_token_timeout_must_fit_in_total() {
        let bad = MIN.replace(
            "model = \"m\" }",
            "model = \"m\", timeouts = { first_token_ms = 5000, total_ms = 1000 } }",
        );
        let e = Config::from_toml(&bad).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "routes[0].targets[0].timeouts.first_token_ms");
    }
}

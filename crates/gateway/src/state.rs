//! The built gateway: config turned into live providers, routes, keys and the meter.

use std::{collections::HashMap, sync::Arc, time::Duration};

use switchyard_classify::Classifier;
use switchyard_meter::Meter;
use switchyard_providers::{anthropic::Anthropic, gemini::Gemini, openai::OpenAi, DynProvider};
use switchyard_router::{Candidate, Choice, ChoicePolicy, CircuitBreaker, Route, Target};
use tokio_util::task::TaskTracker;

use crate::config::{Config, ProviderConfig, TargetConfig};

/// A virtual key, as requests see it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub name: Arc<str>,
    pub team: Option<Arc<str>>,
    /// Routes this key may use; empty = all.
    pub routes: Vec<String>,
    pub default_class: Option<Arc<str>>,
}

/// Everything a request needs, shared read-only across requests.
pub struct Gateway {
    pub routes: HashMap<String, Arc<Route>>,
    /// Route names in config order, for `/v1/models`.
    pub route_names: Vec<String>,
    /// Secret → key. Empty = no authentication required.
    pub keys: HashMap<String, KeyInfo>,
    pub meter: Meter,
    /// Each priced target's price (config override or catalog), resolved once at build time
    /// for the cost header; the ledger works its cost out from the same prices.
    pub prices: HashMap<String, switchyard_meter::Price>,
    /// Assigns workload classes; `None` when no `[classes]` are configured (the header and key
    /// default then pass through as free-form labels).
    pub classifier: Option<Arc<Classifier>>,
    /// The bound on MiniLM forwards, shared by the semantic class step and the learned routers
    /// (the classifier's, with its `max_concurrent` and `max_wait_ms`, else the defaults); none
    /// when neither runs MiniLM.
    pub minilm: Option<Arc<switchyard_classify::ForwardGate>>,
    /// Classes that may only use self-hosted targets.
    pub self_hosted_only: Vec<String>,
    pub max_body_bytes: usize,
    /// Timeouts on client connections.
    pub connections: crate::config::ConnectionsSection,
    /// Admission: requests in flight, and how many were refused for it.
    pub admission: Arc<Admission>,
    /// Tracks the tasks that finish requests (ledger hand-off), so shutdown waits for them.
    pub tasks: TaskTracker,
    /// Set when shutdown begins: `/readyz` answers 503.
    pub draining: std::sync::atomic::AtomicBool,
    pub started_at: std::time::Instant,
}

/// Bounds the requests served at once (`max_in_flight`): past it a request is refused before
/// its body is read, so an overload costs a short answer rather than memory and queueing.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    in_flight: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicU64,
}

/// One admitted request's place; dropping it (when the answer or stream ends, or the client
/// goes away) frees it.
#[derive(Debug)]
pub struct InFlight(Arc<Admission>);

impl Admission {
    pub fn new(limit: usize) -> Admission {
        Admission {
            limit,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A place, or `None` (counted) when `limit` requests are already in flight.
    pub fn admit(self: &Arc<Self>) -> Option<InFlight> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.fetch_add(1, Relaxed) >= self.limit {
            self.in_flight.fetch_sub(1, Relaxed);
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        Some(InFlight(self.clone()))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A provider that could not be built (usually a missing environment variable).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BuildError {
    pub key: String,
    pub message: String,
}

/// Builds provider instances. The one `match` over provider kinds lives here.
pub fn build_provider(
    name: &str,
    cfg: &ProviderConfig,
    connect_timeout: Duration,
) -> Result<DynProvider, String> {
    let client =
        switchyard_providers::HttpClients::per_thread(move || http_client(connect_timeout))?;
    Ok(match cfg {
        ProviderConfig::Openai(c) => Arc::new(OpenAi::build(name, c, client)?),
        ProviderConfig::Anthropic(c) => Arc::new(Anthropic::build(name, c, client)?),
        ProviderConfig::Gemini(c) => Arc::new(Gemini::build(name, c, client)?),
        #[cfg(feature = "local")]
        ProviderConfig::Local(c) => Arc::new(switchyard_local::Local::build(name, c)?),
        #[cfg(not(feature = "local"))]
        ProviderConfig::Local(_) => {
            return Err("this build has no local engine (`--features local`)".into())
        }
    })
}

/// The HTTP client for upstream calls (see [`switchyard_providers::HttpClient`]).
pub fn http_client(connect_timeout: Duration) -> Result<switchyard_providers::HttpClient, String> {
    switchyard_providers::HttpClient::new(connect_timeout)
}

impl Gateway {
    /// Builds providers, routes and keys from a validated config (reads env vars, loads models).
    pub fn build(cfg: &Config, meter: Meter) -> Result<Gateway, BuildError> {
        let mut builder = TargetBuilder {
            cfg,
            meter: &meter,
            instances: HashMap::new(),
            targets: HashMap::new(),
            prices: HashMap::new(),
            embedders: Embedders::default(),
        };
        let mut routes = HashMap::new();
        let mut route_names = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let default = builder.choice(
                &key,
                &r.targets,
                r.policy,
                r.quality_floor,
                r.balance.as_ref(),
                r.learned.as_ref(),
            )?;
            let mut classes = HashMap::new();
            for (class, c) in &r.classes {
                let ckey = format!("{key}.classes.{class}");
                let choice = builder.choice(
                    &ckey,
                    &c.targets,
                    c.policy,
                    c.quality_floor,
                    c.balance.as_ref(),
                    c.learned.as_ref(),
                )?;
                classes.insert(class.clone(), choice);
            }
            route_names.push(r.name.clone());
            routes.insert(
                r.name.clone(),
                Arc::new(Route {
                    name: r.name.as_str().into(),
                    default,
                    classes,
                }),
            );
        }
        if let Some(busy) = cfg
            .classes
            .as_ref()
            .and_then(|c| busy_class_outside_self_hosted(c, &cfg.policies.self_hosted_only))
        {
            tracing::warn!(
                busy_class = %busy,
                self_hosted_only = ?cfg.policies.self_hosted_only,
                "classes.semantic.max_wait_ms is set and the requests it skips take a class outside \
                 policies.self_hosted_only: while the classifier is overloaded, prompts its examples \
                 would keep self-hosted may reach any target (set busy_class to a self-hosted class)"
            );
        }
        let classifier = match &cfg.classes {
            Some(c) => Some(Arc::new(Classifier::build(c).map_err(|message| {
                BuildError {
                    key: "classes".into(),
                    message,
                }
            })?)),
            None => None,
        };
        let mut keys = HashMap::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            let secret = switchyard_providers::secret_from_env(&k.key_env).map_err(|message| {
                BuildError {
                    key: format!("keys[{i}].key_env"),
                    message,
                }
            })?;
            keys.insert(
                secret,
                KeyInfo {
                    name: k.name.as_str().into(),
                    team: k.team.as_deref().map(Into::into),
                    routes: k.routes.clone(),
                    default_class: k.default_class.as_deref().map(Into::into),
                },
            );
        }
        let prices = builder.prices;
        let minilm = match classifier.as_ref().and_then(|c| c.forward_gate()) {
            Some(gate) => Some(gate.clone()),
            None if !builder.embedders.is_empty() => {
                Some(Arc::new(switchyard_classify::ForwardGate::new(None, None)))
            }
            None => None,
        };
        Ok(Gateway {
            routes,
            route_names,
            keys,
            meter,
            prices,
            classifier,
            minilm,
            self_hosted_only: cfg.policies.self_hosted_only.clone(),
            max_body_bytes: cfg.max_body_bytes,
            connections: cfg.connections.clone(),
            admission: Arc::new(Admission::new(cfg.max_in_flight)),
            tasks: TaskTracker::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            started_at: std::time::Instant::now(),
        })
    }
}

/// With a wait limit on the semantic step, a request it had no time for takes `busy_class` (or
/// the default class). When classes are kept self-hosted and that class is not one of them, a
/// prompt the examples would have called, say, `sensitive` may reach any target while the
/// classifier is overloaded: allowed (the operator may accept it), but said at start-up. The
/// class (`(none)` for no class) when that is so.
fn busy_class_outside_self_hosted(
    classes: &switchyard_classify::ClassesConfig,
    kept: &[String],
) -> Option<String> {
    let s = classes.semantic.as_ref()?;
    if s.max_wait_ms.is_none() || kept.is_empty() {
        return None;
    }
    match s.busy_class.as_ref().or(classes.default.as_ref()) {
        Some(b) if kept.contains(b) => None,
        Some(b) => Some(b.clone()),
        None => Some("(none)".into()),
    }
}

/// Builds targets once per id, so that a target used by several routes or classes shares one
/// circuit breaker and one latency estimate (its first definition sets its limits).
struct TargetBuilder<'a> {
    cfg: &'a Config,
    meter: &'a Meter,
    /// One provider instance per (provider, connect timeout): connect limits are per client.
    instances: HashMap<(String, u64), DynProvider>,
    targets: HashMap<String, Arc<Target>>,
    prices: HashMap<String, switchyard_meter::Price>,
    /// MiniLM for learned routers, loaded once per model folder and token budget.
    embedders: Embedders,
}

/// Loaded MiniLM embedders by (model folder, word pieces embedded): routers trained with the
/// same ones share one; a router trained on another budget gets its own, since the budget is
/// part of what its scores were fitted on.
#[derive(Default)]
struct Embedders(HashMap<(std::path::PathBuf, usize), Arc<switchyard_classify::Embedder>>);

impl Embedders {
    /// Whether any learned router loaded MiniLM.
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(
        &mut self,
        dir: &std::path::Path,
        max_tokens: usize,
    ) -> Result<Arc<switchyard_classify::Embedder>, String> {
        let key = (dir.to_path_buf(), max_tokens);
        if let Some(e) = self.0.get(&key) {
            return Ok(e.clone());
        }
        let e = Arc::new(switchyard_classify::Embedder::load(dir, max_tokens)?);
        self.0.insert(key, e.clone());
        Ok(e)
    }
}

/// The `learned` policy: a trained router over MiniLM embeddings of the last user message.
#[derive(Debug)]
struct LearnedPredictor {
    router: switchyard_learn::LearnedRouter,
    embedder: Arc<switchyard_classify::Embedder>,
}

impl switchyard_router::StrongPredictor for LearnedPredictor {
    fn wants_strong(&self, prompt: &str) -> Result<bool, String> {
        Ok(self
            .router
            .route_strong(self.router.p_strong_text(&self.embedder, prompt)?))
    }
}

impl TargetBuilder<'_> {
    fn target(&mut self, key: &str, t: &TargetConfig) -> Result<Arc<Target>, BuildError> {
        let id = t.id();
        if let Some(existing) = self.targets.get(&id) {
            return Ok(existing.clone());
        }
        let cfg = self.cfg;
        let pcfg = cfg.providers.get(&t.provider).ok_or_else(|| BuildError {
            key: format!("{key}.provider"),
            message: format!("no provider named '{}'", t.provider),
        })?;
        let timeouts = t.timeouts.or(cfg.defaults.timeouts).unwrap_or_default();
        let provider = match self
            .instances
            .get(&(t.provider.clone(), timeouts.connect_ms))
        {
            Some(p) => p.clone(),
            None => {
                let p = build_provider(
                    &t.provider,
                    pcfg,
                    Duration::from_millis(timeouts.connect_ms),
                )
                .map_err(|message| BuildError {
                    key: format!("providers.{}", t.provider),
                    message,
                })?;
                self.instances
                    .insert((t.provider.clone(), timeouts.connect_ms), p.clone());
                p
            }
        };
        let price = self.meter.price_for(&id, provider.kind(), &t.model);
        let per_mtok = price
            .as_ref()
            .map(|(p, _)| (p.input_per_mtok, p.output_per_mtok));
        if let Some((p, _)) = price {
            self.prices.insert(id.clone(), p);
        }
        let target = Arc::new(Target::new(
            id.clone(),
            provider,
            t.model.clone(),
            timeouts,
            t.retry.or(cfg.defaults.retry).unwrap_or_default(),
            CircuitBreaker::new(t.breaker.or(cfg.defaults.breaker).unwrap_or_default()),
            t.self_hosted.unwrap_or_else(|| pcfg.is_self_hosted()),
            per_mtok,
        ));
        self.targets.insert(id, target.clone());
        Ok(target)
    }

    fn choice(
        &mut self,
        key: &str,
        targets: &[TargetConfig],
        policy: ChoicePolicy,
        quality_floor: Option<f64>,
        balance: Option<&switchyard_balance::BalanceConfig>,
        learned: Option<&crate::config::LearnedConfig>,
    ) -> Result<Choice, BuildError> {
        let learned: Option<Arc<dyn switchyard_router::StrongPredictor>> = match learned {
            Some(l) => {
                let lerr = |message: String| BuildError {
                    key: format!("{key}.learned"),
                    message,
                };
                let mut router = switchyard_learn::LearnedRouter::load(&l.model).map_err(lerr)?;
                if let Some(share) = l.strong_share {
                    router.set_strong_share(share);
                }
                let dir = l
                    .model_dir
                    .clone()
                    .unwrap_or_else(switchyard_classify::default_model_dir);
                let embedder = self.embedders.get(&dir, router.max_tokens).map_err(lerr)?;
                Some(Arc::new(LearnedPredictor { router, embedder }))
            }
            None => None,
        };
        let mut candidates = Vec::new();
        for (j, t) in targets.iter().enumerate() {
            candidates.push(Candidate {
                target: self.target(&format!("{key}.targets[{j}]"), t)?,
                quality: t.quality,
                weight: t.weight.unwrap_or(1.0),
            });
        }
        let balancer = match balance {
            Some(b) => Some(Arc::new(
                switchyard_balance::Balance::new(
                    b.clone(),
                    candidates.len(),
                    tokio::time::Instant::now(),
                )
                .map_err(|message| BuildError {
                    key: format!("{key}.balance"),
                    message,
                })?,
            )),
            None => None,
        };
        Ok(Choice {
            policy,
            candidates,
            quality_floor,
            balancer,
            learned,
        })
    }
}

#[cfg(test)]
mod embedders_tests {
    use super::Embedders;

    /// Needs MiniLM (scripts/fetch-models.sh); fails loudly without it.
    #[test]
    fn routers_share_an_embedder_only_with_the_same_token_budget() {
        let dir = switchyard_classify::default_model_dir();
        let mut embedders = Embedders::default();
        let load = |e: &mut Embedders, n| e.get(&dir, n).unwrap_or_else(|e| panic!("{e}"));
        let a = load(&mut embedders, 64);
        let b = load(&mut embedders, 64);
        let c = load(&mut embedders, 32);
        assert!(std::sync::Arc::ptr_eq(&a, &b), "same budget: one embedder");
        assert!(!std::sync::Arc::ptr_eq(&a, &c), "another budget: its own");
        assert_eq!((a.max_tokens(), c.max_tokens()), (64, 32));
    }
}

#[cfg(test)]
mod busy_class_tests {
    use super::busy_class_outside_self_hosted;

    #[test]
    fn a_busy_class_outside_self_hosted_classes_is_named() {
        let mut classes: switchyard_classify::ClassesConfig = toml::from_str(
            r#"
            names = ["chat", "sensitive"]
            default = "chat"
            [semantic]
            max_wait_ms = 5
            [semantic.examples]
            sensitive = ["my passport number is"]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kept = vec!["sensitive".to_string()];
        // No busy class: the default, `chat`, is not kept self-hosted.
        assert_eq!(
            busy_class_outside_self_hosted(&classes, &kept).as_deref(),
            Some("chat")
        );
        // Nothing is kept self-hosted: nothing to warn about.
        assert_eq!(busy_class_outside_self_hosted(&classes, &[]), None);
        let semantic = classes
            .semantic
            .as_mut()
            .unwrap_or_else(|| panic!("semantic"));
        semantic.busy_class = Some("sensitive".into());
        assert_eq!(busy_class_outside_self_hosted(&classes, &kept), None);
        // Without a wait limit requests wait for the classifier: no class is skipped to.
        let semantic = classes
            .semantic
            .as_mut()
            .unwrap_or_else(|| panic!("semantic"));
        semantic.busy_class = None;
        semantic.max_wait_ms = None;
        assert_eq!(busy_class_outside_self_hosted(&classes, &kept), None);
        // No default and no busy class: such requests go unclassified.
        classes.default = None;
        let semantic = classes
            .semantic
            .as_mut()
            .unwrap_or_else(|| panic!("semantic"));
        semantic.max_wait_ms = Some(0);
        assert_eq!(
            busy_class_outside_self_hosted(&classes, &kept).as_deref(),
            Some("(none)")
        );
    }
}

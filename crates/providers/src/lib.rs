//! Provider adapters: one file per wire format, all behind [`Provider`].
//!
//! An adapter turns a [`ChatCall`] (the client's OpenAI-shaped request plus the target's model
//! name) into the provider's request, and the provider's answer back into OpenAI shapes:
//! a whole [`Completion`] or a [`ChunkStream`] of OpenAI SSE events. Adapters report the
//! usage the provider gave; estimating what it did not give is the meter's job.
//!
//! Timeouts on the first token and the whole call, retries and fallbacks are the gateway's:
//! an adapter makes one attempt.

pub mod anthropic;
mod chunk;
pub mod client;
mod error;
pub mod gemini;
mod h1;
pub mod openai;
mod pool;
mod stream;

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use switchyard_api::{
    openai::{ChatRequest, EmbeddingsRequest},
    TokenUsage,
};

pub use client::HttpClient;
pub use error::{ProviderError, ProviderErrorKind};
pub use stream::{ChunkStream, StreamItem, StreamSummary};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt at one target.
#[derive(Debug, Clone)]
pub struct ChatCall {
    /// The client's request as received (its `model` is the public route name).
    pub request: Arc<ChatRequest>,
    /// The model name the target knows (the target's own, shared).
    pub model: Arc<str>,
    /// The JSON body `request` was parsed from, as the client sent it (OpenAI-shaped requests);
    /// an OpenAI-compatible target gets these bytes with only `model` edited.
    pub original: Option<bytes::Bytes>,
}

#[derive(Debug, Clone)]
pub struct EmbeddingsCall {
    pub request: Arc<EmbeddingsRequest>,
    pub model: Arc<str>,
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The OpenAI-shaped JSON body for the client.
    pub body: Bytes,
    /// Usage as the provider reported it; `None` when it reported none.
    pub usage: Option<TokenUsage>,
    /// The model name the provider says answered.
    pub response_model: Option<String>,
    /// The answer's text, kept only when usage is missing so the meter can count it.
    pub output_text: Option<String>,
    /// Energy the provider measured or estimated itself (the local engine does).
    pub energy: Option<Energy>,
}

/// Energy a provider reports for one request, with the method that produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Energy {
    pub wh: f64,
    /// `measured-rapl`, `estimated-cpu-time`, ...
    pub method: &'static str,
}

/// What a chat call returns: the shape follows `request.stream`.
pub enum ChatOutput {
    Complete(Completion),
    Stream(ChunkStream),
}

impl std::fmt::Debug for ChatOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatOutput::Complete(c) => f.debug_tuple("Complete").field(c).finish(),
            ChatOutput::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A model provider. One instance per configured provider (base URL + credentials);
/// the model is chosen per call.
pub trait Provider: Send + Sync + 'static {
    /// The configured name of this provider instance.
    fn name(&self) -> &str;

    /// The OpenTelemetry `gen_ai.provider.name` value (`openai`, `anthropic`, ...).
    fn kind(&self) -> &'static str;

    /// One chat completion attempt.
    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatOutput, ProviderError>>;

    /// One embeddings attempt. Providers without embeddings answer 404-like `Unsupported`.
    fn embeddings(
        &self,
        _call: EmbeddingsCall,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::unsupported(format!(
                "provider '{}' does not serve embeddings",
                self.name()
            )))
        })
    }
}

pub type DynProvider = Arc<dyn Provider>;

/// The HTTP clients a provider calls upstream with: one per calling thread, or one shared.
///
/// Why per thread: a pooled keep-alive connection is driven by a task on the runtime that
/// opened it. With one single-threaded runtime per core (how `switchyard serve` runs), a
/// request reusing a connection opened by another thread would hand its call to that thread
/// and back, two cross-thread wake-ups per request. A client per thread keeps every call on
/// the thread that serves the request.
#[derive(Clone)]
pub struct HttpClients {
    inner: Arc<ClientsInner>,
}

type MakeClient = dyn Fn() -> Result<HttpClient, String> + Send + Sync;

struct ClientsInner {
    /// Tells this set's clients apart in the thread-local table.
    id: u64,
    /// Built up front so configuration errors show at start-up; also the fallback.
    first: HttpClient,
    make: Option<Box<MakeClient>>,
}

impl HttpClients {
    /// A client per calling thread, each built by `make` on the thread's first call.
    pub fn per_thread(
        make: impl Fn() -> Result<HttpClient, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let first = make()?;
        Ok(HttpClients {
            inner: Arc::new(ClientsInner {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                first,
                make: Some(Box::new(make)),
            }),
        })
    }

    /// The client for the calling thread (a cheap handle clone).
    pub fn get(&self) -> HttpClient {
        let Some(make) = &self.inner.make else {
            return self.inner.first.clone();
        };
        thread_local! {
            // A handful of providers per process: a linear scan beats hashing here. Entries
            // live as long as the thread (providers are built once per process).
            static CLIENTS: std::cell::RefCell<Vec<(u64, HttpClient)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some((_, c)) = clients.iter().find(|(id, _)| *id == self.inner.id) {
                return c.clone();
            }
            // Building can only fail as the first build did not; fall back to the shared one.
            let c = make().unwrap_or_else(|_| self.inner.first.clone());
            clients.push((self.inner.id, c.clone()));
            c
        })
    }
}

impl From<HttpClient> for HttpClients {
    /// One client shared by every thread.
    fn from(client: HttpClient) -> Self {
        HttpClients {
            inner: Arc::new(ClientsInner {
                id: u64::MAX,
                first: client,
                make: None,
            }),
        }
    }
}

/// The headers every call of a provider carries: its credential (marked sensitive, so it never
/// shows in `Debug` output), the config's extra headers, the JSON content type, and for a
/// plain-http `upstream` its `Host` (unless the extra headers set one).
pub(crate) fn static_headers(
    credential: Option<(http::HeaderName, http::HeaderValue)>,
    extra: &std::collections::BTreeMap<String, String>,
    upstream: &http::Uri,
) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some((name, mut value)) = credential {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(host) = client::plain_http_host(upstream) {
        headers.entry(http::header::HOST).or_insert(host);
    }
    headers
}

/// The credential header a provider sends: `name`, valued `value(key)` with the key read from
/// the environment variable `api_key_env` names; none when the config names no variable.
pub(crate) fn credential_from_env(
    api_key_env: Option<&str>,
    name: http::HeaderName,
    value: impl FnOnce(&str) -> String,
) -> Result<Option<(http::HeaderName, http::HeaderValue)>, String> {
    let Some(var) = api_key_env else {
        return Ok(None);
    };
    let key = secret_from_env(var)?;
    let v = http::HeaderValue::from_str(&value(&key))
        .map_err(|_| format!("{var} holds characters not allowed in a header"))?;
    Ok(Some((name, v)))
}

/// Reads a secret from the environment variable the config names. The value is never logged.
pub fn secret_from_env(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("environment variable {var} is not set")),
    }
}

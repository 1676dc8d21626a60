//! The HTTP face: `POST /v1/chat/completions` in the OpenAI wire format
//! (<https://platform.openai.com/docs/api-reference/chat/create> and "The chat completion chunk
//! object"), answered with the simulated engine's timing in real time.
//!
//! Streams send a chunk with `delta.role` and the first token when prefill ends, one chunk per
//! later token, a chunk with `finish_reason`, then — if `stream_options.include_usage` is set —
//! a chunk with `choices: []` and `usage`, and `data: [DONE]`.
//!
//! Extension fields in the request body (not OpenAI's; for trace replay):
//! - `x_hash_ids`: array of integers, the prompt's block ids (Mooncake trace `hash_ids`); used as
//!   the prefix identity instead of hashing the prompt text;
//! - `x_input_tokens`: prompt length in tokens, instead of the estimate `ceil(bytes / 4)`;
//! - `x_output_tokens`: answer length in tokens, instead of `default_output_tokens` (either way
//!   capped by `max_completion_tokens` / `max_tokens`).
//!
//! Usage reports `prompt_tokens_details.cached_tokens`: the prompt tokens found in the prefix
//! cache.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{rejection::JsonRejection, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_api::{
    openai::{
        ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, PromptTokensDetails,
        ResponseMessage, Usage,
    },
    ApiError, ErrorKind,
};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{chain_keys, Engine, Event, Reject, SimRequest};
use crate::profile::Profile;

/// Bytes of prompt text per token, for the token estimate and text block hashing.
const BYTES_PER_TOKEN: usize = 4;

/// A simulated server's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub profile: Profile,
    /// Model name reported in responses (any requested name is accepted).
    #[serde(default = "default_model")]
    pub model: String,
    /// Answer length when the request does not say (`x_output_tokens`).
    #[serde(default = "default_output_tokens")]
    pub default_output_tokens: u32,
}

fn default_model() -> String {
    "sim".into()
}

fn default_output_tokens() -> u32 {
    64
}

impl SimConfig {
    pub fn new(profile: Profile) -> Self {
        SimConfig {
            model: default_model(),
            default_output_tokens: default_output_tokens(),
            profile,
        }
    }
}

/// Serves `profile` on `addr` until the process ends.
pub async fn serve(profile: Profile, addr: SocketAddr) -> anyhow::Result<()> {
    run_server(SimConfig::new(profile), addr).await
}

/// Binds `listen` and serves; the entry point of `switchyard sim`.
pub async fn run_server(cfg: SimConfig, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_listener(cfg, listener).await
}

/// Serves on a bound listener (bind port 0 in tests and read the address first).
pub async fn serve_listener(
    cfg: SimConfig,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    cfg.profile
        .validate()
        .map_err(|e| anyhow::anyhow!("profile: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = Engine::new(cfg.profile.clone()).with_token_events(true);
    let app = router(Arc::new(AppState {
        cfg,
        engine: tx,
        next_id: AtomicU64::new(1),
    }));
    // The engine loop ends only when the server (holding the sender) is gone.
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        () = engine_loop(engine, rx) => {}
    }
    Ok(())
}

struct AppState {
    cfg: SimConfig,
    engine: mpsc::UnboundedSender<Cmd>,
    next_id: AtomicU64,
}

enum Cmd {
    Submit {
        req: SimRequest,
        events: mpsc::UnboundedSender<Event>,
        accepted: oneshot::Sender<Result<(), Reject>>,
    },
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

/// Runs engine steps in real time. Commands that arrive during a step join the next one.
async fn engine_loop(mut engine: Engine, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut subscribers: HashMap<u64, mpsc::UnboundedSender<Event>> = HashMap::new();
    let mut events = Vec::new();
    let mut deadline = tokio::time::Instant::now();
    loop {
        let step = loop {
            while let Ok(cmd) = rx.try_recv() {
                apply(&mut engine, &mut subscribers, cmd);
            }
            if let Some(secs) = engine.plan_step() {
                break secs;
            }
            // Nothing to run: sleep until a request comes.
            match rx.recv().await {
                Some(cmd) => apply(&mut engine, &mut subscribers, cmd),
                None => return,
            }
            deadline = tokio::time::Instant::now();
        };
        // Absolute deadlines, so timer slack does not add up over many short steps.
        let now = tokio::time::Instant::now();
        deadline = deadline.max(now.checked_sub(Duration::from_millis(50)).unwrap_or(now));
        deadline += Duration::from_secs_f64(step);
        tokio::time::sleep_until(deadline).await;
        events.clear();
        engine.finish_step(&mut events);
        for ev in &events {
            let id = ev.id();
            let gone = subscribers.get(&id).is_none_or(|tx| tx.send(*ev).is_err());
            if matches!(ev, Event::Done { .. }) {
                subscribers.remove(&id);
            } else if gone {
                // The client went away: stop spending the simulated GPU on it.
                engine.cancel(id);
                subscribers.remove(&id);
            }
        }
    }
}

fn apply(engine: &mut Engine, subs: &mut HashMap<u64, mpsc::UnboundedSender<Event>>, cmd: Cmd) {
    match cmd {
        Cmd::Submit {
            req,
            events,
            accepted,
        } => {
            let id = req.id;
            let r = engine.submit(req);
            if r.is_ok() {
                subs.insert(id, events);
            }
            let _ = accepted.send(r);
        }
    }
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model, "object": "model", "created": 0, "owned_by": "switchyard-sim"}]
    }))
    .into_response()
}

fn error_response(err: ApiError, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        err.to_openai_json(),
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
    }
    resp
}

/// The simulated request behind a chat request, and whether the answer was cut by max_tokens.
fn to_sim_request(
    id: u64,
    req: &ChatRequest,
    cfg: &SimConfig,
) -> Result<(SimRequest, bool), ApiError> {
    let text = req.prompt_text();
    let input = match req.extra.get("x_input_tokens") {
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::invalid("x_input_tokens must be an integer").with_param("x_input_tokens")
        })?,
        None => text.len().div_ceil(BYTES_PER_TOKEN) as u64,
    };
    let wanted = match req.extra.get("x_output_tokens") {
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::invalid("x_output_tokens must be an integer").with_param("x_output_tokens")
        })?,
        None => u64::from(cfg.default_output_tokens),
    };
    let cap = req.max_output_tokens().unwrap_or(u64::MAX);
    let output = wanted.min(cap).max(1);
    let blocks = match req.extra.get("x_hash_ids") {
        Some(v) => {
            let ids = v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64()).collect::<Option<Vec<u64>>>())
                .ok_or_else(|| {
                    ApiError::invalid("x_hash_ids must be an array of integers")
                        .with_param("x_hash_ids")
                })?;
            chain_keys(ids)
        }
        None => {
            let block_bytes = cfg.profile.block_tokens as usize * BYTES_PER_TOKEN;
            chain_keys(text.as_bytes().chunks_exact(block_bytes).map(fnv1a))
        }
    };
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok((
        SimRequest {
            id,
            input_tokens: clamp(input),
            output_tokens: clamp(output),
            blocks,
        },
        wanted > cap,
    ))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn usage(input: u32, output: u32, cached: u32) -> Usage {
    Usage {
        prompt_tokens: u64::from(input),
        completion_tokens: u64::from(output),
        total_tokens: u64::from(input) + u64::from(output),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(u64::from(cached)),
            cache_creation_tokens: None,
        }),
        completion_tokens_details: None,
    }
}

fn token_text(i: u32) -> String {
    format!("tok{i} ")
}

async fn chat(
    State(st): State<Arc<AppState>>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error_response(ApiError::invalid(e.body_text()), None),
    };
    if let Err(e) = req.validate() {
        return error_response(e, None);
    }
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let (sim_req, capped) = match to_sim_request(id, &req, &st.cfg) {
        Ok(x) => x,
        Err(e) => return error_response(e, None),
    };
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (ok_tx, ok_rx) = oneshot::channel();
    let sent = st.engine.send(Cmd::Submit {
        req: sim_req,
        events: ev_tx,
        accepted: ok_tx,
    });
    let accepted = match sent {
        Ok(()) => ok_rx.await.ok(),
        Err(_) => None,
    };
    match accepted {
        Some(Ok(())) => {}
        Some(Err(Reject::QueueFull)) => {
            return error_response(
                ApiError::new(ErrorKind::RateLimited, "the simulated server's queue is full"),
                Some(1),
            )
        }
        Some(Err(Reject::TooLong {
            needed_tokens,
            capacity_tokens,
        })) => {
            return error_response(
                ApiError::invalid(format!(
                    "this request needs {needed_tokens} tokens of KV cache; the server holds {capacity_tokens}"
                ))
                .with_code("context_length_exceeded"),
                None,
            )
        }
        None => {
            return error_response(ApiError::new(ErrorKind::Unavailable, "the simulated engine stopped"), None)
        }
    }
    let finish = if capped { "length" } else { "stop" };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let meta = ChunkMeta {
        id: format!("chatcmpl-sim-{id}"),
        model: st.cfg.model.clone(),
        created,
        finish,
    };
    if req.is_stream() {
        stream_reply(meta, ev_rx, req.wants_stream_usage())
    } else {
        plain_reply(meta, ev_rx).await
    }
}

struct ChunkMeta {
    id: String,
    model: String,
    created: u64,
    finish: &'static str,
}

impl ChunkMeta {
    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
            }],
            usage: None,
        }
    }
}

async fn plain_reply(meta: ChunkMeta, mut rx: mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut n = 0u32;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::FirstToken { .. } | Event::Token { .. } => {
                text.push_str(&token_text(n));
                n += 1;
            }
            Event::Done {
                input_tokens,
                output_tokens,
                cached_tokens,
                ..
            } => {
                let body = ChatCompletion {
                    id: meta.id,
                    object: "chat.completion".into(),
                    created: meta.created,
                    model: meta.model,
                    choices: vec![Choice {
                        index: 0,
                        message: ResponseMessage {
                            role: "assistant".into(),
                            content: Some(text),
                            tool_calls: None,
                            refusal: None,
                        },
                        finish_reason: Some(meta.finish.into()),
                        logprobs: None,
                    }],
                    usage: Some(usage(input_tokens, output_tokens, cached_tokens)),
                    system_fingerprint: None,
                };
                return Json(body).into_response();
            }
        }
    }
    error_response(
        ApiError::new(
            ErrorKind::Internal,
            "the simulated engine dropped the request",
        ),
        None,
    )
}

fn stream_reply(meta: ChunkMeta, rx: mpsc::UnboundedReceiver<Event>, with_usage: bool) -> Response {
    struct S {
        meta: ChunkMeta,
        rx: mpsc::UnboundedReceiver<Event>,
        n: u32,
        done: bool,
        with_usage: bool,
    }
    let st = S {
        meta,
        rx,
        n: 0,
        done: false,
        with_usage,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let ev = st.rx.recv().await?;
        let mut out = Vec::new();
        let mut push = |c: &ChatChunk| {
            if let Ok(json) = serde_json::to_vec(c) {
                switchyard_api::sse::encode_data(&mut out, &json);
            }
        };
        match ev {
            Event::FirstToken { .. } | Event::Token { .. } => {
                if st.n == 0 {
                    push(&st.meta.chunk(
                        Delta {
                            role: Some("assistant".into()),
                            content: Some(String::new()),
                            tool_calls: None,
                        },
                        None,
                    ));
                }
                push(&st.meta.chunk(
                    Delta {
                        content: Some(token_text(st.n)),
                        ..Delta::default()
                    },
                    None,
                ));
                st.n += 1;
            }
            Event::Done {
                input_tokens,
                output_tokens,
                cached_tokens,
                ..
            } => {
                push(&st.meta.chunk(Delta::default(), Some(st.meta.finish)));
                if st.with_usage {
                    let mut c = st.meta.chunk(Delta::default(), None);
                    c.choices.clear();
                    c.usage = Some(usage(input_tokens, output_tokens, cached_tokens));
                    push(&c);
                }
                switchyard_api::sse::encode_data(&mut out, b"[DONE]");
                st.done = true;
            }
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

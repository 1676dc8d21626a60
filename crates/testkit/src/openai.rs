//! An OpenAI Chat Completions / Embeddings server, after the OpenAI API reference
//! (<https://platform.openai.com/docs/api-reference/chat/create>, "The chat completion chunk
//! object", <https://platform.openai.com/docs/api-reference/embeddings>) and the error guide
//! (<https://platform.openai.com/docs/guides/error-codes>, "Rate limits": 429 with
//! `retry-after`, `x-ratelimit-*` headers).
//!
//! Streams: a first chunk with `delta.role`, one chunk per token, a chunk with
//! `finish_reason`, then — only if the request set `stream_options.include_usage` — a chunk with
//! `choices: []` and `usage`; every chunk carries `"usage": null` in that case. Ends with
//! `data: [DONE]`.

use crate::{async_stream, lock, DropGuard, Script};
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Value};

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal answer, plain or streamed as the request asks.
    Answer(Answer),
    /// An error status with OpenAI's error body.
    Error {
        status: u16,
        message: String,
        code: Option<String>,
        retry_after: Option<String>,
    },
    /// A stream that sends `after` tokens and then nothing, keeping the connection open.
    Stall { after: usize },
    /// A stream that sends `after` tokens and then breaks the connection.
    Cut { after: usize },
    /// An answer that calls a tool.
    ToolCall { name: String, arguments: String },
    /// Wait before answering at all (headers included).
    Delay(Duration, Box<Reply>),
    /// A 200 `application/json` answer with this body as it is, well formed or not (a broken
    /// server, or a valid answer laid out unusually).
    Raw(String),
}

/// A normal answer's shape.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Tokens of the answer (the text is `tok0 tok1 ...` unless `text` is set).
    pub tokens: usize,
    pub text: Option<String>,
    pub first_token_delay: Duration,
    pub inter_token_delay: Duration,
    /// Whether usage is reported (some servers never report it).
    pub usage: bool,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            tokens: 8,
            text: None,
            first_token_delay: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            usage: true,
            cached_tokens: 0,
            reasoning_tokens: 0,
        }
    }
}

impl Answer {
    fn pieces(&self) -> Vec<String> {
        match &self.text {
            Some(t) => {
                let mut v: Vec<String> = t.split_inclusive(' ').map(str::to_string).collect();
                if v.is_empty() {
                    v.push(String::new());
                }
                v
            }
            None => (0..self.tokens)
                .map(|i| {
                    if i == 0 {
                        format!("tok{i}")
                    } else {
                        format!(" tok{i}")
                    }
                })
                .collect(),
        }
    }
}

/// Shared state: a script of replies (then the default), and what was received.
pub struct MockOpenAi {
    script: Script<Reply>,
    received: Mutex<Vec<Value>>,
    received_raw: Mutex<Vec<Bytes>>,
    received_headers: Mutex<Vec<HeaderMap>>,
    pub requests: AtomicU64,
    /// Requests whose streams the client abandoned before the end.
    pub cancelled: Arc<AtomicU64>,
    /// Record received bodies (off for benchmarks).
    record: bool,
}

impl MockOpenAi {
    pub fn new(default: Reply) -> Arc<Self> {
        Arc::new(MockOpenAi {
            script: Script::new(default),
            received: Mutex::new(Vec::new()),
            received_raw: Mutex::new(Vec::new()),
            received_headers: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            cancelled: Arc::new(AtomicU64::new(0)),
            record: true,
        })
    }

    /// A server that keeps no record of requests, for load tests.
    pub fn new_unrecorded(default: Reply) -> Arc<Self> {
        let mut m = Self::new(default);
        if let Some(m) = Arc::get_mut(&mut m) {
            m.record = false;
        }
        m
    }

    /// Queues replies for the next requests, in order.
    pub fn push(&self, reply: Reply) {
        self.script.push(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        self.script.set_default(reply);
    }

    /// Bodies received so far.
    pub fn received(&self) -> Vec<Value> {
        lock(&self.received).clone()
    }

    /// Chat bodies received so far, byte for byte.
    pub fn received_raw(&self) -> Vec<Bytes> {
        lock(&self.received_raw).clone()
    }

    pub fn received_headers(&self) -> Vec<HeaderMap> {
        lock(&self.received_headers).clone()
    }

    fn next_reply(&self) -> Reply {
        self.script.next()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .with_state(self.clone())
    }

    /// Starts the server on loopback.
    pub async fn start(default: Reply) -> anyhow::Result<(Arc<Self>, crate::Running)> {
        let mock = Self::new(default);
        let running = crate::serve(mock.router()).await?;
        Ok((mock, running))
    }
}

fn error_response(
    status: u16,
    message: &str,
    code: Option<&str>,
    retry_after: Option<&str>,
) -> Response {
    let kind = match status {
        400 | 404 | 413 => "invalid_request_error",
        401 => "invalid_api_key",
        429 => "requests",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response();
    if let Some(ra) = retry_after {
        if let Ok(v) = HeaderValue::from_str(ra) {
            resp.headers_mut().insert("retry-after", v);
        }
        resp.headers_mut().insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
    }
    resp
}

fn prompt_tokens(body: &Value) -> u64 {
    // The mock's own count: whitespace-separated words of every message's text.
    let mut n = 0u64;
    if let Some(msgs) = body["messages"].as_array() {
        for m in msgs {
            match &m["content"] {
                Value::String(s) => n += s.split_whitespace().count() as u64,
                Value::Array(parts) => {
                    for p in parts {
                        if let Some(t) = p["text"].as_str() {
                            n += t.split_whitespace().count() as u64;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    n.max(1)
}

async fn chat(State(mock): State<Arc<MockOpenAi>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error_response(
            400,
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    if mock.record {
        lock(&mock.received).push(req.clone());
        lock(&mock.received_raw).push(body.clone());
        lock(&mock.received_headers).push(headers);
    }
    if req["model"].as_str().unwrap_or("").is_empty() {
        return error_response(400, "you must provide a model parameter", None, None);
    }
    let mut reply =
        reply_for_model(req["model"].as_str().unwrap_or("")).unwrap_or_else(|| mock.next_reply());
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    let stream = req["stream"].as_bool().unwrap_or(false);
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let model = req["model"].as_str().unwrap_or("mock").to_string();
    let prompt = prompt_tokens(&req);
    match reply {
        Reply::Error {
            status,
            message,
            code,
            retry_after,
        } => error_response(status, &message, code.as_deref(), retry_after.as_deref()),
        Reply::Answer(a) if !stream => {
            // A whole answer takes at least as long as its first token would.
            tokio::time::sleep(a.first_token_delay + a.inter_token_delay * a.tokens as u32).await;
            plain(&model, prompt, &a)
        }
        Reply::ToolCall { name, arguments } if !stream => {
            let body = json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": "call_mock1", "type": "function", "function": {"name": name, "arguments": arguments}}]},
                    "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 9, "total_tokens": prompt + 9}
            });
            Json(body).into_response()
        }
        Reply::Answer(a) => sse(streamed(
            model,
            prompt,
            a,
            include_usage,
            None,
            mock.cancelled.clone(),
        )),
        Reply::Stall { after } => {
            let a = Answer {
                tokens: after,
                ..Default::default()
            };
            sse(streamed(
                model,
                prompt,
                a,
                include_usage,
                Some(End::Stall),
                mock.cancelled.clone(),
            ))
        }
        Reply::Cut { after } => {
            let a = Answer {
                tokens: after,
                ..Default::default()
            };
            sse(streamed(
                model,
                prompt,
                a,
                include_usage,
                Some(End::Cut),
                mock.cancelled.clone(),
            ))
        }
        Reply::ToolCall { name, arguments } => {
            sse(tool_stream(model, prompt, name, arguments, include_usage))
        }
        Reply::Raw(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Reply::Delay(..) => {
            error_response(500, "unreachable: delays are unwrapped above", None, None)
        }
    }
}

/// Behaviour chosen by the upstream model name, so a gateway config can point routes at
/// misbehaving "models" in end-to-end tests: `err-<status>` (429 carries `retry-after: 1`),
/// `stall-<n>`, `cut-<n>`, `tool-<name>`, `slow-<ms>` (first token after ms), `paced-<ms>` (10 tokens, ms apart),
/// `nousage`.
pub fn reply_for_model(model: &str) -> Option<Reply> {
    let (kind, arg) = model.split_once('-').unwrap_or((model, ""));
    match kind {
        "err" => {
            let status: u16 = arg.parse().ok()?;
            Some(Reply::Error {
                status,
                message: format!("scripted error {status} from the test server"),
                code: (status == 429).then(|| "rate_limit_exceeded".to_string()),
                retry_after: (status == 429).then(|| "1".to_string()),
            })
        }
        "stall" => Some(Reply::Stall {
            after: arg.parse().ok()?,
        }),
        "cut" => Some(Reply::Cut {
            after: arg.parse().ok()?,
        }),
        "tool" => Some(Reply::ToolCall {
            name: arg.to_string(),
            arguments: "{\"city\":\"Paris\"}".to_string(),
        }),
        "slow" => Some(Reply::Answer(Answer {
            first_token_delay: Duration::from_millis(arg.parse().ok()?),
            ..Default::default()
        })),
        "nousage" => Some(Reply::Answer(Answer {
            usage: false,
            ..Default::default()
        })),
        "paced" => Some(Reply::Answer(Answer {
            tokens: 10,
            inter_token_delay: Duration::from_millis(arg.parse().ok()?),
            ..Default::default()
        })),
        _ => None,
    }
}

fn plain(model: &str, prompt: u64, a: &Answer) -> Response {
    let text: String = a.pieces().concat();
    let mut body = json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null, "finish_reason": "stop"}],
        "system_fingerprint": "fp_mock",
    });
    if a.usage {
        body["usage"] = usage_json(prompt, a);
    }
    Json(body).into_response()
}

fn usage_json(prompt: u64, a: &Answer) -> Value {
    let completion = a.pieces().len() as u64 + a.reasoning_tokens;
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": a.reasoning_tokens, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn sse(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

enum End {
    Stall,
    Cut,
}

fn chunk(model: &str, delta: Value, finish: Option<&str>, include_usage: bool) -> Bytes {
    let mut c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
        "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    if include_usage {
        c["usage"] = Value::Null;
    }
    Bytes::from(format!("data: {c}\n\n"))
}

fn streamed(
    model: String,
    prompt: u64,
    a: Answer,
    include_usage: bool,
    end: Option<End>,
    cancelled: Arc<AtomicU64>,
) -> Body {
    let s = async_stream(move |tx| async move {
        let mut guard = DropGuard {
            finished: false,
            cancelled,
        };
        tokio::time::sleep(a.first_token_delay).await;
        tx.send(Ok(chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            None,
            include_usage,
        )))
        .await?;
        for (i, p) in a.pieces().iter().enumerate() {
            if i > 0 && !a.inter_token_delay.is_zero() {
                tokio::time::sleep(a.inter_token_delay).await;
            }
            tx.send(Ok(chunk(
                &model,
                json!({"content": p}),
                None,
                include_usage,
            )))
            .await?;
        }
        match end {
            Some(End::Stall) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Some(End::Cut) => {
                // Let the tokens reach the client first, as a connection cut mid-stream would.
                tokio::time::sleep(Duration::from_millis(50)).await;
                guard.finished = true;
                tx.send(Err(std::io::Error::other(
                    "connection cut by the test server",
                )))
                .await?;
                return Ok(());
            }
            None => {}
        }
        tx.send(Ok(chunk(&model, json!({}), Some("stop"), include_usage)))
            .await?;
        if include_usage && a.usage {
            let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": usage_json(prompt, &a)});
            tx.send(Ok(Bytes::from(format!("data: {u}\n\n")))).await?;
        }
        tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await?;
        guard.finished = true;
        Ok(())
    });
    Body::from_stream(s)
}

fn tool_stream(
    model: String,
    prompt: u64,
    name: String,
    arguments: String,
    include_usage: bool,
) -> Body {
    let s = async_stream(move |tx| async move {
        let first = json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock1",
            "type": "function", "function": {"name": name, "arguments": ""}}]});
        tx.send(Ok(chunk(&model, first, None, include_usage)))
            .await?;
        let mid = arguments.len() / 2;
        let (a, b) = arguments.split_at(mid);
        for part in [a, b] {
            let d = json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]});
            tx.send(Ok(chunk(&model, d, None, include_usage))).await?;
        }
        tx.send(Ok(chunk(
            &model,
            json!({}),
            Some("tool_calls"),
            include_usage,
        )))
        .await?;
        if include_usage {
            let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 9, "total_tokens": prompt + 9}});
            tx.send(Ok(Bytes::from(format!("data: {u}\n\n")))).await?;
        }
        tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await?;
        Ok(())
    });
    Body::from_stream(s)
}

async fn embeddings(State(mock): State<Arc<MockOpenAi>>, body: Bytes) -> Response {
    mock.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error_response(
            400,
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    if mock.record {
        lock(&mock.received).push(req.clone());
    }
    if let Reply::Error {
        status,
        message,
        code,
        retry_after,
    } = mock.next_reply()
    {
        return error_response(status, &message, code.as_deref(), retry_after.as_deref());
    }
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect(),
        _ => return error_response(400, "'input' is a required property", None, None),
    };
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokens += s.split_whitespace().count().max(1) as u64;
            // A deterministic 8-dimensional vector derived from the text's bytes.
            let mut v = [0f32; 8];
            for (j, b) in s.bytes().enumerate() {
                v[j % 8] += b as f32 / 255.0;
            }
            json!({"object": "embedding", "index": i, "embedding": v.to_vec()})
        })
        .collect();
    Json(
        json!({"object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response()
}

async fn models() -> Response {
    Json(json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 1_700_000_000u64, "owned_by": "switchyard-testkit"}]}))
        .into_response()
}

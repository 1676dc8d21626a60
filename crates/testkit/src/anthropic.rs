//! An Anthropic Messages API server, after Anthropic's documentation:
//! "Messages" (<https://docs.anthropic.com/en/api/messages>), "Streaming Messages"
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>), "Errors"
//! (<https://docs.anthropic.com/en/api/errors>), "Prompt caching"
//! (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>) and "Tool use"
//! (<https://docs.anthropic.com/en/docs/build-with-claude/tool-use>).
//!
//! `POST /v1/messages` checks what the real API checks first: `x-api-key` (401
//! `authentication_error`), `anthropic-version`, a JSON body with `model`, `messages` and
//! `max_tokens`, temperature in 0..1 (400 `invalid_request_error`). Every response carries a
//! `request-id` header; error bodies are `{"type":"error","error":{"type","message"},"request_id"}`.
//!
//! Streams send `event:` lines and the documented flow: `message_start` (usage with input and
//! cache counts, `output_tokens: 1`) → per block `content_block_start`, a `ping` after the first,
//! `content_block_delta`s, `content_block_stop` → `message_delta` (stop reason, cumulative
//! `output_tokens`) → `message_stop`.

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
    routing::post,
    Json, Router,
};
use bytes::Bytes;
use serde_json::{json, Value};

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A text answer, plain or streamed as the request asks.
    Answer(Answer),
    /// An HTTP error with Anthropic's error body; `error_type` as documented
    /// (`rate_limit_error`, `overloaded_error`, `api_error`, ...).
    Error {
        status: u16,
        error_type: String,
        message: String,
        retry_after: Option<String>,
    },
    /// A stream that sends `after` text deltas, then an `error` event (e.g. `overloaded_error`).
    StreamError {
        after: usize,
        error_type: String,
        message: String,
    },
    /// A stream that sends `after` text deltas and then nothing, keeping the connection open.
    Stall { after: usize },
    /// A stream that sends `after` text deltas and then breaks the connection.
    Cut { after: usize },
    /// An answer that calls a tool (`stop_reason: tool_use`), after optional text.
    ToolUse {
        text: Option<String>,
        name: String,
        input: Value,
    },
    /// Wait before answering at all (headers included).
    Delay(Duration, Box<Reply>),
}

/// A text answer's shape.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Tokens of the answer (the text is `tok0 tok1 ...` unless `text` is set).
    pub tokens: usize,
    pub text: Option<String>,
    pub first_token_delay: Duration,
    pub inter_token_delay: Duration,
    /// Prompt tokens reported as read from the cache (`cache_read_input_tokens`).
    pub cache_read_input_tokens: u64,
    /// Prompt tokens reported as written to the cache (`cache_creation_input_tokens`).
    pub cache_creation_input_tokens: u64,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            tokens: 8,
            text: None,
            first_token_delay: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
        }
    }
}

impl Answer {
    fn pieces(&self) -> Vec<String> {
        match &self.text {
            Some(t) => t.split_inclusive(' ').map(str::to_string).collect(),
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
pub struct MockAnthropic {
    script: Script<Reply>,
    received: Mutex<Vec<Value>>,
    received_headers: Mutex<Vec<HeaderMap>>,
    /// The key `x-api-key` must equal; `None` accepts any non-empty key.
    api_key: Mutex<Option<String>>,
    pub requests: AtomicU64,
    /// Streams the client abandoned before the end.
    pub cancelled: Arc<AtomicU64>,
}

impl MockAnthropic {
    pub fn new(default: Reply) -> Arc<Self> {
        Arc::new(MockAnthropic {
            script: Script::new(default),
            received: Mutex::new(Vec::new()),
            received_headers: Mutex::new(Vec::new()),
            api_key: Mutex::new(None),
            requests: AtomicU64::new(0),
            cancelled: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues replies for the next requests, in order.
    pub fn push(&self, reply: Reply) {
        self.script.push(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        self.script.set_default(reply);
    }

    /// Accept only this key (anything else gets 401 `invalid x-api-key`).
    pub fn require_key(&self, key: &str) {
        *lock(&self.api_key) = Some(key.to_string());
    }

    /// Bodies received so far (also those refused).
    pub fn received(&self) -> Vec<Value> {
        lock(&self.received).clone()
    }

    pub fn received_headers(&self) -> Vec<HeaderMap> {
        lock(&self.received_headers).clone()
    }

    fn next_reply(&self) -> Reply {
        self.script.next()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/messages", post(messages))
            .with_state(self.clone())
    }

    /// Starts the server on loopback. Its base URL for an Anthropic client is
    /// `http://{addr}` (the client adds `/v1/messages`).
    pub async fn start(default: Reply) -> anyhow::Result<(Arc<Self>, crate::Running)> {
        let mock = Self::new(default);
        let running = crate::serve(mock.router()).await?;
        Ok((mock, running))
    }
}

const REQUEST_ID: &str = "req_mock0000000000000000";

fn error_response(
    status: u16,
    error_type: &str,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}, "request_id": REQUEST_ID});
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, Json(body)).into_response();
    resp.headers_mut()
        .insert("request-id", HeaderValue::from_static(REQUEST_ID));
    if let Some(ra) = retry_after {
        if let Ok(v) = HeaderValue::from_str(ra) {
            resp.headers_mut().insert("retry-after", v);
        }
        resp.headers_mut().insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
    }
    resp
}

/// The mock's prompt count: whitespace-separated words of the system prompt and every text
/// block, tool input and tool result.
fn input_tokens(body: &Value) -> u64 {
    fn words(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.split_whitespace().count() as u64,
            Value::Array(a) => a.iter().map(words).sum(),
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("text") => o.get("text").map(words).unwrap_or(0),
                Some("tool_use") => o
                    .get("input")
                    .map(|i| words(&Value::String(i.to_string())))
                    .unwrap_or(0),
                Some("tool_result") => o.get("content").map(words).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        }
    }
    let mut n = words(&body["system"]);
    if let Some(msgs) = body["messages"].as_array() {
        n += msgs.iter().map(|m| words(&m["content"])).sum::<u64>();
    }
    n.max(1)
}

/// Why a request is refused: status, Anthropic error type, message.
type Refusal = (u16, &'static str, String);

fn refuse_invalid(message: &str) -> Refusal {
    (400, "invalid_request_error", message.to_string())
}

/// Checks headers and body as the real API does, before any reply is chosen.
fn check(headers: &HeaderMap, body: &[u8], required_key: Option<&str>) -> Result<Value, Refusal> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return Err((
            401,
            "authentication_error",
            "x-api-key header is required".into(),
        ));
    }
    if required_key.is_some_and(|k| k != key) {
        return Err((401, "authentication_error", "invalid x-api-key".into()));
    }
    if headers.get("anthropic-version").is_none() {
        return Err(refuse_invalid("anthropic-version: header is required"));
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return Err(refuse_invalid(
            "There was an issue with your request body: it is not valid JSON",
        ));
    };
    for field in ["model", "messages", "max_tokens"] {
        if req.get(field).is_none() {
            return Err(refuse_invalid(&format!("{field}: Field required")));
        }
    }
    if req["max_tokens"].as_u64().is_none_or(|n| n < 1) {
        return Err(refuse_invalid(
            "max_tokens: Input should be greater than or equal to 1",
        ));
    }
    if let Some(t) = req.get("temperature").and_then(Value::as_f64) {
        if !(0.0..=1.0).contains(&t) {
            return Err(refuse_invalid(
                "temperature: Input should be less than or equal to 1",
            ));
        }
    }
    let roles_ok = req["messages"].as_array().is_some_and(|m| {
        !m.is_empty()
            && m.iter()
                .all(|m| matches!(m["role"].as_str(), Some("user") | Some("assistant")))
    });
    if !roles_ok {
        return Err(refuse_invalid("messages: each message needs role 'user' or 'assistant', and there must be at least one"));
    }
    Ok(req)
}

async fn messages(
    State(mock): State<Arc<MockAnthropic>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.requests.fetch_add(1, Ordering::Relaxed);
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        lock(&mock.received).push(v);
    }
    lock(&mock.received_headers).push(headers.clone());
    let required_key = lock(&mock.api_key).clone();
    let req = match check(&headers, &body, required_key.as_deref()) {
        Ok(r) => r,
        Err((status, error_type, message)) => {
            return error_response(status, error_type, &message, None)
        }
    };
    let model = req["model"].as_str().unwrap_or("").to_string();
    let mut reply = reply_for_model(&model).unwrap_or_else(|| mock.next_reply());
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    let stream = req["stream"].as_bool().unwrap_or(false);
    let max_tokens = req["max_tokens"].as_u64().unwrap_or(1) as usize;
    let ctx = Ctx {
        model,
        input_tokens: input_tokens(&req),
        max_tokens,
        cancelled: mock.cancelled.clone(),
    };
    match reply {
        Reply::Error {
            status,
            error_type,
            message,
            retry_after,
        } => error_response(status, &error_type, &message, retry_after.as_deref()),
        Reply::Answer(a) if !stream => plain_text(&ctx, &a),
        Reply::ToolUse { text, name, input } if !stream => plain_tool(&ctx, text, name, input),
        Reply::Answer(a) => sse(text_stream(ctx, a, None)),
        Reply::Stall { after } => sse(text_stream(
            ctx,
            Answer {
                tokens: after,
                ..Default::default()
            },
            Some(End::Stall),
        )),
        Reply::Cut { after } => sse(text_stream(
            ctx,
            Answer {
                tokens: after,
                ..Default::default()
            },
            Some(End::Cut),
        )),
        Reply::StreamError {
            after,
            error_type,
            message,
        } => sse(text_stream(
            ctx,
            Answer {
                tokens: after,
                ..Default::default()
            },
            Some(End::Error(error_type, message)),
        )),
        Reply::ToolUse { text, name, input } => sse(tool_stream(ctx, text, name, input)),
        // Never reached: delays are unwrapped above.
        Reply::Delay(..) => error_response(500, "api_error", "Internal server error", None),
    }
}

/// Behaviour chosen by the upstream model name, for end-to-end tests through a gateway config:
/// `err-<status>` (429 `rate_limit_error` with `retry-after: 1`, 529 `overloaded_error`,
/// others `api_error`), `stall-<n>`, `cut-<n>`, `overloaded-<n>` (an `error` event after n
/// deltas), `tool-<name>`, `slow-<ms>` (first token after ms), `cached-<n>` (n cache reads).
pub fn reply_for_model(model: &str) -> Option<Reply> {
    let (kind, arg) = model.split_once('-').unwrap_or((model, ""));
    match kind {
        "err" => {
            let status: u16 = arg.parse().ok()?;
            let error_type = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            Some(Reply::Error {
                status,
                error_type: error_type.into(),
                message: format!("scripted {error_type} from the test server"),
                retry_after: (status == 429).then(|| "1".to_string()),
            })
        }
        "stall" => Some(Reply::Stall {
            after: arg.parse().ok()?,
        }),
        "cut" => Some(Reply::Cut {
            after: arg.parse().ok()?,
        }),
        "overloaded" => Some(Reply::StreamError {
            after: arg.parse().ok()?,
            error_type: "overloaded_error".into(),
            message: "Overloaded".into(),
        }),
        "tool" => Some(Reply::ToolUse {
            text: None,
            name: arg.to_string(),
            input: json!({"city": "Paris"}),
        }),
        "slow" => Some(Reply::Answer(Answer {
            first_token_delay: Duration::from_millis(arg.parse().ok()?),
            ..Default::default()
        })),
        "cached" => Some(Reply::Answer(Answer {
            cache_read_input_tokens: arg.parse().ok()?,
            ..Default::default()
        })),
        _ => None,
    }
}

struct Ctx {
    model: String,
    input_tokens: u64,
    max_tokens: usize,
    cancelled: Arc<AtomicU64>,
}

impl Ctx {
    fn usage(&self, a: &Answer, output_tokens: usize) -> Value {
        json!({"input_tokens": self.input_tokens,
            "cache_creation_input_tokens": a.cache_creation_input_tokens,
            "cache_read_input_tokens": a.cache_read_input_tokens,
            "output_tokens": output_tokens})
    }

    fn message(&self, content: Value, stop_reason: Value, usage: Value) -> Value {
        json!({"id": "msg_mock01", "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage})
    }

    /// The answer's pieces cut at `max_tokens`, and the stop reason that follows.
    fn limit(&self, pieces: Vec<String>) -> (Vec<String>, &'static str) {
        if pieces.len() > self.max_tokens {
            (
                pieces.into_iter().take(self.max_tokens).collect(),
                "max_tokens",
            )
        } else {
            (pieces, "end_turn")
        }
    }
}

fn with_request_id(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("request-id", HeaderValue::from_static(REQUEST_ID));
    resp
}

fn plain_text(ctx: &Ctx, a: &Answer) -> Response {
    let (pieces, stop) = ctx.limit(a.pieces());
    let text: String = pieces.concat();
    let body = ctx.message(
        json!([{"type": "text", "text": text}]),
        json!(stop),
        ctx.usage(a, pieces.len()),
    );
    with_request_id(Json(body).into_response())
}

fn plain_tool(ctx: &Ctx, text: Option<String>, name: String, input: Value) -> Response {
    let mut content = vec![];
    if let Some(t) = text {
        content.push(json!({"type": "text", "text": t}));
    }
    content.push(json!({"type": "tool_use", "id": "toolu_mock01", "name": name, "input": input}));
    let body = ctx.message(
        json!(content),
        json!("tool_use"),
        ctx.usage(&Answer::default(), 9),
    );
    with_request_id(Json(body).into_response())
}

fn sse(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("request-id", REQUEST_ID)
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `event: {type}\ndata: {json}\n\n`.
fn event(data: Value) -> Result<Bytes, std::io::Error> {
    let name = data["type"].as_str().unwrap_or("unknown").to_string();
    Ok(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
}

enum End {
    Stall,
    Cut,
    Error(String, String),
}

fn text_stream(ctx: Ctx, a: Answer, end: Option<End>) -> Body {
    let s = async_stream(move |tx| async move {
        let mut guard = DropGuard {
            finished: false,
            cancelled: ctx.cancelled.clone(),
        };
        tokio::time::sleep(a.first_token_delay).await;
        let start = ctx.message(json!([]), Value::Null, ctx.usage(&a, 1));
        tx.send(event(json!({"type": "message_start", "message": start})))
            .await?;
        tx.send(event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
            .await?;
        tx.send(event(json!({"type": "ping"}))).await?;
        let (pieces, stop) = ctx.limit(a.pieces());
        for (i, p) in pieces.iter().enumerate() {
            if i > 0 && !a.inter_token_delay.is_zero() {
                tokio::time::sleep(a.inter_token_delay).await;
            }
            tx.send(event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})))
                .await?;
        }
        match end {
            Some(End::Stall) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Some(End::Cut) => {
                guard.finished = true;
                tx.send(Err(std::io::Error::other(
                    "connection cut by the test server",
                )))
                .await?;
                return Ok(());
            }
            Some(End::Error(error_type, message)) => {
                guard.finished = true;
                tx.send(event(
                    json!({"type": "error", "error": {"type": error_type, "message": message}}),
                ))
                .await?;
                return Ok(());
            }
            None => {}
        }
        tx.send(event(json!({"type": "content_block_stop", "index": 0})))
            .await?;
        tx.send(event(
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": pieces.len()}}),
        ))
        .await?;
        tx.send(event(json!({"type": "message_stop"}))).await?;
        guard.finished = true;
        Ok(())
    });
    Body::from_stream(s)
}

fn tool_stream(ctx: Ctx, text: Option<String>, name: String, input: Value) -> Body {
    let s = async_stream(move |tx| async move {
        let mut guard = DropGuard {
            finished: false,
            cancelled: ctx.cancelled.clone(),
        };
        let start = ctx.message(json!([]), Value::Null, ctx.usage(&Answer::default(), 1));
        tx.send(event(json!({"type": "message_start", "message": start})))
            .await?;
        let mut index = 0;
        if let Some(t) = text {
            tx.send(event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
                .await?;
            tx.send(event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})))
                .await?;
            tx.send(event(json!({"type": "content_block_stop", "index": 0})))
                .await?;
            index = 1;
        }
        tx.send(event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": "toolu_mock01", "name": name, "input": {}}})))
            .await?;
        tx.send(event(json!({"type": "ping"}))).await?;
        // The guide's pattern: an empty partial_json first, then the input in pieces.
        let json_text = input.to_string();
        let mid = json_text
            .char_indices()
            .nth(json_text.chars().count() / 2)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let (first, second) = json_text.split_at(mid);
        for part in ["", first, second] {
            tx.send(event(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": part}})))
                .await?;
        }
        tx.send(event(json!({"type": "content_block_stop", "index": index})))
            .await?;
        tx.send(event(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 9}})))
            .await?;
        tx.send(event(json!({"type": "message_stop"}))).await?;
        guard.finished = true;
        Ok(())
    });
    Body::from_stream(s)
}

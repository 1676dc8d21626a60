//! A Google Gemini API server, after Google's documentation: "Generating content"
//! (<https://ai.google.dev/api/generate-content>: `models.generateContent`,
//! `models.streamGenerateContent`, `GenerateContentResponse`, `UsageMetadata`, `FinishReason`,
//! `PromptFeedback`), "Content" (<https://ai.google.dev/api/caching#Content>), "API keys"
//! (<https://ai.google.dev/gemini-api/docs/api-key>), "Function calling"
//! (<https://ai.google.dev/gemini-api/docs/function-calling>), "Thinking"
//! (<https://ai.google.dev/gemini-api/docs/thinking>), "Thought signatures"
//! (<https://ai.google.dev/gemini-api/docs/thought-signatures>), and "Troubleshooting"
//! (<https://ai.google.dev/gemini-api/docs/troubleshooting>) with Google's error model
//! (<https://cloud.google.com/apis/design/errors>).
//!
//! `POST /v1beta/models/{model}:batchEmbedContents` ("Embeddings",
//! <https://ai.google.dev/api/embeddings>) answers `{embeddings: [{values}]}` from
//! [`embedding_of`], after checking the key and that every request names the path's model.
//!
//! `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (`?alt=sse` for
//! Server-Sent Events; without it, as the API does, one JSON array of the responses). Checked
//! first, as the real API does: the `x-goog-api-key` header (missing: 403 `PERMISSION_DENIED`;
//! not the required key: 400 `INVALID_ARGUMENT` with an `ErrorInfo` reason `API_KEY_INVALID`),
//! a JSON body whose `contents` is non-empty with roles `user`/`model` and non-empty `parts`,
//! `generationConfig.temperature` in 0..2, and a `generationConfig.thinkingConfig` that does not
//! set both `thinkingBudget` and `thinkingLevel` ("Thinking": the two together are a 400; the
//! message is this server's own wording) (400 `INVALID_ARGUMENT`). An unknown method is
//! 404 `NOT_FOUND`. Error bodies are `{"error": {code, message, status, details}}`.
//!
//! Thought signatures, when asked for: [`MockGemini::sign_calls`] puts a `thoughtSignature` beside
//! each `functionCall` the server answers with, and [`MockGemini::require_thought_signatures`]
//! validates as Gemini 3 does: in the current turn (the model contents after the last user
//! content holding something other than a `functionResponse`) the first `functionCall` part of
//! each model content must carry a signature this server issued or one of the documented dummy
//! values, else 400 `INVALID_ARGUMENT` (missing: "Function call `f` in the `1.` content block is
//! missing a `thought_signature`."; unknown: "Thought signature is not valid.").
//!
//! Thought summaries: an [`Answer::thought`] is sent as a `"thought": true` part; after
//! [`MockGemini::thoughts_only_when_asked`] only when the request sets
//! `generationConfig.thinkingConfig.includeThoughts: true`, as Gemini does.
//!
//! Streams write `data: {GenerateContentResponse}\r\n\r\n` as Google's server does: a thought
//! part first when the answer has one, then the text a piece per event, then any function call;
//! every event carries `usageMetadata` with the counts so far, and the last one the
//! `finishReason` and the final totals. No `[DONE]`: the body just ends.

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
    extract::{Path, RawQuery, State},
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
    /// An answer that calls a function (`finishReason: STOP`), after optional text.
    FunctionCall {
        text: Option<String>,
        name: String,
        args: Value,
    },
    /// An HTTP error with Google's error body; `status` is the gRPC status name
    /// (`RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, ...). `retry_delay` adds a
    /// `google.rpc.RetryInfo` detail (`"30s"`), `retry_after` a `Retry-After` header.
    Error {
        code: u16,
        status: String,
        message: String,
        retry_delay: Option<String>,
        retry_after: Option<String>,
    },
    /// The prompt is blocked: `promptFeedback.blockReason`, no candidates.
    Blocked { reason: String },
    /// A stream that sends `after` text events (0: none) and then nothing, keeping the
    /// connection open.
    Stall { after: usize },
    /// A stream that sends `after` text events and then breaks the connection.
    Cut { after: usize },
    /// Wait before answering at all (headers included).
    Delay(Duration, Box<Reply>),
}

/// A text answer's shape and the usage it reports.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Tokens of the answer (the text is `tok0 tok1 ...` unless `text` is set).
    pub tokens: usize,
    pub text: Option<String>,
    /// A thought summary part (`"thought": true`) sent before the answer.
    pub thought: Option<String>,
    /// `thoughtsTokenCount` (0: left out, as for models that do not think).
    pub thoughts_tokens: u64,
    /// `cachedContentTokenCount`: that many of the prompt's tokens are reported as cached, on top
    /// of the counted prompt (`promptTokenCount` includes them).
    pub cached_tokens: u64,
    /// `toolUsePromptTokenCount` (0: left out).
    pub tool_use_prompt_tokens: u64,
    /// `modelVersion`; the model in the path when unset.
    pub model_version: Option<String>,
    pub first_token_delay: Duration,
    pub inter_token_delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            tokens: 8,
            text: None,
            thought: None,
            thoughts_tokens: 0,
            cached_tokens: 0,
            tool_use_prompt_tokens: 0,
            model_version: None,
            first_token_delay: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
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

/// One received request: the path's `{model}:{method}`, the query, headers and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub model: String,
    pub method: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// `Value::Null` when the body was not JSON.
    pub body: Value,
}

/// Shared state: a script of replies (then the default), and what was received.
pub struct MockGemini {
    script: Script<Reply>,
    received: Mutex<Vec<Received>>,
    /// The key `x-goog-api-key` must equal; `None` accepts any non-empty key.
    api_key: Mutex<Option<String>>,
    /// The `thoughtSignature` put beside the function calls answered from now on.
    call_signature: Mutex<Option<String>>,
    /// Every signature handed out so far: the ones a strict server accepts back.
    issued_signatures: Mutex<Vec<String>>,
    /// Validate thought signatures in the history as Gemini 3 does.
    require_signatures: std::sync::atomic::AtomicBool,
    /// With `require_signatures`, accept only signatures this server issued, not Google's
    /// documented dummies: proves that an echoed signature made it back.
    issued_only: std::sync::atomic::AtomicBool,
    /// Send an answer's thought only when the request asks for thought summaries.
    thoughts_when_asked: std::sync::atomic::AtomicBool,
    pub requests: AtomicU64,
    /// Streams the client abandoned before the end.
    pub cancelled: Arc<AtomicU64>,
}

impl MockGemini {
    pub fn new(default: Reply) -> Arc<Self> {
        Arc::new(MockGemini {
            script: Script::new(default),
            received: Mutex::new(Vec::new()),
            api_key: Mutex::new(None),
            call_signature: Mutex::new(None),
            issued_signatures: Mutex::new(Vec::new()),
            require_signatures: std::sync::atomic::AtomicBool::new(false),
            issued_only: std::sync::atomic::AtomicBool::new(false),
            thoughts_when_asked: std::sync::atomic::AtomicBool::new(false),
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

    /// Accept only this key (another gets 400 `API_KEY_INVALID`).
    pub fn require_key(&self, key: &str) {
        *lock(&self.api_key) = Some(key.to_string());
    }

    /// Put `signature` as `thoughtSignature` on the function calls of the answers from now on
    /// (`None`: no signature, as models that do not think send).
    pub fn sign_calls(&self, signature: Option<&str>) {
        *lock(&self.call_signature) = signature.map(str::to_string);
    }

    /// Refuse, as Gemini 3 does, a history whose current-turn function calls lack a signature
    /// (or carry one this server never issued and that is not a documented dummy).
    pub fn require_thought_signatures(&self) {
        self.require_signatures.store(true, Ordering::Relaxed);
    }

    /// Stricter than Gemini 3: require signatures, and accept only ones this server issued (a
    /// documented dummy is refused), so a request that passes carried an echo back.
    pub fn require_issued_signatures(&self) {
        self.require_signatures.store(true, Ordering::Relaxed);
        self.issued_only.store(true, Ordering::Relaxed);
    }

    /// As Gemini does: send an answer's thought summary only when the request sets
    /// `generationConfig.thinkingConfig.includeThoughts: true` (by default it is always sent).
    pub fn thoughts_only_when_asked(&self) {
        self.thoughts_when_asked.store(true, Ordering::Relaxed);
    }

    /// Requests received so far (also those refused).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// Bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        lock(&self.received)
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    fn next_reply(&self) -> Reply {
        self.script.next()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1beta/models/{action}", post(models))
            .with_state(self.clone())
    }

    /// Starts the server on loopback. Its base URL for a Gemini client is
    /// `http://{addr}/v1beta` (see [`base_url`]).
    pub async fn start(default: Reply) -> anyhow::Result<(Arc<Self>, crate::Running)> {
        let mock = Self::new(default);
        let running = crate::serve(mock.router()).await?;
        Ok((mock, running))
    }
}

/// The Gemini base URL of a running server (up to the API version).
pub fn base_url(running: &crate::Running) -> String {
    format!("http://{}/v1beta", running.addr)
}

fn grpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn error_response(
    code: u16,
    status: &str,
    message: &str,
    details: Vec<Value>,
    retry_after: Option<&str>,
) -> Response {
    let mut error = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (http, Json(json!({ "error": error }))).into_response();
    if let Some(ra) = retry_after.and_then(|r| HeaderValue::from_str(r).ok()) {
        resp.headers_mut().insert("retry-after", ra);
    }
    resp
}

fn invalid_argument(message: &str) -> Response {
    error_response(400, "INVALID_ARGUMENT", message, vec![], None)
}

/// The mock's prompt count: whitespace-separated words of every text part, function call and
/// function response, in `contents` and `systemInstruction`.
fn prompt_tokens(body: &Value) -> u64 {
    fn words(parts: &Value) -> u64 {
        let count = |s: &str| s.split_whitespace().count() as u64;
        parts
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            count(t)
                        } else if let Some(f) = p.get("functionCall") {
                            count(&f.to_string())
                        } else if let Some(f) = p.get("functionResponse") {
                            count(&f.to_string())
                        } else {
                            0
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    let mut n = words(&body["systemInstruction"]["parts"]);
    if let Some(contents) = body["contents"].as_array() {
        n += contents.iter().map(|c| words(&c["parts"])).sum::<u64>();
    }
    n.max(1)
}

fn refuse(resp: Response) -> Result<Value, Box<Response>> {
    Err(Box::new(resp))
}

/// Checks key and body as the real API does, before any reply is chosen.
fn check(
    headers: &HeaderMap,
    body: &[u8],
    required_key: Option<&str>,
) -> Result<Value, Box<Response>> {
    check_key(headers, required_key)?;
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return refuse(invalid_argument(
            "Invalid JSON payload received. Unexpected token.",
        ));
    };
    let Some(contents) = req["contents"].as_array().filter(|c| !c.is_empty()) else {
        return refuse(invalid_argument(
            "* GenerateContentRequest.contents: contents is not specified\n",
        ));
    };
    for (i, c) in contents.iter().enumerate() {
        if !matches!(c["role"].as_str(), None | Some("user") | Some("model")) {
            return refuse(invalid_argument(&format!(
                "Please use a valid role: user, model. (contents[{i}].role)"
            )));
        }
        if c["parts"].as_array().is_none_or(|p| p.is_empty()) {
            return refuse(invalid_argument(&format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )));
        }
    }
    if let Some(t) = req["generationConfig"]["temperature"].as_f64() {
        if !(0.0..=2.0).contains(&t) {
            return refuse(invalid_argument(
                "* GenerateContentRequest.generation_config.temperature: must be in [0, 2]\n",
            ));
        }
    }
    let thinking = &req["generationConfig"]["thinkingConfig"];
    if thinking.get("thinkingBudget").is_some() && thinking.get("thinkingLevel").is_some() {
        return refuse(invalid_argument(
            "* GenerateContentRequest.generation_config.thinking_config: thinking_budget and thinking_level cannot be set together\n",
        ));
    }
    Ok(req)
}

/// The `x-goog-api-key` check every method starts with.
fn check_key(headers: &HeaderMap, required_key: Option<&str>) -> Result<(), Box<Response>> {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return Err(Box::new(error_response(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            vec![],
            None,
        )));
    }
    if required_key.is_some_and(|k| k != key) {
        return Err(Box::new(error_response(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            vec![
                json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}),
            ],
            None,
        )));
    }
    Ok(())
}

/// The vector length when a request names no `outputDimensionality` (Google's models give
/// 768 to 3072; kept short here).
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;

/// The test server's embedding of `text`: `dims` values in [-1, 1) from an FNV-1a hash of the
/// text and the position, so equal texts embed equally and different ones (almost surely) not.
pub fn embedding_of(text: &str, dims: usize) -> Vec<f64> {
    (0..dims)
        .map(|k| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in text.bytes().chain((k as u32).to_le_bytes()) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            (h % 2000) as f64 / 1000.0 - 1.0
        })
        .collect()
}

/// `models.batchEmbedContents`: key, then `requests` (non-empty, each naming the path's model
/// and holding text parts), then one `{values}` per request, in order. No usage, as Google
/// sends none. `err-<code>` models answer that error, as for chat.
fn batch_embed(
    model: &str,
    headers: &HeaderMap,
    body: &[u8],
    required_key: Option<&str>,
) -> Response {
    if let Err(resp) = check_key(headers, required_key) {
        return *resp;
    }
    if let Some(Reply::Error {
        code,
        status,
        message,
        ..
    }) = reply_for_model(model)
    {
        return error_response(code, &status, &message, vec![], None);
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return invalid_argument("Invalid JSON payload received. Unexpected token.");
    };
    let Some(requests) = req["requests"].as_array().filter(|r| !r.is_empty()) else {
        return invalid_argument(
            "* BatchEmbedContentsRequest.requests: requests is not specified\n",
        );
    };
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r["model"].as_str() != Some(&format!("models/{model}")) {
            return invalid_argument(&format!(
                "* BatchEmbedContentsRequest.requests[{i}].model: the model of each request must be models/{model}, the batch's\n"
            ));
        }
        let texts: Option<Vec<&str>> = r["content"]["parts"]
            .as_array()
            .filter(|p| !p.is_empty())
            .map(|p| p.iter().filter_map(|p| p["text"].as_str()).collect());
        let Some(texts) = texts.filter(|t| !t.is_empty()) else {
            return invalid_argument(&format!(
                "* BatchEmbedContentsRequest.requests[{i}].content.parts: must hold text\n"
            ));
        };
        let dims = match r.get("outputDimensionality") {
            None => DEFAULT_EMBEDDING_DIMENSIONS,
            Some(d) => match d.as_u64().filter(|d| (1..=3072).contains(d)) {
                Some(d) => d as usize,
                None => {
                    return invalid_argument(&format!(
                        "* BatchEmbedContentsRequest.requests[{i}].output_dimensionality: must be in [1, 3072]\n"
                    ))
                }
            },
        };
        embeddings.push(json!({"values": embedding_of(&texts.concat(), dims)}));
    }
    Json(json!({ "embeddings": embeddings })).into_response()
}

/// The dummy signatures "Thought signatures" (FAQ) documents for calls the API did not produce.
const DUMMY_SIGNATURES: [&str; 2] = [
    "skip_thought_signature_validator",
    "context_engineering_is_the_way_to_go",
];

/// Gemini 3's check: the first `functionCall` part of each model step in the current turn must
/// carry a valid `thoughtSignature`; earlier turns are not checked.
fn check_thought_signatures(
    req: &Value,
    issued: &[String],
    accept_dummies: bool,
) -> Result<(), Box<Response>> {
    let contents = req["contents"].as_array().map_or(&[][..], Vec::as_slice);
    let parts = |c: &Value| {
        c["parts"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .to_vec()
    };
    let turn_start = contents
        .iter()
        .rposition(|c| {
            c["role"].as_str() != Some("model")
                && parts(c).iter().any(|p| p.get("functionResponse").is_none())
        })
        .map_or(0, |i| i + 1);
    for (i, c) in contents.iter().enumerate().skip(turn_start) {
        if c["role"].as_str() != Some("model") {
            continue;
        }
        let Some(first) = parts(c)
            .into_iter()
            .find(|p| p.get("functionCall").is_some())
        else {
            continue;
        };
        let name = first["functionCall"]["name"].as_str().unwrap_or("");
        match first.get("thoughtSignature").and_then(Value::as_str) {
            None | Some("") => {
                return Err(Box::new(invalid_argument(&format!(
                    "Function call `{name}` in the `{i}.` content block is missing a `thought_signature`. Learn more: https://ai.google.dev/gemini-api/docs/thought-signatures"
                ))))
            }
            Some(sig)
                if (accept_dummies && DUMMY_SIGNATURES.contains(&sig))
                    || issued.iter().any(|s| s == sig) => {}
            Some(_) => {
                return Err(Box::new(invalid_argument(
                    "Unable to submit request because Thought signature is not valid.",
                )))
            }
        }
    }
    Ok(())
}

async fn models(
    State(mock): State<Arc<MockGemini>>,
    Path(action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.requests.fetch_add(1, Ordering::Relaxed);
    let (model, method) = action
        .rsplit_once(':')
        .map(|(m, x)| (m.to_string(), x.to_string()))
        .unwrap_or((action.clone(), String::new()));
    lock(&mock.received).push(Received {
        model: model.clone(),
        method: method.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let stream = match method.as_str() {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "batchEmbedContents" => {
            let required_key = lock(&mock.api_key).clone();
            return batch_embed(&model, &headers, &body, required_key.as_deref());
        }
        _ => {
            return error_response(
                404,
                "NOT_FOUND",
                &format!("models/{model} is not found for API version v1beta, or is not supported for {method}."),
                vec![],
                None,
            )
        }
    };
    let sse = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    let required_key = lock(&mock.api_key).clone();
    let req = match check(&headers, &body, required_key.as_deref()) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if mock.require_signatures.load(Ordering::Relaxed) {
        let issued = lock(&mock.issued_signatures).clone();
        let accept_dummies = !mock.issued_only.load(Ordering::Relaxed);
        if let Err(resp) = check_thought_signatures(&req, &issued, accept_dummies) {
            return *resp;
        }
    }
    let call_signature = lock(&mock.call_signature).clone();
    let mut reply = reply_for_model(&model).unwrap_or_else(|| mock.next_reply());
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    let max_tokens = req["generationConfig"]["maxOutputTokens"]
        .as_u64()
        .map_or(usize::MAX, |n| n as usize);
    let ctx = Ctx {
        model,
        prompt_tokens: prompt_tokens(&req),
        max_tokens,
        cancelled: mock.cancelled.clone(),
    };
    let events = match reply {
        Reply::Error {
            code,
            status,
            message,
            retry_delay,
            retry_after,
        } => {
            let details = retry_delay
                .map(|d| {
                    vec![
                        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]}),
                        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d}),
                    ]
                })
                .unwrap_or_default();
            return error_response(code, &status, &message, details, retry_after.as_deref());
        }
        Reply::Answer(mut a) => {
            let asked = req["generationConfig"]["thinkingConfig"]["includeThoughts"] == json!(true);
            if mock.thoughts_when_asked.load(Ordering::Relaxed) && !asked {
                a.thought = None;
            }
            let delay = (a.first_token_delay, a.inter_token_delay);
            (ctx.answer_events(&a), End::Finish, delay)
        }
        Reply::FunctionCall { text, name, args } => {
            if let Some(sig) = &call_signature {
                lock(&mock.issued_signatures).push(sig.clone());
            }
            (
                ctx.call_events(text, name, args, call_signature),
                End::Finish,
                Default::default(),
            )
        }
        Reply::Blocked { reason } => (
            vec![json!({"promptFeedback": {"blockReason": reason},
                "usageMetadata": {"promptTokenCount": ctx.prompt_tokens, "totalTokenCount": ctx.prompt_tokens},
                "modelVersion": ctx.model, "responseId": RESPONSE_ID})],
            End::Finish,
            Default::default(),
        ),
        Reply::Stall { after } => {
            let a = Answer {
                tokens: after,
                ..Default::default()
            };
            let mut ev = ctx.answer_events(&a);
            ev.truncate(after);
            (ev, End::Stall, Default::default())
        }
        Reply::Cut { after } => {
            let a = Answer {
                tokens: after + 1,
                ..Default::default()
            };
            let mut ev = ctx.answer_events(&a);
            ev.truncate(after);
            (ev, End::Cut, Default::default())
        }
        // Unwrapped above.
        Reply::Delay(..) => return error_response(500, "INTERNAL", "Internal error", vec![], None),
    };
    let (events, end, (first_delay, inter_delay)) = events;
    if !stream {
        // A whole answer: the stream's events merged, as `generateContent` returns them.
        return Json(merge(&events)).into_response();
    }
    if !sse {
        // Without `alt=sse` the API streams one JSON array of the responses.
        return Json(Value::Array(events)).into_response();
    }
    let s = async_stream(move |tx| async move {
        let mut guard = DropGuard {
            finished: false,
            cancelled: ctx.cancelled.clone(),
        };
        tokio::time::sleep(first_delay).await;
        for (i, ev) in events.iter().enumerate() {
            if i > 0 && !inter_delay.is_zero() {
                tokio::time::sleep(inter_delay).await;
            }
            tx.send(Ok(Bytes::from(format!("data: {ev}\r\n\r\n"))))
                .await?;
        }
        match end {
            End::Finish => {}
            End::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            End::Cut => {
                // Let the events sent so far reach the wire: the abort drops unflushed ones.
                tokio::time::sleep(Duration::from_millis(50)).await;
                guard.finished = true;
                tx.send(Err(std::io::Error::other(
                    "connection cut by the test server",
                )))
                .await?;
                return Ok(());
            }
        }
        guard.finished = true;
        Ok(())
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

enum End {
    Finish,
    Stall,
    Cut,
}

/// Behaviour chosen by the upstream model name, for end-to-end tests through a gateway config:
/// `err-<code>` (429 `RESOURCE_EXHAUSTED` with a 1 s `RetryInfo`), `stall-<n>`, `cut-<n>`,
/// `call-<name>` (a function call), `blocked` (`promptFeedback.blockReason: SAFETY`).
pub fn reply_for_model(model: &str) -> Option<Reply> {
    let (kind, arg) = model.split_once('-').unwrap_or((model, ""));
    match kind {
        "err" => {
            let code: u16 = arg.parse().ok()?;
            Some(Reply::Error {
                code,
                status: grpc_status(code).into(),
                message: format!("scripted {} from the test server", grpc_status(code)),
                retry_delay: (code == 429).then(|| "1s".to_string()),
                retry_after: None,
            })
        }
        "stall" => Some(Reply::Stall {
            after: arg.parse().ok()?,
        }),
        "cut" => Some(Reply::Cut {
            after: arg.parse().ok()?,
        }),
        "call" => Some(Reply::FunctionCall {
            text: None,
            name: arg.to_string(),
            args: json!({"city": "Paris"}),
        }),
        "blocked" => Some(Reply::Blocked {
            reason: "SAFETY".into(),
        }),
        _ => None,
    }
}

const RESPONSE_ID: &str = "mockResp01";

struct Ctx {
    model: String,
    prompt_tokens: u64,
    max_tokens: usize,
    cancelled: Arc<AtomicU64>,
}

impl Ctx {
    /// `usageMetadata` with `candidates` output tokens so far; optional counts left out when 0.
    fn usage(&self, a: &Answer, candidates: u64, thoughts: u64) -> Value {
        let prompt = self.prompt_tokens + a.cached_tokens;
        let mut u = json!({"promptTokenCount": prompt,
            "totalTokenCount": prompt + a.tool_use_prompt_tokens + candidates + thoughts});
        if candidates > 0 {
            u["candidatesTokenCount"] = json!(candidates);
        }
        if thoughts > 0 {
            u["thoughtsTokenCount"] = json!(thoughts);
        }
        if a.cached_tokens > 0 {
            u["cachedContentTokenCount"] = json!(a.cached_tokens);
        }
        if a.tool_use_prompt_tokens > 0 {
            u["toolUsePromptTokenCount"] = json!(a.tool_use_prompt_tokens);
        }
        u
    }

    fn response(&self, a: &Answer, parts: Value, finish: Option<&str>, usage: Value) -> Value {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        json!({"candidates": [candidate], "usageMetadata": usage,
            "modelVersion": a.model_version.as_deref().unwrap_or(&self.model),
            "responseId": RESPONSE_ID})
    }

    /// The stream's events: the thought, then a piece of text per event; the last carries the
    /// finish reason (`MAX_TOKENS` when cut at `maxOutputTokens`).
    fn answer_events(&self, a: &Answer) -> Vec<Value> {
        let mut pieces = a.pieces();
        let finish = if pieces.len() > self.max_tokens {
            pieces.truncate(self.max_tokens);
            "MAX_TOKENS"
        } else {
            "STOP"
        };
        let mut events = vec![];
        if let Some(t) = &a.thought {
            let usage = self.usage(a, 0, a.thoughts_tokens);
            events.push(self.response(a, json!([{"text": t, "thought": true}]), None, usage));
        }
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            let last = i + 1 == n;
            let usage = self.usage(a, i as u64 + 1, a.thoughts_tokens);
            events.push(self.response(a, json!([{"text": p}]), last.then_some(finish), usage));
        }
        if n == 0 {
            let usage = self.usage(a, 0, a.thoughts_tokens);
            events.push(self.response(a, json!([{"text": ""}]), Some(finish), usage));
        }
        events
    }

    fn call_events(
        &self,
        text: Option<String>,
        name: String,
        args: Value,
        signature: Option<String>,
    ) -> Vec<Value> {
        let a = Answer::default();
        let mut events = vec![];
        let mut out = 0;
        if let Some(t) = text {
            out += t.split_whitespace().count() as u64;
            let usage = self.usage(&a, out, 0);
            events.push(self.response(&a, json!([{"text": t}]), None, usage));
        }
        out += 7;
        let usage = self.usage(&a, out, 0);
        let mut part = json!({"functionCall": {"name": name, "args": args}});
        if let Some(sig) = signature {
            part["thoughtSignature"] = json!(sig);
        }
        events.push(self.response(&a, json!([part]), Some("STOP"), usage));
        events
    }
}

/// The responses of a stream as one: parts concatenated (adjacent text of a kind joined), the
/// last finish reason and usage.
fn merge(events: &[Value]) -> Value {
    let Some(last) = events.last() else {
        return json!({});
    };
    if last.get("candidates").is_none() {
        return last.clone();
    }
    let mut parts: Vec<Value> = vec![];
    for ev in events {
        for p in ev["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let joinable =
                |q: &Value| q.get("text").is_some() && q.get("thought") == p.get("thought");
            match (p.get("text").and_then(Value::as_str), parts.last_mut()) {
                (Some(t), Some(prev)) if joinable(prev) => {
                    let joined = format!("{}{t}", prev["text"].as_str().unwrap_or(""));
                    prev["text"] = json!(joined);
                }
                _ => parts.push(p.clone()),
            }
        }
    }
    let mut out = last.clone();
    out["candidates"][0]["content"]["parts"] = Value::Array(parts);
    out
}

//! Anthropic Messages API adapter: OpenAI Chat Completions in, Anthropic Messages out, and the
//! answer translated back into OpenAI shapes.
//!
//! Wire format, as documented by Anthropic (wire types in `switchyard_api::anthropic`):
//! * "Messages" (<https://docs.anthropic.com/en/api/messages>): `POST /v1/messages`, headers
//!   `x-api-key` and `anthropic-version`, `max_tokens` required, `system` outside `messages`,
//!   user/assistant turns, temperature 0..1.
//! * "Streaming Messages" (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>):
//!   `message_start` → content blocks (`content_block_start` / `_delta` / `_stop`) →
//!   `message_delta` (stop reason, cumulative usage) → `message_stop`; `ping` anywhere; an
//!   `error` event may arrive mid-stream (e.g. `overloaded_error`); unknown events are ignored.
//! * "Errors" (<https://docs.anthropic.com/en/api/errors>): `{"type":"error","error":{...}}`,
//!   429 `rate_limit_error` with `retry-after`, 529 `overloaded_error`.
//! * "Prompt caching" (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>):
//!   `input_tokens` excludes cache reads and writes, so the whole prompt is the sum of the three.
//! * "Tool use" (<https://docs.anthropic.com/en/docs/build-with-claude/tool-use>): `tool_use`
//!   blocks carry arguments as an object, results go back as `tool_result` blocks in a user turn.
//!
//! OpenAI shapes produced: "The chat completion object" and "The chat completion chunk object"
//! (<https://platform.openai.com/docs/api-reference/chat>).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_api::{
    anthropic::{
        error_type_status, BlockDeltaEventView, BlockStartEventView, ContentBlock, ErrorBody,
        ImageSource, MessageContent, MessageDeltaView, MessageParam, MessageStartView,
        MessagesRequest, MessagesResponse, Metadata, Role, System, ToolChoice, ToolDef,
        ToolResultContent, Usage,
    },
    openai::{
        ChatCompletion, ChatRequest, Choice, Content, ContentPart, FunctionCall, KnownPart,
        Message, ResponseMessage, ToolCall, Usage as OpenAiUsage,
    },
    sse::SseDecoder,
};

use crate::{
    chunk::{data_item, unix_now, ChunkWriter, DeltaOut, FunctionDeltaOut, TextOut, ToolDeltaOut},
    client::{body_stream, parse_uri, read_body, read_limited},
    error::retry_after,
    openai::error_message,
    BoxFuture, ChatCall, ChatOutput, Completion, HttpClients, Provider, ProviderError,
    ProviderErrorKind, StreamItem, StreamSummary,
};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// Anthropic has no default for `max_tokens`; this fills it when the client gave none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// `[providers.NAME]` with `kind = "anthropic"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// Without the `/v1` (a trailing `/v1` is accepted and dropped).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The environment variable holding the key, sent as `x-api-key`. None only for
    /// Anthropic-compatible servers that take no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The `anthropic-version` header.
    #[serde(default = "default_version")]
    pub version: String,
    /// `max_tokens` when the client set neither `max_completion_tokens` nor `max_tokens`.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// Extra headers on every call (e.g. `anthropic-beta`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_version() -> String {
    DEFAULT_VERSION.to_string()
}

fn default_max_tokens() -> u64 {
    DEFAULT_MAX_TOKENS
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: default_base_url(),
            api_key_env: None,
            version: default_version(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            headers: BTreeMap::new(),
        }
    }
}

impl AnthropicConfig {
    /// Checks the config without I/O; errors name the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "base_url '{}' must start with http:// or https://",
                self.base_url
            ));
        }
        if self.api_key_env.as_deref().is_some_and(str::is_empty) {
            return Err("api_key_env: must name an environment variable".into());
        }
        if self.version.trim().is_empty() || HeaderValue::from_str(&self.version).is_err() {
            return Err(format!(
                "version: '{}' is not a valid anthropic-version header value",
                self.version
            ));
        }
        if self.default_max_tokens == 0 {
            return Err("default_max_tokens: must be at least 1".into());
        }
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: '{k}' is not a header name"))?;
            if name == "x-api-key" || name == "anthropic-version" {
                return Err(format!(
                    "headers.{k}: set by the adapter (use api_key_env / version)"
                ));
            }
            HeaderValue::from_str(v)
                .map_err(|_| format!("headers.{k}: not a valid header value"))?;
        }
        Ok(())
    }
}

/// An Anthropic Messages API endpoint.
pub struct Anthropic {
    name: String,
    /// Parsed once, at build time.
    messages_url: http::Uri,
    /// Holds the key (marked sensitive); never formatted.
    headers: HeaderMap,
    default_max_tokens: u64,
    client: HttpClients,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("name", &self.name)
            .field("messages_url", &self.messages_url)
            .finish_non_exhaustive()
    }
}

impl Anthropic {
    /// Builds the adapter; reads the API key from the environment.
    pub fn build(
        name: &str,
        cfg: &AnthropicConfig,
        client: impl Into<HttpClients>,
    ) -> Result<Anthropic, String> {
        cfg.validate()?;
        let credential = crate::credential_from_env(
            cfg.api_key_env.as_deref(),
            HeaderName::from_static("x-api-key"),
            str::to_string,
        )?;
        let base = cfg.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let messages_url =
            parse_uri(&format!("{base}/v1/messages")).map_err(|e| format!("base_url: {e}"))?;
        let mut headers = crate::static_headers(credential, &cfg.headers, &messages_url);
        // Set after the extra headers: validation refuses them there, and ours must win.
        let version = HeaderValue::from_str(&cfg.version)
            .map_err(|_| format!("version: '{}' is not a valid header value", cfg.version))?;
        headers.insert("anthropic-version", version);
        Ok(Anthropic {
            name: name.to_string(),
            messages_url,
            headers,
            default_max_tokens: cfg.default_max_tokens,
            client: client.into(),
        })
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatOutput, ProviderError>> {
        Box::pin(async move {
            let stream = call.request.is_stream();
            let req = messages_request(&call.request, &call.model, self.default_max_tokens)?;
            let body = serde_json::to_vec(&req).map_err(|e| {
                ProviderError::new(ProviderErrorKind::InvalidRequest, e.to_string())
            })?;
            let resp = self
                .client
                .get()
                .post(&self.messages_url, &self.headers, body, stream)
                .await?;
            if !resp.status().is_success() {
                return Err(error_from_response(&self.name, resp).await);
            }
            if !stream {
                let body = read_body(resp).await?;
                return Ok(ChatOutput::Complete(completion_from_response(&body)?));
            }
            let bytes = body_stream(resp);
            Ok(ChatOutput::Stream(Box::pin(anthropic_sse_stream(bytes))))
        })
    }
}

/// Reads an Anthropic error answer: status, `retry-after`, `error.type: error.message`, and
/// the body kept as received.
pub async fn error_from_response(
    provider: &str,
    resp: crate::client::UpstreamResponse,
) -> ProviderError {
    let status = resp.status().as_u16();
    let retry = retry_after(resp.headers());
    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
    let detail = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => format!("{}: {}", e.error.kind, e.error.message),
        Err(_) => error_message(&body),
    };
    ProviderError {
        kind: ProviderErrorKind::Status(status),
        message: format!("provider '{provider}' answered {status}: {detail}"),
        retry_after: retry,
        body: Some(body),
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::new(ProviderErrorKind::InvalidRequest, message)
}

/// OpenAI Chat Completions request → Anthropic Messages request.
///
/// `system`/`developer` messages become `system` (wherever they stand); consecutive turns of
/// one role are merged, since Anthropic wants user and assistant to alternate; `tool`
/// messages become `tool_result` blocks in a user turn. `response_format` has no Anthropic
/// counterpart outside beta features: JSON modes become a system instruction (with the schema
/// for `json_schema`), which asks for JSON but, unlike OpenAI's strict mode, cannot enforce it.
/// Fields Anthropic lacks (`logit_bias`, `seed`, penalties...) are dropped; `n` > 1 is refused.
pub fn messages_request(
    req: &ChatRequest,
    model: &str,
    default_max_tokens: u64,
) -> Result<MessagesRequest, ProviderError> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<MessageParam> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => {
                let text = m.content.as_ref().map(Content::as_text).unwrap_or_default();
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => push_turn(&mut turns, Role::User, user_blocks(m, i)?),
            "assistant" => push_turn(&mut turns, Role::Assistant, assistant_blocks(m, i)?),
            "tool" => push_turn(&mut turns, Role::User, vec![tool_result(m, i)?]),
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role: '{other}' cannot be sent to Anthropic"
                )))
            }
        }
    }
    if let Some(rf) = &req.response_format {
        match rf.get("type").and_then(Value::as_str) {
            None | Some("text") => {}
            Some("json_object") => system.push(
                "Respond with a single valid JSON object and nothing else: no prose, no code fences."
                    .into(),
            ),
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .cloned()
                    .unwrap_or(Value::Null);
                system.push(format!(
                    "Respond with a single valid JSON value that conforms to this JSON Schema, and nothing else: no prose, no code fences.\n{schema}"
                ));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "response_format.type: '{other}' is not supported for Anthropic"
                )))
            }
        }
    }
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) || t.is_nan() {
            return Err(invalid(format!(
                "temperature: {t} is outside Anthropic's range of 0 to 1 (OpenAI allows up to 2)"
            )));
        }
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "n: Anthropic returns one choice per request; n must be 1".into(),
        ));
    }
    let (tools, tool_choice) = tools_and_choice(req)?;
    let system = match system.len() {
        0 => None,
        1 => system.pop().map(System::Text),
        _ => Some(System::Blocks(
            system.into_iter().map(ContentBlock::text).collect(),
        )),
    };
    Ok(MessagesRequest {
        model: model.to_string(),
        messages: turns,
        max_tokens: req.max_output_tokens().unwrap_or(default_max_tokens),
        system,
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.extra.get("top_k").and_then(Value::as_u64),
        stream: req.is_stream().then_some(true),
        tools,
        tool_choice,
        metadata: req.user.as_ref().map(|u| Metadata {
            user_id: Some(u.clone()),
        }),
        extra: Default::default(),
    })
}

/// Appends blocks to the conversation, merging into the last turn when the role repeats.
fn push_turn(turns: &mut Vec<MessageParam>, role: Role, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut() {
        if last.role == role {
            if let MessageContent::Blocks(b) = &mut last.content {
                b.extend(blocks);
                return;
            }
        }
    }
    turns.push(MessageParam {
        role,
        content: MessageContent::Blocks(blocks),
    });
}

fn user_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>, ProviderError> {
    let mut out = Vec::new();
    match &m.content {
        // Anthropic rejects empty text blocks.
        Some(Content::Text(t)) if !t.is_empty() => out.push(ContentBlock::text(t.clone())),
        None | Some(Content::Text(_)) => {}
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Known(KnownPart::Text { text }) => {
                        if !text.is_empty() {
                            out.push(ContentBlock::text(text.clone()));
                        }
                    }
                    ContentPart::Known(KnownPart::ImageUrl { image_url }) => {
                        out.push(ContentBlock::Image {
                            source: image_source(&image_url.url).map_err(|e| {
                                invalid(format!("messages[{i}].content[{j}].image_url: {e}"))
                            })?,
                        });
                    }
                    ContentPart::Other(v) => {
                        let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
                        return Err(invalid(format!(
                            "messages[{i}].content[{j}]: part type '{kind}' is not supported by Anthropic"
                        )));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `data:<media type>;base64,<data>` → a base64 source; `http(s)://` → a URL source.
fn image_source(url: &str) -> Result<ImageSource, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| "a data: URL needs a ',' before its data".to_string())?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| "only base64 data: URLs can be sent to Anthropic".to_string())?;
        return Ok(ImageSource::Base64 {
            media_type: media_type.to_string(),
            data: data.to_string(),
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(ImageSource::Url {
            url: url.to_string(),
        });
    }
    Err("must be a data: URL or an http(s) URL".into())
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<ContentBlock>, ProviderError> {
    let mut out = Vec::new();
    if let Some(c) = &m.content {
        let text = c.as_text();
        if !text.is_empty() {
            out.push(ContentBlock::text(text));
        }
    }
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        let args = tc.function.arguments.trim();
        let input: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|e| {
                invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments: not JSON ({e})"
                ))
            })?
        };
        if !input.is_object() {
            return Err(invalid(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: Anthropic needs a JSON object"
            )));
        }
        out.push(ContentBlock::ToolUse {
            id: tc.id.clone(),
            name: tc.function.name.clone(),
            input,
        });
    }
    Ok(out)
}

fn tool_result(m: &Message, i: usize) -> Result<ContentBlock, ProviderError> {
    let id = m.tool_call_id.clone().ok_or_else(|| {
        invalid(format!(
            "messages[{i}].tool_call_id: required for role 'tool'"
        ))
    })?;
    let text = m.content.as_ref().map(Content::as_text).unwrap_or_default();
    Ok(ContentBlock::ToolResult {
        tool_use_id: id,
        content: (!text.is_empty()).then_some(ToolResultContent::Text(text)),
        is_error: None,
    })
}

type ToolsAndChoice = (Option<Vec<ToolDef>>, Option<ToolChoice>);

fn tools_and_choice(req: &ChatRequest) -> Result<ToolsAndChoice, ProviderError> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        // No tools: a tool_choice alone means nothing to Anthropic.
        return Ok((None, None));
    };
    let mut defs = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(invalid(format!(
                "tools[{i}].type: '{}' is not supported by Anthropic",
                t.kind
            )));
        }
        defs.push(ToolDef {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            input_schema: t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    // OpenAI's `parallel_tool_calls: false` is Anthropic's `disable_parallel_tool_use: true`.
    let no_parallel = req.parallel_tool_calls.map(|p| !p).filter(|d| *d);
    let choice = match &req.tool_choice {
        None => no_parallel.map(|d| ToolChoice::Auto {
            disable_parallel_tool_use: Some(d),
        }),
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto {
                disable_parallel_tool_use: no_parallel,
            },
            "required" => ToolChoice::Any {
                disable_parallel_tool_use: no_parallel,
            },
            "none" => ToolChoice::None,
            other => {
                return Err(invalid(format!(
                    "tool_choice: '{other}' is not one of auto, none, required"
                )))
            }
        }),
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(
                        "tool_choice: expected {\"type\":\"function\",\"function\":{\"name\":...}}"
                            .into(),
                    )
                })?;
            Some(ToolChoice::Tool {
                name: name.to_string(),
                disable_parallel_tool_use: no_parallel,
            })
        }
    };
    Ok((Some(defs), choice))
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

/// Anthropic `message` → OpenAI `chat.completion` body and usage.
pub fn completion_from_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let r: MessagesResponse = serde_json::from_slice(body).map_err(|e| {
        ProviderError::protocol(format!("upstream answer is not an Anthropic message: {e}"))
    })?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in &r.content {
        match b {
            ContentBlock::Text { text: t, .. } => text.push_str(t),
            ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: input.to_string(),
                },
                extra_content: None,
            }),
            _ => {}
        }
    }
    let usage = r.usage.to_token_usage();
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    let completion = ChatCompletion {
        id: r.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: r.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
            },
            finish_reason: Some(finish_reason(r.stop_reason.as_deref()).into()),
            logprobs: None,
        }],
        usage: Some(OpenAiUsage::from_token_usage(&usage)),
        system_fingerprint: None,
    };
    let body = serde_json::to_vec(&completion)
        .map_err(|e| ProviderError::protocol(format!("could not encode the completion: {e}")))?;
    Ok(Completion {
        body: Bytes::from(body),
        usage: Some(usage),
        response_model: Some(r.model),
        output_text: None,
        energy: None,
    })
}

/// Turns an Anthropic SSE byte stream into OpenAI `chat.completion.chunk` events.
pub fn anthropic_sse_stream<S>(
    bytes: S,
) -> impl Stream<Item = Result<StreamItem, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin,
{
    struct State<S> {
        bytes: S,
        dec: SseDecoder,
        tr: Translator,
        out: VecDeque<StreamItem>,
        done: bool,
    }
    let state = State {
        bytes,
        dec: SseDecoder::new(),
        tr: Translator::new(),
        out: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.out.pop_front() {
                return Some((Ok(item), st));
            }
            if st.done {
                return None;
            }
            match st.dec.next_event() {
                Err(_) => {
                    st.done = true;
                    return Some((
                        Err(ProviderError::protocol("upstream SSE event too large")),
                        st,
                    ));
                }
                Ok(Some(ev)) => {
                    let data = ev.data();
                    if data.is_empty() {
                        continue;
                    }
                    match st.tr.on_event(ev.event(), data, &mut st.out) {
                        Ok(finished) => st.done = finished,
                        Err(e) => {
                            st.done = true;
                            st.out.clear();
                            return Some((Err(e), st));
                        }
                    }
                }
                Ok(None) => match st.bytes.next().await {
                    Some(Ok(b)) => st.dec.push_bytes(b),
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        return Some((
                            Err(ProviderError::new(
                                ProviderErrorKind::Io,
                                "upstream stream ended before message_stop",
                            )),
                            st,
                        ));
                    }
                },
            }
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    /// A tool call, with its position among the message's tool calls (OpenAI's `index`).
    Tool(u32),
    Other,
}

/// Stream translation state: what `message_start` and `message_delta` said, and which
/// Anthropic block index is which OpenAI tool call.
struct Translator {
    writer: ChunkWriter,
    usage: Usage,
    stop_reason: Option<String>,
    blocks: Vec<Block>,
    tools: u32,
    output_text: String,
}

#[derive(Deserialize)]
struct ErrorEventView {
    error: switchyard_api::anthropic::ErrorDetail,
}

#[derive(Deserialize)]
struct TypeView<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

impl Translator {
    fn new() -> Self {
        Translator {
            writer: ChunkWriter::new(String::new()),
            usage: Usage::default(),
            stop_reason: None,
            blocks: Vec::new(),
            tools: 0,
            output_text: String::new(),
        }
    }

    /// Handles one event; returns whether the stream is finished.
    fn on_event(
        &mut self,
        name: Option<&str>,
        data: &str,
        out: &mut VecDeque<StreamItem>,
    ) -> Result<bool, ProviderError> {
        let kind = match name {
            Some(n) => n,
            // The `event:` line is documented; fall back to the data's `type` without it.
            None => {
                serde_json::from_str::<TypeView>(data)
                    .map_err(|e| bad_event("event", e))?
                    .kind
            }
        };
        match kind {
            "message_start" => {
                let v: MessageStartView =
                    serde_json::from_str(data).map_err(|e| bad_event(kind, e))?;
                self.writer.id = v.message.id;
                self.writer.model = v.message.model;
                self.usage = v.message.usage;
                let delta = DeltaOut {
                    role: Some("assistant"),
                    content: Some(TextOut::Str("")),
                    ..Default::default()
                };
                let bytes = self.writer.chunk(delta, None)?;
                out.push_back(data_item(bytes, false, false));
            }
            "content_block_start" => {
                let v: BlockStartEventView =
                    serde_json::from_str(data).map_err(|e| bad_event(kind, e))?;
                let block = match v.content_block.kind.as_str() {
                    "text" => Block::Text,
                    "tool_use" => {
                        self.tools += 1;
                        Block::Tool(self.tools - 1)
                    }
                    _ => Block::Other,
                };
                let i = v.index as usize;
                if self.blocks.len() <= i {
                    self.blocks.resize(i + 1, Block::Other);
                }
                self.blocks[i] = block;
                match block {
                    Block::Text => {
                        if let Some(t) = v.content_block.text.as_deref().filter(|t| !t.is_empty()) {
                            self.output_text.push_str(t);
                            let delta = DeltaOut {
                                content: Some(TextOut::Str(t)),
                                ..Default::default()
                            };
                            let bytes = self.writer.chunk(delta, None)?;
                            out.push_back(data_item(bytes, true, false));
                        }
                    }
                    Block::Tool(index) => {
                        let delta = DeltaOut {
                            tool_calls: Some([ToolDeltaOut {
                                index,
                                id: v.content_block.id.as_deref(),
                                kind: Some("function"),
                                function: FunctionDeltaOut {
                                    name: v.content_block.name.as_deref(),
                                    arguments: TextOut::Str(""),
                                },
                                extra_content: None,
                            }]),
                            ..Default::default()
                        };
                        let bytes = self.writer.chunk(delta, None)?;
                        out.push_back(data_item(bytes, true, false));
                    }
                    Block::Other => {}
                }
            }
            "content_block_delta" => {
                let v: BlockDeltaEventView =
                    serde_json::from_str(data).map_err(|e| bad_event(kind, e))?;
                let block = self
                    .blocks
                    .get(v.index as usize)
                    .copied()
                    .unwrap_or(Block::Other);
                let d = &v.delta;
                let delta = match (d.kind.0.as_ref(), block) {
                    ("text_delta", _) => {
                        let Some(t) = d.text.filter(|t| !t.is_empty()) else {
                            return Ok(false);
                        };
                        t.append_to(&mut self.output_text);
                        DeltaOut {
                            content: Some(TextOut::Json(t)),
                            ..Default::default()
                        }
                    }
                    ("thinking_delta", _) => {
                        let Some(t) = d.thinking.filter(|t| !t.is_empty()) else {
                            return Ok(false);
                        };
                        t.append_to(&mut self.output_text);
                        DeltaOut {
                            reasoning_content: Some(TextOut::Json(t)),
                            ..Default::default()
                        }
                    }
                    ("input_json_delta", Block::Tool(index)) => {
                        let Some(j) = d.partial_json.filter(|j| !j.is_empty()) else {
                            return Ok(false);
                        };
                        DeltaOut {
                            tool_calls: Some([ToolDeltaOut {
                                index,
                                id: None,
                                kind: None,
                                function: FunctionDeltaOut {
                                    name: None,
                                    arguments: TextOut::Json(j),
                                },
                                extra_content: None,
                            }]),
                            ..Default::default()
                        }
                    }
                    // signature_delta, deltas of blocks we do not translate, new delta types.
                    _ => return Ok(false),
                };
                let bytes = self.writer.chunk(delta, None)?;
                out.push_back(data_item(bytes, true, false));
            }
            "message_delta" => {
                let v: MessageDeltaView =
                    serde_json::from_str(data).map_err(|e| bad_event(kind, e))?;
                if v.delta.stop_reason.is_some() {
                    self.stop_reason = v.delta.stop_reason;
                }
                // Counts here are cumulative; newer API versions repeat the input counts too.
                if let Some(u) = v.usage {
                    self.usage.output_tokens = u.output_tokens;
                    if let Some(n) = u.input_tokens {
                        self.usage.input_tokens = n;
                    }
                    if u.cache_read_input_tokens.is_some() {
                        self.usage.cache_read_input_tokens = u.cache_read_input_tokens;
                    }
                    if u.cache_creation_input_tokens.is_some() {
                        self.usage.cache_creation_input_tokens = u.cache_creation_input_tokens;
                    }
                }
            }
            "message_stop" => {
                let finish = finish_reason(self.stop_reason.as_deref());
                let bytes = self.writer.chunk(DeltaOut::default(), Some(finish))?;
                out.push_back(data_item(bytes, false, false));
                let usage = self.usage.to_token_usage();
                let openai_usage = OpenAiUsage::from_token_usage(&usage);
                let bytes = self.writer.usage_chunk(&openai_usage)?;
                out.push_back(data_item(bytes, false, true));
                out.push_back(StreamItem::End(StreamSummary {
                    usage: Some(usage),
                    response_model: (!self.writer.model.is_empty())
                        .then(|| self.writer.model.clone()),
                    finish_reason: Some(finish.to_string()),
                    output_text: std::mem::take(&mut self.output_text),
                    energy: None,
                }));
                return Ok(true);
            }
            "error" => {
                let (error_type, message) = match serde_json::from_str::<ErrorEventView>(data) {
                    Ok(v) => (v.error.kind, v.error.message),
                    Err(_) => ("api_error".to_string(), data.chars().take(300).collect()),
                };
                let status = error_type_status(&error_type);
                return Err(ProviderError {
                    kind: ProviderErrorKind::Status(status),
                    message: format!("upstream error mid-stream: {error_type}: {message}"),
                    retry_after: None,
                    body: Some(Bytes::copy_from_slice(data.as_bytes())),
                });
            }
            // ping, content_block_stop, and event types added after this was written.
            _ => {}
        }
        Ok(false)
    }
}

fn bad_event(kind: &str, e: serde_json::Error) -> ProviderError {
    ProviderError::protocol(format!("upstream {kind} event is not as documented: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::openai::ChatChunk;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn config_defaults_and_validation_name_the_key() {
        let cfg: AnthropicConfig =
            serde_json::from_value(json!({"api_key_env": "ANTHROPIC_API_KEY"})).unwrap();
        assert_eq!(cfg.base_url, "https://api.anthropic.com");
        assert_eq!(cfg.version, "2023-06-01");
        assert_eq!(cfg.default_max_tokens, 4096);
        assert!(cfg.validate().is_ok());
        assert!(serde_json::from_value::<AnthropicConfig>(json!({"api_key": "x"})).is_err());
        let bad = |f: fn(&mut AnthropicConfig)| {
            let mut c = AnthropicConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.base_url = "api.anthropic.com".into()).contains("base_url"));
        assert!(bad(|c| c.default_max_tokens = 0).contains("default_max_tokens"));
        assert!(bad(|c| c.version = " ".into()).contains("version"));
        assert!(bad(|c| c.api_key_env = Some(String::new())).contains("api_key_env"));
        assert!(bad(|c| {
            c.headers.insert("x-api-key".into(), "k".into());
        })
        .contains("headers.x-api-key"));
    }

    #[test]
    fn base_url_with_or_without_v1_reaches_messages() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/",
        ] {
            let cfg = AnthropicConfig {
                base_url: base.into(),
                ..Default::default()
            };
            let a = Anthropic::build(
                "a",
                &cfg,
                crate::HttpClient::new(std::time::Duration::from_secs(5)).unwrap(),
            )
            .unwrap();
            assert_eq!(
                a.messages_url.to_string(),
                "http://h:1/v1/messages",
                "{base}"
            );
        }
    }

    #[test]
    fn a_conversation_converts_with_system_merging_and_tools() {
        let req = chat(json!({
            "model": "public",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "use metric units"},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "user", "content": [{"type": "text", "text": "and Rome"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
                {"role": "assistant", "content": "Paris 21C, Rome 25C."},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false,
            "stop": "END", "max_completion_tokens": 300, "max_tokens": 999,
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "user": "u-42", "stream": true,
            "logit_bias": {"1": 2}
        }));
        let m = messages_request(&req, "claude-sonnet-4-5", 4096).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["model"], "claude-sonnet-4-5");
        assert_eq!(v["system"][0]["text"], "be brief");
        assert_eq!(v["system"][1]["text"], "use metric units");
        let roles: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["user", "assistant", "user", "assistant", "user"],
            "turns alternate"
        );
        let first = &v["messages"][0]["content"];
        assert_eq!(first[0]["text"], "weather in Paris?");
        assert_eq!(first[1]["text"], "and Rome");
        assert_eq!(
            first[2]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
        );
        assert_eq!(
            first[3]["source"],
            json!({"type": "url", "url": "https://example.com/cat.jpg"})
        );
        let calls = &v["messages"][1]["content"];
        assert_eq!(
            calls[0],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(calls[1]["input"]["city"], "Rome");
        let results = &v["messages"][2]["content"];
        assert_eq!(
            results[0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "21C"})
        );
        assert_eq!(results[1]["tool_use_id"], "call_2");
        assert_eq!(
            v["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(v["tools"][0]["description"], "Weather by city");
        assert_eq!(
            v["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["max_tokens"], 300, "max_completion_tokens wins");
        assert_eq!(
            (
                v["temperature"].as_f64(),
                v["top_p"].as_f64(),
                v["top_k"].as_u64()
            ),
            (Some(0.2), Some(0.9), Some(40))
        );
        assert_eq!(v["metadata"]["user_id"], "u-42");
        assert_eq!(v["stream"], true);
        assert!(
            v.get("logit_bias").is_none(),
            "fields Anthropic lacks are dropped"
        );
    }

    #[test]
    fn defaults_and_single_system_prompt() {
        let req = chat(
            json!({"model": "p", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]}),
        );
        let v = serde_json::to_value(messages_request(&req, "m", 777).unwrap()).unwrap();
        assert_eq!(v["max_tokens"], 777);
        assert_eq!(v["system"], "sys");
        assert_eq!(
            v["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        );
        for key in [
            "stream",
            "tools",
            "tool_choice",
            "metadata",
            "temperature",
            "stop_sequences",
        ] {
            assert!(v.get(key).is_none(), "{key} is left out when unset");
        }
    }

    #[test]
    fn tool_choice_variants() {
        let with = |choice: Value| {
            let req = chat(
                json!({"model": "p", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}),
            );
            serde_json::to_value(messages_request(&req, "m", 10).unwrap()).unwrap()
        };
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!("required"))["tool_choice"],
            json!({"type": "any"})
        );
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        assert_eq!(
            with(json!("auto"))["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}}),
            "a tool without parameters still gets an object schema"
        );
    }

    #[test]
    fn requests_anthropic_cannot_take_are_refused_naming_the_field() {
        let err = |body: Value| messages_request(&chat(body), "m", 10).unwrap_err();
        let e = err(
            json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}),
        );
        assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
        assert!(e.message.starts_with("temperature:"), "{}", e.message);
        assert!(!e.is_retryable());
        let e = err(json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "n": 2}));
        assert!(e.message.starts_with("n:"), "{}", e.message);
        let e = err(
            json!({"model": "p", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "..", "format": "wav"}}]}]}),
        );
        assert!(
            e.message.contains("messages[0].content[0]") && e.message.contains("input_audio"),
            "{}",
            e.message
        );
        let e = err(
            json!({"model": "p", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        );
        assert!(e.message.contains("image_url"), "{}", e.message);
        let e = err(json!({"model": "p", "messages": [{"role": "tool", "content": "x"}]}));
        assert!(e.message.contains("tool_call_id"), "{}", e.message);
        let e = err(
            json!({"model": "p", "messages": [{"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]}),
        );
        assert!(e.message.contains("arguments"), "{}", e.message);
        assert!(messages_request(
            &chat(json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "temperature": 1.0})),
            "m",
            10
        )
        .is_ok());
    }

    #[test]
    fn response_format_becomes_a_system_instruction() {
        let req = chat(
            json!({"model": "p", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}),
        );
        let v = serde_json::to_value(messages_request(&req, "m", 10).unwrap()).unwrap();
        assert_eq!(v["system"][0]["text"], "sys");
        let instruction = v["system"][1]["text"].as_str().unwrap();
        assert!(
            instruction.contains("JSON Schema") && instruction.contains("\"integer\""),
            "{instruction}"
        );
    }

    #[test]
    fn a_message_converts_to_a_chat_completion() {
        let body = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me check. "},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}});
        let c = completion_from_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        let out: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(out.object, "chat.completion");
        assert_eq!(out.model, "claude-sonnet-4-5");
        let ch = &out.choices[0];
        assert_eq!(ch.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(ch.message.content.as_deref(), Some("Let me check. "));
        let tc = &ch.message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (tc.id.as_str(), tc.kind.as_str(), tc.function.name.as_str()),
            ("toolu_1", "function", "get_weather")
        );
        let args: Value = serde_json::from_str(&tc.function.arguments).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.cache_creation_input_tokens
            ),
            (119, 30, 100, 7)
        );
        let ou = out.usage.unwrap();
        assert_eq!(
            (ou.prompt_tokens, ou.completion_tokens, ou.total_tokens),
            (119, 30, 149)
        );
        assert_eq!(ou.prompt_tokens_details.unwrap().cached_tokens, Some(100));
        assert_eq!(c.response_model.as_deref(), Some("claude-sonnet-4-5"));
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("stop_sequence")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(Some("tool_use")), "tool_calls");
        assert_eq!(finish_reason(Some("refusal")), "content_filter");
        assert!(
            completion_from_response(b"{\"oops\":1}").unwrap_err().kind
                == ProviderErrorKind::Protocol
        );
    }

    /// A stream as the streaming guide shows it: text, a tool call, pings, cumulative usage.
    const TRANSCRIPT: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":50,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo \\\"w\\\"\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: some_future_event\ndata: {\"type\":\"some_future_event\"}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    async fn run(pieces: Vec<Bytes>) -> Vec<Result<StreamItem, ProviderError>> {
        let input = futures_util::stream::iter(pieces.into_iter().map(Ok));
        anthropic_sse_stream(input).collect().await
    }

    #[tokio::test]
    async fn a_stream_translates_to_openai_chunks_however_it_is_split() {
        let bytes = TRANSCRIPT.as_bytes();
        for size in [1, 7, 64, bytes.len()] {
            let pieces = bytes.chunks(size).map(Bytes::copy_from_slice).collect();
            let items = run(pieces).await;
            let mut chunks: Vec<ChatChunk> = vec![];
            let mut flags = vec![];
            let mut end = None;
            for item in items {
                match item.unwrap() {
                    StreamItem::Data {
                        bytes,
                        content,
                        usage_only,
                    } => {
                        let text = std::str::from_utf8(&bytes).unwrap();
                        assert!(
                            text.starts_with("data: ") && text.ends_with("\n\n"),
                            "{text:?}"
                        );
                        assert!(!text.contains("[DONE]"));
                        chunks.push(serde_json::from_str(&text[6..]).unwrap());
                        flags.push((content, usage_only));
                    }
                    StreamItem::End(s) => end = Some(s),
                }
            }
            let summary = end.expect("an End after message_stop");
            assert!(chunks.iter().all(|c| c.id == "msg_1"
                && c.model == "claude-x"
                && c.object == "chat.completion.chunk"));
            assert_eq!(
                chunks[0].choices[0].delta.role.as_deref(),
                Some("assistant")
            );
            assert_eq!(flags[0], (false, false));
            let text: String = chunks
                .iter()
                .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
                .collect();
            assert_eq!(text, "Hello \"w\"");
            assert_eq!(summary.output_text, text);
            let tool_deltas: Vec<_> = chunks
                .iter()
                .flat_map(|c| c.choices.iter())
                .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
                .collect();
            assert_eq!(tool_deltas[0].id.as_deref(), Some("toolu_9"));
            assert_eq!(
                tool_deltas[0].function.as_ref().unwrap().name.as_deref(),
                Some("get_weather")
            );
            assert!(
                tool_deltas.iter().all(|t| t.index == 0),
                "the first tool call is OpenAI index 0"
            );
            let args: String = tool_deltas
                .iter()
                .filter_map(|t| t.function.as_ref().and_then(|f| f.arguments.clone()))
                .collect();
            assert_eq!(
                serde_json::from_str::<Value>(&args).unwrap(),
                json!({"city": "Paris"})
            );
            let n = chunks.len();
            assert_eq!(
                chunks[n - 2].choices[0].finish_reason.as_deref(),
                Some("tool_calls")
            );
            assert_eq!(flags[n - 2], (false, false));
            assert!(chunks[n - 1].choices.is_empty());
            assert_eq!(flags[n - 1], (false, true), "the last chunk is usage only");
            let u = chunks[n - 1].usage.as_ref().unwrap();
            assert_eq!((u.prompt_tokens, u.completion_tokens), (80, 15));
            assert_eq!(
                u.prompt_tokens_details.as_ref().unwrap().cached_tokens,
                Some(50)
            );
            let su = summary.usage.unwrap();
            assert_eq!(
                (
                    su.input_tokens,
                    su.output_tokens,
                    su.cached_input_tokens,
                    su.cache_creation_input_tokens
                ),
                (80, 15, 50, 5)
            );
            assert_eq!(summary.finish_reason.as_deref(), Some("tool_calls"));
            assert_eq!(summary.response_model.as_deref(), Some("claude-x"));
        }
    }

    #[tokio::test]
    async fn an_error_event_ends_the_stream_with_its_status() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let items = run(vec![Bytes::from_static(s.as_bytes())]).await;
        assert_eq!(items.len(), 2, "nothing after the error");
        let e = items[1].as_ref().unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Status(529));
        assert!(e.is_retryable());
        assert!(
            e.message.contains("overloaded_error: Overloaded"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_before_message_stop_is_an_error() {
        let cut = &TRANSCRIPT[..TRANSCRIPT.find("event: message_delta").unwrap()];
        let items = run(vec![Bytes::copy_from_slice(cut.as_bytes())]).await;
        assert!(items.iter().all(|i| !matches!(i, Ok(StreamItem::End(_)))));
        let e = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Io);
    }
}

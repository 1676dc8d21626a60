//! Google Gemini API adapter: OpenAI Chat Completions in, Gemini `generateContent` out, and the
//! answer translated back into OpenAI shapes.
//!
//! Wire format, as Google documents it:
//! * "Generating content" (<https://ai.google.dev/api/generate-content>): `POST
//!   {base}/models/{model}:generateContent`, and `:streamGenerateContent?alt=sse` for a stream
//!   of Server-Sent Events, each `data:` a whole `GenerateContentResponse`. There is no `[DONE]`
//!   sentinel: the stream ends with the body, and its last response carries the candidate's
//!   `finishReason` and the final `usageMetadata`, so a body that ends before a `finishReason`
//!   was cut. Google ends its events with `\r\n\r\n`; the decoder takes either line ending.
//! * "API keys" (<https://ai.google.dev/gemini-api/docs/api-key>): the `x-goog-api-key` header.
//! * Content and parts (<https://ai.google.dev/api/caching#Content>): turns of role `user` or
//!   `model`, parts `text`, `inlineData {mimeType, data}`, `functionCall {name, args}`,
//!   `functionResponse {name, response}`; `systemInstruction` outside `contents`.
//! * "Function calling" (<https://ai.google.dev/gemini-api/docs/function-calling>):
//!   `tools[].functionDeclarations`, `toolConfig.functionCallingConfig {mode: AUTO|ANY|NONE,
//!   allowedFunctionNames}`; calls carry arguments as an object and (in general) no id.
//! * "Structured output" (<https://ai.google.dev/gemini-api/docs/structured-output>):
//!   `generationConfig.responseMimeType` and `responseJsonSchema`, which takes JSON Schema
//!   (`responseSchema` takes only Google's OpenAPI subset); tools likewise get
//!   `parametersJsonSchema`, so OpenAI's JSON Schemas go through unchanged.
//! * "Thinking" (<https://ai.google.dev/gemini-api/docs/thinking>): parts with `"thought": true`
//!   are reasoning summaries, sent only when `generationConfig.thinkingConfig.includeThoughts`
//!   is true; `usageMetadata.thoughtsTokenCount` counts the thinking, which is billed as output
//!   and is not part of `candidatesTokenCount`. Depth: `thinkingBudget` for Gemini 2.5 (tokens;
//!   0 turns thinking off where the model allows it, not on 2.5 Pro; -1 is dynamic) and
//!   `thinkingLevel` for Gemini 3 (`minimal`, `low`, `medium`, `high`, which levels a model takes
//!   varying: Pro models have no `minimal`; Gemini 3 cannot turn thinking off). Gemini 3 still
//!   takes a budget for backward compatibility; 2.5 takes no level; both in one request is a 400.
//! * "Thought signatures" (<https://ai.google.dev/gemini-api/docs/thought-signatures>): thinking
//!   models put an opaque base64 `thoughtSignature` on parts of their answer, beside the
//!   `functionCall` (for parallel calls only on the first one; Gemini 2.5 on the first part of
//!   any kind) and sometimes on the last text part, to be sent back on the same part. Gemini 3
//!   validates the current turn only (the model steps after the last user content that is not
//!   a `functionResponse`): the first `functionCall` part of each step there must carry its
//!   signature, else 400 INVALID_ARGUMENT "Function call ... is missing a `thought_signature`".
//!   For calls the API did not produce, the FAQ gives the dummy values
//!   `"skip_thought_signature_validator"` and `"context_engineering_is_the_way_to_go"`.
//! * "OpenAI compatibility" (<https://ai.google.dev/gemini-api/docs/openai>), with the OpenAI
//!   examples of the thought-signatures page: Google's own OpenAI endpoint carries the signature
//!   on each tool call as `"extra_content": {"google": {"thought_signature": "<sig>"}}`. Its
//!   Thinking section maps `reasoning_effort` (`minimal`/`low`/`medium`/`high`) to budgets
//!   1,024 / 1,024 / 8,192 / 24,576 on Gemini 2.5 (`none`: 0, off) and to levels on Gemini 3,
//!   per model (3.x Flash and Flash-Lite: the same name; 3.1 Pro: `minimal` → `low`; the first
//!   3 Pro, in the table's earlier version: `minimal`/`low` → `low`, `medium`/`high` → `high`),
//!   and takes Google's own config as `"extra_body": {"google": {"thinking_config":
//!   {"thinking_budget" | "thinking_level", "include_thoughts"}}}` in the JSON body (an OpenAI
//!   SDK's `extra_body={"google": ...}` sends it as a top-level `google` instead); Google's
//!   endpoint refuses `reasoning_effort` beside an explicit budget or level.
//! * `UsageMetadata` (<https://ai.google.dev/api/generate-content#UsageMetadata>):
//!   `promptTokenCount` is the whole prompt, cached content included (`cachedContentTokenCount`
//!   is a part of it); `toolUsePromptTokenCount` counts tool results fed back to the model as
//!   input and is not part of `promptTokenCount`; `totalTokenCount` is the sum of prompt, tool-use
//!   prompt, candidates and thoughts. Streams repeat the metadata on chunks: only the last counts.
//! * "Embeddings" (<https://ai.google.dev/api/embeddings>): `POST
//!   {base}/models/{model}:batchEmbedContents` with `requests: [{model: "models/{model}",
//!   content: {parts: [{text}]}, outputDimensionality}]` (each request's model must be the
//!   path's); the answer is `embeddings: [{values: [float, ...]}]` in request order, with no usage.
//! * "Troubleshooting" (<https://ai.google.dev/gemini-api/docs/troubleshooting>) and Google's
//!   error model (<https://cloud.google.com/apis/design/errors>): `{"error": {code, message,
//!   status, details}}`, 429 `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` detail whose
//!   `retryDelay` is a protobuf Duration (`"30s"`), 400 `INVALID_ARGUMENT` with an `ErrorInfo`
//!   reason `API_KEY_INVALID` for a wrong key, 403 `PERMISSION_DENIED` for a missing one.
//!
//! Choices where the API leaves room, in one place:
//! * Usage: input = `promptTokenCount + toolUsePromptTokenCount`, cached input =
//!   `cachedContentTokenCount`, output = `candidatesTokenCount + thoughtsTokenCount`, reasoning =
//!   `thoughtsTokenCount` ([`TokenUsage`]'s meaning: input is the whole prompt, output includes
//!   reasoning), which adds up to Google's `totalTokenCount`.
//! * A prompt Google blocks up front (`promptFeedback.blockReason`, no candidates) is an answer
//!   with `finish_reason: "content_filter"`, no content and a `refusal` naming the reason (a
//!   stream: the role chunk, then that finish): the request was served and its prompt tokens are
//!   billed, as OpenAI answers when its own filter trips; another target would not be tried.
//! * A wrong key (400 with reason `API_KEY_INVALID`) is reported as 401: it is the gateway's
//!   credential, not the client's request, that is at fault.
//! * Gemini function calls have no id unless the API sends one; ours are `call_<responseId>_<n>`.
//!   A `tool` message's function name comes from the earlier assistant tool call with its id.
//! * Thought parts are not answer text: streams send them as `reasoning_content` deltas (as the
//!   Anthropic adapter does with thinking); whole answers leave them out.
//! * Thought signatures travel as Google's OpenAI endpoint carries them: a `functionCall`
//!   part's signature comes back on its tool call (whole answers and stream deltas alike) as
//!   `extra_content.google.thought_signature`, and a client's echo of it goes back, unchanged,
//!   as `thoughtSignature` on that call's part. Signatures on text parts are dropped: OpenAI's
//!   message has no place per part, and Google does not validate them.
//! * A missing signature gets [`DUMMY_THOUGHT_SIGNATURE`] exactly where Gemini 3 would refuse
//!   the request without one: the first tool call of each assistant message after the last
//!   user message with content (each assistant message is one model step, so this covers the
//!   first `functionCall` of every step even when consecutive ones merge into one turn). Older
//!   turns go unsigned, as Google accepts them, since the FAQ discourages made-up calls; other
//!   calls of a step keep only what the client echoed. The rule does not look at the model name
//!   (which generations validate is Google's to change): histories from another model, or from
//!   a client that dropped `extra_content`, are sent the same way to every Gemini model.
//! * Embeddings: OpenAI's `input` (a string or an array of strings) becomes one request per
//!   string, `dimensions` becomes `outputDimensionality`; token arrays (Gemini embeds text) and
//!   `encoding_format: "base64"` are refused as `InvalidRequest`, `user` is dropped. The answer is
//!   OpenAI's `list` of `embedding` objects named after the asked model, without `usage`:
//!   Google reports none, so the adapter reports none and the meter counts the input text
//!   (`tokens_estimated = 1`), as for any upstream that leaves usage out.
//! * Thinking. `reasoning_effort` (`none`, `minimal`, `low`, `medium`, `high`; anything else is
//!   refused as `InvalidRequest`) follows Google's table above, chosen by the upstream model's
//!   name: names starting `gemini-3` (after an optional `models/`) get `thinkingLevel`, Pro ones
//!   (`-pro` in the name) `low` for `minimal` and `none`, `gemini-3-pro*` also `high` for
//!   `medium`; others `minimal` for `none`, since Gemini 3 has no off. Every other name, unknown
//!   ones included (2.0, tuned models, whatever comes after 3), gets the 2.5 budgets: a budget is
//!   the one form every thinking generation takes, where a level would be refused by 2.5. `none`
//!   on 2.5 Pro is sent as 0 and Gemini's refusal passed on, not turned into another budget.
//!   The client's `google.thinking_config` (either place above; both at once is refused) is
//!   checked (snake_case keys only, budget an integer >= -1, level one of the four, not both)
//!   and wins over `reasoning_effort` as a whole for the depth: when it gives a budget or a
//!   level, `reasoning_effort` adds nothing (a budget from one beside a level from the other
//!   would be a 400); `include_thoughts` comes from it alone. Unlike Google's endpoint, the two
//!   together are not an error, so `reasoning_effort` plus `include_thoughts` asks for a depth
//!   and the summaries. Other keys under `google` are refused rather than dropped. None of these
//!   fields is sent in any other shape: only `generationConfig.thinkingConfig`.
//! * `n` > 1, images by URL (only `data:` URLs can be inlined) and content parts other than
//!   text, image and audio are refused as `InvalidRequest`; fields Gemini lacks (`logit_bias`,
//!   `logprobs`, `user`, `parallel_tool_calls`, ...) are dropped.
//!
//! OpenAI shapes produced: "The chat completion object" and "The chat completion chunk object"
//! (<https://platform.openai.com/docs/api-reference/chat>).

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue, Value};
use switchyard_api::{
    openai::{
        ChatCompletion, ChatRequest, Choice, Content as OpenAiContent, ContentPart, CowStr,
        FunctionCall, JsonStr, KnownPart, Message, ResponseMessage, ToolCall, Usage as OpenAiUsage,
    },
    sse::SseDecoder,
    TokenUsage,
};

use crate::{
    chunk::{
        data_item, unix_now, ChunkWriter, DeltaOut, ExtraContentOut, FunctionDeltaOut, TextOut,
        ToolDeltaOut,
    },
    client::{body_stream, parse_uri, read_body, read_limited},
    error::retry_after,
    openai::error_message,
    BoxFuture, ChatCall, ChatOutput, Completion, EmbeddingsCall, HttpClients, Provider,
    ProviderError, ProviderErrorKind, StreamItem, StreamSummary,
};

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// `[providers.NAME]` with `kind = "gemini"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeminiConfig {
    /// Up to the API version (`.../v1beta`); the adapter adds `/models/{model}:...`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The environment variable holding the key, sent as `x-goog-api-key`. None only for
    /// Gemini-compatible servers that take no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra headers on every call.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

impl Default for GeminiConfig {
    fn default() -> Self {
        GeminiConfig {
            base_url: default_base_url(),
            api_key_env: None,
            headers: BTreeMap::new(),
        }
    }
}

impl GeminiConfig {
    /// Checks the config without I/O; errors name the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "base_url '{}' must start with http:// or https://",
                self.base_url
            ));
        }
        if self.base_url.contains(['?', '#']) {
            return Err(format!(
                "base_url '{}' must not hold a query or fragment",
                self.base_url
            ));
        }
        if self.api_key_env.as_deref().is_some_and(str::is_empty) {
            return Err("api_key_env: must name an environment variable".into());
        }
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: '{k}' is not a header name"))?;
            if name == "x-goog-api-key" {
                return Err(format!("headers.{k}: set by the adapter (use api_key_env)"));
            }
            HeaderValue::from_str(v)
                .map_err(|_| format!("headers.{k}: not a valid header value"))?;
        }
        Ok(())
    }
}

/// A Gemini API endpoint.
pub struct Gemini {
    name: String,
    /// `base_url` without a trailing `/`.
    base: String,
    /// Holds the key (marked sensitive); never formatted.
    headers: HeaderMap,
    client: HttpClients,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Gemini {
    /// Builds the adapter; reads the API key from the environment.
    pub fn build(
        name: &str,
        cfg: &GeminiConfig,
        client: impl Into<HttpClients>,
    ) -> Result<Gemini, String> {
        cfg.validate()?;
        let credential = crate::credential_from_env(
            cfg.api_key_env.as_deref(),
            HeaderName::from_static("x-goog-api-key"),
            str::to_string,
        )?;
        let base = cfg.base_url.trim_end_matches('/').to_string();
        // Every call's URL starts with `base`: one of them checks it and gives the Host.
        let probe = parse_uri(&format!("{base}/models/m:generateContent"))
            .map_err(|e| format!("base_url: {e}"))?;
        let headers = crate::static_headers(credential, &cfg.headers, &probe);
        Ok(Gemini {
            name: name.to_string(),
            base,
            headers,
            client: client.into(),
        })
    }

    /// `{base}/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`.
    fn uri(&self, model: &str, stream: bool) -> Result<http::Uri, ProviderError> {
        let path = model_path(model)?;
        let url = if stream {
            format!("{}/{path}:streamGenerateContent?alt=sse", self.base)
        } else {
            format!("{}/{path}:generateContent", self.base)
        };
        parse_uri(&url).map_err(invalid)
    }
}

/// The model's resource name: `models/{model}` (a `models/` prefix given is kept once), or a
/// `tunedModels/{id}` as given. Refuses names that would change the URL's shape.
fn model_path(model: &str) -> Result<String, ProviderError> {
    let (prefix, id) = if let Some(id) = model.strip_prefix("tunedModels/") {
        ("tunedModels", id)
    } else {
        ("models", model.strip_prefix("models/").unwrap_or(model))
    };
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(invalid(format!(
            "model '{model}' is not a Gemini model name (letters, digits, '-', '.', '_')"
        )));
    }
    Ok(format!("{prefix}/{id}"))
}

impl Provider for Gemini {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "gemini"
    }

    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatOutput, ProviderError>> {
        Box::pin(async move {
            let stream = call.request.is_stream();
            let req = generate_content_request(&call.request, &call.model)?;
            let uri = self.uri(&call.model, stream)?;
            let body = serde_json::to_vec(&req).map_err(|e| invalid(e.to_string()))?;
            let resp = self
                .client
                .get()
                .post(&uri, &self.headers, body, stream)
                .await?;
            if !resp.status().is_success() {
                return Err(error_from_response(&self.name, resp).await);
            }
            if !stream {
                let body = read_body(resp).await?;
                return Ok(ChatOutput::Complete(completion_from_response(
                    &body,
                    &call.model,
                )?));
            }
            let bytes = body_stream(resp);
            Ok(ChatOutput::Stream(Box::pin(gemini_sse_stream(
                bytes,
                call.model.to_string(),
            ))))
        })
    }

    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let path = model_path(&call.model)?;
            let req = batch_embed_request(&call.request, &path)?;
            let uri =
                parse_uri(&format!("{}/{path}:batchEmbedContents", self.base)).map_err(invalid)?;
            let body = serde_json::to_vec(&req).map_err(|e| invalid(e.to_string()))?;
            let resp = self
                .client
                .get()
                .post(&uri, &self.headers, body, false)
                .await?;
            if !resp.status().is_success() {
                return Err(error_from_response(&self.name, resp).await);
            }
            let body = read_body(resp).await?;
            embeddings_from_response(&body, &call.model, req.requests.len())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

/// `google.rpc.Status` as the JSON API writes it.
#[derive(Debug, Deserialize)]
struct GoogleError {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

impl GoogleError {
    fn detail(&self, type_suffix: &str) -> Option<&Value> {
        self.details.iter().find(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(type_suffix))
        })
    }

    /// `RetryInfo.retryDelay`, a protobuf Duration in JSON: seconds with an `s` (`"30s"`, `"1.5s"`).
    fn retry_delay(&self) -> Option<std::time::Duration> {
        let d = self.detail("google.rpc.RetryInfo")?.get("retryDelay")?;
        let secs: f64 = d.as_str()?.trim().strip_suffix('s')?.parse().ok()?;
        (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
    }

    fn reason(&self) -> Option<&str> {
        self.detail("google.rpc.ErrorInfo")?.get("reason")?.as_str()
    }

    /// `STATUS: message`.
    fn describe(&self) -> String {
        match &self.status {
            Some(s) => format!("{s}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// A Google error body, whole or (as some streaming paths send it) as a one-element array.
fn parse_error(body: &[u8]) -> Option<GoogleError> {
    // By the first byte: serde would also read a struct from an array, positionally.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return serde_json::from_slice::<Vec<ErrorBody>>(body)
            .ok()?
            .into_iter()
            .next()
            .map(|e| e.error);
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| e.error)
}

/// Reads a Gemini error answer: status, retry delay (`Retry-After`, else `RetryInfo`),
/// `STATUS: message`, and the body kept as received.
pub async fn error_from_response(
    provider: &str,
    resp: crate::client::UpstreamResponse,
) -> ProviderError {
    let status = resp.status().as_u16();
    let header_retry = retry_after(resp.headers());
    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
    let parsed = parse_error(&body);
    let detail = match &parsed {
        Some(e) => e.describe(),
        None => error_message(&body),
    };
    let retry = header_retry.or_else(|| parsed.as_ref().and_then(GoogleError::retry_delay));
    let key_invalid = parsed
        .as_ref()
        .is_some_and(|e| e.reason() == Some("API_KEY_INVALID"));
    let (kind_status, message) = if key_invalid {
        (
            401,
            format!("provider '{provider}' answered {status} (the configured API key was refused, reported as 401): {detail}"),
        )
    } else {
        (
            status,
            format!("provider '{provider}' answered {status}: {detail}"),
        )
    };
    ProviderError {
        kind: ProviderErrorKind::Status(kind_status),
        message,
        retry_after: retry,
        body: Some(body),
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::new(ProviderErrorKind::InvalidRequest, message)
}

// ---------------------------------------------------------------------------------------------
// Request

/// `GenerateContentRequest`, as sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    pub contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig,
}

#[derive(Debug, Serialize)]
pub struct Content {
    /// `user` or `model`; none for `systemInstruction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub parts: Vec<Part>,
}

/// A part: exactly one of these fields (and, beside a `functionCall`, its `thoughtSignature`).
#[derive(Debug)]
pub enum Part {
    Text(String),
    InlineData(Blob),
    FunctionCall(FunctionCallPart),
    FunctionResponse(FunctionResponsePart),
}

impl Serialize for Part {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let signature = match self {
            Part::FunctionCall(f) => f.thought_signature.as_deref(),
            _ => None,
        };
        let mut m = s.serialize_map(Some(1 + usize::from(signature.is_some())))?;
        match self {
            Part::Text(t) => m.serialize_entry("text", t)?,
            Part::InlineData(b) => m.serialize_entry("inlineData", b)?,
            Part::FunctionCall(f) => m.serialize_entry("functionCall", f)?,
            Part::FunctionResponse(f) => m.serialize_entry("functionResponse", f)?,
        }
        if let Some(sig) = signature {
            m.serialize_entry("thoughtSignature", sig)?;
        }
        m.end()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    /// Base64.
    pub data: String,
}

#[derive(Debug, Serialize)]
pub struct FunctionCallPart {
    pub name: String,
    pub args: Value,
    /// Written beside `functionCall`, in the part, as `thoughtSignature`.
    #[serde(skip)]
    pub thought_signature: Option<String>,
}

/// Google's documented stand-in for a signature the history lacks ("Thought signatures", FAQ):
/// it tells the validator to let the function call through.
pub const DUMMY_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

#[derive(Debug, Serialize)]
pub struct FunctionResponsePart {
    pub name: String,
    pub response: Value,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// `generationConfig.thinkingConfig` ("Thinking"): a budget (Gemini 2.5) or a level (Gemini 3),
/// never both, and whether thought summaries come back.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
}

impl GenerationConfig {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_none()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    pub function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `ANY` or `NONE`.
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

/// OpenAI Chat Completions request → Gemini `GenerateContentRequest`.
///
/// `system`/`developer` messages become `systemInstruction` (wherever they stand); assistant
/// turns are role `model`; `tool` messages become `functionResponse` parts in a user turn, named
/// after the assistant tool call they answer; consecutive turns of one role are merged.
/// `model` is the upstream model name: it picks a thinking budget or level for
/// `reasoning_effort` (see `thinking_config` and the module comment).
pub fn generate_content_request(
    req: &ChatRequest,
    model: &str,
) -> Result<GenerateContentRequest, ProviderError> {
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    // Tool call id → function name, from the assistant turns seen so far.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    // Google's current turn starts at the last user message with content of its own (tool
    // results are not one): the function calls after it are the ones validated.
    let turn_start = req
        .messages
        .iter()
        .rposition(|m| m.role == "user" && has_content(m));
    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => {
                let text = m
                    .content
                    .as_ref()
                    .map(OpenAiContent::as_text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    system.push(Part::Text(text));
                }
            }
            "user" => push_turn(&mut contents, "user", user_parts(m, i)?),
            "assistant" => {
                for tc in m.tool_calls.iter().flatten() {
                    call_names.insert(tc.id.as_str(), tc.function.name.as_str());
                }
                let current_turn = turn_start.is_none_or(|t| i > t);
                push_turn(&mut contents, "model", assistant_parts(m, i, current_turn)?)
            }
            "tool" => {
                let part = function_response(m, i, &call_names)?;
                push_turn(&mut contents, "user", vec![part])
            }
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role: '{other}' cannot be sent to Gemini"
                )))
            }
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "messages: Gemini needs at least one user or assistant message besides system ones"
                .into(),
        ));
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "n: this gateway asks Gemini for one candidate per request; n must be 1".into(),
        ));
    }
    let mut gc = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.extra.get("top_k").and_then(Value::as_u64),
        max_output_tokens: req.max_output_tokens(),
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()),
        candidate_count: None,
        seed: req.seed,
        presence_penalty: req.extra.get("presence_penalty").and_then(Value::as_f64),
        frequency_penalty: req.extra.get("frequency_penalty").and_then(Value::as_f64),
        response_mime_type: None,
        response_json_schema: None,
        thinking_config: thinking_config(req, model)?,
    };
    if let Some(rf) = &req.response_format {
        match rf.get("type").and_then(Value::as_str) {
            None | Some("text") => {}
            Some("json_object") => gc.response_mime_type = Some("application/json"),
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .cloned()
                    .ok_or_else(|| {
                        invalid("response_format.json_schema.schema: required for Gemini".into())
                    })?;
                gc.response_mime_type = Some("application/json");
                gc.response_json_schema = Some(schema);
            }
            Some(other) => {
                return Err(invalid(format!(
                    "response_format.type: '{other}' is not supported for Gemini"
                )))
            }
        }
    }
    let (tools, tool_config) = tools_and_config(req)?;
    Ok(GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: gc,
    })
}

/// The `reasoning_effort` values accepted, as Google's OpenAI endpoint documents them.
const REASONING_EFFORTS: &str = "none, minimal, low, medium, high";

/// Thinking levels Gemini 3 takes (`ThinkingLevel`, written lowercase as Google's examples do).
const THINKING_LEVELS: [&str; 4] = ["minimal", "low", "medium", "high"];

/// Whether `model` takes `thinkingLevel`: Gemini 3 models, by name (`gemini-3...`, after an
/// optional `models/`). Every other name gets a `thinkingBudget` (see the module comment).
fn takes_thinking_level(model: &str) -> bool {
    model
        .strip_prefix("models/")
        .unwrap_or(model)
        .starts_with("gemini-3")
}

/// `reasoning_effort` → the depth part of `thinkingConfig`, after the table of "OpenAI
/// compatibility" (Thinking): budgets 1,024 / 1,024 / 8,192 / 24,576 (0 for `none`) for
/// Gemini 2.5 and unknown names, levels for Gemini 3 with the Pro adjustments of that table.
fn effort_thinking(effort: &str, model: &str) -> Option<ThinkingConfig> {
    if !takes_thinking_level(model) {
        let budget = match effort {
            "none" => 0,
            "minimal" | "low" => 1024,
            "medium" => 8192,
            "high" => 24576,
            _ => return None,
        };
        return Some(ThinkingConfig {
            thinking_budget: Some(budget),
            ..Default::default()
        });
    }
    let id = model.strip_prefix("models/").unwrap_or(model);
    // Gemini 3 Pro models have no `minimal`; the first one (gemini-3-pro) no `medium` either.
    let pro = id.contains("-pro");
    let level = match effort {
        // Gemini 3 cannot turn thinking off: `none` asks for the least the model has.
        "none" | "minimal" if pro => "low",
        "none" | "minimal" => "minimal",
        "low" => "low",
        "medium" if id.starts_with("gemini-3-pro") => "high",
        "medium" => "medium",
        "high" => "high",
        _ => return None,
    };
    Some(ThinkingConfig {
        thinking_level: Some(level),
        ..Default::default()
    })
}

/// The client's Google thinking config as Google's OpenAI endpoint takes it: `extra_body.google.
/// thinking_config` (the body Google's REST example sends) or `google.thinking_config` (what an
/// OpenAI SDK's `extra_body={"google": ...}` sends), snake_case keys `thinking_budget`,
/// `thinking_level`, `include_thoughts`. `None` when the request has neither.
fn google_thinking_config(req: &ChatRequest) -> Result<Option<ThinkingConfig>, ProviderError> {
    let nested = req.extra.get("extra_body").and_then(|e| e.get("google"));
    let top = req.extra.get("google").filter(|g| !g.is_null());
    let (field, google) = match (nested.filter(|g| !g.is_null()), top) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "google, extra_body.google: give Google's settings in one of them, not both".into(),
            ))
        }
        (Some(g), None) => ("extra_body.google", g),
        (None, Some(g)) => ("google", g),
        (None, None) => return Ok(None),
    };
    let Some(google) = google.as_object() else {
        return Err(invalid(format!("{field}: must be an object")));
    };
    if let Some(k) = google.keys().find(|k| *k != "thinking_config") {
        return Err(invalid(format!(
            "{field}.{k}: not supported by the Gemini adapter (only thinking_config)"
        )));
    }
    let Some(tc) = google.get("thinking_config").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let field = format!("{field}.thinking_config");
    let Some(tc) = tc.as_object() else {
        return Err(invalid(format!("{field}: must be an object")));
    };
    let mut out = ThinkingConfig::default();
    for (k, v) in tc {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "thinking_budget" => {
                out.thinking_budget = Some(v.as_i64().filter(|&b| b >= -1).ok_or_else(|| {
                    invalid(format!(
                        "{field}.thinking_budget: must be an integer: a token budget, 0 (off) or -1 (dynamic)"
                    ))
                })?)
            }
            "thinking_level" => {
                let level = v.as_str().map(str::to_ascii_lowercase);
                out.thinking_level = Some(
                    THINKING_LEVELS
                        .into_iter()
                        .find(|l| level.as_deref() == Some(*l))
                        .ok_or_else(|| {
                            invalid(format!(
                                "{field}.thinking_level: must be one of minimal, low, medium, high"
                            ))
                        })?,
                )
            }
            "include_thoughts" => {
                out.include_thoughts = Some(v.as_bool().ok_or_else(|| {
                    invalid(format!("{field}.include_thoughts: must be true or false"))
                })?)
            }
            other => {
                return Err(invalid(format!(
                    "{field}.{other}: unknown (thinking_budget, thinking_level, include_thoughts)"
                )))
            }
        }
    }
    if out.thinking_budget.is_some() && out.thinking_level.is_some() {
        return Err(invalid(format!(
            "{field}: thinking_budget and thinking_level cannot be used together (Gemini refuses both)"
        )));
    }
    Ok(Some(out))
}

/// `generationConfig.thinkingConfig` from `reasoning_effort` and the client's Google thinking
/// config: the explicit config's budget or level, when it gives one, replaces what
/// `reasoning_effort` maps to (as a whole: never a budget from one and a level from the other);
/// `include_thoughts` comes only from the explicit config. A `reasoning_effort` outside
/// [`REASONING_EFFORTS`] is refused even when overridden.
fn thinking_config(
    req: &ChatRequest,
    model: &str,
) -> Result<Option<ThinkingConfig>, ProviderError> {
    let from_effort = match req.extra.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let effort = v.as_str().unwrap_or_default();
            Some(effort_thinking(effort, model).ok_or_else(|| {
                invalid(format!(
                    "reasoning_effort: {v} is not supported for Gemini (one of {REASONING_EFFORTS})"
                ))
            })?)
        }
    };
    let explicit = google_thinking_config(req)?;
    Ok(match (from_effort, explicit) {
        (effort, None) => effort,
        (effort, Some(ex)) => {
            let depth_given = ex.thinking_budget.is_some() || ex.thinking_level.is_some();
            let base = match effort {
                Some(e) if !depth_given => e,
                _ => ThinkingConfig {
                    thinking_budget: ex.thinking_budget,
                    thinking_level: ex.thinking_level,
                    include_thoughts: None,
                },
            };
            let merged = ThinkingConfig {
                include_thoughts: ex.include_thoughts,
                ..base
            };
            (merged != ThinkingConfig::default()).then_some(merged)
        }
    })
}

/// Appends parts to the conversation, merging into the last turn when the role repeats.
fn push_turn(contents: &mut Vec<Content>, role: &'static str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut() {
        if last.role == Some(role) {
            last.parts.extend(parts);
            return;
        }
    }
    contents.push(Content {
        role: Some(role),
        parts,
    });
}

fn user_parts(m: &Message, i: usize) -> Result<Vec<Part>, ProviderError> {
    let mut out = Vec::new();
    match &m.content {
        Some(OpenAiContent::Text(t)) if !t.is_empty() => out.push(Part::Text(t.clone())),
        None | Some(OpenAiContent::Text(_)) => {}
        Some(OpenAiContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Known(KnownPart::Text { text }) => {
                        if !text.is_empty() {
                            out.push(Part::Text(text.clone()));
                        }
                    }
                    ContentPart::Known(KnownPart::ImageUrl { image_url }) => {
                        out.push(Part::InlineData(inline_image(&image_url.url).map_err(
                            |e| invalid(format!("messages[{i}].content[{j}].image_url: {e}")),
                        )?));
                    }
                    ContentPart::Other(v) => {
                        let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
                        if kind == "input_audio" {
                            out.push(Part::InlineData(inline_audio(v).map_err(|e| {
                                invalid(format!("messages[{i}].content[{j}].input_audio: {e}"))
                            })?));
                        } else {
                            return Err(invalid(format!(
                                "messages[{i}].content[{j}]: part type '{kind}' is not supported by the Gemini adapter"
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `data:<media type>;base64,<data>` → inline data. Gemini does not fetch arbitrary URLs.
fn inline_image(url: &str) -> Result<Blob, String> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(
            "only base64 data: URLs can be sent to Gemini (it does not fetch image URLs)".into(),
        );
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| "a data: URL needs a ',' before its data".to_string())?;
    let mime_type = meta
        .strip_suffix(";base64")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            "only base64 data: URLs with a media type can be sent to Gemini".to_string()
        })?;
    Ok(Blob {
        mime_type: mime_type.to_string(),
        data: data.to_string(),
    })
}

/// OpenAI `input_audio {data, format}` → inline `audio/{format}` data.
fn inline_audio(v: &Value) -> Result<Blob, String> {
    let a = v.get("input_audio").ok_or("missing input_audio")?;
    let data = a
        .get("data")
        .and_then(Value::as_str)
        .ok_or("missing data")?;
    let mime_type = match a.get("format").and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mp3",
        other => return Err(format!("format {other:?} is not wav or mp3")),
    };
    Ok(Blob {
        mime_type: mime_type.to_string(),
        data: data.to_string(),
    })
}

/// Whether a user message holds something that becomes a part (text, image or audio).
fn has_content(m: &Message) -> bool {
    match &m.content {
        None => false,
        Some(OpenAiContent::Text(t)) => !t.is_empty(),
        Some(OpenAiContent::Parts(parts)) => parts
            .iter()
            .any(|p| !matches!(p, ContentPart::Known(KnownPart::Text { text }) if text.is_empty())),
    }
}

/// The Gemini thought signature a client echoed on a tool call, as Google's OpenAI-compatible
/// endpoint carries it: `extra_content.google.thought_signature`.
fn echoed_signature(tc: &ToolCall) -> Option<&str> {
    tc.extra_content
        .as_ref()?
        .get("google")?
        .get("thought_signature")?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// An assistant message (one model step) → `model` parts. Each call's echoed signature goes back
/// on its own part; in the current turn the step's first call, which Gemini 3 validates, gets
/// [`DUMMY_THOUGHT_SIGNATURE`] when the client had none to echo.
fn assistant_parts(m: &Message, i: usize, current_turn: bool) -> Result<Vec<Part>, ProviderError> {
    let mut out = Vec::new();
    if let Some(c) = &m.content {
        let text = c.as_text();
        if !text.is_empty() {
            out.push(Part::Text(text));
        }
    }
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        let args = tc.function.arguments.trim();
        let args: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|e| {
                invalid(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments: not JSON ({e})"
                ))
            })?
        };
        if !args.is_object() {
            return Err(invalid(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: Gemini needs a JSON object"
            )));
        }
        let thought_signature = match echoed_signature(tc) {
            Some(sig) => Some(sig.to_string()),
            None if j == 0 && current_turn => Some(DUMMY_THOUGHT_SIGNATURE.to_string()),
            None => None,
        };
        out.push(Part::FunctionCall(FunctionCallPart {
            name: tc.function.name.clone(),
            args,
            thought_signature,
        }));
    }
    Ok(out)
}

/// A `tool` message → `functionResponse`. Its `response` must be an object: a JSON object
/// result goes as it is, anything else as `{"output": ...}` (the key the API documents).
fn function_response(
    m: &Message,
    i: usize,
    call_names: &HashMap<&str, &str>,
) -> Result<Part, ProviderError> {
    let id = m.tool_call_id.as_deref().ok_or_else(|| {
        invalid(format!(
            "messages[{i}].tool_call_id: required for role 'tool'"
        ))
    })?;
    let name = call_names
        .get(id)
        .copied()
        .or(m.name.as_deref())
        .ok_or_else(|| {
            invalid(format!(
                "messages[{i}].tool_call_id: '{id}' matches no earlier assistant tool call, and Gemini needs the function's name"
            ))
        })?;
    let text = m
        .content
        .as_ref()
        .map(OpenAiContent::as_text)
        .unwrap_or_default();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "output": v }),
        Err(_) => json!({ "output": text }),
    };
    Ok(Part::FunctionResponse(FunctionResponsePart {
        name: name.to_string(),
        response,
    }))
}

type ToolsAndConfig = (Option<Vec<Tool>>, Option<ToolConfig>);

fn tools_and_config(req: &ChatRequest) -> Result<ToolsAndConfig, ProviderError> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok((None, None));
    };
    let mut decls = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(invalid(format!(
                "tools[{i}].type: '{}' is not supported by Gemini",
                t.kind
            )));
        }
        decls.push(FunctionDeclaration {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            parameters_json_schema: t.function.parameters.clone(),
        });
    }
    let config = match &req.tool_choice {
        None => None,
        Some(Value::String(s)) => {
            let mode = match s.as_str() {
                "auto" => "AUTO",
                "required" => "ANY",
                "none" => "NONE",
                other => {
                    return Err(invalid(format!(
                        "tool_choice: '{other}' is not one of auto, none, required"
                    )))
                }
            };
            Some(FunctionCallingConfig {
                mode,
                allowed_function_names: None,
            })
        }
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
            Some(FunctionCallingConfig {
                mode: "ANY",
                allowed_function_names: Some(vec![name.to_string()]),
            })
        }
    };
    Ok((
        Some(vec![Tool {
            function_declarations: decls,
        }]),
        config.map(|c| ToolConfig {
            function_calling_config: c,
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Embeddings

/// `BatchEmbedContentsRequest`, as sent.
#[derive(Debug, Serialize)]
pub struct BatchEmbedRequest {
    pub requests: Vec<EmbedContentRequest>,
}

/// `EmbedContentRequest`: one text to embed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    /// `models/{model}`, the same as the path's (Google requires it).
    pub model: String,
    pub content: Content,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u64>,
}

/// OpenAI embeddings request → `batchEmbedContents`: one request per input string, in order;
/// `dimensions` → `outputDimensionality`. Token arrays (Gemini takes text) and
/// `encoding_format: "base64"` are refused; other fields (`user`) are dropped.
pub fn batch_embed_request(
    req: &switchyard_api::openai::EmbeddingsRequest,
    model_path: &str,
) -> Result<BatchEmbedRequest, ProviderError> {
    let texts: Vec<&str> = match &req.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    invalid(format!(
                        "input[{i}]: Gemini embeds text; token arrays and other values cannot be sent"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                "input: a string or a non-empty array of strings is needed for Gemini".into(),
            ))
        }
    };
    let output_dimensionality = match req.extra.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&d| d > 0)
                .ok_or_else(|| invalid("dimensions: must be a positive integer".into()))?,
        ),
    };
    match req.extra.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => {}
        Some(other) => {
            return Err(invalid(format!(
                "encoding_format: '{other}' is not supported for Gemini (only float)"
            )))
        }
    }
    Ok(BatchEmbedRequest {
        requests: texts
            .into_iter()
            .map(|t| EmbedContentRequest {
                model: model_path.to_string(),
                content: Content {
                    role: None,
                    parts: vec![Part::Text(t.to_string())],
                },
                output_dimensionality,
            })
            .collect(),
    })
}

/// `BatchEmbedContentsResponse` → OpenAI's embeddings `list`. The vectors are written through
/// as Google sent them (no float reformatting). Google reports no usage, so none is given: the
/// meter counts the input text instead (the gateway hands it over when usage is missing).
pub fn embeddings_from_response(
    body: &[u8],
    model: &str,
    expected: usize,
) -> Result<Completion, ProviderError> {
    #[derive(Deserialize)]
    struct View<'a> {
        #[serde(borrow, default)]
        embeddings: Vec<EmbeddingView<'a>>,
    }
    #[derive(Deserialize)]
    struct EmbeddingView<'a> {
        #[serde(borrow)]
        values: &'a RawValue,
    }
    #[derive(Serialize)]
    struct ListOut<'a> {
        object: &'static str,
        data: Vec<EmbeddingOut<'a>>,
        model: &'a str,
    }
    #[derive(Serialize)]
    struct EmbeddingOut<'a> {
        object: &'static str,
        index: usize,
        embedding: &'a RawValue,
    }
    let v: View = serde_json::from_slice(body).map_err(|e| {
        ProviderError::protocol(format!(
            "upstream answer is not a Gemini BatchEmbedContentsResponse: {e}"
        ))
    })?;
    if let Some(e) = v
        .embeddings
        .iter()
        .find(|e| !e.values.get().starts_with('['))
    {
        return Err(ProviderError::protocol(format!(
            "upstream embedding values are not an array: {}",
            e.values.get()
        )));
    }
    if v.embeddings.len() != expected {
        return Err(ProviderError::protocol(format!(
            "upstream answered {} embeddings for {expected} inputs",
            v.embeddings.len()
        )));
    }
    let out = ListOut {
        object: "list",
        data: v
            .embeddings
            .iter()
            .enumerate()
            .map(|(index, e)| EmbeddingOut {
                object: "embedding",
                index,
                embedding: e.values,
            })
            .collect(),
        model,
    };
    let body = serde_json::to_vec(&out)
        .map_err(|e| ProviderError::protocol(format!("could not encode the embeddings: {e}")))?;
    Ok(Completion {
        body: Bytes::from(body),
        usage: None,
        response_model: Some(model.to_string()),
        output_text: None,
        energy: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Response

/// `GenerateContentResponse`, read borrowed: text stays a slice of the received bytes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseView<'a> {
    #[serde(borrow, default)]
    candidates: FirstAndRest<CandidateView<'a>>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    model_version: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    response_id: Option<CowStr<'a>>,
    /// An error sent in place of a response (mid-stream).
    #[serde(default)]
    error: Option<GoogleError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateView<'a> {
    #[serde(borrow, default)]
    content: Option<ContentView<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<CowStr<'a>>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ContentView<'a> {
    #[serde(borrow, default)]
    parts: FirstAndRest<PartView<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartView<'a> {
    #[serde(borrow, default)]
    text: Option<JsonStr<'a>>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCallView<'a>>,
    /// Base64, opaque; kept as it stands in the JSON (no escapes expected, none decoded).
    #[serde(borrow, default)]
    thought_signature: Option<JsonStr<'a>>,
}

#[derive(Debug, Deserialize)]
struct FunctionCallView<'a> {
    #[serde(borrow)]
    name: CowStr<'a>,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<CowStr<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// `usageMetadata`: counts for the whole request so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub total_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// See the module comment: input includes cached and tool-use prompt tokens, output
    /// includes thoughts.
    pub fn to_token_usage(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.prompt_token_count + self.tool_use_prompt_token_count,
            output_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_input_tokens: self.cached_content_token_count,
            cache_creation_input_tokens: 0,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

/// A JSON array read without touching the heap for its usual single element: a stream's
/// responses hold one candidate with (mostly) one part, and a `Vec` here would be two
/// allocations per token.
#[derive(Debug)]
struct FirstAndRest<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for FirstAndRest<T> {
    fn default() -> Self {
        FirstAndRest {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T> FirstAndRest<T> {
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstAndRest<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = FirstAndRest<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = FirstAndRest::default();
                while let Some(x) = seq.next_element()? {
                    match out.first {
                        None => out.first = Some(x),
                        Some(_) => out.rest.push(x),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`; `STOP` with function calls is `tool_calls`.
pub fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        _ if has_tool_calls => "tool_calls",
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, and anything new.
        _ => "stop",
    }
}

/// The OpenAI tool call id for the `n`th function call of a response.
fn tool_call_id(given: Option<&CowStr<'_>>, response_id: &str, n: u32) -> String {
    match given {
        Some(id) if !id.0.is_empty() => id.0.to_string(),
        _ if response_id.is_empty() => format!("call_{n}"),
        _ => format!("call_{response_id}_{n}"),
    }
}

/// An id for an answer Google gave none.
fn fallback_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("gemini-{nanos:x}-{n}")
}

fn mid_stream_error(e: &GoogleError) -> ProviderError {
    let status = e.code.unwrap_or(500);
    ProviderError {
        kind: ProviderErrorKind::Status(status),
        message: format!("upstream error mid-stream: {}", e.describe()),
        retry_after: e.retry_delay(),
        body: None,
    }
}

/// Gemini `GenerateContentResponse` → OpenAI `chat.completion` body and usage. `model` names
/// the answer when Google gives no `modelVersion`.
pub fn completion_from_response(body: &[u8], model: &str) -> Result<Completion, ProviderError> {
    let r: ResponseView = serde_json::from_slice(body).map_err(|e| {
        ProviderError::protocol(format!(
            "upstream answer is not a Gemini GenerateContentResponse: {e}"
        ))
    })?;
    if let Some(e) = &r.error {
        return Err(mid_stream_error(e));
    }
    let response_id = r.response_id.as_ref().map(|s| s.0.to_string());
    let rid = response_id.as_deref().unwrap_or("");
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let (finish, refusal) = match r.candidates.first.as_ref() {
        Some(c) => {
            for p in c.content.iter().flat_map(|c| c.parts.iter()) {
                if let Some(fc) = &p.function_call {
                    let n = tool_calls.len() as u32;
                    let extra_content = p.thought_signature.filter(|s| !s.is_empty()).map(|s| {
                        let mut sig = String::new();
                        s.append_to(&mut sig);
                        json!({"google": {"thought_signature": sig}})
                    });
                    tool_calls.push(ToolCall {
                        id: tool_call_id(fc.id.as_ref(), rid, n),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: fc.name.0.to_string(),
                            arguments: fc.args.map_or_else(|| "{}".into(), |a| a.get().into()),
                        },
                        extra_content,
                    });
                } else if let Some(t) = &p.text {
                    if p.thought != Some(true) {
                        t.append_to(&mut text);
                    }
                }
            }
            let reason = c.finish_reason.as_ref().map(|f| f.0.as_ref());
            (finish_reason(reason, !tool_calls.is_empty()), None)
        }
        None => match r
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
        {
            Some(reason) => (
                "content_filter",
                Some(format!("Gemini blocked the prompt (blockReason {reason})")),
            ),
            None => {
                return Err(ProviderError::protocol(
                    "upstream answer has no candidates and no promptFeedback.blockReason",
                ))
            }
        },
    };
    let usage = r.usage_metadata.map(|u| u.to_token_usage());
    let content = if refusal.is_some() || (text.is_empty() && !tool_calls.is_empty()) {
        None
    } else {
        Some(text.clone())
    };
    let response_model = r
        .model_version
        .as_ref()
        .map_or_else(|| model.to_string(), |m| m.0.to_string());
    let completion = ChatCompletion {
        id: response_id.unwrap_or_else(fallback_id),
        object: "chat.completion".into(),
        created: unix_now(),
        model: response_model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal,
            },
            finish_reason: Some(finish.into()),
            logprobs: None,
        }],
        usage: usage.as_ref().map(OpenAiUsage::from_token_usage),
        system_fingerprint: None,
    };
    let body = serde_json::to_vec(&completion)
        .map_err(|e| ProviderError::protocol(format!("could not encode the completion: {e}")))?;
    Ok(Completion {
        body: Bytes::from(body),
        output_text: usage.is_none().then_some(text),
        usage,
        response_model: Some(response_model),
        energy: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Stream

/// Turns a Gemini SSE byte stream (`streamGenerateContent?alt=sse`) into OpenAI
/// `chat.completion.chunk` events. `model` names the chunks until Google's `modelVersion` does.
pub fn gemini_sse_stream<S>(
    bytes: S,
    model: String,
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
        tr: Translator::new(model),
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
                    if let Err(e) = st.tr.on_data(data, &mut st.out) {
                        st.done = true;
                        st.out.clear();
                        return Some((Err(e), st));
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
                        // A last event without its blank line: read it rather than drop it.
                        let tail = st.dec.finish();
                        let result = match tail.as_ref().map(|ev| ev.data()) {
                            Some(data) if !data.is_empty() => st.tr.on_data(data, &mut st.out),
                            _ => Ok(()),
                        }
                        .and_then(|()| st.tr.finish(&mut st.out));
                        if let Err(e) = result {
                            st.out.clear();
                            return Some((Err(e), st));
                        }
                    }
                },
            }
        }
    })
}

/// Stream translation state.
struct Translator {
    writer: ChunkWriter,
    started: bool,
    /// The latest `usageMetadata` (each one replaces the last: counts are for the whole request).
    usage: Option<UsageMetadata>,
    finish: Option<String>,
    blocked: Option<String>,
    tools: u32,
    output_text: String,
}

impl Translator {
    fn new(model: String) -> Self {
        Translator {
            writer: ChunkWriter::new(model),
            started: false,
            usage: None,
            finish: None,
            blocked: None,
            tools: 0,
            output_text: String::new(),
        }
    }

    /// Handles one `data:` payload (a whole `GenerateContentResponse`).
    fn on_data(&mut self, data: &str, out: &mut VecDeque<StreamItem>) -> Result<(), ProviderError> {
        let v: ResponseView = serde_json::from_str(data).map_err(|e| {
            ProviderError::protocol(format!(
                "upstream stream event is not a GenerateContentResponse: {e}"
            ))
        })?;
        if let Some(e) = &v.error {
            return Err(mid_stream_error(e));
        }
        if !self.started {
            self.started = true;
            self.writer.id = match &v.response_id {
                Some(id) if !id.0.is_empty() => id.0.to_string(),
                _ => fallback_id(),
            };
            if let Some(m) = &v.model_version {
                self.writer.model = m.0.to_string();
            }
            let delta = DeltaOut {
                role: Some("assistant"),
                content: Some(TextOut::Str("")),
                ..Default::default()
            };
            let bytes = self.writer.chunk(delta, None)?;
            out.push_back(data_item(bytes, false, false));
        }
        if let Some(u) = v.usage_metadata {
            self.usage = Some(u);
        }
        if let Some(reason) = v.prompt_feedback.and_then(|f| f.block_reason) {
            self.blocked = Some(reason);
        }
        // One candidate was asked for (`n` > 1 is refused); another index is not ours.
        let Some(c) = v
            .candidates
            .first
            .as_ref()
            .filter(|c| c.index.unwrap_or(0) == 0)
        else {
            return Ok(());
        };
        for p in c.content.iter().flat_map(|c| c.parts.iter()) {
            let delta = if let Some(fc) = &p.function_call {
                let id = tool_call_id(fc.id.as_ref(), &self.writer.id, self.tools);
                let index = self.tools;
                self.tools += 1;
                let args = fc.args.map_or("{}", RawValue::get);
                let delta = DeltaOut {
                    tool_calls: Some([ToolDeltaOut {
                        index,
                        id: Some(&id),
                        kind: Some("function"),
                        function: FunctionDeltaOut {
                            name: Some(&fc.name.0),
                            arguments: TextOut::Str(args),
                        },
                        extra_content: p
                            .thought_signature
                            .filter(|s| !s.is_empty())
                            .map(|s| ExtraContentOut::google_thought_signature(TextOut::Json(s))),
                    }]),
                    ..Default::default()
                };
                let bytes = self.writer.chunk(delta, None)?;
                out.push_back(data_item(bytes, true, false));
                continue;
            } else if let Some(t) = p.text.filter(|t| !t.is_empty()) {
                t.append_to(&mut self.output_text);
                if p.thought == Some(true) {
                    DeltaOut {
                        reasoning_content: Some(TextOut::Json(t)),
                        ..Default::default()
                    }
                } else {
                    DeltaOut {
                        content: Some(TextOut::Json(t)),
                        ..Default::default()
                    }
                }
            } else {
                // Empty text, thought signatures, executable code, inline data...
                continue;
            };
            let bytes = self.writer.chunk(delta, None)?;
            out.push_back(data_item(bytes, true, false));
        }
        if let Some(f) = &c.finish_reason {
            self.finish = Some(f.0.to_string());
        }
        Ok(())
    }

    /// The body ended: a finished answer gets its finish and usage chunks and the summary; one
    /// that never said why it stopped was cut.
    fn finish(&mut self, out: &mut VecDeque<StreamItem>) -> Result<(), ProviderError> {
        if !self.started {
            return Err(ProviderError::new(
                ProviderErrorKind::Io,
                "upstream stream ended before any response",
            ));
        }
        let finish = match (&self.finish, &self.blocked) {
            (Some(f), _) => finish_reason(Some(f), self.tools > 0),
            (None, Some(_)) => "content_filter",
            (None, None) => {
                return Err(ProviderError::new(
                    ProviderErrorKind::Io,
                    "upstream stream ended before a finishReason (cut mid-answer)",
                ))
            }
        };
        let refusal = self
            .blocked
            .as_ref()
            .filter(|_| self.finish.is_none())
            .map(|r| format!("Gemini blocked the prompt (blockReason {r})"));
        let delta = DeltaOut {
            refusal: refusal.as_deref(),
            ..Default::default()
        };
        let bytes = self.writer.chunk(delta, Some(finish))?;
        out.push_back(data_item(bytes, false, false));
        let usage = self.usage.map(|u| u.to_token_usage());
        if let Some(u) = &usage {
            let openai_usage = OpenAiUsage::from_token_usage(u);
            let bytes = self.writer.usage_chunk(&openai_usage)?;
            out.push_back(data_item(bytes, false, true));
        }
        out.push_back(StreamItem::End(StreamSummary {
            usage,
            response_model: Some(self.writer.model.clone()),
            finish_reason: Some(finish.to_string()),
            output_text: std::mem::take(&mut self.output_text),
            energy: None,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::openai::ChatChunk;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn request(body: Value) -> Value {
        serde_json::to_value(generate_content_request(&chat(body), "gemini-2.5-flash").unwrap())
            .unwrap()
    }

    #[test]
    fn config_defaults_and_validation_name_the_key() {
        let cfg: GeminiConfig =
            serde_json::from_value(json!({"api_key_env": "GEMINI_API_KEY"})).unwrap();
        assert_eq!(
            cfg.base_url,
            "https://generativelanguage.googleapis.com/v1beta"
        );
        assert!(cfg.validate().is_ok());
        assert!(serde_json::from_value::<GeminiConfig>(json!({"api_key": "x"})).is_err());
        let bad = |f: fn(&mut GeminiConfig)| {
            let mut c = GeminiConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(
            bad(|c| c.base_url = "generativelanguage.googleapis.com".into()).contains("base_url")
        );
        assert!(bad(|c| c.base_url = "https://h/v1beta?key=x".into()).contains("base_url"));
        assert!(bad(|c| c.api_key_env = Some(String::new())).contains("api_key_env"));
        assert!(bad(|c| {
            c.headers.insert("x-goog-api-key".into(), "k".into());
        })
        .contains("headers.x-goog-api-key"));
    }

    #[test]
    fn urls_name_the_model_and_method() {
        let g = Gemini::build(
            "g",
            &GeminiConfig {
                base_url: "http://h:1/v1beta/".into(),
                ..Default::default()
            },
            crate::HttpClient::new(std::time::Duration::from_secs(5)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            g.uri("gemini-2.5-flash", false).unwrap().to_string(),
            "http://h:1/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            g.uri("models/gemini-2.5-pro", true).unwrap().to_string(),
            "http://h:1/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            g.uri("tunedModels/my-model-1", false).unwrap().to_string(),
            "http://h:1/v1beta/tunedModels/my-model-1:generateContent"
        );
        for bad in ["", "a/b", "x:generateContent", "m?alt=json", "m#", "../x"] {
            let e = g.uri(bad, false).unwrap_err();
            assert_eq!(e.kind, ProviderErrorKind::InvalidRequest, "{bad}");
        }
        assert!(!format!("{g:?}").contains("x-goog-api-key"));
    }

    #[test]
    fn a_conversation_converts_with_system_merging_tools_and_config() {
        let v = request(json!({
            "model": "public",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "developer", "content": "use metric units"},
                {"role": "user", "content": [{"type": "text", "text": "and Rome"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"},
                {"role": "assistant", "content": "Paris 21C at noon."},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}},
                {"type": "function", "function": {"name": "get_time"}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "stop": ["END"], "max_completion_tokens": 300, "max_tokens": 999,
            "temperature": 1.5, "top_p": 0.9, "top_k": 40, "seed": 7, "presence_penalty": 0.5,
            "frequency_penalty": 0.25, "user": "u-42", "logit_bias": {"1": 2}, "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}
        }));
        assert_eq!(
            v["systemInstruction"],
            json!({"parts": [{"text": "be brief"}, {"text": "use metric units"}]})
        );
        let roles: Vec<&str> = v["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["user", "model", "user", "model", "user"],
            "turns merged"
        );
        let first = &v["contents"][0]["parts"];
        assert_eq!(first[0], json!({"text": "weather in Paris?"}));
        assert_eq!(first[1], json!({"text": "and Rome"}));
        assert_eq!(
            first[2],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
        );
        assert_eq!(first[3]["inlineData"]["mimeType"], "audio/wav");
        assert_eq!(
            v["contents"][1]["parts"],
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                   {"functionCall": {"name": "get_time", "args": {}}}])
        );
        assert_eq!(
            v["contents"][2]["parts"],
            json!([{"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                   {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]),
            "each result is named after the call with its id"
        );
        assert_eq!(
            v["contents"][3]["parts"],
            json!([{"text": "Paris 21C at noon."}])
        );
        let decls = &v["tools"][0]["functionDeclarations"];
        assert_eq!(decls[0]["name"], "get_weather");
        assert_eq!(decls[0]["description"], "Weather by city");
        assert_eq!(
            decls[0]["parametersJsonSchema"]["additionalProperties"], false,
            "JSON Schema passes unchanged"
        );
        assert!(decls[1].get("parametersJsonSchema").is_none());
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert_eq!(
            v["generationConfig"],
            json!({"temperature": 1.5, "topP": 0.9, "topK": 40, "maxOutputTokens": 300,
                "stopSequences": ["END"], "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": 0.25,
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}})
        );
        for key in [
            "logit_bias",
            "user",
            "parallel_tool_calls",
            "model",
            "messages",
        ] {
            assert!(v.get(key).is_none(), "{key} is not sent");
        }
    }

    #[test]
    fn minimal_request_and_tool_choice_modes() {
        let v = request(json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(
            v,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
        let with = |choice: Value| {
            request(
                json!({"model": "p", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}),
            )
        };
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            assert_eq!(
                with(json!(choice))["toolConfig"]["functionCallingConfig"],
                json!({"mode": mode})
            );
        }
        let v = request(
            json!({"model": "p", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}),
        );
        assert_eq!(
            v["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
    }

    /// `generationConfig.thinkingConfig` for a request with `extra` fields, sent to `model`.
    fn thinking(model: &str, extra: Value) -> Result<Value, ProviderError> {
        let mut body = json!({"model": "p", "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = generate_content_request(&chat(body), model)?;
        Ok(serde_json::to_value(r).unwrap()["generationConfig"]["thinkingConfig"].clone())
    }

    #[test]
    fn reasoning_effort_follows_googles_table_by_model_name() {
        let effort =
            |model: &str, e: &str| thinking(model, json!({"reasoning_effort": e})).unwrap();
        // Gemini 2.5, and names the adapter does not know: a budget.
        for model in [
            "gemini-2.5-flash",
            "models/gemini-2.5-pro",
            "gemini-2.0-flash",
            "tunedModels/x",
        ] {
            for (e, budget) in [
                ("none", 0),
                ("minimal", 1024),
                ("low", 1024),
                ("medium", 8192),
                ("high", 24576),
            ] {
                assert_eq!(
                    effort(model, e),
                    json!({"thinkingBudget": budget}),
                    "{model} {e}"
                );
            }
        }
        // Gemini 3: a level, never a budget.
        for (model, want) in [
            (
                "gemini-3-flash-preview",
                ["minimal", "minimal", "low", "medium", "high"],
            ),
            (
                "models/gemini-3.1-flash-lite-preview",
                ["minimal", "minimal", "low", "medium", "high"],
            ),
            // Pro has no `minimal` (and cannot turn thinking off): the least it has is `low`.
            (
                "gemini-3.1-pro-preview",
                ["low", "low", "low", "medium", "high"],
            ),
            // The first Gemini 3 Pro has only `low` and `high`.
            (
                "gemini-3-pro-preview",
                ["low", "low", "low", "high", "high"],
            ),
        ] {
            for (e, level) in ["none", "minimal", "low", "medium", "high"]
                .into_iter()
                .zip(want)
            {
                assert_eq!(
                    effort(model, e),
                    json!({"thinkingLevel": level}),
                    "{model} {e}"
                );
            }
        }
        // No reasoning_effort (or null): no thinkingConfig, the model's default.
        assert_eq!(
            thinking("gemini-3-flash-preview", json!({})).unwrap(),
            Value::Null
        );
        assert_eq!(
            thinking("gemini-2.5-flash", json!({"reasoning_effort": null})).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn the_google_thinking_config_wins_over_reasoning_effort() {
        let tc = |model: &str, extra: Value| thinking(model, extra).unwrap();
        // Both places Google's OpenAI endpoint is given it.
        for wrap in [
            |tc: Value| json!({"extra_body": {"google": {"thinking_config": tc}}}),
            |tc: Value| json!({"google": {"thinking_config": tc}}),
        ] {
            assert_eq!(
                tc(
                    "gemini-2.5-flash",
                    wrap(json!({"thinking_budget": -1, "include_thoughts": true}))
                ),
                json!({"thinkingBudget": -1, "includeThoughts": true})
            );
            // An explicit depth replaces reasoning_effort's whole: no level beside a budget.
            let mut both = wrap(json!({"thinking_budget": 512}));
            both["reasoning_effort"] = json!("high");
            assert_eq!(
                tc("gemini-3-flash-preview", both),
                json!({"thinkingBudget": 512})
            );
            let mut both = wrap(json!({"thinking_level": "LOW"}));
            both["reasoning_effort"] = json!("high");
            assert_eq!(
                tc("gemini-2.5-flash", both),
                json!({"thinkingLevel": "low"})
            );
            // Without a depth, reasoning_effort keeps its say and the summaries are added.
            let mut summaries = wrap(json!({"include_thoughts": true}));
            summaries["reasoning_effort"] = json!("medium");
            assert_eq!(
                tc("gemini-3-flash-preview", summaries),
                json!({"thinkingLevel": "medium", "includeThoughts": true})
            );
        }
        assert_eq!(
            tc(
                "gemini-2.5-flash",
                json!({"google": {"thinking_config": {"include_thoughts": false}}})
            ),
            json!({"includeThoughts": false})
        );
        assert_eq!(
            tc(
                "gemini-2.5-flash",
                json!({"google": {"thinking_config": {}}})
            ),
            Value::Null
        );
    }

    #[test]
    fn thinking_settings_gemini_cannot_take_are_refused_naming_the_field() {
        let err = |extra: Value| thinking("gemini-2.5-flash", extra).unwrap_err();
        for (extra, names) in [
            (
                json!({"reasoning_effort": "xhigh"}),
                "reasoning_effort: \"xhigh\"",
            ),
            (
                json!({"reasoning_effort": "HIGH"}),
                "none, minimal, low, medium, high",
            ),
            (json!({"reasoning_effort": 3}), "reasoning_effort: 3"),
            // Refused even where the Google config would win.
            (
                json!({"reasoning_effort": "max", "google": {"thinking_config": {"thinking_budget": 1}}}),
                "reasoning_effort",
            ),
            (
                json!({"google": {"thinking_config": {"thinking_budget": 1024, "thinking_level": "low"}}}),
                "google.thinking_config: thinking_budget and thinking_level",
            ),
            (
                json!({"extra_body": {"google": {"thinking_config": {"thinking_budget": "low"}}}}),
                "extra_body.google.thinking_config.thinking_budget",
            ),
            (
                json!({"google": {"thinking_config": {"thinking_budget": -2}}}),
                "thinking_budget",
            ),
            (
                json!({"google": {"thinking_config": {"thinking_level": "max"}}}),
                "google.thinking_config.thinking_level",
            ),
            (
                json!({"google": {"thinking_config": {"include_thoughts": "yes"}}}),
                "include_thoughts",
            ),
            (
                json!({"google": {"thinking_config": {"thinkingBudget": 10}}}),
                "google.thinking_config.thinkingBudget",
            ),
            (
                json!({"google": {"cached_content": "c"}}),
                "google.cached_content",
            ),
            (json!({"google": "x"}), "google: must be an object"),
            (
                json!({"google": {"thinking_config": {}}, "extra_body": {"google": {"thinking_config": {}}}}),
                "not both",
            ),
        ] {
            let e = err(extra.clone());
            assert_eq!(e.kind, ProviderErrorKind::InvalidRequest, "{extra}");
            assert!(e.message.contains(names), "{extra}: {}", e.message);
        }
    }

    #[test]
    fn requests_gemini_cannot_take_are_refused_naming_the_field() {
        let err =
            |body: Value| generate_content_request(&chat(body), "gemini-2.5-flash").unwrap_err();
        let cases = [
            (
                json!({"model": "p", "messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n:",
            ),
            (
                json!({"model": "p", "messages": [{"role": "system", "content": "x"}]}),
                "messages:",
            ),
            (
                json!({"model": "p", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
                "messages[0].content[0].image_url",
            ),
            (
                json!({"model": "p", "messages": [{"role": "user", "content": [
                {"type": "file", "file": {"file_id": "f"}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "p", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "p", "messages": [{"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0]",
            ),
            (
                json!({"model": "p", "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "grammar"}}),
                "response_format.type",
            ),
            (
                json!({"model": "p", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
        ];
        for (body, names) in cases {
            let e = err(body);
            assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
            assert!(e.message.starts_with(names), "{names}: {}", e.message);
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn echoed_signatures_go_back_on_their_parts_and_the_dummy_only_where_required() {
        let sig = |s: Value| json!({"google": {"thought_signature": s}});
        let tc = |id: &str, extra: Option<Value>| {
            let mut v =
                json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}});
            if let Some(e) = extra {
                v["extra_content"] = e;
            }
            v
        };
        let v = request(json!({"model": "p", "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "tool_calls": [tc("a", Some(sig(json!("old"))))]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "assistant", "tool_calls": [tc("b", None), tc("c", Some(sig(json!("sigC"))))]},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
            {"role": "tool", "tool_call_id": "c", "content": "3"},
            // Not Google's shape: ignored, as if there were none.
            {"role": "assistant", "tool_calls": [tc("d", Some(sig(json!(7)))), tc("e", Some(json!({"other": 1})))]},
            {"role": "tool", "tool_call_id": "d", "content": "4"},
            {"role": "tool", "tool_call_id": "e", "content": "5"},
            // A user message with no content does not start a turn.
            {"role": "user", "content": ""}
        ]}));
        let parts = |c: usize| v["contents"][c]["parts"].as_array().unwrap().clone();
        let sigs = |c: usize| {
            parts(c)
                .iter()
                .map(|p| p.get("thoughtSignature").cloned())
                .collect::<Vec<_>>()
        };
        let dummy = Some(json!(DUMMY_THOUGHT_SIGNATURE));
        assert_eq!(
            sigs(1),
            [Some(json!("old"))],
            "echoed in an earlier turn too"
        );
        assert_eq!(sigs(3), [dummy.clone(), Some(json!("sigC"))]);
        assert_eq!(sigs(5), [dummy, None]);
        assert_eq!(
            parts(3)[1],
            json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "sigC"})
        );
    }

    #[test]
    fn usage_maps_thoughts_to_output_and_cached_and_tool_use_to_input() {
        let u: UsageMetadata = serde_json::from_value(json!({"promptTokenCount": 1000,
            "candidatesTokenCount": 50, "thoughtsTokenCount": 200, "cachedContentTokenCount": 600,
            "toolUsePromptTokenCount": 30, "totalTokenCount": 1280}))
        .unwrap();
        let t = u.to_token_usage();
        assert_eq!(
            (
                t.input_tokens,
                t.output_tokens,
                t.cached_input_tokens,
                t.reasoning_tokens
            ),
            (1030, 250, 600, 200)
        );
        assert_eq!(t.input_tokens + t.output_tokens, u.total_token_count);
        assert_eq!(t.uncached_input_tokens(), 430);
    }

    #[test]
    fn a_response_converts_to_a_chat_completion() {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "I should check the weather.", "thought": true},
                {"text": "Let me \"check\". ", "thoughtSignature": "dGV4dA=="},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln/QQ+="},
                {"functionCall": {"name": "get_time", "args": {}}}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 30, "thoughtsTokenCount": 8,
                "cachedContentTokenCount": 4, "totalTokenCount": 50},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp9"});
        let c = completion_from_response(&serde_json::to_vec(&body).unwrap(), "asked").unwrap();
        let out: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(
            (out.object.as_str(), out.id.as_str()),
            ("chat.completion", "resp9")
        );
        assert_eq!(out.model, "gemini-2.5-flash");
        let ch = &out.choices[0];
        assert_eq!(ch.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(ch.message.content.as_deref(), Some("Let me \"check\". "));
        let tcs = ch.message.tool_calls.as_ref().unwrap();
        assert_eq!(
            (
                tcs[0].id.as_str(),
                tcs[0].kind.as_str(),
                tcs[0].function.name.as_str()
            ),
            ("call_resp9_0", "function", "get_weather")
        );
        assert_eq!(tcs[1].id, "call_resp9_1");
        assert_eq!(
            tcs[0].extra_content,
            Some(json!({"google": {"thought_signature": "c2ln/QQ+="}}))
        );
        assert_eq!(tcs[1].extra_content, None, "a parallel call has none");
        let raw: Value = serde_json::from_slice(&c.body).unwrap();
        assert!(raw["choices"][0]["message"]["tool_calls"][1]
            .get("extra_content")
            .is_none());
        let args: Value = serde_json::from_str(&tcs[0].function.arguments).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.reasoning_tokens
            ),
            (12, 38, 4, 8)
        );
        let ou = out.usage.unwrap();
        assert_eq!(
            (ou.prompt_tokens, ou.completion_tokens, ou.total_tokens),
            (12, 38, 50)
        );
        assert_eq!(ou.prompt_tokens_details.unwrap().cached_tokens, Some(4));
        assert_eq!(
            ou.completion_tokens_details.unwrap().reasoning_tokens,
            Some(8)
        );
        assert!(c.output_text.is_none(), "usage was given");
        assert_eq!(c.response_model.as_deref(), Some("gemini-2.5-flash"));
    }

    #[test]
    fn finish_reasons_blocked_prompts_and_odd_answers() {
        assert_eq!(finish_reason(Some("STOP"), false), "stop");
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(Some(r), false), "content_filter", "{r}");
        }
        assert_eq!(finish_reason(Some("OTHER"), false), "stop");
        let blocked = br#"{"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "modelVersion": "gemini-x"}"#;
        let c = completion_from_response(blocked, "asked").unwrap();
        let out: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(
            out.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert!(out.choices[0].message.content.is_none());
        assert!(out.choices[0]
            .message
            .refusal
            .as_deref()
            .unwrap()
            .contains("SAFETY"));
        assert_eq!(c.usage.unwrap().input_tokens, 7);
        let e = completion_from_response(br#"{"usageMetadata": {}}"#, "m").unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Protocol);
        let e = completion_from_response(b"not json", "m").unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Protocol);
        // No usage: the text is kept for the meter's estimate; no modelVersion: the asked model.
        let c = completion_from_response(
            br#"{"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}"#,
            "asked",
        )
        .unwrap();
        assert!(c.usage.is_none());
        assert_eq!(c.output_text.as_deref(), Some("hi"));
        assert_eq!(c.response_model.as_deref(), Some("asked"));
    }

    #[test]
    fn retry_delay_and_key_errors_are_read_from_the_body() {
        let e = parse_error(br#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}"#)
        .unwrap();
        assert_eq!(
            e.retry_delay(),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(e.describe(), "RESOURCE_EXHAUSTED: Quota exceeded");
        let e = parse_error(br#"[{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}]"#)
        .unwrap();
        assert_eq!(e.reason(), Some("API_KEY_INVALID"));
        assert_eq!(e.retry_delay(), None);
    }

    /// A stream as Google sends it: `\r\n\r\n` framing, usage on every chunk, a thought, text
    /// with escapes, a function call, and the finish with the final totals.
    const TRANSCRIPT: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Thinking about it\",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 20,\"totalTokenCount\": 25,\"thoughtsTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 20,\"candidatesTokenCount\": 1,\"totalTokenCount\": 26,\"thoughtsTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo \\\"w\\\"\\n\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 20,\"candidatesTokenCount\": 3,\"totalTokenCount\": 28,\"thoughtsTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"c2ln/Qg+=\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 20,\"candidatesTokenCount\": 9,\"totalTokenCount\": 44,\"cachedContentTokenCount\": 8,\"thoughtsTokenCount\": 15},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
    );

    async fn run(pieces: Vec<Bytes>) -> Vec<Result<StreamItem, ProviderError>> {
        let input = futures_util::stream::iter(pieces.into_iter().map(Ok));
        gemini_sse_stream(input, "asked".into()).collect().await
    }

    #[tokio::test]
    async fn a_stream_translates_to_openai_chunks_however_it_is_split() {
        let bytes = TRANSCRIPT.as_bytes();
        for size in [1, 7, 64, bytes.len()] {
            let pieces = bytes.chunks(size).map(Bytes::copy_from_slice).collect();
            let mut chunks: Vec<ChatChunk> = vec![];
            let mut raw: Vec<Value> = vec![];
            let mut flags = vec![];
            let mut end = None;
            for item in run(pieces).await {
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
                        chunks.push(serde_json::from_str(&text[6..]).unwrap());
                        raw.push(serde_json::from_str(&text[6..]).unwrap());
                        flags.push((content, usage_only));
                    }
                    StreamItem::End(s) => end = Some(s),
                }
            }
            let summary = end.expect("an End once the body ends after a finishReason");
            assert!(chunks
                .iter()
                .all(|c| c.id == "r1" && c.model == "gemini-2.5-flash"));
            assert_eq!(
                chunks[0].choices[0].delta.role.as_deref(),
                Some("assistant")
            );
            assert_eq!(flags[0], (false, false));
            assert_eq!(
                raw[1]["choices"][0]["delta"]["reasoning_content"],
                "Thinking about it"
            );
            let text: String = chunks
                .iter()
                .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
                .collect();
            assert_eq!(text, "Hello \"w\"\n", "thoughts are not answer text");
            let tool = chunks
                .iter()
                .flat_map(|c| c.choices.iter())
                .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
                .collect::<Vec<_>>();
            assert_eq!(tool.len(), 1);
            assert_eq!(
                (tool[0].index, tool[0].id.as_deref()),
                (0, Some("call_r1_0"))
            );
            assert_eq!(tool[0].kind.as_deref(), Some("function"));
            let f = tool[0].function.as_ref().unwrap();
            assert_eq!(f.name.as_deref(), Some("get_weather"));
            let args: Value = serde_json::from_str(f.arguments.as_deref().unwrap()).unwrap();
            assert_eq!(args, json!({"city": "Paris"}));
            let with_extra: Vec<&Value> = raw
                .iter()
                .filter(|c| c.to_string().contains("extra_content"))
                .collect();
            assert_eq!(with_extra.len(), 1);
            assert_eq!(
                with_extra[0]["choices"][0]["delta"]["tool_calls"][0]["extra_content"],
                json!({"google": {"thought_signature": "c2ln/Qg+="}})
            );
            let n = chunks.len();
            assert_eq!(
                chunks[n - 2].choices[0].finish_reason.as_deref(),
                Some("tool_calls")
            );
            assert!(chunks[n - 1].choices.is_empty());
            assert_eq!(flags[n - 1], (false, true));
            let u = chunks[n - 1].usage.as_ref().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total_tokens),
                (20, 24, 44),
                "the last usageMetadata, not a sum"
            );
            let su = summary.usage.unwrap();
            assert_eq!((su.cached_input_tokens, su.reasoning_tokens), (8, 15));
            assert_eq!(summary.finish_reason.as_deref(), Some("tool_calls"));
            assert_eq!(summary.output_text, "Thinking about itHello \"w\"\n");
        }
    }

    #[tokio::test]
    async fn a_stream_cut_before_its_finish_reason_is_an_error() {
        let cut = &TRANSCRIPT[..TRANSCRIPT.rfind("data: ").unwrap()];
        let items = run(vec![Bytes::copy_from_slice(cut.as_bytes())]).await;
        assert!(items.iter().all(|i| !matches!(i, Ok(StreamItem::End(_)))));
        let e = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Io);
        assert!(e.is_retryable());
        let items = run(vec![]).await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err(), "an empty body is not an answer");
    }

    #[tokio::test]
    async fn a_last_event_without_its_blank_line_and_lf_framing_are_read() {
        let s = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}}]}\n\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"b\"}]}, \"finishReason\": \"MAX_TOKENS\"}]}";
        let items = run(vec![Bytes::from_static(s.as_bytes())]).await;
        let Some(Ok(StreamItem::End(summary))) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(summary.output_text, "ab");
        assert_eq!(summary.finish_reason.as_deref(), Some("length"));
        assert!(summary.usage.is_none());
        assert_eq!(summary.response_model.as_deref(), Some("asked"));
    }

    #[tokio::test]
    async fn an_error_mid_stream_and_a_blocked_prompt() {
        let s = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}}]}\r\n\r\ndata: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\r\n\r\n";
        let items = run(vec![Bytes::from_static(s.as_bytes())]).await;
        let e = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Status(503));
        assert!(
            e.message.contains("UNAVAILABLE: The model is overloaded."),
            "{}",
            e.message
        );
        let s = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 9, \"totalTokenCount\": 9}}\r\n\r\n";
        let items = run(vec![Bytes::from_static(s.as_bytes())]).await;
        let Some(Ok(StreamItem::End(summary))) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(summary.finish_reason.as_deref(), Some("content_filter"));
        assert_eq!(summary.usage.unwrap().input_tokens, 9);
    }
}

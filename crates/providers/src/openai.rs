//! OpenAI-compatible providers: OpenAI itself and every server that speaks its Chat Completions
//! API (vLLM, llama.cpp `llama-server`, Ollama, Groq, Together, DeepSeek, Mistral...).
//!
//! Wire format: OpenAI API reference, "Create chat completion" and "The chat completion chunk
//! object" (<https://platform.openai.com/docs/api-reference/chat>), "Create embeddings", and
//! "Error codes" (<https://platform.openai.com/docs/guides/error-codes>).
//!
//! The client's request is forwarded with only `model` replaced and, on streams,
//! `stream_options.include_usage` turned on so the meter gets real token counts. Streamed
//! events are forwarded byte for byte; the tap reads each one without copying its text.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use switchyard_api::{
    openai::{ChatRequest, ChunkView, CompletionView},
    sse::SseDecoder,
};

use crate::{
    client::{body_stream, parse_uri, read_body, read_limited},
    error::retry_after,
    BoxFuture, ChatCall, ChatOutput, Completion, EmbeddingsCall, HttpClients, Provider,
    ProviderError, ProviderErrorKind, StreamItem, StreamSummary,
};

/// `[providers.NAME]` with `kind = "openai"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The environment variable holding the API key; none for keyless local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra headers sent on every call (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl OpenAiConfig {
    /// Checks the config without I/O.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "base_url '{}' must start with http:// or https://",
                self.base_url
            ));
        }
        for (k, v) in &self.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: '{k}' is not a header name"))?;
            HeaderValue::from_str(v)
                .map_err(|_| format!("headers.{k}: not a valid header value"))?;
        }
        Ok(())
    }
}

/// An OpenAI-compatible endpoint.
pub struct OpenAi {
    name: String,
    /// Parsed once, at build time.
    chat_url: http::Uri,
    embeddings_url: http::Uri,
    headers: HeaderMap,
    client: HttpClients,
}

impl OpenAi {
    /// Builds the adapter; reads the API key from the environment.
    pub fn build(
        name: &str,
        cfg: &OpenAiConfig,
        client: impl Into<HttpClients>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let credential = crate::credential_from_env(
            cfg.api_key_env.as_deref(),
            http::header::AUTHORIZATION,
            |key| format!("Bearer {key}"),
        )?;
        let base = cfg.base_url.trim_end_matches('/');
        let url =
            |path: &str| parse_uri(&format!("{base}/{path}")).map_err(|e| format!("base_url: {e}"));
        let chat_url = url("chat/completions")?;
        let headers = crate::static_headers(credential, &cfg.headers, &chat_url);
        Ok(OpenAi {
            name: name.to_string(),
            chat_url,
            embeddings_url: url("embeddings")?,
            headers,
            client: client.into(),
        })
    }

    async fn post(
        &self,
        url: &http::Uri,
        body: Vec<u8>,
        stream: bool,
    ) -> Result<crate::client::UpstreamResponse, ProviderError> {
        let resp = self
            .client
            .get()
            .post(url, &self.headers, body, stream)
            .await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from_response(&self.name, resp).await)
    }
}

/// The request body for the target: the client's request with the target's model, and usage
/// asked for on streams (see [`ChatRequest::forwarded_body`]).
pub fn upstream_body(
    req: &ChatRequest,
    original: Option<&[u8]>,
    model: &str,
) -> Result<Vec<u8>, ProviderError> {
    req.forwarded_body(original, model)
        .map_err(|e| ProviderError::new(ProviderErrorKind::InvalidRequest, e.to_string()))
}

/// Reads an error answer: OpenAI's `{"error": {"message": ...}}`, or whatever text came.
pub async fn error_from_response(
    provider: &str,
    resp: crate::client::UpstreamResponse,
) -> ProviderError {
    let status = resp.status().as_u16();
    let retry = retry_after(resp.headers());
    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
    let detail = error_message(&body);
    ProviderError {
        kind: ProviderErrorKind::Status(status),
        message: format!("provider '{provider}' answered {status}: {detail}"),
        retry_after: retry,
        body: Some(body),
    }
}

/// The human message in an OpenAI or Anthropic error body, or the body's start.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => e.error.message,
        Err(_) => {
            let s = String::from_utf8_lossy(body);
            s.chars().take(300).collect()
        }
    }
}

/// Reads a whole completion and what the meter needs from it.
pub fn completion_from_body(body: Bytes) -> Result<Completion, ProviderError> {
    // `CompletionView` reads `usage` and `model` and skips the rest without building it (serde
    // still checks it is well-formed JSON); the body itself goes to the client as it came.
    let view: CompletionView = serde_json::from_slice(&body).map_err(|e| {
        ProviderError::protocol(format!("upstream answer is not a chat completion: {e}"))
    })?;
    let usage = view.usage.as_ref().map(|u| u.to_token_usage());
    let output_text = if usage.is_none() {
        #[derive(Deserialize)]
        struct Texts {
            #[serde(default)]
            choices: Vec<C>,
        }
        #[derive(Deserialize)]
        struct C {
            message: Option<M>,
        }
        #[derive(Deserialize)]
        struct M {
            content: Option<String>,
        }
        serde_json::from_slice::<Texts>(&body).ok().map(|t| {
            t.choices
                .into_iter()
                .filter_map(|c| c.message.and_then(|m| m.content))
                .collect::<Vec<_>>()
                .join("")
        })
    } else {
        None
    };
    Ok(Completion {
        body,
        usage,
        response_model: view.model,
        output_text,
        energy: None,
    })
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "openai"
    }

    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatOutput, ProviderError>> {
        Box::pin(async move {
            let stream = call.request.is_stream();
            let body = upstream_body(&call.request, call.original.as_deref(), &call.model)?;
            let resp = self.post(&self.chat_url, body, stream).await?;
            if !stream {
                let body = read_body(resp).await?;
                return Ok(ChatOutput::Complete(completion_from_body(body)?));
            }
            let bytes = body_stream(resp);
            Ok(ChatOutput::Stream(Box::pin(openai_sse_stream(bytes))))
        })
    }

    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let mut req = (*call.request).clone();
            req.model = call.model.to_string();
            let body = serde_json::to_vec(&req).map_err(|e| {
                ProviderError::new(ProviderErrorKind::InvalidRequest, e.to_string())
            })?;
            let resp = self.post(&self.embeddings_url, body, false).await?;
            let body = read_body(resp).await?;
            #[derive(Deserialize)]
            struct View {
                usage: Option<EmbUsage>,
                model: Option<String>,
            }
            #[derive(Deserialize)]
            struct EmbUsage {
                prompt_tokens: u64,
            }
            let view: View = serde_json::from_slice(&body).map_err(|e| {
                ProviderError::protocol(format!("upstream answer is not an embeddings list: {e}"))
            })?;
            Ok(Completion {
                usage: view.usage.map(|u| switchyard_api::TokenUsage {
                    input_tokens: u.prompt_tokens,
                    ..Default::default()
                }),
                response_model: view.model,
                output_text: None,
                energy: None,
                body,
            })
        })
    }
}

/// Turns an OpenAI SSE byte stream into [`StreamItem`]s, reading usage and text on the way.
pub fn openai_sse_stream<S>(
    bytes: S,
) -> impl Stream<Item = Result<StreamItem, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin,
{
    struct State<S> {
        bytes: S,
        dec: SseDecoder,
        summary: StreamSummary,
        done: bool,
    }
    let state = State {
        bytes,
        dec: SseDecoder::new(),
        summary: StreamSummary::default(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
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
                        continue; // comments and keep-alives
                    }
                    if data == "[DONE]" {
                        st.done = true;
                        let summary = std::mem::take(&mut st.summary);
                        return Some((Ok(StreamItem::End(summary)), st));
                    }
                    match read_chunk(data, &mut st.summary) {
                        Ok((content, usage_only)) => {
                            let item = StreamItem::Data {
                                bytes: ev.raw,
                                content,
                                usage_only,
                            };
                            return Some((Ok(item), st));
                        }
                        Err(e) => {
                            st.done = true;
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
                        // A clean end without `[DONE]`: some servers omit it. Anything half-sent
                        // is a cut connection.
                        if st.dec.finish().is_some() {
                            return Some((
                                Err(ProviderError::new(
                                    ProviderErrorKind::Io,
                                    "upstream stream ended mid-event",
                                )),
                                st,
                            ));
                        }
                        let summary = std::mem::take(&mut st.summary);
                        return Some((Ok(StreamItem::End(summary)), st));
                    }
                },
            }
        }
    })
}

/// Reads one chunk: returns (carries content, is the usage-only chunk).
fn read_chunk(data: &str, summary: &mut StreamSummary) -> Result<(bool, bool), ProviderError> {
    // An error object mid-stream (OpenAI sends `{"error": {...}}` as a data event).
    if data.starts_with("{\"error\"") {
        let msg = error_message(data.as_bytes());
        return Err(ProviderError::new(
            ProviderErrorKind::Status(500),
            format!("upstream error mid-stream: {msg}"),
        ));
    }
    let view: ChunkView = serde_json::from_str(data)
        .map_err(|e| ProviderError::protocol(format!("upstream stream chunk is not JSON: {e}")))?;
    let mut content = false;
    for c in view.choices.iter() {
        if let Some(d) = &c.delta {
            if let Some(t) = &d.content {
                content |= !t.is_empty();
                t.append_to(&mut summary.output_text);
            }
            if let Some(t) = &d.reasoning_content {
                content |= !t.is_empty();
                t.append_to(&mut summary.output_text);
            }
            content |= d.tool_calls.is_some();
        }
    }
    let usage_only = view.choices.is_empty() && view.usage.is_some();
    if let Some(u) = &view.usage {
        summary.usage = Some(u.to_token_usage());
    }
    Ok((content, usage_only))
}

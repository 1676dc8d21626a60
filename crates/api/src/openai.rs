//! OpenAI API shapes, as documented in the API reference
//! (<https://platform.openai.com/docs/api-reference/chat>, `/embeddings`, `/models`).
//!
//! Requests keep every field they do not model in `extra`, so that an OpenAI-compatible target
//! receives what the client sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::usage::TokenUsage;

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field (`frequency_penalty`, `logprobs`, `reasoning_effort`, vendor fields...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

crate::de::deserialize_with_extra!(ChatRequest {
    required: [model, messages],
    optional: [
        stream,
        stream_options,
        max_tokens,
        max_completion_tokens,
        temperature,
        top_p,
        n,
        seed,
        stop,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user,
    ],
});

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a final usage chunk on a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The output token cap the client asked for (`max_completion_tokens` wins, as at OpenAI).
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Checks what a provider would otherwise reject late, with the field at fault.
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        use crate::ApiError;
        if self.model.is_empty() {
            return Err(ApiError::invalid("you must provide a model parameter").with_param("model"));
        }
        if self.messages.is_empty() {
            return Err(
                ApiError::invalid("'messages' must contain at least one message")
                    .with_param("messages"),
            );
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) || t.is_nan() {
                return Err(ApiError::invalid(format!(
                    "{t} is not a valid temperature: it must be between 0 and 2"
                ))
                .with_param("temperature"));
            }
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(ApiError::invalid(format!(
                    "{p} is not a valid top_p: it must be between 0 and 1"
                ))
                .with_param("top_p"));
            }
        }
        if self.n.is_some_and(|n| n == 0) {
            return Err(ApiError::invalid("n must be at least 1").with_param("n"));
        }
        if self.max_output_tokens() == Some(0) {
            return Err(ApiError::invalid("max_tokens must be at least 1").with_param("max_tokens"));
        }
        Ok(())
    }

    /// All plain text of the conversation, for classification and token estimates.
    pub fn prompt_text(&self) -> String {
        let mut out = String::new();
        for m in &self.messages {
            if let Some(c) = &m.content {
                c.push_text(&mut out);
                out.push('\n');
            }
        }
        out
    }
}

/// A [`ChatRequest`] as forwarded to an OpenAI-compatible target, serialized from borrows so
/// a fallback attempt does not copy the conversation. Same fields, same order.
#[derive(Serialize)]
struct ForwardedChat<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<std::borrow::Cow<'a, StreamOptions>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

impl ChatRequest {
    /// The JSON body for a target, from the bytes the client sent when this request was parsed
    /// from them (`original`): those bytes with `model` replaced and, on streams without
    /// `stream_options`, `"stream_options": {"include_usage": true}` added, so every other
    /// field goes upstream exactly as sent. Falls back to [`ChatRequest::forwarded_json`] when
    /// there are no such bytes or they could be read two ways (see the `raw` module).
    pub fn forwarded_body(
        &self,
        original: Option<&[u8]>,
        model: &str,
    ) -> serde_json::Result<Vec<u8>> {
        let add_usage = self.is_stream()
            && self
                .stream_options
                .as_ref()
                .is_none_or(|o| o.include_usage != Some(true));
        original
            .and_then(|raw| crate::raw::edited(raw, model, add_usage))
            .map_or_else(|| self.forwarded_json(model), Ok)
    }

    /// The JSON body for a target: `model` replaced and, on streams,
    /// `stream_options.include_usage` turned on so the meter gets real token counts; every
    /// other field as the client sent it.
    pub fn forwarded_json(&self, model: &str) -> serde_json::Result<Vec<u8>> {
        // No `..`: a field added to ChatRequest fails to compile here until it is forwarded.
        let ChatRequest {
            model: _,
            messages,
            stream,
            stream_options,
            max_tokens,
            max_completion_tokens,
            temperature,
            top_p,
            n,
            seed,
            stop,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            user,
            extra,
        } = self;
        let stream_options = if self.is_stream() {
            let mut o = stream_options.clone().unwrap_or_default();
            o.include_usage = Some(true);
            Some(std::borrow::Cow::Owned(o))
        } else {
            stream_options.as_ref().map(std::borrow::Cow::Borrowed)
        };
        serde_json::to_vec(&ForwardedChat {
            model,
            messages,
            stream: *stream,
            stream_options,
            max_tokens: *max_tokens,
            max_completion_tokens: *max_completion_tokens,
            temperature: *temperature,
            top_p: *top_p,
            n: *n,
            seed: *seed,
            stop: stop.as_ref(),
            tools: tools.as_ref(),
            tool_choice: tool_choice.as_ref(),
            parallel_tool_calls: *parallel_tool_calls,
            response_format: response_format.as_ref(),
            user: user.as_deref(),
            extra,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

crate::de::deserialize_with_extra!(StreamOptions {
    required: [],
    optional: [include_usage],
});

/// `stop`: one string or up to four.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// One chat message. `role` is kept as a string: OpenAI adds roles (`developer`) over time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

crate::de::deserialize_with_extra!(Message {
    required: [role],
    optional: [content, name, tool_calls, tool_call_id],
});

impl Message {
    pub fn text(role: &str, text: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: Some(Content::Text(text.into())),
            ..Default::default()
        }
    }
}

/// Message content: a string, or an array of typed parts.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// By hand rather than `#[serde(untagged)]`, which buffers the value before trying each variant:
/// the JSON type alone says which variant it is.
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> serde::de::Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

impl Content {
    /// Appends the text parts to `out`.
    pub fn push_text(&self, out: &mut String) {
        match self {
            Content::Text(t) => out.push_str(t),
            Content::Parts(parts) => {
                for p in parts {
                    if let ContentPart::Known(KnownPart::Text { text }) = p {
                        out.push_str(text);
                    }
                }
            }
        }
    }

    pub fn as_text(&self) -> String {
        let mut s = String::new();
        self.push_text(&mut s);
        s
    }
}

/// A content part: text and images are typed; parts we do not model (audio, files...) are kept verbatim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ContentPart {
    Known(KnownPart),
    Other(Value),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KnownPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
    /// Vendor data on the call, kept as the client sent it. Google's OpenAI-compatible endpoint
    /// carries Gemini's thought signature here: `{"google": {"thought_signature": "..."}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

/// `chat.completion` response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// OpenAI `usage` object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Not an OpenAI field: set when the tokens came from Anthropic's cache writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    pub fn to_token_usage(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cache_creation_tokens)
                .unwrap_or(0),
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }

    pub fn from_token_usage(u: &TokenUsage) -> Self {
        Usage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(u.cached_input_tokens),
                cache_creation_tokens: (u.cache_creation_input_tokens > 0)
                    .then_some(u.cache_creation_input_tokens),
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(u.reasoning_tokens),
            }),
        }
    }
}

/// `chat.completion.chunk`, one SSE event of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// What the stream tap reads from each upstream chunk: borrowed, so reading allocates nothing
/// unless the text holds escapes.
#[derive(Debug, Deserialize)]
pub struct ChunkView<'a> {
    #[serde(borrow, default)]
    pub choices: ChunkChoices<'a>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// A chunk's `choices`, read without touching the heap for the usual one (or none): the tap
/// reads every token's chunk, and a `Vec` here was one allocation per token.
#[derive(Debug, Default)]
pub struct ChunkChoices<'a> {
    first: Option<ChunkChoiceView<'a>>,
    /// The second choice onwards (`n` > 1); empty, so unallocated, otherwise.
    more: Vec<ChunkChoiceView<'a>>,
}

impl<'a> ChunkChoices<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &ChunkChoiceView<'a>> {
        self.first.iter().chain(&self.more)
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ChunkChoices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = ChunkChoices<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut choices = ChunkChoices::default();
                while let Some(c) = seq.next_element()? {
                    match choices.first {
                        None => choices.first = Some(c),
                        Some(_) => choices.more.push(c),
                    }
                }
                Ok(choices)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
pub struct ChunkChoiceView<'a> {
    #[serde(borrow, default)]
    pub delta: Option<DeltaView<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct DeltaView<'a> {
    #[serde(borrow, default)]
    pub content: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub reasoning_content: Option<JsonStr<'a>>,
    #[serde(default)]
    pub tool_calls: Option<serde::de::IgnoredAny>,
}

/// A JSON string as it stands in the input, quotes, escapes and all: reading one never
/// allocates, where a decoded string with an escape in it (a token holding `\n` or `\"`) costs
/// serde_json a scratch buffer and the caller an owned copy. [`JsonStr::append_to`] decodes it
/// straight into the caller's buffer, and serializing it writes it back as it came.
#[derive(Debug, Clone, Copy)]
pub struct JsonStr<'a>(&'a serde_json::value::RawValue);

impl<'a> JsonStr<'a> {
    /// The text between the quotes, undecoded.
    pub fn raw(&self) -> &'a str {
        let quoted = self.0.get();
        quoted.get(1..quoted.len() - 1).unwrap_or_default()
    }

    /// Whether the decoded string is empty (an escape always decodes to something).
    pub fn is_empty(&self) -> bool {
        self.raw().is_empty()
    }

    /// Appends the decoded string (RFC 8259 §7). A `\u` escape naming half a surrogate pair
    /// alone, which serde_json refuses, becomes U+FFFD: the text only feeds a token estimate,
    /// and refusing the chunk would end the client's stream.
    pub fn append_to(&self, out: &mut String) {
        let mut rest = self.raw();
        while let Some(i) = rest.find('\\') {
            out.push_str(&rest[..i]);
            let escape = &rest[i + 1..];
            let (decoded, used) = match escape.as_bytes().first() {
                Some(b'"') => ('"', 1),
                Some(b'\\') => ('\\', 1),
                Some(b'/') => ('/', 1),
                Some(b'b') => ('\u{8}', 1),
                Some(b'f') => ('\u{c}', 1),
                Some(b'n') => ('\n', 1),
                Some(b'r') => ('\r', 1),
                Some(b't') => ('\t', 1),
                Some(b'u') => {
                    let (c, n) = unicode_escape(&escape[1..]);
                    (c, 1 + n)
                }
                // Not JSON (the parser has checked it): keep the backslash as text.
                _ => ('\\', 0),
            };
            out.push(decoded);
            rest = &escape[used..];
        }
        out.push_str(rest);
    }
}

/// Decodes the hex digits after `\u` (and a low surrogate's `\uXXXX` after a high one):
/// the character and how many bytes it used.
fn unicode_escape(s: &str) -> (char, usize) {
    fn hex4(s: &str) -> Option<u32> {
        let h = s.get(..4)?;
        h.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u32::from_str_radix(h, 16).ok())
            .flatten()
    }
    let Some(unit) = hex4(s) else {
        return (char::REPLACEMENT_CHARACTER, 0);
    };
    if (0xD800..0xDC00).contains(&unit) {
        let low = s
            .get(4..6)
            .filter(|p| *p == "\\u")
            .and_then(|_| hex4(&s[6..]));
        if let Some(low) = low.filter(|l| (0xDC00..0xE000).contains(l)) {
            let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            return (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 10);
        }
    }
    (
        char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
        4,
    )
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(d)?;
        let text = raw.get();
        if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
            Ok(JsonStr(raw))
        } else {
            Err(serde::de::Error::custom("expected a string"))
        }
    }
}

/// Written as it was read (serde_json copies a raw value through): the same string, escapes
/// unchanged.
impl Serialize for JsonStr<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A string that borrows from the input unless it holds escapes (serde's own `Cow<str>`
/// always allocates).
#[derive(Debug, PartialEq, Eq)]
pub struct CowStr<'a>(pub std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// What the gateway reads from a non-streamed upstream answer.
#[derive(Debug, Deserialize)]
pub struct CompletionView {
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub model: Option<String>,
}

/// `POST /v1/embeddings` request. Only `model` and `input` are read; the rest passes through.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

crate::de::deserialize_with_extra!(EmbeddingsRequest {
    required: [model, input],
    optional: [],
});

impl EmbeddingsRequest {
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        let ok = match &self.input {
            Value::String(_) => true,
            Value::Array(a) => !a.is_empty(),
            _ => false,
        };
        if self.model.is_empty() {
            return Err(
                crate::ApiError::invalid("you must provide a model parameter").with_param("model"),
            );
        }
        if !ok {
            return Err(crate::ApiError::invalid(
                "'input' must be a string, an array of strings, or an array of token arrays, and not empty",
            )
            .with_param("input"));
        }
        Ok(())
    }

    /// Input text for a token estimate.
    pub fn input_text(&self) -> String {
        let mut out = String::new();
        fn walk(v: &Value, out: &mut String) {
            match v {
                Value::String(s) => {
                    out.push_str(s);
                    out.push('\n');
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&self.input, &mut out);
        out
    }
}

/// `GET /v1/models` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelObject {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelObject>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forwarded body is the client's request with only `model` (and, on streams,
    /// `stream_options.include_usage`) changed: every field, set or not, and unknown ones.
    #[test]
    fn the_forwarded_body_changes_only_model_and_stream_usage() {
        let full = serde_json::json!({
            "model": "alias", "messages": [{"role": "user", "content": "hi", "x_msg": 1}],
            "stream_options": {"include_usage": false, "x_opt": 2},
            "max_tokens": 5, "max_completion_tokens": 6, "temperature": 0.5, "top_p": 0.9,
            "n": 1, "seed": 7, "stop": ["\n"], "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto", "response_format": {"type": "json_object"}, "user": "u",
            "logit_bias": {"50256": -100}, "reasoning_effort": "low"
        });
        for stream in [None, Some(false), Some(true)] {
            let mut body = full.clone();
            if let Some(s) = stream {
                body["stream"] = serde_json::json!(s);
            }
            let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
            let sent: Value =
                serde_json::from_slice(&req.forwarded_json("upstream-model").unwrap()).unwrap();
            let mut expected = body;
            expected["model"] = "upstream-model".into();
            if stream == Some(true) {
                expected["stream_options"]["include_usage"] = true.into();
            }
            assert_eq!(sent, expected, "stream {stream:?}");
        }
        // A stream with no stream_options gets them.
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true
        }))
        .unwrap();
        let sent: Value = serde_json::from_slice(&req.forwarded_json("t").unwrap()).unwrap();
        assert_eq!(
            sent["stream_options"],
            serde_json::json!({"include_usage": true})
        );
        assert_eq!(sent.as_object().unwrap().len(), 4, "{sent}");
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","x_msg":1}],
            "logit_bias":{"50256":-100},"reasoning_effort":"low","stream":true}"#;
        let req: ChatRequest = serde_json::from_str(body).unwrap();
        assert!(req.is_stream());
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["reasoning_effort"], "low");
        assert_eq!(back["logit_bias"]["50256"], -100);
        assert_eq!(back["messages"][0]["x_msg"], 1);
    }

    #[test]
    fn content_parts_are_typed_or_kept() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":[
            {"type":"text","text":"look"},
            {"type":"image_url","image_url":{"url":"data:x"}},
            {"type":"input_audio","input_audio":{"data":"..","format":"wav"}}]}]}"#;
        let req: ChatRequest = serde_json::from_str(body).unwrap();
        let Some(Content::Parts(parts)) = &req.messages[0].content else {
            panic!("parts expected")
        };
        assert_eq!(parts.len(), 3);
        assert!(
            matches!(&parts[0], ContentPart::Known(KnownPart::Text { text }) if text == "look")
        );
        assert!(matches!(
            &parts[1],
            ContentPart::Known(KnownPart::ImageUrl { .. })
        ));
        assert!(matches!(&parts[2], ContentPart::Other(_)));
        assert_eq!(req.prompt_text(), "look\n");
    }

    #[test]
    fn validation_names_the_field() {
        let mut req: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .unwrap();
        assert!(req.validate().is_ok());
        req.temperature = Some(3.0);
        assert_eq!(
            req.validate().unwrap_err().param.as_deref(),
            Some("temperature")
        );
        req.temperature = None;
        req.messages.clear();
        assert_eq!(
            req.validate().unwrap_err().param.as_deref(),
            Some("messages")
        );
    }

    #[test]
    fn chunk_view_borrows_content() {
        let c = br#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null}"#;
        let v: ChunkView = serde_json::from_slice(c).unwrap();
        assert_eq!(v.choices.len(), 1);
        let content = &v
            .choices
            .iter()
            .next()
            .unwrap()
            .delta
            .as_ref()
            .unwrap()
            .content;
        assert_eq!(content.map(|t| t.raw()), Some("Hel"));
        assert!(v.usage.is_none());
    }

    #[test]
    fn json_str_decodes_as_serde_json_does() {
        let decoded = |json: &str| {
            let raw: JsonStr = serde_json::from_str(json).unwrap();
            let mut out = String::from(">");
            raw.append_to(&mut out);
            out
        };
        for text in [
            "",
            "plain",
            " line\nnext\ttab \"quoted\" back\\slash",
            "\u{1}\u{8}\u{c}\u{1f} controls",
            "é ü 中文 😀 as UTF-8",
        ] {
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(decoded(&json), format!(">{text}"), "{json}");
        }
        // Escapes serde_json's writer does not produce.
        for json in [
            r#""\/path\u00e9\u4e2d""#,
            r#""smile \ud83d\ude00!""#,
            r#""\uD83D\uDE00 upper-case hex""#,
            r#""\b\f\r""#,
        ] {
            let expected: String = serde_json::from_str(json).unwrap();
            assert_eq!(decoded(json), format!(">{expected}"), "{json}");
        }
        // Half a surrogate pair alone (which serde_json refuses) is U+FFFD, the rest kept.
        assert_eq!(decoded(r#""a\ud83db""#), ">a\u{fffd}b");
        assert_eq!(decoded(r#""a\ude00\ud83d""#), ">a\u{fffd}\u{fffd}");
        assert_eq!(decoded(r#""\ud83d\u0041""#), ">\u{fffd}A");
        let raw: JsonStr = serde_json::from_str(r#""a\u00e9\n""#).unwrap();
        assert_eq!(serde_json::to_string(&raw).unwrap(), r#""a\u00e9\n""#);
        assert!(serde_json::from_str::<JsonStr>("12").is_err());
        assert!(serde_json::from_str::<JsonStr>(r#""unterminated"#).is_err());
        assert!(serde_json::from_str::<JsonStr>(r#""bad \x escape""#).is_err());
    }

    #[test]
    fn chunk_view_reads_every_choice_in_order() {
        let text = |c: &ChunkChoiceView| {
            c.delta
                .as_ref()
                .unwrap()
                .content
                .as_ref()
                .unwrap()
                .raw()
                .to_string()
        };
        let c = br#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}},{"index":2,"delta":{"content":"c"}}]}"#;
        let v: ChunkView = serde_json::from_slice(c).unwrap();
        assert_eq!(v.choices.len(), 3);
        assert_eq!(
            v.choices.iter().map(text).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let usage_only =
            br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        let v: ChunkView = serde_json::from_slice(usage_only).unwrap();
        assert!(v.choices.is_empty() && v.usage.is_some());
        assert_eq!(v.choices.iter().count(), 0);
        let absent: ChunkView = serde_json::from_slice(br#"{"usage":null}"#).unwrap();
        assert!(absent.choices.is_empty());
        assert!(serde_json::from_slice::<ChunkView>(br#"{"choices":{"x":1}}"#).is_err());
    }
}

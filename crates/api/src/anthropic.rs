//! Anthropic Messages API shapes, as documented by Anthropic:
//!
//! * "Messages" API reference, `POST /v1/messages`
//!   (<https://docs.anthropic.com/en/api/messages>): request, response, content blocks.
//! * "Streaming Messages" (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>):
//!   the event flow `message_start`, `content_block_start` / `_delta` / `_stop`,
//!   `message_delta` (cumulative `usage`), `message_stop`, plus `ping` and `error`.
//! * "Errors" (<https://docs.anthropic.com/en/api/errors>):
//!   `{"type": "error", "error": {"type": ..., "message": ...}}`.
//! * "Prompt caching" (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>):
//!   `usage.input_tokens` excludes `cache_read_input_tokens` and `cache_creation_input_tokens`.
//! * "Tool use" (<https://docs.anthropic.com/en/docs/build-with-claude/tool-use>):
//!   `tools`, `tool_choice`, `tool_use` and `tool_result` blocks.
//!
//! Owned types serve the test server and the request converter; the `*View` types borrow from
//! an event's text so the stream translator reads a token without copying it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::openai::{CowStr, JsonStr};

/// `POST /v1/messages` request body.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<MessageParam>,
    /// Required by Anthropic (there is no server default).
    pub max_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// 0..1 at Anthropic (OpenAI allows up to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Fields not modelled here (`thinking`, `service_tier`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

crate::de::deserialize_with_extra!(MessagesRequest {
    required: [model, messages, max_tokens],
    optional: [
        system,
        stop_sequences,
        temperature,
        top_p,
        top_k,
        stream,
        tools,
        tool_choice,
        metadata,
    ],
});

/// `system`: a string or an array of text blocks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl System {
    pub fn text(&self) -> String {
        match self {
            System::Text(t) => t.clone(),
            System::Blocks(b) => blocks_text(b),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One input message. Anthropic has no `system` or `tool` role: tool results are `user` blocks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageParam {
    pub role: Role,
    pub content: MessageContent,
}

/// Message content: a string (one text block) or an array of blocks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl MessageContent {
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(t) => t.clone(),
            MessageContent::Blocks(b) => blocks_text(b),
        }
    }
}

/// The text of every text block, joined.
pub fn blocks_text(blocks: &[ContentBlock]) -> String {
    let mut s = String::new();
    for b in blocks {
        if let ContentBlock::Text { text, .. } = b {
            s.push_str(text);
        }
    }
    s
}

/// A content block, in requests and responses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        /// The tool's arguments as a JSON object (OpenAI carries them as a JSON string).
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    Thinking {
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    /// Block types this crate does not model (documents, server tools...), read and ignored.
    #[serde(other)]
    Unknown,
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text {
            text: text.into(),
            cache_control: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// `tool_result.content`: a string or an array of text / image blocks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

/// A client tool: `{name, description, input_schema}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema whose `type` is `object`.
    pub input_schema: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// Must use some tool (OpenAI's `required`).
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The `message` object: a whole response, and the shell `message_start` carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessagesResponse {
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `assistant`.
    pub role: String,
    pub content: Vec<ContentBlock>,
    pub model: String,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`.
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// `usage`. `input_tokens` counts only the prompt tokens after the last cache breakpoint; the
/// whole prompt is `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Provider-neutral counts: the input includes cache reads and writes.
    pub fn to_token_usage(&self) -> crate::TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let created = self.cache_creation_input_tokens.unwrap_or(0);
        crate::TokenUsage {
            input_tokens: self.input_tokens + read + created,
            output_tokens: self.output_tokens,
            cached_input_tokens: read,
            cache_creation_input_tokens: created,
            reasoning_tokens: 0,
        }
    }
}

/// `message_delta.usage`: cumulative counts; older API versions send only `output_tokens`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeltaUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

/// One streamed event (the SSE `data`; the SSE `event:` name repeats `type`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessagesResponse,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: DeltaUsage,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
}

impl StreamEvent {
    /// The SSE `event:` name, equal to the data's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
    ThinkingDelta { thinking: String },
    SignatureDelta { signature: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// The error body, for HTTP errors and the stream's `error` event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(error_type: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            kind: "error".into(),
            error: ErrorDetail {
                kind: error_type.into(),
                message: message.into(),
            },
            request_id: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `overloaded_error`...
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// The HTTP status Anthropic documents for each error type.
pub fn error_type_status(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500, // api_error and anything new
    }
}

/// What the stream translator reads from `content_block_delta`: a flat struct (no internally
/// tagged enum, which would buffer the event) whose strings borrow from the event text.
#[derive(Debug, Deserialize)]
pub struct BlockDeltaEventView<'a> {
    pub index: u32,
    #[serde(borrow)]
    pub delta: BlockDeltaView<'a>,
}

#[derive(Debug, Deserialize)]
pub struct BlockDeltaView<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: CowStr<'a>,
    /// Read as they stand in the event (no allocation for an escape): the translator writes
    /// them into the OpenAI chunk unchanged and decodes them only for the answer text it keeps.
    #[serde(default, borrow)]
    pub text: Option<JsonStr<'a>>,
    #[serde(default, borrow)]
    pub partial_json: Option<JsonStr<'a>>,
    #[serde(default, borrow)]
    pub thinking: Option<JsonStr<'a>>,
}

/// What the translator reads from `content_block_start`.
#[derive(Debug, Deserialize)]
pub struct BlockStartEventView {
    pub index: u32,
    pub content_block: BlockStartView,
}

#[derive(Debug, Deserialize)]
pub struct BlockStartView {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// What the translator reads from `message_start`.
#[derive(Debug, Deserialize)]
pub struct MessageStartView {
    pub message: MessageShellView,
}

#[derive(Debug, Deserialize)]
pub struct MessageShellView {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: Usage,
}

/// What the translator reads from `message_delta`.
#[derive(Debug, Deserialize)]
pub struct MessageDeltaView {
    #[serde(default)]
    pub delta: MessageDeltaBody,
    #[serde(default)]
    pub usage: Option<DeltaUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_blocks_and_extra_fields() {
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,
            "system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":[{"type":"text","text":"look"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBO"}}]},
              {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"42"}]}],
            "tool_choice":{"type":"any"},"thinking":{"type":"enabled","budget_tokens":1024}}"#;
        let req: MessagesRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.max_tokens, 64);
        assert_eq!(req.system.as_ref().unwrap().text(), "be brief");
        assert!(matches!(req.tool_choice, Some(ToolChoice::Any { .. })));
        let MessageContent::Blocks(b) = &req.messages[0].content else {
            panic!("blocks expected")
        };
        assert!(
            matches!(&b[1], ContentBlock::Image { source: ImageSource::Base64 { media_type, .. } } if media_type == "image/png")
        );
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(
            back["thinking"]["budget_tokens"], 1024,
            "unmodelled fields survive"
        );
        assert_eq!(back["messages"][1]["content"][0]["input"]["a"], 1);
        assert_eq!(back["system"][0]["cache_control"]["type"], "ephemeral");
    }

    #[test]
    fn unknown_block_types_do_not_break_a_response() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"m",
            "content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}},{"type":"text","text":"hi","citations":null}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":10,"cache_creation_input_tokens":5}}"#;
        let r: MessagesResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.content[0], ContentBlock::Unknown);
        assert_eq!(blocks_text(&r.content), "hi");
        let u = r.usage.to_token_usage();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_creation_input_tokens
            ),
            (18, 10, 5)
        );
        assert_eq!(u.uncached_input_tokens(), 3);
    }

    #[test]
    fn stream_events_parse_as_documented() {
        let events = [
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            r#"{"type":"message_stop"}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ];
        let names: Vec<&str> = events
            .iter()
            .map(|e| serde_json::from_str::<StreamEvent>(e).unwrap().name())
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
                "error"
            ]
        );
        let v: BlockDeltaEventView = serde_json::from_str(events[3]).unwrap();
        assert_eq!(v.delta.text.map(|t| t.raw()), Some("Hello"));
        assert_eq!(error_type_status("overloaded_error"), 529);
        assert_eq!(error_type_status("api_error"), 500);
    }
}

//! The Anthropic Messages face: `POST /v1/messages` for clients written against Anthropic's
//! SDK. Requests are translated to the internal (OpenAI-shaped) request, routed like any other,
//! and answers translated back: whole messages, or the documented event stream
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`; see the Anthropic
//! "Messages" and "Streaming Messages" references named in `switchyard_api::anthropic`).

use serde_json::{json, Map, Value};
use switchyard_api::{
    anthropic::{
        ContentBlock, ErrorBody, ImageSource, MessageContent, MessagesRequest, Role, System,
        ToolChoice, ToolResultContent,
    },
    openai::{
        ChatChunk, ChatCompletion, ChatRequest, Content, ContentPart, FunctionCall, FunctionDef,
        ImageUrl, KnownPart, Message, Stop, Tool, ToolCall,
    },
    sse, ApiError, ErrorKind, TokenUsage,
};

/// Anthropic's error `type` for one of our errors.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Unavailable => "overloaded_error",
        ErrorKind::Internal | ErrorKind::BadGateway => "api_error",
    }
}

pub fn error_body(e: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody::new(error_type(e.kind), e.message.clone())).unwrap_or_default()
}

/// Messages request → the internal chat request.
pub fn to_chat_request(req: MessagesRequest) -> Result<ChatRequest, ApiError> {
    if req.max_tokens == 0 {
        return Err(ApiError::invalid("max_tokens: must be at least 1").with_param("max_tokens"));
    }
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        let text = match system {
            System::Text(t) => t.clone(),
            System::Blocks(_) => system.text(),
        };
        messages.push(Message::text("system", text));
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        let blocks = match m.content {
            MessageContent::Text(t) => vec![ContentBlock::text(t)],
            MessageContent::Blocks(b) => b,
        };
        match m.role {
            Role::User => {
                let mut parts = Vec::new();
                for b in blocks {
                    match b {
                        ContentBlock::Text { text, .. } => {
                            parts.push(ContentPart::Known(KnownPart::Text { text }))
                        }
                        ContentBlock::Image { source } => {
                            let url = match source {
                                ImageSource::Base64 { media_type, data } => {
                                    format!("data:{media_type};base64,{data}")
                                }
                                ImageSource::Url { url } => url,
                            };
                            parts.push(ContentPart::Known(KnownPart::ImageUrl {
                                image_url: ImageUrl { url, detail: None },
                            }));
                        }
                        ContentBlock::ToolResult {
                            tool_use_id,
                            content,
                            ..
                        } => {
                            let text = match content {
                                Some(ToolResultContent::Text(t)) => t,
                                Some(ToolResultContent::Blocks(b)) => {
                                    switchyard_api::anthropic::blocks_text(&b)
                                }
                                None => String::new(),
                            };
                            messages.push(Message {
                                role: "tool".into(),
                                content: Some(Content::Text(text)),
                                tool_call_id: Some(tool_use_id),
                                ..Default::default()
                            });
                        }
                        ContentBlock::ToolUse { .. } => {
                            return Err(ApiError::invalid(format!(
                                "messages.{i}: tool_use blocks belong to assistant messages"
                            )))
                        }
                        _ => {}
                    }
                }
                if !parts.is_empty() {
                    let content = match parts.as_slice() {
                        [ContentPart::Known(KnownPart::Text { text })] => {
                            Content::Text(text.clone())
                        }
                        _ => Content::Parts(parts),
                    };
                    messages.push(Message {
                        role: "user".into(),
                        content: Some(content),
                        ..Default::default()
                    });
                }
            }
            Role::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in blocks {
                    match b {
                        ContentBlock::Text { text: t, .. } => text.push_str(&t),
                        ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                            id,
                            kind: "function".into(),
                            function: FunctionCall {
                                name,
                                arguments: input.to_string(),
                            },
                            extra_content: None,
                        }),
                        _ => {}
                    }
                }
                messages.push(Message {
                    role: "assistant".into(),
                    content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..Default::default()
                });
            }
        }
    }
    let tools = req.tools.map(|ts| {
        ts.into_iter()
            .map(|t| Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: Some(t.input_schema),
                    strict: None,
                },
            })
            .collect()
    });
    let tool_choice = req.tool_choice.map(|c| match c {
        ToolChoice::Auto { .. } => json!("auto"),
        ToolChoice::Any { .. } => json!("required"),
        ToolChoice::None => json!("none"),
        ToolChoice::Tool { name, .. } => json!({"type": "function", "function": {"name": name}}),
    });
    let mut extra = Map::new();
    if let Some(k) = req.top_k {
        extra.insert("top_k".into(), json!(k));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(
                ApiError::invalid("temperature: must be between 0 and 1").with_param("temperature")
            );
        }
    }
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream: req.stream,
        max_tokens: Some(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req.stop_sequences.map(Stop::Many),
        tools,
        tool_choice,
        user: req.metadata.and_then(|m| m.user_id),
        extra,
        ..Default::default()
    })
}

fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u.uncached_input_tokens(),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
    })
}

/// A whole OpenAI `chat.completion` → an Anthropic `message`.
pub fn completion_to_message(
    body: &[u8],
    usage: Option<TokenUsage>,
    id: &str,
) -> Result<Vec<u8>, ApiError> {
    let c: ChatCompletion = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::BadGateway,
            format!("upstream answer is not a chat completion: {e}"),
        )
    })?;
    let choice = c.choices.into_iter().next();
    let mut content = Vec::new();
    let finish = choice.as_ref().and_then(|c| c.finish_reason.clone());
    if let Some(ch) = choice {
        if let Some(t) = ch.message.content.filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
        for tc in ch.message.tool_calls.unwrap_or_default() {
            let input: Value =
                serde_json::from_str(&tc.function.arguments).unwrap_or_else(|_| json!({}));
            content.push(
                json!({"type": "tool_use", "id": tc.id, "name": tc.function.name, "input": input}),
            );
        }
    }
    let usage = usage.unwrap_or_default();
    let msg = json!({
        "id": id, "type": "message", "role": "assistant", "model": c.model, "content": content,
        "stop_reason": stop_reason(finish.as_deref()), "stop_sequence": null, "usage": usage_json(&usage),
    });
    serde_json::to_vec(&msg).map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))
}

/// Translates a stream of OpenAI chunks into Anthropic events, block by block.
#[derive(Debug, Default)]
pub struct StreamTranslator {
    id: String,
    started: bool,
    /// Index of the open content block, and whether it is text.
    open: Option<(u32, bool)>,
    next_index: u32,
    /// OpenAI tool-call index → our block index.
    tool_blocks: Vec<(u32, u32)>,
    finish: Option<String>,
    model: String,
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    sse::encode_event(out, name, data.to_string().as_bytes());
}

impl StreamTranslator {
    pub fn new(id: &str) -> Self {
        StreamTranslator {
            id: id.to_string(),
            ..Default::default()
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let msg = json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}});
            event(out, "message_start", &msg);
        }
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some((i, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            );
        }
    }

    /// One OpenAI SSE event (`data: {...}\n\n` bytes) → Anthropic events appended to `out`.
    pub fn on_openai_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(chunk) = serde_json::from_str::<ChatChunk>(data.trim_start()) else {
                continue;
            };
            if self.model.is_empty() {
                self.model = chunk.model.clone();
            }
            self.start(out);
            for ch in chunk.choices {
                if let Some(t) = ch.delta.content.filter(|t| !t.is_empty()) {
                    if !matches!(self.open, Some((_, true))) {
                        self.close_open(out);
                        let i = self.next_index;
                        self.next_index += 1;
                        self.open = Some((i, true));
                        event(
                            out,
                            "content_block_start",
                            &json!({"type": "content_block_start", "index": i,
                            "content_block": {"type": "text", "text": ""}}),
                        );
                    }
                    let i = self.open.map(|o| o.0).unwrap_or(0);
                    event(
                        out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": t}}),
                    );
                }
                for tc in ch.delta.tool_calls.unwrap_or_default() {
                    let known = self
                        .tool_blocks
                        .iter()
                        .find(|(oi, _)| *oi == tc.index)
                        .map(|b| b.1);
                    let block = match known {
                        Some(b) => b,
                        None => {
                            self.close_open(out);
                            let i = self.next_index;
                            self.next_index += 1;
                            self.tool_blocks.push((tc.index, i));
                            self.open = Some((i, false));
                            let name = tc
                                .function
                                .as_ref()
                                .and_then(|f| f.name.clone())
                                .unwrap_or_default();
                            event(
                                out,
                                "content_block_start",
                                &json!({"type": "content_block_start", "index": i,
                                "content_block": {"type": "tool_use", "id": tc.id.clone().unwrap_or_default(), "name": name, "input": {}}}),
                            );
                            i
                        }
                    };
                    if let Some(args) = tc
                        .function
                        .and_then(|f| f.arguments)
                        .filter(|a| !a.is_empty())
                    {
                        event(
                            out,
                            "content_block_delta",
                            &json!({"type": "content_block_delta", "index": block,
                            "delta": {"type": "input_json_delta", "partial_json": args}}),
                        );
                    }
                }
                if let Some(f) = ch.finish_reason {
                    self.finish = Some(f);
                }
            }
        }
    }

    /// The end of the stream: closes blocks, reports the stop reason and the usage.
    pub fn on_end(&mut self, usage: Option<TokenUsage>, out: &mut Vec<u8>) {
        self.start(out);
        self.close_open(out);
        let u = usage.unwrap_or_default();
        let mut usage = usage_json(&u);
        usage["output_tokens"] = json!(u.output_tokens);
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null}, "usage": usage}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    pub fn on_error(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        let body = ErrorBody::new(error_type(e.kind), e.message.clone());
        sse::encode_event(out, "error", &serde_json::to_vec(&body).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_translation_keeps_system_tools_and_results() {
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "m", "max_tokens": 50, "system": "be brief", "temperature": 0.5, "top_k": 5,
            "stop_sequences": ["END"],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}, {"type": "text", "text": "and?"}]}
            ]
        }))
        .unwrap();
        let c = to_chat_request(req).unwrap();
        let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            c.messages[2].tool_calls.as_ref().unwrap()[0]
                .function
                .arguments,
            "{\"a\":1}"
        );
        assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("t1"));
        assert_eq!(c.max_tokens, Some(50));
        assert_eq!(c.tool_choice, Some(json!("required")));
        assert_eq!(c.extra["top_k"], 5);
        assert_eq!(c.stop, Some(Stop::Many(vec!["END".into()])));
    }

    #[test]
    fn completion_becomes_a_message_with_cache_usage() {
        let body = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "up",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello",
              "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":2}"}}]},
              "finish_reason": "tool_calls"}]});
        let u = TokenUsage {
            input_tokens: 10,
            output_tokens: 3,
            cached_input_tokens: 4,
            ..Default::default()
        };
        let m: Value = serde_json::from_slice(
            &completion_to_message(body.to_string().as_bytes(), Some(u), "msg_1").unwrap(),
        )
        .unwrap();
        assert_eq!(m["content"][0]["text"], "hello");
        assert_eq!(m["content"][1]["input"]["a"], 2);
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 6);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 4);
    }

    #[test]
    fn stream_translation_opens_and_closes_blocks() {
        let mut t = StreamTranslator::new("msg_1");
        let mut out = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        t.on_openai_event(
            chunk(json!({"role": "assistant", "content": ""}), Value::Null).as_bytes(),
            &mut out,
        );
        t.on_openai_event(
            chunk(json!({"content": "Hel"}), Value::Null).as_bytes(),
            &mut out,
        );
        t.on_openai_event(
            chunk(json!({"content": "lo"}), Value::Null).as_bytes(),
            &mut out,
        );
        t.on_openai_event(chunk(json!({}), json!("stop")).as_bytes(), &mut out);
        t.on_end(
            Some(TokenUsage {
                input_tokens: 5,
                output_tokens: 2,
                ..Default::default()
            }),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains("\"stop_reason\":\"end_turn\""));
        assert!(text.contains("\"output_tokens\":2"));
    }
}

//! Token estimates for requests whose provider reported no usage, with OpenAI's o200k_base BPE
//! (the GPT-4o / 4.1 / 5 vocabulary) from `tiktoken-rs`. The vocabulary is compiled in and parsed
//! on first use, which happens on the ledger writer's thread, never on the request path.

use std::sync::OnceLock;

use switchyard_api::{openai::ChatRequest, TokenUsage};
use tiktoken_rs::CoreBPE;

static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();

/// Per-message framing tokens of OpenAI's chat format (`<|im_start|>role ... <|im_end|>`), and
/// the tokens that prime the reply, as in OpenAI's cookbook `num_tokens_from_messages`.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_REPLY: u64 = 3;

fn bpe() -> Option<&'static CoreBPE> {
    O200K
        .get_or_init(|| match tiktoken_rs::o200k_base() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "o200k_base tokenizer failed to load; estimating 4 bytes per token");
                None
            }
        })
        .as_ref()
}

/// Loads the tokenizer now (the writer thread calls this at start so the first estimate is quick).
pub fn warm_up() {
    let _ = bpe();
}

/// Tokens in `text` (special-token strings count as plain text).
pub fn count(text: &str) -> u64 {
    match bpe() {
        Some(b) => b.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// Estimated usage of a chat request and its answer text, counted as OpenAI's cookbook
/// `num_tokens_from_messages` does: per message 3 framing tokens + role + content (+ 1 + name),
/// plus 3 priming the reply. Tool-call arguments count as text; tool definitions and images are
/// not counted, so requests using them are underestimated.
pub fn estimate_chat(request: &ChatRequest, output_text: Option<&str>) -> TokenUsage {
    let mut input = TOKENS_PER_REPLY;
    for m in &request.messages {
        input += TOKENS_PER_MESSAGE + count(&m.role);
        if let Some(c) = &m.content {
            input += count(&c.as_text());
        }
        if let Some(name) = &m.name {
            input += 1 + count(name);
        }
        for call in m.tool_calls.iter().flatten() {
            input += count(&call.function.name) + count(&call.function.arguments);
        }
    }
    TokenUsage {
        input_tokens: input,
        output_tokens: output_text.map(count).unwrap_or(0),
        ..Default::default()
    }
}

/// Estimated usage of plain input text (embeddings) and an optional answer.
pub fn estimate_text(input: &str, output_text: Option<&str>) -> TokenUsage {
    TokenUsage {
        input_tokens: count(input),
        output_tokens: output_text.map(count).unwrap_or(0),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_o200k_base() {
        // Known o200k_base encodings: "hello world" is 2 tokens, "tiktoken is great!" is 6.
        assert_eq!(count("hello world"), 2);
        assert_eq!(count("tiktoken is great!"), 6);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn chat_estimate_adds_message_framing() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello world"}
            ]
        }))
        .unwrap();
        let u = estimate_chat(&req, Some("hello world"));
        // "system" 1 + "Be brief." 3 + "user" 1 + "hello world" 2, + 3 per message + 3.
        assert_eq!(count("Be brief."), 3);
        assert_eq!(u.input_tokens, 1 + 3 + 1 + 2 + 2 * 3 + 3);
        assert_eq!(u.output_tokens, 2);
    }
}

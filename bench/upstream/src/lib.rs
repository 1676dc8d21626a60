//! A fast OpenAI chat-completions upstream for load tests.
//!
//! Every response body is rendered once at start-up, so a request costs one body read, one
//! byte scan and one write: the upstream is never the bottleneck of a benchmark.
//! Wire format: OpenAI Chat Completions (`POST /v1/chat/completions`), see
//! <https://platform.openai.com/docs/api-reference/chat/create> and the streaming chunk object
//! <https://platform.openai.com/docs/api-reference/chat-streaming>; a stream ends with the usage
//! chunk when the request sets `stream_options.include_usage`, then `data: [DONE]`.
//! `crates/testkit` holds the scriptable, slower server for conformance tests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::json;
use tokio::time::{Instant, Sleep};

/// What the upstream answers with.
#[derive(Debug, Clone)]
pub struct Script {
    /// Model name written into every response.
    pub model: String,
    /// Completion tokens in a non-streamed answer.
    pub plain_tokens: usize,
    /// Content chunks in a streamed answer (one token each).
    pub stream_tokens: usize,
    /// Delay before the first streamed chunk.
    pub first_token_delay: Duration,
    /// Delay between streamed chunks.
    pub inter_token_delay: Duration,
    /// Delay before a non-streamed answer.
    pub plain_delay: Duration,
    /// Prompt tokens reported in usage (the request is not tokenized).
    pub prompt_tokens: u64,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            model: "mock-model".into(),
            plain_tokens: 150,
            stream_tokens: 64,
            first_token_delay: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            plain_delay: Duration::ZERO,
            prompt_tokens: 42,
        }
    }
}

/// Words cycled through to build content; short English words give ~4 bytes per token like real text.
const WORDS: [&str; 16] = [
    " the", " gateway", " routes", " each", " request", " to", " a", " model", " and", " counts",
    " its", " tokens", " on", " the", " way", ".",
];

const ID: &str = "chatcmpl-bench0000000000000000000000";
const CREATED: u64 = 1_700_000_000;
const FINGERPRINT: &str = "fp_bench";

/// All bodies, rendered once.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The `chat.completion` JSON object.
    pub plain: Bytes,
    /// SSE frames of a stream without the usage chunk.
    pub stream: Arc<[Bytes]>,
    /// SSE frames of a stream that ends with the usage chunk.
    pub stream_with_usage: Arc<[Bytes]>,
    /// Pacing of streams.
    pub first_token_delay: Duration,
    /// Pacing of streams.
    pub inter_token_delay: Duration,
    /// Delay before a plain answer.
    pub plain_delay: Duration,
}

fn usage(prompt: u64, completion: u64) -> serde_json::Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn chunk(model: &str, delta: serde_json::Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    });
    format!("data: {body}\n\n")
}

impl Rendered {
    /// Renders every body of `script`.
    pub fn new(script: &Script) -> Self {
        let model = script.model.as_str();
        let content: String = (0..script.plain_tokens)
            .map(|i| WORDS[i % WORDS.len()])
            .collect();
        let plain = json!({
            "id": ID, "object": "chat.completion", "created": CREATED, "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage(script.prompt_tokens, script.plain_tokens as u64),
            "service_tier": "default"
        });

        // Frame 0 carries the role chunk and the first token together, as servers that flush
        // per token do; each later frame is one token; the last frame finishes the stream.
        let tokens = script.stream_tokens.max(1);
        let mut frames: Vec<String> = Vec::with_capacity(tokens + 1);
        for i in 0..tokens {
            let word = WORDS[i % WORDS.len()];
            let token = chunk(model, json!({"content": word}), None);
            if i == 0 {
                let role = chunk(
                    model,
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    None,
                );
                frames.push(format!("{role}{token}"));
            } else {
                frames.push(token);
            }
        }
        let finish = chunk(model, json!({}), Some("stop"));
        let usage_chunk = format!(
            "data: {}\n\n",
            json!({
                "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "system_fingerprint": FINGERPRINT, "choices": [],
                "usage": usage(script.prompt_tokens, tokens as u64)
            })
        );
        let done = "data: [DONE]\n\n";
        let to_bytes = |last: String| -> Arc<[Bytes]> {
            frames
                .iter()
                .cloned()
                .chain(std::iter::once(last))
                .map(Bytes::from)
                .collect()
        };
        Self {
            plain: Bytes::from(plain.to_string()),
            stream: to_bytes(format!("{finish}{done}")),
            stream_with_usage: to_bytes(format!("{finish}{usage_chunk}{done}")),
            first_token_delay: script.first_token_delay,
            inter_token_delay: script.inter_token_delay,
            plain_delay: script.plain_delay,
        }
    }
}

/// What a request body asks for, found by scanning bytes instead of parsing JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asked {
    /// `"stream": true`.
    pub stream: bool,
    /// `"include_usage": true` (inside `stream_options`).
    pub include_usage: bool,
}

/// Whether `"key"` is followed (after whitespace and a colon) by `true` anywhere in `body`.
fn key_is_true(body: &[u8], key: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(key);
    finder.find_iter(body).any(|at| {
        let rest = &body[at + key.len()..];
        let rest = rest.trim_ascii_start();
        match rest.strip_prefix(b":") {
            Some(value) => value.trim_ascii_start().starts_with(b"true"),
            None => false,
        }
    })
}

impl Asked {
    /// Scans a request body.
    pub fn scan(body: &[u8]) -> Self {
        Self {
            stream: key_is_true(body, b"\"stream\""),
            include_usage: key_is_true(body, b"\"include_usage\""),
        }
    }
}

/// An SSE body that sends pre-rendered frames on a fixed schedule: frame 0 after the first-token
/// delay, frame k one inter-token delay after frame k-1 (deadlines, so pacing does not drift).
pub struct PacedBody {
    frames: Arc<[Bytes]>,
    next: usize,
    deadline: Instant,
    inter: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl PacedBody {
    /// A body starting now.
    pub fn new(frames: Arc<[Bytes]>, first: Duration, inter: Duration) -> Self {
        let deadline = Instant::now() + first;
        Self {
            frames,
            next: 0,
            deadline,
            inter,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(frame) = this.frames.get(this.next).cloned() else {
            return Poll::Ready(None);
        };
        if this.deadline > Instant::now() {
            if this.sleep.deadline() != this.deadline {
                this.sleep.as_mut().reset(this.deadline);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        this.next += 1;
        this.deadline += this.inter;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn events(frames: &[Bytes]) -> Vec<serde_json::Value> {
        let text: String = frames
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap())
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn plain_body_is_a_chat_completion_with_usage() {
        let script = Script {
            plain_tokens: 10,
            ..Script::default()
        };
        let r = Rendered::new(&script);
        let v: serde_json::Value = serde_json::from_slice(&r.plain).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["usage"]["completion_tokens"], 10);
        assert_eq!(v["usage"]["total_tokens"], 52);
        assert_eq!(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .len(),
            WORDS[..10].iter().map(|w| w.len()).sum::<usize>()
        );
    }

    #[test]
    fn stream_frames_carry_role_tokens_finish_usage_and_done() {
        let script = Script {
            stream_tokens: 5,
            ..Script::default()
        };
        let r = Rendered::new(&script);
        assert_eq!(r.stream.len(), 6);
        let ev = events(&r.stream_with_usage);
        // role + 5 tokens + finish + usage
        assert_eq!(ev.len(), 8);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[6]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[7]["usage"]["completion_tokens"], 5);
        assert!(ev[7]["choices"].as_array().unwrap().is_empty());
        let without = events(&r.stream);
        assert_eq!(without.len(), 7);
        assert!(without.iter().all(|e| e.get("usage").is_none()));
        let last = r.stream.last().unwrap();
        assert!(last.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn scan_finds_flags_with_any_spacing() {
        let a = Asked::scan(
            br#"{"model":"m","stream" : true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            a,
            Asked {
                stream: true,
                include_usage: true
            }
        );
        let b =
            Asked::scan(br#"{"model":"m","stream":false,"messages":[{"content":"\"stream\""}]}"#);
        assert_eq!(b, Asked::default());
    }

    #[tokio::test(start_paused = true)]
    async fn paced_body_keeps_its_schedule() {
        let script = Script {
            stream_tokens: 4,
            ..Script::default()
        };
        let r = Rendered::new(&script);
        let start = Instant::now();
        let mut body = PacedBody::new(
            r.stream.clone(),
            Duration::from_millis(100),
            Duration::from_millis(20),
        );
        let mut at = Vec::new();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, vec![100, 120, 140, 160, 180]);
    }
}

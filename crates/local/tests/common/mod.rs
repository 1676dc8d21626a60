#![allow(dead_code)]
// Test helpers: clippy does not see them as test code, but a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{path::PathBuf, sync::Arc};

use futures_util::StreamExt;
use switchyard_api::openai::{ChatCompletion, ChatRequest, Message};
use switchyard_local::{Local, LocalConfig};
use switchyard_providers::{ChatCall, ChatOutput, Provider, StreamItem, StreamSummary};

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The test model: `$SWITCHYARD_MODEL_DIR` or `<repo>/models`. Fails (never skips) when absent.
pub fn model_path() -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = dir.join(MODEL_FILE);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh (or set SWITCHYARD_MODEL_DIR)",
        path.display()
    );
    path
}

pub fn local(configure: impl FnOnce(&mut LocalConfig)) -> Arc<Local> {
    let mut cfg = LocalConfig::from_path(model_path());
    configure(&mut cfg);
    Arc::new(Local::build("local", &cfg).unwrap())
}

pub fn request(user: &str, f: impl FnOnce(&mut ChatRequest)) -> ChatRequest {
    let mut r = ChatRequest {
        model: "smollm2".into(),
        messages: vec![Message::text("user", user)],
        temperature: Some(0.0),
        max_tokens: Some(40),
        ..Default::default()
    };
    f(&mut r);
    r
}

pub fn call(req: ChatRequest) -> ChatCall {
    ChatCall {
        request: Arc::new(req),
        model: "smollm2".into(),
        original: None,
    }
}

pub async fn complete(
    local: &Local,
    req: ChatRequest,
) -> (ChatCompletion, switchyard_providers::Completion) {
    match local.chat(call(req)).await.unwrap() {
        ChatOutput::Complete(c) => (serde_json::from_slice(&c.body).unwrap(), c),
        ChatOutput::Stream(_) => panic!("asked for a whole answer"),
    }
}

/// Every SSE data payload of a stream as JSON, and its summary.
pub async fn stream(
    local: &Local,
    mut req: ChatRequest,
) -> (Vec<(serde_json::Value, bool, bool)>, StreamSummary) {
    req.stream = Some(true);
    let ChatOutput::Stream(mut s) = local.chat(call(req)).await.unwrap() else {
        panic!("asked for a stream")
    };
    let mut events = vec![];
    while let Some(item) = s.next().await {
        match item.unwrap() {
            StreamItem::Data {
                bytes,
                content,
                usage_only,
            } => {
                let text = std::str::from_utf8(&bytes).unwrap();
                let data = text
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap();
                events.push((serde_json::from_str(data).unwrap(), content, usage_only));
            }
            StreamItem::End(summary) => {
                assert!(s.next().await.is_none(), "nothing after End");
                return (events, summary);
            }
        }
    }
    panic!("stream ended without End")
}

pub fn text_of(c: &ChatCompletion) -> String {
    c.choices[0].message.content.clone().unwrap_or_default()
}

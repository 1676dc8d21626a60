//! Conformance of the OpenAI-compatible adapter against a local server that speaks OpenAI's
//! documented wire format (crates/testkit/src/openai.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use switchyard_api::openai::{ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest};
use switchyard_providers::{
    openai::{OpenAi, OpenAiConfig},
    ChatCall, ChatOutput, EmbeddingsCall, Provider, ProviderErrorKind, StreamItem, StreamSummary,
};
use switchyard_testkit::openai::{Answer, MockOpenAi, Reply};

/// The adapter's own HTTP client, as `switchyard serve` builds it.
fn test_client() -> switchyard_providers::HttpClient {
    switchyard_providers::HttpClient::new(std::time::Duration::from_secs(5)).unwrap()
}

fn provider(base_url: String, key_env: Option<&str>) -> OpenAi {
    let cfg = OpenAiConfig {
        base_url,
        api_key_env: key_env.map(str::to_string),
        headers: Default::default(),
    };
    OpenAi::build("up", &cfg, test_client()).unwrap()
}

fn call(stream: bool, extra: serde_json::Value) -> ChatCall {
    let mut body = serde_json::json!({
        "model": "public-name",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello world"}],
        "stream": stream,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    // As the gateway calls it: the parsed request and the bytes it was parsed from.
    let original = serde_json::to_vec(&body).unwrap();
    let request: ChatRequest = serde_json::from_slice(&original).unwrap();
    ChatCall {
        request: Arc::new(request),
        model: "upstream-model".into(),
        original: Some(original.into()),
    }
}

/// Collects a stream: the forwarded bytes and the end summary.
async fn collect(out: ChatOutput) -> (Vec<ChatChunk>, Vec<(bool, bool)>, StreamSummary) {
    let ChatOutput::Stream(mut s) = out else {
        panic!("expected a stream")
    };
    let mut chunks = vec![];
    let mut flags = vec![];
    while let Some(item) = s.next().await {
        match item.unwrap() {
            StreamItem::Data {
                bytes,
                content,
                usage_only,
            } => {
                let text = std::str::from_utf8(&bytes).unwrap();
                assert!(
                    text.starts_with("data: ") && text.ends_with("\n\n"),
                    "SSE framing kept: {text:?}"
                );
                chunks.push(serde_json::from_str(&text[6..]).unwrap());
                flags.push((content, usage_only));
            }
            StreamItem::End(summary) => return (chunks, flags, summary),
        }
    }
    panic!("stream ended without End");
}

#[tokio::test]
async fn plain_answer_with_usage_and_model_replaced() {
    let (mock, srv) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 5,
        cached_tokens: 2,
        reasoning_tokens: 3,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(srv.base_url(), None);
    let out = p
        .chat(call(
            false,
            serde_json::json!({"logit_bias": {"1": 2}, "temperature": 0.5}),
        ))
        .await
        .unwrap();
    let ChatOutput::Complete(c) = out else {
        panic!("expected a whole answer")
    };
    let body: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        body.choices[0].message.content.as_deref(),
        Some("tok0 tok1 tok2 tok3 tok4")
    );
    let u = c.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.reasoning_tokens
        ),
        (5, 8, 2, 3)
    );
    assert!(
        c.output_text.is_none(),
        "text is kept only when usage is missing"
    );
    let sent = &mock.received()[0];
    assert_eq!(sent["model"], "upstream-model");
    assert_eq!(sent["logit_bias"]["1"], 2, "unknown fields pass through");
    assert_eq!(sent["temperature"], 0.5);
}

/// The client's bytes go upstream as sent, `model` aside: number spellings, key order, spacing
/// and `null`s included (a re-serialized body would read `1.5` and drop the `null`).
#[tokio::test]
async fn the_body_goes_upstream_as_the_client_sent_it() {
    let (mock, srv) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(srv.base_url(), None);
    let sent = br#"{ "temperature": 1.50, "model": "public-name", "max_tokens": null,
  "messages": [{"role": "user", "content": "caf\u00e9"}], "zeta": 1, "alpha": 2 }"#;
    let call = |stream: bool, body: &[u8]| {
        let mut body = body.to_vec();
        if stream {
            let at = body.iter().rposition(|&b| b == b'}').unwrap();
            body.splice(at..at, br#", "stream": true"#.iter().copied());
        }
        ChatCall {
            request: Arc::new(serde_json::from_slice(&body).unwrap()),
            model: "upstream-model".into(),
            original: Some(body.into()),
        }
    };
    p.chat(call(false, sent)).await.unwrap();
    let expected = br#"{ "temperature": 1.50, "model": "upstream-model", "max_tokens": null,
  "messages": [{"role": "user", "content": "caf\u00e9"}], "zeta": 1, "alpha": 2 }"#;
    assert_eq!(mock.received_raw()[0], &expected[..]);
    // A stream gets usage asked for, appended; the rest still as sent.
    let out = p.chat(call(true, sent)).await.unwrap();
    collect(out).await;
    let expected = br#"{ "temperature": 1.50, "model": "upstream-model", "max_tokens": null,
  "messages": [{"role": "user", "content": "caf\u00e9"}], "zeta": 1, "alpha": 2 , "stream": true,"stream_options":{"include_usage":true}}"#;
    assert_eq!(
        String::from_utf8_lossy(&mock.received_raw()[1]),
        String::from_utf8_lossy(expected)
    );
    // A repeated key could be read two ways: the request is re-serialized from what we read.
    let twice =
        br#"{"model": "public-name", "messages": [], "temperature": 1.50, "temperature": 0.25}"#;
    p.chat(call(false, twice)).await.unwrap();
    let got: serde_json::Value = serde_json::from_slice(&mock.received_raw()[2]).unwrap();
    assert_eq!(got["temperature"], 0.25);
    assert_eq!(got["model"], "upstream-model");
    assert!(!mock.received_raw()[2].windows(4).any(|w| w == b"1.50"));
}

/// A whole answer is relayed as it came, so only `usage` and `model` are parsed from it; the
/// rest must still be well-formed JSON, or the answer is a protocol error, not a relayed 200.
#[tokio::test]
async fn a_whole_answer_is_read_for_usage_and_checked_for_form() {
    let (mock, srv) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(srv.base_url(), None);
    // Usage first, a decoy `usage` inside the message, numbers in every spelling.
    let body = r#"{"usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 4}}, "id": "c", "object": "chat.completion",
        "created": 1.7e9, "choices": [{"index": 0, "message": {"role": "assistant",
        "content": "{\"usage\": {\"prompt_tokens\": 99}}", "usage": {"prompt_tokens": 98}},
        "logprobs": null, "finish_reason": "stop"}], "model": "served-model-2", "x": -0.5E-3}"#;
    mock.push(Reply::Raw(body.into()));
    let ChatOutput::Complete(c) = p.chat(call(false, serde_json::json!({}))).await.unwrap() else {
        panic!("expected a whole answer")
    };
    let u = c.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cached_input_tokens),
        (7, 2, 4)
    );
    assert_eq!(c.response_model.as_deref(), Some("served-model-2"));
    assert_eq!(c.body, body.as_bytes(), "relayed byte for byte");
    for broken in [
        r#"{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 1}"#,
        r#"{"choices": [tru], "usage": {"prompt_tokens": 1}}"#,
        r#"{"choices": [], "usage": {"prompt_tokens": 1}} trailing"#,
        r#"{"choices": [], "usage": {"prompt_tokens": "one"}}"#,
        r#"{"choices": [], "model": 5}"#,
        "<html>bad gateway</html>",
        "",
    ] {
        mock.push(Reply::Raw(broken.into()));
        let e = match p.chat(call(false, serde_json::json!({}))).await {
            Err(e) => e,
            Ok(_) => panic!("accepted {broken:?}"),
        };
        assert_eq!(e.kind, ProviderErrorKind::Protocol, "{broken:?}");
        assert!(e.message.contains("not a chat completion"), "{}", e.message);
    }
}

#[tokio::test]
async fn stream_asks_for_usage_and_forwards_chunks() {
    let (mock, srv) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 4,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(srv.base_url(), None);
    let (chunks, flags, summary) =
        collect(p.chat(call(true, serde_json::json!({}))).await.unwrap()).await;
    assert_eq!(mock.received()[0]["stream_options"]["include_usage"], true);
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3");
    assert_eq!(summary.output_text, text);
    assert_eq!(
        flags[0],
        (false, false),
        "the role chunk carries no content"
    );
    assert_eq!(flags[1], (true, false));
    assert_eq!(
        *flags.last().unwrap(),
        (false, true),
        "the last chunk is usage only"
    );
    let u = summary.usage.unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (5, 4));
}

#[tokio::test]
async fn stream_without_usage_keeps_the_text_for_counting() {
    let (_mock, srv) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 3,
        usage: false,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(srv.base_url(), None);
    let (_, _, summary) = collect(p.chat(call(true, serde_json::json!({}))).await.unwrap()).await;
    assert!(summary.usage.is_none());
    assert_eq!(summary.output_text, "tok0 tok1 tok2");
}

#[tokio::test]
async fn tools_plain_and_streamed() {
    let reply = Reply::ToolCall {
        name: "get_weather".into(),
        arguments: "{\"city\":\"Paris\"}".into(),
    };
    let (mock, srv) = MockOpenAi::start(reply).await.unwrap();
    let p = provider(srv.base_url(), None);
    let tools = serde_json::json!({"tools": [{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], "tool_choice": "auto"});
    let ChatOutput::Complete(c) = p.chat(call(false, tools.clone())).await.unwrap() else {
        panic!()
    };
    let body: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
    let tc = &body.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(tc.function.name, "get_weather");
    assert_eq!(body.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        mock.received()[0]["tools"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(mock.received()[0]["tool_choice"], "auto");

    let (chunks, flags, _) = collect(p.chat(call(true, tools)).await.unwrap()).await;
    let args: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
        .filter_map(|t| t.function.as_ref().and_then(|f| f.arguments.clone()))
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(flags[0].0, "a tool call counts as content");
}

#[tokio::test]
async fn error_status_body_and_retry_after() {
    let (_mock, srv) = MockOpenAi::start(Reply::Error {
        status: 429,
        message: "Rate limit reached for requests".into(),
        code: Some("rate_limit_exceeded".into()),
        retry_after: Some("3".into()),
    })
    .await
    .unwrap();
    let p = provider(srv.base_url(), None);
    let e = p
        .chat(call(false, serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    assert!(e.message.contains("Rate limit reached"), "{}", e.message);
    assert!(e.is_retryable());

    let (_mock, srv) = MockOpenAi::start(Reply::Error {
        status: 400,
        message: "Invalid value for 'temperature'".into(),
        code: None,
        retry_after: None,
    })
    .await
    .unwrap();
    let p = provider(srv.base_url(), None);
    let e = p.chat(call(true, serde_json::json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(400));
    assert!(!e.is_retryable());
    assert!(e.body.is_some(), "client errors keep the body to relay");
}

#[tokio::test]
async fn a_stalled_stream_stops_yielding() {
    let (_mock, srv) = MockOpenAi::start(Reply::Stall { after: 2 }).await.unwrap();
    let p = provider(srv.base_url(), None);
    let ChatOutput::Stream(mut s) = p.chat(call(true, serde_json::json!({}))).await.unwrap() else {
        panic!()
    };
    for _ in 0..3 {
        assert!(matches!(s.next().await, Some(Ok(StreamItem::Data { .. }))));
    }
    let next = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    assert!(
        next.is_err(),
        "nothing more arrives while the server stalls"
    );
}

#[tokio::test]
async fn a_cut_connection_is_an_error_not_an_end() {
    let (_mock, srv) = MockOpenAi::start(Reply::Cut { after: 2 }).await.unwrap();
    let p = provider(srv.base_url(), None);
    let ChatOutput::Stream(mut s) = p.chat(call(true, serde_json::json!({}))).await.unwrap() else {
        panic!()
    };
    let mut saw_err = false;
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamItem::End(_)) => panic!("a cut stream must not look finished"),
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_retryable());
                saw_err = true;
            }
        }
    }
    assert!(saw_err);
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = provider(format!("http://{addr}/v1"), None);
    let e = p
        .chat(call(false, serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Connect, "{e}");
}

#[tokio::test]
async fn api_key_is_sent_and_never_in_errors() {
    std::env::set_var("SWITCHYARD_TEST_OPENAI_KEY", "sk-secret-123");
    let (mock, srv) = MockOpenAi::start(Reply::Error {
        status: 500,
        message: "boom".into(),
        code: None,
        retry_after: None,
    })
    .await
    .unwrap();
    let p = provider(srv.base_url(), Some("SWITCHYARD_TEST_OPENAI_KEY"));
    let e = p
        .chat(call(false, serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        mock.received_headers()[0]["authorization"],
        "Bearer sk-secret-123"
    );
    // Built once at start-up for a plain-http base URL; HTTP/1.1 needs exactly one.
    let authority = srv.base_url().parse::<http::Uri>().unwrap();
    let hosts: Vec<_> = mock.received_headers()[0]
        .get_all(http::header::HOST)
        .iter()
        .cloned()
        .collect();
    assert_eq!(hosts, [authority.authority().unwrap().as_str()]);
    assert!(!format!("{e} {e:?}").contains("sk-secret-123"));
    let missing = OpenAiConfig {
        base_url: srv.base_url(),
        api_key_env: Some("SWITCHYARD_TEST_NO_SUCH_VAR".into()),
        headers: Default::default(),
    };
    let err = OpenAi::build("up", &missing, test_client()).err().unwrap();
    assert!(err.contains("SWITCHYARD_TEST_NO_SUCH_VAR"));
}

#[tokio::test]
async fn embeddings_pass_through_with_usage() {
    let (mock, srv) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(srv.base_url(), None);
    let req: EmbeddingsRequest = serde_json::from_value(
        serde_json::json!({"model": "pub", "input": ["a b", "c"], "dimensions": 8}),
    )
    .unwrap();
    let c = p
        .embeddings(EmbeddingsCall {
            request: Arc::new(req),
            model: "emb-up".into(),
        })
        .await
        .unwrap();
    assert_eq!(c.usage.unwrap().input_tokens, 3);
    let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(mock.received()[0]["model"], "emb-up");
    assert_eq!(mock.received()[0]["dimensions"], 8);
}

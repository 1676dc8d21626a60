//! Conformance of the Anthropic adapter against a local server that speaks Anthropic's
//! documented Messages API (crates/testkit/src/anthropic.rs): the translated answers must be
//! valid OpenAI shapes.

// Helpers outside `#[test]` functions are test code too; clippy.toml's test allowances do not
// reach them in an integration test crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard_api::openai::{ChatChunk, ChatCompletion, ChatRequest};
use switchyard_providers::{
    anthropic::{Anthropic, AnthropicConfig},
    ChatCall, ChatOutput, Provider, ProviderErrorKind, StreamItem, StreamSummary,
};
use switchyard_testkit::anthropic::{Answer, MockAnthropic, Reply};

const KEY_VAR: &str = "SWITCHYARD_TEST_ANTHROPIC_KEY";
const KEY: &str = "sk-ant-test-secret-4242";

/// The adapter's own HTTP client, as `switchyard serve` builds it.
fn test_client() -> switchyard_providers::HttpClient {
    switchyard_providers::HttpClient::new(std::time::Duration::from_secs(5)).unwrap()
}

fn provider(srv: &switchyard_testkit::Running) -> Anthropic {
    std::env::set_var(KEY_VAR, KEY);
    provider_with(format!("http://{}", srv.addr), Some(KEY_VAR))
}

fn provider_with(base_url: String, key_env: Option<&str>) -> Anthropic {
    let cfg = AnthropicConfig {
        base_url,
        api_key_env: key_env.map(str::to_string),
        default_max_tokens: 1000,
        ..Default::default()
    };
    Anthropic::build("claude", &cfg, test_client()).unwrap()
}

fn call(stream: bool, extra: Value) -> ChatCall {
    let mut body = json!({
        "model": "public-name",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello world"}],
        "stream": stream,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let request: ChatRequest = serde_json::from_value(body).unwrap();
    ChatCall {
        request: Arc::new(request),
        model: "claude-sonnet-4-5".into(),
        original: None,
    }
}

async fn whole(p: &Anthropic, c: ChatCall) -> (ChatCompletion, switchyard_providers::Completion) {
    let ChatOutput::Complete(c) = p.chat(c).await.unwrap() else {
        panic!("expected a whole answer")
    };
    (serde_json::from_slice(&c.body).unwrap(), c)
}

/// Collects a translated stream: OpenAI chunks, their (content, usage_only) flags, the summary.
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
                    "OpenAI SSE framing: {text:?}"
                );
                assert!(
                    !text.contains("[DONE]"),
                    "the gateway writes [DONE], not the adapter"
                );
                chunks.push(serde_json::from_str(&text[6..]).unwrap());
                flags.push((content, usage_only));
            }
            StreamItem::End(summary) => {
                assert!(s.next().await.is_none(), "nothing after End");
                return (chunks, flags, summary);
            }
        }
    }
    panic!("stream ended without End");
}

fn text_of(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
        .collect()
}

#[tokio::test]
async fn plain_answer_is_an_openai_completion_and_the_request_is_anthropic_shaped() {
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer {
        tokens: 5,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(&srv);
    assert_eq!(p.kind(), "anthropic");
    let (body, c) = whole(
        &p,
        call(false, json!({"temperature": 0.5, "stop": ["STOP"]})),
    )
    .await;
    assert_eq!(body.object, "chat.completion");
    assert_eq!(body.choices[0].message.role, "assistant");
    assert_eq!(
        body.choices[0].message.content.as_deref(),
        Some("tok0 tok1 tok2 tok3 tok4")
    );
    assert_eq!(body.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(body.model, "claude-sonnet-4-5");
    let u = c.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens),
        (5, 5),
        "the mock counts the 5 prompt words"
    );
    assert_eq!(c.response_model.as_deref(), Some("claude-sonnet-4-5"));

    let sent = &mock.received()[0];
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["system"], "be brief");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "say hello world"}]}])
    );
    assert_eq!(
        sent["max_tokens"], 1000,
        "the configured default when the client gives none"
    );
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["stop_sequences"], json!(["STOP"]));
    let h = &mock.received_headers()[0];
    assert_eq!(h["x-api-key"], KEY);
    assert_eq!(h["anthropic-version"], "2023-06-01");
    // Built once at start-up for a plain-http base URL; HTTP/1.1 needs exactly one.
    let authority = srv.base_url().parse::<http::Uri>().unwrap();
    let hosts: Vec<_> = h.get_all(http::header::HOST).iter().collect();
    assert_eq!(hosts, [authority.authority().unwrap().as_str()]);
}

#[tokio::test]
async fn max_tokens_from_the_client_reaches_anthropic_and_length_is_reported() {
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer {
        tokens: 10,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(&srv);
    let (body, _) = whole(&p, call(false, json!({"max_tokens": 3}))).await;
    assert_eq!(mock.received()[0]["max_tokens"], 3);
    assert_eq!(
        body.choices[0].message.content.as_deref(),
        Some("tok0 tok1 tok2")
    );
    assert_eq!(body.choices[0].finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn stream_translates_to_openai_chunks() {
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer {
        tokens: 4,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(&srv);
    let (chunks, flags, summary) = collect(p.chat(call(true, json!({}))).await.unwrap()).await;
    assert_eq!(mock.received()[0]["stream"], true);
    assert_eq!(text_of(&chunks), "tok0 tok1 tok2 tok3");
    assert_eq!(summary.output_text, "tok0 tok1 tok2 tok3");
    assert!(chunks
        .iter()
        .all(|c| c.object == "chat.completion.chunk" && c.id == "msg_mock01"));
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert_eq!(
        flags[0],
        (false, false),
        "the role chunk carries no content"
    );
    assert_eq!(flags[1], (true, false));
    let n = chunks.len();
    assert_eq!(
        chunks[n - 2].choices[0].finish_reason.as_deref(),
        Some("stop")
    );
    assert!(chunks[n - 1].choices.is_empty());
    assert_eq!(flags[n - 1], (false, true), "the last chunk is usage only");
    let u = summary.usage.unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (5, 4));
    assert_eq!(chunks[n - 1].usage.as_ref().unwrap().completion_tokens, 4);
    assert_eq!(summary.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn cache_read_and_creation_tokens_count_as_input() {
    let answer = Answer {
        tokens: 2,
        cache_read_input_tokens: 1000,
        cache_creation_input_tokens: 200,
        ..Default::default()
    };
    let (_mock, srv) = MockAnthropic::start(Reply::Answer(answer)).await.unwrap();
    let p = provider(&srv);
    let (body, c) = whole(&p, call(false, json!({}))).await;
    let u = c.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_creation_input_tokens,
            u.output_tokens
        ),
        (1205, 1000, 200, 2)
    );
    assert_eq!(u.uncached_input_tokens(), 5);
    let ou = body.usage.unwrap();
    assert_eq!((ou.prompt_tokens, ou.total_tokens), (1205, 1207));
    let details = ou.prompt_tokens_details.unwrap();
    assert_eq!(
        (details.cached_tokens, details.cache_creation_tokens),
        (Some(1000), Some(200))
    );

    let (chunks, _, summary) = collect(p.chat(call(true, json!({}))).await.unwrap()).await;
    let su = summary.usage.unwrap();
    assert_eq!(
        (
            su.input_tokens,
            su.cached_input_tokens,
            su.cache_creation_input_tokens
        ),
        (1205, 1000, 200)
    );
    let last = chunks.last().unwrap().usage.as_ref().unwrap();
    assert_eq!(
        last.prompt_tokens_details.as_ref().unwrap().cached_tokens,
        Some(1000)
    );
}

fn tools() -> Value {
    json!({"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required"})
}

#[tokio::test]
async fn tools_plain_and_streamed() {
    let reply = Reply::ToolUse {
        text: Some("Checking.".into()),
        name: "get_weather".into(),
        input: json!({"city": "Paris", "unit": "°C"}),
    };
    let (mock, srv) = MockAnthropic::start(reply).await.unwrap();
    let p = provider(&srv);
    let (body, _) = whole(&p, call(false, tools())).await;
    let sent = &mock.received()[0];
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    let ch = &body.choices[0];
    assert_eq!(ch.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(ch.message.content.as_deref(), Some("Checking."));
    let tc = &ch.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        (tc.id.as_str(), tc.kind.as_str(), tc.function.name.as_str()),
        ("toolu_mock01", "function", "get_weather")
    );
    let args: Value = serde_json::from_str(&tc.function.arguments).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "°C"}));

    let (chunks, flags, summary) = collect(p.chat(call(true, tools())).await.unwrap()).await;
    assert_eq!(text_of(&chunks), "Checking.");
    let deltas: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
        .collect();
    assert_eq!(deltas[0].id.as_deref(), Some("toolu_mock01"));
    assert_eq!(deltas[0].kind.as_deref(), Some("function"));
    assert_eq!(
        deltas[0].function.as_ref().unwrap().name.as_deref(),
        Some("get_weather")
    );
    assert!(deltas.iter().all(|d| d.index == 0));
    let args: String = deltas
        .iter()
        .filter_map(|d| d.function.as_ref().and_then(|f| f.arguments.clone()))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris", "unit": "°C"})
    );
    assert!(
        flags.iter().filter(|f| f.0).count() >= 3,
        "text and tool deltas count as content"
    );
    assert_eq!(summary.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(summary.usage.unwrap().output_tokens, 9);
}

#[tokio::test]
async fn a_tool_round_trip_is_accepted_by_the_server() {
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer {
        text: Some("It is 21C.".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(&srv);
    let mut c = call(false, tools());
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "public-name",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"}
        ],
        "tools": tools()["tools"],
    }))
    .unwrap();
    c.request = Arc::new(req);
    let (body, _) = whole(&p, c).await;
    assert_eq!(
        body.choices[0].message.content.as_deref(),
        Some("It is 21C.")
    );
    let sent = &mock.received()[0];
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        sent["messages"][1]["content"][0]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(sent["messages"][2]["role"], "user");
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"})
    );
}

#[tokio::test]
async fn error_bodies_map_to_status_and_message() {
    let cases = [
        (
            400,
            "invalid_request_error",
            "messages: text content blocks must be non-empty",
            false,
        ),
        (529, "overloaded_error", "Overloaded", true),
        (500, "api_error", "Internal server error", true),
    ];
    for (status, error_type, message, retryable) in cases {
        let (_mock, srv) = MockAnthropic::start(Reply::Error {
            status,
            error_type: error_type.into(),
            message: message.into(),
            retry_after: None,
        })
        .await
        .unwrap();
        let p = provider(&srv);
        for stream in [false, true] {
            let e = p.chat(call(stream, json!({}))).await.unwrap_err();
            assert_eq!(e.kind, ProviderErrorKind::Status(status));
            assert!(
                e.message.contains(&format!("{error_type}: {message}")),
                "{}",
                e.message
            );
            assert_eq!(e.is_retryable(), retryable, "{status}");
            let body: Value = serde_json::from_slice(e.body.as_ref().unwrap()).unwrap();
            assert_eq!(
                body["error"]["type"], error_type,
                "the body is kept as received"
            );
        }
    }
}

#[tokio::test]
async fn missing_key_is_refused_like_the_real_api() {
    let (_mock, srv) = MockAnthropic::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider_with(format!("http://{}", srv.addr), None);
    let e = p.chat(call(false, json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(401));
    assert!(e.message.contains("authentication_error"), "{}", e.message);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let (_mock, srv) = MockAnthropic::start(Reply::Error {
        status: 429,
        error_type: "rate_limit_error".into(),
        message: "Number of request tokens has exceeded your per-minute rate limit".into(),
        retry_after: Some("3".into()),
    })
    .await
    .unwrap();
    let p = provider(&srv);
    let e = p.chat(call(true, json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    assert!(e.message.contains("rate_limit_error"), "{}", e.message);
    assert!(e.is_retryable());
}

#[tokio::test]
async fn an_error_event_mid_stream_is_an_error() {
    let (_mock, srv) = MockAnthropic::start(Reply::StreamError {
        after: 2,
        error_type: "overloaded_error".into(),
        message: "Overloaded".into(),
    })
    .await
    .unwrap();
    let p = provider(&srv);
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
        panic!()
    };
    let mut text = String::new();
    let err = loop {
        match s.next().await {
            Some(Ok(StreamItem::Data { bytes, .. })) => {
                let c: ChatChunk = serde_json::from_slice(&bytes[6..]).unwrap();
                text.extend(c.choices.iter().filter_map(|ch| ch.delta.content.clone()));
            }
            Some(Ok(StreamItem::End(_))) => panic!("an error event must not look like an end"),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the error"),
        }
    };
    assert_eq!(
        text, "tok0 tok1",
        "what came before the error was forwarded"
    );
    assert_eq!(err.kind, ProviderErrorKind::Status(529));
    assert!(err.is_retryable());
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn a_stalled_stream_stops_yielding() {
    let (_mock, srv) = MockAnthropic::start(Reply::Stall { after: 2 })
        .await
        .unwrap();
    let p = provider(&srv);
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
        panic!()
    };
    // The role chunk and two text chunks arrive, then the server sends nothing.
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
    let (_mock, srv) = MockAnthropic::start(Reply::Cut { after: 2 }).await.unwrap();
    let p = provider(&srv);
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
        panic!()
    };
    let mut saw_err = false;
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamItem::End(_)) => panic!("a cut stream must not look finished"),
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                saw_err = true;
            }
        }
    }
    assert!(saw_err);
}

#[tokio::test]
async fn a_temperature_anthropic_cannot_take_is_refused_before_sending() {
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(&srv);
    let e = p
        .chat(call(false, json!({"temperature": 1.7})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
    assert!(e.message.contains("temperature"), "{}", e.message);
    assert_eq!(mock.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_api_key_is_sent_and_never_in_errors() {
    std::env::set_var(
        "SWITCHYARD_TEST_ANTHROPIC_WRONG_KEY",
        "sk-ant-wrong-secret-777",
    );
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    mock.require_key(KEY);
    let wrong = provider_with(
        format!("http://{}", srv.addr),
        Some("SWITCHYARD_TEST_ANTHROPIC_WRONG_KEY"),
    );
    let mut messages = vec![format!("{wrong:?}")];
    let e = wrong.chat(call(false, json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(401));
    assert_eq!(
        mock.received_headers()[0]["x-api-key"],
        "sk-ant-wrong-secret-777",
        "the key is sent"
    );
    messages.push(format!("{e} {e:?} {}", e.to_api_error()));

    // A broken stream and a refused connection, with the right key.
    let p = provider(&srv);
    mock.push(Reply::Cut { after: 1 });
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
        panic!()
    };
    while let Some(item) = s.next().await {
        if let Err(e) = item {
            messages.push(format!("{e} {e:?}"));
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let refused = provider_with(format!("http://{closed}"), Some(KEY_VAR));
    let e = refused.chat(call(false, json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Connect);
    messages.push(format!("{e} {e:?} {refused:?}"));

    assert_eq!(messages.len(), 4);
    for m in &messages {
        assert!(!m.contains("sk-ant-"), "a key leaked: {m}");
    }
    let missing = AnthropicConfig {
        api_key_env: Some("SWITCHYARD_TEST_NO_SUCH_ANTHROPIC_VAR".into()),
        ..Default::default()
    };
    let err = Anthropic::build("claude", &missing, test_client()).unwrap_err();
    assert!(
        err.contains("SWITCHYARD_TEST_NO_SUCH_ANTHROPIC_VAR"),
        "{err}"
    );
}

/// The test server itself, spoken to directly: it must refuse what the real API refuses.
#[tokio::test]
async fn the_test_server_refuses_what_the_real_api_refuses() {
    let (mock, srv) = MockAnthropic::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let url = format!("http://{}/v1/messages", srv.addr);
    let client = reqwest::Client::new();
    let good =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (
            None,
            Some("2023-06-01"),
            good.clone(),
            401,
            "authentication_error",
            "x-api-key",
        ),
        (
            Some("k"),
            None,
            good.clone(),
            400,
            "invalid_request_error",
            "anthropic-version",
        ),
        (
            Some("k"),
            Some("2023-06-01"),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            Some("k"),
            Some("2023-06-01"),
            json!({"model": "m", "max_tokens": 5, "temperature": 1.5,
            "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "invalid_request_error",
            "temperature",
        ),
        (
            Some("k"),
            Some("2023-06-01"),
            json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "system", "content": "hi"}]}),
            400,
            "invalid_request_error",
            "messages",
        ),
    ];
    for (key, version, body, status, error_type, names) in cases {
        let mut rb = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        if let Some(v) = version {
            rb = rb.header("anthropic-version", v);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{names}");
        assert!(resp.headers().contains_key("request-id"));
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], error_type);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(names),
            "{v}"
        );
    }
    let ok = client
        .post(&url)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(mock.requests.load(std::sync::atomic::Ordering::Relaxed), 6);
}

/// The test server streams the documented event flow, each event named by an `event:` line.
#[tokio::test]
async fn the_test_server_streams_the_documented_event_sequence() {
    let (_mock, srv) = MockAnthropic::start(Reply::Answer(Answer {
        tokens: 2,
        ..Default::default()
    }))
    .await
    .unwrap();
    let body = reqwest::Client::new()
        .post(format!("http://{}/v1/messages", srv.addr))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json").body(json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut dec = switchyard_api::sse::SseDecoder::new();
    dec.push(body.as_bytes());
    let mut names = vec![];
    while let Some(ev) = dec.next_event().unwrap() {
        let name = ev.event().unwrap().to_string();
        let data: switchyard_api::anthropic::StreamEvent = serde_json::from_str(ev.data()).unwrap();
        assert_eq!(data.name(), name, "the event: line repeats the data's type");
        names.push(name);
    }
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
            "message_stop"
        ]
    );
}

/// Translates a long stream and prints the cost per event (a figure, not an assertion):
/// `cargo nextest run -p switchyard-providers --release --test anthropic --no-capture translation_cost`.
#[tokio::test]
async fn translation_cost_per_text_delta() {
    const DELTAS: usize = 50_000;
    let mut sse = String::from(concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    ));
    for _ in 0..DELTAS {
        sse.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" word\"}}\n\n");
    }
    sse.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":50000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    // Network-sized pieces, as reqwest would hand them over.
    let pieces: Vec<_> = sse
        .as_bytes()
        .chunks(16 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let started = std::time::Instant::now();
    let mut s = Box::pin(switchyard_providers::anthropic::anthropic_sse_stream(
        futures_util::stream::iter(pieces),
    ));
    let (mut data, mut out_bytes, mut summary) = (0usize, 0usize, None);
    while let Some(item) = s.next().await {
        match item.unwrap() {
            StreamItem::Data { bytes, .. } => {
                data += 1;
                out_bytes += bytes.len();
            }
            StreamItem::End(sm) => summary = Some(sm),
        }
    }
    let elapsed = started.elapsed();
    let summary = summary.unwrap();
    assert_eq!(
        data,
        DELTAS + 3,
        "role chunk, one chunk per delta, finish and usage chunks"
    );
    assert_eq!(summary.output_text.len(), DELTAS * 5);
    assert_eq!(summary.usage.unwrap().output_tokens, 50_000);
    println!(
        "anthropic stream translation: {DELTAS} text deltas in {:.1} ms = {:.0} ns/delta, {} output bytes ({} bytes/chunk)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / DELTAS as f64,
        out_bytes,
        out_bytes / data
    );
}

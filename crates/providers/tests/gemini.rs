//! Conformance of the Gemini adapter against a local server that speaks Google's documented
//! Gemini API (crates/testkit/src/gemini.rs): the translated answers must be valid OpenAI shapes
//! and the usage exactly what Google reported.

// Helpers outside `#[test]` functions are test code too; clippy.toml's test allowances do not
// reach them in an integration test crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard_api::openai::{ChatChunk, ChatCompletion, ChatRequest};
use switchyard_providers::{
    gemini::{Gemini, GeminiConfig},
    ChatCall, ChatOutput, Provider, ProviderErrorKind, StreamItem, StreamSummary,
};
use switchyard_testkit::gemini::{base_url, Answer, MockGemini, Reply};

const KEY_VAR: &str = "SWITCHYARD_TEST_GEMINI_KEY";
const KEY: &str = "AIzaTestSecret-4242-gemini";

fn test_client() -> switchyard_providers::HttpClient {
    switchyard_providers::HttpClient::new(Duration::from_secs(5)).unwrap()
}

fn provider(srv: &switchyard_testkit::Running) -> Gemini {
    std::env::set_var(KEY_VAR, KEY);
    provider_with(base_url(srv), Some(KEY_VAR))
}

fn provider_with(base_url: String, key_env: Option<&str>) -> Gemini {
    let cfg = GeminiConfig {
        base_url,
        api_key_env: key_env.map(str::to_string),
        ..Default::default()
    };
    Gemini::build("gem", &cfg, test_client()).unwrap()
}

fn call_with(body: Value) -> ChatCall {
    let request: ChatRequest = serde_json::from_value(body).unwrap();
    ChatCall {
        request: Arc::new(request),
        model: "gemini-2.5-flash".into(),
        original: None,
    }
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
    call_with(body)
}

async fn whole(p: &Gemini, c: ChatCall) -> (ChatCompletion, switchyard_providers::Completion) {
    let ChatOutput::Complete(c) = p.chat(c).await.unwrap() else {
        panic!("expected a whole answer")
    };
    (serde_json::from_slice(&c.body).unwrap(), c)
}

/// Collects a translated stream: OpenAI chunks (also as JSON values), their (content,
/// usage_only) flags, the summary.
async fn collect(
    out: ChatOutput,
) -> (Vec<ChatChunk>, Vec<Value>, Vec<(bool, bool)>, StreamSummary) {
    let ChatOutput::Stream(mut s) = out else {
        panic!("expected a stream")
    };
    let (mut chunks, mut raw, mut flags) = (vec![], vec![], vec![]);
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
                assert!(!text.contains("[DONE]"), "the gateway writes [DONE]");
                chunks.push(serde_json::from_str(&text[6..]).unwrap());
                raw.push(serde_json::from_str(&text[6..]).unwrap());
                flags.push((content, usage_only));
            }
            StreamItem::End(summary) => {
                assert!(s.next().await.is_none(), "nothing after End");
                return (chunks, raw, flags, summary);
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

/// An answer that thinks, hits the cache and used a tool: every usage field is non-zero.
fn rich_answer() -> Answer {
    Answer {
        tokens: 5,
        thought: Some("The user wants a greeting.".into()),
        thoughts_tokens: 40,
        cached_tokens: 1000,
        tool_use_prompt_tokens: 3,
        model_version: Some("gemini-2.5-flash-001".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn plain_answer_is_an_openai_completion_with_exact_usage() {
    let (mock, srv) = MockGemini::start(Reply::Answer(rich_answer()))
        .await
        .unwrap();
    let p = provider(&srv);
    assert_eq!(p.kind(), "gemini");
    let (body, c) = whole(&p, call(false, json!({}))).await;
    assert_eq!(body.object, "chat.completion");
    assert_eq!(body.id, "mockResp01");
    let ch = &body.choices[0];
    assert_eq!(ch.message.role, "assistant");
    assert_eq!(
        ch.message.content.as_deref(),
        Some("tok0 tok1 tok2 tok3 tok4"),
        "the thought is not in the answer"
    );
    assert_eq!(ch.finish_reason.as_deref(), Some("stop"));
    assert_eq!(body.model, "gemini-2.5-flash-001", "from modelVersion");
    assert_eq!(c.response_model.as_deref(), Some("gemini-2.5-flash-001"));
    // The mock: 5 prompt words (system + user) + 1000 cached = promptTokenCount 1005.
    let u = c.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.cached_input_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.cache_creation_input_tokens
        ),
        (1008, 1000, 45, 40, 0)
    );
    assert_eq!(u.uncached_input_tokens(), 8);
    let ou = body.usage.unwrap();
    assert_eq!(
        (ou.prompt_tokens, ou.completion_tokens, ou.total_tokens),
        (1008, 45, 1053),
        "total = Google's totalTokenCount"
    );
    assert_eq!(ou.prompt_tokens_details.unwrap().cached_tokens, Some(1000));
    assert_eq!(
        ou.completion_tokens_details.unwrap().reasoning_tokens,
        Some(40)
    );

    let r = &mock.received()[0];
    assert_eq!(
        (r.model.as_str(), r.method.as_str()),
        ("gemini-2.5-flash", "generateContent")
    );
    assert_eq!(r.query, None);
    assert_eq!(r.headers["x-goog-api-key"], KEY);
    let authority = srv.base_url().parse::<http::Uri>().unwrap();
    let hosts: Vec<_> = r.headers.get_all(http::header::HOST).iter().collect();
    assert_eq!(hosts, [authority.authority().unwrap().as_str()]);
}

#[tokio::test]
async fn stream_translates_to_openai_chunks_with_the_last_usage() {
    let (mock, srv) = MockGemini::start(Reply::Answer(rich_answer()))
        .await
        .unwrap();
    let p = provider(&srv);
    let (chunks, raw, flags, summary) = collect(
        p.chat(call(
            true,
            json!({"stream_options": {"include_usage": true}}),
        ))
        .await
        .unwrap(),
    )
    .await;
    let r = &mock.received()[0];
    assert_eq!(r.method, "streamGenerateContent");
    assert_eq!(r.query.as_deref(), Some("alt=sse"));
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"
        && c.id == "mockResp01"
        && c.model == "gemini-2.5-flash-001"));
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert_eq!(
        flags[0],
        (false, false),
        "the role chunk carries no content"
    );
    assert_eq!(
        raw[1]["choices"][0]["delta"]["reasoning_content"], "The user wants a greeting.",
        "the thought comes as reasoning, not content"
    );
    assert!(raw[1]["choices"][0]["delta"].get("content").is_none());
    // Content deltas one per Gemini event, in order.
    let deltas: Vec<String> = chunks
        .iter()
        .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(deltas, ["tok0", " tok1", " tok2", " tok3", " tok4"]);
    let n = chunks.len();
    assert_eq!(n, 1 + 1 + 5 + 2, "role, thought, 5 pieces, finish, usage");
    assert_eq!(
        chunks[n - 2].choices[0].finish_reason.as_deref(),
        Some("stop")
    );
    assert!(chunks[n - 1].choices.is_empty());
    assert_eq!(flags[n - 1], (false, true), "the last chunk is usage only");
    let u = chunks[n - 1].usage.as_ref().unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (1008, 45, 1053),
        "the last usageMetadata (every event carried one): not a sum"
    );
    assert_eq!(
        u.prompt_tokens_details.as_ref().unwrap().cached_tokens,
        Some(1000)
    );
    let su = summary.usage.unwrap();
    assert_eq!(
        (
            su.input_tokens,
            su.output_tokens,
            su.cached_input_tokens,
            su.reasoning_tokens
        ),
        (1008, 45, 1000, 40)
    );
    assert_eq!(summary.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        summary.response_model.as_deref(),
        Some("gemini-2.5-flash-001")
    );
    assert_eq!(text_of(&chunks), "tok0 tok1 tok2 tok3 tok4");
}

#[tokio::test]
async fn max_tokens_reaches_gemini_and_length_is_reported() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer {
        tokens: 10,
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(&srv);
    let (body, _) = whole(&p, call(false, json!({"max_tokens": 3}))).await;
    assert_eq!(mock.bodies()[0]["generationConfig"]["maxOutputTokens"], 3);
    assert_eq!(
        body.choices[0].message.content.as_deref(),
        Some("tok0 tok1 tok2")
    );
    assert_eq!(body.choices[0].finish_reason.as_deref(), Some("length"));
    let (_, _, _, summary) =
        collect(p.chat(call(true, json!({"max_tokens": 3}))).await.unwrap()).await;
    assert_eq!(summary.finish_reason.as_deref(), Some("length"));
}

fn tools() -> Value {
    json!({"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required"})
}

#[tokio::test]
async fn the_request_is_gemini_shaped() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer {
        text: Some("It is 21C.".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    let p = provider(&srv);
    let mut body = json!({
        "model": "public-name",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris?"},
            {"role": "user", "content": "in celsius"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "21C"},
            {"role": "developer", "content": "answer in one line"}
        ],
        "temperature": 0.3, "top_p": 0.8, "stop": "STOP", "seed": 11, "max_completion_tokens": 50,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w",
            "schema": {"type": "object", "properties": {"temp": {"type": "number"}}}}},
        "logprobs": true,
    });
    for (k, v) in tools().as_object().unwrap() {
        body[k] = v.clone();
    }
    let (out, _) = whole(&p, call_with(body)).await;
    assert_eq!(
        out.choices[0].message.content.as_deref(),
        Some("It is 21C.")
    );
    let sent = &mock.bodies()[0];
    assert_eq!(
        sent["systemInstruction"],
        json!({"parts": [{"text": "be brief"}, {"text": "answer in one line"}]})
    );
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [{"text": "weather in Paris?"}, {"text": "in celsius"}]},
            // A call of the current turn that came without a signature gets Google's dummy.
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "skip_thought_signature_validator"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "21C"}}}]}
        ])
    );
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather by city",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}])
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 50, "stopSequences": ["STOP"],
            "seed": 11, "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {"temp": {"type": "number"}}}})
    );
    let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        5,
        "only Gemini fields are sent (no model, messages, logprobs...): {keys:?}"
    );
}

#[tokio::test]
async fn function_calls_come_back_plain_and_streamed() {
    let reply = Reply::FunctionCall {
        text: Some("Checking.".into()),
        name: "get_weather".into(),
        args: json!({"city": "Paris", "unit": "°C"}),
    };
    let (_mock, srv) = MockGemini::start(reply).await.unwrap();
    let p = provider(&srv);
    let (body, c) = whole(&p, call(false, tools())).await;
    let ch = &body.choices[0];
    assert_eq!(ch.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(ch.message.content.as_deref(), Some("Checking."));
    let tc = &ch.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        (tc.id.as_str(), tc.kind.as_str(), tc.function.name.as_str()),
        ("call_mockResp01_0", "function", "get_weather")
    );
    let args: Value = serde_json::from_str(&tc.function.arguments).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "°C"}));
    assert_eq!(c.usage.unwrap().output_tokens, 8);

    let (chunks, _, flags, summary) = collect(p.chat(call(true, tools())).await.unwrap()).await;
    assert_eq!(text_of(&chunks), "Checking.");
    let deltas: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
        .collect();
    assert_eq!(deltas.len(), 1, "Gemini sends a call whole: one delta");
    let d = deltas[0];
    assert_eq!(
        (d.index, d.id.as_deref(), d.kind.as_deref()),
        (0, Some("call_mockResp01_0"), Some("function"))
    );
    let f = d.function.as_ref().unwrap();
    assert_eq!(f.name.as_deref(), Some("get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(f.arguments.as_deref().unwrap()).unwrap(),
        json!({"city": "Paris", "unit": "°C"})
    );
    assert_eq!(
        flags.iter().filter(|f| f.0).count(),
        2,
        "text and call count as content"
    );
    assert_eq!(summary.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(summary.usage.unwrap().output_tokens, 8);
}

#[tokio::test]
async fn a_blocked_prompt_is_a_content_filter_answer() {
    let (_mock, srv) = MockGemini::start(Reply::Blocked {
        reason: "SAFETY".into(),
    })
    .await
    .unwrap();
    let p = provider(&srv);
    let (body, c) = whole(&p, call(false, json!({}))).await;
    assert_eq!(
        body.choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
    assert!(body.choices[0]
        .message
        .refusal
        .as_deref()
        .unwrap()
        .contains("SAFETY"));
    assert_eq!(c.usage.unwrap().input_tokens, 5);
    let (chunks, _, _, summary) = collect(p.chat(call(true, json!({}))).await.unwrap()).await;
    assert_eq!(summary.finish_reason.as_deref(), Some("content_filter"));
    assert_eq!(text_of(&chunks), "");
}

#[tokio::test]
async fn rate_limit_takes_its_delay_from_retry_info_or_the_header() {
    let (_mock, srv) = MockGemini::start(Reply::Error {
        code: 429,
        status: "RESOURCE_EXHAUSTED".into(),
        message: "You exceeded your current quota, please check your plan and billing details."
            .into(),
        retry_delay: Some("30s".into()),
        retry_after: None,
    })
    .await
    .unwrap();
    let p = provider(&srv);
    for stream in [false, true] {
        let e = p.chat(call(stream, json!({}))).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Status(429));
        assert_eq!(
            e.retry_after,
            Some(Duration::from_secs(30)),
            "RetryInfo.retryDelay"
        );
        assert!(
            e.message
                .contains("RESOURCE_EXHAUSTED: You exceeded your current quota"),
            "{}",
            e.message
        );
        assert!(e.is_retryable());
        assert_eq!(e.to_api_error().retry_after_secs, Some(30));
    }
    let (_mock, srv) = MockGemini::start(Reply::Error {
        code: 429,
        status: "RESOURCE_EXHAUSTED".into(),
        message: "Resource has been exhausted (e.g. check quota).".into(),
        retry_delay: Some("30s".into()),
        retry_after: Some("4".into()),
    })
    .await
    .unwrap();
    let e = provider(&srv)
        .chat(call(false, json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        e.retry_after,
        Some(Duration::from_secs(4)),
        "the header wins"
    );
}

#[tokio::test]
async fn server_errors_map_to_status_and_message() {
    for (code, status, message) in [
        (500, "INTERNAL", "An internal error has occurred."),
        (
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        (
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        ),
    ] {
        let (_mock, srv) = MockGemini::start(Reply::Error {
            code,
            status: status.into(),
            message: message.into(),
            retry_delay: None,
            retry_after: None,
        })
        .await
        .unwrap();
        let p = provider(&srv);
        for stream in [false, true] {
            let e = p.chat(call(stream, json!({}))).await.unwrap_err();
            assert_eq!(e.kind, ProviderErrorKind::Status(code));
            assert!(
                e.message.contains(&format!("{status}: {message}")),
                "{}",
                e.message
            );
            assert_eq!(e.is_retryable(), code >= 500, "{code}");
            assert_eq!(e.retry_after, None);
            let body: Value = serde_json::from_slice(e.body.as_ref().unwrap()).unwrap();
            assert_eq!(
                body["error"]["status"], status,
                "the body is kept as received"
            );
        }
    }
}

#[tokio::test]
async fn a_stall_before_the_first_chunk_yields_nothing() {
    let (_mock, srv) = MockGemini::start(Reply::Stall { after: 0 }).await.unwrap();
    let p = provider(&srv);
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
        panic!()
    };
    let next = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    assert!(
        next.is_err(),
        "no chunk, not even the role chunk, while the server stalls"
    );

    let (_mock, srv) = MockGemini::start(Reply::Stall { after: 2 }).await.unwrap();
    let p = provider(&srv);
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
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
    let (_mock, srv) = MockGemini::start(Reply::Cut { after: 2 }).await.unwrap();
    let p = provider(&srv);
    let ChatOutput::Stream(mut s) = p.chat(call(true, json!({}))).await.unwrap() else {
        panic!()
    };
    let mut text = String::new();
    let mut errors = 0;
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamItem::End(_)) => panic!("a cut stream must not look finished"),
            Ok(StreamItem::Data { bytes, .. }) => {
                let c: ChatChunk = serde_json::from_slice(&bytes[6..]).unwrap();
                text.extend(c.choices.iter().filter_map(|ch| ch.delta.content.clone()));
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 1);
    assert_eq!(text, "tok0 tok1", "what came before the cut was forwarded");
}

#[tokio::test]
async fn requests_gemini_cannot_take_are_refused_before_sending() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(&srv);
    for (extra, names) in [
        (json!({"n": 3}), "n"),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
            "image_url",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "21C"}]}),
            "tool_call_id",
        ),
        (
            json!({"reasoning_effort": "extreme"}),
            "reasoning_effort: \"extreme\" is not supported for Gemini (one of none, minimal, low, medium, high)",
        ),
        (
            json!({"extra_body": {"google": {"thinking_config": {"thinking_budget": 1024, "thinking_level": "high"}}}}),
            "extra_body.google.thinking_config: thinking_budget and thinking_level",
        ),
    ] {
        let e = p.chat(call(false, extra)).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
        assert!(e.message.contains(names), "{}", e.message);
        assert!(!e.is_retryable());
    }
    let mut bad_model = call(false, json!({}));
    bad_model.model = "gemini/../../files".into();
    assert_eq!(
        p.chat(bad_model).await.unwrap_err().kind,
        ProviderErrorKind::InvalidRequest
    );
    assert_eq!(mock.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

// ---- Thinking ("Thinking", https://ai.google.dev/gemini-api/docs/thinking, and "OpenAI
// compatibility", https://ai.google.dev/gemini-api/docs/openai): `reasoning_effort` and Google's
// `thinking_config` become `generationConfig.thinkingConfig`.

/// The request's fields named anywhere in the body sent to Gemini.
fn leaked(body: &Value) -> Vec<&'static str> {
    let text = body.to_string();
    [
        "reasoning_effort",
        "extra_body",
        "\"google\"",
        "thinking_config",
        "thinking_budget",
        "include_thoughts",
    ]
    .into_iter()
    .filter(|k| text.contains(k))
    .collect()
}

#[tokio::test]
async fn reasoning_effort_reaches_gemini_as_its_thinking_config_and_nothing_else() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(&srv);
    let cases = [
        ("gemini-2.5-flash", "low", json!({"thinkingBudget": 1024})),
        (
            "gemini-2.5-flash",
            "medium",
            json!({"thinkingBudget": 8192}),
        ),
        (
            "gemini-2.5-flash-lite",
            "none",
            json!({"thinkingBudget": 0}),
        ),
        ("gemini-2.5-pro", "high", json!({"thinkingBudget": 24576})),
        (
            "gemini-3-flash-preview",
            "minimal",
            json!({"thinkingLevel": "minimal"}),
        ),
        (
            "gemini-3-flash-preview",
            "none",
            json!({"thinkingLevel": "minimal"}),
        ),
        (
            "gemini-3-flash-preview",
            "medium",
            json!({"thinkingLevel": "medium"}),
        ),
        (
            "gemini-3.1-pro-preview",
            "minimal",
            json!({"thinkingLevel": "low"}),
        ),
        (
            "gemini-3.1-pro-preview",
            "high",
            json!({"thinkingLevel": "high"}),
        ),
    ];
    for (i, (model, effort, want)) in cases.iter().enumerate() {
        let mut c = call(i % 2 == 1, json!({"reasoning_effort": effort}));
        c.model = (*model).into();
        match p.chat(c).await.unwrap() {
            ChatOutput::Complete(_) => {}
            out => drop(collect(out).await),
        }
        let r = &mock.received()[i];
        assert_eq!(r.model, *model);
        assert_eq!(
            r.body["generationConfig"]["thinkingConfig"], *want,
            "{model} {effort}"
        );
        assert_eq!(leaked(&r.body), Vec::<&str>::new(), "{model} {effort}");
    }
    // No reasoning_effort: no thinkingConfig, the model thinks as it would by default.
    whole(&p, call(false, json!({}))).await;
    let last = mock.bodies().pop().unwrap();
    assert!(
        last["generationConfig"].get("thinkingConfig").is_none(),
        "{last}"
    );
}

#[tokio::test]
async fn the_google_thinking_config_wins_and_thought_summaries_stream_as_reasoning_content() {
    let (mock, srv) = MockGemini::start(Reply::Answer(rich_answer()))
        .await
        .unwrap();
    // As Gemini: the thought summary comes back only when includeThoughts asks for it.
    mock.thoughts_only_when_asked();
    let p = provider(&srv);
    let reasoning = |raw: &[Value]| -> String {
        raw.iter()
            .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
            .collect()
    };
    // Google's REST form (`extra_body` in the body) and the OpenAI SDK's (`google` at the top).
    let google = json!({"thinking_config": {"thinking_budget": 2048, "include_thoughts": true}});
    for extra in [
        json!({"reasoning_effort": "high", "extra_body": {"google": google}}),
        json!({"reasoning_effort": "high", "google": google}),
    ] {
        let (chunks, raw, _, summary) = collect(p.chat(call(true, extra)).await.unwrap()).await;
        let sent = mock.bodies().pop().unwrap();
        assert_eq!(
            sent["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 2048, "includeThoughts": true}),
            "the explicit budget replaces reasoning_effort's"
        );
        assert_eq!(leaked(&sent), Vec::<&str>::new());
        assert_eq!(reasoning(&raw), "The user wants a greeting.");
        assert_eq!(
            text_of(&chunks),
            "tok0 tok1 tok2 tok3 tok4",
            "not answer text"
        );
        assert_eq!(summary.usage.unwrap().reasoning_tokens, 40);
    }
    // Summaries asked for beside reasoning_effort, on a Gemini 3 model: a level and the summaries.
    let mut c = call(
        true,
        json!({"reasoning_effort": "low", "google": {"thinking_config": {"include_thoughts": true}}}),
    );
    c.model = "gemini-3-flash-preview".into();
    let (_, raw, _, _) = collect(p.chat(c).await.unwrap()).await;
    assert_eq!(
        mock.bodies().pop().unwrap()["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "low", "includeThoughts": true})
    );
    assert_eq!(reasoning(&raw), "The user wants a greeting.");
    // Not asked for: no summary.
    let (_, raw, _, _) = collect(
        p.chat(call(true, json!({"reasoning_effort": "high"})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reasoning(&raw), "");
    // A whole answer keeps the summary out of the content.
    let (body, _) = whole(
        &p,
        call(
            false,
            json!({"google": {"thinking_config": {"include_thoughts": true}}}),
        ),
    )
    .await;
    assert_eq!(
        body.choices[0].message.content.as_deref(),
        Some("tok0 tok1 tok2 tok3 tok4")
    );
}

#[tokio::test]
async fn the_api_key_is_sent_and_never_in_errors() {
    std::env::set_var("SWITCHYARD_TEST_GEMINI_WRONG_KEY", "AIzaWrongSecret-777");
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    mock.require_key(KEY);
    let wrong = provider_with(base_url(&srv), Some("SWITCHYARD_TEST_GEMINI_WRONG_KEY"));
    let mut messages = vec![format!("{wrong:?}")];
    let e = wrong.chat(call(false, json!({}))).await.unwrap_err();
    assert_eq!(
        e.kind,
        ProviderErrorKind::Status(401),
        "Google's 400 API_KEY_INVALID is the gateway's fault, reported as 401"
    );
    assert!(e.message.contains("API key not valid"), "{}", e.message);
    assert_eq!(
        mock.received()[0].headers["x-goog-api-key"],
        "AIzaWrongSecret-777"
    );
    messages.push(format!("{e} {e:?} {}", e.to_api_error()));

    // No key at all: Google's 403 PERMISSION_DENIED.
    let none = provider_with(base_url(&srv), None);
    let e = none.chat(call(false, json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(403));
    assert!(e.message.contains("PERMISSION_DENIED"), "{}", e.message);

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
    let refused = provider_with(format!("http://{closed}/v1beta"), Some(KEY_VAR));
    let e = refused.chat(call(false, json!({}))).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Connect);
    messages.push(format!("{e} {e:?} {refused:?} {p:?}"));

    assert_eq!(messages.len(), 4);
    for m in &messages {
        assert!(!m.contains("AIza"), "a key leaked: {m}");
    }
    let missing = GeminiConfig {
        api_key_env: Some("SWITCHYARD_TEST_NO_SUCH_GEMINI_VAR".into()),
        ..Default::default()
    };
    let err = Gemini::build("gem", &missing, test_client()).unwrap_err();
    assert!(err.contains("SWITCHYARD_TEST_NO_SUCH_GEMINI_VAR"), "{err}");
}

/// The test server itself, spoken to directly: it must refuse what the real API refuses, and
/// stream as Google does.
#[tokio::test]
async fn the_test_server_refuses_what_the_real_api_refuses_and_streams_sse() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer {
        tokens: 2,
        ..Default::default()
    }))
    .await
    .unwrap();
    let url = |method: &str| format!("{}/models/gemini-x:{method}", base_url(&srv));
    let client = reqwest::Client::new();
    let good = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let cases = [
        (
            None,
            "generateContent",
            good.clone(),
            403,
            "PERMISSION_DENIED",
        ),
        (
            Some("k"),
            "generateContent",
            json!({"contents": []}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Some("k"),
            "generateContent",
            json!({"contents": [{"role": "system", "parts": [{"text": "hi"}]}]}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Some("k"),
            "generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"temperature": 2.5}}),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Some("k"),
            "generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024, "thinkingLevel": "low"}}}),
            400,
            "INVALID_ARGUMENT",
        ),
        (Some("k"), "countTokenz", good.clone(), 404, "NOT_FOUND"),
    ];
    for (key, method, body, code, status) in cases {
        let mut rb = client
            .post(url(method))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            rb = rb.header("x-goog-api-key", k);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), code, "{status}");
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(
            (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
            (Some(code as u64), Some(status))
        );
    }
    let resp = client
        .post(format!("{}?alt=sse", url("streamGenerateContent")))
        .header("x-goog-api-key", "k")
        .header("content-type", "application/json")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text:?}");
    assert!(!text.contains("[DONE]"));
    let last: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 2);
    // Without alt=sse: one JSON array of the same responses.
    let arr = client
        .post(url("streamGenerateContent"))
        .header("x-goog-api-key", "k")
        .body(good.to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let arr: Value = serde_json::from_slice(&arr).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 2);
    assert_eq!(mock.requests.load(std::sync::atomic::Ordering::Relaxed), 8);
}

// ---- Thought signatures ("Thought signatures", https://ai.google.dev/gemini-api/docs/thought-signatures):
// Google's OpenAI endpoint carries them on tool calls as `extra_content.google.thought_signature`.

/// Base64 as Google writes it, `+`, `/` and `=` included.
const SIG: &str = "CiQBjz1rX+Yz/9kQ2wAbCdEf0123456789ab+cd/efGhIjKlMn==";

fn signature_of(tool_call: &Value) -> &Value {
    &tool_call["extra_content"]["google"]["thought_signature"]
}

/// The conversation so far plus the assistant message as the gateway returned it (echoed
/// unchanged, `extra_content` and all) and the tool's result.
fn with_tool_result(assistant: Value, stream: bool) -> Value {
    let id = assistant["tool_calls"][0]["id"].clone();
    let mut body = json!({
        "model": "public-name",
        "messages": [{"role": "user", "content": "weather in Paris?"}, assistant,
            {"role": "tool", "tool_call_id": id, "content": "21C"}],
        "stream": stream,
    });
    for (k, v) in tools().as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn thought_signatures_come_back_in_extra_content_and_go_back_on_their_parts() {
    let (mock, srv) = MockGemini::start(Reply::FunctionCall {
        text: None,
        name: "get_weather".into(),
        args: json!({"city": "Paris"}),
    })
    .await
    .unwrap();
    mock.sign_calls(Some(SIG));
    mock.require_thought_signatures();
    let p = provider(&srv);

    // A whole answer: the signature rides on the tool call, and survives OpenAI's own type.
    let ChatOutput::Complete(c) = p.chat(call(false, tools())).await.unwrap() else {
        panic!("expected a whole answer")
    };
    let raw: Value = serde_json::from_slice(&c.body).unwrap();
    let assistant = raw["choices"][0]["message"].clone();
    assert_eq!(signature_of(&assistant["tool_calls"][0]), SIG);
    let typed: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        typed.choices[0].message.tool_calls.as_ref().unwrap()[0].extra_content,
        Some(json!({"google": {"thought_signature": SIG}}))
    );

    // A stream: the same on the call's delta, and on nothing else.
    let (_, raw_chunks, _, _) = collect(p.chat(call(true, tools())).await.unwrap()).await;
    let deltas: Vec<&Value> = raw_chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas.len(), 1);
    assert_eq!(signature_of(deltas[0]), SIG);
    assert_eq!(
        raw_chunks
            .iter()
            .filter(|c| c.to_string().contains("extra_content"))
            .count(),
        1
    );

    // The next step, the assistant message echoed as returned: the strict server accepts it,
    // and got the signature on the very part it was given on.
    mock.set_default(Reply::Answer(Answer {
        text: Some("It is 21C.".into()),
        ..Default::default()
    }));
    for stream in [false, true] {
        let out = p
            .chat(call_with(with_tool_result(assistant.clone(), stream)))
            .await
            .unwrap();
        if stream {
            let (chunks, ..) = collect(out).await;
            assert_eq!(text_of(&chunks), "It is 21C.");
        } else {
            let ChatOutput::Complete(c) = out else {
                panic!("expected a whole answer")
            };
            let body: ChatCompletion = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(
                body.choices[0].message.content.as_deref(),
                Some("It is 21C.")
            );
        }
        let sent = mock.bodies().last().unwrap().clone();
        assert_eq!(
            sent["contents"][1],
            json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                "args": {"city": "Paris"}}, "thoughtSignature": SIG}]})
        );
    }
    assert_eq!(mock.received().len(), 4);
}

#[tokio::test]
async fn a_history_without_signatures_gets_the_dummy_where_gemini_3_requires_one() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer {
        text: Some("Done.".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    mock.require_thought_signatures();
    let p = provider(&srv);
    let tc = |id: &str, name: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}});
    let mut body = json!({
        "model": "public-name",
        "messages": [
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": null, "tool_calls": [tc("c0", "get_time")]},
            {"role": "tool", "tool_call_id": "c0", "content": "12:00"},
            {"role": "assistant", "content": "It is noon."},
            {"role": "user", "content": "weather in Paris and Rome, then book a taxi?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [tc("c1", "get_weather"), tc("c2", "get_weather")]},
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
            {"role": "tool", "tool_call_id": "c2", "content": "25C"},
            {"role": "assistant", "content": null, "tool_calls": [tc("c3", "book_taxi")]},
            {"role": "tool", "tool_call_id": "c3", "content": "booked"}
        ],
    });
    for (k, v) in tools().as_object().unwrap() {
        body[k] = v.clone();
    }
    let (out, _) = whole(&p, call_with(body)).await;
    assert_eq!(out.choices[0].message.content.as_deref(), Some("Done."));
    let sent = &mock.bodies()[0];
    let contents = sent["contents"].as_array().unwrap();
    let sig = |c: usize, p: usize| contents[c]["parts"][p].get("thoughtSignature").cloned();
    // An earlier turn is not validated: left as the client sent it.
    assert!(contents[1]["parts"][0].get("functionCall").is_some());
    assert_eq!(sig(1, 0), None);
    // The current turn: the first call of each step gets the dummy; a parallel call does not.
    assert_eq!(contents[5]["role"], "model");
    assert_eq!(contents[5]["parts"][0]["text"], "Checking.");
    assert_eq!(sig(5, 0), None, "a text part needs none");
    assert_eq!(sig(5, 1), Some(json!("skip_thought_signature_validator")));
    assert_eq!(sig(5, 2), None);
    assert_eq!(sig(7, 0), Some(json!("skip_thought_signature_validator")));
    assert_eq!(contents.len(), 9);
}

/// The strict test server itself: it must refuse, as Gemini 3 does, a current-turn call without
/// a signature or with one it never issued, and let an earlier turn go unsigned.
#[tokio::test]
async fn the_strict_test_server_refuses_missing_and_unknown_signatures() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    mock.require_thought_signatures();
    let client = reqwest::Client::new();
    let call = |sig: Option<&str>| {
        let mut part = json!({"functionCall": {"name": "get_weather", "args": {}}});
        if let Some(s) = sig {
            part["thoughtSignature"] = json!(s);
        }
        part
    };
    let history = |sig: Option<&str>, then_user_text: bool| {
        let mut contents = vec![
            json!({"role": "user", "parts": [{"text": "weather?"}]}),
            json!({"role": "model", "parts": [call(sig)]}),
            json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "21C"}}}]}),
        ];
        if then_user_text {
            contents.push(json!({"role": "model", "parts": [{"text": "21C."}]}));
            contents.push(json!({"role": "user", "parts": [{"text": "thanks"}]}));
        }
        json!({ "contents": contents })
    };
    let cases = [
        (
            history(None, false),
            400,
            "in the `1.` content block is missing a `thought_signature`",
        ),
        (
            history(Some("made-up"), false),
            400,
            "Thought signature is not valid",
        ),
        (
            history(Some("skip_thought_signature_validator"), false),
            200,
            "",
        ),
        (
            history(Some("context_engineering_is_the_way_to_go"), false),
            200,
            "",
        ),
        (history(None, true), 200, ""),
    ];
    for (body, code, message) in cases {
        let resp = client
            .post(format!(
                "{}/models/gemini-3-flash-preview:generateContent",
                base_url(&srv)
            ))
            .header("x-goog-api-key", "k")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code, "{body}");
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        if code == 400 {
            assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(message),
                "{v}"
            );
        }
    }

    // Issued signatures only (the end-to-end test's server): a dummy no longer passes.
    mock.require_issued_signatures();
    let resp = client
        .post(format!(
            "{}/models/gemini-3-flash-preview:generateContent",
            base_url(&srv)
        ))
        .header("x-goog-api-key", "k")
        .header("content-type", "application/json")
        .body(history(Some("skip_thought_signature_validator"), false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

// ---- Embeddings ("Embeddings", https://ai.google.dev/api/embeddings): `batchEmbedContents`.

fn embeddings_call(body: Value, model: &str) -> switchyard_providers::EmbeddingsCall {
    switchyard_providers::EmbeddingsCall {
        request: Arc::new(serde_json::from_value(body).unwrap()),
        model: model.into(),
    }
}

#[tokio::test]
async fn embeddings_go_as_batch_embed_contents_and_come_back_as_an_openai_list() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    mock.require_key(KEY);
    let p = provider(&srv);

    // An array of strings, with dimensions.
    let c = p
        .embeddings(embeddings_call(
            json!({"model": "pub", "input": ["first text", "second"], "dimensions": 4, "user": "u-1",
                "encoding_format": "float"}),
            "gemini-embedding-001",
        ))
        .await
        .unwrap();
    let r = &mock.received()[0];
    assert_eq!(
        (r.model.as_str(), r.method.as_str()),
        ("gemini-embedding-001", "batchEmbedContents")
    );
    assert_eq!(
        r.body,
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "first text"}]}, "outputDimensionality": 4},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second"}]}, "outputDimensionality": 4}
        ]})
    );
    let v: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "gemini-embedding-001");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, (d, text)) in data.iter().zip(["first text", "second"]).enumerate() {
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        assert_eq!(
            d["embedding"],
            json!(switchyard_testkit::gemini::embedding_of(text, 4)),
            "Google's values, in order"
        );
    }
    assert!(v.get("usage").is_none(), "Google reports none");
    assert!(c.usage.is_none(), "left to the meter's estimate");
    assert_eq!(c.response_model.as_deref(), Some("gemini-embedding-001"));

    // One string, no dimensions: one request, Google's default length.
    let c = p
        .embeddings(embeddings_call(
            json!({"model": "pub", "input": "just one"}),
            "models/text-embedding-004",
        ))
        .await
        .unwrap();
    let r = &mock.received()[1];
    assert_eq!(r.model, "text-embedding-004");
    assert_eq!(
        r.body,
        json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "just one"}]}}]})
    );
    let v: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        v["data"][0]["embedding"].as_array().unwrap().len(),
        switchyard_testkit::gemini::DEFAULT_EMBEDDING_DIMENSIONS
    );
}

#[tokio::test]
async fn embeddings_gemini_cannot_take_are_refused_and_errors_map_as_for_chat() {
    let (mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let p = provider(&srv);
    let cases = [
        (json!({"model": "p", "input": [[1, 2, 3]]}), "input[0]"),
        (json!({"model": "p", "input": ["a", 7]}), "input[1]"),
        (json!({"model": "p", "input": []}), "input"),
        (
            json!({"model": "p", "input": "a", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": "p", "input": "a", "encoding_format": "base64"}),
            "encoding_format",
        ),
    ];
    for (body, names) in cases {
        let e = p
            .embeddings(embeddings_call(body, "gemini-embedding-001"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidRequest, "{names}");
        assert!(e.message.starts_with(names), "{names}: {}", e.message);
    }
    let e = p
        .embeddings(embeddings_call(
            json!({"model": "p", "input": "a"}),
            "bad/name",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
    assert_eq!(
        mock.requests.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing sent"
    );

    // Google's errors map as for chat: a 503 keeps its status, a refused key reads as 401.
    let e = p
        .embeddings(embeddings_call(
            json!({"model": "p", "input": "a"}),
            "err-503",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(503));
    assert!(e.message.contains("UNAVAILABLE"), "{}", e.message);
    mock.require_key("another-key");
    let e = p
        .embeddings(embeddings_call(
            json!({"model": "p", "input": "a"}),
            "gemini-embedding-001",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Status(401));
}

/// The test server's `batchEmbedContents`, spoken to directly: it refuses what Google documents
/// as wrong (no key, no requests, a request naming another model than the path's).
#[tokio::test]
async fn the_test_server_checks_batch_embed_contents_as_google_does() {
    let (_mock, srv) = MockGemini::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let url = format!(
        "{}/models/gemini-embedding-001:batchEmbedContents",
        base_url(&srv)
    );
    let one = |model: &str| json!({"requests": [{"model": model, "content": {"parts": [{"text": "hi"}]}}]});
    let cases = [
        (None, one("models/gemini-embedding-001"), 403),
        (Some("k"), json!({"requests": []}), 400),
        (Some("k"), one("models/text-embedding-004"), 400),
        (Some("k"), one("models/gemini-embedding-001"), 200),
    ];
    for (key, body, code) in cases {
        let mut rb = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            rb = rb.header("x-goog-api-key", k);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), code, "{body}");
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        if code == 200 {
            assert_eq!(v["embeddings"].as_array().unwrap().len(), 1);
        } else {
            assert_eq!(v["error"]["code"], code);
        }
    }
}

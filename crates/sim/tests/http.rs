//! The HTTP face on a real socket: plain and streamed answers in the OpenAI format, with usage,
//! prefix-cache hits reported as cached tokens, and a full queue refused with 429.

// Helpers outside `#[test]` functions are test code too; clippy.toml's test allowances do not
// reach them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use switchyard_api::{
    openai::{ChatChunk, ChatCompletion},
    sse::SseDecoder,
};
use switchyard_sim::{serve_listener, Profile, SimConfig};

/// Fast round figures so a test takes milliseconds: 1 M prefill tok/s, 1 ms decode steps,
/// 16-token blocks.
fn fast_profile() -> Profile {
    Profile {
        name: "fast".into(),
        prefill_tokens_per_s: 1e6,
        decode_step_base_ms: 1.0,
        decode_step_per_seq_ms: 0.0,
        decode_ns_per_context_token: 0.0,
        max_batch: 4,
        max_batched_tokens: 4096,
        kv_capacity_tokens: 100_000,
        block_tokens: 16,
        max_waiting: None,
        host_cache_tokens: 0,
        host_load_tokens_per_s: 0.0,
        source: "test".into(),
    }
}

async fn start(profile: Profile) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_listener(SimConfig::new(profile), listener));
    addr
}

async fn post(addr: SocketAddr, body: Value) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/v1/chat/completions")
        .header("host", "sim")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn chat(stream: bool, extra: Value) -> Value {
    let mut body = json!({
        "model": "any",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        "stream_options": {"include_usage": true},
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    } else {
        body.as_object_mut().unwrap().remove("stream_options");
    }
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn streams_valid_openai_chunks_with_usage() {
    let addr = start(fast_profile()).await;
    let (status, headers, body) = post(
        addr,
        chat(true, json!({"x_output_tokens": 5, "x_input_tokens": 40})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let mut dec = SseDecoder::new();
    dec.push(&body);
    let mut datas = Vec::new();
    while let Some(ev) = dec.next_event().unwrap() {
        datas.push(ev.data().to_string());
    }
    assert_eq!(datas.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<ChatChunk> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    let finish: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|ch| ch.finish_reason.clone())
        .collect();
    assert_eq!(finish, ["stop"]);
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (40, 5, 45)
    );
}

#[tokio::test]
async fn plain_answer_reports_cached_prefix_tokens() {
    let addr = start(fast_profile()).await;
    // 3 blocks of 16 tokens; the second request shares the first two block ids.
    let first = chat(
        false,
        json!({"x_input_tokens": 48, "x_output_tokens": 3, "x_hash_ids": [7, 8, 9]}),
    );
    let (status, _, body) = post(addr, first).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let c: ChatCompletion = serde_json::from_slice(&body).unwrap();
    assert_eq!(c.object, "chat.completion");
    assert_eq!(
        c.choices[0].message.content.as_deref(),
        Some("tok0 tok1 tok2 ")
    );
    let u = c.usage.unwrap();
    assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(0));

    let second = chat(
        false,
        json!({"x_input_tokens": 48, "x_output_tokens": 3, "x_hash_ids": [7, 8, 10], "max_tokens": 2}),
    );
    let (_, _, body) = post(addr, second).await;
    let c: ChatCompletion = serde_json::from_slice(&body).unwrap();
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("length"));
    let u = c.usage.unwrap();
    assert_eq!(u.completion_tokens, 2);
    assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(32));
}

#[tokio::test]
async fn full_queue_is_refused_with_429_and_retry_after() {
    let mut p = fast_profile();
    p.max_batch = 1;
    p.max_waiting = Some(0);
    // Slow decode so the first request is still running when the second arrives.
    p.decode_step_base_ms = 20.0;
    let addr = start(p).await;
    let long = tokio::spawn(post(addr, chat(false, json!({"x_output_tokens": 50}))));
    // Wait until the first request runs: the queue limit of 0 then refuses anything new.
    let mut refused = None;
    for _ in 0..200 {
        let (status, headers, body) = post(addr, chat(false, json!({"x_output_tokens": 1}))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((headers, body));
            break;
        }
    }
    let (headers, body) = refused.expect("a request while the only slot is busy is refused");
    assert_eq!(headers["retry-after"], "1");
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert_eq!(long.await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn bad_request_gets_an_openai_error() {
    let addr = start(fast_profile()).await;
    let (status, _, body) = post(addr, json!({"model": "m", "messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let (status, _, _) = post(addr, chat(false, json!({"x_hash_ids": "nope"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn repeated_prompt_text_hits_the_prefix_cache() {
    let addr = start(fast_profile()).await;
    // 16-token blocks of 4 bytes per token: 64-byte blocks; 1000 bytes = 15 full blocks.
    let long = "x".repeat(1000);
    let body = json!({
        "model": "any",
        "messages": [{"role": "user", "content": long}],
        "max_tokens": 2,
    });
    let (_, _, first) = post(addr, body.clone()).await;
    let first: ChatCompletion = serde_json::from_slice(&first).unwrap();
    let u = first.usage.unwrap();
    assert_eq!(
        u.prompt_tokens, 251,
        "1001 bytes with the newline, / 4, rounded up"
    );
    assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(0));
    let (_, _, second) = post(addr, body).await;
    let second: ChatCompletion = serde_json::from_slice(&second).unwrap();
    let cached = second
        .usage
        .unwrap()
        .prompt_tokens_details
        .unwrap()
        .cached_tokens;
    assert_eq!(cached, Some(15 * 16));
}

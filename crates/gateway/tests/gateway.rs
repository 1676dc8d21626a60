//! The gateway end to end in-process: real sockets, the OpenAI test server as upstream, the
//! SQLite ledger on disk. Covers fallback, retries, breakers, stream fall-back before the first
//! byte, error shapes, cancellation, draining on shutdown, and the ledger rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard_gateway::{Config, Running};
use switchyard_testkit::gemini::{self, MockGemini};
use switchyard_testkit::openai::{Answer, MockOpenAi, Reply};

// The binary's allocator, so the heap gauges on /metrics read this process.
#[global_allocator]
static ALLOCATOR: switchyard_gateway::memory::Jemalloc = switchyard_gateway::memory::Jemalloc;

struct Harness {
    gw: Running,
    base: String,
    ledger: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(toml_body: &str) -> Harness {
        Self::start_with_top("", toml_body).await
    }

    /// `top` holds top-level keys, which must come before the first table.
    async fn start_with_top(top: &str, toml_body: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.sqlite");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n{top}\n[ledger]\npath = {:?}\nflush_interval_ms = 20\n{toml_body}",
            ledger.display().to_string()
        );
        let cfg = Config::from_toml(&text).unwrap();
        cfg.validate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = switchyard_gateway::start_on(cfg, listener).await.unwrap();
        let base = format!("http://{}", gw.addr);
        Harness {
            gw,
            base,
            ledger,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Shuts down (draining the writer) and returns the ledger rows as JSON objects.
    async fn finish(self) -> Vec<Value> {
        self.gw.shutdown().await.unwrap();
        let conn = rusqlite::Connection::open(&self.ledger).unwrap();
        let mut stmt = conn
            .prepare("SELECT * FROM requests ORDER BY started_at_ms, id")
            .unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let rows = stmt
            .query_map([], |row| {
                let mut m = serde_json::Map::new();
                for (i, n) in names.iter().enumerate() {
                    let v: rusqlite::types::Value = row.get(i)?;
                    let j = match v {
                        rusqlite::types::Value::Null => Value::Null,
                        rusqlite::types::Value::Integer(i) => json!(i),
                        rusqlite::types::Value::Real(f) => json!(f),
                        rusqlite::types::Value::Text(t) => json!(t),
                        rusqlite::types::Value::Blob(_) => Value::Null,
                    };
                    m.insert(n.clone(), j);
                }
                Ok(Value::Object(m))
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream})
}

fn provider(name: &str, url: &str) -> String {
    format!("[providers.{name}]\nkind = \"openai\"\nbase_url = \"{url}\"\n")
}

/// One provider `a` at `url` and one route `chat` to its model `m`.
fn one_route(url: &str) -> String {
    format!(
        "{}[[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        provider("a", url)
    )
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn plain_chat_is_served_metered_and_priced() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 5,
        ..Default::default()
    }))
    .await
    .unwrap();
    let h = Harness::start(&format!(
        "{}[[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m1\" }}]\n\
         [targets.\"a/m1\"]\nprice = {{ input_per_mtok = 1000000.0, output_per_mtok = 2000000.0, source = \"test\", as_of = \"2026-11-22\" }}\n",
        provider("a", &up.base_url())
    ))
    .await;
    let resp = h.post("/v1/chat/completions", chat("chat", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-target"], "a/m1");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    // prompt: 2 words = 2 tokens at $1/token, 5 output tokens at $2/token.
    let cost: f64 = resp.headers()["x-switchyard-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - 12.0).abs() < 1e-9, "{cost}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4"
    );
    let rows = h.finish().await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["route"], "chat");
    assert_eq!(r["target"], "a/m1");
    assert_eq!(r["status"], 200);
    assert_eq!(r["input_tokens"], 2);
    assert_eq!(r["output_tokens"], 5);
    assert_eq!(r["attempts"], 1);
    assert!((r["cost_usd"].as_f64().unwrap() - 12.0).abs() < 1e-9);
}

#[tokio::test]
async fn stream_is_forwarded_and_usage_chunk_only_when_asked() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 3,
        ..Default::default()
    }))
    .await
    .unwrap();
    let h = Harness::start(&format!(
        "{}[[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m1\" }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    let data = sse_data(h.post("/v1/chat/completions", chat("chat", true)).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage chunk unasked"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");

    let mut asked = chat("chat", true);
    asked["stream_options"] = json!({"include_usage": true});
    let data = sse_data(h.post("/v1/chat/completions", asked).await).await;
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let rows = h.finish().await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(
            r["output_tokens"], 3,
            "streams are metered from the upstream's usage"
        );
        assert_eq!(r["tokens_estimated"], 0);
        assert!(r["ttft_ms"].as_f64().is_some());
    }
}

#[tokio::test]
async fn falls_back_on_429_5xx_connect_errors_and_timeouts() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let h = Harness::start(&format!(
        "{}{}[defaults]\nretry = {{ retries = 0 }}\n\
         [[routes]]\nname = \"r429\"\ntargets = [{{ provider = \"a\", model = \"err-429\" }}, {{ provider = \"a\", model = \"ok\" }}]\n\
         [[routes]]\nname = \"r500\"\ntargets = [{{ provider = \"a\", model = \"err-500\" }}, {{ provider = \"a\", model = \"ok\" }}]\n\
         [[routes]]\nname = \"rdead\"\ntargets = [{{ provider = \"dead\", model = \"x\" }}, {{ provider = \"a\", model = \"ok\" }}]\n\
         [[routes]]\nname = \"rslow\"\ntargets = [{{ provider = \"a\", model = \"slow-3000\", timeouts = {{ first_token_ms = 100, total_ms = 1000 }} }}, {{ provider = \"a\", model = \"ok\" }}]\n",
        provider("a", &up.base_url()),
        provider("dead", &dead)
    ))
    .await;
    for (route, stream) in [
        ("r429", false),
        ("r500", false),
        ("rdead", false),
        ("rslow", false),
        ("rslow", true),
        ("r500", true),
    ] {
        let resp = h.post("/v1/chat/completions", chat(route, stream)).await;
        assert_eq!(resp.status(), 200, "{route}");
        assert_eq!(resp.headers()["x-switchyard-target"], "a/ok", "{route}");
        assert_eq!(resp.headers()["x-switchyard-attempts"], "2", "{route}");
        let _ = resp.bytes().await;
    }
    let rows = h.finish().await;
    assert_eq!(rows.len(), 6);
    assert!(rows
        .iter()
        .all(|r| r["fallbacks"] == 1 && r["attempts"] == 2 && r["status"] == 200));
}

#[tokio::test]
async fn a_stream_falls_back_only_before_its_first_token() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start(&format!(
        "{}[defaults]\nretry = {{ retries = 0 }}\n\
         [[routes]]\nname = \"stall-early\"\ntargets = [{{ provider = \"a\", model = \"stall-0\", timeouts = {{ first_token_ms = 200, total_ms = 5000 }} }}, {{ provider = \"a\", model = \"ok\" }}]\n\
         [[routes]]\nname = \"cut-late\"\ntargets = [{{ provider = \"a\", model = \"cut-2\" }}, {{ provider = \"a\", model = \"ok\" }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    let resp = h
        .post("/v1/chat/completions", chat("stall-early", true))
        .await;
    assert_eq!(resp.headers()["x-switchyard-target"], "a/ok");
    let data = sse_data(resp).await;
    assert_eq!(data.last().unwrap(), "[DONE]");

    // Cut after two tokens reached the client: no fallback, an error event ends the stream.
    let resp = h.post("/v1/chat/completions", chat("cut-late", true)).await;
    assert_eq!(resp.headers()["x-switchyard-target"], "a/cut-2");
    let data = sse_data(resp).await;
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{data:?}");
    let rows = h.finish().await;
    let cut = rows.iter().find(|r| r["route"] == "cut-late").unwrap();
    assert_eq!(cut["attempts"], 1);
    assert!(!cut["error_type"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn retries_honour_retry_after_then_succeed() {
    let (mock, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    mock.push(Reply::Error {
        status: 503,
        message: "overloaded".into(),
        code: None,
        retry_after: Some("1".into()),
    });
    let h = Harness::start(&format!(
        "{}[[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m\", retry = {{ retries = 1, backoff_base_ms = 10, backoff_max_ms = 2000 }} }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    let t = std::time::Instant::now();
    let resp = h.post("/v1/chat/completions", chat("chat", false)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After"
    );
    assert_eq!(resp.headers()["x-switchyard-attempts"], "2");
    h.finish().await;
}

#[tokio::test]
async fn breaker_opens_and_skips_a_failing_target() {
    let (mock, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start(&format!(
        "{}[defaults]\nretry = {{ retries = 0 }}\nbreaker = {{ failures = 2, open_ms = 60000 }}\n\
         [[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"err-500\" }}, {{ provider = \"a\", model = \"ok\" }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(
            h.post("/v1/chat/completions", chat("chat", false))
                .await
                .status(),
            200
        );
    }
    let to_failing = mock
        .received()
        .iter()
        .filter(|b| b["model"] == "err-500")
        .count();
    assert_eq!(
        to_failing, 2,
        "after two failures the breaker stops sending to it"
    );
    let rows = h.finish().await;
    assert_eq!(rows.last().unwrap()["attempts"], 1);
}

#[tokio::test]
async fn errors_come_back_in_openai_shape() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start_with_top(
        "max_body_bytes = 2048",
        &format!(
            "{}[defaults]\nretry = {{ retries = 0 }}\n\
         [[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n\
         [[routes]]\nname = \"limited\"\ntargets = [{{ provider = \"a\", model = \"err-429\" }}]\n\
         [[routes]]\nname = \"broken\"\ntargets = [{{ provider = \"a\", model = \"err-502\" }}]\n",
            provider("a", &up.base_url())
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", h.base);
    let check = |resp: reqwest::Response, status: u16| async move {
        assert_eq!(resp.status().as_u16(), status);
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        (v, retry)
    };
    let (v, _) = check(
        client
            .post(&url)
            .body("{not json")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("parse"));
    let (v, _) = check(
        h.post("/v1/chat/completions", json!({"model": "chat"}))
            .await,
        400,
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    let (v, _) = check(
        h.post("/v1/chat/completions", chat("nope", false)).await,
        404,
    )
    .await;
    assert_eq!(v["error"]["code"], "model_not_found");
    let big = json!({"model": "chat", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    check(h.post("/v1/chat/completions", big).await, 413).await;
    let (_, retry) = check(
        h.post("/v1/chat/completions", chat("limited", false)).await,
        429,
    )
    .await;
    assert_eq!(retry.as_deref(), Some("1"));
    check(
        h.post("/v1/chat/completions", chat("broken", false)).await,
        502,
    )
    .await;
    let mut bad_t = chat("chat", false);
    bad_t["temperature"] = json!(7);
    let (v, _) = check(h.post("/v1/chat/completions", bad_t).await, 400).await;
    assert_eq!(v["error"]["param"], "temperature");
    check(
        client
            .get(format!("{}/v1/nothing", h.base))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    check(client.get(&url).send().await.unwrap(), 405).await;
    // The served service sends the chat route straight to its handler (`GatewayService`):
    // it matches the path, so a query string does not push the request off it.
    let served = client
        .post(format!("{url}?trace=1"))
        .json(&chat("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let v: Value = served.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    let rows = h.finish().await;
    assert!(
        rows.iter().any(|r| r["status"] == 400),
        "refused requests are in the ledger too"
    );
    assert!(rows.iter().any(|r| r["status"] == 429));
}

/// Sends a chat request with a chunked body, one chunk per write with a pause between, so the
/// gateway receives it as several frames. Returns the status line and the body.
async fn post_in_chunks(addr: std::net::SocketAddr, chunks: &[&[u8]]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for c in chunks {
        tcp.write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await
            .unwrap();
        tcp.write_all(c).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[tokio::test]
async fn a_body_in_several_frames_is_read_whole_and_its_limit_holds() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start_with_top("max_body_bytes = 2048", &one_route(&up.base_url())).await;
    let body = chat("chat", false).to_string();
    let (a, b) = body.as_bytes().split_at(body.len() / 3);
    let (b, c) = b.split_at(b.len() / 2);
    let (status, answer) = post_in_chunks(h.gw.addr, &[a, b, c]).await;
    assert!(status.contains(" 200 "), "{status} {answer}");
    assert!(answer.contains("chat.completion"), "{answer}");
    // No content-length to check up front: the limit is counted as the frames arrive.
    let big = json!({"model": "chat", "messages": [{"role": "user", "content": "x".repeat(3000)}]})
        .to_string();
    let (a, b) = big.as_bytes().split_at(1500);
    let (status, answer) = post_in_chunks(h.gw.addr, &[a, b]).await;
    assert!(status.contains(" 413 "), "{status} {answer}");
    assert!(answer.contains("larger than the limit"), "{answer}");
    h.finish().await;
}

#[tokio::test]
async fn virtual_keys_authenticate_and_attribute() {
    std::env::set_var("SWITCHYARD_TEST_KEY_A", "sk-team-a");
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start(&format!(
        "[[keys]]\nname = \"a-dev\"\nkey_env = \"SWITCHYARD_TEST_KEY_A\"\nteam = \"team-a\"\n{}\
         [[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    let url = format!("{}/v1/chat/completions", h.base);
    let c = reqwest::Client::new();
    let r = c
        .post(&url)
        .json(&chat("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&chat("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = c
        .post(&url)
        .bearer_auth("sk-team-a")
        .header("x-switchyard-task", "summarise-tickets")
        .json(&chat("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = h.finish().await;
    let ok = rows.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(ok["key"], "a-dev");
    assert_eq!(ok["team"], "team-a");
    assert_eq!(ok["task"], "summarise-tickets");
}

#[tokio::test]
async fn a_client_going_away_cancels_the_upstream_stream() {
    let (mock, up) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 200,
        inter_token_delay: Duration::from_millis(20),
        ..Default::default()
    }))
    .await
    .unwrap();
    let h = Harness::start(&one_route(&up.base_url())).await;
    let resp = h.post("/v1/chat/completions", chat("chat", true)).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body);
    let mut cancelled = 0;
    for _ in 0..100 {
        cancelled = mock.cancelled.load(std::sync::atomic::Ordering::Relaxed);
        if cancelled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cancelled, 1,
        "the upstream stream was abandoned, not read to its end"
    );
    let rows = h.finish().await;
    assert_eq!(rows[0]["status"], 499);
    assert_eq!(rows[0]["error_type"], "client_closed");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_loses_no_record() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 4,
        first_token_delay: Duration::from_millis(300),
        ..Default::default()
    }))
    .await
    .unwrap();
    let h = Harness::start(&one_route(&up.base_url())).await;
    let mut inflight = Vec::new();
    for i in 0..20 {
        let url = format!("{}/v1/chat/completions", h.base);
        inflight.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&chat("chat", i % 2 == 0))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            (status, body)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rows = h.finish().await;
    for t in inflight {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("tok3"), "{body}");
    }
    assert_eq!(rows.len(), 20, "every accepted request is in the ledger");
}

/// Draining closes a client's idle keep-alive connection (after the request it already had
/// answered), and a connection that arrives after the drain is refused. After the grace period
/// the gateway stops waiting but its connection tasks live on in this test's runtime, so the
/// end of file below can only come from the drain closing the connection.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start(&one_route(&up.base_url())).await;
    let addr = h.gw.addr;
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    let rows = h.finish().await;
    assert!(rows.is_empty(), "a health check is not a metered request");
    let eof = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf))
        .await
        .expect("the idle keep-alive connection was left open after draining");
    assert!(
        matches!(eof, Ok(0) | Err(_)),
        "expected end of file, got {eof:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a drained gateway still accepts connections"
    );
}

#[tokio::test]
async fn models_metrics_and_health() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start(&format!(
        "{}[[routes]]\nname = \"chat\"\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n\
         [[routes]]\nname = \"embed\"\ntargets = [{{ provider = \"a\", model = \"e\" }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    let c = reqwest::Client::new();
    let models: Value = c
        .get(format!("{}/v1/models", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "embed"]);
    assert_eq!(
        c.get(format!("{}/healthz", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/readyz", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        h.post("/v1/chat/completions", chat("chat", false))
            .await
            .status(),
        200
    );
    let emb = h
        .post(
            "/v1/embeddings",
            json!({"model": "embed", "input": "some text"}),
        )
        .await;
    assert_eq!(emb.status(), 200);
    // Metrics are updated by the writer side; give it a flush interval.
    let mut text = String::new();
    for _ in 0..50 {
        text = c
            .get(format!("{}/metrics", h.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("gen_ai_operation_name=\"embeddings\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for name in [
        "gen_ai_client_token_usage",
        "gen_ai_server_request_duration_seconds",
        "switchyard_ledger_records_dropped_total",
        "switchyard_ledger_queue_depth",
        "switchyard_gateway_overhead_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        text.contains("gen_ai_operation_name=\"embeddings\""),
        "{text}"
    );
    // The allocator's live bytes: this test process holds at least the gateway's own state.
    let heap_in_use: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_heap_bytes{state=\"in_use\"} "))
        .expect("switchyard_heap_bytes in_use")
        .parse()
        .unwrap();
    assert!(heap_in_use > 100_000.0, "{heap_in_use}");
    let dropped = text
        .lines()
        .find(|l| l.starts_with("switchyard_ledger_records_dropped_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap();
    assert_eq!(dropped, "0");
    let rows = h.finish().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["operation"], "embeddings");
}

#[tokio::test]
async fn a_stream_that_stalls_after_starting_ends_with_an_error_event() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let idle = "timeouts = { stream_idle_ms = 300, first_token_ms = 5000, total_ms = 20000 }";
    let h = Harness::start(&format!(
        "{}[[routes]]\nname = \"stalls\"\ntargets = [{{ provider = \"a\", model = \"stall-2\", {idle} }}]\n\
         [[routes]]\nname = \"paced\"\ntargets = [{{ provider = \"a\", model = \"paced-100\", {idle} }}]\n",
        provider("a", &up.base_url())
    ))
    .await;
    let data = sse_data(h.post("/v1/chat/completions", chat("stalls", true)).await).await;
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stalled"),
        "{last}"
    );
    // Events 100 ms apart never trip a 300 ms idle limit, however long the stream runs.
    let data = sse_data(h.post("/v1/chat/completions", chat("paced", true)).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(
        data.iter().filter(|d| d.contains("tok")).count(),
        10,
        "{data:#?}"
    );
    let rows = h.finish().await;
    assert_eq!(rows[0]["error_type"], "timeout");
    assert!(rows[1]["error_type"].is_null());
}

#[tokio::test]
async fn past_max_in_flight_requests_are_refused_with_503_and_retry_after() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer {
        tokens: 10,
        inter_token_delay: Duration::from_millis(30),
        ..Default::default()
    }))
    .await
    .unwrap();
    let h = Harness::start_with_top("max_in_flight = 1", &one_route(&up.base_url())).await;
    // A stream holds the one place until its last chunk, not just until its headers.
    let stream = h.post("/v1/chat/completions", chat("chat", true)).await;
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    assert!(!body.next().await.unwrap().unwrap().is_empty());

    let refused = h.post("/v1/chat/completions", chat("chat", false)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let e: Value = refused.json().await.unwrap();
    assert_eq!(e["error"]["code"], "overloaded", "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_in_flight"));
    // The Anthropic face refuses in its own shape.
    let refused = h
        .post(
            "/v1/messages",
            json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(refused.status(), 503);
    let e: Value = refused.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "overloaded_error", "{e}");

    let metrics = reqwest::get(format!("{}/metrics", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_requests_in_flight 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_requests_refused_overload_total 2\n"),
        "{metrics}"
    );

    // Once the stream has ended its place is free again.
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
    }
    drop(body);
    let mut status = 0;
    for _ in 0..50 {
        status = h
            .post("/v1/chat/completions", chat("chat", false))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200);
    let rows = h.finish().await;
    assert_eq!(
        rows.len(),
        2,
        "refusals are counted, not written to the ledger"
    );
}

/// Sends raw bytes and reads until the gateway closes the connection.
async fn raw_exchange(addr: std::net::SocketAddr, wire: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(wire).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway kept the connection open")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_the_connection_refuses_get_errors_in_their_api_shape() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let h = Harness::start(&format!(
        "[connections]\nheader_timeout_ms = 300\n{}",
        one_route(&up.base_url())
    ))
    .await;
    // Both framings at once (RFC 9112 §6.3): refused before any handler runs.
    let smuggle = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        )
    };
    let openai = raw_exchange(h.gw.addr, smuggle("/v1/chat/completions").as_bytes()).await;
    assert!(openai.starts_with("HTTP/1.1 400 "), "{openai}");
    let (_, body) = openai.split_once("\r\n\r\n").unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Content-Length"));
    let anthropic = raw_exchange(h.gw.addr, smuggle("/v1/messages").as_bytes()).await;
    let (_, body) = anthropic.split_once("\r\n\r\n").unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    // A head that never completes: 408 after the configured timeout, then the close.
    let slow = raw_exchange(h.gw.addr, b"POST /v1/chat/completions HTTP/1.1\r\nhos").await;
    assert!(slow.starts_with("HTTP/1.1 408 "), "{slow}");
    assert!(slow.to_ascii_lowercase().contains("connection: close"));
    let rows = h.finish().await;
    assert!(
        rows.is_empty(),
        "nothing reached the request phases: {rows:?}"
    );
}

// ---- A route to a Gemini target (crates/testkit/src/gemini.rs as upstream): clients get OpenAI
// shapes; the ledger gets Google's exact counts (cached and thinking tokens) and the catalog's
// `gemini` price.

const GEMINI_KEY_VAR: &str = "SWITCHYARD_TEST_GATEWAY_GEMINI_KEY";

/// Provider `g` of kind `gemini` at the test server `up` (key from `GEMINI_KEY_VAR`) and one
/// route `route` with `targets` (TOML inline tables, comma-separated).
fn gemini_route(up: &switchyard_testkit::Running, route: &str, targets: &str) -> String {
    format!(
        "[providers.g]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key_env = \"{GEMINI_KEY_VAR}\"\n\
         [[routes]]\nname = \"{route}\"\ntargets = [{targets}]\n",
        gemini::base_url(up)
    )
}

#[tokio::test]
async fn a_gemini_route_answers_in_openai_shapes_and_meters_googles_counts() {
    std::env::set_var(GEMINI_KEY_VAR, "AIzaGatewayTestKey");
    let (mock, up) = MockGemini::start(gemini::Reply::Answer(gemini::Answer {
        tokens: 5,
        thought: Some("A greeting is due.".into()),
        thoughts_tokens: 40,
        cached_tokens: 1000,
        ..Default::default()
    }))
    .await
    .unwrap();
    mock.require_key("AIzaGatewayTestKey");
    let h = Harness::start(&gemini_route(
        &up,
        "chat",
        r#"{ provider = "g", model = "gemini-2.5-flash" }"#,
    ))
    .await;

    // Plain.
    let resp = h.post("/v1/chat/completions", chat("chat", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-target"], "g/gemini-2.5-flash");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"]["prompt_tokens"], 1002,
        "2 words + 1000 cached"
    );
    assert_eq!(body["usage"]["completion_tokens"], 45, "5 + 40 thinking");
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        1000
    );
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        40
    );

    // Streamed, without and with a usage chunk.
    let data = sse_data(h.post("/v1/chat/completions", chat("chat", true)).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage chunk unasked"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let mut asked = chat("chat", true);
    asked["stream_options"] = json!({"include_usage": true});
    let data = sse_data(h.post("/v1/chat/completions", asked).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        (
            &usage["usage"]["prompt_tokens"],
            &usage["usage"]["completion_tokens"],
            &usage["usage"]["total_tokens"]
        ),
        (&json!(1002), &json!(45), &json!(1047))
    );

    let r = &mock.received()[1];
    assert_eq!(
        (r.method.as_str(), r.query.as_deref()),
        ("streamGenerateContent", Some("alt=sse"))
    );
    let rows = h.finish().await;
    assert_eq!(rows.len(), 3);
    // Catalog price for gemini-2.5-flash: $0.30 input, $0.03 cached input, $2.50 output per Mtok.
    let expected_cost = (2.0 * 0.30 + 1000.0 * 0.03 + 45.0 * 2.50) / 1e6;
    for (r, stream) in rows.iter().zip([0, 1, 1]) {
        assert_eq!(r["status"], 200);
        assert_eq!(r["stream"], stream);
        assert_eq!(r["provider"], "g");
        assert_eq!(r["provider_kind"], "gemini");
        assert_eq!(r["target"], "g/gemini-2.5-flash");
        assert_eq!(r["response_model"], "gemini-2.5-flash");
        assert_eq!(
            (
                &r["input_tokens"],
                &r["output_tokens"],
                &r["cached_input_tokens"],
                &r["reasoning_tokens"],
                &r["cache_creation_input_tokens"],
                &r["tokens_estimated"]
            ),
            (
                &json!(1002),
                &json!(45),
                &json!(1000),
                &json!(40),
                &json!(0),
                &json!(0)
            ),
            "{r}"
        );
        let cost = r["cost_usd"]
            .as_f64()
            .expect("priced from the catalog's gemini entry");
        assert!(
            (cost - expected_cost).abs() < 1e-12,
            "{cost} vs {expected_cost}"
        );
    }
}

#[tokio::test]
async fn a_gemini_rate_limit_with_retry_info_moves_on_to_the_next_target() {
    std::env::set_var(GEMINI_KEY_VAR, "AIzaGatewayTestKey");
    let (mock, up) = MockGemini::start(gemini::Reply::Answer(gemini::Answer {
        tokens: 2,
        ..Default::default()
    }))
    .await
    .unwrap();
    // `err-429` makes the test server answer 429 RESOURCE_EXHAUSTED with a RetryInfo of 1 s and
    // no Retry-After header. A delay above backoff_max_ms sends the request on to the next
    // target at once; were the delay not read, the same target would be retried first.
    let h = Harness::start(&gemini_route(&up, "chat", r#"{ provider = "g", model = "err-429", retry = { retries = 1, backoff_max_ms = 500 } }, { provider = "g", model = "gemini-2.5-flash" }"#)).await;
    let resp = h.post("/v1/chat/completions", chat("chat", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-target"], "g/gemini-2.5-flash");
    let models: Vec<String> = mock.received().iter().map(|r| r.model.clone()).collect();
    assert_eq!(models, ["err-429", "gemini-2.5-flash"]);
    let rows = h.finish().await;
    assert_eq!(rows[0]["fallbacks"], 1);
    assert_eq!(rows[0]["output_tokens"], 2);
}

/// Gemini 3 refuses a tool loop whose function calls come back without their thought signatures
/// (https://ai.google.dev/gemini-api/docs/thought-signatures). Through the gateway, a client that
/// echoes the assistant messages as it got them (Google's `extra_content` included, whole or
/// gathered from stream deltas) carries a two-step tool loop through a server as strict.
#[tokio::test]
async fn a_gemini_tool_loop_keeps_its_thought_signatures_through_the_gateway() {
    const SIG_A: &str = "CiQBjz1rX+Yz/9kQ2wStepOne==";
    const SIG_B: &str = "CiQBjz1rX+Yz/9kQ2wStepTwo==";
    std::env::set_var(GEMINI_KEY_VAR, "AIzaGatewayTestKey");
    let (mock, up) = MockGemini::start(gemini::Reply::Answer(gemini::Answer {
        text: Some("Delayed; taxi booked for 10 AM.".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    mock.require_thought_signatures();
    mock.push(gemini::Reply::FunctionCall {
        text: None,
        name: "check_flight".into(),
        args: json!({"flight": "AA100"}),
    });
    mock.push(gemini::Reply::FunctionCall {
        text: None,
        name: "book_taxi".into(),
        args: json!({"time": "10 AM"}),
    });
    let h = Harness::start(&gemini_route(
        &up,
        "chat",
        r#"{ provider = "g", model = "gemini-3-flash-preview" }"#,
    ))
    .await;
    let tools = json!([
        {"type": "function", "function": {"name": "check_flight", "parameters": {"type": "object",
            "properties": {"flight": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "book_taxi", "parameters": {"type": "object",
            "properties": {"time": {"type": "string"}}}}}
    ]);
    let mut messages =
        vec![json!({"role": "user", "content": "Check AA100 and book a taxi if delayed."})];
    let request = |messages: &[Value], stream: bool| json!({"model": "chat", "messages": messages, "tools": tools, "stream": stream});

    // Step 1, a whole answer: the call and its signature; echoed back as returned.
    mock.sign_calls(Some(SIG_A));
    let resp = h
        .post("/v1/chat/completions", request(&messages, false))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let assistant = body["choices"][0]["message"].clone();
    let call = &assistant["tool_calls"][0];
    assert_eq!(
        call["extra_content"],
        json!({"google": {"thought_signature": SIG_A}})
    );
    let id = call["id"].clone();
    messages.push(assistant);
    messages
        .push(json!({"role": "tool", "tool_call_id": id, "content": "{\"status\": \"delayed\"}"}));

    // Step 2, streamed: the client gathers the call from its delta, extra_content included.
    mock.sign_calls(Some(SIG_B));
    let data = sse_data(
        h.post("/v1/chat/completions", request(&messages, true))
            .await,
    )
    .await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let deltas: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(deltas.len(), 1, "Gemini sends a call whole");
    let d = &deltas[0];
    assert_eq!(
        d["extra_content"],
        json!({"google": {"thought_signature": SIG_B}})
    );
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": d["id"], "type": d["type"], "function": d["function"], "extra_content": d["extra_content"]}]}));
    messages
        .push(json!({"role": "tool", "tool_call_id": d["id"], "content": "{\"booked\": true}"}));

    // Step 3: the strict server takes the history and answers.
    let resp = h
        .post("/v1/chat/completions", request(&messages, false))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Delayed; taxi booked for 10 AM."
    );
    let sent = mock.bodies().last().unwrap().clone();
    let contents = sent["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 5);
    assert_eq!(contents[1]["parts"][0]["thoughtSignature"], SIG_A);
    assert_eq!(
        contents[1]["parts"][0]["functionCall"]["name"],
        "check_flight"
    );
    assert_eq!(contents[3]["parts"][0]["thoughtSignature"], SIG_B);
    assert_eq!(contents[3]["parts"][0]["functionCall"]["name"], "book_taxi");
    let rows = h.finish().await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == 200), "{rows:?}");
}

/// `/v1/embeddings` to a Gemini target: Google's `batchEmbedContents` answer comes back as
/// OpenAI's list; Google reports no usage, so the ledger holds the meter's count of the input.
#[tokio::test]
async fn gemini_embeddings_come_back_as_an_openai_list_and_are_metered_by_estimate() {
    std::env::set_var(GEMINI_KEY_VAR, "AIzaGatewayTestKey");
    let (mock, up) = MockGemini::start(gemini::Reply::Answer(gemini::Answer::default()))
        .await
        .unwrap();
    mock.require_key("AIzaGatewayTestKey");
    let h = Harness::start(&gemini_route(
        &up,
        "emb",
        r#"{ provider = "g", model = "gemini-embedding-001" }"#,
    ))
    .await;
    let resp = h
        .post(
            "/v1/embeddings",
            json!({"model": "emb", "input": ["hello there", "general kenobi"], "dimensions": 3}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-switchyard-target"],
        "g/gemini-embedding-001"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, (d, text)) in data
        .iter()
        .zip(["hello there", "general kenobi"])
        .enumerate()
    {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"], json!(gemini::embedding_of(text, 3)));
    }
    let r = &mock.received()[0];
    assert_eq!(r.method, "batchEmbedContents");
    assert_eq!(r.body["requests"][1]["outputDimensionality"], 3);
    let rows = h.finish().await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["status"], 200);
    assert_eq!(r["provider_kind"], "gemini");
    assert_eq!(r["tokens_estimated"], 1, "{r}");
    assert!(r["input_tokens"].as_i64().unwrap() > 0, "{r}");
    assert_eq!(r["output_tokens"], 0, "{r}");
}

//! The server against a raw TCP client: every answer is read off the wire as bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{combinators::UnsyncBoxBody, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use super::*;

type TestBody = UnsyncBoxBody<Bytes, String>;

/// What the test handler shares with the test.
#[derive(Default)]
struct Shared {
    /// Frames for `/stream` answers, handed over per connection order.
    streams: Mutex<Vec<mpsc::Receiver<Result<Bytes, String>>>>,
    /// Released by the test to let `/gate` answer.
    gate: Notify,
    /// Set when a `/hang` handler's future is dropped.
    hang_dropped: AtomicBool,
    /// How many requests reached the handler.
    handled: AtomicUsize,
}

struct DropFlag(Arc<Shared>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.hang_dropped.store(true, Ordering::SeqCst);
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

async fn handle(shared: Arc<Shared>, req: Request<Full<Bytes>>) -> Response<TestBody> {
    shared.handled.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    match parts.uri.path() {
        "/stream" => {
            let rx = shared.streams.lock().unwrap().remove(0);
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|item| (item.map(http_body::Frame::data), rx))
            });
            Response::new(StreamBody::new(frames).boxed_unsync())
        }
        "/gate" => {
            shared.gate.notified().await;
            full(StatusCode::OK, "opened")
        }
        "/hang" => {
            let _flag = DropFlag(shared.clone());
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/nothing" => full(StatusCode::NO_CONTENT, ""),
        "/sized" => {
            // As axum answers HEAD: the GET answer's length in the header, no body.
            let mut r = full(
                StatusCode::OK,
                if parts.method == Method::HEAD {
                    ""
                } else {
                    "12345"
                },
            );
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("5"));
            r
        }
        _ => {
            let text = format!(
                "{} {} {:?} len={} body={}",
                parts.method,
                parts.uri,
                parts.version,
                body.len(),
                String::from_utf8_lossy(&body)
            );
            let mut r = full(StatusCode::OK, text);
            r.headers_mut().insert(
                "x-seen-host",
                HeaderValue::from(parts.headers.get_all("host").iter().count()),
            );
            r
        }
    }
}

fn json_error(path: Option<&str>, status: StatusCode, message: &str) -> (&'static str, Bytes) {
    let body = format!(
        "{{\"path\":\"{}\",\"status\":{},\"message\":\"{message}\"}}",
        path.unwrap_or("-"),
        status.as_u16()
    );
    ("application/json", Bytes::from(body))
}

struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    drain: watch::Sender<bool>,
}

async fn start(config: ServerConfig) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared::default());
    let (drain, drain_rx) = watch::channel(false);
    let config = Arc::new(ServerConfig {
        error_body: json_error,
        ..config
    });
    let s = shared.clone();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            let (config, s, drain_rx) = (config.clone(), s.clone(), drain_rx.clone());
            tokio::spawn(async move {
                let _ = serve_connection(io, &config, |req| handle(s.clone(), req), drain_rx).await;
            });
        }
    });
    Server {
        addr,
        shared,
        drain,
    }
}

async fn default_server() -> Server {
    start(ServerConfig::default()).await
}

/// An answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with its read buffer.
struct Client {
    io: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            io: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    async fn more(&mut self) -> usize {
        let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_buf(&mut self.buf))
            .await
            .expect("the server said nothing for 10 s")
            .unwrap_or(0);
        n
    }

    /// Reads one answer's head; `method_head`: it answers a HEAD request (no body follows).
    async fn answer_for(&mut self, method_head: bool) -> Answer {
        let (status, headers) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).unwrap() {
                let status = resp.code.unwrap();
                let headers: HashMap<String, String> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                assert_eq!(
                    headers.len(),
                    resp.headers.len(),
                    "a header field came twice: {:?}",
                    resp.headers
                );
                let _ = self.buf.split_to(len);
                break (status, headers);
            }
            assert!(self.more().await > 0, "closed before an answer's head");
        };
        let mut decoder = if method_head || status == 204 || status == 304 || status < 200 {
            Decoder::Length(0)
        } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            Decoder::Chunked(Chunk::Size)
        } else if let Some(n) = headers.get("content-length") {
            Decoder::Length(n.parse().unwrap())
        } else {
            Decoder::UntilClose
        };
        let mut body = Vec::new();
        loop {
            match decoder.step(&mut self.buf).unwrap() {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Done => break,
                Step::NeedMore => {
                    if self.more().await == 0 {
                        assert_eq!(decoder, Decoder::UntilClose, "the body was cut off");
                        break;
                    }
                }
            }
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn answer(&mut self) -> Answer {
        self.answer_for(false).await
    }

    /// Sends `wire` and reads one answer.
    async fn ask(&mut self, wire: &[u8]) -> Answer {
        self.send(wire).await;
        self.answer().await
    }

    /// Whether the server closed the connection (nothing more arrives but the end).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.more().await == 0 && self.buf.is_empty()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn keeps_the_connection_and_answers_pipelined_requests_in_order() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    let both = format!("{}{}", post("/one", "first"), post("/two", "second"));
    let a = c.ask(both.as_bytes()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "POST /one HTTP/1.1 len=5 body=first");
    assert!(a.header("connection").is_none());
    assert!(a.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(
        c.answer().await.text(),
        "POST /two HTTP/1.1 len=6 body=second"
    );
    // Still open for a third.
    let a = c.ask(get("/three?x=1").as_bytes()).await;
    assert_eq!(a.text(), "GET /three?x=1 HTTP/1.1 len=0 body=");
    assert_eq!(
        a.header("content-length"),
        Some(a.body.len().to_string().as_str())
    );
    assert_eq!(server.shared.handled.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_in_pieces_is_read_whole() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    let wire = post("/pieces", "{\"model\":\"m\"}");
    for piece in wire.as_bytes().chunks(7) {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        c.answer().await.text(),
        "POST /pieces HTTP/1.1 len=13 body={\"model\":\"m\"}"
    );
}

#[tokio::test]
async fn chunked_request_bodies_are_decoded() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a = c.ask(b"7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n").await;
    assert_eq!(a.text(), "POST /c HTTP/1.1 len=12 body=hello, world");
    // The connection goes on after a chunked body.
    c.send(get("/after").as_bytes()).await;
    assert_eq!(c.answer().await.status, 200);
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_read() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let interim = c.answer().await;
    assert_eq!(interim.status, 100);
    c.send(b"body").await;
    assert_eq!(c.answer().await.text(), "POST /e HTTP/1.1 len=4 body=body");
    // With the body already sent, no interim answer.
    c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    assert_eq!(c.answer().await.status, 200);
    // Any other expectation: 417.
    let a = c
        .ask(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: something\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    assert_eq!(a.status, 417);
    assert_eq!(a.header("connection"), Some("close"));
}

#[tokio::test]
async fn bodies_over_the_limit_reach_the_handler_cut_and_the_connection_closes() {
    let server = start(ServerConfig {
        max_body: 10,
        ..ServerConfig::default()
    })
    .await;
    // Declared too large, with Expect: no 100 Continue, the handler sees no body, then the
    // connection closes after the answer.
    let mut c = Client::connect(server.addr).await;
    let a = c
        .ask(b"POST /big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        .await;
    assert_eq!(a.status, 200, "the handler, not the server, answers");
    assert_eq!(a.text(), "POST /big HTTP/1.1 len=0 body=");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed().await);
    // Declared too large and sent anyway, more than the socket buffers hold: the server reads
    // and drops the rest after its answer, so the sender is not reset (RFC 9112 §9.6).
    let mut c = Client::connect(server.addr).await;
    let body = "x".repeat(4 << 20);
    let a = c.ask(post("/big", &body).as_bytes()).await;
    assert_eq!(a.text(), "POST /big HTTP/1.1 len=0 body=");
    // Chunked: cut at limit + 1.
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(b"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n").await;
    assert_eq!(a.text(), "POST /big HTTP/1.1 len=11 body=0123456789a");
    assert_eq!(a.header("connection"), Some("close"));
    // At the limit: read whole, connection kept.
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(post("/fits", "0123456789").as_bytes()).await;
    assert_eq!(a.text(), "POST /fits HTTP/1.1 len=10 body=0123456789");
    assert!(a.header("connection").is_none());
}

/// Each malformed or ambiguous request: its status, and the connection closed after it.
#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused_and_the_connection_closed() {
    let server = default_server().await;
    let cases: &[(&str, u16)] = &[
        // RFC 9112 §6.3: both framings is a smuggling shape.
        ("POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        ("POST /s HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\n", 400),
        // §3.2: exactly one Host in HTTP/1.1.
        ("GET /s HTTP/1.1\r\n\r\n", 400),
        ("GET /s HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        // Not HTTP/1.x, or not HTTP.
        ("GET /s HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n", 400),
        ("GET /s HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        ("POST /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ];
    for (wire, status) in cases {
        let mut c = Client::connect(server.addr).await;
        let a = c.ask(wire.as_bytes()).await;
        assert_eq!(a.status, *status, "{wire:?}: {}", a.text());
        assert_eq!(a.header("connection"), Some("close"), "{wire:?}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert!(
            a.text().contains(&format!("\"status\":{status}")),
            "{}",
            a.text()
        );
        assert!(c.closed().await, "{wire:?}: the connection stayed open");
    }
    assert_eq!(
        server.shared.handled.load(Ordering::SeqCst),
        0,
        "a refused request reached the handler"
    );
}

#[tokio::test]
async fn the_path_of_a_refused_request_reaches_the_error_body_when_known() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    let a = c
        .ask(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.text().contains("\"path\":\"/v1/messages\""),
        "{}",
        a.text()
    ); // A framing error in the head: the path is known too.
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    assert_eq!(a.status, 400);
    assert!(
        a.text().contains("\"path\":\"/v1/messages\""),
        "{}",
        a.text()
    );
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    let fields: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    c.send(format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n").as_bytes())
        .await;
    assert_eq!(c.answer().await.status, 431);
    let mut c = Client::connect(server.addr).await;
    let long = "a".repeat(MAX_HEAD + 10);
    // Sent without the head's end: the size alone decides.
    let _ =
        c.io.write_all(format!("GET / HTTP/1.1\r\nHost: t\r\nx-long: {long}").as_bytes())
            .await;
    assert_eq!(c.answer().await.status, 431);
}

#[tokio::test]
async fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(a.text(), "GET /old HTTP/1.0 len=0 body=");
    assert!(a.header("connection").is_none());
    assert!(c.closed().await);
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(c.answer().await.header("connection"), Some("keep-alive"));
    c.send(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(c.answer().await.status, 200);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    let a = c
        .ask(b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn streamed_answers_go_out_frame_by_frame() {
    let server = default_server().await;
    let (tx, rx) = mpsc::channel(4);
    server.shared.streams.lock().unwrap().push(rx);
    let mut c = Client::connect(server.addr).await;
    c.send(get("/stream").as_bytes()).await;
    // The head arrives before any frame exists.
    let head_only = loop {
        if memchr::memmem::find(&c.buf, b"\r\n\r\n").is_some() {
            break c.buf.clone();
        }
        assert!(c.more().await > 0);
    };
    let text = String::from_utf8_lossy(&head_only).to_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "no frame was sent yet: {text:?}"
    );
    // Each frame arrives while the next is not yet produced.
    for i in 0..3 {
        let frame = format!("data: {i}\n\n");
        tx.send(Ok(Bytes::from(frame.clone()))).await.unwrap();
        let wanted = format!("{:x}\r\n{frame}\r\n", frame.len());
        while !String::from_utf8_lossy(&c.buf).contains(&wanted) {
            assert!(c.more().await > 0, "frame {i} did not arrive");
        }
    }
    drop(tx);
    while !c.buf.ends_with(b"\r\n0\r\n\r\n") {
        assert!(c.more().await > 0, "no last chunk");
    }
    // And the connection goes on.
    c.buf.clear();
    c.send(get("/next").as_bytes()).await;
    assert_eq!(c.answer().await.status, 200);
}

#[tokio::test]
async fn a_streamed_answer_to_http_1_0_is_ended_by_the_close() {
    let server = default_server().await;
    let (tx, rx) = mpsc::channel(4);
    server.shared.streams.lock().unwrap().push(rx);
    let mut c = Client::connect(server.addr).await;
    c.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    tx.send(Ok(Bytes::from_static(b"one "))).await.unwrap();
    tx.send(Ok(Bytes::from_static(b"two"))).await.unwrap();
    drop(tx);
    let a = c.answer().await;
    assert!(a.header("transfer-encoding").is_none());
    assert!(a.header("connection").is_none(), "not kept alive");
    assert_eq!(a.text(), "one two");
}

#[tokio::test]
async fn a_body_that_fails_part_way_cuts_the_answer_off() {
    let server = default_server().await;
    let (tx, rx) = mpsc::channel(4);
    server.shared.streams.lock().unwrap().push(rx);
    let mut c = Client::connect(server.addr).await;
    c.send(get("/stream").as_bytes()).await;
    tx.send(Ok(Bytes::from_static(b"partial"))).await.unwrap();
    tx.send(Err("upstream broke".into())).await.unwrap();
    let mut all = Vec::new();
    while c.more().await > 0 {}
    all.extend_from_slice(&c.buf);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("7\r\npartial\r\n"), "{text:?}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a failed body must not look complete: {text:?}"
    );
}

#[tokio::test]
async fn head_and_204_answers_carry_no_body() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    c.send(b"HEAD /sized HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let a = c.answer_for(true).await;
    assert_eq!(
        a.header("content-length"),
        Some("5"),
        "the GET answer's length"
    );
    let a = c.ask(get("/nothing").as_bytes()).await;
    assert_eq!(a.status, 204);
    assert!(a.header("content-length").is_none());
    assert!(a.header("transfer-encoding").is_none());
    // Had a body been written after either, this would read it as a broken head.
    let a = c.ask(get("/sized").as_bytes()).await;
    assert_eq!(a.text(), "12345");
    assert_eq!(a.header("content-length"), Some("5"));
}

#[tokio::test]
async fn slow_heads_get_408_and_idle_connections_close() {
    let server = start(ServerConfig {
        header_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(b"GET /slow HTTP/1.1\r\nHo").await;
    assert_eq!(a.status, 408);
    assert!(c.closed().await);
    // An answered connection left idle is closed by the server.
    let mut c = Client::connect(server.addr).await;
    c.send(get("/one").as_bytes()).await;
    assert_eq!(c.answer().await.status, 200);
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_request() {
    let server = default_server().await;
    let mut c = Client::connect(server.addr).await;
    c.send(get("/hang").as_bytes()).await;
    for _ in 0..100 {
        if server.shared.handled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!server.shared.hang_dropped.load(Ordering::SeqCst));
    drop(c);
    for _ in 0..500 {
        if server.shared.hang_dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the handler went on after its client left");
}

#[tokio::test]
async fn draining_closes_idle_connections_and_finishes_the_request_in_flight() {
    let server = default_server().await;
    let mut idle = Client::connect(server.addr).await;
    idle.send(get("/one").as_bytes()).await;
    assert_eq!(idle.answer().await.status, 200);
    let mut busy = Client::connect(server.addr).await;
    busy.send(get("/gate").as_bytes()).await;
    for _ in 0..100 {
        if server.shared.handled.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.drain.send(true).unwrap();
    assert!(
        idle.closed().await,
        "an idle connection stayed open while draining"
    );
    server.shared.gate.notify_one();
    let a = busy.answer().await;
    assert_eq!(a.text(), "opened");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(busy.closed().await);
}

#[test]
fn size_lines_and_lengths_are_written_right() {
    let mut line = [0u8; 20];
    assert_eq!(chunk_size_line(&mut line, 0), b"0\r\n");
    assert_eq!(chunk_size_line(&mut line, 255), b"ff\r\n");
    assert_eq!(chunk_size_line(&mut line, 0x1a2b3c), b"1a2b3c\r\n");
    assert_eq!(
        chunk_size_line(&mut line, usize::MAX),
        format!("{:x}\r\n", usize::MAX).as_bytes()
    );
    let mut digits = [0u8; 20];
    assert_eq!(decimal(&mut digits, 0), b"0");
    assert_eq!(decimal(&mut digits, 1234567), b"1234567");
    assert_eq!(
        decimal(&mut digits, u64::MAX),
        u64::MAX.to_string().as_bytes()
    );
}

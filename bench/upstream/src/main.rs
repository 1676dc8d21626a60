//! `bench-upstream`: serves pre-rendered OpenAI chat completions (plain and paced SSE) on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchyard_bench_upstream::{Asked, PacedBody, Rendered, Script};

#[derive(Parser, Debug)]
#[command(about = "Fast OpenAI chat-completions upstream for benchmarks")]
struct Args {
    /// Address to listen on (loopback only in benchmarks).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Model name written into responses.
    #[arg(long, default_value = "mock-model")]
    model: String,
    /// Completion tokens of a non-streamed answer.
    #[arg(long, default_value_t = 150)]
    plain_tokens: usize,
    /// Content chunks of a streamed answer.
    #[arg(long, default_value_t = 64)]
    stream_tokens: usize,
    /// Milliseconds before the first streamed chunk.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Milliseconds between streamed chunks.
    #[arg(long, default_value_t = 0)]
    itl_ms: u64,
    /// Milliseconds before a non-streamed answer.
    #[arg(long, default_value_t = 0)]
    plain_delay_ms: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Exit after this many seconds (bench runs stop it earlier).
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

type RespBody = BoxBody<Bytes, std::convert::Infallible>;

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn handle(
    rendered: Arc<Rendered>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, hyper::Error> {
    let is_chat = req.method() == Method::POST && req.uri().path().ends_with("/chat/completions");
    if !is_chat {
        if req.method() == Method::GET && req.uri().path().ends_with("/models") {
            let body: &'static [u8] = br#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"bench"}]}"#;
            return Ok(full(
                StatusCode::OK,
                "application/json",
                Bytes::from_static(body),
            ));
        }
        return Ok(full(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from_static(br#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#),
        ));
    }
    let body = req.into_body().collect().await?.to_bytes();
    let asked = Asked::scan(&body);
    if !asked.stream {
        if !rendered.plain_delay.is_zero() {
            tokio::time::sleep(rendered.plain_delay).await;
        }
        return Ok(full(
            StatusCode::OK,
            "application/json",
            rendered.plain.clone(),
        ));
    }
    let frames = if asked.include_usage {
        rendered.stream_with_usage.clone()
    } else {
        rendered.stream.clone()
    };
    let body = PacedBody::new(
        frames,
        rendered.first_token_delay,
        rendered.inter_token_delay,
    );
    let mut resp = Response::new(body.boxed());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(resp)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let script = Script {
        model: args.model,
        plain_tokens: args.plain_tokens,
        stream_tokens: args.stream_tokens,
        first_token_delay: Duration::from_millis(args.ttft_ms),
        inter_token_delay: Duration::from_millis(args.itl_ms),
        plain_delay: Duration::from_millis(args.plain_delay_ms),
        prompt_tokens: 42,
    };
    let rendered = Arc::new(Rendered::new(&script));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "bench-upstream listening on {} (plain {} B, stream {} frames)",
        args.listen,
        rendered.plain.len(),
        rendered.stream.len()
    );
    let stop = tokio::time::sleep(Duration::from_secs(args.max_seconds));
    tokio::pin!(stop);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly, keep serving.
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let rendered = rendered.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(rendered.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    conns.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(serve(args))
}

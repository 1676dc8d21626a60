//! `bare-hyper-proxy`: the least a Rust gateway built on the same parts as Switchyard (tokio, hyper)
//! can do per request — no JSON, no routing, no metering. It passes each request body to one
//! upstream over a per-thread pool of keep-alive connections and passes the answer back as it
//! arrives (streams stay streams); one current-thread runtime per core, each on its own
//! SO_REUSEPORT socket, as Switchyard runs.
//!
//! It is a measuring stick, not a product: `bench/cpu-per-request.sh bare-hyper` sets its CPU per
//! request beside nginx's and Switchyard's, which splits Switchyard's gap to nginx into what the
//! runtime and HTTP stack cost and what Switchyard's own work costs (docs/benchmarks.md).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use futures_util::TryStreamExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

#[derive(Parser, Debug)]
#[command(about = "Bare tokio + hyper forwarding proxy: the floor a Rust gateway can approach")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4100")]
    listen: SocketAddr,
    /// The upstream's address (plain HTTP/1.1).
    #[arg(long, default_value = "127.0.0.1:9000")]
    upstream: SocketAddr,
    /// Worker threads, one current-thread runtime each.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Upstream client: `hyper` (a hand-made per-thread pool of hyper connections), `legacy`
    /// (a per-thread hyper_util legacy pooled client, as Switchyard called upstreams from run 9),
    /// `reqwest` (a per-thread reqwest client, as Switchyard did before) or `raw` (HTTP/1.1
    /// written and parsed on the request's own task, as Switchyard's `h1.rs` does since
    /// 2026-12-02): the difference to `hyper` is the cost of that client's pool and layers.
    #[arg(long, value_enum, default_value_t = UpstreamClient::Hyper)]
    client: UpstreamClient,
    /// The side facing clients: `hyper` (hyper's HTTP/1.1 server, as Switchyard serves) or
    /// `raw` (a minimal loop of our own; implies `--client raw`): the difference is what hyper's
    /// server costs.
    #[arg(long, value_enum, default_value_t = ServerKind::Hyper)]
    server: ServerKind,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum ServerKind {
    Hyper,
    Raw,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum UpstreamClient {
    Hyper,
    Legacy,
    Reqwest,
    /// A minimal HTTP/1.1 client on the request's own task (no connection task, no channels):
    /// answers with a content-length only, enough for the plain benchmark. Measures what
    /// hyper's client machinery costs.
    Raw,
}

/// hyper_util's pooled client over plain TCP, as `switchyard_providers::client` builds it.
type LegacyClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Idle upstream connections of one worker thread; a request takes one and puts it back once
/// the answer has been read through.
type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

async fn upstream_conn(addr: SocketAddr) -> anyhow::Result<SendRequest<Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn bad_gateway(e: impl std::fmt::Display) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("upstream: {e}\n")));
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let idle = pool.borrow_mut().pop();
    let mut send = match idle {
        Some(s) if s.is_ready() => s,
        _ => match upstream_conn(upstream).await {
            Ok(s) => s,
            Err(e) => return Ok(bad_gateway(e)),
        },
    };
    let mut out = Request::builder()
        .method(parts.method)
        .uri(parts.uri)
        .header(header::HOST, upstream.to_string());
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    if let Some(v) = parts.headers.get(header::CONTENT_LENGTH) {
        out = out.header(header::CONTENT_LENGTH, v);
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(e)),
    };
    let resp = match send.send_request(out).await {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(e)),
    };
    // The connection is free again once the answer's body has been read through.
    tokio::task::spawn_local(async move {
        if send.ready().await.is_ok() {
            pool.borrow_mut().push(send);
        }
    });
    Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
}

type RawPool = Rc<RefCell<Vec<(tokio::net::TcpStream, Vec<u8>)>>>;

/// The forwarding through a minimal HTTP/1.1 client driven on the request's own task: one write
/// of head and body, reads until the head parses and the content-length is in. Answers with a
/// content-length only (the plain benchmark's); anything else is a 502.
async fn forward_raw(
    pool: RawPool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(
        match raw_exchange(&pool, upstream, parts.uri.path(), &body).await {
            Ok((status, ctype, answer)) => {
                let mut resp =
                    Response::new(Full::new(answer).map_err(|never| match never {}).boxed());
                *resp.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                if let Some(c) = ctype.and_then(|c| http::HeaderValue::from_maybe_shared(c).ok()) {
                    resp.headers_mut().insert(header::CONTENT_TYPE, c);
                }
                resp
            }
            Err(e) => bad_gateway(e),
        },
    )
}

/// Reads what the socket has into `buf`, growing it when less than 4 KiB is free; 0 is EOF.
async fn read_more(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8192);
    }
    stream.read_buf(buf).await
}

/// One request to the upstream on a pooled raw connection: (status, content type, body).
async fn raw_exchange(
    pool: &RawPool,
    upstream: SocketAddr,
    path: &str,
    body: &[u8],
) -> Result<(u16, Option<Bytes>, Bytes), String> {
    use tokio::io::AsyncWriteExt;
    let idle = pool.borrow_mut().pop();
    let (mut stream, mut buf) = match idle {
        Some(c) => c,
        None => match tokio::net::TcpStream::connect(upstream).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                (s, Vec::with_capacity(8192))
            }
            Err(e) => return Err(e.to_string()),
        },
    };
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(upstream.to_string().as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    if let Err(e) = stream.write_all(&out).await {
        return Err(e.to_string());
    }
    buf.clear();
    let (status, ctype, head_len, body_len) = loop {
        match read_more(&mut stream, &mut buf).await {
            Ok(0) => return Err("upstream closed".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let mut len = None;
                let mut ctype = None;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("content-type") {
                        ctype = Some(Bytes::copy_from_slice(h.value));
                    }
                }
                let Some(len) = len else {
                    return Err("no content-length".into());
                };
                break (resp.code.unwrap_or(502), ctype, n, len);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(e.to_string()),
        }
    };
    while buf.len() < head_len + body_len {
        match read_more(&mut stream, &mut buf).await {
            Ok(0) => return Err("upstream closed".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let answer = Bytes::copy_from_slice(&buf[head_len..head_len + body_len]);
    pool.borrow_mut().push((stream, buf));
    Ok((status, ctype, answer))
}

/// A minimal HTTP/1.1 server loop on one client connection, in place of hyper's server: parse
/// the head with httparse, read a content-length body, forward it with [`raw_exchange`], write
/// the answer with a content-length, keep the connection. No chunked bodies, no pipelining
/// beyond what the buffer holds, no `Connection: close`: a measuring stick for what hyper's
/// server costs per request, not a server.
async fn serve_raw(mut client: tokio::net::TcpStream, pool: RawPool, upstream: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // The head.
        let (path, head_len, body_len) = loop {
            if !buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let len = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (req.path.unwrap_or("/").to_string(), n, len);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return,
                }
            }
            match read_more(&mut client, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        while buf.len() < head_len + body_len {
            match read_more(&mut client, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let answer =
            raw_exchange(&pool, upstream, &path, &buf[head_len..head_len + body_len]).await;
        buf.drain(..head_len + body_len);
        let (status, ctype, body) = match answer {
            Ok(a) => a,
            Err(e) => (502, None, Bytes::from(e)),
        };
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.extend_from_slice(if status == 200 { b" OK" } else { b" -" });
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(ctype.as_deref().unwrap_or(b"text/plain"));
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        let mut bufs = [std::io::IoSlice::new(&out), std::io::IoSlice::new(&body)];
        let mut slices: &mut [std::io::IoSlice<'_>] = &mut bufs;
        while !slices.is_empty() {
            match client.write_vectored(slices).await {
                Ok(0) | Err(_) => return,
                Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
            }
        }
    }
}

/// The same forwarding through hyper_util's legacy pooled client: the body is read whole (as
/// Switchyard reads a request before routing it) and the answer streamed back.
async fn forward_legacy(
    client: LegacyClient,
    uri: http::Uri,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut out = Request::post(uri);
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let out = match out.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(e)),
    };
    match client.request(out).await {
        Ok(resp) => Ok(resp.map(|b| b.map_err(BoxError::from).boxed())),
        Err(e) => Ok(bad_gateway(e)),
    }
}

/// The same forwarding through a reqwest client: the body is read whole (as Switchyard reads
/// a request before routing it) and the answer streamed back.
async fn forward_reqwest(
    client: reqwest::Client,
    url: Rc<reqwest::Url>,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut out = client.post((*url).clone()).body(body);
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(e)),
    };
    let mut builder = Response::builder().status(resp.status());
    if let Some(v) = resp.headers().get(header::CONTENT_TYPE) {
        builder = builder.header(header::CONTENT_TYPE, v);
    }
    let stream = resp
        .bytes_stream()
        .map_ok(hyper::body::Frame::data)
        .map_err(BoxError::from);
    match builder.body(BodyExt::boxed(http_body_util::StreamBody::new(stream))) {
        Ok(r) => Ok(r),
        Err(e) => Ok(bad_gateway(e)),
    }
}

fn worker(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    client: UpstreamClient,
    server: ServerKind,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    // Built only in reqwest mode, so the hyper path carries nothing it does not use.
    let via_reqwest = match client {
        UpstreamClient::Hyper | UpstreamClient::Legacy | UpstreamClient::Raw => None,
        UpstreamClient::Reqwest => Some((
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .build()?,
            Rc::new(reqwest::Url::parse(&format!(
                "http://{upstream}/v1/chat/completions"
            ))?),
        )),
    };
    let via_legacy = match client {
        UpstreamClient::Legacy => {
            let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
            tcp.set_nodelay(true);
            let client: LegacyClient =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_timer(hyper_util::rt::TokioTimer::new())
                    .pool_max_idle_per_host(512)
                    .build(tcp);
            let uri: http::Uri = format!("http://{upstream}/v1/chat/completions").parse()?;
            Some((client, uri))
        }
        _ => None,
    };
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let pool: Pool = Rc::default();
        let raw_pool: RawPool = Rc::default();
        let raw = matches!(client, UpstreamClient::Raw);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let raw_pool = raw_pool.clone();
            if server == ServerKind::Raw {
                tokio::task::spawn_local(serve_raw(stream, raw_pool, upstream));
                continue;
            }
            let pool = pool.clone();
            let via_reqwest = via_reqwest.clone();
            let via_legacy = via_legacy.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |req| {
                    let raw_pool = raw_pool.clone();
                    let pool = pool.clone();
                    let via_reqwest = via_reqwest.clone();
                    let via_legacy = via_legacy.clone();
                    async move {
                        if raw {
                            return forward_raw(raw_pool, upstream, req).await;
                        }
                        match (via_reqwest, via_legacy) {
                            (Some((http, url)), _) => forward_reqwest(http, url, req).await,
                            (None, Some((client, uri))) => forward_legacy(client, uri, req).await,
                            (None, None) => forward(pool, upstream, req).await,
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut threads = Vec::new();
    for _ in 0..args.threads.max(1) {
        let listener = reuseport_listener(args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let (upstream, client, server) = (args.upstream, args.client, args.server);
        threads.push(std::thread::spawn(move || {
            worker(listener, upstream, client, server)
        }));
    }
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("a worker thread panicked"),
        }
    }
    Ok(())
}

//! The upstream HTTP client: for `https://`, hyper_util's pooled client over TLS (rustls with
//! the ring provider and webpki's roots); for plain `http://`, our own pool of HTTP/1.1
//! connections (`pool.rs` and `h1.rs`, cheaper per request); nothing else on the path.
//!
//! Why not reqwest: each call went through a redirect-following service that re-parses the
//! URL even with redirects off, and a retry layer the gateway never uses. Measured as a bare
//! proxy, that cost 5–9 µs of CPU per request on one VM and 25–39 µs on another
//! (docs/benchmarks.md, `bench/cpu-per-request.sh bare-reqwest` against `bare-hyper`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::pool::{Pool, PooledBody};
use crate::{ProviderError, ProviderErrorKind};

/// How long an idle pooled connection is kept, and how many per host.
const POOL_IDLE: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 512;

/// A pooled keep-alive client for `http://` and `https://` (HTTP/1.1, or HTTP/2 when the
/// server offers it over TLS). No overall timeout: the gateway enforces first-token and total
/// limits itself, per target. Redirects are not followed: a provider API does not redirect a
/// POST, and following one would send the prompt somewhere the config did not name.
///
/// A handle: cloning it is one reference count (it is taken per request), where cloning
/// hyper_util's client is several.
#[derive(Clone)]
pub struct HttpClient {
    shared: Arc<Clients>,
}

struct Clients {
    /// `https://` upstreams.
    tls: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Plain-`http://` upstreams go through this instead (see `pool.rs`).
    plain: Arc<Pool>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// An upstream answer's body, from whichever client carried the call.
#[derive(Debug)]
pub enum UpstreamBody {
    Pooled(PooledBody),
    Legacy(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Legacy(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(body_error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::Legacy(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::Legacy(b) => b.size_hint(),
        }
    }
}

/// An upstream answer with its body unread.
pub type UpstreamResponse = Response<UpstreamBody>;

impl HttpClient {
    /// A client whose TCP connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("cannot set up TLS for the HTTP client: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        Ok(HttpClient {
            shared: Arc::new(Clients {
                tls: inner,
                plain: Pool::new(connect_timeout, POOL_IDLE, POOL_MAX_IDLE_PER_HOST),
            }),
        })
    }

    /// POSTs `body` with `headers` (and `Accept: text/event-stream` when `sse`); returns the
    /// answer whatever its status, with its body unread.
    pub async fn post(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: Vec<u8>,
        sse: bool,
    ) -> Result<UpstreamResponse, ProviderError> {
        if let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) {
            let head = plain_request_head(uri, headers, body.len(), sse);
            let resp = self.shared.plain.send(authority, &head, &body).await?;
            return Ok(resp.map(UpstreamBody::Pooled));
        }
        let mut req = Request::post(uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ProviderError::new(ProviderErrorKind::InvalidRequest, e.to_string()))?;
        *req.headers_mut() = headers.clone();
        if sse {
            req.headers_mut().insert(
                http::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        let resp = self.shared.tls.request(req).await.map_err(request_error)?;
        Ok(resp.map(UpstreamBody::Legacy))
    }
}

/// The request line and headers of a POST to a plain-`http://` upstream, in origin form, ending
/// in the empty line. The framing headers are ours: `Content-Length` is the body's, and a
/// caller's `Transfer-Encoding`, `Connection` or (on streams) `Accept` is left out.
fn plain_request_head(uri: &Uri, headers: &HeaderMap, body_len: usize, sse: bool) -> Vec<u8> {
    use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
    use std::io::Write as _;
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST) {
        if let Some(host) = plain_http_host(uri) {
            head.extend_from_slice(b"host: ");
            head.extend_from_slice(host.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in headers {
        if name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == CONNECTION
            || (sse && name == ACCEPT)
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if sse {
        head.extend_from_slice(b"accept: text/event-stream\r\n");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(head, "content-length: {body_len}\r\n\r\n");
    head
}

/// A parsed upstream URL (checked once at build time, not per request).
pub fn parse_uri(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("'{url}': {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("'{url}': not an http:// or https:// URL")),
    }
}

/// The `Host` header for a plain `http://` URL, built once so the request head does not format
/// one per request (`plain_request_head` fills it in only when it is absent). Over `https://`
/// the connection may turn out to be HTTP/2, which names the host in `:authority` instead, so
/// there it is left to the client.
pub fn plain_http_host(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).ok()
}

/// The whole body of an answer.
pub async fn read_body(resp: UpstreamResponse) -> Result<Bytes, ProviderError> {
    resp.into_body().collect().await.map(|b| b.to_bytes())
}

/// The body of an answer as it arrives, piece by piece.
pub fn body_stream(
    resp: UpstreamResponse,
) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin {
    BodyDataStream::new(resp.into_body())
}

/// Reads a body up to `limit` bytes (error answers: enough to show, never unbounded).
pub async fn read_limited(resp: UpstreamResponse, limit: usize) -> Result<Bytes, ProviderError> {
    let mut out = Vec::new();
    let mut s = body_stream(resp);
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(out))
}

/// A failed call: timeouts and refused connections told apart from broken ones. The message
/// carries the causes (hyper's own text is only "client error (Connect)") but never the URL.
fn request_error(e: hyper_util::client::legacy::Error) -> ProviderError {
    let timed_out = causes(&e).any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    let kind = if timed_out {
        ProviderErrorKind::Timeout
    } else if e.is_connect() {
        ProviderErrorKind::Connect
    } else {
        ProviderErrorKind::Io
    };
    ProviderError::new(kind, format!("upstream request failed: {}", chain(&e)))
}

fn body_error(e: hyper::Error) -> ProviderError {
    let kind = if e.is_parse() || e.is_incomplete_message() {
        ProviderErrorKind::Protocol
    } else if e.is_timeout() {
        ProviderErrorKind::Timeout
    } else {
        ProviderErrorKind::Io
    };
    ProviderError::new(
        kind,
        format!("reading the upstream answer failed: {}", chain(&e)),
    )
}

fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// "outer: cause: root cause".
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn host_header_for_plain_http_only() {
        let host = |u: &str| plain_http_host(&parse_uri(u).unwrap());
        assert_eq!(host("http://127.0.0.1:9000/v1").unwrap(), "127.0.0.1:9000");
        assert_eq!(host("http://vllm.internal/v1").unwrap(), "vllm.internal");
        assert_eq!(host("http://vllm.internal:80/v1").unwrap(), "vllm.internal");
        assert_eq!(host("http://[::1]:8080/v1").unwrap(), "[::1]:8080");
        assert!(host("https://api.openai.com/v1").is_none());
    }

    /// The head we write: origin form, our own framing headers, the caller's others as given.
    #[test]
    fn plain_request_heads_carry_our_framing_and_the_callers_headers() {
        let uri = parse_uri("http://vllm.internal:8000/v1/chat/completions?x=1").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let head = String::from_utf8(plain_request_head(&uri, &headers, 42, true)).unwrap();
        assert_eq!(
            head,
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: vllm.internal:8000\r\n\
             authorization: Bearer k\r\naccept: text/event-stream\r\ncontent-length: 42\r\n\r\n"
        );
        // A caller's Host wins, and without SSE the caller's Accept stays.
        headers.insert("host", HeaderValue::from_static("other"));
        let head = String::from_utf8(plain_request_head(&uri, &headers, 0, false)).unwrap();
        assert!(head.contains("host: other\r\n"), "{head}");
        assert!(!head.contains("vllm.internal"), "{head}");
        assert!(head.contains("accept: application/json\r\n"), "{head}");
        assert!(head.ends_with("content-length: 0\r\n\r\n"), "{head}");
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_upstreams() {
        assert!(parse_uri("http://127.0.0.1:9000/v1/chat/completions").is_ok());
        assert!(parse_uri("https://api.openai.com/v1/chat/completions").is_ok());
        for bad in ["ftp://h/x", "/v1/chat", "http:///x", "not a url"] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    /// An https:// upstream gets a TLS handshake (a ClientHello record), not plain HTTP.
    #[tokio::test]
    async fn https_urls_speak_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first_bytes = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 3];
            sock.read_exact(&mut buf).await.unwrap();
            buf
        });
        let client = HttpClient::new(Duration::from_secs(2)).unwrap();
        let uri = parse_uri(&format!("https://{addr}/v1/messages")).unwrap();
        let call = tokio::spawn(async move {
            client
                .post(&uri, &HeaderMap::new(), b"{}".to_vec(), false)
                .await
        });
        let buf = first_bytes.await.unwrap();
        // TLS record: content type 22 (handshake), protocol version 3.x.
        assert_eq!(buf[0], 0x16, "{buf:?}");
        assert_eq!(buf[1], 0x03, "{buf:?}");
        // The server hung up mid-handshake: a failed call, not a hang or a panic.
        let err = call.await.unwrap().unwrap_err();
        assert!(err.message.contains("upstream request failed"), "{err:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = HttpClient::new(Duration::from_secs(2)).unwrap();
        let uri = parse_uri(&format!("http://{addr}/v1/chat/completions")).unwrap();
        let err = client
            .post(&uri, &HeaderMap::new(), Vec::new(), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Connect, "{err:?}");
        assert!(
            err.message.contains("refused"),
            "the cause is in the message: {err:?}"
        );
    }
}

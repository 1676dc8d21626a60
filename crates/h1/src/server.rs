//! One client connection, served with HTTP/1.1 on the connection's own task: read a request's
//! head and body into the connection's buffer, hand the request to the handler, write its
//! answer (one `writev` for the head and a ready body; each streamed frame as it comes), and
//! go again. No dispatcher state machine and no body channel between the connection and the
//! handler, which is what hyper's server costs over this loop.
//!
//! Follows RFC 9112 (HTTP/1.1):
//! - §2.2, §3: a request line and fields as `httparse` reads them; an HTTP/1.1 request without
//!   exactly one `Host` is refused (§3.2); heads over [`MAX_HEAD`] bytes or [`MAX_HEADERS`]
//!   fields get 431.
//! - §6.1, §6.3 (request smuggling, §11.2): `Transfer-Encoding` must be `chunked` alone (another
//!   final coding: 400; another coding before it: 501); `Transfer-Encoding` with
//!   `Content-Length`, or in an HTTP/1.0 request, is refused and the connection closed; an
//!   invalid or conflicting `Content-Length` likewise.
//! - §7.1: chunked request bodies, extensions ignored, trailers read and dropped.
//! - §9.3: HTTP/1.1 connections persist unless `Connection: close`; HTTP/1.0 ones only with
//!   `keep-alive`. Pipelined requests are answered in order.
//! - §9.6: a connection closed with a request body unread is closed gracefully (our FIN, then
//!   what the client still sends is read and dropped for a moment), so the client reads the
//!   answer instead of a reset.
//! - RFC 9110 §10.1.1: `Expect: 100-continue` gets `100 Continue` before the body is read,
//!   unless the body is over the limit; any other expectation gets 417.
//!
//! Answers are framed by the body's exact size when it knows it (`Content-Length`), else
//! chunked (HTTP/1.1) or by closing the connection (HTTP/1.0); none for `HEAD`, 1xx, 204 and
//! 304. A client that closes its connection while its request is being handled or its answer
//! streamed drops the handler's future and the body, as hyper's server does: that is how an
//! upstream call is cancelled when its client has gone.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::body::{Chunk, Decoder, Step};

/// The most a request's head (request line and fields) may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most fields a request's head may carry.
pub const MAX_HEADERS: usize = 128;
/// While a request is being handled, the connection keeps reading (to see the client leave, and
/// pipelined requests) until this much is buffered.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// Read buffer: its first size, and the room made before each read.
const READ_BUFFER: usize = 8 * 1024;
const READ_ROOM: usize = 1024;
/// How long a connection closed with a request body unread keeps reading and dropping it.
const LINGER: Duration = Duration::from_secs(2);

/// Limits and timeouts of a connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request bodies over this many bytes are not read: a body declared larger
    /// (`Content-Length`) reaches the handler empty, a chunked one cut at `max_body + 1` bytes,
    /// so the handler can refuse it (413), and the connection closes after the answer.
    pub max_body: usize,
    /// A request's head must be complete this long after its first byte (else 408).
    pub header_timeout: Duration,
    /// Longest wait for the next piece of a request body (else 408).
    pub body_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Longest wait for the client to take more of an answer; after it, the connection closes.
    pub send_timeout: Duration,
    /// The body and content type of an answer the server gives itself (malformed requests,
    /// timeouts), so clients get errors in the shape they expect.
    pub error_body: ErrorBody,
}

/// Renders a server-made error: the request's path when it was read, the status, a message.
pub type ErrorBody = fn(Option<&str>, StatusCode, &str) -> (&'static str, Bytes);

fn plain_error(_path: Option<&str>, _status: StatusCode, message: &str) -> (&'static str, Bytes) {
    (
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    )
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            error_body: plain_error,
        }
    }
}

/// How a connection ended other than by a close between requests.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A request refused before it reached the handler (answered with this status).
    #[error("request refused with {0}: {1}")]
    Refused(StatusCode, String),
    /// The client left while its request was handled or its answer written.
    #[error("the client closed the connection before the answer was complete")]
    ClientGone,
    /// The answer's body failed part-way; the connection was closed to tell the client.
    #[error("the answer's body failed: {0}")]
    Body(String),
    #[error("the client took no more of the answer for {0:?}")]
    SendTimeout(Duration),
}

/// A request the server will not hand on: the status and the reason, and whether its path is
/// known (for the error's shape).
struct Refusal {
    status: StatusCode,
    message: String,
    path: Option<String>,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        path: None,
    }
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A request's head, read and checked.
struct RequestHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// Serves HTTP/1.1 on `io` until the client closes, a request asks for the close, the
/// connection idles out, or `drain` turns true (a request in flight is answered first).
pub async fn serve_connection<H, F, B>(
    io: TcpStream,
    config: &ServerConfig,
    mut handler: H,
    mut drain: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    H: FnMut(Request<Full<Bytes>>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(READ_BUFFER),
        out: Vec::with_capacity(1024),
        config,
    };
    loop {
        let head = match conn.read_head(&mut drain).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(Ok(refusal)) => return conn.refuse(refusal).await,
            Err(Err(e)) => return Err(e),
        };
        let is_head = head.method == Method::HEAD;
        let version = head.version;
        let (body, body_complete) = match conn.read_body(&head).await {
            Ok(read) => read,
            Err(Ok(mut refusal)) => {
                refusal.path = Some(head.uri.path().to_string());
                return conn.refuse(refusal).await;
            }
            Err(Err(e)) => return Err(e),
        };
        let mut keep_alive = head.keep_alive && body_complete;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = version;
        *request.headers_mut() = head.headers;
        let Some(response) = conn.unless_client_leaves(handler(request)).await else {
            return Err(ConnError::ClientGone);
        };
        keep_alive &= !*drain.borrow();
        keep_alive = conn
            .write_response(response, version, is_head, keep_alive)
            .await?;
        if !keep_alive {
            if !body_complete {
                conn.linger().await;
            }
            return Ok(());
        }
    }
}

struct Conn<'c> {
    io: TcpStream,
    /// Bytes read and not used yet: the rest of a request, or requests pipelined after it.
    buf: BytesMut,
    /// An answer's head, built here and written with the first of its body.
    out: Vec<u8>,
    config: &'c ServerConfig,
}

impl Conn<'_> {
    /// Reads what the socket has into the buffer; `Ok(0)` is the client's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.reserve(READ_BUFFER);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// The next request's head. `Ok(None)`: the connection is done (closed by the client
    /// between requests, idle too long, or draining). `Err(Ok(_))`: answer with a refusal.
    async fn read_head(
        &mut self,
        drain: &mut watch::Receiver<bool>,
    ) -> Result<Option<RequestHead>, Result<Refusal, ConnError>> {
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = self.parse_head().map_err(Ok)? {
                    return Ok(Some(head));
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Ok(refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        format!("The request's head is over {MAX_HEAD} bytes."),
                    )));
                }
            }
            // Already there (arrived with the last read): no timer needed.
            let ready = self.fill().now_or_never();
            let read = if let Some(read) = ready {
                read
            } else if self.buf.is_empty() {
                if *drain.borrow() {
                    return Ok(None);
                }
                let idle = self.config.idle_timeout;
                tokio::select! {
                    biased;
                    read = self.fill() => read,
                    _ = drain.wait_for(|d| *d) => return Ok(None),
                    _ = tokio::time::sleep(idle) => return Ok(None),
                }
            } else {
                let at = *deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + self.config.header_timeout
                });
                match tokio::time::timeout_at(at, self.fill()).await {
                    Ok(read) => read,
                    Err(_) => {
                        return Err(Ok(refuse(
                            StatusCode::REQUEST_TIMEOUT,
                            "The request's head did not arrive in time.",
                        )))
                    }
                }
            };
            match read {
                // A close between requests, or part-way through a head: nothing to answer.
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(Err(e.into())),
            }
        }
    }

    /// Parses a complete head off the front of the buffer, or `None` until there is one.
    fn parse_head(&mut self) -> Result<Option<RequestHead>, Refusal> {
        // Uninitialised slots: an initialised array would be 4 KiB of stores per request.
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, &self.buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("The request has more than {MAX_HEADERS} header fields."),
                ))
            }
            Err(httparse::Error::Version) => {
                return Err(refuse(
                    StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    "Only HTTP/1.0 and HTTP/1.1 are served on this port.",
                ))
            }
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Malformed HTTP request: {e}."),
                ))
            }
        };
        // Where each piece sits in the buffer, so that the head's bytes, once split off, back
        // the URI and the header values without a copy each.
        let base = self.buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Invalid request method."))?;
        let path = at(req.path.unwrap_or_default().as_bytes());
        let version = match req.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut fields = Vec::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Invalid header field name."))?;
            fields.push((name, at(h.value)));
        }
        let head = self.buf.split_to(len).freeze();
        let uri = Uri::from_maybe_shared(head.slice(path))
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Invalid request target."))?;
        // From here on a refusal knows the path, so its error takes the path's API shape.
        match read_fields(&head, fields, version) {
            Ok(fields) => Ok(Some(RequestHead {
                method,
                uri,
                version,
                headers: fields.headers,
                framing: fields.framing,
                keep_alive: fields.keep_alive,
                expect_continue: fields.expect_continue,
            })),
            Err(mut refusal) => {
                refusal.path = Some(uri.path().to_string());
                Err(refusal)
            }
        }
    }
}

/// A request's header fields, with what they say about its framing and persistence.
struct Fields {
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// Reads the fields (`fields`: names, and where the values sit in `head`) and checks the
/// framing rules of RFC 9112 §6.1 and §6.3, `Host` (§3.2) and `Expect` (RFC 9110 §10.1.1).
fn read_fields(
    head: &Bytes,
    fields: Vec<(HeaderName, std::ops::Range<usize>)>,
    version: Version,
) -> Result<Fields, Refusal> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    let mut framing = Framing::None;
    let mut transfer_codings: Option<Vec<Bytes>> = None;
    let mut length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut hosts = 0;
    for (name, range) in fields {
        let raw = head.slice(range);
        if name == http::header::TRANSFER_ENCODING {
            let codings = transfer_codings.get_or_insert_with(Vec::new);
            for coding in raw.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if !coding.is_empty() {
                    codings.push(raw.slice_ref(coding));
                }
            }
        } else if name == http::header::CONTENT_LENGTH {
            length = Some(crate::parse_content_length(&raw, length).ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "Invalid or conflicting Content-Length.",
                )
            })?);
        } else if name == http::header::CONNECTION {
            for token in raw.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == http::header::HOST {
            hosts += 1;
        } else if name == http::header::EXPECT {
            if raw.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(refuse(
                    StatusCode::EXPECTATION_FAILED,
                    "Only the expectation 100-continue is supported.",
                ));
            }
        }
        let value = HeaderValue::from_maybe_shared(raw)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Invalid header field value."))?;
        headers.append(name, value);
    }
    if version == Version::HTTP_11 && hosts != 1 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "An HTTP/1.1 request needs exactly one Host header field.",
        ));
    }
    if let Some(codings) = transfer_codings {
        if version == Version::HTTP_10 {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding is not defined for HTTP/1.0.",
            ));
        }
        if length.is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "A request may not carry both Transfer-Encoding and Content-Length.",
            ));
        }
        match codings.split_last() {
            Some((last, [])) if last.eq_ignore_ascii_case(b"chunked") => {}
            Some((last, _)) if last.eq_ignore_ascii_case(b"chunked") => {
                return Err(refuse(
                    StatusCode::NOT_IMPLEMENTED,
                    "Transfer codings other than chunked are not supported.",
                ))
            }
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "A request's Transfer-Encoding must end with chunked.",
                ))
            }
        }
        framing = Framing::Chunked;
    } else if let Some(n) = length.filter(|&n| n > 0) {
        framing = Framing::Length(n);
    }
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    Ok(Fields {
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    })
}

impl Conn<'_> {
    /// Reads a request's body: the whole of it, or, when it is over the limit, as much as the
    /// handler needs to refuse it (`false`: the rest is unread and the connection must close).
    async fn read_body(
        &mut self,
        head: &RequestHead,
    ) -> Result<(Bytes, bool), Result<Refusal, ConnError>> {
        let max = self.config.max_body;
        match head.framing {
            Framing::None => Ok((Bytes::new(), true)),
            Framing::Length(n) if n > max as u64 => Ok((Bytes::new(), false)),
            Framing::Length(n) => {
                let n = n as usize; // ≤ max_body, a usize
                if self.buf.len() < n {
                    if head.expect_continue {
                        self.write_all(&mut [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")])
                            .await
                            .map_err(Err)?;
                    }
                    // Room for the body as it comes, not for its declared size at once: a
                    // client that declares 8 MiB and sends nothing must not hold 8 MiB.
                    self.buf.reserve((n - self.buf.len()).min(MAX_READ_AHEAD));
                    while self.buf.len() < n {
                        self.fill_body().await?;
                    }
                }
                Ok((self.buf.split_to(n).freeze(), true))
            }
            Framing::Chunked => {
                if head.expect_continue && self.buf.is_empty() {
                    self.write_all(&mut [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")])
                        .await
                        .map_err(Err)?;
                }
                let mut decoder = Decoder::Chunked(Chunk::Size);
                let mut body = BytesMut::new();
                loop {
                    match decoder.step(&mut self.buf) {
                        Ok(Step::Data(data)) => {
                            body.extend_from_slice(&data);
                            if body.len() > max {
                                body.truncate(max + 1);
                                return Ok((body.freeze(), false));
                            }
                        }
                        Ok(Step::Done) => return Ok((body.freeze(), true)),
                        Ok(Step::NeedMore) => self.fill_body().await?,
                        Err(e) => {
                            return Err(Ok(refuse(
                                StatusCode::BAD_REQUEST,
                                format!("Malformed chunked request body: {e}."),
                            )))
                        }
                    }
                }
            }
        }
    }

    /// Reads more of a request body, within the body timeout.
    async fn fill_body(&mut self) -> Result<(), Result<Refusal, ConnError>> {
        let wait = self.config.body_timeout;
        match tokio::time::timeout(wait, self.fill()).await {
            Ok(Ok(0)) => Err(Err(ConnError::ClientGone)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Err(e.into())),
            Err(_) => Err(Ok(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "The request body did not arrive in time.",
            ))),
        }
    }

    /// Runs `work` (the handler, or the wait for an answer's next frame) while watching the
    /// connection: bytes that arrive meanwhile are kept (pipelined requests); the client's close
    /// (or a reset) ends the wait with `None`, dropping `work`.
    async fn unless_client_leaves<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while self.buf.len() < MAX_READ_AHEAD {
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => break,
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes an answer; returns whether the connection may carry another request.
    async fn write_response<B>(
        &mut self,
        response: Response<B>,
        version: Version,
        is_head: bool,
        mut keep_alive: bool,
    ) -> Result<bool, ConnError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let no_body = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let exact = body.size_hint().exact();
        enum Out {
            Nothing,
            Length(u64),
            Chunked,
            UntilClose,
        }
        let framing = if no_body || is_head {
            Out::Nothing
        } else if let Some(n) = exact {
            Out::Length(n)
        } else if version == Version::HTTP_11 {
            Out::Chunked
        } else {
            keep_alive = false;
            Out::UntilClose
        };
        self.out.clear();
        let out = &mut self.out;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut has_date = false;
        // An answer to HEAD keeps the length the handler gave (that of the answer to GET).
        let keep_length = is_head && !no_body;
        for (name, value) in &parts.headers {
            // Our own framing and persistence headers, not the handler's.
            if (name == http::header::CONTENT_LENGTH && !keep_length)
                || name == http::header::TRANSFER_ENCODING
                || name == http::header::CONNECTION
            {
                continue;
            }
            has_date |= name == http::header::DATE;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !has_date {
            out.extend_from_slice(b"date: ");
            date::write(out);
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            Out::Length(n) => write_length(out, n),
            Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Out::Nothing | Out::UntilClose => {}
        }
        match (version, keep_alive) {
            (Version::HTTP_10, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            (Version::HTTP_11, false) => out.extend_from_slice(b"connection: close\r\n"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        let mut head_sent = false;
        if let Out::Nothing = framing {
            self.write_head().await?;
            return Ok(keep_alive);
        }
        let chunked = matches!(framing, Out::Chunked);
        let mut left = match framing {
            Out::Length(n) => Some(n),
            _ => None,
        };
        let mut body = std::pin::pin!(body);
        loop {
            // The first frame goes out with the head when it is ready now (a whole body, most
            // often); otherwise the head goes first, so the client sees the answer begin.
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    if !head_sent {
                        self.write_head().await?;
                        head_sent = true;
                    }
                    match self.unless_client_leaves(body.frame()).await {
                        Some(frame) => frame,
                        None => return Err(ConnError::ClientGone),
                    }
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(ConnError::Body(e.to_string())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers: not sent (the client did not ask for them)
                },
            };
            if data.is_empty() {
                continue;
            }
            if let Some(left) = &mut left {
                if data.len() as u64 > *left {
                    return Err(ConnError::Body(
                        "the body is longer than its declared size".into(),
                    ));
                }
                *left -= data.len() as u64;
            }
            let ends = left == Some(0) || (chunked && body.is_end_stream());
            let head: &[u8] = if head_sent { &[] } else { &self.out };
            let mut size_line = [0u8; 20];
            let size_line = if chunked {
                chunk_size_line(&mut size_line, data.len())
            } else {
                &[]
            };
            let tail: &[u8] = match (chunked, ends) {
                (true, true) => b"\r\n0\r\n\r\n",
                (true, false) => b"\r\n",
                (false, _) => b"",
            };
            self.write_all(&mut [
                IoSlice::new(head),
                IoSlice::new(size_line),
                IoSlice::new(&data),
                IoSlice::new(tail),
            ])
            .await?;
            head_sent = true;
            if ends {
                return Ok(keep_alive);
            }
        }
        // The body ended.
        if !head_sent {
            self.write_head().await?;
        }
        match framing {
            Out::Chunked => {
                self.write_all(&mut [IoSlice::new(b"0\r\n\r\n")]).await?;
                Ok(keep_alive)
            }
            Out::Length(_) if left != Some(0) => Err(ConnError::Body(
                "the body is shorter than its declared size".into(),
            )),
            _ => Ok(keep_alive),
        }
    }

    async fn write_head(&self) -> Result<(), ConnError> {
        self.write_all(&mut [IoSlice::new(&self.out)]).await
    }

    /// Writes all of `parts`, as few `writev` calls as the socket allows; waits for room at
    /// most the send timeout at a time.
    async fn write_all(&self, parts: &mut [IoSlice<'_>]) -> Result<(), ConnError> {
        let mut parts = parts;
        while !parts.is_empty() {
            match self.io.try_write_vectored(parts) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = self.config.send_timeout;
                    match tokio::time::timeout(wait, self.io.writable()).await {
                        Ok(ready) => ready?,
                        Err(_) => return Err(ConnError::SendTimeout(wait)),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Answers a refused request and closes the connection.
    async fn refuse(&mut self, refusal: Refusal) -> Result<(), ConnError> {
        let (content_type, body) =
            (self.config.error_body)(refusal.path.as_deref(), refusal.status, &refusal.message);
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = refusal.status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        self.write_response(response, Version::HTTP_11, false, false)
            .await?;
        self.linger().await;
        Err(ConnError::Refused(refusal.status, refusal.message))
    }

    /// Closes after an answer while the client may still be sending (RFC 9112 §9.6): our
    /// side's FIN first, then what arrives is read and dropped until the client closes too, or
    /// for [`LINGER`] at most. Closing at once with unread bytes would send a reset, which can
    /// destroy the answer before the client reads it.
    async fn linger(&mut self) {
        use tokio::io::AsyncWriteExt as _;
        if self.io.shutdown().await.is_err() {
            return;
        }
        let drain_input = async {
            loop {
                self.buf.clear();
                match self.fill().await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain_input).await;
    }
}

fn write_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(&mut digits, n));
    out.extend_from_slice(b"\r\n");
}

fn decimal(digits: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// A chunk's size line: hex digits and CRLF.
fn chunk_size_line(line: &mut [u8; 20], n: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = line.len() - 2;
    line[i] = b'\r';
    line[i + 1] = b'\n';
    let mut n = n;
    loop {
        i -= 1;
        line[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &line[i..];
        }
    }
}

/// The `Date` field (RFC 9110 §6.6.1), formatted once a second per thread.
mod date {
    use super::SystemTime;
    use std::cell::RefCell;

    thread_local! {
        static CACHED: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }

    pub(super) fn write(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != secs {
                *at = secs;
                text.clear();
                text.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            }
            out.extend_from_slice(text);
        });
    }
}

#[cfg(test)]
mod tests;

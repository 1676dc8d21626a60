//! Keep-alive HTTP/1.1 connections to plain-`http://` upstreams (vLLM, llama.cpp, Ollama, the
//! sim), one pool per worker thread's client, spoken by `h1.rs` on the calling task.
//!
//! Why not hyper_util's pooled client here: its checkout, pool bookkeeping and background tasks
//! cost the bare proxy 13–20 µs more CPU per request than a plain stack of hyper connections
//! (`bench/cpu-per-request.sh bare-hyper` against `bare-legacy`); and why not hyper's own client
//! connection: its dispatcher task and channels cost ~6 µs more than `h1.rs`
//! (`bare-hyper` against `bare-raw`; docs/benchmarks.md). `https://` keeps hyper_util's client:
//! TLS, and HTTP/2 when the server offers it.
//!
//! What this keeps of what a pooled client does: a connection that the server closed while it
//! sat idle is not used (tokio's readiness says so without a syscall; a write that fails on a
//! reused connection moves to the next one, the request having reached no one who would answer
//! it); idle connections expire and are capped per host; connects time out and are told apart
//! from other failures. Expiry is checked when connections are taken or given back, not by a
//! timer: a pool that goes quiet keeps its idle connections until the next call or the
//! server's own idle timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::Response;
use hyper::body::{Body, Frame, SizeHint};

use crate::h1::{Conn, Decoder, Step, WireError};
use crate::{ProviderError, ProviderErrorKind};

pub(crate) struct Pool {
    idle: Mutex<Vec<(Authority, VecDeque<Idle>)>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub(crate) fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle_per_host: usize,
    ) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            idle_timeout,
            max_idle_per_host,
        })
    }

    /// Sends a request (`head`: request line and headers, ending in the empty line; `body`:
    /// exactly its `Content-Length`) to `authority` on an idle connection or a new one, and
    /// reads the answer's head. The answer's body gives the connection back once read through.
    pub(crate) async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        head: &[u8],
        body: &[u8],
    ) -> Result<Response<PooledBody>, ProviderError> {
        let mut conn = loop {
            match self.take_idle(authority) {
                // A failed write: the server closed the connection (the request went nowhere
                // whole); try the next one.
                Some(mut conn) => {
                    if conn.write_request(head, body).await.is_ok() {
                        break conn;
                    }
                }
                None => {
                    let mut conn = self.connect(authority).await?;
                    conn.write_request(head, body).await.map_err(|e| {
                        ProviderError::new(
                            ProviderErrorKind::Io,
                            format!("upstream request failed: writing the request: {e}"),
                        )
                    })?;
                    break conn;
                }
            }
        };
        let answer = conn.read_head().await.map_err(|e| wire_error(&e, false))?;
        let mut resp = Response::new(PooledBody(Reader {
            conn: Some(conn),
            decoder: answer.body,
            keep_alive: answer.keep_alive,
            give_back: Some((self.clone(), authority.clone())),
        }));
        *resp.status_mut() = answer.status;
        *resp.version_mut() = answer.version;
        *resp.headers_mut() = answer.headers;
        // A body with nothing to read (204, `Content-Length: 0`) frees its connection now.
        resp.body_mut().0.finish_if_done();
        Ok(resp)
    }

    /// The most recently used idle connection to `authority` that has not expired or closed.
    fn take_idle(&self, authority: &Authority) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        let (_, conns) = idle.iter_mut().find(|(a, _)| a == authority)?;
        while let Some(mut c) = conns.pop_back() {
            if c.since.elapsed() < self.idle_timeout && c.conn.is_reusable() {
                return Some(c.conn);
            }
        }
        None
    }

    fn put(&self, authority: Authority, conn: Conn) {
        let mut idle = lock(&self.idle);
        let conns = match idle.iter().position(|(a, _)| *a == authority) {
            Some(i) => &mut idle[i].1,
            None => {
                idle.push((authority, VecDeque::new()));
                let last = idle.len() - 1;
                &mut idle[last].1
            }
        };
        // The oldest go first: over the cap or expired (checked from the front only, so a put
        // costs O(1) however many are idle; a closed one is found when taken).
        while conns.front().is_some_and(|c| {
            conns.len() >= self.max_idle_per_host || c.since.elapsed() >= self.idle_timeout
        }) {
            conns.pop_front();
        }
        conns.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    async fn connect(&self, authority: &Authority) -> Result<Conn, ProviderError> {
        // `Authority::host` keeps an IPv6 address's brackets; the resolver wants it bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::Timeout,
                format!(
                    "upstream request failed: connecting took longer than {:?}",
                    self.connect_timeout
                ),
            )
        })?
        .map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::Connect,
                format!("upstream request failed: cannot connect: {e}"),
            )
        })?;
        // A streamed token is one small write: no Nagle.
        let _ = tcp.set_nodelay(true);
        Ok(Conn::new(tcp))
    }
}

/// A wire failure as the provider error the gateway reports: an answer that is not valid
/// HTTP/1.x, or cut off in its body, is a protocol error; anything else an I/O error.
fn wire_error(e: &WireError, in_body: bool) -> ProviderError {
    let kind = match e {
        WireError::Invalid(_) => ProviderErrorKind::Protocol,
        WireError::Incomplete if in_body => ProviderErrorKind::Protocol,
        WireError::Incomplete | WireError::Io(_) => ProviderErrorKind::Io,
    };
    let what = if in_body {
        "reading the upstream answer failed"
    } else {
        "upstream request failed"
    };
    ProviderError::new(kind, format!("{what}: {e}"))
}

/// An upstream answer's body, read from its connection as it is polled; gives the connection
/// back to the pool at its end.
pub struct PooledBody(Reader);

/// A body's reading state. Apart from [`PooledBody`] so that what is left of an answer dropped
/// unread can be drained by a task without being a body (with its drop) itself.
struct Reader {
    /// `None` once the body ended (the connection went back or was closed) or failed.
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    give_back: Option<(Arc<Pool>, Authority)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("decoder", &self.0.decoder)
            .field("keep_alive", &self.0.keep_alive)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// At the body's end: the connection goes back to the pool if it may carry another
    /// request and nothing stray follows the answer; otherwise it is closed.
    fn finish_if_done(&mut self) {
        if !self.decoder.is_done() {
            return;
        }
        let (Some(conn), Some((pool, authority))) = (self.conn.take(), self.give_back.take())
        else {
            return;
        };
        if self.keep_alive && !conn.has_leftover() {
            pool.put(authority, conn);
        }
    }

    /// Decodes what is buffered, reading more when needed.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ProviderError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.decode(&mut self.decoder) {
                Ok(Step::Data(data)) => {
                    self.finish_if_done();
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(Step::Done) => {
                    self.finish_if_done();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(wire_error(&e, true))));
                }
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if self.decoder == Decoder::UntilClose => {
                    self.decoder = Decoder::Done;
                    self.keep_alive = false;
                    self.finish_if_done();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(wire_error(&WireError::Incomplete, true))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(wire_error(&WireError::Io(e), true))));
                }
            }
        }
    }

    /// Ends the body from what is already buffered, if that holds its end; `false` if more
    /// must be read. A broken rest ends it too (the connection is closed).
    fn finish_from_buffer(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        loop {
            match conn.decode(&mut self.decoder) {
                Ok(Step::Data(_)) => continue,
                Ok(Step::Done) => {
                    self.finish_if_done();
                    return true;
                }
                Ok(Step::NeedMore) => return false,
                Err(_) => {
                    self.conn = None;
                    return true;
                }
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        self.get_mut()
            .0
            .poll_next(cx)
            .map(|r| r.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for PooledBody {
    /// Not read to the end: an SSE reader stops at `[DONE]`, or the client went away. If the
    /// answer's end has arrived (the last chunk came with `[DONE]`, or is waiting in the
    /// socket), the connection goes back to the pool; otherwise it is closed, which is also
    /// how the upstream learns to stop generating for a client that left.
    fn drop(&mut self) {
        let rest = &mut self.0;
        if rest.conn.is_none() || !rest.keep_alive || rest.decoder == Decoder::UntilClose {
            return;
        }
        if rest.finish_from_buffer() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Some(conn) = rest.conn.as_mut() {
            if let Poll::Ready(Ok(1..)) = conn.poll_fill(&mut cx) {
                rest.finish_from_buffer();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const OK: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"];

    /// A raw HTTP/1.1 server: reads each request (head and `Content-Length` body), answers
    /// with `answer`'s pieces 20 ms apart, and closes the connection after `per_conn` answers
    /// (with a reset instead of a close when `reset`). Counts connections.
    async fn server_with(
        per_conn: usize,
        answer: &'static [&'static [u8]],
        reset: bool,
    ) -> (Authority, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        // Head, then as many body bytes as Content-Length says.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        for (i, piece) in answer.iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if sock.write_all(piece).await.is_err() {
                                return;
                            }
                        }
                    }
                    if reset {
                        sock.set_zero_linger().unwrap();
                    }
                    // Closed without a word, as a server's idle timeout does.
                });
            }
        });
        (authority, accepted)
    }

    async fn server(per_conn: usize) -> (Authority, Arc<AtomicUsize>) {
        server_with(per_conn, OK, false).await
    }

    fn head_for(authority: &Authority, body_len: usize) -> Vec<u8> {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {body_len}\r\n\r\n"
        )
        .into_bytes()
    }

    fn head(authority: &Authority) -> Vec<u8> {
        head_for(authority, 2)
    }

    async fn try_call(pool: &Arc<Pool>, authority: &Authority) -> Result<Bytes, ProviderError> {
        let resp = pool.send(authority, &head(authority), b"{}").await?;
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    async fn call(pool: &Arc<Pool>, authority: &Authority) -> Bytes {
        try_call(pool, authority).await.unwrap()
    }

    fn idle_count(pool: &Pool) -> usize {
        lock(&pool.idle).iter().map(|(_, c)| c.len()).sum()
    }

    fn pool() -> Arc<Pool> {
        Pool::new(Duration::from_secs(2), Duration::from_secs(90), 8)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_was_read() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(call(&pool, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A body far larger than the socket's buffers goes out whole (the server answers only
    /// once it has read every byte), over several writes.
    #[tokio::test]
    async fn a_large_request_body_is_written_whole() {
        let (authority, _) = server(usize::MAX).await;
        let pool = pool();
        let body = vec![b'x'; 8 << 20];
        let send = async {
            let resp = pool
                .send(&authority, &head_for(&authority, body.len()), &body)
                .await?;
            resp.into_body().collect().await.map(|b| b.to_bytes())
        };
        let answer = tokio::time::timeout(Duration::from_secs(20), send)
            .await
            .expect("the server got the whole body and answered");
        assert_eq!(answer.unwrap(), "ok");
        assert_eq!(
            call(&pool, &authority).await,
            "ok",
            "and the connection is reused"
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_or_reset_while_idle_is_replaced() {
        for reset in [false, true] {
            let (authority, accepted) = server_with(1, OK, reset).await;
            let pool = pool();
            for _ in 0..3 {
                assert_eq!(call(&pool, &authority).await, "ok", "reset: {reset}");
                // Let the server's close reach the pooled connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 3, "reset: {reset}");
        }
    }

    /// A chunked answer whose pieces arrive apart is read whole, and its connection reused.
    #[tokio::test]
    async fn a_chunked_answer_in_pieces_is_read_whole() {
        const CHUNKED: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nda",
            b"t\r\n1;x=y\r\na\r\n",
            b"0\r\ntrailer: 1\r\n\r\n",
        ];
        let (authority, accepted) = server_with(usize::MAX, CHUNKED, false).await;
        let pool = pool();
        for _ in 0..2 {
            assert_eq!(call(&pool, &authority).await, "data");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_that_closes_its_connection_is_not_reused() {
        const CLOSE: &[&[u8]] =
            &[b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"];
        let (authority, accepted) = server_with(1, CLOSE, false).await;
        let pool = pool();
        for _ in 0..2 {
            assert_eq!(call(&pool, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(idle_count(&pool), 0);
    }

    /// No length and no chunks: the body is everything until the server closes.
    #[tokio::test]
    async fn an_answer_without_length_runs_to_the_close() {
        const UNTIL_CLOSE: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\n\r\nall of", b" it"];
        let (authority, accepted) = server_with(1, UNTIL_CLOSE, false).await;
        let pool = pool();
        assert_eq!(call(&pool, &authority).await, "all of it");
        assert_eq!(call(&pool, &authority).await, "all of it");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_cut_off_answer_is_a_protocol_error() {
        const CUT: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"];
        let (authority, _) = server_with(1, CUT, false).await;
        let err = try_call(&pool(), &authority).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Protocol, "{err:?}");
        assert!(
            err.message.contains("before the answer was complete"),
            "{err:?}"
        );
        const NOT_HTTP: &[&[u8]] = &[b"220 smtp.example ESMTP\r\n\r\n"];
        let (authority, _) = server_with(1, NOT_HTTP, false).await;
        let err = try_call(&pool(), &authority).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Protocol, "{err:?}");
    }

    /// Dropped before its end: reused if the end has arrived, else closed (so an upstream
    /// that is still generating for a client that left stops).
    #[tokio::test]
    async fn an_answer_dropped_unread_is_reused_only_if_its_end_came() {
        const SLOW: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"2\r\nok\r\n0\r\n\r\n",
        ];
        let (authority, accepted) = server_with(usize::MAX, SLOW, false).await;
        let pool = pool();
        let resp = pool
            .send(&authority, &head(&authority), b"{}")
            .await
            .unwrap();
        drop(resp);
        assert_eq!(
            idle_count(&pool),
            0,
            "dropped with its body still coming: closed"
        );
        let resp = pool
            .send(&authority, &head(&authority), b"{}")
            .await
            .unwrap();
        // The rest of the answer is in the socket, unread, when the body is dropped.
        tokio::time::sleep(Duration::from_millis(60)).await;
        drop(resp);
        assert_eq!(idle_count(&pool), 1, "its end had come: kept");
        assert_eq!(call(&pool, &authority).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_capped() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Pool::new(Duration::from_secs(2), Duration::from_millis(50), 2);
        // Three at once: three connections, of which two stay idle.
        let (a, b, c) = tokio::join!(
            call(&pool, &authority),
            call(&pool, &authority),
            call(&pool, &authority)
        );
        assert_eq!((a, b, c), ("ok".into(), "ok".into(), "ok".into()));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(lock(&pool.idle)[0].1.len(), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(call(&pool, &authority).await, "ok");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "expired connections are not reused"
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let err = try_call(&pool(), &authority).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Connect, "{err:?}");
    }
}

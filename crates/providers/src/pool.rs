//! Keep-alive HTTP/1.1 connections to plain-`http://` upstreams (vLLM, llama.cpp, Ollama, the
//! sim), one pool per worker thread's client.
//!
//! Why not hyper_util's pooled client here: its checkout, pool bookkeeping and background tasks
//! cost the bare proxy 13–20 µs more CPU per request than a plain stack of hyper connections
//! (`bench/cpu-per-request.sh bare-hyper` against `bare-legacy`), and this pool took Switchyard's
//! CPU per request down by about 4% and per streamed frame by about 6% (docs/benchmarks.md).
//! `https://` keeps hyper_util's client: TLS, and HTTP/2 when the server offers it.
//!
//! What this keeps of what a pooled client does: a request that a reused connection hands back
//! unsent (the server closed it while it sat idle) goes out on a fresh one; idle connections
//! expire and are capped per host; connects time out and are told apart from other failures.
//! Expiry is checked when connections are taken or given back, not by a timer: a pool that
//! goes quiet keeps its idle connections until the next call or the server's own idle timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::client::chain;
use crate::{ProviderError, ProviderErrorKind};

type Sender = SendRequest<Full<Bytes>>;

/// How long a connection whose answer was not read to its end may take to become free before
/// it is given up (it is draining or closing).
const READY_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Pool {
    idle: Mutex<Vec<(Authority, VecDeque<Idle>)>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

struct Idle {
    sender: Sender,
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

    /// Sends `req` (origin-form URI, `Host` set) to `authority` on an idle connection or a new
    /// one; the answer's body hands the connection back when it is dropped.
    pub(crate) async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, ProviderError> {
        while let Some(mut sender) = self.take_idle(authority) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, authority, sender)),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closing. Try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(send_error(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(authority).await?;
        let resp = sender.send_request(req).await.map_err(send_error)?;
        Ok(self.wrap(resp, authority, sender))
    }

    fn wrap(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        authority: &Authority,
        sender: Sender,
    ) -> Response<PooledBody> {
        let pool = self.clone();
        let authority = authority.clone();
        resp.map(|inner| PooledBody {
            ended: inner.is_end_stream(),
            inner,
            give_back: Some((pool, authority, sender)),
        })
    }

    /// The most recently used idle connection to `authority` that has not expired or closed.
    fn take_idle(&self, authority: &Authority) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        let (_, conns) = idle.iter_mut().find(|(a, _)| a == authority)?;
        while let Some(c) = conns.pop_back() {
            if c.since.elapsed() < self.idle_timeout && !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    fn put(&self, authority: Authority, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        let conns = match idle.iter().position(|(a, _)| *a == authority) {
            Some(i) => &mut idle[i].1,
            None => {
                idle.push((authority, VecDeque::new()));
                let last = idle.len() - 1;
                &mut idle[last].1
            }
        };
        // The oldest go first: over the cap, expired or closed (checked from the front only,
        // so a put costs O(1) however many are idle).
        while conns.front().is_some_and(|c| {
            conns.len() >= self.max_idle_per_host
                || c.since.elapsed() >= self.idle_timeout
                || c.sender.is_closed()
        }) {
            conns.pop_front();
        }
        conns.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self, authority: &Authority) -> Result<Sender, ProviderError> {
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
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| {
                ProviderError::new(
                    ProviderErrorKind::Connect,
                    format!("upstream request failed: HTTP handshake: {e}"),
                )
            })?;
        tokio::spawn(async move {
            // Ends when the connection closes; its errors reach the request that sees them.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn send_error(e: hyper::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        ProviderErrorKind::Timeout
    } else {
        ProviderErrorKind::Io
    };
    ProviderError::new(kind, format!("upstream request failed: {}", chain(&e)))
}

/// An upstream answer's body; gives its connection back to the pool when dropped.
pub struct PooledBody {
    inner: Incoming,
    /// The body was read to its end, so the connection is free (or about to be).
    ended: bool,
    give_back: Option<(Arc<Pool>, Authority, Sender)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let Some((pool, authority, mut sender)) = self.give_back.take() else {
            return;
        };
        if self.ended || self.inner.is_end_stream() {
            pool.put(authority, sender);
            return;
        }
        // Not read to the end (an SSE reader stops at `[DONE]`; a client went away): hyper
        // finishes or drops the rest on its own, and the connection is free once it says so.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                    pool.put(authority, sender);
                }
            });
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

    /// A raw HTTP/1.1 server answering `ok` to each request; counts connections, and closes
    /// each one after `per_conn` answers.
    async fn server(per_conn: usize) -> (Authority, Arc<AtomicUsize>) {
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
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    // Closed without a word, as a server's idle timeout does.
                });
            }
        });
        (authority, accepted)
    }

    fn request(authority: &Authority) -> Request<Full<Bytes>> {
        Request::post("/v1/chat/completions")
            .header(http::header::HOST, authority.as_str())
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    async fn call(pool: &Arc<Pool>, authority: &Authority) -> Bytes {
        let resp = pool.send(authority, request(authority)).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_was_read() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Pool::new(Duration::from_secs(2), Duration::from_secs(90), 8);
        for _ in 0..5 {
            assert_eq!(call(&pool, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let (authority, accepted) = server(1).await;
        let pool = Pool::new(Duration::from_secs(2), Duration::from_secs(90), 8);
        for _ in 0..3 {
            assert_eq!(call(&pool, &authority).await, "ok");
            // Let the server's close reach the pooled connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_answer_dropped_unread_frees_its_connection_later() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Pool::new(Duration::from_secs(2), Duration::from_secs(90), 8);
        let resp = pool.send(&authority, request(&authority)).await.unwrap();
        drop(resp);
        // Given back by a task once hyper has the rest of the answer.
        for _ in 0..100 {
            if lock(&pool.idle).iter().any(|(_, c)| !c.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(call(&pool, &authority).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
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

    /// The race a pooled client must survive: a connection that looked free takes the request,
    /// then closes before writing it. hyper hands such a request back unsent, and it goes out
    /// on a fresh connection. Driven step by step, so the close lands after the request was
    /// queued on the idle connection and before that connection wrote anything.
    #[tokio::test]
    async fn a_request_handed_back_unsent_goes_out_on_a_fresh_connection() {
        use futures_util::FutureExt;
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Pool::new(Duration::from_secs(2), Duration::from_secs(90), 8);
        let tcp = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        // Polled once, the connection says it wants a request; then nothing drives it.
        let mut conn = Box::pin(conn);
        assert!(conn.as_mut().now_or_never().is_none());
        assert!(sender.is_ready() && !sender.is_closed());
        pool.put(authority.clone(), sender);

        let mut send = Box::pin(pool.send(&authority, request(&authority)));
        // First step: the idle connection is ready and takes the request, which waits in its
        // queue for an answer.
        assert!(send.as_mut().now_or_never().is_none());
        assert!(
            lock(&pool.idle)[0].1.is_empty(),
            "the idle connection was taken"
        );
        // The connection closes with the request still queued.
        drop(conn);
        let resp = send.await.expect("the request is retried, not failed");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the retry went out on a new connection"
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let pool = Pool::new(Duration::from_secs(2), Duration::from_secs(90), 8);
        let err = pool
            .send(&authority, request(&authority))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Connect, "{err:?}");
    }
}

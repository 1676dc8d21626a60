//! Test servers that speak providers' wire formats on loopback, since remote APIs cannot be
//! reached from test machines. Each follows its vendor's documentation (named in its module),
//! including error bodies, `Retry-After`, SSE framing and usage chunks, and can be scripted to
//! misbehave: stall, cut the connection mid-stream, answer 429 or 5xx.
//!
//! `mock-upstream` (src/bin) runs the OpenAI one as a standalone, fast upstream for benchmarks.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;

/// A running test server; dropping it stops the server.
pub struct Running {
    pub addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Serves `app` on an ephemeral loopback port until the returned handle is dropped.
pub async fn serve(app: axum::Router) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        _shutdown: tx,
    })
}

/// A test server's replies: a queue scripted by the test, then a default for every request after.
pub(crate) struct Script<R> {
    queue: Mutex<std::collections::VecDeque<R>>,
    default: Mutex<R>,
}

impl<R: Clone> Script<R> {
    pub(crate) fn new(default: R) -> Self {
        Script {
            queue: Mutex::new(std::collections::VecDeque::new()),
            default: Mutex::new(default),
        }
    }

    /// Queues a reply for the next request not yet answered.
    pub(crate) fn push(&self, reply: R) {
        lock(&self.queue).push_back(reply);
    }

    pub(crate) fn set_default(&self, reply: R) {
        *lock(&self.default) = reply;
    }

    /// The next scripted reply, else the default.
    pub(crate) fn next(&self) -> R {
        lock(&self.queue)
            .pop_front()
            .unwrap_or_else(|| lock(&self.default).clone())
    }
}

/// A poisoned lock in a test server is still usable: the data is plain counters and records.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a stream as cancelled if it is dropped before it ends.
pub(crate) struct DropGuard {
    pub(crate) finished: bool,
    pub(crate) cancelled: Arc<AtomicU64>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) type Tx = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A body stream fed by a task; the task ends (and its guard records a cancel) when the client
/// goes away and the channel closes.
pub(crate) fn async_stream<F, Fut>(
    f: F,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(Tx) -> Fut,
    Fut: std::future::Future<
            Output = Result<(), tokio::sync::mpsc::error::SendError<Result<Bytes, std::io::Error>>>,
        > + Send
        + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let fut = f(tx);
    tokio::spawn(async move {
        let _ = fut.await;
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

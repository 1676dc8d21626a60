//! Test servers that speak providers' wire formats on loopback, since remote APIs cannot be
//! reached from test machines. Each follows its vendor's documentation (named in its module),
//! including error bodies, `Retry-After`, SSE framing and usage chunks, and can be scripted to
//! misbehave: stall, cut the connection mid-stream, answer 429 or 5xx.
//!
//! `mock-upstream` (src/bin) runs the OpenAI one as a standalone, fast upstream for benchmarks.

pub mod anthropic;
pub mod openai;

use std::net::SocketAddr;

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

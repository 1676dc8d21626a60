//! The Switchyard gateway: an OpenAI-compatible endpoint in front of many providers.
//!
//! A request flows one way through named phases (see [`app`]): accept → authenticate and
//! govern → classify → pick a target → call the provider adapter (with retries and fallback,
//! [`attempt`]) → stream back ([`relay`]) → finish ([`finish`]: always runs, hands the outcome
//! to the meter, which writes the ledger off the request path).

pub mod app;
pub mod attempt;
pub mod config;
pub mod finish;
mod ids;
pub mod messages;
pub mod relay;
pub mod state;

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use switchyard_meter::{Meter, MeterConfig, MeterTask, PriceCatalog};

pub use app::app;
pub use config::Config;
pub use state::Gateway;

/// Opens the meter (ledger, price catalog) for a config.
pub fn start_meter(cfg: &Config) -> anyhow::Result<(Meter, MeterTask)> {
    let prices = match &cfg.prices.catalog {
        Some(path) => {
            PriceCatalog::from_path(path).map_err(|e| anyhow::anyhow!("prices.catalog: {e}"))?
        }
        None => {
            PriceCatalog::builtin().map_err(|e| anyhow::anyhow!("built-in price catalog: {e}"))?
        }
    };
    let meter_cfg = MeterConfig {
        ledger_path: cfg.ledger.path.clone(),
        queue_capacity: cfg.ledger.queue_capacity,
        batch_size: cfg.ledger.batch_size,
        flush_interval: Duration::from_millis(cfg.ledger.flush_interval_ms),
        prices,
        targets: cfg.targets.clone().into_iter().collect(),
    };
    Meter::start(meter_cfg)
        .map_err(|e| anyhow::anyhow!("ledger {}: {e}", cfg.ledger.path.display()))
}

/// A gateway serving on a socket.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl Running {
    /// Stops as SIGTERM does: refuses new connections, drains in-flight requests and the
    /// ledger writer. Returns the number of ledger records written.
    pub async fn shutdown(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(());
        self.task.await.context("gateway task")?
    }
}

/// Builds everything and starts serving; returns once the socket is bound.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    start_on(cfg, listener).await
}

pub async fn start_on(cfg: Config, listener: tokio::net::TcpListener) -> anyhow::Result<Running> {
    let (meter, meter_task) = start_meter(&cfg)?;
    let gateway = Arc::new(Gateway::build(&cfg, meter).map_err(|e| anyhow::anyhow!("{e}"))?);
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    let gw = gateway.clone();
    let task = tokio::spawn(async move {
        run(gw, listener, meter_task, grace, async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Running {
        addr,
        gateway,
        stop,
        task,
    })
}

async fn run(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    meter_task: MeterTask,
    grace: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<u64> {
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let draining_gw = gw.clone();
    let signal = async move {
        stop.await;
        draining_gw
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = drain_tx.send(true);
    };
    let server = axum::serve(listener, app(gw.clone())).with_graceful_shutdown(signal);
    let server = server.into_future();
    tokio::pin!(server);
    let mut drain_rx2 = drain_rx.clone();
    tokio::select! {
        r = &mut server => r.context("server")?,
        _ = async {
            let _ = drain_rx2.wait_for(|d| *d).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("in-flight requests still open after the grace period; closing them");
        }
    }
    // Every request's finish task hands its record to the meter before the writer drains.
    gw.tasks.close();
    gw.tasks.wait().await;
    let written = meter_task
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("ledger: {e}"))?;
    tracing::info!(records = written, "ledger drained");
    Ok(written)
}

/// Serves until SIGTERM or Ctrl-C, then drains.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = start(cfg).await?;
    tracing::info!(addr = %running.addr, "switchyard listening");
    shutdown_signal().await;
    tracing::info!("shutdown signal: draining");
    running.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

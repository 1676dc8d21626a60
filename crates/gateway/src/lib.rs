//! The Switchyard gateway: an OpenAI-compatible endpoint in front of many providers.
//!
//! A request flows one way through named phases (see [`mod@app`]): accept → authenticate and
//! govern → classify → pick a target → call the provider adapter (with retries and fallback,
//! [`attempt`]) → stream back ([`relay`]) → finish ([`finish`]: always runs, hands the outcome
//! to the meter, which writes the ledger off the request path).

pub mod app;
pub mod attempt;
pub mod config;
pub mod finish;
mod ids;
pub mod memory;
pub mod messages;
pub mod relay;
pub mod state;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use switchyard_meter::{Meter, MeterConfig, MeterTask, PriceCatalog};

pub use app::{app, GatewayService};
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
    tokio::spawn(async move {
        stop.await;
        draining_gw
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = drain_tx.send(true);
    });
    serve_until_drained(gw.clone(), listener, drain_rx, grace).await?;
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

/// Serves `listener` until `drain` turns true, then lets in-flight requests finish for up to
/// `grace`.
///
/// Each connection is served by `switchyard-h1`'s HTTP/1.1 server on its own task, calling
/// [`GatewayService`] per request. Clients speak HTTP/1.1 to the gateway (the OpenAI and
/// Anthropic SDKs do); HTTP/2 is used towards upstreams that offer it.
async fn serve_until_drained(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    drain: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<()> {
    let server = Arc::new(server_config(&gw));
    let service = GatewayService::new(gw);
    let connections = tokio_util::task::TaskTracker::new();
    let mut stop = drain.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            // A dropped sender also stops: nobody can tell us to drain any more.
            _ = stop.wait_for(|d| *d) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                // No Nagle: a streamed token is one small write, and Nagle would hold it until
                // the client acknowledged the previous one (tens of ms with delayed ACKs).
                let _ = tcp.set_nodelay(true);
                connections.spawn(serve_connection(
                    service.clone(),
                    server.clone(),
                    tcp,
                    drain.clone(),
                ));
            }
            // The client gave up between connecting and our accept: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            // Out of file descriptors and the like: accepting again at once would spin. A drain
            // meanwhile is not kept waiting for the pause.
            Err(e) => {
                tracing::error!(error = %e, "accept failed; retrying in 1 s");
                tokio::select! {
                    _ = stop.wait_for(|d| *d) => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
    connections.close();
    tokio::select! {
        _ = connections.wait() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("in-flight requests still open after the grace period; closing them");
        }
    }
    Ok(())
}

/// The client connections' limits, from the config the gateway was built with.
fn server_config(gw: &Gateway) -> switchyard_h1::server::ServerConfig {
    let c = &gw.connections;
    switchyard_h1::server::ServerConfig {
        max_body: gw.max_body_bytes,
        header_timeout: Duration::from_millis(c.header_timeout_ms),
        body_timeout: Duration::from_millis(c.body_timeout_ms),
        idle_timeout: Duration::from_millis(c.idle_timeout_ms),
        send_timeout: Duration::from_millis(c.send_timeout_ms),
        error_body: app::connection_error_body,
    }
}

/// One client connection: HTTP/1.1 with keep-alive until the client closes it or the gateway
/// drains, when the request in flight (if any) is finished and the connection closed.
async fn serve_connection(
    service: GatewayService,
    server: Arc<switchyard_h1::server::ServerConfig>,
    tcp: tokio::net::TcpStream,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    let handler = |req| service.handle_infallible(req);
    if let Err(e) = switchyard_h1::server::serve_connection(tcp, &server, handler, drain).await {
        tracing::trace!(error = %e, "client connection ended with an error");
    }
}

/// Accept errors that concern one connection only (as hyper and axum treat them).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Two workers per CPU by default, not one: the kernel hashes each client connection to one
/// worker's socket, so a client holding a few dozen keep-alive connections loads the workers
/// unevenly (77:23 to 95:5 between two workers in the benchmark). With one worker per CPU the
/// busier one saturates its core while the other core idles; with two per CPU the scheduler
/// moves runnable workers to whichever core is free (docs/benchmarks.md, "After run 18").
pub const WORKERS_PER_CPU: usize = 2;

/// Serves until SIGTERM or Ctrl-C, then drains; blocks the calling thread.
///
/// Threads like nginx's worker processes: `workers` OS threads each run a single-threaded
/// runtime accepting from its own socket (see `bind_workers`), and a request lives on one
/// thread from accept to answer (its upstream connections too, see `HttpClients`). A
/// work-stealing runtime wakes idle workers to share each burst of events: on a busy gateway
/// that is several cross-thread wake-ups per request, which cost more CPU than the request
/// itself. Blocking work (embeddings, the local engine) and the ledger writer keep their own
/// threads.
pub fn serve_blocking(cfg: Config) -> anyhow::Result<()> {
    let workers = cfg.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            * WORKERS_PER_CPU
    });
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sockets = bind_workers(cfg.listen, workers)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let (meter, meter_task) = start_meter(&cfg)?;
    match memory::allocator_options() {
        Some(o) if o.background_thread => tracing::debug!(
            dirty_decay_ms = o.dirty_decay_ms,
            "jemalloc purges freed pages in the background"
        ),
        Some(_) => tracing::warn!(
            "jemalloc's background threads are off: freed memory is returned only as requests allocate"
        ),
        None => tracing::debug!("jemalloc is not the allocator: heap gauges are off"),
    }
    let gw = {
        let _in_runtime = main_rt.enter();
        Arc::new(Gateway::build(&cfg, meter).map_err(|e| anyhow::anyhow!("{e}"))?)
    };
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let (exited_tx, mut exited_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut threads = Vec::with_capacity(workers);
    for (i, socket) in sockets.into_iter().enumerate() {
        let gw = gw.clone();
        let drain = drain_rx.clone();
        let exited = exited_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-w{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let result = worker(gw, socket, drain, grace);
                let _ = exited.send(i);
                result
            })?;
        threads.push(thread);
    }
    drop(exited_tx);
    tracing::info!(addr = %cfg.listen, workers, "switchyard listening");
    main_rt.block_on(async {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutdown signal: draining"),
            Some(i) = exited_rx.recv() => tracing::error!(worker = i, "a worker stopped; shutting down"),
        }
    });
    gw.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = drain_tx.send(true);
    // Each worker waits for the finish tasks it spawned once its server is done; closing the
    // tracker now lets those waits end.
    gw.tasks.close();
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a worker thread panicked")),
        }
    }
    let written = main_rt
        .block_on(meter_task.shutdown())
        .map_err(|e| anyhow::anyhow!("ledger: {e}"))?;
    tracing::info!(records = written, "ledger drained");
    failure.map_or(Ok(()), Err)
}

/// One listening socket per worker on the same address (SO_REUSEPORT). The kernel spreads new
/// connections over them by a hash of the connection's addresses. With one shared socket, the
/// worker that happened to be idle took each connection, so a client's few keep-alive
/// connections — and all their load — could sit on one worker while the other idled: the
/// gateway then topped out at one core (bench/run.sh, docs/benchmarks.md).
fn bind_workers(addr: SocketAddr, workers: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    // A port already held — even by a process that set SO_REUSEPORT too, whose traffic we
    // would otherwise silently share — fails this plain bind.
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(1024)?;
        let listener = std::net::TcpListener::from(socket);
        // Port 0: the others join the port the first one got.
        bound = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// One worker thread: its own runtime, serving from its own socket.
fn worker(
    gw: Arc<Gateway>,
    socket: std::net::TcpListener,
    drain: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<()> {
    let rt = worker_runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(socket)?;
        serve_until_drained(gw.clone(), listener, drain, grace).await?;
        gw.tasks.wait().await;
        Ok(())
    })
}

/// A worker's runtime: single-threaded, with its timer floor already spawned (dropped with the
/// runtime when serving ends; not one of `Gateway::tasks`, so draining does not wait for it).
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.spawn(timer_floor());
    Ok(rt)
}

/// How often each worker's timer floor ticks: below the default timeouts (5 s and more).
const TIMER_FLOOR: Duration = Duration::from_secs(1);

/// Keeps a timer at most `TIMER_FLOOR` away on the worker's runtime, for the whole time it runs.
///
/// Why: every request arms a timeout (`attempt.rs`). tokio's timer wakes its own I/O driver (an
/// eventfd write, then an extra turn of `epoll_wait`) whenever a new timer is due sooner than the
/// driver's next planned wake-up, and a worker that went idle with no timer has none planned, so
/// at moderate load nearly every request paid that self-wake. With this timer pending the driver
/// always plans to wake within a second, and a request's longer timeout no longer undercuts it.
/// Costs one wake-up per second per worker; timeouts shorter than the floor still work as before.
async fn timer_floor() {
    let mut tick = tokio::time::interval(TIMER_FLOOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Serves until SIGTERM or Ctrl-C, then drains, on the current runtime.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Write system calls this thread has made so far (Linux's per-thread I/O accounting).
    fn thread_write_calls() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        let line = io.lines().find_map(|l| l.strip_prefix("syscw:")).unwrap();
        line.trim().parse().unwrap()
    }

    /// Write calls made by `rt`'s thread while `rounds` requests arrive one by one on an idle
    /// runtime and each arms a 60 s timeout that is polled while pending, as `attempt.rs` does.
    /// In lockstep: the next byte is sent only after the runtime acknowledged the last one (over a
    /// std channel, whose wake-up is a futex call, not a write) and 1 ms more, so the runtime goes
    /// idle before every round however slowly it is scheduled.
    fn writes_while_arming_timeouts(rt: tokio::runtime::Runtime, rounds: usize) -> u64 {
        use std::io::Write as _;
        let (mut feed, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let (ack, acked) = std::sync::mpsc::channel::<()>();
        let feeder = std::thread::spawn(move || {
            for _ in 0..rounds {
                acked.recv().unwrap();
                std::thread::sleep(Duration::from_millis(1));
                feed.write_all(b"x").unwrap();
            }
        });
        let writes = rt.block_on(async move {
            let rx = tokio::net::UnixStream::from_std(rx).unwrap();
            // Let the floor's first tick (immediate) pass before counting.
            tokio::task::yield_now().await;
            let before = thread_write_calls();
            let mut buf = [0u8; 1];
            for _ in 0..rounds {
                ack.send(()).unwrap();
                loop {
                    rx.readable().await.unwrap();
                    match rx.try_read(&mut buf) {
                        Ok(1) => break,
                        Ok(_) => panic!("the feeder hung up"),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), tokio::task::yield_now()).await;
            }
            thread_write_calls() - before
        });
        feeder.join().unwrap();
        writes
    }

    #[test]
    fn a_request_timeout_does_not_make_an_idle_worker_wake_itself() {
        let rounds = 200;
        let plain = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let without_floor = writes_while_arming_timeouts(plain, rounds);
        let with_floor = writes_while_arming_timeouts(worker_runtime().unwrap(), rounds);
        // Without the floor tokio wakes its own driver (an eventfd write) for nearly every
        // timeout armed on an idle runtime; if this ever stops, the floor can go.
        assert!(
            without_floor >= rounds as u64 / 2,
            "tokio no longer wakes itself per timeout ({without_floor} writes in {rounds} rounds)"
        );
        assert!(
            with_floor <= rounds as u64 / 20,
            "the worker runtime woke itself {with_floor} times in {rounds} rounds"
        );
    }

    #[test]
    fn workers_share_one_port_and_a_held_port_is_refused() {
        let sockets = bind_workers("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = sockets[0].local_addr().unwrap().port();
        assert!(sockets
            .iter()
            .all(|s| s.local_addr().unwrap().port() == port));
        // The port is now held by a SO_REUSEPORT group: a second gateway must not join it.
        let again = bind_workers(sockets[0].local_addr().unwrap(), 2);
        assert!(again.is_err(), "a second set of workers joined a held port");
        // Every worker's socket takes connections.
        for s in &sockets {
            s.set_nonblocking(false).unwrap();
        }
        let mut seen = vec![false; sockets.len()];
        for _ in 0..200 {
            let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            for (i, s) in sockets.iter().enumerate() {
                s.set_nonblocking(true).unwrap();
                if s.accept().is_ok() {
                    seen[i] = true;
                }
            }
            if seen.iter().all(|&x| x) {
                break;
            }
        }
        assert!(
            seen.iter().all(|&x| x),
            "some worker never got a connection: {seen:?}"
        );
    }
}

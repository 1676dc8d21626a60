//! The request path's handle ([`Meter`]: one bounded-queue send per request) and the ledger
//! writer behind it: a dedicated thread that turns outcomes into records (token estimates, cost,
//! energy, carbon), updates the metrics, and writes batches, one transaction each.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchyard_api::TokenUsage;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::energy::{self, EnergyInputs};
use crate::ledger::{Ledger, SqliteLedger};
use crate::metrics::Metrics;
use crate::prices::{self, Price, PriceCatalog};
use crate::{tokens, LedgerRecord, MeterConfig, MeterError, Outcome, TargetMeterConfig};

/// Prices and per-target facts, shared by the request path (for the cost header) and the writer.
#[derive(Debug)]
struct Facts {
    prices: PriceCatalog,
    targets: HashMap<String, TargetMeterConfig>,
}

/// Cheap, cloneable handle used on the request path.
#[derive(Clone)]
pub struct Meter {
    tx: mpsc::Sender<Outcome>,
    facts: Arc<Facts>,
    metrics: Arc<Metrics>,
}

/// The running writer; [`MeterTask::shutdown`] drains it. Dropping it without shutdown detaches
/// the writer, which then stops (flushing) once every [`Meter`] handle is dropped.
pub struct MeterTask {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<u64, MeterError>>,
}

impl Meter {
    /// Opens the ledger and starts the writer on its own thread (SQLite calls block).
    pub fn start(cfg: MeterConfig) -> Result<(Meter, MeterTask), MeterError> {
        cfg.validate()?;
        let ledger = SqliteLedger::open(&cfg.ledger_path)?;
        let facts = Arc::new(Facts {
            prices: cfg.prices,
            targets: cfg.targets,
        });
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let writer = Writer {
            rx,
            stop: stop_rx,
            ledger: Box::new(ledger),
            facts: facts.clone(),
            metrics: metrics.clone(),
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
        };
        std::thread::Builder::new()
            .name("switchyard-ledger".into())
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer.run()),
                    Err(e) => Err(MeterError::Io(e)),
                };
                let _ = done_tx.send(result);
            })?;
        Ok((
            Meter { tx, facts, metrics },
            MeterTask {
                stop: stop_tx,
                done: done_rx,
            },
        ))
    }

    /// Queues a finished request for the ledger. Waits for room when the queue is full
    /// (backpressure rather than loss); counts a drop only if the writer has stopped.
    pub async fn record(&self, mut outcome: Outcome) {
        outcome.shed_estimate_inputs();
        if let Err(e) = self.tx.send(outcome).await {
            self.metrics.records_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = %e.0.id, "ledger writer has stopped; request not recorded");
        }
    }

    /// Queues a finished request without waiting: `Err` gives the outcome back when the queue
    /// is full, for the caller to `record` (and so wait) off its hot path.
    // The outcome comes back by value on purpose: boxing it would allocate per request.
    #[allow(clippy::result_large_err)]
    pub fn try_record(&self, mut outcome: Outcome) -> Result<(), Outcome> {
        outcome.shed_estimate_inputs();
        match self.tx.try_send(outcome) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(o)) => Err(o),
            Err(mpsc::error::TrySendError::Closed(o)) => {
                self.metrics.records_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %o.id, "ledger writer has stopped; request not recorded");
                Ok(())
            }
        }
    }

    /// The price for a target: its config override (`config:<target>`), else the catalog's
    /// (`catalog:<provider>/<model>@<date>`).
    pub fn price_for(
        &self,
        target: &str,
        provider_kind: &str,
        model: &str,
    ) -> Option<(Price, String)> {
        self.facts
            .price_for(target, provider_kind, model)
            .map(|(p, s)| (p.clone(), s))
    }

    /// Appends the Prometheus text exposition of every meter metric.
    pub fn render_metrics(&self, out: &mut String) {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        self.metrics.render(depth, out);
    }
}

impl MeterTask {
    /// Stops accepting records, writes everything already queued, and closes the ledger.
    /// Returns the number of records written over the writer's life.
    pub async fn shutdown(self) -> Result<u64, MeterError> {
        let _ = self.stop.send(());
        self.done.await.map_err(|_| MeterError::WriterGone)?
    }
}

impl Facts {
    fn price_for(
        &self,
        target: &str,
        provider_kind: &str,
        model: &str,
    ) -> Option<(&Price, String)> {
        find_price(
            &self.prices,
            &self.targets,
            Some(target),
            Some(provider_kind),
            Some(model),
        )
    }
}

/// A target's config price wins over the catalog's.
fn find_price<'a>(
    prices: &'a PriceCatalog,
    targets: &'a HashMap<String, TargetMeterConfig>,
    target: Option<&str>,
    provider_kind: Option<&str>,
    model: Option<&str>,
) -> Option<(&'a Price, String)> {
    if let Some((t, p)) = target.and_then(|t| Some((t, targets.get(t)?.price.as_ref()?))) {
        // `concat`, not `format!`: this runs per record on the writer thread.
        return Some((p, ["config:", t].concat()));
    }
    prices
        .lookup(provider_kind?, model?)
        .map(|e| (&e.price, e.source_label()))
}

struct Writer {
    rx: mpsc::Receiver<Outcome>,
    stop: oneshot::Receiver<()>,
    ledger: Box<dyn Ledger>,
    facts: Arc<Facts>,
    metrics: Arc<Metrics>,
    batch_size: usize,
    flush_interval: std::time::Duration,
}

/// How often the writer wakes to drain the queue and stage what it found. Short, so each wake
/// does a little work (about 20 rows at 2k req/s) rather than a burst that holds up the request
/// threads; the batch is still committed only every `flush_interval`.
const STAGE_TICK: std::time::Duration = std::time::Duration::from_millis(10);

impl Writer {
    async fn run(mut self) -> Result<u64, MeterError> {
        let mut written = 0u64;
        let mut batch = Batch::default();
        let mut stopping = false;
        // The writer wakes on a short tick and drains everything queued, rather than waking for
        // each record: under load a wake-up per request costs a context switch per request on
        // the sending side and here (seen in the benchmark's profile). The tick also bounds how
        // long a sender waits on a full queue and how soon a closed queue is noticed.
        let tick = self
            .flush_interval
            .clamp(std::time::Duration::from_millis(1), STAGE_TICK);
        let mut next = Instant::now() + tick;
        loop {
            tokio::select! {
                biased;
                // Stop: refuse new records, keep draining. A dropped task handle detaches the
                // writer instead: it runs until every `Meter` handle is gone.
                stop = &mut self.stop, if !stopping => {
                    stopping = true;
                    if stop.is_ok() {
                        self.rx.close();
                    }
                }
                _ = sleep_until(Some(next)) => {
                    next = Instant::now() + tick;
                }
            }
            let mut closed = false;
            loop {
                match self.rx.try_recv() {
                    Ok(o) => {
                        let r = to_record(o, &self.facts.prices, &self.facts.targets);
                        self.metrics.observe(&r);
                        batch.pending.push(r);
                        if batch.pending.len() >= self.batch_size {
                            self.stage(&mut batch);
                        }
                        if batch.staged >= self.batch_size as u64 {
                            written += self.commit(&mut batch);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
            self.stage(&mut batch);
            if batch.staged > 0 {
                let d = *batch
                    .deadline
                    .get_or_insert_with(|| Instant::now() + self.flush_interval);
                if Instant::now() >= d {
                    written += self.commit(&mut batch);
                }
            }
        }
        self.stage(&mut batch);
        written += self.commit(&mut batch);
        Ok(written)
    }

    /// Adds the pending rows to the open batch. A failure loses the whole open batch, which is
    /// counted as dropped.
    fn stage(&mut self, batch: &mut Batch) {
        if batch.pending.is_empty() {
            return;
        }
        let n = batch.pending.len() as u64;
        match self.ledger.stage(&batch.pending) {
            Ok(()) => batch.staged += n,
            Err(e) => {
                let lost = batch.staged + n;
                self.metrics
                    .records_dropped
                    .fetch_add(lost, Ordering::Relaxed);
                tracing::error!(error = %e, records = lost, "ledger batch failed to write; records lost");
                batch.staged = 0;
                batch.deadline = None;
            }
        }
        batch.pending.clear();
    }

    /// Commits the open batch; returns how many records landed. A failed batch is counted as
    /// dropped.
    fn commit(&mut self, batch: &mut Batch) -> u64 {
        let n = std::mem::take(&mut batch.staged);
        batch.deadline = None;
        if n == 0 {
            return 0;
        }
        match self.ledger.commit() {
            Ok(()) => {
                self.metrics.records_written.fetch_add(n, Ordering::Relaxed);
                n
            }
            Err(e) => {
                self.metrics.records_dropped.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "ledger batch failed to write; records lost");
                0
            }
        }
    }
}

/// The writer's batch: rows converted but not yet handed to the ledger, and how many rows the
/// ledger holds uncommitted since when.
#[derive(Default)]
struct Batch {
    pending: Vec<LedgerRecord>,
    staged: u64,
    /// When the open batch must be committed (`flush_interval` after its first row).
    deadline: Option<Instant>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Turns an outcome into its ledger row: token counts (estimated with our tokenizer when the
/// provider reported none), cost, energy and carbon. Pure apart from the tokenizer's lazy load.
///
/// A failed request with no usage and no answer text is recorded with zero tokens and, when the
/// target is priced, zero cost: providers do not bill requests they answered with an error.
///
/// Takes the outcome by value: its strings move into the record instead of being copied (the
/// copies and frees were a visible share of the writer thread's CPU).
pub fn to_record(
    outcome: Outcome,
    prices: &PriceCatalog,
    targets: &HashMap<String, TargetMeterConfig>,
) -> LedgerRecord {
    let o = &outcome;
    let answered = o.status < 400 || o.output_text.as_deref().is_some_and(|t| !t.is_empty());
    let (usage, estimated) = match (&o.usage, answered) {
        (Some(u), _) => (*u, false),
        (None, false) => (TokenUsage::default(), false),
        (None, true) => {
            let out = o.output_text.as_deref();
            let u = match (&o.request, &o.input_text) {
                (Some(req), _) => tokens::estimate_chat(req, out),
                (None, Some(input)) => tokens::estimate_text(input, out),
                (None, None) => tokens::estimate_text("", out),
            };
            (u, true)
        }
    };

    let target_cfg = o.target.as_deref().and_then(|t| targets.get(t));
    let price = find_price(
        prices,
        targets,
        o.target.as_deref(),
        o.provider_kind,
        o.model.as_deref(),
    );
    let (cost_usd, price_source) = match price {
        Some((p, source)) => (Some(prices::cost(p, &usage)), Some(source)),
        None => (None, None),
    };

    let serve_ms = o.upstream_latency_ms.unwrap_or(o.latency_ms);
    let (energy_wh, energy_method) = energy::energy(
        o.provider_energy_wh,
        o.provider_energy_method,
        target_cfg.and_then(|t| t.energy.as_ref()),
        &EnergyInputs {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            serve_ms,
        },
    );
    let carbon_g = energy::carbon_g(energy_wh, target_cfg.and_then(|t| t.grid_g_co2e_per_kwh));

    let o = outcome;
    LedgerRecord {
        id: o.id,
        started_at_ms: o.started_at_ms,
        finished_at_ms: o.finished_at_ms,
        operation: o.operation.to_string(),
        route: o.route,
        class: o.class,
        key: o.key,
        team: o.team,
        task: o.task,
        provider: o.provider,
        provider_kind: o.provider_kind.map(Cow::Borrowed),
        target: o.target,
        model: o.model,
        response_model: o.response_model,
        stream: o.stream,
        status: o.status,
        error_type: o.error_type,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        tokens_estimated: estimated,
        cost_usd,
        price_source,
        ttft_ms: o.ttft_ms,
        latency_ms: o.latency_ms,
        upstream_latency_ms: o.upstream_latency_ms,
        overhead_us: o.overhead_us,
        attempts: o.attempts,
        fallbacks: o.fallbacks,
        energy_wh,
        energy_method,
        carbon_g,
    }
}

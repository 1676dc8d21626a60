//! The generation engine: shared weights, `max_concurrency` worker threads each with its own
//! KV cache, and a FIFO queue of jobs in front of them. Workers are plain OS threads, not tokio
//! workers: a forward pass blocks for milliseconds. Tokens go back through a bounded channel;
//! when its receiver is dropped (the client went away) the worker stops at the next token.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc as std_mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use switchyard_providers::Energy;
use tokio::sync::mpsc;

use crate::{
    energy::{EnergyMeter, RaplZone},
    model::Model,
    text::{TextCodec, TextStream},
};

/// Prompt tokens fed per forward pass during prefill: bounds the activation memory on long
/// prompts.
const PREFILL_CHUNK: usize = 512;

/// What one request asks of the engine.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub max_tokens: usize,
    /// Temperature 0 is greedy (argmax).
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub stops: Vec<String>,
}

impl GenParams {
    fn sampling(&self) -> Sampling {
        if self.temperature <= 0.0 || self.top_p <= 0.0 {
            Sampling::ArgMax
        } else if self.top_p < 1.0 {
            Sampling::TopP {
                p: self.top_p,
                temperature: self.temperature,
            }
        } else {
            Sampling::All {
                temperature: self.temperature,
            }
        }
    }
}

/// What a worker reports for one job, in order: `Started`, any number of `Text`, then `Done`
/// (or `Error` at any point).
#[derive(Debug)]
pub enum Event {
    /// The prompt is in the KV cache; tokens follow.
    Started,
    /// Text that is safe to show (whole characters, no partial stop string).
    Text(String),
    Done(Finished),
    Error(String),
}

#[derive(Debug, Clone)]
pub struct Finished {
    /// `stop` (end-of-turn token or stop string) or `length`.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    /// Every sampled token, the end-of-turn token included.
    pub completion_tokens: usize,
    pub energy: Option<Energy>,
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Waiting for a free worker.
    pub queued: Duration,
    /// Prompt processing up to the first sampled token.
    pub prefill: Duration,
    /// From the first sampled token to the last.
    pub decode: Duration,
}

/// Counters over the engine's life, for tests, metrics and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub queued: usize,
    pub active: usize,
    pub tokens_generated: u64,
    pub requests_finished: u64,
    /// Requests whose receiver went away before the end.
    pub requests_cancelled: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    active: AtomicUsize,
    tokens_generated: AtomicU64,
    requests_finished: AtomicU64,
    requests_cancelled: AtomicU64,
}

struct Job {
    prompt: Vec<u32>,
    params: GenParams,
    events: mpsc::Sender<Event>,
    enqueued: Instant,
}

/// Settings the workers share.
struct Shared {
    codec: Arc<TextCodec>,
    counters: Counters,
    rapl: Vec<RaplZone>,
    threads: usize,
    cpu_watts: f64,
}

pub struct Engine {
    jobs: std_mpsc::Sender<Job>,
    shared: Arc<Shared>,
    context_length: usize,
}

impl Engine {
    /// Starts `workers` threads, each with its own copy of the model state; the weight
    /// tensors themselves are reference-counted, so the copies share them.
    pub fn start(
        model: Model,
        codec: Arc<TextCodec>,
        context_length: usize,
        workers: usize,
        threads: usize,
        cpu_watts: f64,
    ) -> Result<Engine, String> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            codec,
            counters: Counters::default(),
            rapl: crate::energy::rapl_zones(),
            threads,
            cpu_watts,
        });
        for i in 0..workers {
            let model = model.clone();
            let rx = rx.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("local-gen-{i}"))
                .spawn(move || worker(model, rx, shared))
                .map_err(|e| format!("cannot start a generation thread: {e}"))?;
        }
        Ok(Engine {
            jobs: tx,
            shared,
            context_length,
        })
    }

    pub fn codec(&self) -> &TextCodec {
        &self.shared.codec
    }

    /// Tokens of prompt plus completion the engine accepts.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        EngineStats {
            queued: c.queued.load(Ordering::SeqCst),
            active: c.active.load(Ordering::SeqCst),
            tokens_generated: c.tokens_generated.load(Ordering::SeqCst),
            requests_finished: c.requests_finished.load(Ordering::SeqCst),
            requests_cancelled: c.requests_cancelled.load(Ordering::SeqCst),
        }
    }

    /// Queues a job; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the job. The caller has checked `prompt.len() + max_tokens` against the context.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        params: GenParams,
    ) -> Result<mpsc::Receiver<Event>, String> {
        let (tx, rx) = mpsc::channel(64);
        self.shared.counters.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            prompt,
            params,
            events: tx,
            enqueued: Instant::now(),
        };
        if self.jobs.send(job).is_err() {
            self.shared.counters.queued.fetch_sub(1, Ordering::SeqCst);
            return Err("the local engine's workers have stopped".into());
        }
        Ok(rx)
    }
}

fn worker(mut model: Model, rx: Arc<Mutex<std_mpsc::Receiver<Job>>>, shared: Arc<Shared>) {
    loop {
        // One waiting worker holds the lock while it waits, so jobs go out in arrival order.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return; // the engine was dropped
        };
        let c = &shared.counters;
        c.queued.fetch_sub(1, Ordering::SeqCst);
        c.active.fetch_add(1, Ordering::SeqCst);
        match generate(&mut model, &job, &shared) {
            Ok(true) => {
                c.requests_finished.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => {
                c.requests_cancelled.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(error = %e, "local generation failed");
                let _ = job.events.blocking_send(Event::Error(e.to_string()));
                c.requests_finished.fetch_add(1, Ordering::SeqCst);
            }
        }
        c.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one job. `Ok(false)` when the receiver went away before the end.
fn generate(model: &mut Model, job: &Job, shared: &Shared) -> candle_core::Result<bool> {
    let started = Instant::now();
    let queued = started - job.enqueued;
    if job.events.is_closed() {
        return Ok(false);
    }
    let meter = EnergyMeter::start(&shared.rapl);
    let device = Device::Cpu;
    let p = &job.params;
    let mut sampler = LogitsProcessor::from_sampling(p.seed, p.sampling());
    let mut text = TextStream::new(p.stops.clone());
    let codec = &shared.codec;

    let mut logits = None;
    for (i, chunk) in job.prompt.chunks(PREFILL_CHUNK).enumerate() {
        logits = Some(model.forward(chunk, i * PREFILL_CHUNK)?);
        if job.events.is_closed() {
            return Ok(false);
        }
    }
    let Some(mut logits) = logits else {
        candle_core::bail!("empty prompt");
    };
    if job.events.blocking_send(Event::Started).is_err() {
        return Ok(false);
    }
    let mut pos = job.prompt.len();
    let mut generated = 0usize;
    let mut first_token_at = None;
    let finish_reason = loop {
        let next = sampler.sample(&Tensor::from_vec(logits, model.vocab(), &device)?)?;
        generated += 1;
        shared
            .counters
            .tokens_generated
            .fetch_add(1, Ordering::SeqCst);
        first_token_at.get_or_insert_with(Instant::now);
        if codec.end_ids.contains(&next) {
            break "stop";
        }
        let (piece, stopped) = text.push(codec.token_bytes(next));
        if !piece.is_empty() && job.events.blocking_send(Event::Text(piece)).is_err() {
            return Ok(false);
        }
        if stopped {
            break "stop";
        }
        if generated >= p.max_tokens {
            break "length";
        }
        if job.events.is_closed() {
            return Ok(false);
        }
        logits = model.forward(&[next], pos)?;
        pos += 1;
    };
    let rest = text.finish();
    if !rest.is_empty() && job.events.blocking_send(Event::Text(rest)).is_err() {
        return Ok(false);
    }
    let first = first_token_at.unwrap_or(started);
    let done = Finished {
        finish_reason,
        prompt_tokens: job.prompt.len(),
        completion_tokens: generated,
        energy: meter.finish(shared.threads, shared.cpu_watts),
        timings: Timings {
            queued,
            prefill: first - started,
            decode: first.elapsed(),
        },
    };
    Ok(job.events.blocking_send(Event::Done(done)).is_ok())
}

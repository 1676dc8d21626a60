//! `loadgen`: open-loop load against an OpenAI-compatible chat-completions endpoint.
//!
//! `rate` runs one fixed arrival rate, `step` raises the rate until the target stops sustaining
//! it, `streams` holds many paced SSE streams open, `report` builds the comparison table.
//! Each measuring command appends one JSON line to `--out` (or prints it).

mod load;
mod paired;
mod report;
mod stats;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{HeaderName, HeaderValue};

#[derive(Parser)]
#[command(about = "Open-loop load generator for the Switchyard benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Chat-completions URL (loopback).
    #[arg(long)]
    url: String,
    /// Label of the target in the results.
    #[arg(long)]
    label: String,
    /// Extra header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Model name sent.
    #[arg(long, default_value = "mock-model")]
    model: String,
    /// Per-request deadline in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Append the JSON result to this file (else print it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// One fixed open-loop rate.
    Rate {
        #[command(flatten)]
        common: Common,
        /// Arrivals per second.
        #[arg(long)]
        rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Requests allowed in flight before new arrivals count as errors.
        #[arg(long, default_value_t = 4096)]
        max_inflight: usize,
    },
    /// Step the rate up until it is no longer sustained.
    Step {
        #[command(flatten)]
        common: Common,
        /// Comma-separated ascending rates. Above 2,000 each is 1.2× the last: a bigger jump opens
        /// a burst of new connections that can tip a target near its edge into a queue it would
        /// not have built at that rate approached gradually.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "50,100,200,400,700,1000,1500,2000,2500,3000,3600,4300,5200,6200,7500,9000,10800,13000,15600,18700,22400,27000,32000,38500,46000,56000"
        )]
        rates: Vec<f64>,
        /// Seconds per step.
        #[arg(long, default_value_t = 4.0)]
        step_seconds: f64,
        /// Bisection steps between the last pass and the first failure.
        #[arg(long, default_value_t = 3)]
        refine: u32,
        /// p99 bound of a sustained step, ms.
        #[arg(long, default_value_t = 200.0)]
        max_p99_ms: f64,
        /// Requests allowed in flight.
        #[arg(long, default_value_t = 4096)]
        max_inflight: usize,
    },
    /// Hold many streams open.
    Streams {
        #[command(flatten)]
        common: Common,
        /// Concurrent streams.
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        /// Seconds after the ramp.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds over which stream starts are spread.
        #[arg(long, default_value_t = 2.0)]
        ramp: f64,
        /// The upstream's inter-token delay, ms (for the report).
        #[arg(long)]
        itl_ms: f64,
        /// A gap between content frames longer than this is a stall, ms.
        #[arg(long, default_value_t = 500.0)]
        stall_ms: f64,
    },
    /// Added latency over direct from alternating `paired:` windows (see bench/added-p99.sh).
    Paired {
        /// JSON lines of `loadgen rate` windows labelled `paired:direct`, `paired:<target>`, ...
        #[arg(long)]
        input: PathBuf,
        /// The added-p99 budget, ms (default: issue #3's, 0.5 for requests, 1 for streams):
        /// request rounds whose direct p99 is above it are not counted.
        #[arg(long)]
        budget_ms: Option<f64>,
        /// Summarize `loadgen streams` windows labelled `paired-streams:…` (added TTFT)
        /// instead of request windows.
        #[arg(long)]
        streams: bool,
        /// Write the summary as JSON here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the table from a run's JSON lines.
    Report {
        /// JSON lines written by the other commands and bench/run.sh.
        #[arg(long)]
        input: PathBuf,
        /// Folder for table.md, results.csv, results.json.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

/// A chat request about the size of a real short prompt (system + user message).
fn request_body(model: &str, stream: bool) -> Bytes {
    let system = "You are a concise assistant for an operations team. Answer in plain English, \
                  cite the runbook section when one applies, and never invent hostnames.";
    let user = "Our nightly batch job started failing after the database migration. The error \
                says the connection pool is exhausted after about forty minutes. What should we \
                check first, and how do we confirm the cause without restarting production?";
    let mut body = serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user}
        ],
        "max_tokens": 256,
        "temperature": 0.2
    });
    if stream {
        body["stream"] = true.into();
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(body.to_string())
}

fn target(common: &Common, stream: bool) -> anyhow::Result<Arc<load::Target>> {
    let url: http::Uri = common.url.parse().context("--url")?;
    let host = url.host().unwrap_or("");
    anyhow::ensure!(
        host == "127.0.0.1" || host == "localhost" || host == "::1",
        "benchmarks target loopback only, got {host}"
    );
    let mut headers = Vec::new();
    for h in &common.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not Name: value"))?;
        headers.push((
            HeaderName::from_bytes(k.trim().as_bytes())?,
            HeaderValue::from_str(v.trim())?,
        ));
    }
    Ok(Arc::new(load::Target {
        url,
        headers,
        body: request_body(&common.model, stream),
        timeout: Duration::from_millis(common.timeout_ms),
    }))
}

fn emit(out: Option<&PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    match out {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(file, "{line}")?;
        }
        None => println!("{line}"),
    }
    Ok(())
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Rate {
            common,
            rate,
            duration,
            max_inflight,
        } => {
            let t = target(&common, false)?;
            let r = runtime(common.threads)?.block_on(async {
                let client = load::client();
                load::run_rate(
                    &client,
                    t,
                    &common.label,
                    rate,
                    Duration::from_secs_f64(duration),
                    max_inflight,
                )
                .await
            })?;
            eprintln!(
                "  [{}] {:.0} req/s: achieved {:.0}, p50 {:.3} ms, p99 {:.3} ms, errors {} {:?}",
                r.label,
                r.rate,
                r.achieved_rps,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.errors,
                r.error_kinds
            );
            emit(common.out.as_ref(), &r)
        }
        Cmd::Step {
            common,
            rates,
            step_seconds,
            refine,
            max_p99_ms,
            max_inflight,
        } => {
            let t = target(&common, false)?;
            let criteria = load::Criteria {
                max_error_rate: 0.001,
                max_p99_ms,
                min_achieved: 0.95,
            };
            let r = runtime(common.threads)?.block_on(async {
                load::run_step(
                    t,
                    &common.label,
                    &rates,
                    Duration::from_secs_f64(step_seconds),
                    Duration::from_millis(1500),
                    refine,
                    max_inflight,
                    criteria,
                )
                .await
            })?;
            eprintln!(
                "  [{}] max sustained {:.0} req/s (first failure {:?})",
                r.label, r.max_sustained_rps, r.first_failed_rps
            );
            emit(common.out.as_ref(), &r)
        }
        Cmd::Streams {
            common,
            concurrency,
            duration,
            ramp,
            itl_ms,
            stall_ms,
        } => {
            let t = target(&common, true)?;
            let r = runtime(common.threads)?.block_on(async {
                let client = load::client();
                load::run_streams(
                    &client,
                    t,
                    &common.label,
                    concurrency,
                    Duration::from_secs_f64(duration),
                    Duration::from_secs_f64(ramp),
                    Duration::from_secs_f64(itl_ms / 1000.0),
                    Duration::from_secs_f64(stall_ms / 1000.0),
                )
                .await
            })?;
            eprintln!(
                "  [{}] streams ok {} err {} {:?}; TTFT p50 {:.2} p99 {:.2} ms (p99 {:.2} in the ramp, {:.2} after); gap p50 {:.2} p99 {:.2} max {:.1} ms; multi-token frames {}; stalls {}",
                r.label,
                r.streams_ok,
                r.streams_err,
                r.error_kinds,
                r.ttft.p50_ms,
                r.ttft.p99_ms,
                r.ttft_ramp.p99_ms,
                r.ttft_steady.p99_ms,
                r.gap.p50_ms,
                r.gap.p99_ms,
                r.gap.max_ms,
                r.multi_token_frames,
                r.stalls
            );
            emit(common.out.as_ref(), &r)
        }
        Cmd::Paired {
            input,
            budget_ms,
            streams,
            out,
        } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let windows = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<Vec<serde_json::Value>, _>>()?;
            let kind = if streams {
                paired::Kind::Streams
            } else {
                paired::Kind::Rate
            };
            let budget_ms = budget_ms.unwrap_or(kind.budget_ms());
            let summaries = paired::summarize(&windows, kind, budget_ms);
            anyhow::ensure!(
                !summaries.is_empty(),
                "no paired windows in {}",
                input.display()
            );
            println!("{}", paired::markdown(&summaries, budget_ms));
            if let Some(path) = out {
                std::fs::write(
                    path,
                    serde_json::to_string_pretty(&paired::to_json(&summaries, budget_ms))?,
                )?;
            }
            Ok(())
        }
        Cmd::Report { input, out_dir } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let rep = report::build(&text)?;
            std::fs::create_dir_all(&out_dir)?;
            std::fs::write(out_dir.join("table.md"), &rep.markdown)?;
            std::fs::write(out_dir.join("results.csv"), &rep.csv)?;
            std::fs::write(
                out_dir.join("results.json"),
                serde_json::to_string_pretty(&rep.json)?,
            )?;
            println!("{}", rep.markdown);
            Ok(())
        }
    }
}

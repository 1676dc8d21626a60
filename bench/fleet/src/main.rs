//! Replays the Mooncake conversation trace (FAST'25, `hash_ids` = 512-token prompt blocks) against
//! simulated replicas in virtual time and compares replica-choice policies: round-robin,
//! least-loaded, power of two choices over Peak-EWMA, and prefix affinity (SGLang's cache-aware
//! policy). Arrivals are open-loop at the trace's timestamps divided by `--speedup`.
//!
//! Reports per policy TTFT / TPOT / end-to-end p50, p90, p99, throughput and goodput under a TTFT
//! SLO, with ratios against round-robin; writes JSON to `--out`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};
use switchyard_balance::{BalanceConfig, Balancer, Fallback, Policy, RequestInfo};
use switchyard_sim::{
    run_fleet, Arrival, Dispatcher, Event, Profile, Reject, ReplicaState, SimRequest,
};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    about = "Replay a Mooncake trace against simulated replicas under several balancing policies"
)]
struct Args {
    #[arg(
        long,
        default_value = "../shared/data/traces/mooncake-conversation.jsonl"
    )]
    trace: PathBuf,
    /// Preset name or TOML file.
    #[arg(long, default_value = "h100-llama3-8b-offload")]
    profile: String,
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Time compression factors to run: arrivals at timestamp / speedup.
    #[arg(long, value_delimiter = ',', default_value = "1,1.25,1.5,1.6")]
    speedup: Vec<f64>,
    /// TTFT service-level objective for goodput, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    slo_ms: u64,
    /// Only the first N requests of the trace.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value = "bench/out/fleet.json")]
    out: PathBuf,
}

#[derive(Deserialize)]
struct TraceRow {
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    hash_ids: Vec<u64>,
}

fn load_trace(path: &PathBuf, limit: Option<usize>) -> anyhow::Result<Vec<TraceRow>> {
    let f =
        std::fs::File::open(path).with_context(|| format!("opening trace {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), n + 1))?,
        );
    }
    Ok(rows)
}

/// Adapts a `switchyard_balance` balancer to the simulator: virtual seconds become instants
/// after a fixed origin, and engine events become the balancer's feedback.
struct BalanceDispatch {
    balancer: switchyard_balance::Balance,
    origin: Instant,
    sent: HashMap<u64, (f64, Option<f64>)>,
}

impl BalanceDispatch {
    fn at(&self, now: f64) -> Instant {
        self.origin + Duration::from_secs_f64(now)
    }
}

impl Dispatcher for BalanceDispatch {
    fn route(&mut self, req: &SimRequest, now: f64, _: &[ReplicaState]) -> Option<usize> {
        let info = RequestInfo {
            prefix: &req.blocks,
            exclude: &[],
        };
        self.balancer.pick(&info, self.at(now))
    }

    fn on_sent(&mut self, replica: usize, req: &SimRequest, now: f64) {
        let info = RequestInfo {
            prefix: &req.blocks,
            exclude: &[],
        };
        self.balancer.on_start(replica, &info, self.at(now));
        self.sent.insert(req.id, (now, None));
    }

    fn on_event(&mut self, replica: usize, event: &Event, now: f64) {
        let at = self.at(now);
        match *event {
            Event::FirstToken { id, .. } => {
                if let Some((sent, first)) = self.sent.get_mut(&id) {
                    *first = Some(now);
                    self.balancer
                        .on_first_token(replica, Duration::from_secs_f64(now - *sent), at);
                }
            }
            Event::Done {
                id, output_tokens, ..
            } => {
                let tpot = self.sent.remove(&id).and_then(|(_, first)| {
                    let first = first?;
                    (output_tokens > 1).then(|| {
                        Duration::from_secs_f64((now - first) / f64::from(output_tokens - 1))
                    })
                });
                self.balancer.on_end(replica, tpot, at);
            }
            Event::Token { .. } => {}
        }
    }

    fn on_reject(&mut self, replica: usize, id: u64, why: Reject, now: f64) {
        self.sent.remove(&id);
        let retry_after = matches!(why, Reject::QueueFull).then(|| Duration::from_secs(1));
        self.balancer.on_error(replica, retry_after, self.at(now));
    }
}

#[derive(Serialize, Clone)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Percentiles {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
    }
}

#[derive(Serialize, Clone)]
struct PolicyResult {
    policy: String,
    requests: usize,
    completed: usize,
    refused: usize,
    ttft_s: Percentiles,
    tpot_ms: Percentiles,
    e2e_s: Percentiles,
    /// Seconds from the first arrival to the last completion.
    makespan_s: f64,
    throughput_req_s: f64,
    throughput_output_tok_s: f64,
    slo_met: usize,
    slo_attainment: f64,
    /// Requests meeting the TTFT SLO per second of makespan.
    goodput_req_s: f64,
    /// Cached prompt tokens / prompt tokens.
    prefix_hit_rate: f64,
    per_replica_completed: Vec<u64>,
    wall_ms: u128,
}

#[derive(Serialize)]
struct RunResult {
    speedup: f64,
    offered_req_s: f64,
    offered_prompt_tok_s: f64,
    policies: Vec<PolicyResult>,
}

fn policies(kv_blocks: usize) -> Vec<(String, BalanceConfig)> {
    let base = BalanceConfig::default();
    let mut prefix = BalanceConfig {
        policy: Policy::PrefixAffinity,
        ..base.clone()
    };
    prefix.prefix.max_blocks_per_replica = kv_blocks;
    let mut prefix_p2c = prefix.clone();
    prefix_p2c.prefix.fallback = Fallback::P2c;
    vec![
        (
            "round_robin".into(),
            BalanceConfig {
                policy: Policy::RoundRobin,
                ..base.clone()
            },
        ),
        (
            "least_loaded".into(),
            BalanceConfig {
                policy: Policy::LeastLoaded,
                ..base.clone()
            },
        ),
        ("p2c_peak_ewma".into(), base),
        ("prefix_affinity".into(), prefix),
        ("prefix_affinity+p2c".into(), prefix_p2c),
    ]
}

fn run_policy(
    name: &str,
    cfg: BalanceConfig,
    profiles: &[Profile],
    arrivals: &[Arrival],
    slo_s: f64,
) -> anyhow::Result<PolicyResult> {
    let wall = std::time::Instant::now();
    let origin = Instant::now();
    let balancer = switchyard_balance::Balance::new(cfg, profiles.len(), origin)
        .map_err(anyhow::Error::msg)?;
    let mut d = BalanceDispatch {
        balancer,
        origin,
        sent: HashMap::new(),
    };
    let report = run_fleet(profiles, arrivals, &mut d);
    let done: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.done.is_some())
        .collect();
    let first_arrival = arrivals.iter().map(|a| a.at).fold(f64::INFINITY, f64::min);
    let makespan = (report.end - first_arrival).max(1e-9);
    let slo_met = done
        .iter()
        .filter(|o| o.ttft().is_some_and(|t| t <= slo_s))
        .count();
    let prompt: u64 = report.replicas.iter().map(|r| r.prompt_tokens).sum();
    let cached: u64 = report.replicas.iter().map(|r| r.cached_tokens).sum();
    let out_tokens: u64 = report.replicas.iter().map(|r| r.output_tokens).sum();
    Ok(PolicyResult {
        policy: name.into(),
        requests: report.outcomes.len(),
        completed: done.len(),
        refused: report
            .outcomes
            .iter()
            .filter(|o| o.rejected.is_some() || o.replica.is_none())
            .count(),
        ttft_s: percentiles(done.iter().filter_map(|o| o.ttft()).collect()),
        tpot_ms: percentiles(
            done.iter()
                .filter_map(|o| o.tpot())
                .map(|t| t * 1e3)
                .collect(),
        ),
        e2e_s: percentiles(
            done.iter()
                .filter_map(|o| o.done.map(|d| d - o.arrival))
                .collect(),
        ),
        makespan_s: makespan,
        throughput_req_s: done.len() as f64 / makespan,
        throughput_output_tok_s: out_tokens as f64 / makespan,
        slo_met,
        slo_attainment: slo_met as f64 / report.outcomes.len().max(1) as f64,
        goodput_req_s: slo_met as f64 / makespan,
        prefix_hit_rate: cached as f64 / prompt.max(1) as f64,
        per_replica_completed: report.replicas.iter().map(|r| r.completed).collect(),
        wall_ms: wall.elapsed().as_millis(),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = Profile::load(&args.profile)?;
    let rows = load_trace(&args.trace, args.limit)?;
    anyhow::ensure!(
        !rows.is_empty(),
        "the trace {} is empty",
        args.trace.display()
    );
    let profiles = vec![profile.clone(); args.replicas];
    // The affinity index remembers about as many blocks as one replica caches (GPU and host).
    let kv_blocks = ((profile.kv_capacity_tokens + profile.host_cache_tokens)
        / u64::from(profile.block_tokens)) as usize;
    let slo_s = args.slo_ms as f64 / 1e3;
    let span_s = rows.iter().map(|r| r.timestamp).fold(0.0, f64::max) / 1e3;
    let prompt_tokens: u64 = rows.iter().map(|r| u64::from(r.input_length)).sum();
    println!(
        "trace {}: {} requests over {:.0} s; profile {} × {}; TTFT SLO {} ms",
        args.trace.display(),
        rows.len(),
        span_s,
        profile.name,
        args.replicas,
        args.slo_ms
    );
    let mut runs = Vec::new();
    for &speedup in &args.speedup {
        anyhow::ensure!(speedup > 0.0, "--speedup values must be above 0");
        let arrivals: Vec<Arrival> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| Arrival {
                at: r.timestamp / 1e3 / speedup,
                request: SimRequest {
                    id: i as u64,
                    input_tokens: r.input_length,
                    output_tokens: r.output_length,
                    blocks: switchyard_sim::chain_keys(r.hash_ids.iter().copied()),
                },
            })
            .collect();
        let offered_req_s = rows.len() as f64 / (span_s / speedup).max(1e-9);
        let offered_prompt_tok_s = prompt_tokens as f64 / (span_s / speedup).max(1e-9);
        println!(
            "\n## speedup {speedup}×: offered {offered_req_s:.2} req/s, {offered_prompt_tok_s:.0} prompt tok/s"
        );
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>7} {:>8} {:>9}",
            "policy",
            "ttft p50",
            "p90",
            "p99",
            "tpot p50",
            "e2e p50",
            "out tok/s",
            "SLO met",
            "goodput",
            "hit",
            "vs RR",
            "goodput×"
        );
        let mut results: Vec<PolicyResult> = Vec::new();
        for (name, cfg) in policies(kv_blocks) {
            let r = run_policy(&name, cfg, &profiles, &arrivals, slo_s)?;
            let (ttft_ratio, good_ratio) = match results.first() {
                Some(rr) => (
                    rr.ttft_s.p50 / r.ttft_s.p50,
                    r.goodput_req_s / rr.goodput_req_s,
                ),
                None => (1.0, 1.0),
            };
            println!(
                "{:<22} {:>7.3}s {:>7.2}s {:>7.2}s {:>7.1}ms {:>7.2}s {:>9.0} {:>7.1}% {:>7.3}/s {:>6.1}% {:>7.1}× {:>8.2}×",
                r.policy,
                r.ttft_s.p50,
                r.ttft_s.p90,
                r.ttft_s.p99,
                r.tpot_ms.p50,
                r.e2e_s.p50,
                r.throughput_output_tok_s,
                r.slo_attainment * 100.0,
                r.goodput_req_s,
                r.prefix_hit_rate * 100.0,
                ttft_ratio,
                good_ratio,
            );
            results.push(r);
        }
        runs.push(RunResult {
            speedup,
            offered_req_s,
            offered_prompt_tok_s,
            policies: results,
        });
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "trace": args.trace.display().to_string(),
        "profile": profile,
        "replicas": args.replicas,
        "slo_ttft_ms": args.slo_ms,
        "goodput_definition": "requests with TTFT <= SLO, per second from first arrival to last completion",
        "runs": runs,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&json)?)?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}

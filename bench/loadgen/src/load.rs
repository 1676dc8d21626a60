//! Open-loop fixed-rate load, rate stepping, and concurrent paced streams.
//!
//! Requests are dispatched by a dedicated OS thread at precomputed times (`start + i / rate`)
//! whatever the responses do, and latency is measured from that scheduled time, so a slow target
//! cannot hide its queueing (coordinated omission). The thread sleeps with the OS clock, which is
//! finer than tokio's 1 ms timer wheel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::stats::{summarize, Summary};

/// HTTP client with a keep-alive connection pool.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Builds the pooled client.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// One target and what to send it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Full URL of the chat-completions endpoint.
    pub url: http::Uri,
    /// Extra headers (authorization, routing headers of a peer gateway).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body.
    pub body: Bytes,
    /// Per-request deadline.
    pub timeout: Duration,
}

impl Target {
    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::post(self.url.clone()).header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// Result of one request.
#[derive(Debug)]
struct Sample {
    /// Scheduled time to send start.
    dispatch_lag_us: u64,
    /// Scheduled time to the last body byte.
    latency_us: u64,
    /// When the response finished, relative to the run start.
    done_at: Duration,
    error: Option<String>,
}

/// What a fixed-rate run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    /// Always "rate".
    pub kind: &'static str,
    /// Target label.
    pub label: String,
    /// Offered arrivals per second.
    pub rate: f64,
    /// Seconds of arrivals.
    pub duration_s: f64,
    /// Requests scheduled.
    pub scheduled: u64,
    /// 2xx responses with a complete body.
    pub ok: u64,
    /// Everything else (including requests not sent because the in-flight cap was reached).
    pub errors: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// errors / scheduled.
    pub error_rate: f64,
    /// ok / (time from first arrival to last completion).
    pub achieved_rps: f64,
    /// Latency from scheduled send time to the end of the body, successful requests only.
    pub latency: Summary,
    /// Lateness of the dispatcher itself: large values mean the load generator is the bottleneck.
    pub dispatch_lag: Summary,
    /// Whether the run met the sustain criteria it was given (set by `step`).
    pub sustained: Option<bool>,
}

async fn one_plain(
    client: HttpClient,
    target: Arc<Target>,
    due: Instant,
    start: Instant,
) -> Sample {
    let sent = Instant::now();
    let result = tokio::time::timeout(target.timeout, async {
        let req = target.request().map_err(|e| format!("request: {e}"))?;
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                "connect".to_string()
            } else {
                "io".to_string()
            }
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| "body".to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("http_{}", status.as_u16()));
        }
        if memchr::memmem::find(&body, b"\"choices\"").is_none() {
            return Err("bad_body".to_string());
        }
        Ok(())
    })
    .await;
    let done = Instant::now();
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("timeout".to_string()),
    };
    Sample {
        dispatch_lag_us: sent.saturating_duration_since(due).as_micros() as u64,
        latency_us: done.saturating_duration_since(due).as_micros() as u64,
        done_at: done.saturating_duration_since(start),
        error,
    }
}

/// Runs `rate` arrivals per second for `duration`, never more than `max_inflight` at once.
pub async fn run_rate(
    client: &HttpClient,
    target: Arc<Target>,
    label: &str,
    rate: f64,
    duration: Duration,
    max_inflight: usize,
) -> anyhow::Result<RateResult> {
    anyhow::ensure!(rate > 0.0 && rate <= 1_000_000.0, "rate out of range");
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = 1.0 / rate;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let inflight = Arc::new(AtomicUsize::new(0));
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(20);

    let dispatcher = {
        let client = client.clone();
        let target = target.clone();
        let inflight = inflight.clone();
        std::thread::Builder::new()
            .name("dispatch".into())
            .spawn(move || {
                for i in 0..total {
                    let due = start + Duration::from_secs_f64(i as f64 * interval);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if inflight.load(Ordering::Relaxed) >= max_inflight {
                        let _ = tx.send(Sample {
                            dispatch_lag_us: 0,
                            latency_us: 0,
                            done_at: due.saturating_duration_since(start),
                            error: Some("inflight_cap".into()),
                        });
                        continue;
                    }
                    inflight.fetch_add(1, Ordering::Relaxed);
                    let tx = tx.clone();
                    let client = client.clone();
                    let target = target.clone();
                    let inflight = inflight.clone();
                    handle.spawn(async move {
                        let sample = one_plain(client, target, due, start).await;
                        inflight.fetch_sub(1, Ordering::Relaxed);
                        let _ = tx.send(sample);
                    });
                }
            })?
    };

    let mut latencies = Vec::with_capacity(total as usize);
    let mut lags = Vec::with_capacity(total as usize);
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_done = Duration::ZERO;
    let mut received = 0u64;
    // Every request ends within its timeout, so this loop ends; the bound guards against a bug.
    let hard_stop =
        tokio::time::Instant::now() + duration + target.timeout + Duration::from_secs(5);
    while received < total {
        let sample = match tokio::time::timeout_at(hard_stop, rx.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) | Err(_) => break,
        };
        received += 1;
        last_done = last_done.max(sample.done_at);
        match sample.error {
            None => {
                latencies.push(sample.latency_us);
                lags.push(sample.dispatch_lag_us);
            }
            Some(kind) => *error_kinds.entry(kind).or_default() += 1,
        }
    }
    if received < total {
        *error_kinds.entry("lost".into()).or_default() += total - received;
    }
    let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
    let ok = latencies.len() as u64;
    let errors = total - ok;
    Ok(RateResult {
        kind: "rate",
        label: label.to_string(),
        rate,
        duration_s: duration.as_secs_f64(),
        scheduled: total,
        ok,
        errors,
        error_kinds,
        error_rate: if total == 0 {
            0.0
        } else {
            errors as f64 / total as f64
        },
        achieved_rps: if last_done.is_zero() {
            0.0
        } else {
            ok as f64 / last_done.as_secs_f64()
        },
        latency: summarize(&mut latencies),
        dispatch_lag: summarize(&mut lags),
        sustained: None,
    })
}

/// When a step counts as sustained.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Criteria {
    /// Largest error share.
    pub max_error_rate: f64,
    /// Largest p99 latency.
    pub max_p99_ms: f64,
    /// Smallest achieved/offered ratio.
    pub min_achieved: f64,
}

impl Criteria {
    /// Whether `r` meets the criteria.
    pub fn met(&self, r: &RateResult) -> bool {
        r.error_rate < self.max_error_rate
            && r.latency.p99_ms <= self.max_p99_ms
            && r.achieved_rps >= self.min_achieved * r.rate
    }
}

/// Result of stepping the rate up.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Always "step".
    pub kind: &'static str,
    /// Target label.
    pub label: String,
    /// Criteria applied.
    pub criteria: Criteria,
    /// Highest offered rate that met the criteria (0 if none).
    pub max_sustained_rps: f64,
    /// Achieved rate at that step.
    pub max_sustained_achieved_rps: f64,
    /// Lowest rate tried that failed, if any.
    pub first_failed_rps: Option<f64>,
    /// Every step in order.
    pub steps: Vec<RateResult>,
}

/// Tries `rates` in ascending order until one fails, then bisects (geometrically)
/// `refine` times between the last pass and the first failure.
///
/// The connection pool carries over from step to step while they pass, as a client's would.
/// A failed step leaves up to `max_inflight` connections open; the next step gets a new pool,
/// warmed for a second at the last passing rate (not measured). Without that reset, the
/// bisection steps spread their lower rates over thousands of leftover connections and
/// measured the overload's aftermath (every target then failed rates it had just passed).
#[allow(clippy::too_many_arguments)]
pub async fn run_step(
    target: Arc<Target>,
    label: &str,
    rates: &[f64],
    step: Duration,
    pause: Duration,
    refine: u32,
    max_inflight: usize,
    criteria: Criteria,
) -> anyhow::Result<StepResult> {
    let mut steps = Vec::new();
    // Highest passing rate (the bisection's low end) and lowest failing rate (its high end).
    let mut best: Option<(f64, f64)> = None;
    let mut failed: Option<f64> = None;
    let mut refined = 0u32;
    let mut pool = client();
    let mut pool_overloaded = false;
    let mut ladder = rates.iter().copied();
    loop {
        let rate = match failed {
            None => match ladder.next() {
                Some(r) => r,
                None => break,
            },
            Some(hi) => {
                let lo = best.map_or(hi / 4.0, |b| b.0);
                let mid = (lo * hi).sqrt().round();
                if refined >= refine || mid <= lo || mid >= hi {
                    break;
                }
                refined += 1;
                mid
            }
        };
        if pool_overloaded {
            pool = client();
            pool_overloaded = false;
            let warm = best.map_or(rate / 4.0, |b| b.0);
            run_rate(
                &pool,
                target.clone(),
                label,
                warm,
                Duration::from_secs(1),
                max_inflight,
            )
            .await?;
        }
        let mut r = run_rate(&pool, target.clone(), label, rate, step, max_inflight).await?;
        let ok = criteria.met(&r);
        r.sustained = Some(ok);
        eprintln!(
            "  [{label}] step {}: {rate:.0} req/s -> achieved {:.0}, p50 {:.2} ms, p99 {:.2} ms, errors {:.3}% {}",
            steps.len(),
            r.achieved_rps,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.error_rate * 100.0,
            if ok { "ok" } else { "FAIL" }
        );
        let achieved = r.achieved_rps;
        steps.push(r);
        tokio::time::sleep(pause).await;
        if ok {
            // Ascending steps and bisection midpoints only pass above the last pass.
            best = Some((rate, achieved));
        } else {
            pool_overloaded = true;
            // Below the last failure: the first on the ladder, then bisection midpoints.
            failed = Some(rate);
        }
    }
    Ok(StepResult {
        kind: "step",
        label: label.to_string(),
        criteria,
        max_sustained_rps: best.map(|b| b.0).unwrap_or(0.0),
        max_sustained_achieved_rps: best.map(|b| b.1).unwrap_or(0.0),
        first_failed_rps: failed,
        steps,
    })
}

/// Number of SSE events in `frame` that carry a non-empty `delta.content`.
pub fn content_tokens(frame: &[u8]) -> usize {
    memchr::memmem::find_iter(frame, b"\"content\"")
        .filter(|&at| {
            let rest = frame[at + 9..].trim_ascii_start();
            let Some(rest) = rest.strip_prefix(b":") else {
                return false;
            };
            let rest = rest.trim_ascii_start();
            matches!(rest, [b'"', next, ..] if *next != b'"')
        })
        .count()
}

/// What the concurrent-streams run measured.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsResult {
    /// Always "streams".
    pub kind: &'static str,
    /// Target label.
    pub label: String,
    /// Streams kept open at once.
    pub concurrency: usize,
    /// Seconds the workers kept starting streams.
    pub duration_s: f64,
    /// The upstream's inter-token delay (what pacing is compared with).
    pub expected_itl_ms: f64,
    /// A gap longer than this counts as a stall.
    pub stall_ms: f64,
    /// Streams that ended with `[DONE]` and a 2xx status.
    pub streams_ok: u64,
    /// Streams that failed.
    pub streams_err: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Request start to the first frame with content.
    pub ttft: Summary,
    /// TTFT of the streams started during the ramp, while connections are still being opened
    /// (to the target, and by a gateway to its upstream).
    pub ttft_ramp: Summary,
    /// TTFT of the streams started after the ramp: connections open, streams replacing streams.
    pub ttft_steady: Summary,
    /// Gaps between successive frames that carry content.
    pub gap: Summary,
    /// Gaps longer than `stall_ms`.
    pub stalls: u64,
    /// Frames carrying content.
    pub content_frames: u64,
    /// Content frames that carried more than one token (a sign of buffering when the upstream paces).
    pub multi_token_frames: u64,
    /// Fewest and most content tokens seen in one successful stream.
    pub tokens_per_stream: (u64, u64),
    /// Whole-stream time.
    pub total: Summary,
}

#[derive(Default)]
struct StreamAcc {
    ttft: Vec<u64>,
    /// TTFT (µs) of streams started during the ramp, and after it.
    ttft_ramp: Vec<u64>,
    ttft_steady: Vec<u64>,
    gaps: Vec<u64>,
    total: Vec<u64>,
    ok: u64,
    err: u64,
    kinds: BTreeMap<String, u64>,
    stalls: u64,
    frames: u64,
    multi: u64,
    tokens_min: u64,
    tokens_max: u64,
}

async fn one_stream(
    client: &HttpClient,
    ramp_end: Instant,
    target: &Target,
    stall: Duration,
    acc: &mut StreamAcc,
) -> Result<(), String> {
    let t0 = Instant::now();
    let req = target.request().map_err(|e| format!("request: {e}"))?;
    let resp = tokio::time::timeout(target.timeout, client.request(req))
        .await
        .map_err(|_| "timeout_headers".to_string())?
        .map_err(|e| if e.is_connect() { "connect" } else { "io" }.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        return Err(format!("http_{}", status.as_u16()));
    }
    let mut last: Option<Instant> = None;
    let mut tokens = 0u64;
    let mut done = false;
    let frame_timeout = target.timeout.max(stall);
    // Bounded: the upstream sends a finite stream and each frame has a deadline.
    for _ in 0..100_000 {
        let frame = match tokio::time::timeout(frame_timeout, body.frame()).await {
            Err(_) => return Err("frame_timeout".into()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err("body".into()),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        let n = content_tokens(&data) as u64;
        if memchr::memmem::find(&data, b"[DONE]").is_some() {
            done = true;
        }
        if n == 0 {
            continue;
        }
        tokens += n;
        acc.frames += 1;
        match last {
            None => {
                let ttft = now.duration_since(t0).as_micros() as u64;
                acc.ttft.push(ttft);
                if t0 < ramp_end {
                    acc.ttft_ramp.push(ttft);
                } else {
                    acc.ttft_steady.push(ttft);
                }
            }
            Some(prev) => {
                let gap = now.duration_since(prev);
                if gap > stall {
                    acc.stalls += 1;
                }
                acc.gaps.push(gap.as_micros() as u64);
                if n > 1 {
                    acc.multi += 1;
                }
            }
        }
        last = Some(now);
    }
    if !done {
        return Err("no_done".into());
    }
    acc.total.push(t0.elapsed().as_micros() as u64);
    acc.tokens_min = if acc.ok == 0 {
        tokens
    } else {
        acc.tokens_min.min(tokens)
    };
    acc.tokens_max = acc.tokens_max.max(tokens);
    Ok(())
}

/// Keeps `concurrency` streams open for `duration` (each worker starts its next stream when the
/// previous ends; starts are staggered over `ramp`).
#[allow(clippy::too_many_arguments)]
pub async fn run_streams(
    client: &HttpClient,
    target: Arc<Target>,
    label: &str,
    concurrency: usize,
    duration: Duration,
    ramp: Duration,
    expected_itl: Duration,
    stall: Duration,
) -> anyhow::Result<StreamsResult> {
    let start = tokio::time::Instant::now();
    let end = start + ramp + duration;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let client = client.clone();
        let target = target.clone();
        let offset = ramp.mul_f64(i as f64 / concurrency.max(1) as f64);
        workers.spawn(async move {
            let mut acc = StreamAcc::default();
            tokio::time::sleep_until(start + offset).await;
            // Bounded by time and by count.
            for _ in 0..1_000_000 {
                if tokio::time::Instant::now() >= end {
                    break;
                }
                let outcome = tokio::time::timeout(
                    target.timeout,
                    one_stream(&client, (start + ramp).into_std(), &target, stall, &mut acc),
                )
                .await
                .unwrap_or_else(|_| Err("stream_timeout".into()));
                match outcome {
                    Ok(()) => acc.ok += 1,
                    Err(kind) => {
                        acc.err += 1;
                        *acc.kinds.entry(kind).or_default() += 1;
                        // Do not spin on a refusing target.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            acc
        });
    }
    let mut all = StreamAcc::default();
    let mut first = true;
    while let Some(joined) = workers.join_next().await {
        let acc = joined?;
        all.ttft.extend(acc.ttft);
        all.ttft_ramp.extend(acc.ttft_ramp);
        all.ttft_steady.extend(acc.ttft_steady);
        all.gaps.extend(acc.gaps);
        all.total.extend(acc.total);
        all.err += acc.err;
        for (k, v) in acc.kinds {
            *all.kinds.entry(k).or_default() += v;
        }
        all.stalls += acc.stalls;
        all.frames += acc.frames;
        all.multi += acc.multi;
        if acc.ok > 0 {
            all.tokens_min = if first {
                acc.tokens_min
            } else {
                all.tokens_min.min(acc.tokens_min)
            };
            first = false;
            all.tokens_max = all.tokens_max.max(acc.tokens_max);
        }
        all.ok += acc.ok;
    }
    Ok(StreamsResult {
        kind: "streams",
        label: label.to_string(),
        concurrency,
        duration_s: duration.as_secs_f64(),
        expected_itl_ms: expected_itl.as_secs_f64() * 1000.0,
        stall_ms: stall.as_secs_f64() * 1000.0,
        streams_ok: all.ok,
        streams_err: all.err,
        error_kinds: all.kinds,
        ttft: summarize(&mut all.ttft),
        ttft_ramp: summarize(&mut all.ttft_ramp),
        ttft_steady: summarize(&mut all.ttft_steady),
        gap: summarize(&mut all.gaps),
        stalls: all.stalls,
        content_frames: all.frames,
        multi_token_frames: all.multi,
        tokens_per_stream: (all.tokens_min, all.tokens_max),
        total: summarize(&mut all.total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_content_tokens_not_role_or_finish_chunks() {
        let role = br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        let tok = br#"data: {"choices":[{"delta":{"content": " hi"}}]}"#;
        let fin = br#"data: {"choices":[{"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(content_tokens(role), 0);
        assert_eq!(content_tokens(tok), 1);
        assert_eq!(content_tokens(fin), 0);
        let joined = [&role[..], b"\n\n", tok, b"\n\n", tok, b"\n\n"].concat();
        assert_eq!(content_tokens(&joined), 2);
    }

    #[tokio::test]
    async fn stream_ttft_is_split_between_the_ramp_and_after_it() {
        use switchyard_testkit::openai::{Answer, MockOpenAi, Reply};
        // Two tokens, the first 200 ms after the request: long beside the ramp, so a busy test
        // machine starting the workers late still starts each one's first stream within it.
        let (_mock, upstream) = MockOpenAi::start(Reply::Answer(Answer {
            tokens: 2,
            first_token_delay: Duration::from_millis(200),
            ..Default::default()
        }))
        .await
        .unwrap();
        let target = Arc::new(Target {
            url: format!("{}/chat/completions", upstream.base_url())
                .parse()
                .unwrap(),
            headers: Vec::new(),
            body: Bytes::from_static(
                br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            ),
            timeout: Duration::from_secs(5),
        });
        let r = run_streams(
            &client(),
            target,
            "t",
            4,
            Duration::from_millis(500),
            // Shorter than one stream (200 ms to first content): one stream per worker in it.
            Duration::from_millis(100),
            Duration::from_millis(50),
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        assert_eq!(r.streams_err, 0, "{:?}", r.error_kinds);
        // Each worker's first stream starts within the ramp, the rest after it.
        assert_eq!(r.ttft_ramp.n, 4);
        assert!(r.ttft_steady.n >= 4, "{}", r.ttft_steady.n);
        assert_eq!(r.ttft.n, r.ttft_ramp.n + r.ttft_steady.n);
        assert!(r.content_frames >= r.streams_ok);
        assert!(r.ttft_steady.p50_ms >= 200.0, "{}", r.ttft_steady.p50_ms);
    }

    #[test]
    fn criteria_check_every_bound() {
        let c = Criteria {
            max_error_rate: 0.001,
            max_p99_ms: 100.0,
            min_achieved: 0.95,
        };
        let mut r = RateResult {
            kind: "rate",
            label: "x".into(),
            rate: 1000.0,
            duration_s: 1.0,
            scheduled: 1000,
            ok: 1000,
            errors: 0,
            error_kinds: BTreeMap::new(),
            error_rate: 0.0,
            achieved_rps: 990.0,
            latency: Summary {
                p99_ms: 5.0,
                ..Summary::default()
            },
            dispatch_lag: Summary::default(),
            sustained: None,
        };
        assert!(c.met(&r));
        r.error_rate = 0.001;
        assert!(!c.met(&r));
        r.error_rate = 0.0;
        r.latency.p99_ms = 100.5;
        assert!(!c.met(&r));
        r.latency.p99_ms = 5.0;
        r.achieved_rps = 900.0;
        assert!(!c.met(&r));
    }
}

//! The "call" phase: walk a route's targets in order, with retries, backoff, breakers and
//! fallback, until one answers.
//!
//! A stream counts as answered once its first content arrived: everything before that (the
//! role chunk) is held back, so a stream that fails or stalls before its first token falls back
//! to the next target and the client never sees the failed attempt.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use switchyard_balance::{Balancer, RequestInfo};
use switchyard_providers::{
    ChatCall, ChatOutput, ChunkStream, Completion, ProviderError, ProviderErrorKind, StreamItem,
};
use switchyard_router::{Choice, CircuitBreaker, Target};
use tokio::time::Instant;

/// What a successful attempt produced.
pub enum Served {
    Complete(Completion),
    Stream {
        /// Items received before (and including) the first content, not yet sent.
        head: Vec<StreamItem>,
        rest: ChunkStream,
        /// When the attempt started: the stream's total limit counts from here.
        attempt_started: Instant,
    },
}

/// The targets one request may try, in the order policy and load decide.
pub struct Plan<'a> {
    pub choice: &'a Choice,
    /// Candidate indices in policy order (used when there is no balancer).
    order: Vec<usize>,
    pos: usize,
    /// Candidates not to pick: tried already, or not allowed for this request.
    excluded: Vec<usize>,
    /// Prompt prefix keys for prefix affinity.
    prefix: Vec<u64>,
}

impl<'a> Plan<'a> {
    /// `allowed` filters candidates by governance (e.g. self-hosted only); `prompt` feeds
    /// prefix affinity when the choice balances by it.
    pub fn new(
        choice: &'a Choice,
        allowed: impl Fn(&Target) -> bool,
        prompt: Option<&str>,
        strong: Option<bool>,
    ) -> Plan<'a> {
        let order: Vec<usize> = choice
            .order_with(jitter(), strong)
            .into_iter()
            .filter(|&i| allowed(&choice.candidates[i].target))
            .collect();
        let excluded = (0..choice.candidates.len())
            .filter(|i| !order.contains(i))
            .collect();
        let prefix = match (&choice.balancer, prompt) {
            (Some(b), Some(text))
                if b.config().policy == switchyard_balance::Policy::PrefixAffinity =>
            {
                switchyard_balance::prefix::chain_text(text, b.config().prefix.block_bytes)
            }
            _ => Vec::new(),
        };
        Plan {
            choice,
            order,
            pos: 0,
            excluded,
            prefix,
        }
    }

    /// Whether any candidate is allowed at all.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn next(&mut self) -> Option<usize> {
        let i = match &self.choice.balancer {
            Some(b) => b.pick(
                &RequestInfo {
                    prefix: &self.prefix,
                    exclude: &self.excluded,
                },
                Instant::now(),
            )?,
            None => {
                let i = *self.order.get(self.pos)?;
                self.pos += 1;
                i
            }
        };
        self.excluded.push(i);
        Some(i)
    }

    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            prefix: &self.prefix,
            exclude: &self.excluded,
        }
    }
}

/// The result of walking a route.
pub struct Walk<T> {
    pub result: Result<(T, Arc<Target>), ProviderError>,
    /// Attempts made, and how many times the request moved on to another target.
    pub attempts: u32,
    pub fallbacks: u32,
    /// The last target tried (for the ledger when everything failed).
    pub last_target: Option<Arc<Target>>,
    /// Time spent waiting on providers and backoff, for the overhead figure.
    pub upstream_time: Duration,
    /// The balanced candidate that served, for reporting the request's end to the balancer.
    pub replica: Option<usize>,
}

/// Releases a half-open probe slot, and the balancer's pending count, if the attempt is
/// abandoned (the client went away).
struct AttemptGuard<'a> {
    breaker: &'a CircuitBreaker,
    balanced: Option<(&'a dyn Balancer, usize)>,
    settled: bool,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.on_neutral();
            if let Some((b, i)) = self.balanced {
                b.on_end(i, None, Instant::now());
            }
        }
    }
}

/// A cheap jitter source; quality does not matter, only that concurrent retries spread.
fn jitter() -> f64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (x as f64) / ((1u64 << 53) as f64)
}

/// Tries the plan's targets in turn. `attempt` makes one call to one target.
pub async fn walk<T, F, Fut>(route: &str, plan: &mut Plan<'_>, mut attempt: F) -> Walk<T>
where
    F: FnMut(Arc<Target>) -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut attempts = 0u32;
    let mut fallbacks = 0u32;
    let mut upstream_time = Duration::ZERO;
    let mut last_err: Option<ProviderError> = None;
    let mut last_target: Option<Arc<Target>> = None;
    let mut shortest_block: Option<Duration> = None;
    let balancer = plan.choice.balancer.clone();
    while let Some(i) = plan.next() {
        let target = plan.choice.candidates[i].target.clone();
        let mut retry = 0u32;
        loop {
            if !target.breaker.try_acquire() {
                let wait = target.breaker.blocked_for();
                shortest_block = Some(shortest_block.map_or(wait, |s| s.min(wait)));
                break;
            }
            if attempts > 0
                && last_target
                    .as_ref()
                    .is_some_and(|t| !Arc::ptr_eq(t, &target))
            {
                fallbacks += 1;
            }
            attempts += 1;
            last_target = Some(target.clone());
            let started = Instant::now();
            if let Some(b) = &balancer {
                b.on_start(i, &plan.info(), started);
            }
            let mut guard = AttemptGuard {
                breaker: &target.breaker,
                balanced: balancer.as_deref().map(|b| (b as &dyn Balancer, i)),
                settled: false,
            };
            let result = attempt(target.clone()).await;
            let took = started.elapsed();
            upstream_time += took;
            guard.settled = true;
            drop(guard);
            match result {
                Ok(v) => {
                    target.breaker.on_success();
                    target.observe_ttft(took);
                    if let Some(b) = &balancer {
                        b.on_first_token(i, took, Instant::now());
                    }
                    return Walk {
                        result: Ok((v, target.clone())),
                        attempts,
                        fallbacks,
                        last_target,
                        upstream_time,
                        replica: balancer.is_some().then_some(i),
                    };
                }
                Err(e) if !e.is_retryable() => {
                    // The client's request is at fault: another target would refuse it too.
                    target.breaker.on_neutral();
                    if let Some(b) = &balancer {
                        b.on_end(i, None, Instant::now());
                    }
                    return Walk {
                        result: Err(e),
                        attempts,
                        fallbacks,
                        last_target,
                        upstream_time,
                        replica: None,
                    };
                }
                Err(e) => {
                    target.breaker.on_failure(e.retry_after);
                    if let Some(b) = &balancer {
                        b.on_error(i, e.retry_after, Instant::now());
                    }
                    tracing::debug!(target = %target.id, error = %e, "attempt failed");
                    retry += 1;
                    // A timed-out target is not waited on twice; move on.
                    let wait = if e.kind == ProviderErrorKind::Timeout {
                        None
                    } else {
                        target.retry.backoff(retry, e.retry_after, jitter())
                    };
                    last_err = Some(e);
                    match wait {
                        Some(d) => {
                            let s = Instant::now();
                            tokio::time::sleep(d).await;
                            upstream_time += s.elapsed();
                        }
                        None => break,
                    }
                }
            }
        }
    }
    let err = match (last_err, shortest_block) {
        (Some(mut e), block) => {
            if e.retry_after.is_none() {
                e.retry_after = block;
            }
            e
        }
        (None, block) => {
            let mut e = ProviderError::new(
                ProviderErrorKind::Status(503),
                format!("every target of '{route}' is unavailable (circuit open or asked to wait)"),
            );
            e.retry_after = block.map(|d| d.max(Duration::from_secs(1)));
            e
        }
    };
    Walk {
        result: Err(err),
        attempts,
        fallbacks,
        last_target,
        upstream_time,
        replica: None,
    }
}

/// One chat attempt at one target, within its limits.
pub async fn chat_attempt(target: Arc<Target>, call: ChatCall) -> Result<Served, ProviderError> {
    let started = Instant::now();
    let stream = call.request.is_stream();
    let limit = if stream {
        target.timeouts.first_token()
    } else {
        target.timeouts.total()
    };
    let fut = async {
        match target.provider.chat(call).await? {
            ChatOutput::Complete(c) => Ok(Served::Complete(c)),
            ChatOutput::Stream(mut rest) => {
                let mut head = Vec::new();
                loop {
                    match rest.next().await {
                        Some(Ok(item)) => {
                            let first = matches!(
                                item,
                                StreamItem::Data { content: true, .. } | StreamItem::End(_)
                            );
                            head.push(item);
                            if first {
                                break;
                            }
                        }
                        Some(Err(e)) => return Err(e),
                        None => {
                            return Err(ProviderError::new(
                                ProviderErrorKind::Io,
                                "upstream stream ended before any content",
                            ))
                        }
                    }
                }
                Ok(Served::Stream {
                    head,
                    rest,
                    attempt_started: started,
                })
            }
        }
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(ProviderError::new(
            ProviderErrorKind::Timeout,
            format!(
                "target '{}' gave no {} within {} ms",
                target.id,
                if stream { "first token" } else { "answer" },
                limit.as_millis()
            ),
        )),
    }
}

//! Replica choice among equivalent targets (the same model served by several replicas).
//!
//! Small pure parts, each testable on tokio's paused clock (time is always a parameter):
//! - [`ewma::PeakEwma`]: Peak-EWMA over time to first token and time per output token — not
//!   whole-response time, which mostly measures output length;
//! - [`prefix::PrefixIndex`]: an approximate, LRU-capped index of prompt prefixes sent to each
//!   replica (hashed block chains, as in vLLM's prefix cache and Mooncake's traces);
//! - [`hedge::Hedger`]: when to send a first-token hedge and the budget that caps it;
//! - [`Balance`]: the policies behind one [`Balancer`] trait — round-robin, least-loaded,
//!   power of two choices over Peak-EWMA cost (Finagle, Linkerd, `tower::load::PeakEwma`), and
//!   SGLang's cache-aware prefix affinity with its imbalance guard.
//!
//! The caller reports each request's life: [`Balancer::on_start`] when it is sent,
//! [`Balancer::on_first_token`], then [`Balancer::on_end`] or [`Balancer::on_error`] exactly once.

pub mod config;
pub mod ewma;
pub mod hedge;
pub mod prefix;

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

pub use config::{BalanceConfig, Fallback, Policy, PrefixConfig};
pub use hedge::{HedgeConfig, Hedger};

use ewma::PeakEwma;
use prefix::PrefixIndex;

/// Index of a replica in the pool the balancer was built for.
pub type ReplicaId = usize;

/// What the balancer may know about a request when choosing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo<'a> {
    /// Chained prefix keys of the prompt's blocks ([`prefix::chain_text`] or
    /// [`prefix::chain_ids`]); empty when unknown.
    pub prefix: &'a [u64],
    /// Replicas already tried for this request, not to be chosen again.
    pub exclude: &'a [ReplicaId],
}

/// Replica choice and the feedback it learns from.
pub trait Balancer: Send + Sync {
    /// The replica for this request, or `None` when every replica is excluded or waiting out a
    /// Retry-After.
    fn pick(&self, req: &RequestInfo<'_>, now: Instant) -> Option<ReplicaId>;
    /// The request was sent to `replica`.
    fn on_start(&self, replica: ReplicaId, req: &RequestInfo<'_>, now: Instant);
    /// Its first token arrived `ttft` after it was sent.
    fn on_first_token(&self, replica: ReplicaId, ttft: Duration, now: Instant);
    /// One more output token arrived. Per-token feedback is not needed by these policies.
    fn on_token(&self, _replica: ReplicaId, _now: Instant) {}
    /// It finished (or was cancelled); `tpot` is (duration − TTFT) / (output tokens − 1) when
    /// known, as OpenTelemetry's `gen_ai.server.time_per_output_token` defines it.
    fn on_end(&self, replica: ReplicaId, tpot: Option<Duration>, now: Instant);
    /// It failed: an error status (429 and 503 included), a broken stream or a timeout.
    /// `retry_after` keeps the replica out of choice until it passes.
    fn on_error(&self, replica: ReplicaId, retry_after: Option<Duration>, now: Instant);
}

/// One replica's load as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLoad {
    pub pending: u32,
    /// Seconds: TTFT estimate + `tpot_weight_tokens` × TPOT estimate.
    pub latency: f64,
    /// latency × (pending + 1).
    pub cost: f64,
    pub blocked_for: Option<Duration>,
    pub prefix_blocks: usize,
}

#[derive(Debug)]
struct Replica {
    pending: u32,
    ttft: PeakEwma,
    tpot: PeakEwma,
    blocked_until: Option<Instant>,
    index: PrefixIndex,
}

#[derive(Debug)]
struct State {
    replicas: Vec<Replica>,
    cursor: usize,
    rng: u64,
}

/// The policies of [`Policy`] behind [`Balancer`], for a fixed pool of replicas.
#[derive(Debug)]
pub struct Balance {
    cfg: BalanceConfig,
    state: Mutex<State>,
}

/// Cost floor so that a replica whose estimate decayed to nothing still counts its queue.
const MIN_LATENCY_S: f64 = 1e-3;

impl Balance {
    pub fn new(cfg: BalanceConfig, replicas: usize, now: Instant) -> Result<Self, String> {
        cfg.validate()?;
        if replicas == 0 {
            return Err("a balancer needs at least one replica".into());
        }
        let decay = Duration::from_millis(cfg.decay_ms);
        let replicas = (0..replicas)
            .map(|_| Replica {
                pending: 0,
                ttft: PeakEwma::new(decay, now),
                tpot: PeakEwma::new(decay, now),
                blocked_until: None,
                index: PrefixIndex::new(cfg.prefix.max_blocks_per_replica),
            })
            .collect();
        let rng = cfg.seed | 1;
        Ok(Balance {
            cfg,
            state: Mutex::new(State {
                replicas,
                cursor: 0,
                rng,
            }),
        })
    }

    pub fn config(&self) -> &BalanceConfig {
        &self.cfg
    }

    /// Every replica's load at `now`, for metrics and debugging.
    pub fn loads(&self, now: Instant) -> Vec<ReplicaLoad> {
        let st = self.lock();
        st.replicas
            .iter()
            .map(|r| ReplicaLoad {
                pending: r.pending,
                latency: self.latency(r, now),
                cost: self.cost(r, now),
                blocked_for: r
                    .blocked_until
                    .filter(|u| *u > now)
                    .map(|u| u.saturating_duration_since(now)),
                prefix_blocks: r.index.len(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave these counters half-written in a harmful way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn latency(&self, r: &Replica, now: Instant) -> f64 {
        let ttft = r
            .ttft
            .get(now)
            .unwrap_or(self.cfg.initial_ttft_ms as f64 / 1000.0);
        let tpot = r.tpot.get(now).unwrap_or(0.0);
        (ttft + self.cfg.tpot_weight_tokens * tpot).max(MIN_LATENCY_S)
    }

    fn cost(&self, r: &Replica, now: Instant) -> f64 {
        self.latency(r, now) * f64::from(r.pending + 1)
    }

    fn p2c(&self, st: &mut State, eligible: &[ReplicaId], now: Instant) -> ReplicaId {
        let n = eligible.len();
        if n == 1 {
            return eligible[0];
        }
        let a = (next_rand(&mut st.rng) % n as u64) as usize;
        let mut b = (next_rand(&mut st.rng) % (n as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (ra, rb) = (eligible[a], eligible[b]);
        if self.cost(&st.replicas[rb], now) < self.cost(&st.replicas[ra], now) {
            rb
        } else {
            ra
        }
    }

    /// Fewest pending; ties go to the first at or after the rotating cursor, so that equal
    /// replicas share the work.
    fn least_loaded(st: &mut State, eligible: &[ReplicaId]) -> ReplicaId {
        let n = st.replicas.len();
        let start = st.cursor;
        st.cursor = (st.cursor + 1) % n;
        let mut best = eligible[0];
        let mut best_key = (u32::MAX, usize::MAX);
        for &r in eligible {
            let key = (st.replicas[r].pending, (r + n - start) % n);
            if key < best_key {
                best_key = key;
                best = r;
            }
        }
        best
    }

    fn round_robin(st: &mut State, eligible: &[ReplicaId]) -> ReplicaId {
        let n = st.replicas.len();
        let start = st.cursor;
        let pick = eligible
            .iter()
            .copied()
            .min_by_key(|&r| (r + n - start) % n)
            .unwrap_or(eligible[0]);
        st.cursor = (pick + 1) % n;
        pick
    }

    fn prefix_affinity(
        &self,
        st: &mut State,
        eligible: &[ReplicaId],
        req: &RequestInfo<'_>,
        now: Instant,
    ) -> ReplicaId {
        let p = &self.cfg.prefix;
        let pendings = eligible.iter().map(|&r| st.replicas[r].pending);
        let max = pendings.clone().max().unwrap_or(0);
        let min = pendings.min().unwrap_or(0);
        let imbalanced = max - min > p.balance_abs_threshold
            && f64::from(max) > p.balance_rel_threshold * f64::from(min);
        if imbalanced {
            return Self::least_loaded(st, eligible);
        }
        if !req.prefix.is_empty() {
            // Longest match; ties to the replica with fewer pending.
            let best = eligible
                .iter()
                .map(|&r| {
                    let rep = &st.replicas[r];
                    (
                        rep.index.matched(req.prefix),
                        std::cmp::Reverse(rep.pending),
                        r,
                    )
                })
                .max();
            if let Some((matched, _, r)) = best {
                if matched as f64 > p.cache_threshold * req.prefix.len() as f64 {
                    return r;
                }
            }
        }
        match p.fallback {
            Fallback::SmallestTree => eligible
                .iter()
                .copied()
                .min_by_key(|&r| (st.replicas[r].index.len(), st.replicas[r].pending))
                .unwrap_or(eligible[0]),
            Fallback::P2c => self.p2c(st, eligible, now),
            Fallback::LeastLoaded => Self::least_loaded(st, eligible),
        }
    }
}

fn next_rand(state: &mut u64) -> u64 {
    // xorshift64*: enough for choosing two replicas, and no dependency.
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

impl Balancer for Balance {
    fn pick(&self, req: &RequestInfo<'_>, now: Instant) -> Option<ReplicaId> {
        let mut st = self.lock();
        let eligible: Vec<ReplicaId> = st
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, r)| !req.exclude.contains(i) && r.blocked_until.is_none_or(|u| u <= now))
            .map(|(i, _)| i)
            .collect();
        if eligible.is_empty() {
            return None;
        }
        Some(match self.cfg.policy {
            Policy::RoundRobin => Self::round_robin(&mut st, &eligible),
            Policy::LeastLoaded => Self::least_loaded(&mut st, &eligible),
            Policy::P2cPeakEwma => self.p2c(&mut st, &eligible, now),
            Policy::PrefixAffinity => self.prefix_affinity(&mut st, &eligible, req, now),
        })
    }

    fn on_start(&self, replica: ReplicaId, req: &RequestInfo<'_>, _now: Instant) {
        let track_prefix = self.cfg.policy == Policy::PrefixAffinity;
        let mut st = self.lock();
        if let Some(r) = st.replicas.get_mut(replica) {
            r.pending += 1;
            if track_prefix {
                r.index.insert(req.prefix);
            }
        }
    }

    fn on_first_token(&self, replica: ReplicaId, ttft: Duration, now: Instant) {
        if let Some(r) = self.lock().replicas.get_mut(replica) {
            r.ttft.observe(ttft, now);
        }
    }

    fn on_end(&self, replica: ReplicaId, tpot: Option<Duration>, now: Instant) {
        if let Some(r) = self.lock().replicas.get_mut(replica) {
            r.pending = r.pending.saturating_sub(1);
            if let Some(t) = tpot {
                r.tpot.observe(t, now);
            }
        }
    }

    fn on_error(&self, replica: ReplicaId, retry_after: Option<Duration>, now: Instant) {
        let penalty = Duration::from_millis(self.cfg.error_penalty_ms);
        if let Some(r) = self.lock().replicas.get_mut(replica) {
            r.pending = r.pending.saturating_sub(1);
            r.ttft.observe(penalty, now);
            if let Some(ra) = retry_after {
                let until = now + ra;
                r.blocked_until = Some(r.blocked_until.map_or(until, |u| u.max(until)));
            }
        }
    }
}

#[cfg(test)]
mod tests;

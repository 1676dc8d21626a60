//! One simulated replica: a waiting queue, continuous batching with chunked prefill, and a KV
//! cache of blocks with prefix caching — the shape of vLLM's V1 scheduler and block manager,
//! reduced to token counts.
//!
//! The engine knows no clock. A driver asks for the next step ([`Engine::plan_step`] returns its
//! duration), lets that much time pass (virtually or for real), then applies it
//! ([`Engine::finish_step`]), which yields the tokens produced. Requests submitted meanwhile
//! wait for the next step, as in a real engine.
//!
//! KV blocks: a request holds `ceil((input + output) / block_tokens)` blocks from admission to
//! the end (reserved up front, so nothing is ever preempted). Prompt blocks are keyed by their
//! chained prefix hash; when a request ends they stay cached, unreferenced, and are evicted
//! least recently used first — deepest block of a prompt first, so prefixes outlive suffixes.
//! A new request whose leading keys are cached skips prefilling those tokens.
//!
//! An optional second tier in host memory (`host_cache_tokens`, as vLLM's CPU offloading,
//! LMCache or Mooncake's store provide) keeps blocks evicted from the GPU; a prompt whose prefix
//! continues there loads those blocks at `host_load_tokens_per_s` instead of recomputing them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::profile::Profile;

/// A request as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    pub id: u64,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Chained prefix keys of the prompt's full blocks (see [`chain_keys`]), at most
    /// `ceil(input_tokens / block_tokens)` of them.
    pub blocks: Vec<u64>,
}

/// What a step produced for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Prefill finished and the first output token is out.
    FirstToken { id: u64, cached_tokens: u32 },
    /// One more output token (only when the engine emits tokens).
    Token { id: u64 },
    /// The last output token is out; the request has left the engine.
    Done {
        id: u64,
        input_tokens: u32,
        output_tokens: u32,
        cached_tokens: u32,
    },
}

impl Event {
    pub fn id(&self) -> u64 {
        match *self {
            Event::FirstToken { id, .. } | Event::Token { id } | Event::Done { id, .. } => id,
        }
    }
}

/// Why a request was refused at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Reject {
    /// The waiting queue is at `max_waiting` (answer 429).
    QueueFull,
    /// Prompt plus output need more KV than the whole cache (answer 400).
    TooLong {
        needed_tokens: u64,
        capacity_tokens: u64,
    },
}

/// Counters over the engine's life.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EngineStats {
    pub admitted: u64,
    pub completed: u64,
    pub rejected: u64,
    pub steps: u64,
    pub busy_seconds: f64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub evicted_blocks: u64,
    /// Prompt tokens loaded from the host tier (also counted in `cached_tokens`).
    pub host_loaded_tokens: u64,
}

/// Chained keys for block ids: key i identifies blocks 0..=i together, so equal keys mean equal
/// prefixes. Same mixing as `switchyard_balance::prefix::chain`, kept separate so the simulator
/// does not depend on the balancer.
pub fn chain_keys(ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut h = 0u64;
    ids.into_iter()
        .map(|id| {
            let mut z = h ^ id
                .wrapping_add(0x9e37_79b9_7f4a_7c15)
                .wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h = z ^ (z >> 31);
            h
        })
        .collect()
}

#[derive(Debug)]
struct Seq {
    req: SimRequest,
    cached: u32,
    /// Prompt tokens whose KV exists (cached or computed).
    prefilled: u32,
    /// Prompt tokens still to load from the host tier before computing the rest.
    to_load: u32,
    generated: u32,
    /// Keys of `req.blocks` this sequence holds a reference on (a leading run).
    held_keys: usize,
    anon_blocks: usize,
    step_prefill: u32,
    step_load: u32,
    step_decode: bool,
}

#[derive(Debug)]
struct Block {
    refs: u32,
    /// Position in `evictable` while `refs == 0`.
    tick: u64,
}

#[derive(Debug)]
pub struct Engine {
    profile: Profile,
    emit_tokens: bool,
    waiting: VecDeque<SimRequest>,
    running: Vec<Seq>,
    cache: HashMap<u64, Block>,
    evictable: BTreeMap<u64, u64>,
    anon_blocks: usize,
    capacity_blocks: usize,
    tick: u64,
    host: HostTier,
    planned: Option<f64>,
    stats: EngineStats,
}

impl Engine {
    pub fn new(profile: Profile) -> Self {
        let capacity_blocks =
            (profile.kv_capacity_tokens / u64::from(profile.block_tokens)) as usize;
        let host =
            HostTier::new((profile.host_cache_tokens / u64::from(profile.block_tokens)) as usize);
        Engine {
            profile,
            emit_tokens: false,
            waiting: VecDeque::new(),
            running: Vec::new(),
            cache: HashMap::new(),
            evictable: BTreeMap::new(),
            anon_blocks: 0,
            capacity_blocks,
            tick: 0,
            host,
            planned: None,
            stats: EngineStats::default(),
        }
    }

    /// Also report every output token after the first ([`Event::Token`]).
    pub fn with_token_events(mut self, on: bool) -> Self {
        self.emit_tokens = on;
        self
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// KV blocks in use by running requests (cached, unreferenced blocks not counted).
    pub fn kv_used_blocks(&self) -> usize {
        self.cache.len() - self.evictable.len() + self.anon_blocks
    }

    pub fn kv_capacity_blocks(&self) -> usize {
        self.capacity_blocks
    }

    /// How many leading keys of `keys` the cache holds now.
    pub fn cached_prefix(&self, keys: &[u64]) -> usize {
        keys.iter()
            .take_while(|k| self.cache.contains_key(k))
            .count()
    }

    fn blocks_for(&self, req: &SimRequest) -> usize {
        let bt = u64::from(self.profile.block_tokens);
        let tokens = u64::from(req.input_tokens) + u64::from(req.output_tokens);
        (tokens.div_ceil(bt) as usize).max(req.blocks.len())
    }

    /// Queues a request. Token counts below 1 are raised to 1.
    pub fn submit(&mut self, mut req: SimRequest) -> Result<(), Reject> {
        req.input_tokens = req.input_tokens.max(1);
        req.output_tokens = req.output_tokens.max(1);
        let max_keys = req.input_tokens.div_ceil(self.profile.block_tokens) as usize;
        req.blocks.truncate(max_keys);
        let needed = self.blocks_for(&req);
        if needed > self.capacity_blocks {
            self.stats.rejected += 1;
            return Err(Reject::TooLong {
                needed_tokens: needed as u64 * u64::from(self.profile.block_tokens),
                capacity_tokens: self.profile.kv_capacity_tokens,
            });
        }
        let in_engine = self.waiting.len() + self.running.len();
        if self
            .profile
            .max_waiting
            .is_some_and(|m| in_engine >= self.profile.max_batch + m)
        {
            self.stats.rejected += 1;
            return Err(Reject::QueueFull);
        }
        self.waiting.push_back(req);
        Ok(())
    }

    /// Drops a request wherever it is (client gone). Returns whether it was found.
    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.waiting.iter().position(|r| r.id == id) {
            self.waiting.remove(i);
            return true;
        }
        if let Some(i) = self.running.iter().position(|s| s.req.id == id) {
            let seq = self.running.swap_remove(i);
            self.release(&seq);
            return true;
        }
        false
    }

    /// Admits what fits, forms the next step and returns its duration in seconds, or `None`
    /// when there is nothing to run.
    pub fn plan_step(&mut self) -> Option<f64> {
        self.admit();
        let mut budget = self.profile.max_batched_tokens;
        let mut decode_seqs = 0usize;
        let mut context = 0u64;
        // Decodes first, one token each, as vLLM schedules running requests before new prefill.
        for s in &mut self.running {
            s.step_prefill = 0;
            s.step_load = 0;
            s.step_decode = s.prefilled == s.req.input_tokens && s.generated < s.req.output_tokens;
            if s.step_decode && budget > 0 {
                budget -= 1;
                decode_seqs += 1;
                context += u64::from(s.req.input_tokens) + u64::from(s.generated);
            } else {
                s.step_decode = false;
            }
        }
        let mut prefill = 0u64;
        let mut load = 0u64;
        for s in &mut self.running {
            // Host-tier blocks are copied in whole before the rest of the prompt is computed;
            // copies do not use the compute budget.
            if s.to_load > 0 {
                s.step_load = s.to_load;
                load += u64::from(s.to_load);
                continue;
            }
            if budget == 0 {
                continue;
            }
            let left = s.req.input_tokens - s.prefilled;
            if left > 0 {
                let chunk = left.min(budget);
                s.step_prefill = chunk;
                budget -= chunk;
                prefill += u64::from(chunk);
            }
        }
        if prefill == 0 && load == 0 && decode_seqs == 0 {
            self.planned = None;
            return None;
        }
        let secs = self
            .profile
            .step_seconds(prefill, load, decode_seqs, context);
        self.planned = Some(secs);
        Some(secs)
    }

    /// Applies the planned step, appending what it produced to `out`.
    pub fn finish_step(&mut self, out: &mut Vec<Event>) {
        let Some(secs) = self.planned.take() else {
            return;
        };
        self.stats.steps += 1;
        self.stats.busy_seconds += secs;
        let mut i = 0;
        while i < self.running.len() {
            let s = &mut self.running[i];
            let id = s.req.id;
            if s.step_load > 0 {
                s.prefilled += s.step_load;
                s.to_load -= s.step_load;
                s.step_load = 0;
            } else if s.step_prefill > 0 {
                s.prefilled += s.step_prefill;
                s.step_prefill = 0;
                if s.prefilled == s.req.input_tokens {
                    s.generated = 1;
                    out.push(Event::FirstToken {
                        id,
                        cached_tokens: s.cached,
                    });
                }
            } else if s.step_decode {
                s.step_decode = false;
                s.generated += 1;
                if self.emit_tokens {
                    out.push(Event::Token { id });
                }
            }
            if s.generated >= s.req.output_tokens {
                let seq = self.running.swap_remove(i);
                self.stats.completed += 1;
                self.stats.output_tokens += u64::from(seq.generated);
                out.push(Event::Done {
                    id,
                    input_tokens: seq.req.input_tokens,
                    output_tokens: seq.generated,
                    cached_tokens: seq.cached,
                });
                self.release(&seq);
            } else {
                i += 1;
            }
        }
    }

    fn admit(&mut self) {
        while self.running.len() < self.profile.max_batch {
            let Some(req) = self.waiting.front() else {
                break;
            };
            let needed = self.blocks_for(req);
            let matched = self.cached_prefix(&req.blocks);
            let host_matched = self.host.matched(&req.blocks[matched..]);
            // Blocks that must come from free space or eviction, counted as if none of the
            // later keys were cached (they may be, out of order; then fewer are needed).
            let new_blocks = needed - matched;
            let pinned_evictable = req.blocks[..matched]
                .iter()
                .filter(|k| self.cache.get(k).is_some_and(|b| b.refs == 0))
                .count();
            let used = self.cache.len() + self.anon_blocks;
            let free = self.capacity_blocks.saturating_sub(used);
            let reclaimable = self.evictable.len() - pinned_evictable;
            if free + reclaimable < new_blocks {
                break;
            }
            let Some(req) = self.waiting.pop_front() else {
                break;
            };
            self.admit_one(req, matched, host_matched, needed);
        }
    }

    fn admit_one(&mut self, req: SimRequest, matched: usize, host_matched: usize, needed: usize) {
        self.host
            .touch(&req.blocks[matched..matched + host_matched]);
        for k in &req.blocks[..matched] {
            self.pin(*k);
        }
        let mut fresh = Vec::new();
        for &k in &req.blocks[matched..] {
            if self.cache.contains_key(&k) {
                self.pin(k);
            } else {
                fresh.push(k);
            }
        }
        let anon = needed - req.blocks.len();
        self.make_room(fresh.len() + anon);
        for k in fresh {
            self.cache.insert(k, Block { refs: 1, tick: 0 });
        }
        self.anon_blocks += anon;
        let bt = self.profile.block_tokens;
        // The last prompt token is always computed: its logits give the first output token.
        let on_gpu = (matched as u32)
            .saturating_mul(bt)
            .min(req.input_tokens - 1);
        let cached = ((matched + host_matched) as u32)
            .saturating_mul(bt)
            .min(req.input_tokens - 1);
        let to_load = cached - on_gpu;
        self.stats.admitted += 1;
        self.stats.prompt_tokens += u64::from(req.input_tokens);
        self.stats.cached_tokens += u64::from(cached);
        self.stats.host_loaded_tokens += u64::from(to_load);
        self.running.push(Seq {
            held_keys: req.blocks.len(),
            req,
            cached,
            prefilled: on_gpu,
            to_load,
            generated: 0,
            anon_blocks: anon,
            step_prefill: 0,
            step_load: 0,
            step_decode: false,
        });
    }

    fn pin(&mut self, k: u64) {
        if let Some(b) = self.cache.get_mut(&k) {
            if b.refs == 0 {
                self.evictable.remove(&b.tick);
            }
            b.refs += 1;
        }
    }

    fn make_room(&mut self, blocks: usize) {
        while self.cache.len() + self.anon_blocks + blocks > self.capacity_blocks {
            let Some((_, k)) = self.evictable.pop_first() else {
                break;
            };
            self.cache.remove(&k);
            self.host.insert(k);
            self.stats.evicted_blocks += 1;
        }
    }

    fn release(&mut self, seq: &Seq) {
        self.anon_blocks -= seq.anon_blocks;
        // Deepest block first gets the oldest tick, so it is evicted before its prefix.
        for k in seq.req.blocks[..seq.held_keys].iter().rev() {
            if let Some(b) = self.cache.get_mut(k) {
                b.refs -= 1;
                if b.refs == 0 {
                    self.tick += 1;
                    b.tick = self.tick;
                    self.evictable.insert(self.tick, *k);
                }
            }
        }
    }
}

/// Block keys held in host memory, least recently used evicted first.
#[derive(Debug)]
struct HostTier {
    cap: usize,
    tick: u64,
    last_use: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
}

impl HostTier {
    fn new(cap: usize) -> Self {
        HostTier {
            cap,
            tick: 0,
            last_use: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    fn matched(&self, keys: &[u64]) -> usize {
        keys.iter()
            .take_while(|k| self.last_use.contains_key(k))
            .count()
    }

    fn touch(&mut self, keys: &[u64]) {
        for &k in keys {
            self.insert(k);
        }
    }

    fn insert(&mut self, k: u64) {
        if self.cap == 0 {
            return;
        }
        self.tick += 1;
        if let Some(old) = self.last_use.insert(k, self.tick) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.tick, k);
        while self.last_use.len() > self.cap {
            let Some((_, old)) = self.by_age.pop_first() else {
                break;
            };
            self.last_use.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round figures so expected times are easy to compute: 1000 prefill tok/s, 10 ms decode
    /// steps, 10-token blocks, 1000-token cache.
    pub(crate) fn toy() -> Profile {
        Profile {
            name: "toy".into(),
            prefill_tokens_per_s: 1000.0,
            decode_step_base_ms: 10.0,
            decode_step_per_seq_ms: 0.0,
            decode_ns_per_context_token: 0.0,
            max_batch: 2,
            max_batched_tokens: 1000,
            kv_capacity_tokens: 1000,
            block_tokens: 10,
            max_waiting: None,
            host_cache_tokens: 0,
            host_load_tokens_per_s: 0.0,
            source: "test".into(),
        }
    }

    fn req(id: u64, input: u32, output: u32, ids: &[u64]) -> SimRequest {
        SimRequest {
            id,
            input_tokens: input,
            output_tokens: output,
            blocks: chain_keys(ids.iter().copied()),
        }
    }

    /// Runs the engine alone until idle; returns (id, ttft, end) in virtual seconds.
    fn run(e: &mut Engine) -> Vec<(u64, f64, f64)> {
        let mut t = 0.0;
        let mut first = HashMap::new();
        let mut out = Vec::new();
        let mut events = Vec::new();
        while let Some(d) = e.plan_step() {
            t += d;
            events.clear();
            e.finish_step(&mut events);
            for ev in &events {
                match *ev {
                    Event::FirstToken { id, .. } => {
                        first.insert(id, t);
                    }
                    Event::Done { id, .. } => out.push((id, first[&id], t)),
                    Event::Token { .. } => {}
                }
            }
        }
        out.sort_by_key(|x| x.0);
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn prefill_then_decode_timing() {
        let mut e = Engine::new(toy());
        e.submit(req(1, 100, 3, &[])).unwrap();
        let r = run(&mut e);
        // 100 tokens at 1000/s = 0.1 s to the first token, then two 10 ms decode steps.
        assert!(close(r[0].1, 0.1), "{r:?}");
        assert!(close(r[0].2, 0.12), "{r:?}");
        assert_eq!(e.stats().output_tokens, 3);
    }

    #[test]
    fn ttft_rises_with_queueing() {
        let mut e = Engine::new(toy());
        for id in 0..6 {
            e.submit(req(id, 100, 50, &[id * 100])).unwrap();
        }
        let r = run(&mut e);
        let ttfts: Vec<f64> = r.iter().map(|x| x.1).collect();
        // Two slots: the later requests wait for earlier ones to finish before prefilling.
        assert!(ttfts[2] > ttfts[1] + 0.4, "{ttfts:?}");
        assert!(ttfts[5] > ttfts[3], "{ttfts:?}");
        assert!(ttfts.windows(2).all(|w| w[1] >= w[0]), "{ttfts:?}");
    }

    #[test]
    fn prefix_cache_hit_cuts_prefill() {
        let mut e = Engine::new(toy());
        let ids: Vec<u64> = (0..10).collect();
        e.submit(req(1, 100, 1, &ids)).unwrap();
        let cold = run(&mut e)[0].1;
        // Same ten blocks plus two more: only the 20 new tokens are prefilled.
        let mut ids2 = ids.clone();
        ids2.extend([50, 51]);
        e.submit(req(2, 120, 1, &ids2)).unwrap();
        let warm = run(&mut e);
        assert!(close(cold, 0.1));
        assert!(close(warm[0].1, 0.02), "{warm:?}");
        assert_eq!(e.stats().cached_tokens, 100);
        // A different first block shares nothing, even if later ids repeat.
        let mut other = ids.clone();
        other[0] = 99;
        e.submit(req(3, 100, 1, &other)).unwrap();
        assert!(close(run(&mut e)[0].1, 0.1));
    }

    #[test]
    fn kv_capacity_evicts_least_recent_and_limits_admission() {
        let mut e = Engine::new(toy());
        // 100 blocks of cache. A: 60 blocks, B: 40 blocks (prompt + 1 output token fill whole
        // blocks), both finished and cached.
        let a: Vec<u64> = (0..60).collect();
        let b: Vec<u64> = (1000..1040).collect();
        e.submit(req(1, 599, 1, &a)).unwrap();
        run(&mut e);
        e.submit(req(2, 399, 1, &b)).unwrap();
        run(&mut e);
        assert_eq!(e.cached_prefix(&chain_keys(a.iter().copied())), 60);
        // C needs 30 blocks: the 30 least recent go — A's deepest blocks, not its prefix.
        let c: Vec<u64> = (2000..2030).collect();
        e.submit(req(3, 299, 1, &c)).unwrap();
        run(&mut e);
        assert_eq!(e.stats().evicted_blocks, 30);
        assert_eq!(e.cached_prefix(&chain_keys(a.iter().copied())), 30);
        assert_eq!(e.cached_prefix(&chain_keys(b.iter().copied())), 40);
        // Two requests of 60 blocks cannot run together: the second waits for the first.
        e.submit(req(4, 590, 10, &[])).unwrap();
        e.submit(req(5, 590, 10, &[])).unwrap();
        assert!(e.plan_step().is_some());
        assert_eq!((e.running(), e.waiting()), (1, 1));
        let r = run(&mut e);
        assert!(r[1].1 > r[0].2, "second starts after the first ends: {r:?}");
        // More than the whole cache is refused outright.
        assert!(matches!(
            e.submit(req(6, 1001, 1, &[])),
            Err(Reject::TooLong { .. })
        ));
    }

    #[test]
    fn decode_slows_with_batch_and_context() {
        let mut p = toy();
        p.decode_step_per_seq_ms = 1.0;
        p.decode_ns_per_context_token = 1000.0;
        p.max_batch = 8;
        let solo = {
            let mut e = Engine::new(p.clone());
            e.submit(req(1, 10, 11, &[])).unwrap();
            let r = run(&mut e);
            r[0].2 - r[0].1
        };
        let mut e = Engine::new(p);
        for id in 0..8 {
            e.submit(req(id, 10, 11, &[])).unwrap();
        }
        let r = run(&mut e);
        let batched = r[0].2 - r[0].1;
        assert!(batched > solo * 1.5, "solo {solo} batched {batched}");
    }

    #[test]
    fn queue_limit_refuses_and_cancel_frees() {
        let mut p = toy();
        p.max_waiting = Some(1);
        let mut e = Engine::new(p);
        // Two batch slots and one waiting place: the fourth request is refused.
        for id in 1..=3 {
            e.submit(req(id, 10, 5, &[])).unwrap();
        }
        assert_eq!(e.submit(req(4, 10, 5, &[])), Err(Reject::QueueFull));
        assert!(e.plan_step().is_some());
        let mut ev = Vec::new();
        e.finish_step(&mut ev);
        assert_eq!(e.running(), 2);
        for id in 1..=3 {
            assert!(e.cancel(id));
        }
        assert!(!e.cancel(4));
        assert!(e.is_idle());
        assert_eq!(e.kv_used_blocks(), 0);
    }

    #[test]
    fn host_tier_keeps_evicted_prefixes_and_loads_them_faster_than_prefill() {
        let mut p = toy();
        p.kv_capacity_tokens = 200;
        p.host_cache_tokens = 10_000;
        p.host_load_tokens_per_s = 10_000.0;
        let mut e = Engine::new(p);
        let a: Vec<u64> = (0..10).collect();
        e.submit(req(1, 99, 1, &a)).unwrap();
        run(&mut e);
        // Another 20-block prompt pushes A's 10 blocks out of the 20-block GPU cache.
        e.submit(req(2, 199, 1, &(100..120).collect::<Vec<_>>()))
            .unwrap();
        run(&mut e);
        assert_eq!(e.cached_prefix(&chain_keys(a.iter().copied())), 0);
        // A again, extended by 5 blocks: 100 tokens load at 10k/s (0.01 s), 49 are computed at
        // 1k/s (0.049 s), instead of 0.149 s of prefill.
        let mut a2 = a.clone();
        a2.extend(200..205);
        e.submit(req(3, 149, 1, &a2)).unwrap();
        let r = run(&mut e);
        assert!(close(r[0].1, 0.01 + 0.049), "{r:?}");
        assert_eq!(e.stats().host_loaded_tokens, 100);
    }
}

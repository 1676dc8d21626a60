//! Scripted cases for every policy, on tokio's paused clock.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::*;
use crate::prefix::chain_ids;

fn balance(policy: Policy, n: usize) -> Balance {
    let cfg = BalanceConfig {
        policy,
        ..BalanceConfig::default()
    };
    Balance::new(cfg, n, Instant::now()).unwrap()
}

const ANY: RequestInfo<'static> = RequestInfo {
    prefix: &[],
    exclude: &[],
};

/// Starts `n` requests on `replica` that stay in flight.
fn load(b: &Balance, replica: ReplicaId, n: usize) {
    for _ in 0..n {
        b.on_start(replica, &ANY, Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn round_robin_cycles_and_skips_blocked() {
    let b = balance(Policy::RoundRobin, 3);
    let now = Instant::now();
    let picks: Vec<_> = (0..6).map(|_| b.pick(&ANY, now).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    b.on_start(1, &ANY, now);
    b.on_error(1, Some(Duration::from_secs(1)), now);
    let picks: Vec<_> = (0..4).map(|_| b.pick(&ANY, now).unwrap()).collect();
    assert_eq!(picks, [0, 2, 0, 2]);
}

#[tokio::test(start_paused = true)]
async fn least_loaded_picks_fewest_pending_and_rotates_ties() {
    let b = balance(Policy::LeastLoaded, 3);
    load(&b, 0, 2);
    load(&b, 2, 1);
    assert_eq!(b.pick(&ANY, Instant::now()), Some(1));
    load(&b, 1, 1);
    // 1 and 2 now tie at one pending each: successive picks alternate between them.
    let picks: Vec<_> = (0..4)
        .map(|_| b.pick(&ANY, Instant::now()).unwrap())
        .collect();
    assert!(picks.iter().all(|&p| p == 1 || p == 2), "{picks:?}");
    assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_reacts_at_once_to_a_slow_sample_then_decays() {
    let b = balance(Policy::P2cPeakEwma, 2);
    let now = Instant::now();
    // Both replicas known fast; replica 1 busier.
    b.on_first_token(0, Duration::from_millis(100), now);
    b.on_first_token(1, Duration::from_millis(100), now);
    load(&b, 1, 3);
    assert_eq!(b.pick(&ANY, now), Some(0));
    // One slow first token on replica 0: traffic moves at once, despite 1's queue.
    advance(Duration::from_millis(10)).await;
    b.on_first_token(0, Duration::from_secs(2), Instant::now());
    for _ in 0..10 {
        assert_eq!(b.pick(&ANY, Instant::now()), Some(1));
    }
    // Fast samples on replica 0 over three decay times pull its estimate back down.
    for _ in 0..30 {
        advance(Duration::from_secs(1)).await;
        b.on_first_token(0, Duration::from_millis(100), Instant::now());
        b.on_first_token(1, Duration::from_millis(100), Instant::now());
    }
    let loads = b.loads(Instant::now());
    assert!(loads[0].latency < 0.3, "{loads:?}");
    assert_eq!(b.pick(&ANY, Instant::now()), Some(0));
}

#[tokio::test(start_paused = true)]
async fn tpot_counts_in_the_latency_estimate() {
    let b = balance(Policy::P2cPeakEwma, 2);
    let now = Instant::now();
    b.on_first_token(0, Duration::from_millis(100), now);
    b.on_first_token(1, Duration::from_millis(100), now);
    b.on_start(0, &ANY, now);
    b.on_end(0, Some(Duration::from_millis(50)), now);
    b.on_start(1, &ANY, now);
    b.on_end(1, Some(Duration::from_millis(10)), now);
    // Same TTFT, same (zero) queue: the slower decoder loses.
    assert_eq!(b.pick(&ANY, now), Some(1));
}

#[tokio::test(start_paused = true)]
async fn fast_errors_are_penalised_not_attractive() {
    let b = balance(Policy::P2cPeakEwma, 2);
    let now = Instant::now();
    b.on_first_token(0, Duration::from_millis(300), now);
    b.on_first_token(1, Duration::from_millis(300), now);
    // Replica 0 answers 503 instantly, with no Retry-After.
    b.on_start(0, &ANY, now);
    b.on_error(0, None, now);
    let loads = b.loads(now);
    assert_eq!(
        loads[0].pending, 0,
        "the failed request no longer counts as pending"
    );
    assert!(loads[0].latency >= 5.0, "{loads:?}");
    // Even with a queue on replica 1, the failing replica is avoided.
    load(&b, 1, 4);
    assert_eq!(b.pick(&ANY, now), Some(1));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_until_it_passes() {
    let b = balance(Policy::LeastLoaded, 2);
    load(&b, 1, 5);
    b.on_start(0, &ANY, Instant::now());
    b.on_error(0, Some(Duration::from_secs(2)), Instant::now());
    assert_eq!(
        b.pick(&ANY, Instant::now()),
        Some(1),
        "0 is idle but asked us to wait"
    );
    advance(Duration::from_millis(1999)).await;
    assert_eq!(b.pick(&ANY, Instant::now()), Some(1));
    advance(Duration::from_millis(1)).await;
    assert_eq!(b.pick(&ANY, Instant::now()), Some(0));
    // Every replica waiting: no choice.
    b.on_error(0, Some(Duration::from_secs(1)), Instant::now());
    b.on_error(1, Some(Duration::from_secs(1)), Instant::now());
    assert_eq!(b.pick(&ANY, Instant::now()), None);
}

#[tokio::test(start_paused = true)]
async fn exclude_skips_tried_replicas() {
    let b = balance(Policy::LeastLoaded, 3);
    let req = RequestInfo {
        prefix: &[],
        exclude: &[0, 1],
    };
    assert_eq!(b.pick(&req, Instant::now()), Some(2));
    let all = RequestInfo {
        prefix: &[],
        exclude: &[0, 1, 2],
    };
    assert_eq!(b.pick(&all, Instant::now()), None);
}

#[tokio::test(start_paused = true)]
async fn prefix_affinity_picks_the_replica_holding_the_prefix() {
    let b = balance(Policy::PrefixAffinity, 3);
    let now = Instant::now();
    let first_turn = chain_ids(&[0, 1, 2, 3]);
    let second_turn = chain_ids(&[0, 1, 2, 3, 4, 5]);
    b.on_start(
        2,
        &RequestInfo {
            prefix: &first_turn,
            exclude: &[],
        },
        now,
    );
    // A little more load on 2 does not matter while the load is balanced.
    load(&b, 2, 3);
    let req = RequestInfo {
        prefix: &second_turn,
        exclude: &[],
    };
    assert_eq!(b.pick(&req, now), Some(2), "4 of 6 blocks are on replica 2");
    // Sharing only the first block (1 of 6) is below the 0.5 threshold: smallest tree wins,
    // which is not replica 2 (it holds 4 blocks, the others none).
    let other = chain_ids(&[0, 9, 10, 11, 12, 13]);
    let req = RequestInfo {
        prefix: &other,
        exclude: &[],
    };
    let p = b.pick(&req, now).unwrap();
    assert_ne!(p, 2);
    b.on_start(p, &req, now);
    // The next unmatched prompt goes to the one replica still holding nothing.
    let third = chain_ids(&[20, 21]);
    let q = b
        .pick(
            &RequestInfo {
                prefix: &third,
                exclude: &[],
            },
            now,
        )
        .unwrap();
    assert!(q != 2 && q != p, "{p} {q}");
}

#[tokio::test(start_paused = true)]
async fn imbalance_guard_overrides_affinity() {
    let b = balance(Policy::PrefixAffinity, 3);
    let now = Instant::now();
    let prompt = chain_ids(&[0, 1, 2, 3]);
    let req = RequestInfo {
        prefix: &prompt,
        exclude: &[],
    };
    b.on_start(2, &req, now);
    load(&b, 0, 10);
    load(&b, 1, 5);
    load(&b, 2, 39);
    // max − min = 40 − 5 = 35 > 32 and 40 > 1.0001 × 5: shortest queue, not the cache holder.
    assert_eq!(b.pick(&req, now), Some(1));
    // Two requests finish on 2: 38 − 5 = 33 still imbalanced; two more: 36 − 5 = 31, balanced.
    for _ in 0..2 {
        b.on_end(2, None, now);
    }
    assert_eq!(b.pick(&req, now), Some(1));
    for _ in 0..2 {
        b.on_end(2, None, now);
    }
    assert_eq!(b.pick(&req, now), Some(2));
}

#[tokio::test(start_paused = true)]
async fn p2c_spreads_over_equal_replicas() {
    let b = balance(Policy::P2cPeakEwma, 4);
    let mut counts = [0usize; 4];
    for _ in 0..400 {
        let now = Instant::now();
        let r = b.pick(&ANY, now).unwrap();
        counts[r] += 1;
        b.on_start(r, &ANY, now);
        b.on_first_token(r, Duration::from_millis(200), now);
    }
    // Cost grows with pending, so no replica can run far ahead of the others.
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 4, "{counts:?}");
}

#[test]
fn new_rejects_bad_config_and_empty_pool() {
    let now = Instant::now();
    assert!(Balance::new(BalanceConfig::default(), 0, now).is_err());
    let bad = BalanceConfig {
        decay_ms: 0,
        ..BalanceConfig::default()
    };
    assert!(Balance::new(bad, 2, now).unwrap_err().contains("decay_ms"));
}

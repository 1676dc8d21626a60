//! An approximate per-replica index of recently routed prompt prefixes.
//!
//! Prompts are cut into blocks (Mooncake's trace uses 512-token blocks) and each block is keyed
//! by a hash chained over all blocks before it, so equal keys mean equal prefixes — the same
//! trick as vLLM's prefix-cache block hashes. Each replica keeps the keys of the prompts sent to
//! it, capped in size with least-recently-used eviction, standing in for SGLang's approximate
//! radix tree: it records what the gateway routed, not what the replica really still caches.

use std::collections::{BTreeMap, HashMap};

/// Mixes a block identity into the hash of the prefix before it (splitmix64 finaliser).
pub fn chain(prev: u64, block: u64) -> u64 {
    let mut z = prev
        ^ block
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Chained keys for explicit block ids (e.g. a Mooncake trace row's `hash_ids`).
pub fn chain_ids(ids: &[u64]) -> Vec<u64> {
    let mut h = 0u64;
    ids.iter()
        .map(|&id| {
            h = chain(h, id);
            h
        })
        .collect()
}

/// Chained keys for prompt text cut into full blocks of `block_bytes` bytes (a partial last
/// block is not keyed, as engines only cache full blocks). About 4 bytes make a token in
/// English, so 2048 bytes stand for a 512-token block.
pub fn chain_text(text: &str, block_bytes: usize) -> Vec<u64> {
    let block_bytes = block_bytes.max(1);
    let mut h = 0u64;
    text.as_bytes()
        .chunks_exact(block_bytes)
        .map(|c| {
            h = chain(h, fnv1a(c));
            h
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One replica's recently routed prefix keys, LRU-capped at `cap` keys.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    cap: usize,
    tick: u64,
    last_use: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
}

impl PrefixIndex {
    pub fn new(cap: usize) -> Self {
        PrefixIndex {
            cap: cap.max(1),
            tick: 0,
            last_use: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// How many leading keys of `keys` this replica holds.
    pub fn matched(&self, keys: &[u64]) -> usize {
        keys.iter()
            .take_while(|k| self.last_use.contains_key(k))
            .count()
    }

    /// Records a routed prompt's keys as most recently used, evicting the oldest over the cap.
    pub fn insert(&mut self, keys: &[u64]) {
        for &k in keys {
            self.tick += 1;
            if let Some(old) = self.last_use.insert(k, self.tick) {
                self.by_age.remove(&old);
            }
            self.by_age.insert(self.tick, k);
        }
        while self.last_use.len() > self.cap {
            let Some((_, k)) = self.by_age.pop_first() else {
                break;
            };
            self.last_use.remove(&k);
        }
    }

    /// Keys held: the "tree size" SGLang's policy balances when nothing matches.
    pub fn len(&self) -> usize {
        self.last_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_use.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_keys_differ_by_prefix() {
        let a = chain_ids(&[1, 2, 3]);
        let b = chain_ids(&[9, 2, 3]);
        assert_eq!(a.len(), 3);
        assert_ne!(
            a[1], b[1],
            "same block after a different prefix is a different key"
        );
        assert_eq!(chain_ids(&[1, 2]), a[..2]);
        let t = chain_text(&"x".repeat(5000), 2048);
        assert_eq!(t.len(), 2, "the partial last block is not keyed");
    }

    #[test]
    fn match_counts_leading_keys_and_lru_evicts_oldest() {
        let mut ix = PrefixIndex::new(4);
        let a = chain_ids(&[1, 2, 3]);
        ix.insert(&a);
        assert_eq!(ix.matched(&chain_ids(&[1, 2, 3, 4])), 3);
        assert_eq!(ix.matched(&chain_ids(&[1, 7, 3])), 1);
        assert_eq!(ix.matched(&chain_ids(&[5])), 0);
        // Touch the first key, then add two more: the two oldest untouched keys go.
        ix.insert(&a[..1]);
        ix.insert(&chain_ids(&[8, 9]));
        assert_eq!(ix.len(), 4);
        assert_eq!(
            ix.matched(&a),
            1,
            "key 1 was used recently, keys 2 and 3 were evicted"
        );
    }
}

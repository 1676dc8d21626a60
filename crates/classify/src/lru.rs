//! A bounded least-recently-used map from a text's hash to its embedding, so a prompt seen again
//! (retries, templated prompts, agents resending the same turn) skips MiniLM.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Hits and misses since the classifier was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

#[derive(Debug)]
pub(crate) struct EmbeddingLru {
    capacity: usize,
    clock: u64,
    /// key → (last use, embedding)
    map: HashMap<u64, (u64, Vec<f32>)>,
    /// last use → key; the first entry is the one to evict.
    by_use: BTreeMap<u64, u64>,
    hits: u64,
    misses: u64,
}

/// 64-bit SipHash of the text (std's hasher with fixed keys). Two different prompts share a key
/// with probability ~n²/2⁶⁴, negligible for caches of thousands of entries.
pub(crate) fn text_key(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl EmbeddingLru {
    pub(crate) fn new(capacity: usize) -> Self {
        EmbeddingLru {
            capacity,
            clock: 0,
            map: HashMap::with_capacity(capacity.min(1 << 16)),
            by_use: BTreeMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    pub(crate) fn get(&mut self, key: u64) -> Option<Vec<f32>> {
        self.clock += 1;
        let now = self.clock;
        match self.map.get_mut(&key) {
            Some((used, emb)) => {
                self.by_use.remove(used);
                *used = now;
                self.by_use.insert(now, key);
                self.hits += 1;
                Some(emb.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub(crate) fn insert(&mut self, key: u64, emb: Vec<f32>) {
        if self.capacity == 0 {
            return;
        }
        self.clock += 1;
        let now = self.clock;
        if let Some((used, _)) = self.map.get(&key) {
            self.by_use.remove(used);
        } else if self.map.len() >= self.capacity {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, (now, emb));
        self.by_use.insert(now, key);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            entries: self.map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_entry() {
        let mut c = EmbeddingLru::new(2);
        c.insert(1, vec![1.0]);
        c.insert(2, vec![2.0]);
        assert_eq!(c.get(1), Some(vec![1.0])); // 2 is now the oldest
        c.insert(3, vec![3.0]);
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(1), Some(vec![1.0]));
        assert_eq!(c.get(3), Some(vec![3.0]));
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 3,
                misses: 1,
                entries: 2
            }
        );
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut c = EmbeddingLru::new(0);
        c.insert(1, vec![1.0]);
        assert_eq!(c.get(1), None);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn different_texts_get_different_keys() {
        assert_ne!(text_key("a"), text_key("b"));
        assert_eq!(text_key("same"), text_key("same"));
    }
}

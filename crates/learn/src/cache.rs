//! Prompt embeddings kept on disk between training runs, keyed by a hash of the prompt.
//!
//! File layout (little-endian): magic `SYEMB1\0\0`, u32 max_tokens, u32 dims, then per entry
//! u64 FNV-1a hash of the prompt and `dims` f32 values.

use std::collections::HashMap;
use std::path::Path;

const MAGIC: &[u8; 8] = b"SYEMB1\0\0";

#[derive(Debug, Clone, Default)]
pub struct EmbeddingCache {
    max_tokens: usize,
    map: HashMap<u64, Vec<f32>>,
}

fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl EmbeddingCache {
    pub fn new(max_tokens: usize) -> Self {
        EmbeddingCache {
            max_tokens,
            map: HashMap::new(),
        }
    }

    /// Reads the cache at `path`; a missing file, or one made with another `max_tokens`, is empty.
    pub fn load(path: &Path, max_tokens: usize) -> Result<Self, String> {
        let Ok(bytes) = std::fs::read(path) else {
            return Ok(Self::new(max_tokens));
        };
        let bad = || format!("{}: not an embedding cache", path.display());
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad());
        }
        let u32_at = |o: usize| -> Result<u32, String> {
            bytes
                .get(o..o + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(bad)
        };
        if u32_at(8)? as usize != max_tokens {
            return Ok(Self::new(max_tokens));
        }
        let dims = u32_at(12)? as usize;
        let entry = 8 + dims * 4;
        let body = &bytes[16..];
        if body.len() % entry != 0 {
            return Err(bad());
        }
        let mut map = HashMap::with_capacity(body.len() / entry);
        for e in body.chunks_exact(entry) {
            let key = u64::from_le_bytes(e[..8].try_into().map_err(|_| bad())?);
            let v: Vec<f32> = e[8..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            map.insert(key, v);
        }
        Ok(EmbeddingCache { max_tokens, map })
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let dims = self.map.values().next().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(16 + self.map.len() * (8 + dims * 4));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.max_tokens as u32).to_le_bytes());
        out.extend_from_slice(&(dims as u32).to_le_bytes());
        for (k, v) in &self.map {
            out.extend_from_slice(&k.to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, out).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
    }

    pub fn get(&self, prompt: &str) -> Option<&Vec<f32>> {
        self.map.get(&fnv1a(prompt))
    }

    pub fn insert(&mut self, prompt: &str, embedding: Vec<f32>) {
        self.map.insert(fnv1a(prompt), embedding);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_other_token_budgets() {
        let dir = std::env::temp_dir().join(format!("syemb-{}", std::process::id()));
        let path = dir.join("c.bin");
        let mut c = EmbeddingCache::new(64);
        c.insert("a", vec![1.0, 2.0]);
        c.insert("b", vec![3.0, -4.5]);
        c.save(&path).unwrap();
        let back = EmbeddingCache::load(&path, 64).unwrap();
        assert_eq!(back.get("b"), Some(&vec![3.0, -4.5]));
        assert_eq!(back.len(), 2);
        assert!(EmbeddingCache::load(&path, 128).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Prompt embeddings kept on disk between training runs, keyed by a hash of the prompt.
//!
//! File layout (little-endian): magic `SYEMB2\0\0`, u32 max_tokens, u32 dims, 16 bytes naming
//! the weight format the embeddings were made with (`Weights::revision_tag`, zero-padded), then
//! per entry u64 FNV-1a hash of the prompt and `dims` f32 values. A file of the first layout (no
//! weight format) reads as empty, like one made with another token budget or format.

use std::collections::HashMap;
use std::path::Path;

const MAGIC: &[u8; 8] = b"SYEMB2\0\0";
const MAGIC_V1: &[u8; 8] = b"SYEMB1\0\0";
const HEADER: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct EmbeddingCache {
    max_tokens: usize,
    /// The weight format's revision tag, zero-padded: embeddings from another format (or an
    /// earlier revision of it) differ slightly.
    weights: [u8; 16],
    map: HashMap<u64, Vec<f32>>,
}

fn format_name(weights: &str) -> [u8; 16] {
    let mut name = [0u8; 16];
    for (dst, src) in name.iter_mut().zip(weights.as_bytes()) {
        *dst = *src;
    }
    name
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
    /// An empty cache for embeddings cut at `max_tokens` and made with the weight format
    /// named `weights` (as `Weights` displays it).
    pub fn new(max_tokens: usize, weights: &str) -> Self {
        EmbeddingCache {
            max_tokens,
            weights: format_name(weights),
            map: HashMap::new(),
        }
    }

    /// Reads the cache at `path`; a missing file, or one made with another `max_tokens` or
    /// weight format, is empty.
    pub fn load(path: &Path, max_tokens: usize, weights: &str) -> Result<Self, String> {
        let Ok(bytes) = std::fs::read(path) else {
            return Ok(Self::new(max_tokens, weights));
        };
        let bad = || format!("{}: not an embedding cache", path.display());
        if bytes.get(..8) == Some(MAGIC_V1) {
            return Ok(Self::new(max_tokens, weights));
        }
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad());
        }
        let u32_at = |o: usize| -> Result<u32, String> {
            bytes
                .get(o..o + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(bad)
        };
        if u32_at(8)? as usize != max_tokens || bytes[16..HEADER] != format_name(weights) {
            return Ok(Self::new(max_tokens, weights));
        }
        let dims = u32_at(12)? as usize;
        let entry = 8 + dims * 4;
        let body = &bytes[HEADER..];
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
        Ok(EmbeddingCache {
            max_tokens,
            weights: format_name(weights),
            map,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let dims = self.map.values().next().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(HEADER + self.map.len() * (8 + dims * 4));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.max_tokens as u32).to_le_bytes());
        out.extend_from_slice(&(dims as u32).to_le_bytes());
        out.extend_from_slice(&self.weights);
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
    fn round_trips_and_ignores_other_token_budgets_and_formats() {
        let dir = std::env::temp_dir().join(format!("syemb-{}", std::process::id()));
        let path = dir.join("c.bin");
        let mut c = EmbeddingCache::new(64, "i8-vnni");
        c.insert("a", vec![1.0, 2.0]);
        c.insert("b", vec![3.0, -4.5]);
        c.save(&path).unwrap();
        let back = EmbeddingCache::load(&path, 64, "i8-vnni").unwrap();
        assert_eq!(back.get("b"), Some(&vec![3.0, -4.5]));
        assert_eq!(back.len(), 2);
        assert!(EmbeddingCache::load(&path, 128, "i8-vnni")
            .unwrap()
            .is_empty());
        assert!(EmbeddingCache::load(&path, 64, "f32").unwrap().is_empty());
        // A cache of the first layout, which did not name its weight format, starts over.
        let mut v1 = b"SYEMB1\0\0".to_vec();
        v1.extend_from_slice(&64u32.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        std::fs::write(&path, v1).unwrap();
        assert!(EmbeddingCache::load(&path, 64, "i8-vnni")
            .unwrap()
            .is_empty());
        std::fs::write(&path, b"not a cache").unwrap();
        assert!(EmbeddingCache::load(&path, 64, "i8-vnni").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

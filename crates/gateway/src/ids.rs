//! Request ids: unique per process run and cheap (no syscall, no lock per request).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};

static COUNTER: AtomicU64 = AtomicU64::new(0);
static PREFIX: OnceLock<u64> = OnceLock::new();

/// `sy-<process prefix><counter>`, 24 hex digits; the prefix differs between runs so ids stay
/// unique across restarts sharing one ledger.
pub fn request_id() -> String {
    let prefix = *PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        (t ^ (std::process::id() as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "sy-{:08x}{:016x}",
        (prefix >> 32) as u32,
        prefix.wrapping_add(n)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique() {
        let a = super::request_id();
        let b = super::request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 24);
    }
}

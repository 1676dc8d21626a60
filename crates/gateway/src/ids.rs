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
    // Hex by hand: `format!` with width and radix was a visible share of the request's own CPU.
    let mut id = String::with_capacity(3 + 24);
    id.push_str("sy-");
    push_hex(&mut id, prefix >> 32, 8);
    push_hex(&mut id, prefix.wrapping_add(n), 16);
    id
}

/// Appends the low `digits` hex digits of `v`, zero-padded, lower case.
fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((v >> (i * 4)) & 0xf) as usize]));
    }
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

    #[test]
    fn hex_is_zero_padded_lower_case() {
        let mut s = String::new();
        super::push_hex(&mut s, 0xab, 8);
        super::push_hex(&mut s, 0x0123_4567_89ab_cdef, 16);
        assert_eq!(s, "000000ab0123456789abcdef");
    }
}

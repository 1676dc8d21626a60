//! Hands freed heap back to the OS after a burst.
//!
//! glibc keeps freed chunks in its per-thread arenas. After an overload that held ~4,000
//! connections open at once (~70 KB each, client and upstream side), Switchyard's RSS stayed at
//! ~290 MB with a fraction of that live; with this trimmer it is ~65 MB five seconds later
//! (`bench/rss-after-overload.sh`, docs/benchmarks.md). A background thread checks the arenas' free bytes every few seconds and
//! trims only when a lot is free, so the steady state never pays for it.

use std::time::Duration;

/// Free heap above which a trim is worth its cost (it walks and locks each arena).
const TRIM_WHEN_FREE_BYTES: usize = 32 << 20;

/// Starts the trimming thread (a no-op where the allocator is not glibc's).
pub fn spawn_heap_trimmer(period: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("switchyard-trim".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                if let Some(released) = trim_if_worth_it() {
                    tracing::debug!(released, "returned free heap to the OS");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("heap trimmer not started: {e}");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = period;
}

/// Trims when resident anonymous memory exceeds the bytes in live allocations by more than
/// [`TRIM_WHEN_FREE_BYTES`]; returns how much resident memory the trim gave back.
///
/// Why not glibc's own free count (`fordblks`): it still counts chunks after `malloc_trim` has
/// handed their pages back, so after one overload it stays high and every tick would trim again,
/// each time walking the arenas under their locks while the workers wait to allocate (p99 +6.7 ms
/// at 500 req/s in bench/run.sh's fixed-rate phase right after its step test, 2026-12-01 run 1).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's mallinfo2/malloc_trim have no safe wrapper; both only read and reshape the allocator's own state.
fn trim_if_worth_it() -> Option<usize> {
    let resident = anon_resident_bytes()?;
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    let live = info.uordblks + info.hblkhd;
    if resident.saturating_sub(live) < TRIM_WHEN_FREE_BYTES {
        return None;
    }
    // SAFETY: malloc_trim(0) is thread-safe (it takes each arena's lock) and frees nothing in use.
    unsafe { libc::malloc_trim(0) };
    let after = anon_resident_bytes()?;
    Some(resident.saturating_sub(after))
}

/// Resident memory not backed by a file (heap, stacks): `resident - shared` of /proc/self/statm.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn anon_resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1);
    let resident: usize = fields.next()?.parse().ok()?;
    let shared: usize = fields.next()?.parse().ok()?;
    Some(resident.saturating_sub(shared) * page_size())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// The allocator's own view: bytes in live allocations and bytes free but still held (which
/// RSS counts until they are trimmed). `None` where the allocator is not glibc's.
pub fn heap_bytes() -> Option<(usize, usize)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd, info.fordblks))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[allow(clippy::unwrap_used)]
    fn rss_kb() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn freed_small_chunks_go_back_to_the_os() {
        // Many small blocks (below the mmap threshold, so they live in the arena), touched,
        // then all freed but one at the end that pins the top of the heap, as live
        // connections do: free() alone cannot shrink the heap past it.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 8 << 10]).collect();
        let pin = std::hint::black_box(Box::new([1u8; 64]));
        blocks.truncate(1);
        blocks.shrink_to_fit();
        let after_free = rss_kb();
        let released = trim_if_worth_it();
        let after_trim = rss_kb();
        assert!(pin[0] == 1 && blocks.len() == 1);
        assert!(
            after_free > 150_000,
            "free() alone gave the blocks back ({after_free} kB resident): this test's premise no longer holds"
        );
        assert!(released.is_some(), "160 MB free but no trim");
        assert!(
            after_trim + 100_000 < after_free,
            "RSS {after_free} kB after free, {after_trim} kB after trim"
        );
        // What was handed back is not handed back again: the next tick must not walk the
        // arenas under their locks for nothing.
        assert_eq!(
            trim_if_worth_it(),
            None,
            "a second trim right after the first: the trigger counts memory already returned"
        );
    }
}

//! Hands freed heap back to the OS after a burst.
//!
//! glibc keeps freed chunks in its per-thread arenas. After an overload that held ~4,000
//! connections open at once (~70 KB each, client and upstream side), Switchyard's RSS stayed at
//! ~290 MB with a fraction of that live; with this trimmer it is 65–70 MB five seconds later
//! (`bench/rss-after-overload.sh`, docs/benchmarks.md). Smaller surges matter too: a burst of a
//! few dozen connections left ~2 MB behind for good, which over a long run reads as growth. A
//! background thread compares resident memory with live allocations every few seconds and trims
//! when the surplus has grown since the last trim, so the steady state never pays for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Growth of the surplus (resident minus live) that is always worth a trim, whatever the size.
const MIN_TRIM_GROWTH: usize = 512 << 10;

/// Trims done since start, for `/metrics` (`switchyard_heap_trims_total`).
static TRIMS: AtomicU64 = AtomicU64::new(0);

/// Starts the trimming thread (a no-op where the allocator is not glibc's).
pub fn spawn_heap_trimmer(period: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("switchyard-trim".into())
            .spawn(move || {
                let mut trimmer = HeapTrimmer::default();
                loop {
                    std::thread::sleep(period);
                    if let Some(t) = trimmer.tick() {
                        tracing::debug!(
                            released = t.released,
                            micros = t.took.as_micros() as u64,
                            "returned free heap to the OS"
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("heap trimmer not started: {e}");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = period;
}

/// How many trims the trimmer has done (0 where the allocator is not glibc's).
pub fn trims() -> u64 {
    TRIMS.load(Ordering::Relaxed)
}

/// What one trim did.
#[derive(Debug, Clone, Copy)]
pub struct Trimmed {
    /// Resident bytes given back.
    pub released: usize,
    /// How long `malloc_trim` held the arenas.
    pub took: Duration,
}

/// Decides when to trim: when the surplus of resident anonymous memory over live allocations
/// has grown by more than [`MIN_TRIM_GROWTH`] or 1/32 of resident memory (whichever is more)
/// above the lowest surplus seen since the last trim.
///
/// Why relative to the last trim: part of the surplus cannot be returned (thread stacks,
/// fragments smaller than a page, memory mapped outside malloc), so a fixed threshold either
/// misses small surges (a 32 MB one left a long run's RSS +12% after a burst of connections) or
/// re-trims for ever. Why not glibc's own free count (`fordblks`): it still counts chunks after
/// `malloc_trim` has handed their pages back, so after one overload every tick trimmed again,
/// each time walking the arenas under their locks while the workers waited to allocate (p99
/// +6.7 ms at 500 req/s in bench/run.sh's fixed-rate phase right after its step test,
/// 2026-12-01 run 1). Why track the lowest surplus: memory freed after the surplus dipped (its
/// free pages reused by live data) is new free memory, trimmable again.
#[derive(Debug, Default)]
pub struct HeapTrimmer {
    /// The lowest surplus since the last trim; `None` before the first look (the first tick
    /// trims whatever is there, which is cheap at start-up and sets the baseline).
    floor: Option<usize>,
}

impl HeapTrimmer {
    /// Looks at the heap and trims if the surplus has grown enough; `None` when it did not trim.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn tick(&mut self) -> Option<Trimmed> {
        let resident = anon_resident_bytes()?;
        let surplus = resident.saturating_sub(live_bytes());
        if let Some(floor) = self.floor {
            let floor = floor.min(surplus);
            self.floor = Some(floor);
            let growth = (resident / 32).max(MIN_TRIM_GROWTH);
            if surplus < floor + growth {
                return None;
            }
        }
        let started = std::time::Instant::now();
        malloc_trim();
        let took = started.elapsed();
        TRIMS.fetch_add(1, Ordering::Relaxed);
        let after = anon_resident_bytes()?;
        self.floor = Some(after.saturating_sub(live_bytes()));
        Some(Trimmed {
            released: resident.saturating_sub(after),
            took,
        })
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn tick(&mut self) -> Option<Trimmed> {
        None
    }
}

/// Bytes in live allocations, as glibc counts them (arena chunks in use plus mmapped blocks).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's mallinfo2 has no safe wrapper; it only reads the allocator's counters.
fn live_bytes() -> usize {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's malloc_trim has no safe wrapper.
fn malloc_trim() {
    // SAFETY: malloc_trim(0) is thread-safe (it takes each arena's lock) and frees nothing in use.
    unsafe { libc::malloc_trim(0) };
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
        let mut trimmer = HeapTrimmer::default();
        let released = trimmer.tick();
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
        assert!(
            trimmer.tick().is_none(),
            "a second trim right after the first: the trigger counts memory already returned"
        );
    }

    #[test]
    fn a_small_surge_after_a_trim_is_trimmed_once() {
        let mut trimmer = HeapTrimmer::default();
        trimmer.tick();
        assert!(
            trimmer.tick().is_none(),
            "nothing changed since the last trim"
        );
        // A surge of a few MB (a burst of connections' buffers), freed around small live
        // blocks that outlive it, as the connections that stay open do: far below any fixed
        // "worth it" threshold, and free() alone can give none of it back.
        let before = rss_kb();
        let mut blocks = Vec::new();
        let mut pins = Vec::new();
        for i in 0..500 {
            blocks.push(vec![i as u8; 16 << 10]);
            pins.push(std::hint::black_box(Box::new([i as u8; 64])));
        }
        drop(blocks);
        let after_free = rss_kb();
        let trimmed = trimmer.tick();
        let after_trim = rss_kb();
        assert!(pins.iter().all(|p| p[1] == p[0]));
        assert!(
            after_free > before + 6_000,
            "free() alone gave the surge back ({before} kB before, {after_free} kB after): this test's premise no longer holds"
        );
        let trimmed = trimmed.expect("8 MB freed after the last trim, but no trim");
        assert!(
            trimmed.released >= 6 << 20 && after_trim + 6_000 < after_free,
            "released {} bytes; RSS {after_free} kB after free, {after_trim} kB after trim",
            trimmed.released
        );
        assert!(
            trimmer.tick().is_none(),
            "trimmed again with nothing new freed"
        );
    }
}

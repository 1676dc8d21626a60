//! The allocator: jemalloc, with background threads that hand freed pages back to the OS.
//!
//! Why not glibc's malloc: it keeps freed chunks in its arenas, so after an overload that held
//! ~4,000 connections open (~70 KB each, client and upstream side) RSS stayed near 290 MB. The
//! remedy was a thread calling `malloc_trim` when the free surplus grew, but one such call after
//! an overload returned 240 MB in 75–89 ms with each arena's lock held, and request threads that
//! allocated meanwhile waited; 1,000 streams started then saw first tokens tens of ms late
//! (`bench/streams-after-overload.sh`, docs/benchmarks.md). jemalloc's background threads purge
//! dirty pages on a decay curve, a few runs at a time, without stopping allocation; with the
//! options below, freed pages go back over about a second.
//!
//! The binary declares [`Jemalloc`] as its global allocator and exports [`MALLOC_CONF`] under
//! the name jemalloc looks up at start-up; `_RJEM_MALLOC_CONF` in the environment overrides it.

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options (NUL-terminated, as C reads them). `background_thread`: purging happens
/// on jemalloc's own threads, not on a request's allocation path. `dirty_decay_ms:1000`: freed
/// pages go back to the OS over about a second (jemalloc's default is ten, which leaves an
/// overload's buffers resident that long). `muzzy_decay_ms:0`: pages are returned outright
/// (`MADV_DONTNEED`), so RSS shows it, rather than lazily (`MADV_FREE`), which RSS does not.
/// An array, not a slice, so a reference to it is one pointer, as C's `const char *` is.
pub const MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The options jemalloc is running with, for the start-up log and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorOptions {
    /// Whether background threads purge freed pages.
    pub background_thread: bool,
    /// How long freed pages stay resident before they are purged, in ms.
    pub dirty_decay_ms: isize,
}

/// What jemalloc is running with; `None` when jemalloc is not this process's allocator (it has
/// no live allocations) or cannot be read.
pub fn allocator_options() -> Option<AllocatorOptions> {
    heap_bytes()?;
    Some(AllocatorOptions {
        background_thread: tikv_jemalloc_ctl::background_thread::read().ok()?,
        dirty_decay_ms: read_isize(b"opt.dirty_decay_ms\0")?,
    })
}

#[allow(unsafe_code)] // mallctl by name: the caller names the option's C type.
fn read_isize(name: &[u8]) -> Option<isize> {
    // SAFETY: the only name passed is an ssize_t option.
    unsafe { tikv_jemalloc_ctl::raw::read::<isize>(name) }.ok()
}

/// The allocator's own view: bytes in live allocations, and bytes resident beyond them
/// (pages not yet purged, fragments, jemalloc's metadata), which RSS counts. `None` when
/// jemalloc is not this process's allocator (a library user or test with the system one).
pub fn heap_bytes() -> Option<(usize, usize)> {
    // Statistics are snapshots refreshed by advancing the epoch; cheap, and only on a scrape.
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    let resident = tikv_jemalloc_ctl::stats::resident::read().ok()?;
    (allocated > 0).then(|| (allocated, resident.saturating_sub(allocated)))
}

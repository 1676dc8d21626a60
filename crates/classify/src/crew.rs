//! One forward's int8 products and attention heads shared between the thread running it and
//! helper threads.
//!
//! Why: at the default 32 word pieces a forward is about 3 ms of one core with AVX-512 VNNI (8
//! ms with AVX2), three quarters of it or more int8 products, against a 5 ms budget for the classifier's added p99; at the rates where one
//! forward runs at a time the gateway's other core is mostly idle. A product's 32-column tiles
//! are independent, so the caller and the helpers claim them from one counter, and each tile's
//! bias and GELU are applied by whoever computed it.
//!
//! Why not a pool's fork-join (candle's was tried, docs/routing-classes.md): its barrier waits
//! for every worker, and a worker descheduled by a busy core holds the forward for a time slice.
//! Here the caller never waits for a tile nobody has started (it claims every tile a helper has
//! not), and a tile a helper claimed but has not finished by a deadline (three times the caller's
//! own mean tile time, plus 5 µs) is computed again by the caller into a fresh output; the late
//! helper writes into the old one, which the job keeps alive until the helper lets go of it.
//!
//! One crew per process (the helpers are threads; one fewer than the CPUs, at most 3), held by
//! one forward at a time and only while no other forward runs: otherwise a forward runs on its
//! own thread, as every forward did before.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::int8::{Acts, Epilogue, PackedI8, TILE_N};

/// Tile states. A tile stays `PENDING` from its claim until the claimant marks it, so a pending
/// tile after the caller's claims ran out is a helper's.
const PENDING: u8 = 0;
const BY_CALLER: u8 = 1;
const BY_HELPER: u8 = 2;
const TAKEN_BACK: u8 = 3;

/// How long a helper polls for the next product of a forward in progress before it sleeps (the
/// steps between products take tens of microseconds; a wake-up on this VM costs about as much).
const HELPER_POLL: Duration = Duration::from_millis(1);

/// MiniLM forwards running in this process (shared or not). The crew helps only a forward that
/// runs alone: with two at once the cores are already busy, and a helper polling between steps
/// would take CPU from the other forward (at 300 req/s on 2 cores sharing raised the p99).
static FORWARDS: AtomicUsize = AtomicUsize::new(0);

/// Counts a forward as running while it lives.
pub(crate) struct Forward(());

pub(crate) fn forward_started() -> Forward {
    FORWARDS.fetch_add(1, Ordering::Relaxed);
    Forward(())
}

impl Drop for Forward {
    fn drop(&mut self) {
        FORWARDS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn others_running() -> bool {
    FORWARDS.load(Ordering::Relaxed) > 1
}

/// Items (product tiles and attention heads) helpers computed, and items the caller took back
/// from a late helper, since start.
static HELPED_TILES: AtomicU64 = AtomicU64::new(0);
static TAKEN_BACK_TILES: AtomicU64 = AtomicU64::new(0);

/// Counts of the shared products since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitCounts {
    /// Helper threads (0: every forward runs alone).
    pub helpers: usize,
    /// Items computed by a helper: product tiles and attention heads.
    pub helped_tiles: u64,
    /// Items a helper claimed but had not finished in time, computed again by the caller.
    pub taken_back_tiles: u64,
}

/// The counts so far (without starting the helpers).
pub fn split_counts() -> SplitCounts {
    SplitCounts {
        helpers: CREW.get().map_or(0, |c| c.helpers.len()),
        helped_tiles: HELPED_TILES.load(Ordering::Relaxed),
        taken_back_tiles: TAKEN_BACK_TILES.load(Ordering::Relaxed),
    }
}

/// What a job's items are: tiles of an int8 product, or attention heads.
enum Work {
    Product {
        weights: Arc<PackedI8>,
        acts: Acts,
        epilogue: Epilogue,
    },
    Attention {
        qkv: Vec<f32>,
        len: usize,
        hidden: usize,
        heads: usize,
    },
}

/// One step in flight: items that each write their own block of columns of a `rows × width`
/// output (a tile's 32 columns, a head's 32).
struct Job {
    work: Work,
    rows: usize,
    width: usize,
    /// Columns per item.
    block: usize,
    /// The caller's output buffer (`rows × width`).
    out: *mut f32,
    next: AtomicUsize,
    state: Box<[AtomicU8]>,
    /// Outputs the caller gave up on while a late helper may still write into them.
    abandoned: Mutex<Vec<Vec<f32>>>,
}

// SAFETY: `out` points into a buffer that outlives every write through it: the caller keeps it
// until every item is accounted for, or moves it into `abandoned`, freed with the job. Threads
// write disjoint column blocks (one claim each from `next`).
#[allow(unsafe_code)]
unsafe impl Send for Job {}
#[allow(unsafe_code)]
unsafe impl Sync for Job {}

impl Job {
    /// Item `i` into `out`.
    ///
    /// # Safety
    /// `out` is valid for `rows × width` values; `i` is below the item count and claimed by
    /// this thread (or taken back into a buffer of its own); the crew exists only where
    /// `int8::available()`, so the CPU has the features the kernels are compiled for.
    #[allow(unsafe_code)]
    unsafe fn run(&self, i: usize, out: *mut f32) {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (i, out); // no crew off x86-64: `crew()` needs the int8 product
        #[cfg(target_arch = "x86_64")]
        match &self.work {
            Work::Product {
                weights,
                acts,
                epilogue,
            } => weights.tile(acts, i, out, epilogue),
            Work::Attention {
                qkv,
                len,
                hidden,
                heads,
            } => crate::bert::attention_head_for_this_cpu(qkv, *len, *hidden, *heads, i, out),
        }
    }

    /// A helper's part: claim items until none are left or the caller took one back.
    fn help(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= self.state.len() {
                return;
            }
            #[cfg(test)]
            tests::pause_if_asked();
            // SAFETY: see `Job::run`; this thread claimed `t`.
            #[allow(unsafe_code)]
            unsafe {
                self.run(t, self.out)
            };
            if self.state[t]
                .compare_exchange(PENDING, BY_HELPER, Ordering::Release, Ordering::Relaxed)
                .is_err()
            {
                // Taken back: the caller has moved on to a fresh output.
                return;
            }
            HELPED_TILES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct HelperSlot {
    thread: OnceLock<Thread>,
    /// The helper's thread id (0 until it starts), for its CPU affinity.
    tid: AtomicI32,
    /// The CPU the helper is kept off (-1: none).
    kept_off: AtomicI32,
    asleep: AtomicBool,
}

struct Crew {
    /// A forward holds the crew.
    held: AtomicBool,
    posted: Mutex<Option<Arc<Job>>>,
    /// Bumped at every post; helpers poll it.
    generation: AtomicU64,
    helpers: Vec<HelperSlot>,
}

static CREW: OnceLock<Crew> = OnceLock::new();
static STARTED: OnceLock<bool> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing in the critical sections can panic; a poisoned lock still holds a valid value.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn helper_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let helpers = cpus.saturating_sub(1).min(3);
    // The tests exercise sharing on any machine.
    if cfg!(test) {
        helpers.max(1)
    } else {
        helpers
    }
}

/// The crew, its helpers started on first use; none without helpers or the int8 product.
fn crew() -> Option<&'static Crew> {
    if !crate::int8::available() {
        return None;
    }
    let crew = CREW.get_or_init(|| Crew {
        held: AtomicBool::new(false),
        posted: Mutex::new(None),
        generation: AtomicU64::new(0),
        helpers: (0..helper_count())
            .map(|_| HelperSlot {
                thread: OnceLock::new(),
                tid: AtomicI32::new(0),
                kept_off: AtomicI32::new(-1),
                asleep: AtomicBool::new(false),
            })
            .collect(),
    });
    let started = *STARTED.get_or_init(|| {
        crew.helpers.iter().enumerate().all(|(i, slot)| {
            std::thread::Builder::new()
                .name(format!("minilm-helper-{i}"))
                .spawn(move || helper_loop(crew, slot))
                .map_err(|e| tracing::warn!(error = %e, "starting a MiniLM helper thread"))
                .is_ok()
        })
    });
    (started && !crew.helpers.is_empty()).then_some(crew)
}

/// The CPU this thread runs on (-1 where unknown).
fn current_cpu() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: no arguments; reads the CPU number (vDSO / rdpid).
        #[allow(unsafe_code)]
        unsafe {
            libc::sched_getcpu()
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        -1
    }
}

/// Lets a helper run on any CPU the process may use except `cpu` (the forward's). Why: this
/// benchmark machine's kernel (a VM that packs threads onto few CPUs) woke a sleeping helper on
/// the waker's CPU, where it waited out the caller's time slice (1.3–1.5 ms) with the other
/// CPU idle; kept off the caller's CPU, it wakes where it can run.
fn keep_off_cpu(slot: &HelperSlot, cpu: i32) {
    if cpu < 0 || slot.kept_off.load(Ordering::Relaxed) == cpu {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            return;
        }
        let (Some(allowed), tid) = (ALLOWED_CPUS.get(), slot.tid.load(Ordering::Relaxed)) else {
            return;
        };
        if tid == 0 {
            return;
        }
        // SAFETY: `cpu_set_t` is plain data; the call gets a valid pointer and its size.
        #[allow(unsafe_code)]
        unsafe {
            let mut set = *allowed;
            libc::CPU_CLR(cpu as usize, &mut set);
            if libc::CPU_COUNT(&set) == 0
                || libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
            {
                return;
            }
        }
        slot.kept_off.store(cpu, Ordering::Relaxed);
    }
}

/// The CPUs the process may use, read when the helpers start.
#[cfg(target_os = "linux")]
static ALLOWED_CPUS: OnceLock<libc::cpu_set_t> = OnceLock::new();

fn helper_loop(crew: &'static Crew, me: &'static HelperSlot) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is plain data, zeroed is a valid empty set; the calls get valid
        // pointers and sizes.
        #[allow(unsafe_code)]
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                let _ = ALLOWED_CPUS.set(set);
            }
            me.tid.store(libc::gettid(), Ordering::Relaxed);
        }
    }
    let _ = me.thread.set(std::thread::current());
    let mut seen = crew.generation.load(Ordering::Acquire);
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    loop {
        let generation = crew.generation.load(Ordering::Acquire);
        if generation != seen {
            seen = generation;
            let job = lock(&crew.posted).clone();
            if let Some(job) = job {
                job.help();
            }
            idle_since = Instant::now();
            continue;
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(64)
            && (!crew.held.load(Ordering::Relaxed)
                || others_running()
                || idle_since.elapsed() > HELPER_POLL)
        {
            // Sleep; a post after the store below sees `asleep` and unparks (both SeqCst), and
            // an unpark before `park` makes it return at once.
            me.asleep.store(true, Ordering::SeqCst);
            if crew.generation.load(Ordering::SeqCst) == seen {
                std::thread::park();
            }
            me.asleep.store(false, Ordering::SeqCst);
            idle_since = Instant::now();
            continue;
        }
        std::hint::spin_loop();
    }
}

/// The crew, held for one forward; `None` when other forwards are running (or there is none).
/// Call with the forward counted ([`forward_started`]).
pub(crate) fn join() -> Option<CrewGuard> {
    if others_running() {
        return None;
    }
    let crew = crew()?;
    crew.held
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    let cpu = current_cpu();
    for slot in &crew.helpers {
        keep_off_cpu(slot, cpu);
    }
    Some(CrewGuard { crew })
}

pub(crate) struct CrewGuard {
    crew: &'static Crew,
}

impl Drop for CrewGuard {
    fn drop(&mut self) {
        *lock(&self.crew.posted) = None;
        self.crew.held.store(false, Ordering::Release);
    }
}

impl CrewGuard {
    /// `acts · Wᵀ` with `epilogue`, the tiles shared with the helpers; the same values as
    /// [`PackedI8::product`].
    pub(crate) fn product(
        &self,
        weights: &Arc<PackedI8>,
        acts: Acts,
        epilogue: Epilogue,
    ) -> Vec<f32> {
        let (tiles, width, rows) = (weights.tiles(), weights.width(), acts.rows());
        let work = Work::Product {
            weights: weights.clone(),
            acts,
            epilogue,
        };
        self.share(work, tiles, rows, width, TILE_N)
    }

    /// Attention over `len` rows of `[Q | K | V]`, the heads shared with the helpers; the same
    /// values as the forward's own attention. Heads 32 or 64 wide (`check_head_width`).
    pub(crate) fn attention(
        &self,
        qkv: Vec<f32>,
        len: usize,
        hidden: usize,
        heads: usize,
    ) -> Vec<f32> {
        let work = Work::Attention {
            qkv,
            len,
            hidden,
            heads,
        };
        self.share(work, heads, len, hidden, hidden / heads)
    }

    fn share(&self, work: Work, items: usize, rows: usize, width: usize, block: usize) -> Vec<f32> {
        let len = rows * width;
        // Not zeroed first: the items write every value.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if others_running() {
            // Another forward started meanwhile: no more sharing (see `FORWARDS`).
            let job = Job {
                work,
                rows,
                width,
                block,
                out: out.as_mut_ptr(),
                next: AtomicUsize::new(items),
                state: Box::new([]),
                abandoned: Mutex::new(Vec::new()),
            };
            for t in 0..items {
                // SAFETY: see `Job::run`; this job is this thread's alone.
                #[allow(unsafe_code)]
                unsafe {
                    job.run(t, job.out)
                };
            }
            // SAFETY: every item written.
            #[allow(unsafe_code)]
            unsafe {
                out.set_len(len)
            };
            return out;
        }
        let job = Arc::new(Job {
            work,
            rows,
            width,
            block,
            out: out.as_mut_ptr(),
            next: AtomicUsize::new(0),
            state: (0..items).map(|_| AtomicU8::new(PENDING)).collect(),
            abandoned: Mutex::new(Vec::new()),
        });
        *lock(&self.crew.posted) = Some(job.clone());
        self.crew.generation.fetch_add(1, Ordering::SeqCst);
        for slot in &self.crew.helpers {
            if slot.asleep.swap(false, Ordering::SeqCst) {
                if let Some(thread) = slot.thread.get() {
                    thread.unpark();
                }
            }
        }

        let start = Instant::now();
        let mut mine = 0u32;
        loop {
            let t = job.next.fetch_add(1, Ordering::Relaxed);
            if t >= items {
                break;
            }
            // SAFETY: see `Job::run`; this thread claimed `t`.
            #[allow(unsafe_code)]
            unsafe {
                job.run(t, job.out)
            };
            job.state[t].store(BY_CALLER, Ordering::Relaxed);
            mine += 1;
        }
        let deadline =
            Instant::now() + start.elapsed() / mine.max(1) * 3 + Duration::from_micros(5);
        let mut spins = 0u32;
        loop {
            if job
                .state
                .iter()
                .all(|s| s.load(Ordering::Acquire) != PENDING)
            {
                // SAFETY: every item is written (by this thread, or by a helper before its
                // Release that the Acquire loads above saw).
                #[allow(unsafe_code)]
                unsafe {
                    out.set_len(len)
                };
                return out;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(16) && Instant::now() >= deadline {
                break;
            }
            std::hint::spin_loop();
        }

        // A helper is late (descheduled, most likely): take its items back.
        let taken: Vec<usize> = (0..items)
            .filter(|&t| {
                job.state[t]
                    .compare_exchange(PENDING, TAKEN_BACK, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
            })
            .collect();
        if taken.is_empty() {
            // SAFETY: as above (the failed exchanges read each item's state with Acquire).
            #[allow(unsafe_code)]
            unsafe {
                out.set_len(len)
            };
            return out;
        }
        TAKEN_BACK_TILES.fetch_add(taken.len() as u64, Ordering::Relaxed);
        let mut fresh: Vec<f32> = Vec::with_capacity(len);
        for t in (0..items).filter(|t| !taken.contains(t)) {
            for r in 0..job.rows {
                let at = r * job.width + t * job.block;
                // SAFETY: item `t` is finished (its state was read with Acquire after the
                // writer's Release, or written by this thread); a late helper writes only the
                // taken items' columns, so these values are not being written. `fresh` has room
                // for `len` values.
                #[allow(unsafe_code)]
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        job.out.add(at),
                        fresh.as_mut_ptr().add(at),
                        job.block,
                    )
                };
            }
        }
        for &t in &taken {
            // SAFETY: as above, into this thread's own buffer.
            #[allow(unsafe_code)]
            unsafe {
                job.run(t, fresh.as_mut_ptr())
            };
        }
        // SAFETY: the finished items were copied and the taken ones computed: every value.
        #[allow(unsafe_code)]
        unsafe {
            fresh.set_len(len)
        };
        // `out` (its length still 0) stays allocated until the late helper lets go of the job.
        lock(&job.abandoned).push(out);
        fresh
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::int8::tests::matrix;
    use crate::int8::{ActCode, Precision};

    /// Microseconds a helper sleeps after claiming a tile (to make it late on purpose).
    static PAUSE_US: AtomicU64 = AtomicU64::new(0);
    /// These tests hold the one crew; under `cargo test` they run on threads of one process.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// The crew, waiting while a forward elsewhere in this process holds it.
    fn join_waiting() -> CrewGuard {
        for _ in 0..10_000 {
            if let Some(crew) = join() {
                return crew;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no crew (this CPU lacks AVX2 and FMA, or a forward held it for 10 s)");
    }

    pub(super) fn pause_if_asked() {
        let us = PAUSE_US.load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }

    /// Shares products until a helper has computed tiles (it starts asleep), checking each
    /// against the product on one thread; returns the counts' change.
    fn shared_products_match(pause_us: u64) -> (u64, u64) {
        assert!(
            crate::int8::available(),
            "this CPU lacks AVX2 and FMA: the shared product exists only where the int8 one runs"
        );
        let _one = lock(&ONE_AT_A_TIME);
        PAUSE_US.store(pause_us, Ordering::Relaxed);
        let (n, k, m) = (32 * 24, 1536, 32);
        let weights = Arc::new(
            PackedI8::new(&matrix(n, k, 3), n, k, Precision::Eight, ActCode::Offset8)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let bias: Arc<[f32]> = matrix(1, n, 4).into();
        let epilogue = Epilogue {
            bias: Some(bias),
            gelu: true,
        };
        let x = matrix(m, k, 5);
        let alone = weights.product(
            &weights.quantize(&x, m).unwrap_or_else(|e| panic!("{e}")),
            &epilogue,
        );
        let before = split_counts();
        for _ in 0..200 {
            let crew = join_waiting();
            let acts = weights.quantize(&x, m).unwrap_or_else(|e| panic!("{e}"));
            let shared = crew.product(&weights, acts, epilogue.clone());
            assert_eq!(shared, alone);
            let now = split_counts();
            if now.helped_tiles + now.taken_back_tiles
                > before.helped_tiles + before.taken_back_tiles
            {
                PAUSE_US.store(0, Ordering::Relaxed);
                return (
                    now.helped_tiles - before.helped_tiles,
                    now.taken_back_tiles - before.taken_back_tiles,
                );
            }
            drop(crew);
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the helper never took a tile in 200 products");
    }

    #[test]
    fn a_shared_product_equals_the_product_alone() {
        let (helped, _) = shared_products_match(0);
        assert!(helped > 0);
    }

    #[test]
    fn tiles_of_a_late_helper_are_taken_back() {
        // The helper sleeps 50 ms after each claim: the caller finishes the rest, gives it a few
        // tiles' time, then computes its tile itself, and the output is still exact.
        let (_, taken_back) = shared_products_match(50_000);
        assert!(taken_back > 0);
        // The late helper's write lands in the abandoned buffer, not in a later product.
        std::thread::sleep(Duration::from_millis(60));
        shared_products_match(0);
    }

    #[test]
    fn with_a_second_forward_running_a_product_is_not_shared() {
        let _one = lock(&ONE_AT_A_TIME);
        let (n, k, m) = (32 * 24, 1536, 32);
        let weights = Arc::new(
            PackedI8::new(&matrix(n, k, 3), n, k, Precision::Eight, ActCode::Offset8)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let x = matrix(m, k, 5);
        let acts = || weights.quantize(&x, m).unwrap_or_else(|e| panic!("{e}"));
        let alone = weights.product(&acts(), &Epilogue::default());
        let _this = forward_started();
        let crew = join_waiting();
        let _other = forward_started();
        assert!(join().is_none());
        let helped = split_counts().helped_tiles;
        for _ in 0..20 {
            assert_eq!(crew.product(&weights, acts(), Epilogue::default()), alone);
        }
        assert_eq!(split_counts().helped_tiles, helped);
    }

    #[test]
    fn one_forward_holds_the_crew_at_a_time() {
        let _one = lock(&ONE_AT_A_TIME);
        let first = join_waiting();
        assert!(join().is_none());
        drop(first);
        join_waiting();
    }
}

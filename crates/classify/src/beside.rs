//! The lane for semantic steps that run beside their requests (the class only labels the
//! record): threads for half the CPUs in the lowest scheduling class, `SCHED_IDLE` on Linux, so
//! a request's thread that wakes takes the CPU from them at once. Run at normal priority, such a
//! forward held the CPU a woken request thread needed for milliseconds; the lane gets what is
//! left. A request thread already runnable beside a lane thread the scheduler picked is not
//! helped by the class, so the forward also yields between blocks (`BertEncoder::embed`). Its queue is bounded: under overload a step gives way (the busy class) rather than
//! piling up records that wait for their class.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Steps waiting for the lane at most (beyond those its threads are running).
pub(crate) const QUEUE: usize = 64;

/// Steps queued or running on the lane now.
static IN_LANE: AtomicUsize = AtomicUsize::new(0);

/// Steps queued or running on the lane now: the records waiting for their class.
pub fn in_lane() -> usize {
    IN_LANE.load(Ordering::Relaxed)
}

/// Queues `job` on the lane; gives it back when the queue is full or the lane could not start.
pub(crate) fn submit(job: Job) -> Result<(), Job> {
    static LANE: OnceLock<Option<mpsc::SyncSender<Job>>> = OnceLock::new();
    let lane = LANE.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("minilm-beside-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for a job, not while running one.
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        // A step that panicked costs its request the forward (its sender is
                        // dropped, so `run_beside` gives the default class), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        IN_LANE.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "could not start a MiniLM lane thread"),
            }
        }
        (started > 0).then_some(tx)
    });
    let Some(tx) = lane else {
        return Err(job);
    };
    // Counted before it is sent, so a thread that runs it at once cannot count below zero.
    IN_LANE.fetch_add(1, Ordering::Relaxed);
    tx.try_send(job).map_err(|e| {
        IN_LANE.fetch_sub(1, Ordering::Relaxed);
        match e {
            mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job) => job,
        }
    })
}

/// The lane's threads: one per two CPUs the process may use, at least one. Even in the idle
/// class a forward costs requests something (caches, a CPU's sibling): at 50 req/s on 2 CPUs,
/// two lane threads added a median 0.7 ms to plain's p99 where one added none
/// (docs/routing-classes.md, "Classes that only label").
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Moves the calling thread to the idle scheduling class (allowed without privileges: it only
/// lowers the thread's priority).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param`; pid 0 names the calling thread.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "the MiniLM lane beside requests runs at normal priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
    use super::*;
    use std::sync::mpsc::channel;

    /// One test, since the lane is one per process: its thread is in the idle class, it refuses
    /// a job past its queue, and it outlives a job that panicked.
    #[test]
    fn the_lane_runs_idle_refuses_past_its_queue_and_survives_a_panic() {
        #[cfg(target_os = "linux")]
        {
            let (policy_tx, policy_rx) = channel();
            // SAFETY: reads the calling thread's policy; no pointers.
            #[allow(unsafe_code)]
            let job: Job = Box::new(move || {
                policy_tx
                    .send(unsafe { libc::sched_getscheduler(0) })
                    .unwrap()
            });
            assert!(submit(job).is_ok());
            assert_eq!(policy_rx.recv().unwrap(), libc::SCHED_IDLE);
        }

        // Hold every lane thread with a job, fill the queue, and one more is given back.
        let (running_tx, running_rx) = channel();
        let mut releases = Vec::new();
        for _ in 0..threads() {
            let (release_tx, release_rx) = channel::<()>();
            let running = running_tx.clone();
            let hold: Job = Box::new(move || {
                running.send(()).unwrap();
                release_rx.recv().unwrap();
            });
            assert!(submit(hold).is_ok());
            releases.push(release_tx);
        }
        for _ in 0..threads() {
            running_rx.recv().unwrap();
        }
        let (done_tx, done_rx) = channel();
        for _ in 0..QUEUE {
            let done = done_tx.clone();
            assert!(submit(Box::new(move || done.send(()).unwrap())).is_ok());
        }
        assert!(submit(Box::new(|| {})).is_err(), "the queue is full");
        assert_eq!(in_lane(), threads() + QUEUE);
        for release in releases {
            release.send(()).unwrap();
        }
        for _ in 0..QUEUE {
            done_rx.recv().unwrap();
        }
        // The count drops just after each job returns.
        for _ in 0..1000 {
            if in_lane() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(in_lane(), 0);

        assert!(submit(Box::new(|| panic!("a step that panics"))).is_ok());
        let (after_tx, after_rx) = channel();
        assert!(submit(Box::new(move || after_tx.send(()).unwrap())).is_ok());
        after_rx.recv().unwrap();
    }
}

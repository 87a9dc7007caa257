//! `ComputePool`: the CPU compute threads of weir's kernels, one per core (the calling thread is
//! one of them). A step runs ~100 short parallel regions (4 matmuls and an attention per layer);
//! the workers spin briefly between them instead of sleeping, as llama.cpp's pool does, so a
//! region starts in well under a microsecond instead of a futex wake-up. After `SPIN` idle
//! rounds they sleep on a condvar.
//!
//! Protocol: `run` publishes `(epoch, job)` under the `job` mutex after resetting the task
//! counter; a worker registers in `active` before reading the job, takes task indices from
//! `next` until they run out, then deregisters. `run` returns only once every task is done, the
//! job is withdrawn and no worker is active, so the borrowed closure outlives every call of it.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Idle polls before a worker sleeps (tens of µs: spans the gaps inside a step, not between
/// steps, where the HTTP tasks need the cores; BENCHMARKS.md "thread pools").
const SPIN: usize = 1 << 12;

type Job = *const (dyn Fn(usize) + Sync);

/// Gives rayon's global pool (candle's CPU ops: norms, element-wise ops) a single thread, so its
/// idle spinning does not take cores from `ComputePool`'s workers between regions; those ops
/// are small next to the matmuls and attention that run here. Call once at start-up (later
/// calls do nothing). Measured in BENCHMARKS.md ("thread pools").
pub fn init_cpu_threads() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "weir-rayon".into())
        .build_global();
}

struct Published {
    epoch: usize,
    job: Option<Job>,
    num_tasks: usize,
}

// SAFETY: the job pointer is only dereferenced while `run` keeps the closure alive (see above).
unsafe impl Send for Published {}

struct Shared {
    job: Mutex<Published>,
    epoch: AtomicUsize,
    next: AtomicUsize,
    done: AtomicUsize,
    active: AtomicUsize,
    wake: Condvar,
}

pub struct ComputePool {
    shared: Arc<Shared>,
    num_threads: usize,
    /// One region at a time (tests may call from several threads).
    caller: Mutex<()>,
}

impl ComputePool {
    /// The process-wide pool: one thread per available core.
    pub fn global() -> &'static ComputePool {
        static POOL: OnceLock<ComputePool> = OnceLock::new();
        POOL.get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            ComputePool::new(n)
        })
    }

    /// A pool of `num_threads` (the caller plus `num_threads - 1` workers).
    pub fn new(num_threads: usize) -> Self {
        let shared = Arc::new(Shared {
            job: Mutex::new(Published {
                epoch: 0,
                job: None,
                num_tasks: 0,
            }),
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            wake: Condvar::new(),
        });
        for i in 1..num_threads.max(1) {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("weir-compute-{i}"))
                .spawn(move || worker(&s))
                .expect("spawn a compute thread");
        }
        Self {
            shared,
            num_threads: num_threads.max(1),
            caller: Mutex::new(()),
        }
    }

    pub fn num_threads(&self) -> usize {
        self.num_threads
    }

    /// Calls `f(i)` for every `i in 0..num_tasks` on the pool's threads; returns when all are done.
    pub fn run(&self, num_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if num_tasks == 0 {
            return;
        }
        if num_tasks == 1 || self.num_threads == 1 {
            (0..num_tasks).for_each(f);
            return;
        }
        let _one = self.caller.lock();
        let s = &*self.shared;
        // SAFETY: erases the lifetime; `run` does not return while a worker may call `f`.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        {
            let mut p = s.job.lock();
            s.next.store(0, Ordering::Relaxed);
            s.done.store(0, Ordering::Relaxed);
            p.epoch += 1;
            p.job = Some(job);
            p.num_tasks = num_tasks;
            s.epoch.store(p.epoch, Ordering::Release);
        }
        s.wake.notify_all();
        take_tasks(s, f, num_tasks);
        while s.done.load(Ordering::Acquire) < num_tasks {
            std::hint::spin_loop();
        }
        s.job.lock().job = None;
        while s.active.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync), num_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= num_tasks {
            return;
        }
        f(i);
        s.done.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        while s.epoch.load(Ordering::Acquire) == seen {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let mut p = s.job.lock();
                if p.epoch == seen {
                    s.wake.wait(&mut p);
                }
            }
        }
        s.active.fetch_add(1, Ordering::AcqRel);
        let (epoch, job, num_tasks) = {
            let p = s.job.lock();
            (p.epoch, p.job, p.num_tasks)
        };
        seen = epoch;
        if let Some(job) = job {
            // SAFETY: `run` keeps the closure alive until `active` drops to 0.
            take_tasks(s, unsafe { &*job }, num_tasks);
        }
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once_per_region() {
        let pool = ComputePool::new(3);
        for n in [0usize, 1, 2, 7, 100] {
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..50 {
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
        }
    }

    #[test]
    fn regions_from_several_threads_do_not_mix() {
        let pool = Arc::new(ComputePool::new(2));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let sum = AtomicU64::new(0);
                        pool.run(16, &|i| {
                            sum.fetch_add(i as u64 + t, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 120 + 16 * t);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

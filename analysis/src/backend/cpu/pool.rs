//! A small thread pool for the CPU backend: the calling thread works alongside `threads - 1`
//! workers, tasks are handed out through an atomic counter, and idle workers sleep on a condition
//! variable after a short spin (no core is burnt waiting between ops).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// A job in flight: a task function with its lifetime erased (the caller waits for every worker
/// to finish before returning, so the borrow outlives every use).
#[derive(Clone, Copy)]
struct Job {
    task: *const (dyn Fn(usize) + Sync + 'static),
    count: usize,
}

// SAFETY: the pointee is `Sync` and outlives the job (see `Pool::run`).
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    generation: u64,
    /// Workers still inside the current generation.
    busy: usize,
    shutdown: bool,
    /// A task panicked on a worker (a bug); the caller re-raises it.
    panicked: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    next: AtomicUsize,
    /// A cheap copy of `state.generation` for spinning workers.
    published: AtomicUsize,
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// One job at a time; a second caller runs its tasks inline.
    running: Mutex<()>,
}

/// How long an idle worker polls for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

impl Pool {
    fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                busy: 0,
                shutdown: false,
                panicked: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            next: AtomicUsize::new(0),
            published: AtomicUsize::new(0),
        });
        for i in 1..threads {
            let for_worker = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("prism-cpu-{i}"))
                .spawn(move || worker(&for_worker));
            if spawned.is_err() {
                return Pool {
                    shared,
                    threads: i,
                    running: Mutex::new(()),
                };
            }
        }
        Pool {
            shared,
            threads,
            running: Mutex::new(()),
        }
    }

    /// The process-wide pool: `PRISM_THREADS`, or one thread per core.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let n = std::env::var("PRISM_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1)
                });
            Pool::new(n.min(256))
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task(0..count)` across the pool and returns when every task is done.
    pub fn run(&self, count: usize, task: Task<'_>) {
        if count == 0 {
            return;
        }
        let guard = match self.running.try_lock() {
            Ok(g) if self.threads > 1 && count > 1 => g,
            _ => {
                (0..count).for_each(task);
                return;
            }
        };
        // SAFETY: the lifetime is erased only for the duration of this call: we wait below until
        // no worker is inside the generation before `task` goes out of scope.
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute::<Task<'_>, &'static (dyn Fn(usize) + Sync)>(task) };
        let sh = &self.shared;
        sh.next.store(0, Ordering::SeqCst);
        {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            st.job = Some(Job {
                task: erased,
                count,
            });
            st.generation += 1;
            st.busy = self.threads - 1;
            sh.published.store(st.generation as usize, Ordering::SeqCst);
        }
        sh.wake.notify_all();
        take_tasks(sh, task, count);
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.busy > 0 {
            st = sh.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        let panicked = std::mem::take(&mut st.panicked);
        drop(st);
        drop(guard);
        if panicked {
            panic!("a task of the CPU backend panicked on a worker thread");
        }
    }
}

fn take_tasks(sh: &Shared, task: &(dyn Fn(usize) + Sync), count: usize) {
    loop {
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            break;
        }
        task(i);
    }
}

fn worker(sh: &Shared) {
    let mut seen = 0u64;
    loop {
        // Spin briefly on the published generation, then sleep.
        let started = Instant::now();
        while sh.published.load(Ordering::Acquire) as u64 == seen && started.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        let job = {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.generation == seen && !st.shutdown {
                st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job
        };
        let mut panicked = false;
        if let Some(job) = job {
            // SAFETY: the caller of `run` keeps the task alive until `busy` drops to zero.
            let task = unsafe { &*job.task };
            panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                take_tasks(sh, task, job.count)
            }))
            .is_err();
        }
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        st.panicked |= panicked;
        st.busy = st.busy.saturating_sub(1);
        if st.busy == 0 {
            sh.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.shutdown = true;
        drop(st);
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3);
        for count in [1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
            pool.run(count, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }
}

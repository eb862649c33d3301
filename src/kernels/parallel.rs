//! How kernels run their tasks on the thread pool: rayon by default, or, inside
//! [`with_team`], a team of the pool's workers that spins between parallel loops.
//!
//! A decode step runs about five parallel loops per layer (its products, its attention), each
//! a fraction of a millisecond. Between two of them rayon's idle workers go to sleep, and
//! waking them costs a futex call and a context switch per loop: about 64 per token at gpt1
//! size, a tenth of a step on 2 cores. Inside [`with_team`] the pool's other workers stay in
//! one broadcast job for the whole step, spinning for the next loop, so a loop starts as soon
//! as the caller posts it. Which thread runs a task never changes what it computes (kernels
//! split their work into tasks that do not depend on the thread count), so the team gives
//! the same bits as rayon.

use rayon::prelude::*;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

/// A raw pointer that tasks may share; each task writes only the elements it owns.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    #[inline(always)]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: used only to write disjoint elements from different tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Runs `f(0), …, f(tasks - 1)` on the pool: on the team where [`with_team`] set one up on
/// this thread, else as rayon's parallel iterator.
pub(crate) fn for_each(tasks: usize, f: impl Fn(usize) + Sync + Send) {
    match TEAM.get() {
        // SAFETY: `with_team` clears TEAM before the team it points to goes away.
        Some(team) if tasks > 1 => unsafe { &*team }.run(tasks, &f),
        _ => (0..tasks).into_par_iter().for_each(f),
    }
}

/// [`for_each`] over `buf`'s consecutive chunks of `chunk` elements (the last may be
/// shorter): `f(index, chunk)`.
pub(crate) fn for_each_chunk_mut<T: Send>(
    buf: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    assert!(chunk > 0, "chunks must hold at least one element");
    if TEAM.get().is_none() {
        buf.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    let (len, base) = (buf.len(), Shared(buf.as_mut_ptr()));
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        // SAFETY: the chunks are disjoint stretches of `buf`, which outlives the loop, and each
        // index runs once.
        let c = unsafe { std::slice::from_raw_parts_mut(base.at(start), chunk.min(len - start)) };
        f(i, c)
    });
}

/// A pointer into a buffer whose disjoint chunks tasks own.
struct Shared<T>(*mut T);
impl<T> Shared<T> {
    fn at(&self, i: usize) -> *mut T {
        // SAFETY: callers stay inside the buffer.
        unsafe { self.0.add(i) }
    }
}
// SAFETY: each task touches only its own chunk.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

/// Whether this thread drives a team now (tests check that theirs runs one).
#[cfg(test)]
fn in_team() -> bool {
    TEAM.get().is_some()
}

thread_local! {
    /// The team this thread drives, inside [`with_team`].
    static TEAM: Cell<Option<*const Team>> = const { Cell::new(None) };
}

/// Runs `f` on a worker of the current rayon pool: `f` itself where this thread is one, else
/// handed to one while this thread waits. A parallel loop started from outside the pool puts
/// the calling thread to sleep and back at every loop (prefill at gpt1 size 46 → 38 ms on a
/// worker, 2 threads), and only a worker can drive a decode step's team ([`with_team`]). The
/// command line, the server's model thread and the Python module run their work through it.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() { f() } else { rayon::scope(|_| f()) }
}

/// Teams started so far in this process (tests check that theirs ran one).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// How many times [`with_team`] has run a team (not its fallback) in this process.
pub fn teams_started() -> usize {
    STARTED.load(Relaxed)
}

/// Whether a team is running anywhere in the process: one at a time, so a team's broadcast
/// never waits on workers that spin in another's.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Runs `f` with the pool's other workers spinning for its parallel loops (module doc). Falls
/// back to plain rayon (calls `f` directly) off the pool, on a one-thread pool, on a pool
/// with more threads than cores (spinners would take the cores the work needs), and while
/// another team runs (nested calls included).
pub fn with_team<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let (threads, me) = (rayon::current_num_threads(), rayon::current_thread_index());
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let me = me.filter(|_| threads > 1 && threads <= cores);
    let Some(me) = me.filter(|_| !BUSY.swap(true, SeqCst)) else {
        return f();
    };
    struct Free;
    impl Drop for Free {
        fn drop(&mut self) {
            BUSY.store(false, SeqCst);
        }
    }
    let _free = Free;
    STARTED.fetch_add(1, Relaxed);
    let team = Team::default();
    let (mut f, mut out) = (Some(f), None);
    let (f_cell, out_cell) = (std::sync::Mutex::new(&mut f), std::sync::Mutex::new(&mut out));
    rayon::broadcast(|ctx| {
        if ctx.index() != me {
            return team.help();
        }
        // Stops the helpers however `f` ends (a panic included), or they would spin forever.
        struct Stop<'a>(&'a Team);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                TEAM.set(None);
                self.0.stop.store(true, SeqCst);
            }
        }
        let _stop = Stop(&team);
        TEAM.set(Some(&team as *const Team));
        let f = f_cell.lock().unwrap().take().expect("the driver runs once");
        **out_cell.lock().unwrap() = Some(f());
    });
    out.expect("the driver ran on this thread")
}

/// The loop being run: its body and task count. Lives on the driver's stack for one loop.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
}

/// What the driver and its helpers share.
#[derive(Default)]
struct Team {
    /// The open loop, or null between loops.
    job: AtomicPtr<Job<'static>>,
    /// Loops opened so far: a helper joins each once (two loops may share a stack address).
    opened: AtomicUsize,
    /// The next task index to claim.
    next: AtomicUsize,
    /// Tasks finished (or panicked) in the open loop.
    done: AtomicUsize,
    /// Helpers that may be reading `job`: the driver waits for none before the job goes.
    inside: AtomicUsize,
    /// The step is over: helpers return.
    stop: AtomicBool,
    /// A task panicked on a helper.
    panicked: AtomicBool,
}

/// Spins before yielding the core, so a helper on an oversubscribed or busy machine lets
/// other threads run.
const SPINS: u32 = 1 << 14;

impl Team {
    /// The driver: posts the loop, claims tasks beside the helpers, waits for all of them.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job { f, tasks };
        self.next.store(0, SeqCst);
        self.done.store(0, SeqCst);
        // Closes the loop even if a task panics here, so no helper reads a dead job.
        struct Close<'a>(&'a Team);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.job.store(std::ptr::null_mut(), SeqCst);
                while self.0.inside.load(SeqCst) != 0 {
                    std::hint::spin_loop();
                }
            }
        }
        let close = Close(self);
        self.job.store(&job as *const Job as *mut Job<'static>, SeqCst);
        self.opened.fetch_add(1, SeqCst);
        self.claim(&job);
        wait(|| self.done.load(Acquire) >= tasks);
        drop(close);
        assert!(!self.panicked.swap(false, SeqCst), "a parallel task panicked on a helper thread");
    }

    /// Runs tasks of `job` until none is left.
    fn claim(&self, job: &Job) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= job.tasks {
                return;
            }
            (job.f)(i);
            self.done.fetch_add(1, Release);
        }
    }

    /// A helper: joins each loop the driver opens until the step stops.
    fn help(&self) {
        let mut last = 0;
        loop {
            let (mut seen, mut opened) = (std::ptr::null_mut(), 0);
            wait(|| {
                opened = self.opened.load(SeqCst);
                seen = self.job.load(SeqCst);
                self.stop.load(Relaxed) || (opened != last && !seen.is_null())
            });
            if self.stop.load(SeqCst) {
                return;
            }
            // Announce, then check the loop is still open: the driver closes a loop and then
            // waits for no helper inside, so either it sees us or we see the close.
            self.inside.fetch_add(1, SeqCst);
            if self.job.load(SeqCst) == seen {
                // SAFETY: the loop is open and cannot close while we are inside.
                let job = unsafe { &*seen };
                if catch_unwind(AssertUnwindSafe(|| self.claim(job))).is_err() {
                    self.panicked.store(true, SeqCst);
                    // Count the task that panicked, so the driver does not wait for it.
                    self.done.fetch_add(1, Release);
                    self.claim(job);
                }
            }
            last = opened;
            self.inside.fetch_sub(1, SeqCst);
        }
    }
}

/// Spins until `ready()`, yielding the core after [`SPINS`] tries.
fn wait(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// One team at a time runs in a process: these tests take turns, so each gets its team.
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A team runs (not the fallback) where the machine has the cores for it.
    fn engaged(threads: usize) -> bool {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        (2..=cores).contains(&threads)
    }

    #[test]
    fn a_team_runs_every_task_once_for_any_thread_count() {
        for threads in [1, 2, 3] {
            let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
            let counts: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
            pool(threads).install(|| {
                with_team(|| {
                    assert_eq!(in_team(), engaged(threads), "{threads} threads");
                    for tasks in [0, 1, 2, 5, 97] {
                        for_each(tasks, |i| {
                            counts[i].fetch_add(1, SeqCst);
                        });
                    }
                })
            });
            let got: Vec<usize> = counts.iter().map(|c| c.load(SeqCst)).collect();
            let want: Vec<usize> =
                (0..97).map(|i| [1, 2, 5, 97].iter().filter(|&&t| i < t).count()).collect();
            assert_eq!(got, want, "{threads} threads");
        }
    }

    #[test]
    fn chunks_cover_the_buffer_once_inside_and_outside_a_team() {
        for threads in [1, 2] {
            for team in [false, true] {
                let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
                let mut buf = vec![0usize; 103];
                let body = |buf: &mut [usize]| {
                    for_each_chunk_mut(buf, 10, |i, c| {
                        for (j, v) in c.iter_mut().enumerate() {
                            *v += i * 10 + j + 1;
                        }
                    })
                };
                pool(threads)
                    .install(|| if team { with_team(|| body(&mut buf)) } else { body(&mut buf) });
                assert_eq!(buf, (1..=103).collect::<Vec<_>>(), "{threads} threads, team {team}");
            }
        }
    }

    #[test]
    fn a_panicking_task_ends_the_step_with_a_panic_not_a_hang() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let r = catch_unwind(|| {
            pool(2).install(|| {
                with_team(|| {
                    assert_eq!(in_team(), engaged(2));
                    for_each(64, |i| {
                        if i == 40 {
                            panic!("task 40");
                        }
                    })
                })
            })
        });
        assert!(r.is_err());
        // The pool still works after it.
        assert_eq!(pool(2).install(|| with_team(|| 7)), 7);
    }

    #[test]
    fn with_team_returns_the_value_and_nests() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let v = pool(2).install(|| with_team(|| with_team(|| 3) + 4));
        assert_eq!(v, 7);
    }
}

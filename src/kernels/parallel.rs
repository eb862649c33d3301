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
pub(crate) struct SendPtr<T = f32>(pub *mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: used only to hand disjoint elements to different tasks.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Runs `f(0), …, f(tasks - 1)` on the pool: on the team where [`with_team`] set one up on
/// this thread, else as rayon's parallel iterator.
pub(crate) fn for_each(tasks: usize, f: impl Fn(usize) + Sync + Send) {
    match TEAM.get() {
        Some(team) if tasks > 1 => {
            // A loop inside one of this loop's tasks takes rayon's path: the team runs one
            // loop at a time.
            struct Restore(*const Team);
            impl Drop for Restore {
                fn drop(&mut self) {
                    TEAM.set(Some(self.0));
                }
            }
            TEAM.set(None);
            let _restore = Restore(team);
            // SAFETY: `with_team` clears TEAM before the team it points to goes away.
            unsafe { &*team }.run(tasks, &f)
        }
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
    let (len, base) = (buf.len(), SendPtr(buf.as_mut_ptr()));
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        // SAFETY: chunk `i` is a stretch of `buf` (start < len) no other index touches, `buf`
        // is borrowed for the whole loop, and each index runs once.
        let c = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(start), chunk.min(len - start))
        };
        f(i, c)
    });
}

/// Whether this thread drives a team now (tests check that theirs runs one).
#[cfg(test)]
fn in_team() -> bool {
    TEAM.get().is_some()
}

thread_local! {
    /// The team this thread drives, inside [`with_team`] (cleared while one of its loops runs).
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

/// Whether a team is running anywhere in the process: one at a time, so a team never waits
/// for workers that spin in another's.
static BUSY: AtomicBool = AtomicBool::new(false);

/// The cores this process may use, read once (std reads the cgroup's quota at every call).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get()))
}

/// Runs `f` with the pool's other workers spinning for its parallel loops (module doc). Falls
/// back to plain rayon (calls `f` directly) off the pool, on a one-thread pool, on a pool
/// with more threads than cores (spinners would take the cores the work needs), and while
/// another team runs (nested calls included).
///
/// Inside `f`, rayon's own parallel iterators run on the calling thread alone (the other
/// workers are spinning for [`for_each`]), and anything that needs every worker of the pool
/// (`rayon::broadcast`, waiting for a `rayon::spawn`) would never finish: `f` is a decode step,
/// whose parallel loops all start here.
pub fn with_team<R>(f: impl FnOnce() -> R) -> R {
    with_team_on(f, cores())
}

/// [`with_team`] for a machine of `cores` cores (tests oversubscribe on purpose).
fn with_team_on<R>(f: impl FnOnce() -> R, cores: usize) -> R {
    let (threads, me) = (rayon::current_num_threads(), rayon::current_thread_index());
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
    // `f` runs on this thread; the scope ends once every helper has returned.
    rayon::in_place_scope(|s| {
        s.spawn_broadcast(|_, ctx| {
            if ctx.index() != me {
                team.help()
            }
        });
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
        f()
    })
}

/// The loop being run: its body and task count. Lives on the driver's stack for one loop.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
}

/// A value alone on its cache lines: the counters every claim writes stay off the line the
/// spinning helpers poll.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What the driver and its helpers share.
#[derive(Default)]
struct Team {
    /// The open loop, or null between loops.
    job: Padded<AtomicPtr<Job<'static>>>,
    /// Loops opened so far: a helper that has run out of a loop's tasks waits for the next
    /// (two loops may share a stack address).
    opened: AtomicUsize,
    /// The step is over: helpers return.
    stop: AtomicBool,
    /// The next task index to claim.
    next: Padded<AtomicUsize>,
    /// Helpers that may be reading `job` or running its tasks: once the loop is closed, the
    /// driver waits for none, so every task has finished and its writes are seen.
    inside: Padded<AtomicUsize>,
    /// The first panic of a task in the open loop, raised again on the driver.
    panic: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// Spins before yielding the core, so a helper on an oversubscribed or busy machine lets
/// other threads run.
const SPINS: u32 = 1 << 14;

impl Team {
    /// The driver: posts the loop, claims tasks beside the helpers until none is left, closes
    /// the loop and waits for the helpers still running its tasks, then raises the first
    /// panic of a task, if any.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job { f, tasks };
        self.next.store(0, SeqCst);
        // Closes the loop however this ends, so no helper reads a dead job.
        struct Close<'a>(&'a Team);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.job.store(std::ptr::null_mut(), SeqCst);
                wait(|| self.0.inside.load(SeqCst) == 0);
            }
        }
        let close = Close(self);
        self.job.store(&job as *const Job as *mut Job<'static>, SeqCst);
        self.opened.fetch_add(1, SeqCst);
        self.claim(&job);
        drop(close);
        let panic = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }

    /// Runs tasks of `job` until none is left; a task's panic is kept for the driver.
    fn claim(&self, job: &Job) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= job.tasks {
                return;
            }
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| (job.f)(i))) {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
            }
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
                self.claim(unsafe { &*seen });
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

    /// `f` on a team of `threads` workers, whatever this machine's cores (oversubscribed on
    /// purpose: the helpers yield after spinning); asserts the team ran.
    fn on_team<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        pool(threads).install(|| {
            with_team_on(
                || {
                    assert_eq!(in_team(), threads > 1, "{threads} threads: no team");
                    f()
                },
                threads,
            )
        })
    }

    #[test]
    fn a_team_runs_every_task_once_before_the_loop_returns() {
        for threads in 1..=4 {
            on_team(threads, || {
                for tasks in [0, 1, 2, 5, 97] {
                    let counts: Vec<AtomicUsize> =
                        (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                    for_each(tasks, |i| {
                        counts[i].fetch_add(1, Relaxed);
                    });
                    assert!(
                        counts.iter().all(|c| c.load(Relaxed) == 1),
                        "{threads} threads, {tasks} tasks"
                    );
                }
            });
        }
    }

    #[test]
    fn the_helpers_run_tasks() {
        for threads in [2, 3] {
            let ran_elsewhere = on_team(threads, || {
                let me = rayon::current_thread_index();
                let elsewhere = AtomicBool::new(false);
                for _ in 0..10_000 {
                    for_each(16, |_| {
                        // A few microseconds of work, so a loop outlasts a helper's poll.
                        (0..5_000u32).for_each(|i| {
                            std::hint::black_box(i);
                        });
                        if rayon::current_thread_index() != me {
                            elsewhere.store(true, Relaxed);
                        }
                    });
                    if elsewhere.load(Relaxed) {
                        break;
                    }
                }
                elsewhere.load(Relaxed)
            });
            assert!(ran_elsewhere, "{threads} threads: the driver ran every task itself");
        }
    }

    /// Thousands of loops in a row, each reading what the previous one wrote (every loop's job
    /// at the same stack address): what a helper wrote is seen by the next loop's tasks.
    #[test]
    fn loops_in_a_row_see_each_others_writes() {
        for threads in [2, 3] {
            let (a, b) = on_team(threads, || {
                let (mut a, mut b) = (vec![0u64; 64], vec![0u64; 64]);
                for _ in 0..3_000 {
                    let src = &a;
                    for_each_chunk_mut(&mut b, 4, |c, out| {
                        for (j, o) in out.iter_mut().enumerate() {
                            *o = src[(c * 4 + j + 1) % 64] + 1;
                        }
                    });
                    std::mem::swap(&mut a, &mut b);
                }
                (a, b)
            });
            assert!(a.iter().all(|&v| v == 3_000), "{threads} threads");
            assert!(b.iter().all(|&v| v == 2_999), "{threads} threads");
        }
    }

    #[test]
    fn chunks_cover_the_buffer_once_inside_and_outside_a_team() {
        let body = |len: usize, chunk: usize| {
            let mut buf = vec![0usize; len];
            for_each_chunk_mut(&mut buf, chunk, |i, c| {
                for (j, v) in c.iter_mut().enumerate() {
                    *v += i * chunk + j + 1;
                }
            });
            assert_eq!(buf, (1..=len).collect::<Vec<_>>(), "{len} elements in chunks of {chunk}");
        };
        for (len, chunk) in [(103, 10), (0, 4), (5, 8), (8, 8)] {
            body(len, chunk);
            on_team(2, || body(len, chunk));
        }
    }

    #[test]
    fn panicking_tasks_end_the_step_with_their_panic_not_a_hang() {
        for every in [1, 2, 40] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                on_team(2, || {
                    for_each(64, |i| {
                        if i % every == 0 {
                            panic!("task {i}");
                        }
                    })
                })
            }));
            let msg = r.expect_err("a task panicked");
            let msg = msg.downcast_ref::<String>().map(String::as_str).unwrap_or("");
            assert!(msg.starts_with("task "), "the task's own panic, not {msg:?}");
        }
        // A team still runs after them.
        assert_eq!(on_team(2, || 7), 7);
    }

    #[test]
    fn loops_inside_a_task_and_teams_inside_a_team_run_on_rayon() {
        let v = on_team(2, || {
            let counts: Vec<AtomicUsize> = (0..40).map(|_| AtomicUsize::new(0)).collect();
            for_each(8, |i| {
                for_each(5, |j| {
                    counts[i * 5 + j].fetch_add(1, Relaxed);
                });
            });
            assert!(counts.iter().all(|c| c.load(Relaxed) == 1));
            with_team(|| 3) + 4
        });
        assert_eq!(v, 7);
    }

    #[test]
    fn teams_in_both_halves_of_a_join_give_their_results() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let sum = |n: usize| {
            with_team_on(
                || {
                    let total = AtomicUsize::new(0);
                    for_each(n, |i| {
                        total.fetch_add(i, Relaxed);
                    });
                    total.into_inner()
                },
                2,
            )
        };
        let (a, b) = pool(2).install(|| rayon::join(|| sum(100), || sum(50)));
        assert_eq!((a, b), (4950, 1225));
    }

    #[test]
    fn on_pool_runs_on_a_worker() {
        let p = pool(2);
        p.install(|| assert!(on_pool(rayon::current_thread_index).is_some()));
        assert!(on_pool(rayon::current_thread_index).is_some(), "from outside the pool");
    }
}

//! Data-parallel training across processes: each of `world` ranks runs its contiguous share of
//! a step's micro-batches (the global batch is sampled alike on every rank, so the data order,
//! the loss's normalisation and the dropout keys of micro-batch `k` are the single process's),
//! then the gradients and loss sums are summed across ranks ([`Collective`]) and every rank
//! takes the same update. `mpirun -np N gpt1 pretrain ...` thus gives the weights of
//! `gpt1 pretrain ...` with the same `--micro-batch` up to the order of the final sum.
//!
//! The communicator is a trait so the trainers need no MPI: [`Mpi`] (feature `mpi`, OpenMPI
//! through the `mpi` crate) between processes, [`local::group`] between threads (tests).

use crate::error::{Error, Result};
use std::ops::Range;

/// What data-parallel training needs of a communicator. Every rank calls each collective in the
/// same order; the results are the same on every rank.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_f32(&self, x: &mut [f32]);
    /// Element-wise sum over ranks, in place.
    fn all_reduce_f64(&self, x: &mut [f64]);
    /// Rank 0's bytes on every rank (lengths may differ: rank 0's wins).
    fn broadcast_bytes(&self, x: &mut Vec<u8>);
    /// Ends every rank of the job (after an error on one: the others would wait forever).
    fn abort(&self, code: i32) -> !;
}

impl std::fmt::Debug for dyn Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the rank: settings printed with it are compared across ranks.
        write!(f, "Collective {{ world: {} }}", self.world())
    }
}

/// The communicator of a process started by `mpirun`/`srun` (None when it was started alone).
pub fn connect() -> Result<Option<std::sync::Arc<dyn Collective>>> {
    let n = launched_world();
    if n <= 1 {
        return Ok(None);
    }
    #[cfg(feature = "mpi")]
    {
        let m = Mpi::init()
            .ok_or_else(|| Error::Distributed("MPI was initialised twice".to_string()))?;
        Ok(Some(std::sync::Arc::new(m)))
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::Distributed(format!(
        "this process is one of {n} started by a launcher (mpirun, srun), but this gpt1 was \
         built without MPI: build it with `cargo build --release --features mpi` (needs \
         OpenMPI's development files and libclang; Debian: libopenmpi-dev libclang-dev)"
    )))
}

/// A barrier: returns once every rank has called it.
pub fn barrier(comm: &dyn Collective) {
    comm.all_reduce_f64(&mut [0.0]);
}

/// Whether any rank's flag is set (every rank gets the same answer: Ctrl-C reaches the ranks
/// at different moments, and they must stop after the same step).
pub fn any(comm: &dyn Collective, flag: bool) -> bool {
    let mut x = [flag as u8 as f64];
    comm.all_reduce_f64(&mut x);
    x[0] > 0.0
}

/// The passes (micro-batches) of a step this process runs: all of them alone, its [`share`]
/// as a rank of `comm` (the passes must split evenly: the drivers check it).
pub fn passes_of(comm: Option<&dyn Collective>, passes: usize) -> Range<usize> {
    match comm {
        Some(c) => {
            assert!(passes.is_multiple_of(c.world()), "passes must split evenly over ranks");
            share(passes, c.rank(), c.world())
        }
        None => 0..passes,
    }
}

/// What an evaluation shared by the ranks sums: `f32` scores, `f64` loss sums.
pub trait Summed: Copy {
    /// Element-wise sum over the ranks of `comm`, in place.
    fn sum_over(comm: &dyn Collective, x: &mut [Self]);
}

impl Summed for f32 {
    fn sum_over(comm: &dyn Collective, x: &mut [f32]) {
        comm.all_reduce_f32(x);
    }
}

impl Summed for f64 {
    fn sum_over(comm: &dyn Collective, x: &mut [f64]) {
        comm.all_reduce_f64(x);
    }
}

/// Runs the `n` batches of an evaluation, shared round-robin by the ranks of `comm`: rank `r`
/// calls `run(k, out)` for batches `k = r, r + N, …` (alone, for every batch), each writing
/// its batch's results into that batch's own places of `out` (zeros when called); then `out`
/// is summed over the ranks. Each value comes from one rank and the others add zeros (exact),
/// so every rank returns the results of one process. The one place evaluations split work
/// across ranks (perplexity, scoring, task evaluation, zero-shot).
pub fn shared_batches<T: Summed>(
    n: usize,
    comm: Option<&dyn Collective>,
    out: &mut [T],
    mut run: impl FnMut(usize, &mut [T]) -> Result<()>,
) -> Result<()> {
    for k in 0..n {
        if comm.is_none_or(|c| k % c.world() == c.rank()) {
            run(k, out)?;
        }
    }
    if let Some(c) = comm {
        T::sum_over(c, out);
    }
    Ok(())
}

/// The contiguous passes (micro-batches) of `passes` that rank `rank` of `world` runs.
pub fn share(passes: usize, rank: usize, world: usize) -> Range<usize> {
    let per = passes / world;
    rank * per..(rank + 1) * per
}

/// How many processes the launcher started this one among (`mpirun`'s, MPICH's or `srun`'s
/// environment), 1 outside a launcher.
pub fn launched_world() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(1)
}

/// Checks that every rank was given the same settings: rank 0's `desc` is sent to all; a rank
/// whose own differs fails naming the differences, and then every rank fails (so rank 0 does
/// not go on to write anything).
pub fn check_same(comm: &dyn Collective, what: &str, desc: &str) -> Result<()> {
    let mut bytes = desc.as_bytes().to_vec();
    comm.broadcast_bytes(&mut bytes);
    let same = bytes == desc.as_bytes();
    let all_same = !any(comm, !same);
    if same && all_same {
        return Ok(());
    }
    if same {
        return Err(Error::Distributed(format!(
            "another rank has other {what} than rank 0 (its message says which): every rank \
             must run the same command"
        )));
    }
    let theirs = String::from_utf8_lossy(&bytes).into_owned();
    // The differing `name: value` fields of the two descriptions (Debug output).
    let fields = |s: &str| s.split(", ").map(str::to_string).collect::<Vec<_>>();
    let (a, b) = (fields(&theirs), fields(desc));
    let diffs: Vec<String> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .take(4)
        .map(|(x, y)| format!("{} here, {} on rank 0", y.trim(), x.trim()))
        .collect();
    let diffs = if diffs.is_empty() || a.len() != b.len() {
        format!("rank 0: {theirs}; here: {desc}")
    } else {
        diffs.join("; ")
    };
    Err(Error::Distributed(format!(
        "rank {} has other {what} than rank 0 ({diffs}): every rank must run the same command",
        comm.rank()
    )))
}

/// How long ranks wait for each other at start-up: `GPT1_DIST_TIMEOUT` seconds (default 300).
pub fn startup_timeout() -> Result<std::time::Duration> {
    let Ok(v) = std::env::var("GPT1_DIST_TIMEOUT") else {
        return Ok(std::time::Duration::from_secs(300));
    };
    match v.trim().parse::<u64>() {
        Ok(s) if s > 0 => Ok(std::time::Duration::from_secs(s)),
        _ => Err(Error::Distributed(format!(
            "GPT1_DIST_TIMEOUT={v:?}: give a whole number of seconds, at least 1"
        ))),
    }
}

/// Runs `f` (the first collective), ending this process with a clear message when it has not
/// returned within `timeout` (a rank that never joined: it failed before its first collective,
/// or was started with another world size). MPI offers no time-out of its own.
pub fn within<T>(timeout: std::time::Duration, rank: usize, f: impl FnOnce() -> T) -> T {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!(
                "error: rank {rank}: the other ranks did not join within {} s (one failed to \
                 start, or the job was launched with mismatched commands); stopping",
                timeout.as_secs()
            );
            std::process::exit(1);
        }
    });
    let out = f();
    let _ = tx.send(());
    let _ = watchdog.join();
    out
}

/// Ranks as threads of one process, for tests of the data-parallel logic without MPI.
pub mod local {
    use super::Collective;
    use std::sync::{Arc, Barrier, Mutex};

    struct Shared {
        barrier: Barrier,
        slots: Mutex<Vec<Vec<f64>>>,
        bytes: Mutex<Vec<u8>>,
    }

    pub struct Local {
        rank: usize,
        world: usize,
        shared: Arc<Shared>,
    }

    /// `world` communicators, one per thread; sums are taken in rank order.
    pub fn group(world: usize) -> Vec<Arc<dyn Collective>> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world),
            slots: Mutex::new(vec![Vec::new(); world]),
            bytes: Mutex::new(Vec::new()),
        });
        (0..world)
            .map(|rank| {
                Arc::new(Local { rank, world, shared: shared.clone() }) as Arc<dyn Collective>
            })
            .collect()
    }

    impl Local {
        fn sum(&self, x: &[f64]) -> Vec<f64> {
            self.shared.slots.lock().unwrap()[self.rank] = x.to_vec();
            self.shared.barrier.wait();
            let out = {
                let slots = self.shared.slots.lock().unwrap();
                (0..x.len()).map(|i| slots.iter().map(|s| s[i]).sum()).collect()
            };
            self.shared.barrier.wait();
            out
        }
    }

    impl Collective for Local {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world(&self) -> usize {
            self.world
        }
        fn all_reduce_f32(&self, x: &mut [f32]) {
            // f32 sums in rank order (as the f32 values MPI would add).
            self.shared.slots.lock().unwrap()[self.rank] = x.iter().map(|&v| v as f64).collect();
            self.shared.barrier.wait();
            {
                let slots = self.shared.slots.lock().unwrap();
                for (i, v) in x.iter_mut().enumerate() {
                    *v = slots.iter().fold(0.0f32, |a, s| a + s[i] as f32);
                }
            }
            self.shared.barrier.wait();
        }
        fn all_reduce_f64(&self, x: &mut [f64]) {
            let s = self.sum(x);
            x.copy_from_slice(&s);
        }
        fn broadcast_bytes(&self, x: &mut Vec<u8>) {
            if self.rank == 0 {
                *self.shared.bytes.lock().unwrap() = x.clone();
            }
            self.shared.barrier.wait();
            *x = self.shared.bytes.lock().unwrap().clone();
            self.shared.barrier.wait();
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::Mpi;

#[cfg(feature = "mpi")]
mod mpi_world {
    use super::Collective;
    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;
    use std::sync::Mutex;

    /// MPI's world communicator (OpenMPI from the system's packages). Only the thread that
    /// made it calls MPI (the kernels' threads never do): `MPI_THREAD_FUNNELED`.
    pub struct Mpi {
        world: SimpleCommunicator,
        /// The send side of the sums (MPI needs two buffers; the crate has no `MPI_IN_PLACE`).
        scratch: Mutex<Vec<f32>>,
        // Dropped last: MPI_Finalize.
        _universe: Universe,
    }

    // SAFETY: the communicator is a handle; it is used from the thread that made it only
    // (the drivers call collectives from their main loop).
    unsafe impl Send for Mpi {}
    unsafe impl Sync for Mpi {}

    /// Values per MPI call: bounds the send copy (16 MiB) well inside MPI's C-int counts.
    const CHUNK: usize = 1 << 22;

    impl Mpi {
        /// Initialises MPI; `None` when it was initialised already.
        pub fn init() -> Option<Mpi> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
            let world = universe.world();
            Some(Mpi { world, scratch: Mutex::new(Vec::new()), _universe: universe })
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn world(&self) -> usize {
            self.world.size() as usize
        }
        fn all_reduce_f32(&self, x: &mut [f32]) {
            let mut send = self.scratch.lock().unwrap();
            for chunk in x.chunks_mut(CHUNK) {
                send.clear();
                send.extend_from_slice(chunk);
                self.world.all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
        }
        fn all_reduce_f64(&self, x: &mut [f64]) {
            let send = x.to_vec();
            self.world.all_reduce_into(&send[..], x, SystemOperation::sum());
        }
        fn broadcast_bytes(&self, x: &mut Vec<u8>) {
            let root = self.world.process_at_rank(0);
            let mut n = x.len() as u64;
            root.broadcast_into(&mut n);
            x.resize(n as usize, 0);
            root.broadcast_into(&mut x[..]);
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

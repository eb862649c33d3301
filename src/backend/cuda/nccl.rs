//! NCCL between GPUs: the gradients' all-reduce on the device, its unique id broadcast over the
//! run's [`Collective`] (MPI), as llm.c does.
//!
//! NCCL is loaded at run time (`libnccl.so.2`, found as [`super::libs`] finds the others; the
//! `nvidia-nccl-cu13` wheel that PyTorch installs has it). gpt1 binds the five functions it
//! calls itself rather than through `cudarc`'s NCCL module, whose loader looks for
//! `libnccl.so.<CUDA major>` and would miss NCCL's own `.so.2`.

use super::libs;
use crate::dist::Collective;
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// `ncclUniqueId`: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; 128],
}

type Comm = *mut c_void;
/// `ncclFloat32` and `ncclSum` of `nccl.h`.
const NCCL_FLOAT32: c_int = 7;
const NCCL_SUM: c_int = 0;

struct Api {
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        *mut c_void,
    ) -> c_int,
    comm_destroy: unsafe extern "C" fn(Comm) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    version: unsafe extern "C" fn(*mut c_int) -> c_int,
}

/// The NCCL library, loaded once (or why it could not be).
fn api() -> std::result::Result<&'static Api, String> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        let path = libs::require("nccl", "NCCL").map_err(|e| e.to_string())?;
        // SAFETY: NCCL's own initialisers; the library stays loaded (libs keeps it too).
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| e.to_string())?;
        // SAFETY: the signatures are nccl.h's for these names.
        let api = unsafe {
            Api {
                get_unique_id: *lib.get(b"ncclGetUniqueId\0").map_err(|e| e.to_string())?,
                comm_init_rank: *lib.get(b"ncclCommInitRank\0").map_err(|e| e.to_string())?,
                all_reduce: *lib.get(b"ncclAllReduce\0").map_err(|e| e.to_string())?,
                comm_destroy: *lib.get(b"ncclCommDestroy\0").map_err(|e| e.to_string())?,
                error_string: *lib.get(b"ncclGetErrorString\0").map_err(|e| e.to_string())?,
                version: *lib.get(b"ncclGetVersion\0").map_err(|e| e.to_string())?,
            }
        };
        std::mem::forget(lib);
        Ok(api)
    })
    .as_ref()
    .map_err(|e| e.clone())
}

fn check(api: &Api, what: &str, r: c_int) -> Result<()> {
    if r == 0 {
        return Ok(());
    }
    // SAFETY: NCCL returns a static string for any result code.
    let msg = unsafe { std::ffi::CStr::from_ptr((api.error_string)(r)) };
    Err(Error::Device(format!("NCCL {what}: {} (code {r})", msg.to_string_lossy())))
}

/// NCCL's version (e.g. 23007 for 2.30.7), or why NCCL cannot be used here.
pub fn version() -> std::result::Result<i32, String> {
    let api = api()?;
    let mut v = 0;
    // SAFETY: writes one int.
    check(api, "version", unsafe { (api.version)(&mut v) }).map_err(|e| e.to_string())?;
    Ok(v)
}

/// A unique id as bytes (what rank 0 broadcasts).
pub fn unique_id() -> Result<Vec<u8>> {
    let api = api().map_err(Error::Device)?;
    let mut id = UniqueId { internal: [0; 128] };
    // SAFETY: writes one ncclUniqueId.
    check(api, "unique id", unsafe { (api.get_unique_id)(&mut id) })?;
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

/// One rank's NCCL communicator (destroyed on drop).
pub struct NcclComm {
    comm: Comm,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time (the backend's
// lock makes it so).
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: a communicator this module made, destroyed once.
            unsafe { (api.comm_destroy)(self.comm) };
        }
    }
}

/// Whether every rank of `comm` can use NCCL (all agree, so none waits in a collective the
/// others skip): NCCL loads on each, `GPT1_NCCL` is not `0`, and no two ranks share a GPU
/// (NCCL refuses that; `gpu` identifies this rank's: host and PCI address, hashed).
pub fn agreed(comm: &dyn Collective, gpu: u64) -> bool {
    let here = std::env::var("GPT1_NCCL").map_or(true, |v| v != "0") && api().is_ok();
    let world = comm.world();
    // Slot 0 counts the ranks that can; slot 1 + r holds rank r's GPU (53 bits, never 0).
    let mut v = vec![0.0f64; world + 1];
    v[0] = here as u8 as f64;
    v[1 + comm.rank()] = ((gpu >> 11) | 1) as f64;
    comm.all_reduce_f64(&mut v);
    let mut gpus: Vec<u64> = v[1..].iter().map(|&g| g as u64).collect();
    gpus.sort_unstable();
    gpus.dedup();
    v[0] as usize == world && gpus.len() == world
}

/// This rank's NCCL communicator for the ranks of `comm`: rank 0 makes the unique id and
/// broadcasts it over `comm`; every rank joins. The current CUDA device is this rank's GPU.
pub fn connect(comm: &dyn Collective) -> Result<NcclComm> {
    let api = api().map_err(Error::Device)?;
    // Rank 0 always sends (nothing when it has no id), so no rank waits for a broadcast that
    // does not come; every rank then sees the same failure.
    let mut bytes = if comm.rank() == 0 { unique_id().unwrap_or_default() } else { Vec::new() };
    comm.broadcast_bytes(&mut bytes);
    if bytes.len() != 128 {
        return Err(Error::Device("NCCL: rank 0 could not make a unique id".into()));
    }
    let mut id = UniqueId { internal: [0; 128] };
    for (d, s) in id.internal.iter_mut().zip(&bytes) {
        *d = *s as c_char;
    }
    let mut c: Comm = std::ptr::null_mut();
    let (world, rank) = (comm.world() as c_int, comm.rank() as c_int);
    // SAFETY: writes one communicator; blocks until every rank has joined.
    check(api, "joining the ranks", unsafe { (api.comm_init_rank)(&mut c, world, id, rank) })?;
    Ok(NcclComm { comm: c })
}

impl NcclComm {
    /// Sums `n` floats at `ptr` over the ranks, in place, queued on `stream`.
    pub fn all_reduce_sum(
        &self,
        ptr: u64,
        n: usize,
        stream: &cudarc::driver::CudaStream,
    ) -> Result<()> {
        let api = api().map_err(Error::Device)?;
        let (p, stream) = (ptr as *mut c_void, stream.cu_stream() as *mut c_void);
        // SAFETY: `ptr` holds `n` floats on this rank's GPU; in place is allowed.
        let r = unsafe { (api.all_reduce)(p, p, n, NCCL_FLOAT32, NCCL_SUM, self.comm, stream) };
        check(api, "all-reduce", r)
    }
}

//! Compiling the kernels with NVRTC, and the on-disk cache of what it made.
//!
//! - **Machine code by default.** The kernels are compiled to a CUBIN for the GPU's own
//!   architecture (`sm_90` on an H100): the driver loads it as it is. PTX would be JIT-compiled
//!   by the driver, which accepts only PTX no newer than itself: NVRTC 13.2 writes PTX ISA 9.2,
//!   which a CUDA 13.0 driver (ISA 9.0) refuses. A CUBIN from a newer NVRTC of the same major
//!   version loads on an older driver (CUDA's minor-version compatibility).
//! - **PTX when it must.** An architecture this NVRTC does not know (a GPU newer than it) gets
//!   PTX for the newest architecture it knows below the GPU's, for the driver to JIT.
//!   `GPT1_CUDA_CODE=ptx` asks for PTX always (`cubin`, the default, for machine code).
//! - **Cached** in `$XDG_CACHE_HOME/gpt1` (or `~/.cache/gpt1`), keyed by the source, the
//!   options, NVRTC's version and the driver's: a new NVRTC or driver compiles afresh instead of
//!   loading what an older one made.

use super::libs;
use crate::error::{Error, Result};
use cudarc::nvrtc::{result as nv, sys};
use std::ffi::CString;
use std::path::PathBuf;

/// The kernels' CUDA C source: one program, the files of `kernels/` in this order (the
/// definitions of `common.cuh` first), a blank line between them.
pub const KERNELS: &str = concat!(
    include_str!("kernels/common.cuh"),
    "\n",
    include_str!("kernels/memory.cu"),
    "\n",
    include_str!("kernels/embeddings.cu"),
    "\n",
    include_str!("kernels/dropout.cu"),
    "\n",
    include_str!("kernels/linear.cu"),
    "\n",
    include_str!("kernels/layernorm.cu"),
    "\n",
    include_str!("kernels/gelu.cu"),
    "\n",
    include_str!("kernels/attention.cu"),
    "\n",
    include_str!("kernels/crossentropy.cu"),
    "\n",
    include_str!("kernels/lstm.cu"),
    "\n",
    include_str!("kernels/optim.cu"),
);

/// What NVRTC is asked to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Machine code for one architecture (`sm_XY`), loaded by the driver as it is.
    Cubin,
    /// PTX for a virtual architecture (`compute_XY`), compiled by the driver at load.
    Ptx,
}

impl Code {
    /// `GPT1_CUDA_CODE` (`cubin`, the default, or `ptx`).
    pub fn from_env() -> Result<Code> {
        match std::env::var("GPT1_CUDA_CODE").as_deref() {
            Err(_) | Ok("") | Ok("cubin") => Ok(Code::Cubin),
            Ok("ptx") => Ok(Code::Ptx),
            Ok(v) => Err(Error::Device(format!(
                "GPT1_CUDA_CODE={v}: expected `cubin` (machine code, the default) or `ptx`"
            ))),
        }
    }

    /// The file extension of the cache and NVRTC's `--gpu-architecture` prefix.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Code::Cubin => ("cubin", "sm"),
            Code::Ptx => ("ptx", "compute"),
        }
    }
}

/// NVRTC's version (`(13, 0)`), loading NVRTC first.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    libs::require("nvrtc", "compiling the CUDA kernels")?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters; NVRTC is loaded (above).
    guarded(|| unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result())?
        .map_err(|e| Error::Device(format!("NVRTC's version: {e:?}")))?;
    Ok((major, minor))
}

/// The real architectures this NVRTC compiles for (`[75, 80, 86, 89, 90, ...]`).
pub fn supported_archs() -> Result<Vec<i32>> {
    libs::require("nvrtc", "compiling the CUDA kernels")?;
    let mut n = 0;
    // SAFETY: out-parameter, then a buffer of the size NVRTC gave.
    let archs = guarded(|| unsafe {
        sys::nvrtcGetNumSupportedArchs(&mut n).result()?;
        let mut v = vec![0; n.max(0) as usize];
        sys::nvrtcGetSupportedArchs(v.as_mut_ptr()).result()?;
        Ok::<_, nv::NvrtcError>(v)
    })?
    .map_err(|e| Error::Device(format!("NVRTC's architectures: {e:?}")))?;
    Ok(archs)
}

/// The architecture and code to compile for a GPU of compute capability `cc` (`90`): `code`
/// for `cc` itself when NVRTC knows it, else PTX for the newest architecture below it.
pub fn target(cc: i32, code: Code) -> Result<(i32, Code)> {
    let archs = supported_archs()?;
    if archs.contains(&cc) {
        return Ok((cc, code));
    }
    match archs.iter().copied().filter(|&a| a < cc).max() {
        Some(a) => Ok((a, Code::Ptx)),
        None => Err(Error::Device(format!(
            "NVRTC {} compiles for sm_{:?} only, none of them for this GPU (sm_{cc}); install \
             an NVRTC that knows it",
            nvrtc_version().map(|(a, b)| format!("{a}.{b}")).unwrap_or_default(),
            archs
        ))),
    }
}

/// Compiles [`KERNELS`] to PTX text for `arch` (`sm_90`, `compute_90`); the test suite runs
/// this on machines without a GPU.
pub fn compile_ptx(arch: &str) -> Result<String> {
    compile_source(KERNELS, arch)
}

/// Compiles CUDA C `src` to PTX text for `arch`; a compile error carries NVRTC's log (file,
/// line, message).
pub fn compile_source(src: &str, arch: &str) -> Result<String> {
    let bytes = compile_with(src, &options(arch), Code::Ptx)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Compiles [`KERNELS`] for compute capability `cc` (`90`) as `code`: a CUBIN (an ELF image)
/// or PTX text (without its trailing NUL).
pub fn compile(cc: i32, code: Code) -> Result<Vec<u8>> {
    let (_, prefix) = code.names();
    compile_with(KERNELS, &options(&format!("{prefix}_{cc}")), code)
}

fn options(arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()]
}

/// Runs `f`, turning a panic (`cudarc` panics when a library or symbol is missing) into an error.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| Error::Device("NVRTC failed to load".into()))
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: made by create_program, destroyed once.
        let _ = unsafe { nv::destroy_program(self.0) };
    }
}

fn compile_with(src: &str, opts: &[String], code: Code) -> Result<Vec<u8>> {
    libs::require("nvrtc", "compiling the CUDA kernels")?;
    let arch = opts[0].trim_start_matches("--gpu-architecture=").to_string();
    let fail = |what: &str, e: nv::NvrtcError| {
        Error::Device(format!("NVRTC {what} the CUDA kernels for {arch}: {e:?}"))
    };
    let csrc =
        CString::new(src).map_err(|_| Error::Device("CUDA source with a NUL byte".into()))?;
    let name = CString::new("kernels.cu").expect("no NUL");
    let prog = guarded(|| nv::create_program(&csrc, Some(&name)))?
        .map_err(|e| fail("creating a program for", e))?;
    let prog = Program(prog);
    // SAFETY: a live program; the options are plain strings.
    if let Err(e) = guarded(|| unsafe { nv::compile_program(prog.0, opts) })? {
        // SAFETY: as above.
        let log = unsafe { nv::get_program_log(prog.0) }.unwrap_or_default();
        let log: Vec<u8> = log.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
        let log = String::from_utf8_lossy(&log);
        return Err(Error::Device(format!(
            "NVRTC compiling the CUDA kernels for {arch}: {}",
            if log.trim().is_empty() { format!("{e:?}") } else { log.into_owned() }
        )));
    }
    let mut image = match code {
        // SAFETY: a compiled program.
        Code::Ptx => unsafe { nv::get_ptx(prog.0) }
            .map_err(|e| fail("reading the PTX of", e))?
            .into_iter()
            .map(|c| c as u8)
            .collect::<Vec<u8>>(),
        Code::Cubin => {
            let mut size = 0usize;
            // SAFETY: a program compiled for a real architecture; a buffer of the size given.
            unsafe {
                sys::nvrtcGetCUBINSize(prog.0, &mut size)
                    .result()
                    .map_err(|e| fail("sizing the CUBIN of", e))?;
                let mut v = vec![0u8; size];
                sys::nvrtcGetCUBIN(prog.0, v.as_mut_ptr().cast())
                    .result()
                    .map_err(|e| fail("reading the CUBIN of", e))?;
                v
            }
        }
    };
    if code == Code::Ptx {
        while image.last() == Some(&0) {
            image.pop();
        }
    }
    Ok(image)
}

/// The kernels for compute capability `cc` as `code`, for a driver of version `driver`
/// (`13000`): from the cache or compiled and cached now; with the cache file it came from.
pub fn cached(cc: i32, code: Code, driver: i32) -> Result<(Vec<u8>, Option<PathBuf>)> {
    let (major, minor) = nvrtc_version()?;
    let (ext, prefix) = code.names();
    let key = format!(
        "{KERNELS}{:?} nvrtc {major}.{minor} driver {driver} {ext}",
        options(&format!("{prefix}_{cc}"))
    );
    let hash = crate::sys::fnv_words(key.bytes().map(u64::from));
    let dir = crate::sys::cache_dir();
    let file = dir.as_ref().map(|d| d.join(format!("kernels-{hash}-{prefix}_{cc}.{ext}")));
    if let Some(Ok(bytes)) = file.as_ref().map(std::fs::read)
        && !bytes.is_empty()
    {
        return Ok((bytes, file));
    }
    let image = compile(cc, code)?;
    if let (Some(dir), Some(file)) = (dir, file) {
        // A cache that cannot be written only costs a compile next time.
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = crate::io::write_atomic(&file, &image);
        }
    }
    Ok((image, None))
}

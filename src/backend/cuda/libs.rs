//! Finding the NVIDIA libraries at run time, before `cudarc` asks for them.
//!
//! `cudarc` (dynamic loading) opens `libcuda`, `libnvrtc` and `libcublas` by bare name and
//! panics when none is found. gpt1 opens each one first, by name and then by full path in the
//! usual places (`GPT1_CUDA_LIBS`, `CUDA_HOME`, `/usr/local/cuda`, the `nvidia-*` wheels that
//! PyTorch installs in Python's site-packages), and keeps it loaded: the dynamic linker then
//! hands `cudarc` the same library by its soname. A library that is nowhere is a clear
//! [`Error::Device`] naming where it looked, never a panic.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// CUDA major versions whose libraries fit the pinned API (newest first).
const MAJORS: &[&str] = &["13", "12"];

/// Libraries opened so far, kept for the life of the process.
fn kept() -> &'static Mutex<Vec<(String, PathBuf, libloading::Library)>> {
    static KEPT: OnceLock<Mutex<Vec<(String, PathBuf, libloading::Library)>>> = OnceLock::new();
    KEPT.get_or_init(|| Mutex::new(Vec::new()))
}

/// Directories to search after the linker's own path, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = std::env::var_os("GPT1_CUDA_LIBS") {
        dirs.extend(std::env::split_paths(&v));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(v) = std::env::var_os(var) {
            let p = PathBuf::from(v);
            dirs.push(p.join("lib64"));
            dirs.push(p.join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    // The wheels PyTorch depends on: nvidia/cu13/lib (CUDA 13), nvidia/<lib>/lib (CUDA 12).
    let home = std::env::var("HOME").unwrap_or_default();
    let patterns = [
        format!("{home}/.local/lib/python3*/site-packages/nvidia/*/lib"),
        format!("{home}/.pyenv/versions/*/lib/python3*/site-packages/nvidia/*/lib"),
        "/usr/local/lib/python3*/*-packages/nvidia/*/lib".into(),
        "/usr/lib/python3*/*-packages/nvidia/*/lib".into(),
        "/opt/conda/lib/python3*/site-packages/nvidia/*/lib".into(),
        "/opt/conda/envs/*/lib/python3*/site-packages/nvidia/*/lib".into(),
        "/usr/local/lib/python3*/*-packages/torch/lib".into(),
    ];
    for p in patterns {
        if let Ok(paths) = glob::glob(&p) {
            dirs.extend(paths.flatten());
        }
    }
    if let Some(v) = std::env::var_os("VIRTUAL_ENV")
        && let Ok(paths) =
            glob::glob(&format!("{}/lib/python3*/site-packages/nvidia/*/lib", v.to_string_lossy()))
    {
        dirs.extend(paths.flatten());
    }
    dirs
}

/// The file names a library may have (`libnvrtc.so.13`, `libnvrtc.so.12`, `libnvrtc.so`).
fn names(lib: &str) -> Vec<String> {
    if lib == "cuda" {
        return vec!["libcuda.so.1".into(), "libcuda.so".into()];
    }
    if lib == "nccl" {
        return vec!["libnccl.so.2".into(), "libnccl.so".into()];
    }
    let mut v: Vec<String> = MAJORS.iter().map(|m| format!("lib{lib}.so.{m}")).collect();
    v.push(format!("lib{lib}.so"));
    v
}

/// Loads `libnvrtc-builtins.so.*` from NVRTC's own folder `dir`, so that NVRTC finds it when it
/// asks for it by its soname: the dynamic linker hands an already loaded library to a request
/// for its soname. NVRTC opens it by bare name at its first compile, and a wheel without a
/// RUNPATH (`nvidia-cuda-nvrtc` 13.0.88, PyTorch's cu130 wheels; 13.5.37) otherwise fails with
/// "failed to open libnvrtc-builtins.so.13.0" unless that folder is on `LD_LIBRARY_PATH`.
/// The `.alt` variants are left alone (NVRTC's alternative, selected by an option gpt1 does
/// not use).
fn preload_builtins(dir: &std::path::Path, kept: &mut Vec<(String, PathBuf, libloading::Library)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
        })
        .collect();
    found.sort();
    for p in found {
        // SAFETY: NVIDIA's own library, beside the NVRTC about to be used.
        if let Ok(l) = unsafe { libloading::Library::new(&p) } {
            kept.push(("nvrtc-builtins".into(), p, l));
        }
    }
}

/// The folder of the mapped library whose file name starts with `prefix` (from
/// `/proc/self/maps`): where the dynamic linker found a library opened by bare name.
fn mapped_dir(prefix: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let path = PathBuf::from(line.split_whitespace().nth(5)?);
        let name = path.file_name()?.to_str()?;
        name.starts_with(prefix).then(|| path.parent().map(PathBuf::from))?
    })
}

/// Opens `lib` (`cuda`, `nvrtc`, `cublasLt`, `cublas`) once, or says where it looked.
pub fn require(lib: &str, what: &str) -> Result<PathBuf> {
    let mut kept = kept().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p, _)) = kept.iter().find(|(l, _, _)| l == lib) {
        return Ok(p.clone());
    }
    let mut tried = Vec::new();
    for name in names(lib) {
        // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's own.
        if let Ok(l) = unsafe { libloading::Library::new(&name) } {
            if lib == "nvrtc"
                && let Some(dir) = mapped_dir("libnvrtc.so")
            {
                preload_builtins(&dir, &mut kept);
            }
            kept.push((lib.into(), PathBuf::from(&name), l));
            return Ok(PathBuf::from(name));
        }
    }
    let dirs = search_dirs();
    for dir in &dirs {
        for name in names(lib) {
            let p = dir.join(&name);
            if !p.is_file() {
                continue;
            }
            // SAFETY: as above.
            match unsafe { libloading::Library::new(&p) } {
                Ok(l) => {
                    if lib == "nvrtc" {
                        preload_builtins(dir, &mut kept);
                    }
                    kept.push((lib.into(), p.clone(), l));
                    return Ok(p);
                }
                Err(e) => tried.push(format!("{}: {e}", p.display())),
            }
        }
    }
    if lib == "cuda" {
        return Err(Error::Device(format!(
            "{what}: no NVIDIA driver on this machine (libcuda.so.1 is not on the linker's path): \
             a GPU and its driver are needed; without one, use --device cpu (the default)"
        )));
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(Error::Device(format!(
        "{what}: lib{lib}.so not found (looked on the linker's path, then in {}{}); install the \
         NVIDIA driver and CUDA {} libraries (`pip install nvidia-cuda-nvrtc nvidia-cublas` \
         provides NVRTC and cuBLAS), or name their folder in GPT1_CUDA_LIBS",
        looked.join(", "),
        if tried.is_empty() { String::new() } else { format!("; failed: {}", tried.join("; ")) },
        MAJORS.join(" or "),
    )))
}

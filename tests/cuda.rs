//! The CUDA backend. Without a GPU: every kernel compiles with NVRTC (when NVRTC can be found;
//! `.ci/run` installs it and sets `GPT1_REQUIRE_NVRTC=1`, which turns a missing NVRTC into a
//! failure), and `--device cuda` is a clear error. With a GPU (`tools/gpu_check.sh`): every
//! kernel against the CPU's, the model's gradients, a training trajectory.

use gpt1::backend::cuda::{self, KERNEL_NAMES};
use gpt1::backend::{Cuda, Precision};

fn nvrtc_required() -> bool {
    std::env::var("GPT1_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    for arch in ["sm_80", "sm_90"] {
        let ptx = match cuda::compile_ptx(arch) {
            Ok(p) => p,
            Err(e) if !nvrtc_required() && e.to_string().contains("not found") => {
                eprintln!("skipped: NVRTC not found ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        for name in KERNEL_NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{arch}: no kernel {name} in the PTX"
            );
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_naming_the_line() {
    if cuda::libs::require("nvrtc", "test").is_err() && !nvrtc_required() {
        eprintln!("skipped: NVRTC not found");
        return;
    }
    let e = cuda::compile_source("extern \"C\" __global__ void k(float* x) { x[0] = y; }", "sm_90")
        .unwrap_err()
        .to_string();
    assert!(e.contains("identifier \"y\" is undefined"), "{e}");
}

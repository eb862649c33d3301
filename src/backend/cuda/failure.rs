//! CUDA's failures as gpt1's: an [`Error::Device`] while setting up ([`dev`]), a panic
//! inside a kernel method ([`fail`]: the trait's methods cannot return an error), with the fix
//! for an exhausted GPU memory named.

use crate::error::Error;

pub(super) fn dev(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("CUDA: {what}: {e}"))
}

/// The start of the message of the panic that stops a run when CUDA fails inside a kernel
/// method (the trait's methods cannot return an error: the device is unusable, out of memory or
/// faulted). The `gpt1` command's panic hook turns such a panic into an `error:` line and exit
/// status 1; what was already written stays whole (files are written to a temporary name, then
/// renamed). Tests and other library users see the message as any panic's.
pub const FAILURE_PREFIX: &str = "CUDA error in ";

fn failure(what: &str, e: impl std::fmt::Display) -> String {
    let e = e.to_string();
    let fix = if e.contains("OUT_OF_MEMORY") || e.contains("ALLOC_FAILED") {
        ": the GPU's memory is exhausted; lower --batch (or split it with --micro-batch), --seq \
         or --num, or free the GPU of other processes (nvidia-smi)"
    } else {
        ""
    };
    format!("{FAILURE_PREFIX}{what}: {e}{fix}")
}

pub(super) fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{}", failure(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_memory_failure_names_the_fix() {
        let caught = std::panic::catch_unwind(|| {
            fail("allocating scratch memory", "CUDA_ERROR_OUT_OF_MEMORY")
        });
        let payload = caught.expect_err("fail panics");
        let f = payload.downcast_ref::<String>().expect("a message");
        assert!(f.starts_with("CUDA error in allocating scratch memory: CUDA_ERROR_OUT_OF_MEMORY"));
        assert!(f.contains("lower --batch"), "{f}");
        assert!(failure("a product", "CUBLAS_STATUS_ALLOC_FAILED").contains("--batch"));
        assert!(!failure("a cuBLAS product", "CUBLAS_STATUS_EXECUTION_FAILED").contains("--batch"));
    }
}

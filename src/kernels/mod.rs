//! CPU kernels (the [`crate::backend::Cpu`] backend's), each forward beside its backward. They
//! know nothing of the model's shape beyond the dimensions they are given.
//!
//! # Gradient convention (every backend)
//! - Gradients of **parameters** are accumulated (`+=`): a training step zeroes the gradient
//!   buffer once, and each micro-batch, the LM head and the task head add to it.
//! - Gradients of **activations** are assigned (`=`): a backward kernel overwrites its `dx`,
//!   except where its signature says otherwise (`matmul_backward`'s `acc` flag adds the input
//!   gradient of a second branch; `gelu_backward` scales `dx` in place, and recomputes the GELU itself).
//! - Forward kernels assign their outputs; they never read them first.

pub mod attention;
pub mod crossentropy;
pub mod dropout;
pub mod embedding;
pub mod fastmath;
pub mod gelu;
pub mod gemm;
pub mod layernorm;
pub mod lstm;
pub mod optim;
pub(crate) mod parallel;
pub mod reduce;
pub mod rng;

pub use parallel::{on_pool, teams_started, with_team};

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testutil;

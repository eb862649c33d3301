//! CPU kernels, each forward beside its backward. They know nothing of the model's shape beyond
//! the dimensions they are given.

pub mod attention;
pub mod crossentropy;
pub mod dropout;
pub mod embedding;
pub mod fastmath;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod reduce;
pub mod rng;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testutil;

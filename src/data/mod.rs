//! Token data on disk and the windows sampled from it.

pub mod sampler;
pub mod shard;
pub mod tasks;

pub use sampler::{Sampler, Sampling};
pub use shard::TokenData;

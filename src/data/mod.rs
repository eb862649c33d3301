//! Token data on disk and the windows sampled from it.

pub mod sampler;
pub mod shard;

pub use sampler::{Sampler, Sampling};
pub use shard::TokenData;

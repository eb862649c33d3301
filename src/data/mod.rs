//! Token data on disk and the windows sampled from it.

pub mod sampler;
pub mod shard;

pub use sampler::{Sampler, WindowOrder};
pub use shard::TokenData;

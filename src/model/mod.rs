//! The model: configuration, parameter layout, forward/backward, checkpoints.

pub mod checkpoint;
pub mod config;
pub mod gpt;
pub mod params;

pub use config::Config;
pub use gpt::{Activations, Gpt};

//! The model: configuration, parameter layout, activations, forward/backward, checkpoints.

mod activations;
pub mod arch;
pub mod checkpoint;
pub mod config;
pub mod gpt;
pub mod language_model;
pub mod lstm;
pub mod params;

pub use activations::{Activations, activation_bytes, bf16_bytes, decoding_bytes, inference_bytes};
pub use arch::{ArchConfig, Net};
pub use config::Config;
pub use gpt::{Gpt, Query};
pub use language_model::{LanguageModel, ModelTask};

//! gpt1: GPT-1 (Radford et al., 2018) pre-training and fine-tuning on the CPU, with explicit
//! forward and backward passes over one flat parameter buffer.

pub mod analysis;
pub mod backend;
pub mod bench;
pub mod data;
pub mod demo;
pub mod dist;
pub mod error;
pub mod eval;
pub mod generate;
pub mod hub;
pub mod interrupt;
pub mod io;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod progress;
pub mod serve;
pub mod sys;
pub mod tasks;
pub mod text;
pub mod train;
pub mod zeroshot;

pub use error::{Error, Result};

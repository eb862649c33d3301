//! Optimizer, schedules, the training step and the pre-training driver.

pub mod checkpoint;
pub mod collapse;
pub mod finetune;
pub mod lm;
pub mod lstm;
pub mod optim;
pub mod pretrain;
pub mod rundir;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;

pub use pretrain::{ModelSource, PretrainOptions, PretrainSpec, Summary, pretrain};
pub use schedule::Schedule;

pub use trainer::Trainer;

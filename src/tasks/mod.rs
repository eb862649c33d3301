//! Tasks: example shapes, the paper's input transformations, batching, the task head and its
//! losses, evaluation and metrics, fine-tuned checkpoints, data statistics. File formats live
//! in [`crate::tasks::readers`].

pub mod batch;
pub mod checkpoint;
pub mod evaluate;
pub mod example;
pub mod export;
pub mod head;
pub mod metrics;
pub mod readers;
pub mod stats;
pub mod transform;

pub use example::{Example, Input, Target};
pub use head::{Head, HeadKind, Item};
pub use transform::{Sequence, Specials, Tokens, Transformed, transform};

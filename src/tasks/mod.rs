//! Tasks: example shapes, the paper's input transformations, the task head and its losses,
//! metrics. Knows nothing of file formats.

pub mod example;
pub mod head;
pub mod metrics;
pub mod transform;

pub use example::{Example, Input, Target};
pub use head::{Head, HeadKind, Item};
pub use transform::{Sequence, Specials, Tokens, Transformed, transform};

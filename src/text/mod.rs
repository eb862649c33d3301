//! Text: the tokenizer and corpus preparation. Knows nothing of models or tasks.

mod ftfy;
pub mod original;
pub mod prepare;
pub mod tokenizer;

pub use tokenizer::{Mode, Tokenizer};

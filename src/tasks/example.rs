//! Task examples typed by their shape (single text, pair, multiple choice), not by dataset.

/// What an example asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A class index (for multiple choice: the index of the right candidate).
    Class(usize),
    /// A real-valued score (STS-B).
    Score(f32),
    /// Unlabelled (test splits).
    None,
}

/// One example's inputs, by shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Classification: `[s; x; e]`.
    Single(String),
    /// Entailment: `[s; premise; $; hypothesis; e]`.
    Ordered { premise: String, hypothesis: String },
    /// Similarity: both orders, extract states summed.
    Unordered { a: String, b: String },
    /// Multiple choice: `[s; context; question; $; candidate_k; e]` for each k.
    Choice { context: String, question: String, candidates: Vec<String> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input: Input,
    pub target: Target,
}

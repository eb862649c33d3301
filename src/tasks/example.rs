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

/// One example's inputs, by shape: texts (`Input<String>`, what the readers produce) or their
/// token ids (`Input<Vec<u32>>`, what the transformations take), one type for both.
#[derive(Clone, Debug, PartialEq)]
pub enum Input<T = String> {
    /// Classification: `[s; x; e]`.
    Single(T),
    /// Entailment: `[s; premise; $; hypothesis; e]`.
    Ordered { premise: T, hypothesis: T },
    /// Similarity: both orders, extract states summed.
    Unordered { a: T, b: T },
    /// Multiple choice: `[s; context; question; $; candidate_k; e]` for each k.
    Choice { context: T, question: T, candidates: Vec<T> },
}

impl<T> Input<T> {
    /// The same shape with `f` applied to every segment (e.g. tokenizing each text).
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<Input<U>, E> {
        Ok(match self {
            Input::Single(x) => Input::Single(f(x)?),
            Input::Ordered { premise, hypothesis } => {
                Input::Ordered { premise: f(premise)?, hypothesis: f(hypothesis)? }
            }
            Input::Unordered { a, b } => Input::Unordered { a: f(a)?, b: f(b)? },
            Input::Choice { context, question, candidates } => Input::Choice {
                context: f(context)?,
                question: f(question)?,
                candidates: candidates.iter().map(f).collect::<Result<_, _>>()?,
            },
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input: Input,
    pub target: Target,
}

//! The trait every architecture implements for inference ([`LanguageModel`]), and code
//! generic over it that [`crate::model::Net::run_on`] runs where the model computes
//! ([`ModelTask`]). In a file of its own, below the architectures that implement it.

use crate::backend::{Backend, Pinned};
use crate::error::Result;

/// What inference needs of a language model on backend `B`: next-token log-probabilities of
/// batches and the last layer's states at chosen positions. Scoring, perplexity, zero-shot and
/// task evaluation are written once against it.
pub trait LanguageModel<B: Backend> {
    /// The buffers of a pass, reused across batches.
    type Scratch;
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model reads.
    fn n_positions(&self) -> usize;
    /// Empty buffers, sized by [`LanguageModel::fit`].
    fn scratch(&self) -> Self::Scratch;
    /// Readies `s` for a pass of `b` sequences of `t` tokens (reshaped in place, made anew only
    /// when it does not fit).
    fn fit(&self, s: &mut Self::Scratch, b: usize, t: usize);
    /// `out[r] = log p(targets[r] | ids[..=r] of r's sequence)` for `ids`, `targets` `[b, t]`
    /// as fitted (0 where the target is [`crate::kernels::crossentropy::IGNORE`]), no dropout.
    fn next_logprobs(
        &self,
        s: &mut Self::Scratch,
        ids: &[u32],
        targets: &[u32],
        out: &mut [f32],
    ) -> Result<()>;
    /// The last layer's states `[rows.len(), width]` at flat positions `rows` of `ids` `[b, t]`
    /// as fitted, on the host (a task head's input), no dropout.
    fn states_at(&self, s: &mut Self::Scratch, ids: &[u32], rows: &[usize]) -> Result<Vec<f32>>;
    /// Keeps the weights' bf16 copies while the guard lives (a no-op in fp32).
    fn pin_weights(&self) -> Pinned<'_>;
}

/// Code generic over the architecture and the device, run by [`Net::run_on`] with the model
/// where it computes.
pub trait ModelTask {
    type Out;
    fn run<B: Backend, M: LanguageModel<B>>(self, model: &M) -> Result<Self::Out>;
}

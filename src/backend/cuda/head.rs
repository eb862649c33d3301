//! The tied LM head: logits in chunks of the workspace, the softmax cross-entropy (the loss and
//! its gradient in place, or log-probabilities) and the gradient products.

use super::Cuda;
use super::device::{A, CMut, CRef, F4, Slot, cfg};
use cudarc::driver::sys::CUdeviceptr;

/// Where the LM head's gradients go (device addresses) and the loss's scale.
pub(super) struct HeadGrads {
    pub(super) dh: CUdeviceptr,
    pub(super) dwte: CUdeviceptr,
    pub(super) dbias: Option<CUdeviceptr>,
    pub(super) scale: f32,
}

/// Targets inside the vocabulary (or ignored) and room for one row of logits: the kernels
/// index with them unchecked (the CPU's slices would panic).
fn check_targets(targets: &[u32], v: usize, logits: usize) {
    assert!(logits >= v, "logits workspace of {logits} floats is less than one row of {v}");
    assert!(targets.iter().all(|&t| t == u32::MAX || (t as usize) < v), "target out of range {v}");
}

impl Cuda {
    /// The tied LM head over `targets.len()` rows of `h`, in chunks of the `logits` workspace:
    /// logits, then per row either the loss and `scale · (softmax − one-hot)` in place and the
    /// gradient products (`grads`), or log p(target). Returns the rows' NLL (with `grads`) or
    /// log-probabilities, on the host.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lm_head(
        &self,
        logits: CMut<'_>,
        h: CRef<'_>,
        wte: CRef<'_>,
        bias: Option<CUdeviceptr>,
        targets: &[u32],
        d: usize,
        grads: Option<HeadGrads>,
    ) -> Vec<f32> {
        let v = wte.len / d;
        let rows = targets.len();
        check_targets(targets, v, logits.len);
        let chunk = (logits.len / v).min(rows).max(1);
        let tg = self.put(Slot::Idx1, targets);
        let per_row = self.scratch(Slot::Nll, rows * 4);
        let scale = grads.as_ref().map_or(1.0, |g| g.scale);
        for r0 in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - r0);
            let hc = h.ptr + (r0 * d) as u64 * F4;
            self.gemm(logits.ptr, hc, false, wte.ptr, true, (n, v, d), 0.0, true);
            let args = [
                A::P(logits.ptr),
                A::P(bias.unwrap_or(0)),
                A::P(tg + r0 as u64 * 4),
                A::P(per_row + r0 as u64 * F4),
                A::I(v as i32),
                A::F(scale),
                A::I(grads.is_some() as i32),
            ];
            self.launch("crossentropy_rows", cfg(n as u32, 1024), &args);
            if let Some(g) = &grads {
                if let Some(db) = g.dbias {
                    self.col_sum(db, logits.ptr, n, v);
                }
                let dh = g.dh + (r0 * d) as u64 * F4;
                self.gemm(dh, logits.ptr, false, wte.ptr, false, (n, d, v), 0.0, true);
                self.gemm(g.dwte, logits.ptr, true, hc, false, (v, d, n), 1.0, true);
            }
        }
        self.get::<f32>(per_row, rows)
    }
}

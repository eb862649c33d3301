//! Attention on cuBLAS's batched products: heads permuted to `[B, H, T, dh]`, the causal
//! softmax and its dropout in kernels; the forward, the cached rows' and the backward.

use super::Cuda;
use super::device::{A, CMut, CRef, F4, Slot, cfg, drop_args};
use crate::kernels::attention::{Dims, KvLayout};
use crate::kernels::dropout::Dropout;
use cudarc::driver::sys::CUdeviceptr;

/// Attention's dimensions as kernel arguments: B, T, H, dh.
fn dims_args(s: Dims) -> [A; 4] {
    [A::I(s.b as i32), A::I(s.t as i32), A::I(s.h as i32), A::I(s.dh as i32)]
}

impl Cuda {
    /// q, k, v of the fused `qkv` `[B, T, 3d]`, permuted to `[B, H, T, dh]` in scratch.
    fn heads_of(&self, qkv: CRef<'_>, s: Dims) -> [CUdeviceptr; 3] {
        let n = s.b * s.h * s.t * s.dh;
        let q = self.scratch(Slot::Qkv, 3 * n * 4);
        let (k, v) = (q + n as u64 * F4, q + 2 * n as u64 * F4);
        let [d0, d1, d2, d3] = dims_args(s);
        let args = [A::P(q), A::P(k), A::P(v), A::P(qkv.ptr), d0, d1, d2, d3];
        self.launch_n("permute_qkv", n, &args);
        [q, k, v]
    }

    /// `y` `[B, T, d]` from per-head `[B, H, T, dh]` rows, or back when `to_heads`.
    fn merge_heads(&self, y: CUdeviceptr, heads: CUdeviceptr, s: Dims, to_heads: bool) {
        let [d0, d1, d2, d3] = dims_args(s);
        let args = [A::P(y), A::P(heads), d0, d1, d2, d3, A::I(to_heads as i32)];
        self.launch_n("heads_merge", s.b * s.h * s.t * s.dh, &args);
    }

    /// The attention probabilities `att` (`n` of them) after dropout: copied into `scratch`
    /// with their masks when `drop` is active, else `att` itself.
    fn dropped(
        &self,
        scratch: CUdeviceptr,
        att: CUdeviceptr,
        n: usize,
        drop: Dropout,
    ) -> CUdeviceptr {
        if !drop.active() {
            return att;
        }
        let [kk, o, th, sc, _] = drop_args(drop);
        self.launch_n(
            "dropout_copy",
            n,
            &[A::P(scratch), A::P(att), A::L(n as i64), kk, o, th, sc],
        );
        scratch
    }

    /// The trait's `attention_forward`.
    pub(super) fn attend(
        &self,
        y: CMut<'_>,
        att: CMut<'_>,
        scratch: CMut<'_>,
        qkv: CRef<'_>,
        s: Dims,
        drop: Dropout,
    ) {
        let (b, t, h, dh) = (s.b, s.t, s.h, s.dh);
        let n = b * h * t * dh;
        let tt = b * h * t * t;
        assert!(att.len >= tt && y.len >= b * t * h * dh && qkv.len >= 3 * n, "attention shapes");
        assert!(!drop.active() || scratch.len >= tt, "attention dropout needs its scratch");
        if n == 0 {
            return;
        }
        let [q, k, v] = self.heads_of(qkv, s);
        let heads = self.scratch(Slot::Heads, n * 4);
        self.gemm_batched(att.ptr, q, false, k, true, (t, t, dh), b * h);
        let scale = 1.0 / (dh as f32).sqrt();
        let rows = b * h * t;
        self.launch(
            "softmax_causal",
            Self::warp_rows(rows),
            &[A::P(att.ptr), A::L(rows as i64), A::I(t as i32), A::F(scale)],
        );
        let probs = self.dropped(scratch.ptr, att.ptr, rows * t, drop);
        self.gemm_batched(heads, probs, false, v, false, (t, dh, t), b * h);
        self.merge_heads(y.ptr, heads, s, false);
    }

    /// The trait's `attention_rows`.
    pub(super) fn attend_rows(
        &self,
        y: CMut<'_>,
        q: CRef<'_>,
        kv: CRef<'_>,
        l: KvLayout,
        s: Dims,
        rows: &[usize],
    ) {
        if rows.is_empty() {
            return;
        }
        assert!(kv.len >= l.span(s), "attention_rows: the cache is smaller than its layout");
        assert!(i32::try_from(l.span(s)).is_ok(), "attention_rows: the cache exceeds i32 strides");
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let probs = self.scratch(Slot::Probs, rows.len() * s.h * s.t * 4);
        let c = cfg((rows.len() * s.h) as u32, 128);
        let scale = 1.0 / (s.dh as f32).sqrt();
        self.launch(
            "attention_rows",
            c,
            &[
                A::P(y.ptr),
                A::P(q.ptr),
                A::P(kv.ptr),
                A::P(r),
                A::P(probs),
                A::I(s.t as i32),
                A::I(s.h as i32),
                A::I(s.dh as i32),
                A::I(l.seq as i32),
                A::I(l.head as i32),
                A::I(l.pos as i32),
                A::I(l.value as i32),
                A::F(scale),
            ],
        );
    }

    /// The trait's `attention_backward`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend_backward(
        &self,
        dqkv: CMut<'_>,
        scratch: CMut<'_>,
        dy: CRef<'_>,
        qkv: CRef<'_>,
        att: CRef<'_>,
        s: Dims,
        drop: Dropout,
    ) {
        let (b, t, h, dh) = (s.b, s.t, s.h, s.dh);
        let n = b * h * t * dh;
        assert!(scratch.len >= b * h * t * t && dqkv.len >= 3 * n, "attention shapes");
        if n == 0 {
            return;
        }
        let bh = b * h;
        // The forward's q, k, v again (permuting is cheaper than keeping them).
        let [q, k, v] = self.heads_of(qkv, s);
        let dq = self.scratch(Slot::Dqkv, 3 * n * 4);
        let (dk, dv) = (dq + n as u64 * F4, dq + 2 * n as u64 * F4);
        let dheads = self.scratch(Slot::Heads, n * 4);
        self.merge_heads(dy.ptr, dheads, s, true);
        let rows = bh * t;
        // ∂v = probs_droppedᵀ · ∂heads.
        let probs = self.dropped(scratch.ptr, att.ptr, rows * t, drop);
        self.gemm_batched(dv, probs, true, dheads, false, (t, dh, t), bh);
        // ∂probs_dropped = ∂heads · vᵀ, then through the dropout and the softmax.
        self.gemm_batched(scratch.ptr, dheads, false, v, true, (t, t, dh), bh);
        let [kk, o, th, sc, act] = drop_args(drop);
        let scale = 1.0 / (dh as f32).sqrt();
        self.launch(
            "softmax_causal_backward",
            Self::warp_rows(rows),
            &[
                A::P(scratch.ptr),
                A::P(att.ptr),
                A::L(rows as i64),
                A::I(t as i32),
                A::F(scale),
                kk,
                o,
                th,
                sc,
                act,
            ],
        );
        self.gemm_batched(dq, scratch.ptr, false, k, false, (t, dh, t), bh);
        self.gemm_batched(dk, scratch.ptr, true, q, false, (t, dh, t), bh);
        let [d0, d1, d2, d3] = dims_args(s);
        self.launch_n(
            "unpermute_qkv",
            n,
            &[A::P(dqkv.ptr), A::P(dq), A::P(dk), A::P(dv), d0, d1, d2, d3],
        );
    }
}

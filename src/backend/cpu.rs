//! The CPU: host `Vec<f32>` buffers and the kernels of [`crate::kernels`], with the matrix
//! products in fp32 or in bf16 with fp32 accumulation ([`Precision`]).

use super::{Backend, DeviceBuf, Pinned, Precision};
use crate::kernels::attention::{self, Dims, KvLayout};
use crate::kernels::dropout::Dropout;
use crate::kernels::gemm::{self, Gemm, Mat};
use crate::kernels::optim::AdamStep;
use crate::kernels::reduce::{col_sum, sum_squares};
use crate::kernels::{crossentropy, embedding, gelu, layernorm, lstm, optim, parallel};
use rayon::prelude::*;
use std::borrow::Cow;

/// The host's cores (rayon's pool). Every tensor is stored in fp32; with
/// [`Precision::Bf16`] the matrix products of the linear layers, of the tied LM head and of
/// attention (its per-head products) take their inputs rounded to bf16 and accumulate in fp32
/// (mixed precision: master weights, optimizer state, LayerNorm, softmax, the loss and every
/// reduction stay fp32; the bf16 copy of a weight is made as the product packs it, or kept
/// while the weights are pinned). The bf16 products run on AMX tiles where the CPU has them
/// and the OS grants them, else on AVX-512 BF16, else widened to fp32 for the FMA units
/// (`kernels::gemm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    gemm: Gemm,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::FP32
    }
}

impl Cpu {
    /// fp32 products through the `gemm` crate (bitwise the engine before mixed precision).
    pub const FP32: Cpu = Cpu { gemm: Gemm::Fp32 };

    /// The CPU at `precision`; bf16 runs the fastest product this CPU has (AMX, AVX-512 BF16's
    /// `vdpbf16ps`, else bf16 panels widened to fp32 on the FMA units; `GPT1_BF16_KERNEL`
    /// chooses another).
    pub fn new(precision: Precision) -> Self {
        match precision {
            Precision::Fp32 => Cpu::FP32,
            Precision::Bf16 => Cpu { gemm: Gemm::Bf16(gemm::best_version()) },
        }
    }

    pub fn precision(&self) -> Precision {
        match self.gemm {
            Gemm::Fp32 => Precision::Fp32,
            Gemm::Bf16(_) => Precision::Bf16,
        }
    }
}

impl DeviceBuf<Cpu> for Vec<f32> {
    fn r(&self) -> &[f32] {
        self
    }
    fn w(&mut self) -> &mut [f32] {
        self
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

fn mat(x: &[f32], t: bool, rows: usize, cols: usize) -> Mat<'_> {
    if t { Mat::t(x, rows) } else { Mat::rows(x, cols) }
}

#[allow(clippy::too_many_arguments)]
impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Ref<'a> = &'a [f32];
    type Mut<'a> = &'a mut [f32];

    fn decode_step(&self, rows: usize, step: &mut dyn FnMut()) {
        if self.gemm.team_serves(rows) { parallel::with_team(step) } else { step() }
    }

    fn describe(&self) -> String {
        let threads = rayon::current_num_threads();
        match self.gemm {
            Gemm::Fp32 => {
                #[cfg(target_arch = "x86_64")]
                let simd =
                    if std::arch::is_x86_feature_detected!("avx512f") { "AVX-512" } else { "AVX2" };
                #[cfg(not(target_arch = "x86_64"))]
                let simd = "portable";
                let kernel = if gemm::own_kernel() { "gpt1's AVX2 kernel" } else { "gemm crate" };
                format!("cpu fp32 ({threads} threads, {kernel}, {simd})")
            }
            Gemm::Bf16(v) => {
                let how = match v {
                    gemm::Version::Amx if gemm::amx_usable() => "AMX tdpbf16ps".to_string(),
                    gemm::Version::Avx512 | gemm::Version::Amx => {
                        let amx = gemm::amx_refused().map(|why| format!("; AMX not used: {why}"));
                        format!("AVX-512 BF16 vdpbf16ps{}", amx.unwrap_or_default())
                    }
                    gemm::Version::Fma512 => "bf16 panels widened to fp32, AVX-512F FMA".into(),
                    gemm::Version::Fma256 => "bf16 panels widened to fp32, AVX2 FMA".into(),
                    gemm::Version::Emulated => {
                        "emulated: inputs rounded to bf16 then fp32 products, slower than fp32"
                            .into()
                    }
                };
                let no_dot = matches!(v, gemm::Version::Fma512 | gemm::Version::Fma256)
                    && !gemm::avx512_bf16();
                let lacks = if no_dot { "no bf16 instructions on this CPU: " } else { "" };
                let refused = gemm::bf16_kernel_refused().map(|why| format!("; {why}"));
                format!(
                    "cpu bf16 products, fp32 accumulation ({threads} threads, {lacks}{how}{})",
                    refused.unwrap_or_default()
                )
            }
        }
    }

    fn pin<'a>(&self, weights: Self::Ref<'a>) -> Pinned<'a> {
        match self.gemm {
            Gemm::Bf16(v) if v != gemm::Version::Emulated => Pinned::new(gemm::pin(weights)),
            _ => Pinned::none(),
        }
    }

    fn transposed_for_rows(
        &self,
        copy: &mut Vec<f32>,
        w: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> bool {
        if !self.gemm.transposed_copy_serves(m, k, n) {
            return false;
        }
        copy.resize(k * n, 0.0);
        gemm::transpose(copy, &w[..k * n], k, n);
        true
    }

    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download<'a>(&self, x: Self::Ref<'a>) -> Cow<'a, [f32]> {
        Cow::Borrowed(x)
    }
    fn resize(&self, x: &mut Vec<f32>, n: usize) {
        x.resize(n, 0.0);
    }
    fn len(x: &[f32]) -> usize {
        x.len()
    }
    fn split<'a>(x: Self::Ref<'a>, at: usize) -> (Self::Ref<'a>, Self::Ref<'a>) {
        x.split_at(at)
    }
    fn split_mut<'a>(x: Self::Mut<'a>, at: usize) -> (Self::Mut<'a>, Self::Mut<'a>) {
        x.split_at_mut(at)
    }
    fn reborrow<'s>(x: &'s mut &mut [f32]) -> &'s mut [f32] {
        x
    }
    fn fill(&self, x: &mut [f32], v: f32) {
        x.fill(v);
    }

    fn gather_rows(&self, x: &[f32], rows: &[usize], d: usize) -> Vec<f32> {
        rows.iter().flat_map(|&r| &x[r * d..(r + 1) * d]).copied().collect()
    }
    fn scatter_add_rows(&self, x: &mut [f32], rows: &[usize], src: &[f32], d: usize) {
        for (i, &r) in rows.iter().enumerate() {
            x[r * d..(r + 1) * d]
                .iter_mut()
                .zip(&src[i * d..(i + 1) * d])
                .for_each(|(x, s)| *x += s);
        }
    }
    fn copy_rows(&self, dst: &mut [f32], src: &[f32], rows: &[usize], d: usize) {
        for (i, &r) in rows.iter().enumerate() {
            dst[i * d..(i + 1) * d].copy_from_slice(&src[r * d..(r + 1) * d]);
        }
    }
    fn place_kv(&self, kv: &mut [f32], layout: KvLayout, fresh: &[f32], s: Dims, rows: &[usize]) {
        attention::place(kv, layout, fresh, s, rows);
    }

    fn encoder_forward(
        &self,
        out: &mut [f32],
        ids: &[u32],
        wte: &[f32],
        wpe: &[f32],
        t: usize,
        d: usize,
    ) {
        embedding::forward(out, ids, wte, wpe, t, d);
    }
    fn encoder_rows(
        &self,
        out: &mut [f32],
        ids: &[u32],
        rows: &[usize],
        wte: &[f32],
        wpe: &[f32],
        t: usize,
        d: usize,
    ) {
        embedding::forward_rows(out, ids, rows, wte, wpe, t, d);
    }
    fn encoder_backward(
        &self,
        dwte: &mut [f32],
        dwpe: &mut [f32],
        dout: &[f32],
        ids: &[u32],
        t: usize,
        d: usize,
    ) {
        embedding::backward(dwte, dwpe, dout, ids, t, d);
    }
    fn dropout(&self, x: &mut [f32], drop: Dropout) {
        drop.apply(x, 0);
    }
    fn residual_forward(&self, out: &mut [f32], x: &[f32], a: &[f32], drop: Dropout) {
        drop.residual(out, x, a);
    }
    fn residual_backward(&self, out: &mut [f32], g: &[f32], drop: Dropout) {
        drop.backward_into(out, g);
    }
    fn matmul(
        &self,
        c: &mut [f32],
        a: &[f32],
        a_t: bool,
        b: &[f32],
        b_t: bool,
        m: usize,
        n: usize,
        k: usize,
        acc: bool,
    ) {
        self.gemm.mm(c, mat(a, a_t, m, k), mat(b, b_t, k, n), m, n, k, acc);
    }
    fn matmul_forward(
        &self,
        out: &mut [f32],
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        rows: usize,
        k: usize,
        n: usize,
    ) {
        let out = &mut out[..rows * n];
        out.par_chunks_mut(n).for_each(|r| r.copy_from_slice(bias));
        self.gemm.mm(out, Mat::rows(x, k), Mat::rows(w, n), rows, n, k, true);
    }
    fn matmul_backward(
        &self,
        dx: &mut [f32],
        acc: bool,
        dw: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        x: &[f32],
        w: &[f32],
        rows: usize,
        k: usize,
        n: usize,
    ) {
        self.gemm.mm(dx, Mat::rows(dout, n), Mat::t(w, n), rows, k, n, acc);
        self.gemm.mm(dw, Mat::t(x, k), Mat::rows(dout, n), k, n, rows, true);
        col_sum(dbias, dout, rows);
    }
    fn layernorm_forward(
        &self,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        x: &[f32],
        g: &[f32],
        b: &[f32],
        d: usize,
        eps: f32,
    ) {
        layernorm::forward(out, mean, rstd, x, g, b, d, eps);
    }
    fn layernorm_backward(
        &self,
        dx: &mut [f32],
        dg: &mut [f32],
        db: &mut [f32],
        dout: &[f32],
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
        g: &[f32],
        d: usize,
    ) {
        layernorm::backward(dx, dg, db, dout, x, mean, rstd, g, d);
    }
    fn gelu_forward(&self, out: &mut [f32], x: &[f32]) {
        gelu::forward(out, x);
    }
    fn gelu_backward(&self, dx: &mut [f32], out: &mut [f32], x: &[f32]) {
        gelu::backward(dx, out, x);
    }
    fn keeps_attention_probs(&self) -> bool {
        false
    }
    fn attention_forward(
        &self,
        y: &mut [f32],
        _att: &mut [f32],
        _scratch: &mut [f32],
        qkv: &[f32],
        s: Dims,
        drop: Dropout,
    ) {
        attention::forward(self.gemm, y, qkv, s, drop);
    }
    fn attention_rows(
        &self,
        y: &mut [f32],
        q: &[f32],
        kv: &[f32],
        layout: KvLayout,
        s: Dims,
        rows: &[usize],
    ) {
        attention::forward_rows(y, q, kv, layout, s, rows);
    }
    fn attention_backward(
        &self,
        dqkv: &mut [f32],
        _scratch: &mut [f32],
        dy: &[f32],
        qkv: &[f32],
        _att: &[f32],
        s: Dims,
        drop: Dropout,
    ) {
        attention::backward(self.gemm, dqkv, dy, qkv, s, drop);
    }
    fn crossentropy_forward_backward(
        &self,
        dh: &mut [f32],
        dwte: &mut [f32],
        bias: Option<(&[f32], &mut [f32])>,
        logits: &mut [f32],
        h: &[f32],
        wte: &[f32],
        targets: &[u32],
        d: usize,
        scale: f32,
    ) -> f64 {
        crossentropy::forward_backward_biased(
            self.gemm, dh, dwte, bias, logits, h, wte, targets, d, scale,
        )
    }
    fn logprobs(
        &self,
        out: &mut [f32],
        logits: &mut [f32],
        h: &[f32],
        wte: &[f32],
        bias: Option<&[f32]>,
        targets: &[u32],
        d: usize,
    ) {
        crossentropy::logprobs_biased(self.gemm, out, logits, h, wte, bias, targets, d);
    }

    fn embedding_forward(&self, out: &mut [f32], table: &[f32], ids: &[u32], d: usize) {
        embedding::gather(out, table, ids, d);
    }
    fn embedding_backward(&self, dtable: &mut [f32], dout: &[f32], ids: &[u32], d: usize) {
        embedding::scatter_add(dtable, dout, ids, d);
    }
    fn add_biases(&self, x: &mut [f32], b1: &[f32], b2: &[f32]) {
        lstm::add_biases(x, b1, b2);
    }
    fn bias_backward(&self, dbias: &mut [f32], dout: &[f32], rows: usize) {
        col_sum(dbias, dout, rows);
    }
    fn lstm_cell_forward(
        &self,
        gates: &mut [f32],
        c: &mut [f32],
        h: &mut [f32],
        step: usize,
        b: usize,
        hid: usize,
    ) {
        let (r0, r1) = (step * b, (step + 1) * b);
        let (prev, cur) = c.split_at_mut(r0 * hid);
        let c_prev = (step > 0).then(|| &prev[(r0 - b) * hid..]);
        lstm::cell_forward(
            &mut gates[r0 * 4 * hid..r1 * 4 * hid],
            &mut cur[..b * hid],
            &mut h[r0 * hid..r1 * hid],
            c_prev,
            hid,
        );
    }
    fn lstm_cell_backward(
        &self,
        dgates: &mut [f32],
        dc_next: &mut [f32],
        dh: &[f32],
        gates: &[f32],
        c: &[f32],
        step: usize,
        b: usize,
        hid: usize,
    ) {
        let (r0, r1) = (step * b, (step + 1) * b);
        let c_prev = (step > 0).then(|| &c[(r0 - b) * hid..r0 * hid]);
        lstm::cell_backward(
            &mut dgates[r0 * 4 * hid..r1 * 4 * hid],
            dc_next,
            &dh[r0 * hid..r1 * hid],
            &gates[r0 * 4 * hid..r1 * 4 * hid],
            &c[r0 * hid..r1 * hid],
            c_prev,
            hid,
        );
    }

    fn all_reduce_sum(&self, x: &mut [f32], comm: &dyn crate::dist::Collective) {
        comm.all_reduce_f32(x);
    }

    fn sum_squares(&self, x: &[f32]) -> f64 {
        sum_squares(x)
    }
    fn scale(&self, x: &mut [f32], f: f32) {
        optim::scale(x, f);
    }
    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamStep) {
        optim::adamw(p, g, m, v, h);
    }
}

//! The [`Backend`] trait's methods: each a kernel launch, a cuBLAS product or a call into the
//! family files (attention, the LM head, the embeddings).

use super::device::{A, CMut, CRef, CudaBuf, DevicePin, F4, PinGuard, Slot, cfg, drop_args};
use super::failure::fail;
use super::head::HeadGrads;
use super::{Cuda, nccl};
use crate::backend::{Backend, Pinned, Precision};
use crate::kernels::attention::{Dims, KvLayout};
use crate::kernels::dropout::Dropout;
use crate::kernels::optim::AdamStep;
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{DevicePtr, result as drv};
use std::borrow::Cow;
use std::marker::PhantomData;

#[allow(clippy::too_many_arguments)]
impl Backend for Cuda {
    type Buf = CudaBuf;
    type Ref<'a> = CRef<'a>;
    type Mut<'a> = CMut<'a>;

    fn pin<'a>(&self, weights: Self::Ref<'a>) -> Pinned<'a> {
        if self.inner.precision != Precision::Bf16 {
            return Pinned::none();
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let range = weights.ptr..weights.ptr + 4 * weights.len as CUdeviceptr;
        let pin = DevicePin { id, range, copies: Vec::new() };
        self.inner.pins.lock().unwrap_or_else(|e| e.into_inner()).push(pin);
        Pinned::new(PinGuard { inner: self.inner.clone(), id, _weights: PhantomData })
    }

    fn describe(&self) -> String {
        let i = &self.inner;
        match i.precision {
            Precision::Fp32 => {
                format!("cuda:{} {} ({}), fp32 cuBLAS products", i.ordinal, i.name, i.arch)
            }
            Precision::Bf16 => format!(
                "cuda:{} {} ({}), bf16 cuBLAS products, fp32 accumulation",
                i.ordinal, i.name, i.arch
            ),
        }
    }

    fn free_memory(&self) -> Option<u64> {
        Some(self.memory().0 as u64)
    }

    fn zeros(&self, n: usize) -> CudaBuf {
        if n == 0 {
            return CudaBuf { data: None, ptr: 0, len: 0 };
        }
        self.bind();
        let data = self.inner.stream.alloc_zeros::<f32>(n).unwrap_or_else(|e| {
            let (free, total) = self.memory();
            fail(
                &format!(
                    "allocating {} MiB (free {} of {} MiB)",
                    (n * 4) >> 20,
                    free >> 20,
                    total >> 20
                ),
                e,
            )
        });
        let (ptr, _) = data.device_ptr(&self.inner.stream);
        CudaBuf { data: Some(data), ptr, len: n }
    }
    fn upload(&self, host: &[f32]) -> CudaBuf {
        let b = self.zeros(host.len());
        if !host.is_empty() {
            self.bind();
            // SAFETY: `b` holds host.len() floats.
            unsafe { drv::memcpy_htod_async(b.ptr, host, self.inner.stream.cu_stream()) }
                .unwrap_or_else(|e| fail("copying to the GPU", e));
        }
        b
    }
    fn download<'a>(&self, x: Self::Ref<'a>) -> Cow<'a, [f32]> {
        Cow::Owned(self.get(x.ptr, x.len))
    }
    fn resize(&self, x: &mut CudaBuf, n: usize) {
        if n <= x.cap() {
            if n > x.len {
                self.fill_ptr(x.ptr + x.len as u64 * F4, n - x.len, 0.0);
            }
            x.len = n;
            return;
        }
        let fresh = self.zeros(n);
        if x.len > 0 {
            self.bind();
            // SAFETY: both hold at least x.len floats.
            unsafe {
                drv::memcpy_dtod_async(fresh.ptr, x.ptr, x.len * 4, self.inner.stream.cu_stream())
            }
            .unwrap_or_else(|e| fail("copying on the GPU", e));
        }
        *x = fresh;
    }
    fn len(x: CRef<'_>) -> usize {
        x.len
    }
    fn split<'a>(x: Self::Ref<'a>, at: usize) -> (Self::Ref<'a>, Self::Ref<'a>) {
        assert!(at <= x.len, "split at {at} of {}", x.len);
        (
            CRef { ptr: x.ptr, len: at, _p: PhantomData },
            CRef { ptr: x.ptr + at as u64 * F4, len: x.len - at, _p: PhantomData },
        )
    }
    fn split_mut<'a>(x: Self::Mut<'a>, at: usize) -> (Self::Mut<'a>, Self::Mut<'a>) {
        assert!(at <= x.len, "split at {at} of {}", x.len);
        (
            CMut { ptr: x.ptr, len: at, _p: PhantomData },
            CMut { ptr: x.ptr + at as u64 * F4, len: x.len - at, _p: PhantomData },
        )
    }
    fn reborrow<'s>(x: &'s mut CMut<'_>) -> CMut<'s> {
        CMut { ptr: x.ptr, len: x.len, _p: PhantomData }
    }
    fn fill(&self, x: CMut<'_>, v: f32) {
        self.fill_ptr(x.ptr, x.len, v);
    }

    fn gather_rows(&self, x: CRef<'_>, rows: &[usize], d: usize) -> Vec<f32> {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let out = self.scratch(Slot::Host, n * d * 4);
        self.launch_n(
            "copy_rows",
            n * d,
            &[A::P(out), A::P(x.ptr), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
        self.get(out, n * d)
    }
    fn scatter_add_rows(&self, x: CMut<'_>, rows: &[usize], src: &[f32], d: usize) {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let s = self.put(Slot::Host, &src[..n * d]);
        self.launch_n(
            "add_rows",
            n * d,
            &[A::P(x.ptr), A::P(s), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
    }
    fn copy_rows(&self, dst: CMut<'_>, src: CRef<'_>, rows: &[usize], d: usize) {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        self.launch_n(
            "copy_rows",
            n * d,
            &[A::P(dst.ptr), A::P(src.ptr), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
    }
    fn place_kv(&self, kv: CMut<'_>, l: KvLayout, fresh: CRef<'_>, s: Dims, rows: &[usize]) {
        let n = rows.len();
        assert!(kv.len >= l.span(s) && fresh.len >= n * 3 * s.d(), "place_kv: buffers too small");
        assert!(rows.iter().all(|&r| r < s.b * s.t), "rows must lie in [B, T]");
        assert!(i32::try_from(l.span(s)).is_ok(), "place_kv: the cache exceeds i32 strides");
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let i = |x: usize| A::I(x as i32);
        self.launch_n(
            "place_kv",
            n * 2 * s.d(),
            &[
                A::P(kv.ptr),
                A::P(fresh.ptr),
                A::P(r),
                i(n),
                i(s.t),
                i(s.h),
                i(s.dh),
                i(l.seq),
                i(l.head),
                i(l.pos),
                i(l.value),
            ],
        );
    }

    fn encoder_forward(
        &self,
        out: CMut<'_>,
        ids: &[u32],
        wte: CRef<'_>,
        wpe: CRef<'_>,
        t: usize,
        d: usize,
    ) {
        self.encode(out, ids, wte, wpe, t, d);
    }
    fn encoder_rows(
        &self,
        out: CMut<'_>,
        ids: &[u32],
        rows: &[usize],
        wte: CRef<'_>,
        wpe: CRef<'_>,
        t: usize,
        d: usize,
    ) {
        self.encode_rows(out, ids, rows, wte, wpe, t, d);
    }
    fn encoder_backward(
        &self,
        dwte: CMut<'_>,
        dwpe: CMut<'_>,
        dout: CRef<'_>,
        ids: &[u32],
        t: usize,
        d: usize,
    ) {
        self.encode_backward(dwte, dwpe, dout, ids, t, d);
    }
    fn dropout(&self, x: CMut<'_>, drop: Dropout) {
        if drop.active() {
            let [k, o, th, sc, _] = drop_args(drop);
            self.launch_n(
                "dropout_copy",
                x.len,
                &[A::P(x.ptr), A::P(x.ptr), A::L(x.len as i64), k, o, th, sc],
            );
        }
    }
    fn residual_forward(&self, out: CMut<'_>, x: CRef<'_>, a: CRef<'_>, drop: Dropout) {
        let [k, o, th, sc, act] = drop_args(drop);
        self.launch_n(
            "residual_forward",
            out.len,
            &[A::P(out.ptr), A::P(x.ptr), A::P(a.ptr), A::L(out.len as i64), k, o, th, sc, act],
        );
    }
    fn residual_backward(&self, out: CMut<'_>, g: CRef<'_>, drop: Dropout) {
        let drop = if drop.active() { drop } else { Dropout::OFF };
        let [k, o, th, sc, _] = drop_args(drop);
        // Inactive: threshold 0 keeps every element, scale 1/(1-0) = 1: a copy.
        self.launch_n(
            "dropout_copy",
            out.len,
            &[A::P(out.ptr), A::P(g.ptr), A::L(out.len as i64), k, o, th, sc],
        );
    }
    fn matmul(
        &self,
        c: CMut<'_>,
        a: CRef<'_>,
        a_t: bool,
        b: CRef<'_>,
        b_t: bool,
        m: usize,
        n: usize,
        k: usize,
        acc: bool,
    ) {
        self.gemm(c.ptr, a.ptr, a_t, b.ptr, b_t, (m, n, k), if acc { 1.0 } else { 0.0 }, true);
    }
    fn matmul_forward(
        &self,
        out: CMut<'_>,
        x: CRef<'_>,
        w: CRef<'_>,
        bias: CRef<'_>,
        rows: usize,
        k: usize,
        n: usize,
    ) {
        self.launch_n(
            "bias_broadcast",
            rows * n,
            &[A::P(out.ptr), A::P(bias.ptr), A::L(rows as i64), A::I(n as i32)],
        );
        self.gemm(out.ptr, x.ptr, false, w.ptr, false, (rows, n, k), 1.0, true);
    }
    fn matmul_backward(
        &self,
        dx: CMut<'_>,
        acc: bool,
        dw: CMut<'_>,
        dbias: CMut<'_>,
        dout: CRef<'_>,
        x: CRef<'_>,
        w: CRef<'_>,
        rows: usize,
        k: usize,
        n: usize,
    ) {
        self.gemm(
            dx.ptr,
            dout.ptr,
            false,
            w.ptr,
            true,
            (rows, k, n),
            if acc { 1.0 } else { 0.0 },
            true,
        );
        self.gemm(dw.ptr, x.ptr, true, dout.ptr, false, (k, n, rows), 1.0, true);
        self.col_sum(dbias.ptr, dout.ptr, rows, n);
    }
    fn layernorm_forward(
        &self,
        out: CMut<'_>,
        mean: CMut<'_>,
        rstd: CMut<'_>,
        x: CRef<'_>,
        g: CRef<'_>,
        b: CRef<'_>,
        d: usize,
        eps: f32,
    ) {
        let rows = mean.len;
        if rows > 0 {
            self.launch(
                "layernorm_forward",
                Self::warp_rows(rows),
                &[
                    A::P(out.ptr),
                    A::P(mean.ptr),
                    A::P(rstd.ptr),
                    A::P(x.ptr),
                    A::P(g.ptr),
                    A::P(b.ptr),
                    A::L(rows as i64),
                    A::I(d as i32),
                    A::F(eps),
                ],
            );
        }
    }
    fn layernorm_backward(
        &self,
        dx: CMut<'_>,
        dg: CMut<'_>,
        db: CMut<'_>,
        dout: CRef<'_>,
        x: CRef<'_>,
        mean: CRef<'_>,
        rstd: CRef<'_>,
        g: CRef<'_>,
        d: usize,
    ) {
        let rows = mean.len;
        if rows == 0 {
            return;
        }
        self.launch(
            "layernorm_backward_dx",
            Self::warp_rows(rows),
            &[
                A::P(dx.ptr),
                A::P(dout.ptr),
                A::P(x.ptr),
                A::P(mean.ptr),
                A::P(rstd.ptr),
                A::P(g.ptr),
                A::L(rows as i64),
                A::I(d as i32),
            ],
        );
        let inputs = [A::P(dout.ptr), A::P(x.ptr), A::P(mean.ptr), A::P(rstd.ptr)];
        self.col_sums("layernorm_dg_partial", &inputs, dg.ptr, rows, d);
        self.col_sum(db.ptr, dout.ptr, rows, d);
    }
    fn gelu_forward(&self, out: CMut<'_>, x: CRef<'_>) {
        self.launch_n("gelu_forward", out.len, &[A::P(out.ptr), A::P(x.ptr), A::L(out.len as i64)]);
    }
    fn gelu_backward(&self, dx: CMut<'_>, out: CMut<'_>, x: CRef<'_>) {
        assert!(out.len == dx.len && x.len == dx.len, "gelu backward: lengths differ");
        let args = [A::P(dx.ptr), A::P(out.ptr), A::P(x.ptr), A::L(dx.len as i64)];
        self.launch_n("gelu_backward", dx.len, &args);
    }
    fn keeps_attention_probs(&self) -> bool {
        true
    }
    fn attention_forward(
        &self,
        y: CMut<'_>,
        att: CMut<'_>,
        scratch: CMut<'_>,
        qkv: CRef<'_>,
        s: Dims,
        drop: Dropout,
    ) {
        self.attend(y, att, scratch, qkv, s, drop);
    }
    fn attention_rows(
        &self,
        y: CMut<'_>,
        q: CRef<'_>,
        kv: CRef<'_>,
        layout: KvLayout,
        s: Dims,
        rows: &[usize],
    ) {
        self.attend_rows(y, q, kv, layout, s, rows);
    }
    fn attention_backward(
        &self,
        dqkv: CMut<'_>,
        scratch: CMut<'_>,
        dy: CRef<'_>,
        qkv: CRef<'_>,
        att: CRef<'_>,
        s: Dims,
        drop: Dropout,
    ) {
        self.attend_backward(dqkv, scratch, dy, qkv, att, s, drop);
    }
    fn crossentropy_forward_backward(
        &self,
        dh: CMut<'_>,
        dwte: CMut<'_>,
        bias: Option<(CRef<'_>, CMut<'_>)>,
        logits: CMut<'_>,
        h: CRef<'_>,
        wte: CRef<'_>,
        targets: &[u32],
        d: usize,
        scale: f32,
    ) -> f64 {
        let b = bias.as_ref().map(|(b, db)| (b.ptr, db.ptr));
        let grads = Some(HeadGrads { dh: dh.ptr, dwte: dwte.ptr, dbias: b.map(|x| x.1), scale });
        let nll = self.lm_head(logits, h, wte, b.map(|x| x.0), targets, d, grads);
        nll.iter().map(|&x| x as f64).sum()
    }
    fn logprobs(
        &self,
        out: &mut [f32],
        logits: CMut<'_>,
        h: CRef<'_>,
        wte: CRef<'_>,
        bias: Option<CRef<'_>>,
        targets: &[u32],
        d: usize,
    ) {
        let lp = self.lm_head(logits, h, wte, bias.map(|b| b.ptr), targets, d, None);
        out[..targets.len()].copy_from_slice(&lp);
    }

    fn embedding_forward(&self, out: CMut<'_>, table: CRef<'_>, ids: &[u32], d: usize) {
        self.gather_ids(out, table, ids, d);
    }
    fn embedding_backward(&self, dtable: CMut<'_>, dout: CRef<'_>, ids: &[u32], d: usize) {
        self.scatter_ids(dtable, dout, ids, d);
    }
    fn add_biases(&self, x: CMut<'_>, b1: CRef<'_>, b2: CRef<'_>) {
        let n = b1.len;
        if let Some(rows) = x.len.checked_div(n) {
            self.launch_n(
                "add_biases",
                rows * n,
                &[A::P(x.ptr), A::P(b1.ptr), A::P(b2.ptr), A::L(rows as i64), A::I(n as i32)],
            );
        }
    }
    fn bias_backward(&self, dbias: CMut<'_>, dout: CRef<'_>, rows: usize) {
        self.col_sum(dbias.ptr, dout.ptr, rows, dbias.len);
    }
    fn lstm_cell_forward(
        &self,
        gates: CMut<'_>,
        c: CMut<'_>,
        h: CMut<'_>,
        step: usize,
        b: usize,
        hid: usize,
    ) {
        let r0 = step * b;
        let at = |p: CUdeviceptr, row: usize, w: usize| p + (row * w) as u64 * F4;
        let c_prev = if step > 0 { at(c.ptr, r0 - b, hid) } else { 0 };
        self.launch_n(
            "lstm_cell_forward",
            b * hid,
            &[
                A::P(at(gates.ptr, r0, 4 * hid)),
                A::P(at(c.ptr, r0, hid)),
                A::P(at(h.ptr, r0, hid)),
                A::P(c_prev),
                A::I(b as i32),
                A::I(hid as i32),
            ],
        );
    }
    fn lstm_cell_backward(
        &self,
        dgates: CMut<'_>,
        dc_next: CMut<'_>,
        dh: CRef<'_>,
        gates: CRef<'_>,
        c: CRef<'_>,
        step: usize,
        b: usize,
        hid: usize,
    ) {
        let r0 = step * b;
        let at = |p: CUdeviceptr, row: usize, w: usize| p + (row * w) as u64 * F4;
        let c_prev = if step > 0 { at(c.ptr, r0 - b, hid) } else { 0 };
        self.launch_n(
            "lstm_cell_backward",
            b * hid,
            &[
                A::P(at(dgates.ptr, r0, 4 * hid)),
                A::P(dc_next.ptr),
                A::P(at(dh.ptr, r0, hid)),
                A::P(at(gates.ptr, r0, 4 * hid)),
                A::P(at(c.ptr, r0, hid)),
                A::P(c_prev),
                A::I(b as i32),
                A::I(hid as i32),
            ],
        );
    }

    fn all_reduce_sum(&self, x: CMut<'_>, comm: &dyn crate::dist::Collective) {
        if comm.world() == 1 {
            return;
        }
        // NCCL on the device when every rank has it (decided once per run communicator).
        let key = comm as *const dyn crate::dist::Collective as *const () as usize;
        let mut st = self.inner.nccl.lock().unwrap_or_else(|e| e.into_inner());
        if st.as_ref().is_none_or(|(k, _)| *k != key) {
            self.bind();
            let c = if nccl::agreed(comm, self.gpu_identity()) {
                let c = nccl::connect(comm).map_err(|e| eprintln!("warning: {e}")).ok();
                // All on NCCL, or all through the host.
                if crate::dist::any(comm, c.is_none()) { None } else { c }
            } else {
                None
            };
            if c.is_none() && comm.rank() == 0 {
                eprintln!(
                    "gradient sums through the host (NCCL unavailable on some rank, GPUs shared, or GPT1_NCCL=0)"
                );
            }
            *st = Some((key, c));
        }
        if let Some((_, Some(c))) = &*st {
            self.bind();
            c.all_reduce_sum(x.ptr, x.len, &self.inner.stream)
                .unwrap_or_else(|e| fail("NCCL all-reduce", e));
            return;
        }
        drop(st);
        let mut host = self.get::<f32>(x.ptr, x.len);
        comm.all_reduce_f32(&mut host);
        self.bind();
        // SAFETY: `x` holds host.len() floats.
        unsafe { drv::memcpy_htod_async(x.ptr, &host, self.inner.stream.cu_stream()) }
            .unwrap_or_else(|e| fail("copying to the GPU", e));
    }

    fn sum_squares(&self, x: CRef<'_>) -> f64 {
        const CHUNK: usize = 1 << 16;
        if x.len == 0 {
            return 0.0;
        }
        let nb = x.len.div_ceil(CHUNK);
        let part = self.scratch(Slot::Partial, nb * 8);
        self.launch(
            "sum_squares_partial",
            cfg(nb as u32, 1024),
            &[A::P(part), A::P(x.ptr), A::L(x.len as i64), A::L(CHUNK as i64)],
        );
        self.get::<f64>(part, nb).iter().sum()
    }
    fn scale(&self, x: CMut<'_>, f: f32) {
        self.launch_n("scale_f32", x.len, &[A::P(x.ptr), A::L(x.len as i64), A::F(f)]);
    }
    fn adamw(&self, p: CMut<'_>, g: CRef<'_>, m: CMut<'_>, v: CMut<'_>, h: AdamStep) {
        self.launch_n(
            "adamw",
            p.len,
            &[
                A::P(p.ptr),
                A::P(g.ptr),
                A::P(m.ptr),
                A::P(v.ptr),
                A::L(p.len as i64),
                A::F(h.beta1),
                A::F(h.beta2),
                A::F(h.eps),
                A::F(h.step_size),
                A::F(h.bc2_sqrt),
                A::F(h.shrink),
            ],
        );
    }
}

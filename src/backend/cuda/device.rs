//! Device memory and kernel launches: the views and buffers, the scratch slots, copies between
//! the host and the GPU, the bf16 copies kept for pinned weights, launching a kernel by name
//! with its arguments, and the column sums (a fixed order of partial sums: no atomics).

use super::failure::fail;
use super::{Cuda, Inner};
use crate::backend::DeviceBuf;
use crate::kernels::dropout::Dropout;
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg, result as drv};
use std::marker::PhantomData;
use std::sync::Arc;

/// Growable device scratch buffers, one per use, kept between calls.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Slot {
    Idx0,
    Idx1,
    Idx2,
    Rows,
    Host,
    Partial,
    Qkv,
    Dqkv,
    Heads,
    Nll,
    Bf16A,
    Bf16B,
    Probs,
}

/// Weights pinned on the device: their address range, and the bf16 copy of each operand read
/// from it (its address and length), made by the first bf16 product that reads it.
pub(super) struct DevicePin {
    pub(super) id: u64,
    pub(super) range: std::ops::Range<CUdeviceptr>,
    pub(super) copies: Vec<(CUdeviceptr, usize, CudaSlice<u16>)>,
}

/// Ends a pin: its bf16 copies are freed.
pub(super) struct PinGuard<'a> {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
    pub(super) _weights: PhantomData<&'a f32>,
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        self.inner.pins.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p.id != self.id);
    }
}

/// A read-only view: a device address and a length.
#[derive(Clone, Copy, Debug)]
pub struct CRef<'a> {
    pub(super) ptr: CUdeviceptr,
    pub(super) len: usize,
    pub(super) _p: PhantomData<&'a f32>,
}

/// A writable view.
#[derive(Debug)]
pub struct CMut<'a> {
    pub(super) ptr: CUdeviceptr,
    pub(super) len: usize,
    pub(super) _p: PhantomData<&'a mut f32>,
}

/// An owned buffer: `cap` floats allocated, the first `len` in use.
pub struct CudaBuf {
    pub(super) data: Option<CudaSlice<f32>>,
    pub(super) ptr: CUdeviceptr,
    pub(super) len: usize,
}

impl DeviceBuf<Cuda> for CudaBuf {
    fn r(&self) -> CRef<'_> {
        CRef { ptr: self.ptr, len: self.len, _p: PhantomData }
    }
    fn w(&mut self) -> CMut<'_> {
        CMut { ptr: self.ptr, len: self.len, _p: PhantomData }
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl CudaBuf {
    pub(super) fn cap(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }
}

/// A kernel argument, as the kernel declares it.
#[derive(Clone, Copy)]
pub(super) enum A {
    /// A device pointer (`float*`, `const u32*`, ...).
    P(CUdeviceptr),
    /// `i64` (`long long`).
    L(i64),
    I(i32),
    U(u32),
    K(u64),
    F(f32),
}

pub(super) const F4: u64 = 4;

pub(super) fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).clamp(1, 1 << 20) as u32
}

pub(super) fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// Dropout as kernel arguments: key, offset, threshold, scale, active.
pub(super) fn drop_args(d: Dropout) -> [A; 5] {
    [A::K(d.key), A::K(d.offset), A::U(d.threshold()), A::F(d.scale()), A::I(d.active() as i32)]
}

/// Groups for column sums: enough blocks to fill the GPU, few enough partial rows to add.
const GROUPS: usize = 64;

impl Cuda {
    pub(super) fn bind(&self) {
        self.inner.ctx.bind_to_thread().unwrap_or_else(|e| fail("binding the context", e));
    }

    pub(super) fn launch(&self, name: &str, c: LaunchConfig, args: &[A]) {
        let f = &self.inner.funcs[name];
        let mut b = self.inner.stream.launch_builder(f);
        for a in args {
            match a {
                A::P(v) | A::K(v) => b.arg(v),
                A::L(v) => b.arg(v),
                A::I(v) => b.arg(v),
                A::U(v) => b.arg(v),
                A::F(v) => b.arg(v),
            };
        }
        // SAFETY: each kernel's parameter list is the `args` its caller passes (types and
        // order), and every pointer is a live device buffer of the sizes the kernel reads.
        unsafe { b.launch(c) }.unwrap_or_else(|e| fail(name, e));
    }

    /// An elementwise kernel over `n` items (grid-stride loops).
    pub(super) fn launch_n(&self, name: &str, n: usize, args: &[A]) {
        if n > 0 {
            self.launch(name, cfg(blocks(n, 256), 256), args);
        }
    }

    /// A scratch buffer of at least `bytes`, grown as needed (freed in stream order).
    pub(super) fn scratch(&self, slot: Slot, bytes: usize) -> CUdeviceptr {
        let mut s = self.inner.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let grow = s.get(&slot).is_none_or(|b| b.len() < bytes);
        if grow {
            let b = self
                .inner
                .stream
                .alloc_zeros::<u8>(bytes.max(256))
                .unwrap_or_else(|e| fail("allocating scratch memory", e));
            s.insert(slot, b);
        }
        let (p, _) = s[&slot].device_ptr(&self.inner.stream);
        p
    }

    /// `n` values at `x` rounded to bf16: the kept copy when `x` lies inside pinned weights
    /// (made at the first call), else a conversion into the scratch slot `slot`.
    pub(super) fn bf16_copy(&self, x: CUdeviceptr, n: usize, slot: Slot) -> CUdeviceptr {
        let convert = |to: CUdeviceptr| {
            self.launch_n("to_bf16", n, &[A::P(to), A::P(x), A::L(n as i64)]);
            to
        };
        let mut pins = self.inner.pins.lock().unwrap_or_else(|e| e.into_inner());
        let end = x + 4 * n as CUdeviceptr;
        let Some(pin) = pins.iter_mut().find(|p| p.range.start <= x && end <= p.range.end) else {
            drop(pins);
            return convert(self.scratch(slot, n * 2));
        };
        if let Some((_, _, copy)) = pin.copies.iter().find(|(p, len, _)| *p == x && *len == n) {
            let (p, _) = copy.device_ptr(&self.inner.stream);
            return p;
        }
        let copy = self
            .inner
            .stream
            .alloc_zeros::<u16>(n.max(1))
            .unwrap_or_else(|e| fail("allocating a pinned weight's bf16 copy", e));
        let (p, _) = copy.device_ptr(&self.inner.stream);
        convert(p);
        pin.copies.push((x, n, copy));
        p
    }

    /// Host values in a scratch slot.
    pub(super) fn put<T: Copy>(&self, slot: Slot, host: &[T]) -> CUdeviceptr {
        let p = self.scratch(slot, std::mem::size_of_val(host));
        if !host.is_empty() {
            self.bind();
            // SAFETY: `p` holds at least `host`'s bytes; the copy from pageable memory is
            // staged before this returns, so `host` may go.
            unsafe { drv::memcpy_htod_async(p, host, self.inner.stream.cu_stream()) }
                .unwrap_or_else(|e| fail("copying to the GPU", e));
        }
        p
    }

    pub(super) fn put_u32(&self, slot: Slot, host: impl IntoIterator<Item = u32>) -> CUdeviceptr {
        let v: Vec<u32> = host.into_iter().collect();
        self.put(slot, &v)
    }

    /// `n` values at `ptr`, on the host (synchronises).
    pub(super) fn get<T: Copy + Default>(&self, ptr: CUdeviceptr, n: usize) -> Vec<T> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            self.bind();
            // SAFETY: `ptr` holds at least `n` values of `T` (the callers' views).
            unsafe { drv::memcpy_dtoh_async(&mut out, ptr, self.inner.stream.cu_stream()) }
                .unwrap_or_else(|e| fail("copying from the GPU", e));
            self.synchronize();
        }
        out
    }

    pub(super) fn fill_ptr(&self, p: CUdeviceptr, n: usize, v: f32) {
        self.launch_n("fill_f32", n, &[A::P(p), A::L(n as i64), A::F(v)]);
    }

    /// `dst[c] += Σ_r src[r, c]` over `rows` rows of `cols`, in a fixed order.
    pub(super) fn col_sum(&self, dst: CUdeviceptr, src: CUdeviceptr, rows: usize, cols: usize) {
        self.col_sums("col_sum_partial", &[A::P(src)], dst, rows, cols);
    }

    /// `dst[c] += Σ_r f(r, c)` over `rows` rows of `cols`: the `partial` kernel (arguments:
    /// the partials, `inputs`, rows, cols) sums fixed groups of rows, then the groups are
    /// added in order.
    pub(super) fn col_sums(
        &self,
        partial: &str,
        inputs: &[A],
        dst: CUdeviceptr,
        rows: usize,
        cols: usize,
    ) {
        if cols == 0 || rows == 0 {
            return;
        }
        let groups = GROUPS.min(rows);
        let part = self.scratch(Slot::Partial, groups * cols * 4);
        let grid = (cols.div_ceil(256) as u32, groups as u32, 1);
        let c = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut args = vec![A::P(part)];
        args.extend_from_slice(inputs);
        args.extend([A::L(rows as i64), A::I(cols as i32)]);
        self.launch(partial, c, &args);
        self.launch(
            "col_sum_finish",
            cfg(blocks(cols, 256), 256),
            &[A::P(dst), A::P(part), A::I(cols as i32), A::I(groups as i32)],
        );
    }

    /// One warp per row of `rows`.
    pub(super) fn warp_rows(rows: usize) -> LaunchConfig {
        cfg(rows.div_ceil(8).max(1) as u32, 256)
    }
}

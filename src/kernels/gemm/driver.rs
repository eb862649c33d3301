//! The driver of the products that run a register micro-kernel ([`Micro`]): AVX-512 BF16's
//! `vdpbf16ps` (`avx512.rs`), the widening FMA kernels of CPUs without bf16 instructions
//! (`fma/`) and gpt1's own fp32 kernel (`fp32/avx2.rs`, opt-in). It packs `b` into column
//! panels of `NR` pairs-interleaved columns for every k block, then runs one fork-join over the
//! output; or, with [`Blocking::KOuter`], packs a block of panels at a time, one fork-join per
//! block and k block. The kernels differ only in how they pack `a` and `b` and multiply a
//! tile. AMX (`amx/`) has its own driver but reads the same `b` panels.
//!
//! Every tile adds its k blocks in order, so each element sums the same terms in the same
//! order whatever the split and the threads: a kernel's results do not depend on the thread
//! count or the blocking.

use super::blocking::NC;
use super::panels::{Panels, no_panels};
use super::pin::pinned_panels;
use super::{Blocking, Mat, Par};
use crate::kernels::parallel::{self, SendPtr};

/// Columns of a packed panel of `b`: 32 pairs per k pair, `[KP][NR]` u32 (each the bf16 pair
/// `(b[2p, j], b[2p + 1, j])`, the VNNI layout `vdpbf16ps` and AMX's tiles read); fp32 panels
/// are `[KP][2][NR]` ([`Micro::BW`] = 2).
pub(super) const NR: usize = 32;
/// k (in pairs) per packed block.
pub(super) const KP: usize = 128;
/// The most rows a micro-kernel's tile has (the size of the edge tiles' buffer).
pub(super) const MAX_MR: usize = 12;

/// An edge tile's buffer: `rows × NR`, row stride `NR`.
pub(super) type Tile = [f32; MAX_MR * NR];

/// A micro-kernel: its tile of `MR × NR` fp32 accumulators, how it packs `a` (its rows, `KP`
/// pairs per k block) and `b` (the shared panels).
///
/// # Safety
/// Every method requires the CPU features of the implementing kernel (callers check them
/// before choosing it) and operands of the shapes given.
pub(super) trait Micro {
    /// Rows of the tile (at most [`MAX_MR`]).
    const MR: usize;
    /// u32 words per row and pair of `a`'s packing: 1 (a bf16 pair) or 2 (the pair widened
    /// to two fp32, read by broadcasts).
    const AW: usize;
    /// Which packing of `b` the panels are: pinned weights keep panels per packing.
    const B_PACKING: u8;
    /// u32 words per column and pair of `b`'s panels: 1 (a bf16 pair) or 2 (two fp32 values,
    /// the pair's first row's `NR` columns, then its second's).
    const BW: usize = 1;
    /// Pairs of k per packed block: [`KP`], or fewer where a panel of wider words would not
    /// leave room in L1 for the tiles' rows of `a`.
    const KP: usize = KP;
    /// Whether pinned weights keep this packing (the fp32 kernel's panels would double the
    /// weights' memory; it packs at every product instead).
    const KEEP: bool = true;

    /// Rows `i0..i0 + live` of `a` (live <= MR, zero rows beyond), pairs `p0..p0 + kp`
    /// (zero beyond `k`): `[kp][MR · AW]` words.
    unsafe fn pack_a(
        dst: &mut [u32],
        a: Mat,
        i0: usize,
        live: usize,
        p0: usize,
        kp: usize,
        k: usize,
    );
    /// Rows `j0..j0 + live` of `bt` (`b`'s transpose; live <= NR, zeros beyond), pairs
    /// `p0..p0 + kp`: `[kp][NR · BW]` words.
    unsafe fn pack_b(
        dst: &mut [u32],
        bt: Mat,
        j0: usize,
        live: usize,
        p0: usize,
        kp: usize,
        k: usize,
    );
    /// `tile[r][..NR] = Σ_p a_p ⊗ b_p` over `kp` pairs for the first `rows` rows.
    unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile);
    /// A whole tile into `c` (row stride `ldc`): assigned when `first`, else added.
    unsafe fn kernel_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool);
}

thread_local! {
    static PANELS: std::cell::Cell<Option<Panels>> = const { std::cell::Cell::new(None) };
    /// Packed rows of `a` (a task's, or a product's whole `a` for column runs), grown only:
    /// a decode step's 49 products each zeroed a fresh one, 1.5 % of a bf16 decode step.
    static A_PANELS: std::cell::Cell<Option<Panels>> = const { std::cell::Cell::new(None) };
}

/// This thread's [`A_PANELS`] buffer with at least `len` values. The packing writes every word
/// a kernel reads, so what a longer product left beyond is never read.
fn a_panels(len: usize) -> Panels {
    let mut buf = A_PANELS.take().unwrap_or_else(no_panels);
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf
}

/// Gives [`a_panels`]' buffer back to this thread, unless it grew past 8 MiB (a whole `a`
/// packed for column runs, e.g. the LM head's weight gradient if the tuner chose those: 41 MB).
fn put_a_panels(buf: Panels) {
    if buf.len() * 4 <= 8 << 20 {
        A_PANELS.set(Some(buf));
    }
}

/// Rows of the output one task owns by the rule: four tiles.
const fn mc<K: Micro>() -> usize {
    4 * K::MR
}

/// One MR × NR tile of `c` (row stride `ldc`, `n` columns) at rows r0.. (`rows` of them) and
/// panel `jb`, from packed `ak` and `bk` (`kp` pairs; `first`: assign, else add): whole tiles
/// straight into c, edge tiles through `tile`.
///
/// # Safety
/// The CPU runs `K`; the tile's rows and columns of `c` are valid for writes, and no other
/// task writes them during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn write_tile<K: Micro>(
    cp: SendPtr,
    ldc: usize,
    n: usize,
    ak: &[u32],
    bk: &[u32],
    kp: usize,
    first: bool,
    r0: usize,
    rows: usize,
    jb: usize,
    tile: &mut Tile,
) {
    let (j0, nr) = (jb * NR, (n - jb * NR).min(NR));
    if nr == NR && rows >= K::MR {
        // SAFETY: the caller guarantees the CPU features; the tile lies inside c, in rows and
        // columns no other task writes.
        unsafe { K::kernel_into(ak, bk, kp, cp.get().add(r0 * ldc + j0), ldc, first) };
        return;
    }
    // SAFETY: the caller guarantees the CPU features.
    unsafe { K::kernel(ak, bk, kp, rows.min(K::MR), tile) };
    for r in 0..rows.min(K::MR) {
        let row = (r0 + r) * ldc + j0;
        for (j, &t) in tile[r * NR..r * NR + nr].iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                let o = cp.get().add(row + j);
                *o = if first { t } else { *o + t };
            }
        }
    }
}

/// The blocking used where the tuner chose none: row blocks of four tiles, or, for few rows
/// against many column panels (a decode step, the LM head's logits) on the pool, `a` packed
/// once and runs of column panels to the tasks.
pub(super) fn rule<K: Micro>(m: usize, n: usize, par: Par) -> Blocking {
    let panels = n.div_ceil(NR);
    if par == Par::Pool && panels > 1 && (m <= mc::<K>() || panels >= 4 * m.div_ceil(mc::<K>())) {
        Blocking::Columns
    } else {
        Blocking::Rows(mc::<K>())
    }
}

/// The blockings the tuner times: row blocks of 2, 4 (the rule's) and 8 tiles, column runs,
/// and k blocks outermost with tasks of 4 tiles.
pub(super) const fn candidates<K: Micro>() -> [Blocking; 5] {
    [
        Blocking::Rows(2 * K::MR),
        Blocking::Rows(mc::<K>()),
        Blocking::Rows(8 * K::MR),
        Blocking::Columns,
        Blocking::KOuter(mc::<K>()),
    ]
}

/// # Safety
/// The CPU runs `K`; `c`, `a` and `b` as in [`super::matmul_bf16_ptr`].
///
/// `b`'s panels for every k block first (kept ones when `b` is pinned, else packed once for the
/// product in one parallel loop), then one fork-join over the output (`blocking`, else
/// [`rule`]'s): row blocks (four tiles unless the tuner chose others), each task packing its
/// rows of `a` per k block and running every column panel, its block of `c` staying in cache
/// through the k blocks; or, for few rows against many columns (a decode step, the LM head's
/// logits), `a` packed once and runs of column panels to the tasks, so `b` streams once.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul<K: Micro>(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
    par: Par,
    blocking: Option<Blocking>,
) {
    let kpairs = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    let pool = par == Par::Pool;
    let (columns, mc) = match blocking.unwrap_or_else(|| rule::<K>(m, n, par)) {
        Blocking::Columns => (pool && panels > 1, mc::<K>()),
        Blocking::Rows(r) => (false, r.next_multiple_of(K::MR).max(K::MR)),
        Blocking::KOuter(r) => {
            let mc = r.next_multiple_of(K::MR).max(K::MR);
            // Kept panels (pinned weights: a prefill) serve better than packing `b` again.
            // SAFETY: the caller guarantees the CPU features.
            if unsafe { kept_b_panels::<K>(b, k, n, pool) }.is_none() {
                // SAFETY: the caller's contract.
                unsafe { k_outer::<K>(c, ldc, a, b, (m, n, k), acc, pool, mc) };
                return;
            }
            (false, mc)
        }
    };
    let stride = panels * K::BW * NR * K::KP;
    let blocks = kpairs.div_ceil(K::KP).max(1);
    let kp_of = |blk: usize| kpairs.saturating_sub(blk * K::KP).min(K::KP);
    // Words of one tile's rows of `a` for one k block.
    let a_tile = K::MR * K::AW * K::KP;
    // SAFETY: the caller guarantees the CPU features.
    let (cached, owned) = unsafe { b_panels::<K>(b, k, n, pool) };
    let allb: &[u32] = cached.as_deref().map_or(&owned[..], |v| &v[..]);
    let cp = SendPtr(c);
    // Tile (r0.., jb) of k block `blk`: the first block assigns (unless accumulating).
    let run_tile = |ak: &[u32], blk: usize, r0, rows, jb, tile: &mut _| {
        let bk = &allb[blk * stride + jb * K::BW * NR * K::KP..];
        let first = blk == 0 && !acc;
        // SAFETY: the caller guarantees the CPU features; each task's tiles lie inside c, in
        // rows and columns no other task writes.
        unsafe { write_tile::<K>(cp, ldc, n, ak, bk, kp_of(blk), first, r0, rows, jb, tile) }
    };
    if columns {
        let tiles = m.div_ceil(K::MR);
        let a_blk = tiles * a_tile;
        let mut apk = a_panels(blocks * a_blk);
        let apk_all = blocks * a_blk;
        // SAFETY (the closure): the caller guarantees the CPU features.
        let pack_a = |(x, dst): (usize, &mut [u32])| unsafe {
            let (blk, ib) = (x / tiles, x % tiles);
            let live = (m - ib * K::MR).min(K::MR);
            K::pack_a(dst, a, ib * K::MR, live, blk * K::KP, kp_of(blk), k)
        };
        if m > mc {
            parallel::for_each_chunk_mut(&mut apk[..apk_all], a_tile, |x, dst| pack_a((x, dst)));
        } else {
            apk[..apk_all].chunks_mut(a_tile).enumerate().for_each(pack_a);
        }
        let per = panels.div_ceil(rayon::current_num_threads() * 4).max(1);
        parallel::for_each(panels.div_ceil(per), |task| {
            let (j, mut tile) = (task * per, [0.0f32; MAX_MR * NR]);
            let run = j..(j + per).min(panels);
            if m <= mc {
                // A decode step's rows: the task's panels of one k block lie side by side, so
                // `b` streams in long runs; its few rows of `c` stay in cache anyway.
                for blk in 0..blocks {
                    for jb in run.clone() {
                        for ib in 0..tiles {
                            let ak = &apk[blk * a_blk + ib * a_tile..];
                            run_tile(ak, blk, ib * K::MR, m - ib * K::MR, jb, &mut tile);
                        }
                    }
                }
                return;
            }
            // Many rows (the LM head's logits): each tile of `c` through every k block while
            // it is in cache.
            for jb in run {
                for ib in 0..tiles {
                    for blk in 0..blocks {
                        let ak = &apk[blk * a_blk + ib * a_tile..];
                        run_tile(ak, blk, ib * K::MR, m - ib * K::MR, jb, &mut tile);
                    }
                }
            }
        });
        put_a_panels(apk);
    } else {
        let block = |i0: usize| {
            let mc = (m - i0).min(mc);
            let mut apk = a_panels(mc.div_ceil(K::MR) * a_tile);
            let mut tile = [0.0f32; MAX_MR * NR];
            for blk in 0..blocks {
                for (ib, ir) in (0..mc).step_by(K::MR).enumerate() {
                    let (dst, live) = (&mut apk[ib * a_tile..], (mc - ir).min(K::MR));
                    // SAFETY: the caller guarantees the CPU features.
                    unsafe { K::pack_a(dst, a, i0 + ir, live, blk * K::KP, kp_of(blk), k) };
                }
                for jb in 0..panels {
                    for (ib, ir) in (0..mc).step_by(K::MR).enumerate() {
                        run_tile(&apk[ib * a_tile..], blk, i0 + ir, mc - ir, jb, &mut tile);
                    }
                }
            }
            put_a_panels(apk);
        };
        if pool {
            parallel::for_each(m.div_ceil(mc), |i| block(i * mc));
        } else {
            (0..m).step_by(mc).for_each(block);
        }
    }
    put_panels(owned);
}

/// [`Blocking::KOuter`]: for each block of [`NC`] column panels and each k block in order,
/// `b`'s panels of the block packed into this thread's buffer, then tasks of `mc` rows (on the
/// pool when `pool`) each running the block's panels over their rows. Where `b` has more
/// than one block of panels, `a` is packed once for the product (up to [`WHOLE_A_BYTES`]),
/// else by each task for each k block. Every tile of `c` still adds its k blocks in order.
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
unsafe fn k_outer<K: Micro>(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
    acc: bool,
    pool: bool,
    mc: usize,
) {
    let (kpairs, panels, tiles) = (k.div_ceil(2), n.div_ceil(NR), m.div_ceil(K::MR));
    let blocks = kpairs.div_ceil(K::KP).max(1);
    let kp_of = |blk: usize| kpairs.saturating_sub(blk * K::KP).min(K::KP);
    // Words of one packed panel (one k block), and of one tile's rows of `a`.
    let (pw, a_tile) = (K::BW * NR * K::KP, K::MR * K::AW * K::KP);
    // SAFETY (the closure): the caller guarantees the CPU features.
    let pack_a = |dst: &mut [u32], blk: usize, ib: usize| unsafe {
        K::pack_a(dst, a, ib * K::MR, (m - ib * K::MR).min(K::MR), blk * K::KP, kp_of(blk), k)
    };
    // `a` packed once, `[blocks][tiles][a_tile]`, where the tasks would pack it repeatedly.
    let whole = panels > NC && blocks * tiles * a_tile * 4 <= WHOLE_A_BYTES;
    // This thread's `a` buffer (the packing writes every word the tasks read).
    let mut whole_a = if whole { a_panels(blocks * tiles * a_tile) } else { no_panels() };
    if whole {
        let all = &mut whole_a[..blocks * tiles * a_tile];
        let pack = |x: usize, dst: &mut [u32]| pack_a(dst, x / tiles, x % tiles);
        if pool {
            parallel::for_each_chunk_mut(all, a_tile, pack);
        } else {
            all.chunks_mut(a_tile).enumerate().for_each(|(x, dst)| pack(x, dst));
        }
    }
    let bt = Mat { data: b.data, rs: b.cs, cs: b.rs };
    let cp = SendPtr(c);
    let mut buf = PANELS.take().unwrap_or_else(no_panels);
    if buf.len() < NC.min(panels) * pw {
        buf.resize(NC.min(panels) * pw, 0);
    }
    for j0 in (0..panels).step_by(NC) {
        let jn = (panels - j0).min(NC);
        for blk in 0..blocks {
            let (p0, kp) = (blk * K::KP, kp_of(blk));
            // SAFETY (the closure): the caller guarantees the CPU features.
            let pack = |x: usize, dst: &mut [u32]| unsafe {
                pack_panel::<K>(dst, bt, n, j0 + x, p0, kp, k)
            };
            let bk = &mut buf[..jn * pw];
            if pool {
                parallel::for_each_chunk_mut(bk, pw, pack);
            } else {
                bk.chunks_mut(pw).enumerate().for_each(|(x, dst)| pack(x, dst));
            }
            let bk = &buf[..jn * pw];
            let first = blk == 0 && !acc;
            let task = |i: usize| {
                let (i0, rows) = (i * mc, (m - i * mc).min(mc));
                let t0 = i0 / K::MR;
                let mut own = no_panels();
                let ak: &[u32] = if whole {
                    &whole_a[(blk * tiles + t0) * a_tile..]
                } else {
                    own = a_panels(rows.div_ceil(K::MR) * a_tile);
                    for (ib, dst) in own.chunks_mut(a_tile).take(rows.div_ceil(K::MR)).enumerate() {
                        pack_a(dst, blk, t0 + ib);
                    }
                    &own
                };
                let mut tile = [0.0f32; MAX_MR * NR];
                for x in 0..jn {
                    for (ib, ir) in (0..rows).step_by(K::MR).enumerate() {
                        let (at, bx) = (&ak[ib * a_tile..], &bk[x * pw..]);
                        // SAFETY: the caller guarantees the CPU features; task i's tiles lie
                        // in its rows of c, which no other task writes.
                        unsafe {
                            write_tile::<K>(
                                cp,
                                ldc,
                                n,
                                at,
                                bx,
                                kp,
                                first,
                                i0 + ir,
                                rows - ir,
                                j0 + x,
                                &mut tile,
                            )
                        };
                    }
                }
                if !whole {
                    put_a_panels(own);
                }
            };
            if pool {
                parallel::for_each(m.div_ceil(mc), task);
            } else {
                (0..m.div_ceil(mc)).for_each(task);
            }
        }
    }
    put_panels(buf);
    if whole {
        put_a_panels(whole_a);
    }
}

/// The largest `a` [`k_outer`] packs whole for a product.
const WHOLE_A_BYTES: usize = 32 << 20;

/// `b`'s packed panels for a product (`[k, n]`, `NR`-column panels of `KP` pairs per k
/// block, every block's): kept ones when `b` lies in pinned weights (packed at the first call;
/// only products on the pool are looked up: those on the calling thread are attention's
/// per-head products, whose operands are activations, never weights); else `None` and this
/// thread's buffer, packed for this product in one loop over every block's panels and given
/// back with [`put_panels`]. The buffer is grown only (a shorter product after the LM head's
/// neither frees nor re-zeroes it; a kernel reads only what the packing wrote).
///
/// # Safety
/// The CPU runs `K`.
pub(super) unsafe fn b_panels<K: Micro>(
    b: Mat,
    k: usize,
    n: usize,
    pool: bool,
) -> (Option<std::sync::Arc<Panels>>, Panels) {
    // SAFETY: the caller guarantees the CPU features.
    let cached = unsafe { kept_b_panels::<K>(b, k, n, pool) };
    if cached.is_some() {
        return (cached, no_panels());
    }
    let (kpairs, panels) = (k.div_ceil(2), n.div_ceil(NR));
    let all = kpairs.div_ceil(K::KP).max(1) * panels * K::BW * NR * K::KP;
    let mut buf = PANELS.take().unwrap_or_else(no_panels);
    if buf.len() < all {
        buf.resize(all, 0);
    }
    let bt = Mat { data: b.data, rs: b.cs, cs: b.rs };
    // SAFETY (the closure): the caller guarantees the CPU features.
    let pack = |(x, dst): (usize, &mut [u32])| unsafe {
        let (blk, jb) = (x / panels, x % panels);
        pack_panel::<K>(
            dst,
            bt,
            n,
            jb,
            blk * K::KP,
            kpairs.saturating_sub(blk * K::KP).min(K::KP),
            k,
        )
    };
    if pool {
        parallel::for_each_chunk_mut(&mut buf[..all], K::BW * NR * K::KP, |x, dst| pack((x, dst)));
    } else {
        buf[..all].chunks_mut(K::BW * NR * K::KP).enumerate().for_each(pack);
    }
    (None, buf)
}

/// [`b_panels`]' kept panels alone: every k block's, when `b` lies in pinned weights and the
/// product runs on the pool (packed at the first call); else None.
///
/// # Safety
/// The CPU runs `K`.
pub(super) unsafe fn kept_b_panels<K: Micro>(
    b: Mat,
    k: usize,
    n: usize,
    pool: bool,
) -> Option<std::sync::Arc<Panels>> {
    let (kpairs, panels) = (k.div_ceil(2), n.div_ceil(NR));
    let stride = panels * K::BW * NR * K::KP;
    // b packs as the rows of its transpose.
    let bt = Mat { data: b.data, rs: b.cs, cs: b.rs };
    if !pool || !K::KEEP {
        return None;
    }
    pinned_panels(b, k, n, K::B_PACKING, || {
        let mut all = no_panels();
        all.resize(kpairs.div_ceil(K::KP).max(1) * stride, 0);
        // SAFETY (the closure): the caller guarantees the CPU features.
        let pack = |(x, dst): (usize, &mut [u32])| unsafe {
            let (blk, jb) = (x / panels, x % panels);
            pack_panel::<K>(
                dst,
                bt,
                n,
                jb,
                blk * K::KP,
                kpairs.saturating_sub(blk * K::KP).min(K::KP),
                k,
            )
        };
        parallel::for_each_chunk_mut(&mut all, K::BW * NR * K::KP, |x, dst| pack((x, dst)));
        all
    })
}

/// Gives [`b_panels`]'s buffer back to this thread (an empty one, from kept panels, is not
/// kept).
pub(super) fn put_panels(buf: Panels) {
    // Kept for the next product up to the size of gpt1's largest weight in bf16 (the tied
    // embedding, 62 MB); a larger one (a long batch's weight gradient, whose `b` is the
    // activations) is freed.
    if !buf.is_empty() && buf.len() * 4 <= KEEP_B_BYTES {
        PANELS.set(Some(buf));
    }
}

/// The largest `b` packing a thread keeps between products.
pub(super) const KEEP_B_BYTES: usize = 64 << 20;

/// Column panel `jb` of pairs `p0..p0 + kp` of `bt` (`b`'s transpose, `n` rows) into `dst`
/// `[KP][NR · BW]`; the pairs after `kp` up to the next multiple of 16 are zero (AMX's tiles
/// read 16 pairs at a time).
///
/// # Safety
/// The CPU runs `K`.
unsafe fn pack_panel<K: Micro>(
    dst: &mut [u32],
    bt: Mat,
    n: usize,
    jb: usize,
    p0: usize,
    kp: usize,
    k: usize,
) {
    // SAFETY: the caller guarantees the CPU features.
    unsafe { K::pack_b(dst, bt, jb * NR, (n - jb * NR).min(NR), p0, kp, k) };
    let w = K::BW * NR;
    dst[kp * w..kp.next_multiple_of(16).min(K::KP) * w].fill(0);
}

/// # Safety
/// The CPU runs `K`.
///
/// The micro-kernel's own rate on one thread, FLOP/s: `reps` runs over one `a` and one `b`
/// panel of `KP` pairs that stay in L1 (no packing, no memory traffic, no edges).
pub(super) unsafe fn kernel_rate<K: Micro>(reps: usize) -> f64 {
    // Finite values in either packing of `a` (bf16 pairs or widened fp32).
    let (ap, bp) =
        (vec![0x3F80_3F80u32; K::MR * K::AW * K::KP], vec![0x3C00_3C00u32; K::BW * NR * K::KP]);
    let mut tile = [0.0f32; MAX_MR * NR];
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        // SAFETY: the caller guarantees the CPU features; the tile holds MR rows of NR.
        unsafe { K::kernel_into(&ap, &bp, K::KP, tile.as_mut_ptr(), NR, false) };
    }
    std::hint::black_box(&tile);
    (2 * K::MR * NR * 2 * K::KP * reps) as f64 / t0.elapsed().as_secs_f64()
}

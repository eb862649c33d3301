//! Attention of a few rows over their sequences' earlier positions (no dropout): a decode step
//! against the key/value cache, evaluation's last block. Two versions that give the same bits:
//!
//! - [`RowsVersion::Portable`]: a position at a time, each score one [`fastmath::dot`] (the
//!   reference, and what runs without AVX-512 or where the head size is not a multiple of 16).
//! - [`RowsVersion::Avx512`]: the scores of 16 positions at once. Each position's 16 partial sums
//!   are formed as `fastmath::dot` forms them, then a 16 × 16 transpose puts partial sum `i` of
//!   every position in one register, so the 16 dot products finish with 15 vector adds in
//!   `fastmath::dot`'s order instead of 16 horizontal reductions. The outputs' loop is shared
//!   with the portable version (compiled there for AVX-512, the same sums).
//!
//! Both compute every output from the same terms in the same order, for any grouping of the
//! heads and any thread count (`attention_at_rows_sums_as_the_plain_definition_for_any_threads`).
//! Where the cache's keys and values lie is a [`KvLayout`]: decoding's own cache is head-major
//! ([`KvLayout::heads`], written by [`place`]), so a task streams each head's keys, then its
//! values, from one contiguous stretch. `gpt1 bench kernels` times both versions on both
//! layouts ("decode attention").

use super::Dims;
use crate::kernels::{fastmath, parallel};

/// Which implementation runs [`forward_rows_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowsVersion {
    Portable,
    Avx512,
}

impl RowsVersion {
    /// The fastest this CPU runs for heads of `dh`.
    pub fn best(dh: usize) -> RowsVersion {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && avx512::fits(dh) {
            return RowsVersion::Avx512;
        }
        let _ = dh;
        RowsVersion::Portable
    }
}

/// Where attention at a few rows finds its cache's keys and values, in floats: head `h`'s keys
/// at position `j` of sequence `b` start at `b·seq + h·head + j·pos`, its values `value`
/// further (`dh` floats each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub seq: usize,
    pub head: usize,
    pub pos: usize,
    pub value: usize,
}

impl KvLayout {
    /// Positions as rows of `ld` floats, each its keys (heads side by side), then `d` further
    /// its values: the forward pass's `[B, T, 3d]` projection read from its first key (`ld` =
    /// 3d), or a `[B, T, 2d]` cache (`ld` = 2d).
    pub fn rows(s: Dims, ld: usize) -> KvLayout {
        assert!(ld >= 2 * s.d(), "a position's keys and values must not overlap");
        KvLayout { seq: s.t * ld, head: s.dh, pos: ld, value: s.d() }
    }

    /// Head-major, `[B, H, 2, T, dh]`: each head's keys for every position, then its values.
    /// A task (one row's group of heads) reads one contiguous stretch per head and part, where
    /// [`KvLayout::rows`] has it read `dh`·4 bytes out of every row.
    pub fn heads(s: Dims) -> KvLayout {
        KvLayout { seq: 2 * s.h * s.t * s.dh, head: 2 * s.t * s.dh, pos: s.dh, value: s.t * s.dh }
    }

    /// The floats a cache of this layout spans for `s`: one past the last value.
    pub fn span(&self, s: Dims) -> usize {
        if s.b == 0 || s.t == 0 || s.h == 0 {
            return 0;
        }
        (s.b - 1) * self.seq + (s.h - 1) * self.head + (s.t - 1) * self.pos + self.value + s.dh
    }
}

/// `y[rows.len(), d]`: attention outputs at the flat positions `rows` of `[B, T]` only (no
/// dropout), each row attending over its own sequence's positions up to itself.
///
/// `q` `[rows.len(), 3d]`: the rows' own q/k/v projection (its queries are read). `kv`: the
/// cache, laid out as `layout` says: decoding's ([`KvLayout::heads`]) or the
/// forward pass's `[B, T, 3d]` projection from its first key on (evaluation's last block).
pub fn forward_rows(
    y: &mut [f32],
    q: &[f32],
    kv: &[f32],
    layout: KvLayout,
    s: Dims,
    rows: &[usize],
) {
    forward_rows_with(RowsVersion::best(s.dh), y, q, kv, layout, s, rows);
}

/// Writes the keys and values of `rows` (flat positions of `[B, T]`) from their own q/k/v
/// projection `fresh` (`[rows.len(), 3d]`) into the cache `kv` laid out as `layout`.
pub fn place(kv: &mut [f32], layout: KvLayout, fresh: &[f32], s: Dims, rows: &[usize]) {
    let (d, dh) = (s.d(), s.dh);
    assert!(kv.len() >= layout.span(s) && fresh.len() >= rows.len() * 3 * d);
    assert!(rows.iter().all(|&r| r < s.b * s.t), "rows must lie in [B, T]");
    for (i, &r) in rows.iter().enumerate() {
        let (bi, j) = (r / s.t, r % s.t);
        for h in 0..s.h {
            let at = bi * layout.seq + h * layout.head + j * layout.pos;
            for part in 0..2 {
                let src = &fresh[i * 3 * d + (1 + part) * d + h * dh..][..dh];
                kv[at + part * layout.value..][..dh].copy_from_slice(src);
            }
        }
    }
}

/// One task's work: row `r`'s heads `c0 / dh ..` (`hs` of them, `gw = hs · dh` outputs).
struct Task<'a> {
    /// The row's queries for these heads onwards.
    q: &'a [f32],
    kv: &'a [f32],
    layout: KvLayout,
    /// Offset of position 0's keys for the first of these heads in `kv`.
    k0: usize,
    /// Positions attended to (the row's own included).
    n: usize,
    hs: usize,
    dh: usize,
    scale: f32,
}

impl Task<'_> {
    /// Heads `hh`'s keys (`part` 0) or values (`part` 1) at position `j`.
    fn at(&self, j: usize, part: usize, hh: usize) -> &[f32] {
        let l = self.layout;
        &self.kv[self.k0 + hh * l.head + j * l.pos + part * l.value..][..self.dh]
    }

    fn query(&self, hh: usize) -> &[f32] {
        &self.q[hh * self.dh..][..self.dh]
    }

    /// Head `hh`'s score at position `j`: one [`fastmath::dot`], scaled.
    fn score(&self, hh: usize, j: usize) -> f32 {
        fastmath::dot(self.query(hh), self.at(j, 0, hh)) * self.scale
    }

    /// `p[hh, j]` → `e^(p − max)` in place; the reciprocal of each head's sum.
    fn softmax(&self, p: &mut [f32]) -> Vec<f32> {
        p.chunks_exact_mut(self.n)
            .map(|row| {
                let mx = fastmath::max(row);
                1.0 / fastmath::exp_shifted(row, mx)
            })
            .collect()
    }
}

/// [`forward_rows`] by a given version (`Avx512` where the CPU or the head size does not allow
/// it runs `Portable`).
///
/// A task is one row's group of heads, so a decode step's single row still feeds every
/// thread (before, one task did all 12 heads at gpt1's size while the others waited, ~1 ms per
/// token).
pub fn forward_rows_with(
    version: RowsVersion,
    y: &mut [f32],
    q: &[f32],
    kv: &[f32],
    layout: KvLayout,
    s: Dims,
    rows: &[usize],
) {
    let version = if version == RowsVersion::best(s.dh) { version } else { RowsVersion::Portable };
    let (t, dh, d, h) = (s.t, s.dh, s.d(), s.h);
    let d3 = 3 * d;
    let scale = 1.0 / (dh as f32).sqrt();
    let bt = s.b * t;
    assert!(y.len() >= rows.len() * d && q.len() >= rows.len() * d3);
    assert!(kv.len() >= layout.span(s), "the cache is smaller than its layout");
    assert!(rows.iter().all(|&r| r < bt), "rows must lie in [B, T]");
    // Head groups per row: enough tasks for twice the threads, a divisor of the head count.
    let want = (2 * rayon::current_num_threads()).div_ceil(rows.len().max(1)).clamp(1, h);
    let groups = (want..=h).find(|g| h % g == 0).unwrap_or(h);
    let (hs, gw) = (h / groups, h / groups * dh);
    let task_of = |task: usize| {
        let (i, c0) = (task / groups, (task % groups) * gw);
        let (bi, n) = (rows[i] / t, rows[i] % t + 1);
        let k0 = bi * layout.seq + c0 / dh * layout.head;
        Task { q: &q[i * d3 + c0..], kv, layout, k0, n, hs, dh, scale }
    };
    match version {
        RowsVersion::Portable => {
            parallel::for_each_chunk_mut(&mut y[..rows.len() * d], gw, |task, out| {
                portable(&task_of(task), out)
            });
        }
        #[cfg(target_arch = "x86_64")]
        RowsVersion::Avx512 => {
            parallel::for_each_chunk_mut(&mut y[..rows.len() * d], gw, |task, out| {
                // SAFETY: `best` saw AVX-512F and a fitting head size.
                unsafe { avx512::task(&task_of(task), out) }
            });
        }
        #[cfg(not(target_arch = "x86_64"))]
        RowsVersion::Avx512 => unreachable!("best() is Portable off x86_64"),
    }
}

/// A position at a time: each score one dot product of the head's query and key.
fn portable(w: &Task, out: &mut [f32]) {
    // p[hh, j]: head hh's scores over positions 0..n, then its unnormalised probabilities.
    let mut p = vec![0.0f32; w.hs * w.n];
    for j in 0..w.n {
        for hh in 0..w.hs {
            p[hh * w.n + j] = w.score(hh, j);
        }
    }
    outputs(w, &mut p, out);
}

/// The outputs of `w`'s heads from their scores `p` (`[hs, n]`, made probabilities here),
/// summed over the positions in order. Inlined into each version, so the AVX-512 one sums 16
/// lanes at a time (the same sums).
#[inline(always)]
fn outputs(w: &Task, p: &mut [f32], out: &mut [f32]) {
    let n = w.n;
    let inv = w.softmax(p);
    out.fill(0.0);
    for j in 0..n {
        for (hh, o) in out.chunks_exact_mut(w.dh).enumerate() {
            let wt = p[hh * n + j] * inv[hh];
            o.iter_mut().zip(w.at(j, 1, hh)).for_each(|(o, v)| *o += wt * v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Task;
    use std::arch::x86_64::*;

    /// Head sizes it takes: a multiple of 16, at most 128 (the heads of GPT-1 and its
    /// relatives; larger ones run the portable version).
    pub fn fits(dh: usize) -> bool {
        dh.is_multiple_of(16) && (16..=128).contains(&dh)
    }

    /// The transpose of the 16 × 16 matrix whose rows are `r`: `out[i]` lane `j` is `r[j]` lane
    /// `i` (unpack, then in-lane shuffles, then two rounds of 128-bit lane shuffles).
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        let mut t = [_mm512_setzero_ps(); 16];
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            let (a, b, c, e) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            u[4 * i] = _mm512_shuffle_ps::<0x44>(a, c);
            u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
            u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(b, e);
            u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(b, e);
        }
        // u[4g + c] holds rows 4g..4g+4, columns c, c+4, c+8, c+12 (one per 128-bit lane).
        for g in [0, 8] {
            for c in 0..4 {
                t[g + c] = _mm512_shuffle_f32x4::<0x88>(u[g + c], u[g + 4 + c]);
                t[g + 4 + c] = _mm512_shuffle_f32x4::<0xDD>(u[g + c], u[g + 4 + c]);
            }
        }
        // t[g + c]: rows g..g+8, columns c and c+8; t[g + 4 + c]: columns c+4 and c+12.
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..8 {
            out[c] = _mm512_shuffle_f32x4::<0x88>(t[c], t[8 + c]);
            out[c + 8] = _mm512_shuffle_f32x4::<0xDD>(t[c], t[8 + c]);
        }
        out
    }

    /// Scores of positions `j0..j0 + 16` for head `hh`, times the scale, into `dst` (16).
    #[target_feature(enable = "avx512f")]
    fn scores16(w: &Task, hh: usize, j0: usize, dst: &mut [f32]) {
        let q = w.query(hh);
        let mut part = [_mm512_setzero_ps(); 16];
        for (jj, acc) in part.iter_mut().enumerate() {
            let k = w.at(j0 + jj, 0, hh);
            // fastmath::dot's 16 partial sums: lane i adds q[c·16 + i]·k[c·16 + i] over c in order.
            for (qc, kc) in q.chunks_exact(16).zip(k.chunks_exact(16)) {
                // SAFETY: each chunk holds 16 f32.
                let prod = unsafe {
                    _mm512_mul_ps(_mm512_loadu_ps(qc.as_ptr()), _mm512_loadu_ps(kc.as_ptr()))
                };
                *acc = _mm512_add_ps(*acc, prod);
            }
        }
        let cols = transpose(part);
        // fastmath::dot starts from the (empty) remainder's sum, then adds partial sums 0..16.
        let mut s = _mm512_set1_ps(std::iter::empty::<f32>().sum());
        for c in cols {
            s = _mm512_add_ps(s, c);
        }
        let s = _mm512_mul_ps(s, _mm512_set1_ps(w.scale));
        // SAFETY: dst holds 16 f32.
        unsafe { _mm512_storeu_ps(dst[..16].as_mut_ptr(), s) };
    }

    /// [`super::portable`]'s results, bitwise: each head's scores 16 positions at a time (the
    /// last few one at a time), then the shared [`super::outputs`].
    ///
    /// # Safety
    /// The CPU runs AVX-512F and `fits(w.dh)`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn task(w: &Task, out: &mut [f32]) {
        let mut p = vec![0.0f32; w.hs * w.n];
        let full = w.n / 16 * 16;
        for j0 in (0..full).step_by(16) {
            for (hh, ph) in p.chunks_exact_mut(w.n).enumerate() {
                scores16(w, hh, j0, &mut ph[j0..j0 + 16]);
            }
        }
        for (hh, ph) in p.chunks_exact_mut(w.n).enumerate() {
            for (j, pj) in ph.iter_mut().enumerate().skip(full) {
                *pj = w.score(hh, j);
            }
        }
        super::outputs(w, &mut p, out);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_transpose_transposes() {
            if !std::arch::is_x86_feature_detected!("avx512f") {
                eprintln!("skipped: this CPU has no AVX-512F");
                return;
            }
            let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
            // SAFETY: AVX-512F checked above; each row holds 16 f32.
            let got = unsafe {
                let rows = std::array::from_fn(|r| _mm512_loadu_ps(m[16 * r..].as_ptr()));
                transpose(rows)
            };
            for (i, col) in got.iter().enumerate() {
                let mut lanes = [0.0f32; 16];
                // SAFETY: 16 f32.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *col) };
                let want: Vec<f32> = (0..16).map(|j| m[16 * j + i]).collect();
                assert_eq!(lanes.to_vec(), want, "column {i}");
            }
        }
    }
}

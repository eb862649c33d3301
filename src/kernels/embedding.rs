//! Token + learned position embedding.

use super::parallel::SendPtr;
use rayon::prelude::*;

/// `out[b, t] = wte[ids[b, t]] + wpe[t]` for rows of length `t_len`. Ids are checked by the
/// caller (the data layer rejects ids >= vocab size).
pub fn forward(out: &mut [f32], ids: &[u32], wte: &[f32], wpe: &[f32], t_len: usize, d: usize) {
    out.par_chunks_mut(d).zip(ids.par_iter()).enumerate().for_each(|(r, (o, &id))| {
        let e = &wte[id as usize * d..(id as usize + 1) * d];
        let p = &wpe[(r % t_len) * d..(r % t_len + 1) * d];
        for i in 0..d {
            o[i] = e[i] + p[i];
        }
    });
}

/// `out[i] = wte[ids[i]] + wpe[rows[i] % t_len]`: the embeddings of some flat positions of
/// `[B, t_len]` only.
pub fn forward_rows(
    out: &mut [f32],
    ids: &[u32],
    rows: &[usize],
    wte: &[f32],
    wpe: &[f32],
    t_len: usize,
    d: usize,
) {
    for (i, (&id, &r)) in ids.iter().zip(rows).enumerate() {
        let (e, p) = (&wte[id as usize * d..][..d], &wpe[(r % t_len) * d..][..d]);
        out[i * d..(i + 1) * d].iter_mut().zip(e.iter().zip(p)).for_each(|(o, (e, p))| *o = e + p);
    }
}

/// `dwte[ids[r]] += dout[r]`, `dwpe[r % t_len] += dout[r]`, rows in order per column.
pub fn backward(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    ids: &[u32],
    t_len: usize,
    d: usize,
) {
    // Split the columns, walk the rows in order: deterministic scatter-add.
    const COLS: usize = 64;
    let v = dwte.len() / d;
    let p = dwpe.len() / d;
    let col_chunks = d.div_ceil(COLS);
    // Views per column chunk would need strided mutable slices; go through raw pointers with
    // disjoint columns per task instead.
    // The raw writes below rely on these (the callers check ids against the vocabulary).
    assert!(ids.iter().all(|&id| (id as usize) < v), "embedding id out of range {v}");
    assert!(t_len <= p && dout.len() >= ids.len() * d, "embedding shapes");
    let te = SendPtr(dwte.as_mut_ptr());
    let pe = SendPtr(dwpe.as_mut_ptr());
    (0..col_chunks).into_par_iter().for_each(|ci| {
        let (c0, c1) = (ci * COLS, ((ci + 1) * COLS).min(d));
        for (r, &id) in ids.iter().enumerate() {
            let id = id as usize;
            let t = r % t_len;
            for c in c0..c1 {
                let g = dout[r * d + c];
                // SAFETY: id < v and t < p (checked by the data layer and the shape), c < d, and
                // each task owns columns c0..c1 exclusively.
                unsafe {
                    *te.get().add(id * d + c) += g;
                    *pe.get().add(t * d + c) += g;
                }
            }
        }
    });
}

/// `out[i] = table[ids[i]]`, `out` `[ids.len(), d]`: an embedding without positions (the
/// LSTM's, rows in whatever order the caller laid the ids out).
pub fn gather(out: &mut [f32], table: &[f32], ids: &[u32], d: usize) {
    out.par_chunks_mut(d).zip(ids.par_iter()).for_each(|(o, &id)| {
        o.copy_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
    });
}

/// `dtable[ids[i]] += dout[i]`, rows in order per column (the same sums for any thread count).
pub fn scatter_add(dtable: &mut [f32], dout: &[f32], ids: &[u32], d: usize) {
    const COLS: usize = 64;
    let v = dtable.len() / d;
    // The raw writes below rely on it (the callers check ids against the vocabulary).
    assert!(ids.iter().all(|&id| (id as usize) < v), "embedding id out of range {v}");
    let te = SendPtr(dtable.as_mut_ptr());
    (0..d.div_ceil(COLS)).into_par_iter().for_each(|ci| {
        let (c0, c1) = (ci * COLS, ((ci + 1) * COLS).min(d));
        for (r, &id) in ids.iter().enumerate() {
            let id = id as usize;
            for c in c0..c1 {
                // SAFETY: id < v (asserted above), c < d, and each task owns columns c0..c1.
                unsafe { *te.get().add(id * d + c) += dout[r * d + c] };
            }
        }
    });
}

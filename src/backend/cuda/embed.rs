//! The embeddings: token and position rows gathered, their gradients summed in a fixed order
//! (positions grouped by id on the host: no atomics), ids checked against the table first (the
//! kernels index with them unchecked).

use super::Cuda;
use super::device::{A, CMut, CRef, Slot, cfg};
use std::marker::PhantomData;

fn check_ids(ids: &[u32], rows_of: usize, what: &str) {
    assert!(ids.iter().all(|&i| (i as usize) < rows_of), "{what}: id out of range {rows_of}");
}

/// Positions grouped by id (ascending ids, positions in order): (ids, offsets, positions).
fn group_by_id(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_by_key(|&i| ids[i as usize]);
    let (mut uniq, mut offsets) = (Vec::new(), Vec::new());
    for (k, &i) in order.iter().enumerate() {
        if uniq.last() != Some(&ids[i as usize]) {
            uniq.push(ids[i as usize]);
            offsets.push(k as u32);
        }
    }
    offsets.push(order.len() as u32);
    (uniq, offsets, order)
}

impl Cuda {
    /// Token and position embeddings of every row (the trait\'s `encoder_forward`).
    pub(super) fn encode(
        &self,
        out: CMut<'_>,
        ids: &[u32],
        wte: CRef<'_>,
        wpe: CRef<'_>,
        t: usize,
        d: usize,
    ) {
        check_ids(ids, wte.len / d, "encoder_forward");
        let i = self.put(Slot::Idx0, ids);
        let rows = ids.len();
        self.launch_n(
            "encoder_forward",
            rows * d,
            &[
                A::P(out.ptr),
                A::P(i),
                A::P(wte.ptr),
                A::P(wpe.ptr),
                A::L(rows as i64),
                A::I(t as i32),
                A::I(d as i32),
            ],
        );
    }

    /// Token and position embeddings at some rows (the trait\'s `encoder_rows`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encode_rows(
        &self,
        out: CMut<'_>,
        ids: &[u32],
        rows: &[usize],
        wte: CRef<'_>,
        wpe: CRef<'_>,
        t: usize,
        d: usize,
    ) {
        check_ids(ids, wte.len / d, "encoder_rows");
        let n = ids.len().min(rows.len());
        let i = self.put(Slot::Idx0, &ids[..n]);
        let p = self.put_u32(Slot::Rows, rows[..n].iter().map(|&r| r as u32));
        self.launch_n(
            "encoder_rows",
            n * d,
            &[
                A::P(out.ptr),
                A::P(i),
                A::P(p),
                A::P(wte.ptr),
                A::P(wpe.ptr),
                A::I(n as i32),
                A::I(t as i32),
                A::I(d as i32),
            ],
        );
    }

    /// The embeddings' gradients (the trait\'s `encoder_backward`).
    pub(super) fn encode_backward(
        &self,
        dwte: CMut<'_>,
        dwpe: CMut<'_>,
        dout: CRef<'_>,
        ids: &[u32],
        t: usize,
        d: usize,
    ) {
        self.scatter_ids(CMut { ptr: dwte.ptr, len: dwte.len, _p: PhantomData }, dout, ids, d);
        self.launch_n(
            "positions_backward",
            t * d,
            &[
                A::P(dwpe.ptr),
                A::P(dout.ptr),
                A::L(ids.len() as i64),
                A::I(t as i32),
                A::I(d as i32),
            ],
        );
    }

    /// Rows of a table by id (the trait\'s `embedding_forward`).
    pub(super) fn gather_ids(&self, out: CMut<'_>, table: CRef<'_>, ids: &[u32], d: usize) {
        check_ids(ids, table.len / d, "embedding_forward");
        let i = self.put(Slot::Idx0, ids);
        self.launch_n(
            "gather",
            ids.len() * d,
            &[A::P(out.ptr), A::P(table.ptr), A::P(i), A::L(ids.len() as i64), A::I(d as i32)],
        );
    }

    /// A table's gradient: positions grouped by id on the host, one block per id (the trait\'s `embedding_backward`).
    pub(super) fn scatter_ids(&self, dtable: CMut<'_>, dout: CRef<'_>, ids: &[u32], d: usize) {
        check_ids(ids, dtable.len / d, "embedding_backward");
        if ids.is_empty() {
            return;
        }
        let (uniq, offsets, order) = group_by_id(ids);
        let u = self.put(Slot::Idx0, &uniq);
        let o = self.put(Slot::Idx1, &offsets);
        let p = self.put(Slot::Idx2, &order);
        self.launch(
            "scatter_add_sorted",
            cfg(uniq.len() as u32, 256),
            &[A::P(dtable.ptr), A::P(dout.ptr), A::P(u), A::P(o), A::P(p), A::I(d as i32)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_grouped_by_id_in_order() {
        let (u, o, p) = group_by_id(&[5, 2, 5, 0, 2, 5]);
        assert_eq!(u, vec![0, 2, 5]);
        assert_eq!(o, vec![0, 1, 3, 6]);
        assert_eq!(p, vec![3, 1, 4, 0, 2, 5]);
        let (u, o, p) = group_by_id(&[]);
        assert!(u.is_empty() && p.is_empty());
        assert_eq!(o, vec![0]);
    }
}

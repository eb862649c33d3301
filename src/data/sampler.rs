//! Which windows of the token data make each step's batch. A batch is a pure function of
//! (seed, step), so resuming needs only the step number.

use super::shard::TokenData;
use crate::error::{Error, Result};
use crate::kernels::rng::{Rng, derive};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum WindowOrder {
    /// Uniformly random contiguous windows (the paper's pre-training).
    Random,
    /// Windows (or rows of a 2-D array) in order: step i takes the next B of them.
    Sequential,
}

/// Windows of `t + 1` tokens (inputs and shifted targets) from a token array.
pub struct Sampler<'a> {
    data: &'a TokenData,
    t: usize,
    kind: WindowOrder,
}

impl<'a> Sampler<'a> {
    pub fn new(data: &'a TokenData, t: usize, kind: WindowOrder) -> Result<Self> {
        let s = Sampler { data, t, kind };
        match data.rows {
            Some((_, l)) if l < t + 1 => {
                return Err(Error::invalid(
                    &data.path,
                    format!(
                        "rows of {l} tokens are shorter than --seq {t} + 1; lower --seq to {}",
                        l.saturating_sub(1)
                    ),
                ));
            }
            Some((0, _)) => return Err(Error::invalid(&data.path, "the array has no rows")),
            None if data.len() < t + 1 => {
                return Err(Error::invalid(
                    &data.path,
                    format!("{} tokens are fewer than one window of --seq {t} + 1", data.len()),
                ));
            }
            _ => {}
        }
        Ok(s)
    }

    /// The number of distinct windows in sequential order.
    pub fn windows(&self) -> usize {
        match self.data.rows {
            Some((n, _)) => n,
            None => (self.data.len() - 1) / self.t,
        }
    }

    /// The starting token of sequential window `k`.
    fn window_start(&self, k: usize) -> usize {
        match self.data.rows {
            Some((_, l)) => k * l,
            None => k * self.t,
        }
    }

    /// Start offsets of the `b` windows of step `step`.
    pub fn starts(&self, seed: u64, step: u64, b: usize) -> Vec<usize> {
        let n = self.windows();
        match self.kind {
            WindowOrder::Sequential => {
                (0..b).map(|j| self.window_start((step as usize * b + j) % n)).collect()
            }
            WindowOrder::Random => {
                let mut rng = Rng::new(derive(seed, step));
                match self.data.rows {
                    Some((rows, _)) => {
                        (0..b).map(|_| self.window_start(rng.below(rows as u64) as usize)).collect()
                    }
                    None => {
                        let span = (self.data.len() - self.t) as u64;
                        (0..b).map(|_| rng.below(span) as usize).collect()
                    }
                }
            }
        }
    }

    /// Fills `ids` and `targets` (`[starts.len(), t]`) from windows at `starts`.
    pub fn fill(&self, starts: &[usize], ids: &mut [u32], targets: &mut [u32]) {
        let t = self.t;
        let mut w = vec![0u32; t + 1];
        for (j, &s) in starts.iter().enumerate() {
            self.data.read(s, &mut w);
            ids[j * t..(j + 1) * t].copy_from_slice(&w[..t]);
            targets[j * t..(j + 1) * t].copy_from_slice(&w[1..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shard::write_bin;

    #[test]
    fn sequential_and_random_windows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.bin");
        write_bin(&p, &(0..101).collect::<Vec<u32>>()).unwrap();
        let d = TokenData::open(&p).unwrap();
        let s = Sampler::new(&d, 10, WindowOrder::Sequential).unwrap();
        assert_eq!(s.windows(), 10);
        assert_eq!(s.starts(0, 0, 3), vec![0, 10, 20]);
        assert_eq!(s.starts(0, 3, 3), vec![90, 0, 10]);
        let (mut ids, mut tg) = (vec![0; 20], vec![0; 20]);
        s.fill(&[0, 90], &mut ids, &mut tg);
        assert_eq!(ids[10..], (90..100).collect::<Vec<u32>>()[..]);
        assert_eq!(tg[10..], (91..101).collect::<Vec<u32>>()[..]);
        let r = Sampler::new(&d, 10, WindowOrder::Random).unwrap();
        let a = r.starts(5, 7, 64);
        assert_eq!(a, r.starts(5, 7, 64));
        assert_ne!(a, r.starts(5, 8, 64));
        assert!(a.iter().all(|&x| x + 11 <= 101));
        assert!(Sampler::new(&d, 101, WindowOrder::Random).is_err());
    }
}

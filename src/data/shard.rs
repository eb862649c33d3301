//! Token arrays on disk, memory-mapped: llm.c's `.bin` shards and NumPy `.npy` arrays.
//!
//! `.bin`: a header of 256 little-endian int32 (`[0]` magic, `[1]` version, `[2]` token count),
//! then the tokens. Magic 20240520 / version 1 holds uint16 tokens (llm.c's GPT-2 layout);
//! magic 20240801 / version 7 holds uint32 tokens (llm.c's layout for large vocabularies).
//! `.npy`: a 1-D stream or a 2-D `[N, L]` array of N independent sequences, of any integer type.
//! The NumPy header is parsed here (a few lines) rather than through a crate so that errors can
//! name the exact problem and the data stays memory-mapped.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use memmap2::Mmap;
use std::path::{Path, PathBuf};

pub const MAGIC_U16: i32 = 20240520;
pub const VERSION_U16: i32 = 1;
pub const MAGIC_U32: i32 = 20240801;
pub const VERSION_U32: i32 = 7;
const HEADER_BYTES: usize = 256 * 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    U8,
    U16,
    I16,
    U32,
    I32,
    I64,
    U64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 => 4,
            Dtype::I64 | Dtype::U64 => 8,
        }
    }
}

/// A read-only token array.
pub struct TokenData {
    pub path: PathBuf,
    map: Mmap,
    start: usize,
    dtype: Dtype,
    len: usize,
    /// `Some((rows, row_len))` for a 2-D `.npy`.
    pub rows: Option<(usize, usize)>,
}

impl std::fmt::Debug for TokenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenData({}, {} tokens)", self.path.display(), self.len)
    }
}

impl TokenData {
    /// Opens a `.bin` or `.npy` file (by content: `.npy` starts with `\x93NUMPY`).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        if file.metadata().map_err(|e| Error::io(path, e))?.is_dir() {
            return Err(Error::invalid(
                path,
                "is a directory; give a token file (train.bin or val.bin of `gpt1 prepare`, or a .npy array)",
            ));
        }
        // SAFETY: the map is read-only; a file truncated underneath us is the caller's problem,
        // as for any memory-mapped reader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.starts_with(b"\x93NUMPY") { Self::npy(path, map) } else { Self::bin(path, map) }
    }

    fn bin(path: &Path, map: Mmap) -> Result<Self> {
        let bad = |m: String| Error::invalid(path, m);
        if map.len() < HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes is shorter than the 1024-byte header of a token shard; expected llm.c's .bin layout or a .npy array",
                map.len()
            )));
        }
        let word =
            |i: usize| i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let (magic, version, count) = (word(0), word(1), word(2));
        let dtype = match (magic, version) {
            (MAGIC_U16, VERSION_U16) => Dtype::U16,
            (MAGIC_U32, VERSION_U32) => Dtype::U32,
            (MAGIC_U16, _) | (MAGIC_U32, _) => {
                return Err(bad(format!("unsupported shard version {version} for magic {magic}")));
            }
            _ => {
                return Err(bad(format!(
                    "bad magic number {magic} (expected {MAGIC_U16} or {MAGIC_U32}): not a token shard; make one with `gpt1 prepare`"
                )));
            }
        };
        if count < 0 {
            return Err(bad(format!("negative token count {count} in the header")));
        }
        let len = count as usize;
        let need = HEADER_BYTES + len * dtype.size();
        if map.len() != need {
            let what = if map.len() < need { "truncated" } else { "trailing bytes" };
            return Err(bad(format!(
                "{what}: the header promises {len} tokens ({need} bytes) but the file has {} bytes",
                map.len()
            )));
        }
        Ok(TokenData { path: path.into(), map, start: HEADER_BYTES, dtype, len, rows: None })
    }

    fn npy(path: &Path, map: Mmap) -> Result<Self> {
        let bad = |m: String| {
            Error::invalid(
                path,
                format!("{m} (a .npy token array must be a C-order 1-D or 2-D integer array)"),
            )
        };
        if map.len() < 10 {
            return Err(bad("truncated .npy header".into()));
        }
        let major = map[6];
        let (hlen, hstart) = if major == 1 {
            (u16::from_le_bytes([map[8], map[9]]) as usize, 10)
        } else {
            if map.len() < 12 {
                return Err(bad("truncated .npy header".into()));
            }
            (u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize, 12)
        };
        let start = hstart + hlen;
        if map.len() < start {
            return Err(bad("truncated .npy header".into()));
        }
        let header = String::from_utf8_lossy(&map[hstart..start]).to_string();
        let field = |key: &str| -> Option<String> {
            let i = header.find(&format!("'{key}'"))?;
            let rest = header[i + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
            if let Some(r) = rest.strip_prefix('(') {
                Some(r[..r.find(')')?].to_string())
            } else if let Some(r) = rest.strip_prefix('\'') {
                Some(r[..r.find('\'')?].to_string())
            } else {
                Some(rest.split([',', '}']).next()?.trim().to_string())
            }
        };
        let descr = field("descr").ok_or_else(|| bad("no descr in the header".into()))?;
        let dtype = match descr.as_str() {
            "|u1" | "<u1" => Dtype::U8,
            "<u2" => Dtype::U16,
            "<i2" => Dtype::I16,
            "<u4" => Dtype::U32,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "<u8" => Dtype::U64,
            other => {
                return Err(bad(format!("dtype {other} is not a little-endian integer type")));
            }
        };
        if field("fortran_order").as_deref() == Some("True") {
            return Err(bad("Fortran-order array".into()));
        }
        let shape_s = field("shape").ok_or_else(|| bad("no shape in the header".into()))?;
        let shape: Vec<usize> = shape_s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(format!("unreadable shape ({shape_s})")))?;
        let (len, rows) = match shape.as_slice() {
            [n] => (*n, None),
            [n, l] => (
                n.checked_mul(*l).ok_or_else(|| bad(format!("shape {shape:?} is too large")))?,
                Some((*n, *l)),
            ),
            s => return Err(bad(format!("shape {s:?} has {} dimensions", s.len()))),
        };
        let need = len.checked_mul(dtype.size()).and_then(|b| b.checked_add(start));
        if need.is_none_or(|n| map.len() < n) {
            return Err(bad(format!(
                "truncated: shape {shape:?} needs {} data bytes, the file has {}",
                len as u128 * dtype.size() as u128,
                map.len() - start
            )));
        }
        Ok(TokenData { path: path.into(), map, start, dtype, len, rows })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token `i` as read (negative values become `u32::MAX`, caught by [`Self::check_vocab`]).
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        let o = self.start + i * self.dtype.size();
        let b = &self.map[o..o + self.dtype.size()];
        match self.dtype {
            Dtype::U8 => b[0] as u32,
            Dtype::U16 => u16::from_le_bytes([b[0], b[1]]) as u32,
            Dtype::I16 => u32::try_from(i16::from_le_bytes([b[0], b[1]])).unwrap_or(u32::MAX),
            Dtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::I32 => {
                u32::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(u32::MAX)
            }
            Dtype::I64 => u32::try_from(i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .unwrap_or(u32::MAX),
            Dtype::U64 => u32::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .unwrap_or(u32::MAX),
        }
    }

    /// Copies tokens `start..start + out.len()`.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.get(start + i);
        }
    }

    /// Fails on the first token that is negative or not below `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 20;
        let bad = (0..self.len.div_ceil(CHUNK)).into_par_iter().find_first(|&c| {
            (c * CHUNK..((c + 1) * CHUNK).min(self.len)).any(|i| self.get(i) as usize >= vocab_size)
        });
        if let Some(c) = bad {
            let i =
                (c * CHUNK..).find(|&i| self.get(i) as usize >= vocab_size).expect("found above");
            let v = self.get(i);
            let shown = if v == u32::MAX { "a negative id".to_string() } else { format!("id {v}") };
            return Err(Error::invalid(
                &self.path,
                format!(
                    "token {i} is {shown}, not below the model's vocab_size {vocab_size}: the data was made with another tokenizer, or the config's vocab_size is too small"
                ),
            ));
        }
        Ok(())
    }
}

/// Writes tokens as a `.bin` shard (uint16 when every id fits, else uint32), atomically.
pub fn write_bin(path: &Path, tokens: &[u32]) -> Result<()> {
    let wide = tokens.iter().any(|&t| t > u16::MAX as u32);
    let (magic, version) = if wide { (MAGIC_U32, VERSION_U32) } else { (MAGIC_U16, VERSION_U16) };
    if tokens.len() > i32::MAX as usize {
        return Err(Error::invalid(path, format!("{} tokens do not fit one shard", tokens.len())));
    }
    let mut bytes = Vec::with_capacity(HEADER_BYTES + tokens.len() * if wide { 4 } else { 2 });
    let mut header = [0i32; 256];
    header[0] = magic;
    header[1] = version;
    header[2] = tokens.len() as i32;
    for h in header {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    for &t in tokens {
        if wide {
            bytes.extend_from_slice(&t.to_le_bytes());
        } else {
            bytes.extend_from_slice(&(t as u16).to_le_bytes());
        }
    }
    write_atomic(path, &bytes)
}

/// Writes a 2-D `[rows, row_len]` int32 `.npy` (used by tests and tools), atomically.
pub fn write_npy_2d(path: &Path, tokens: &[u32], row_len: usize) -> Result<()> {
    let rows = tokens.len() / row_len.max(1);
    let mut header =
        format!("{{'descr': '<i4', 'fortran_order': False, 'shape': ({rows}, {row_len}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for &t in &tokens[..rows * row_len] {
        bytes.extend_from_slice(&(t as i32).to_le_bytes());
    }
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_and_npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let toks: Vec<u32> = (0..1000).map(|i| (i * 7919) % 50_000).collect();
        let p = dir.path().join("a.bin");
        write_bin(&p, &toks).unwrap();
        let d = TokenData::open(&p).unwrap();
        assert_eq!(d.len(), 1000);
        assert!((0..1000).all(|i| d.get(i) == toks[i]));
        let wide: Vec<u32> = vec![70_000, 1, 2];
        write_bin(&p, &wide).unwrap();
        let d = TokenData::open(&p).unwrap();
        assert_eq!((0..3).map(|i| d.get(i)).collect::<Vec<_>>(), wide);
        assert!(d.check_vocab(70_000).is_err());
        let q = dir.path().join("a.npy");
        write_npy_2d(&q, &toks, 10).unwrap();
        let d = TokenData::open(&q).unwrap();
        assert_eq!(d.rows, Some((100, 10)));
        assert_eq!(d.get(999), toks[999]);
    }

    #[test]
    fn corrupt_shards_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, b"hello").unwrap();
        assert!(TokenData::open(&p).unwrap_err().to_string().contains("shorter than"));
        std::fs::write(&p, vec![7u8; 2048]).unwrap();
        assert!(TokenData::open(&p).unwrap_err().to_string().contains("bad magic"));
        write_bin(&p, &[1, 2, 3, 4]).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, &bytes).unwrap();
        assert!(TokenData::open(&p).unwrap_err().to_string().contains("truncated"));
        write_bin(&p, &[1, 2, 300, 4]).unwrap();
        let e = TokenData::open(&p).unwrap().check_vocab(256).unwrap_err().to_string();
        assert!(e.contains("token 2 is id 300"), "{e}");
    }
}

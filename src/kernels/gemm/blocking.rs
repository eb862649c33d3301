//! [`Blocking`]: how a bf16 product splits its output among tasks, the tuner's choice.

/// How a bf16 product splits its output among the pool's tasks: the tuner's choice, per shape
/// and CPU. Every blocking runs each element of `c` through the same k blocks in the same
/// order, so results are bitwise the same whatever is chosen (and for any thread count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Blocking {
    /// Tasks of this many rows (rounded up to the micro-kernel's), each packing its rows of `a`
    /// per k block and running every column panel.
    Rows(usize),
    /// `a` packed once for the product; tasks over runs of column panels (AVX-512 BF16).
    Columns,
    /// k blocks outermost, as GotoBLAS orders its loops: for each block of [`NC`] column
    /// panels and each k block, `b`'s panels packed (on the pool's threads), then tasks of this
    /// many rows each run every panel of the block over their rows (`a` packed once for the
    /// product where `b` has several blocks of panels, else by each task per k block). `b` is
    /// packed a block at a time (no buffer of the whole packed `b`) and read from cache by
    /// every task. Where `b` has kept panels (pinned weights), row blocks of this many rows.
    KOuter(usize),
}

/// Column panels per block of [`Blocking::KOuter`]: 512 KiB of panels per k block (bf16 pairs
/// at 128 pairs, or fp32 at 64).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub const NC: usize = 32;

impl std::fmt::Display for Blocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocking::Rows(r) => write!(f, "rows {r}"),
            Blocking::Columns => write!(f, "columns"),
            Blocking::KOuter(r) => write!(f, "k-outer {r}"),
        }
    }
}

impl From<Blocking> for String {
    fn from(b: Blocking) -> String {
        b.to_string()
    }
}

impl TryFrom<String> for Blocking {
    type Error = String;
    /// `rows N`, `columns` or `k-outer N`, as [`Blocking`]'s `Display` writes them.
    fn try_from(s: String) -> Result<Blocking, String> {
        match s.split_once(' ') {
            _ if s == "columns" => Ok(Blocking::Columns),
            Some(("rows", r)) => r.parse().map(Blocking::Rows).map_err(|e| format!("{s}: {e}")),
            Some(("k-outer", r)) => {
                r.parse().map(Blocking::KOuter).map_err(|e| format!("{s}: {e}"))
            }
            _ => Err(format!("{s:?} is not a blocking (rows N, columns, k-outer N)")),
        }
    }
}

//! The buffers packed operands live in: their first word on a 64-byte boundary (a cache line).
//!
//! The allocator puts large buffers 16 bytes past a page, where every 64-byte row of an AMX tile
//! (and every AVX-512 load) straddles two lines: on an AMX Xeon that made each `tileloadd` about
//! three times slower (docs/precision.md). `aligned-vec` rather than a hand-made buffer: `Vec`
//! has no alignment parameter.

/// Packed bf16 pairs (or fp32 words), cache-line aligned.
pub(super) type Panels = aligned_vec::AVec<u32, aligned_vec::ConstAlign<64>>;

/// fp32 blocks of `c` handed to the tiles, cache-line aligned (their rows are tile rows).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) type Blocks = aligned_vec::AVec<f32, aligned_vec::ConstAlign<64>>;

/// An empty [`Panels`] (no allocation).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn no_panels() -> Panels {
    Panels::new(64)
}

/// An empty [`Blocks`] (no allocation).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn no_blocks() -> Blocks {
    Blocks::new(64)
}

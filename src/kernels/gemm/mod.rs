//! Matrix products `c (+)= a · b`: fp32, or bf16 inputs with fp32 accumulation (mixed
//! precision: `a` and `b` rounded to bf16, round to nearest even, as they are packed; products
//! summed in fp32). Every version splits the output between threads, never the reduction, so
//! results do not depend on the thread count.
//!
//! Kernel lab, in llm.c's `dev/cuda` spirit: [`reference`] (scalar, the definition),
//! [`matmul_bf16`] dispatching to the fastest [`Version`] this CPU runs; validated against
//! [`reference`] and the fp32 product (the tests), timed by `cargo bench --bench kernels`.
//!
//! The files, each importing only from those listed after it (and from this one, by `super::`):
//! - `mod.rs`: the operands ([`Mat`], [`Par`]) and their shape checks, the precision switch
//!   ([`Gemm`]), the bf16 entry points and their dispatch, the definition and the emulation
//!   (inputs rounded to bf16, then the fp32 product: any CPU).
//! - `tune.rs`: the tuner, which times each large bf16 product's blockings at first use and
//!   keeps the fastest per CPU model.
//! - `amx/`: the AMX version (`tdpbf16ps` on tiles, also emulated in scalar code for the
//!   tests), on the AVX-512 packing.
//! - `avx512.rs`: the AVX-512 BF16 micro-kernel (`vdpbf16ps`).
//! - `fma/`: the widening micro-kernels of CPUs without bf16 instructions (AVX-512F, AVX2):
//!   bf16 panels widened to fp32 in registers, fp32 FMAs (`mod.rs`); their packing (`pack.rs`).
//! - `fp32/`: the fp32 products: the `gemm` crate's, the one call into it, and products of
//!   few rows split into column blocks (`mod.rs`); gpt1's own AVX2 micro-kernel on the driver,
//!   opt-in (`avx2.rs`).
//! - `pack.rs`: the bf16 packing with AVX-512 BF16 (fp32 → bf16 pairs in the layouts the
//!   kernels read), for AVX-512 BF16 and AMX.
//! - `driver.rs`: the driver of the register micro-kernels above (`b`'s panels for every k
//!   block, one fork-join over the output; or k blocks outermost, `b` packed a block of panels
//!   at a time), generic over the kernel.
//! - `gemv/`: fp32 products of a few rows (decoding, the LSTM's recurrence), reading the
//!   weights in place, once.
//! - `pin.rs`: pinned weights, whose packed `b` panels are kept from product to product.
//! - `panels.rs`: the cache-line-aligned buffers packed operands live in; imports nothing.
//! - `blocking.rs`: how a bf16 product splits its output among tasks; imports nothing.
//! - `tests.rs` (tests only): the lab's checks of every version, reading every file above.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod blocking;
#[cfg(target_arch = "x86_64")]
mod driver;
#[cfg(target_arch = "x86_64")]
mod fma;
mod fp32;
mod gemv;
#[cfg(target_arch = "x86_64")]
mod pack;
mod panels;
mod pin;
mod tune;

pub use blocking::Blocking;
pub use fp32::{matmul, matmul_ptr, matmul_strided, own_kernel, own_kernel_peak_gflops};
pub use gemv::{transpose, version_name as few_rows_version};

/// How many bytes of `b` ahead bf16's few-row products ask for (0: none; per CPU vendor).
pub fn bf16_prefetch_bytes() -> usize {
    avx512::prefetch_ahead() * driver::NR * 4
}
pub use pin::{Pinned, pin};
pub use tune::{TunedShape, TunerReport, tune_now, tuner_report};

/// A row-major matrix operand: `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat { data, rs: cols, cs: 1 }
    }
    /// The transpose of a dense row-major matrix stored as `[cols_of_t, rows_of_t]`:
    /// element `(r, c)` of the operand is `data[c * stored_cols + r]`.
    pub fn t(data: &'a [f32], stored_cols: usize) -> Self {
        Mat { data, rs: 1, cs: stored_cols }
    }
    /// A strided view (rows `rs` apart, columns `cs` apart).
    pub fn strided(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Mat { data, rs, cs }
    }
}

/// Whether a product may use the rayon pool (large products) or must stay on the calling thread
/// (products already inside a parallel loop, such as per-head attention).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Par {
    Pool,
    Single,
}

/// One past the last element a `[rows, cols]` operand with strides `rs`, `cs` touches.
pub(crate) fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 }
}

/// Panics unless `c` (row stride `ldc`), `a` and `b` hold `[m, n]`, `[m, k]` and `[k, n]`:
/// the bound every product's unchecked inner loops rely on.
pub(crate) fn check_operands(
    what: &str,
    c: &[f32],
    ldc: usize,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
) {
    assert!(ldc >= n && c.len() >= last_index(m, n, ldc, 1), "{what}: c too short");
    assert!(a.data.len() >= last_index(m, k, a.rs, a.cs), "{what}: a too short");
    assert!(b.data.len() >= last_index(k, n, b.rs, b.cs), "{what}: b too short");
}

/// Which product a kernel uses: fp32, or bf16 inputs with fp32 accumulation (a [`Version`]).
/// Kernels that multiply large matrices (the LM head) take one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemm {
    Fp32,
    Bf16(Version),
}

impl Gemm {
    /// Dense `c[m, n] (+)= a · b` on the shared pool.
    #[allow(clippy::too_many_arguments)]
    pub fn mm(self, c: &mut [f32], a: Mat, b: Mat, m: usize, n: usize, k: usize, accumulate: bool) {
        match self {
            Gemm::Fp32 => matmul(c, a, b, m, n, k, accumulate),
            Gemm::Bf16(v) => matmul_bf16(v, c, n, a, b, m, n, k, accumulate, Par::Pool),
        }
    }

    /// Whether products `[m, k] · W` of a row-major `W` (`[k, n]`), repeated with the same `W`,
    /// are worth a copy of `W` stored transposed ([`transpose`]): in fp32, from 5 rows (the
    /// row-major few-row path's limit) to 64, `x · Wᵀ` runs as dot products, register-blocked,
    /// where `x · W` goes to the `gemm` crate, which reads `W` in place or gathers it at every
    /// call (the LSTM's backward `dG_t · W_hh`, 8 × 4,096 × 1,024: 13.7 GFLOP/s on 2 cores of
    /// an AMD Zen 3). In bf16 the pinned panels serve instead.
    pub fn transposed_copy_serves(self, m: usize, k: usize, n: usize) -> bool {
        self == Gemm::Fp32 && m > gemv::MAX_ROWS && gemv::takes_transposed(m, n, k)
    }

    /// Whether every weight product of `rows` rows runs its tasks through
    /// [`crate::kernels::parallel`], so a spinning team ([`crate::kernels::parallel::with_team`])
    /// can serve a whole decode step: fp32 products of few rows in `gemv`, bf16 ones of few
    /// rows on the AVX-512 BF16 driver (which AMX CPUs also run at these rows). Elsewhere (the
    /// `gemm` crate's own rayon loops: fp32 products of more rows, the bf16 emulation's) the
    /// team's spinners would leave those loops to the calling thread alone. More bf16 rows on
    /// a team would be correct, but were not measured.
    pub fn team_serves(self, rows: usize) -> bool {
        match self {
            Gemm::Fp32 => gemv::serves(rows),
            Gemm::Bf16(v) => rows <= FEW_ROWS && driver(v, rows) != Version::Emulated,
        }
    }

    /// `c[m, n] = a · b` (row stride `ldc`) on the calling thread, through a raw pointer: the
    /// per-head products of attention, each task writing its own column block.
    ///
    /// # Safety
    /// As [`matmul_ptr`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mm_single(
        self,
        c: *mut f32,
        ldc: usize,
        a: Mat,
        b: Mat,
        m: usize,
        n: usize,
        k: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Gemm::Fp32 => matmul_ptr(c, ldc, a, b, m, n, k, false, Par::Single),
                Gemm::Bf16(v) => matmul_bf16_ptr(v, c, ldc, a, b, m, n, k, false, Par::Single),
            }
        }
    }
}

/// fp32 → bf16 bits, round to nearest even (a NaN stays a quiet NaN).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bf16 value, as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Which version [`matmul_bf16`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `tdpbf16ps` on Intel AMX's tiles (`amx/`), where the CPU has it, the OS grants
    /// it and its self-check passes.
    Amx,
    /// `vdpbf16ps` (AVX-512 BF16).
    Avx512,
    /// bf16 panels widened to fp32 in 512-bit registers, fp32 FMAs (AVX-512F without its BF16
    /// extension: Skylake to Ice Lake Xeons).
    Fma512,
    /// bf16 panels widened to fp32 in 256-bit registers, fp32 FMAs (AVX2 and FMA: every CPU the
    /// x86-64-v3 build runs on).
    Fma256,
    /// Inputs rounded to bf16, then the fp32 product (any CPU; the kernel lab's second
    /// reference, and the version off x86-64).
    Emulated,
}

impl Version {
    /// Every version, fastest first: the order [`best_version`] tries them in.
    pub const ALL: [Version; 5] =
        [Version::Amx, Version::Avx512, Version::Fma512, Version::Fma256, Version::Emulated];

    /// The name `GPT1_BF16_KERNEL` takes and the logs print.
    pub fn name(self) -> &'static str {
        match self {
            Version::Amx => "amx",
            Version::Avx512 => "avx512bf16",
            Version::Fma512 => "fma512",
            Version::Fma256 => "fma256",
            Version::Emulated => "emulated",
        }
    }

    /// Whether this CPU runs the version.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Version::Amx => amx_usable(),
                Version::Avx512 => avx512_bf16(),
                Version::Fma512 => has!("avx512f") && has!("avx2"),
                Version::Fma256 => has!("avx2") && has!("fma"),
                Version::Emulated => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Version::Emulated
        }
    }
}

/// The version bf16 products run: `GPT1_BF16_KERNEL`'s where it names one this CPU runs, else
/// the fastest this CPU runs (decided once per process).
pub fn best_version() -> Version {
    chosen_version().0
}

/// What `GPT1_BF16_KERNEL` asked for and could not have, for the log (None where it is unset
/// or granted).
pub fn bf16_kernel_refused() -> Option<&'static str> {
    chosen_version().1.as_deref()
}

fn chosen_version() -> &'static (Version, Option<String>) {
    static CHOSEN: std::sync::OnceLock<(Version, Option<String>)> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        let best = || Version::ALL.into_iter().find(|v| v.runs_here()).unwrap_or(Version::Emulated);
        let Some(asked) = std::env::var("GPT1_BF16_KERNEL").ok().filter(|s| !s.trim().is_empty())
        else {
            return (best(), None);
        };
        let names = Version::ALL.map(Version::name).join(", ");
        match Version::ALL.into_iter().find(|v| v.name().eq_ignore_ascii_case(asked.trim())) {
            Some(v) if v.runs_here() => (v, None),
            Some(v) => (
                best(),
                Some(format!("GPT1_BF16_KERNEL={asked}: this CPU does not run {}", v.name())),
            ),
            None => (best(), Some(format!("GPT1_BF16_KERNEL={asked} is not one of {names}"))),
        }
    })
}

/// The CPU runs AVX-512 BF16 (with AVX-512F and BW, which the packing uses).
pub fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// AMX runs here (`amx::status`).
pub fn amx_usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::status().is_ok()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Why AMX is not used, for the log, where the CPU has it (None where it has none or it runs).
pub fn amx_refused() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    if avx512_bf16() && amx::has_amx() {
        return amx::status().as_ref().err().cloned();
    }
    None
}

/// The definition: `c[i, j] (+)= Σ_k bf16(a[i, k]) · bf16(b[k, j])`, summed in f32 pair by
/// pair (k, k + 1), as `vdpbf16ps` pairs them.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    c: &mut [f32],
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
) {
    let av = |i: usize, p: usize| if p < k { round_bf16(a.data[i * a.rs + p * a.cs]) } else { 0.0 };
    let bv = |p: usize, j: usize| if p < k { round_bf16(b.data[p * b.rs + j * b.cs]) } else { 0.0 };
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in (0..k).step_by(2) {
                s += av(i, p) * bv(p, j) + av(i, p + 1) * bv(p + 1, j);
            }
            let o = &mut c[i * ldc + j];
            *o = if acc { *o + s } else { s };
        }
    }
}

/// `c[m, n] (+)= bf16(a) · bf16(b)` with fp32 accumulation; `c` row-major with row stride
/// `ldc`. `par`: the rayon pool (large products) or the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    version: Version,
    c: &mut [f32],
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
    par: Par,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_operands("matmul_bf16", c, ldc, a, b, (m, n, k));
    // SAFETY: the asserts above bound every element the packing reads and the product writes;
    // `c` is exclusively borrowed.
    unsafe { matmul_bf16_ptr(version, c.as_mut_ptr(), ldc, a, b, m, n, k, acc, par) }
}

/// Products of this many rows or fewer (a decode step of up to 4 samples) run the AVX-512 BF16
/// version where AMX is the chosen one. A tile holds 16 rows and a block 32, so at 1–4 rows
/// AMX multiplies zeros for 87–97 % of its work and every task packs 32 rows of `a` per k block,
/// while the AVX-512 kernel broadcasts only the live rows and streams the kept panels (which
/// both versions share) once: a decode step is bound by reading the weights, and 4 rows' work
/// on AVX-512 BF16 (about 1 GFLOP per gpt1 token) stays under the time that takes, even on a
/// Xeon whose `vdpbf16ps` is slow. The choice depends on `m` alone, so results stay the same
/// for any thread count.
pub const FEW_ROWS: usize = 4;

/// [`matmul_bf16`] writing through a raw pointer, for tasks that write disjoint column blocks of
/// one matrix (attention heads).
///
/// # Safety
/// As [`matmul_ptr`]: `c` valid for writes at `r * ldc + j` for `r < m`,
/// `j < n`, no other thread touching those elements during the call; `a` and `b` in bounds.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_bf16_ptr(
    version: Version,
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
    par: Par,
) {
    if m == 0 || n == 0 {
        return;
    }
    debug_assert!(a.data.len() >= last_index(m, k, a.rs, a.cs));
    debug_assert!(b.data.len() >= last_index(k, n, b.rs, b.cs));
    let driver = driver(version, m);
    let blocking = tune::choose(driver, a, b, (m, n, k), par);
    // SAFETY: the caller's contract.
    unsafe { run(driver, c, ldc, a, b, (m, n, k), acc, par, blocking) }
}

/// The version that runs a product of `m` rows asked of `version` on this CPU: AMX where it is
/// usable (but for a few rows), else AVX-512 BF16 where the CPU has it; the widening kernels
/// where they are asked for (or stand in for a bf16 version this CPU lacks); else the
/// emulation.
fn driver(version: Version, m: usize) -> Version {
    match version {
        #[cfg(target_arch = "x86_64")]
        Version::Amx if amx_usable() && !(m <= FEW_ROWS && avx512_bf16()) => Version::Amx,
        #[cfg(target_arch = "x86_64")]
        Version::Avx512 | Version::Amx if avx512_bf16() => Version::Avx512,
        Version::Fma256 if Version::Fma256.runs_here() => Version::Fma256,
        Version::Emulated => Version::Emulated,
        _ if Version::Fma512.runs_here() => Version::Fma512,
        _ if Version::Fma256.runs_here() => Version::Fma256,
        _ => Version::Emulated,
    }
}

/// The product on `driver` (from [`driver`]) with `blocking` (None: the driver's rule).
///
/// # Safety
/// As [`matmul_bf16_ptr`]; `driver` runs on this CPU.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    driver: Version,
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
    acc: bool,
    par: Par,
    blocking: Option<Blocking>,
) {
    match driver {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract (AMX usable).
        Version::Amx => unsafe {
            amx::matmul(&amx::Hardware, c, ldc, a, b, m, n, k, acc, par, blocking)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract (AVX-512 BF16 present).
        Version::Avx512 => unsafe {
            driver::matmul::<avx512::Bf16Dot>(c, ldc, a, b, m, n, k, acc, par, blocking)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract (AVX-512F present).
        Version::Fma512 => unsafe {
            driver::matmul::<fma::Fma512>(c, ldc, a, b, m, n, k, acc, par, blocking)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract (AVX2 and FMA present).
        Version::Fma256 => unsafe {
            driver::matmul::<fma::Fma256>(c, ldc, a, b, m, n, k, acc, par, blocking)
        },
        // SAFETY: the caller's contract.
        _ => unsafe { emulated(c, ldc, a, b, m, n, k, acc, par) },
    }
}

/// The micro-kernel of `version` on every thread of the pool at once, GFLOP/s: the ceiling the
/// products are measured against (`cargo bench --bench kernels`); `None` for the emulation or a
/// version this CPU does not run.
pub fn kernel_peak_gflops(version: Version) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both): the CPU runs the version (checked first).
        let rates = match version {
            Version::Amx if amx_usable() => {
                rayon::broadcast(|_| unsafe { amx::kernel_rate(20_000) })
            }
            Version::Avx512 if avx512_bf16() => {
                rayon::broadcast(|_| unsafe { driver::kernel_rate::<avx512::Bf16Dot>(20_000) })
            }
            Version::Fma512 if version.runs_here() => {
                rayon::broadcast(|_| unsafe { driver::kernel_rate::<fma::Fma512>(20_000) })
            }
            Version::Fma256 if version.runs_here() => {
                rayon::broadcast(|_| unsafe { driver::kernel_rate::<fma::Fma256>(20_000) })
            }
            _ => return None,
        };
        Some(rates.iter().sum::<f64>() / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Inputs rounded to bf16 into dense copies, then the fp32 product.
///
/// # Safety
/// As [`matmul_bf16_ptr`].
#[allow(clippy::too_many_arguments)]
unsafe fn emulated(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
    par: Par,
) {
    let ar: Vec<f32> =
        (0..m * k).map(|x| round_bf16(a.data[(x / k) * a.rs + (x % k) * a.cs])).collect();
    let br: Vec<f32> =
        (0..k * n).map(|x| round_bf16(b.data[(x / n) * b.rs + (x % n) * b.cs])).collect();
    // SAFETY: the caller's contract for c; the dense copies hold [m, k] and [k, n].
    unsafe { matmul_ptr(c, ldc, Mat::rows(&ar, k), Mat::rows(&br, n), m, n, k, acc, par) };
}

#[cfg(test)]
mod tests;

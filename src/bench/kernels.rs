//! `gpt1 bench kernels`: the kernel lab in the release binary, so that figures from machines
//! without a Rust toolchain (an AMX Xeon, a user's server) come back in one JSON object: the CPU
//! and its flags, each matrix product of a gpt1 (4 × 512) training step in fp32 and in every
//! bf16 version this CPU runs, each version's micro-kernel peak, one layer's attention, the
//! memory's read and copy bandwidth, and the decode matrix-vector rate (every weight of a
//! gpt1-size model read once per token, fp32 and bf16 kept panels) against that bandwidth.
//! `cargo bench --bench kernels` prints the same report.

use crate::kernels::attention::{self, Dims, KvLayout, RowsVersion};
use crate::kernels::dropout::Dropout;
use crate::kernels::gemm::{
    Gemm, Mat, Par, TunerReport, Version, amx_refused, best_version, kernel_peak_gflops, matmul,
    matmul_bf16, tune_now, tuner_report,
};
use crate::kernels::with_team;
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// Everything `gpt1 bench kernels` measured.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub cpu: String,
    /// The instruction sets that matter here, as /proc/cpuinfo names them.
    pub flags: Vec<String>,
    pub threads: usize,
    /// The bf16 version bf16 runs use, and why AMX is not used where the CPU has it.
    pub bf16_version: String,
    pub amx_not_used: Option<String>,
    /// The version fp32's few-row products run (decoding, the LSTM's recurrence):
    /// `AVX-512 register blocks`, `AVX2 register blocks` or `portable`.
    pub few_rows_version: String,
    /// How far ahead (bytes of `b`) bf16's few-row products ask for their panels: 4,096 on
    /// Intel CPUs, 0 elsewhere (docs/decoding.md).
    pub bf16_few_rows_prefetch_bytes: usize,
    /// Each bf16 version's micro-kernel alone on L1-resident panels, every thread at once.
    pub peaks: Vec<VersionRate>,
    pub products: Vec<Product>,
    /// One gpt1 layer's attention (4 × 512, 12 heads of 64), forward and backward, causal.
    pub attention: Vec<VersionRate>,
    pub memory: Memory,
    pub decode: Vec<Decode>,
    /// One decoded token's attention over the key/value cache, each version.
    pub decode_attention: Vec<DecodeAttention>,
    /// The tuner's mode and file, and its choice for each bf16 product above with every
    /// candidate's rate (timed here, whatever was kept).
    pub tuner: TunerReport,
}

/// A rate in GFLOP/s of one version (`fp32`, `bf16 Avx512`, `bf16 Amx`, `bf16 Emulated`).
#[derive(Clone, Debug, Serialize)]
pub struct VersionRate {
    pub version: String,
    pub gflops: f64,
}

/// One product of a training step: `c[m, n] = a[m, k] · b[k, n]`, operands as the model reads
/// them (`ta`, `tb`: stored transposed).
#[derive(Clone, Debug, Serialize)]
pub struct Product {
    pub label: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub rates: Vec<VersionRate>,
}

/// Bandwidth of all threads over buffers far larger than the caches, in GB/s.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    /// Summing 512 MB of f32.
    pub read_gb_s: f64,
    /// Copying 256 MB into another 256 MB, counting the bytes read and written (STREAM's way).
    pub copy_gb_s: f64,
}

/// The products of one decoded token at gpt1's size (12 blocks' four weight matrices and the
/// tied LM head, batch 1): the weight bytes read per token and the rate they stream at.
#[derive(Clone, Debug, Serialize)]
pub struct Decode {
    pub version: String,
    pub weight_mb_per_token: f64,
    pub ms_per_token: f64,
    pub gb_s: f64,
    /// `gb_s` over the measured read bandwidth.
    pub bandwidth_fraction: f64,
}

/// One decoded token's attention at gpt1's size (12 layers, 12 heads of 64, batch 1) over
/// `positions` cached keys and values per layer, by one version of the row attention, from a
/// cache in one layout.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeAttention {
    pub version: String,
    /// The cache's layout: `heads` (decoding's, `[B, H, 2, T, dh]`) or `rows` (`[B, T, 2d]`,
    /// decoding's until 2026-12-07; each position's keys and values side by side).
    pub layout: String,
    pub positions: usize,
    pub ms_per_token: f64,
    /// The keys and values read (fp32) per second.
    pub gb_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `runs` runs of `f` after one untimed.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// The versions this CPU runs: the best first, then the others it can (the emulation last).
fn versions() -> Vec<Version> {
    let mut v = vec![best_version()];
    v.extend(Version::ALL.into_iter().filter(|&x| x != best_version() && x.runs_here()));
    v
}

fn name(v: Version) -> String {
    format!("bf16 {v:?}")
}

/// The CPU's model name and its flags that matter to the products.
fn cpu() -> (String, Vec<String>) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = crate::sys::cpu_model();
    let have: Vec<String> = crate::sys::cpuinfo_field(&info, "flags")
        .unwrap_or_default()
        .split(' ')
        .map(String::from)
        .collect();
    let wanted = [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ];
    (model, wanted.iter().filter(|f| have.iter().any(|h| h == *f)).map(|f| f.to_string()).collect())
}

/// A matrix product to time: (label, m, n, k, `a` transposed, `b` transposed).
pub type Shape = (&'static str, usize, usize, usize, bool, bool);

/// The matrix products of a gpt1 (4 × 512) training step, as the kernel lab times them (its
/// probes in `examples/` time the same table).
pub const STEP_PRODUCTS: [Shape; 7] = {
    let (bt, d, v) = (2048, 768, 40_481);
    [
        ("qkv forward x·W", bt, 3 * d, d, false, false),
        ("qkv input grad dY·Wᵀ", bt, d, 3 * d, false, true),
        ("qkv weight grad Xᵀ·dY", d, 3 * d, bt, true, false),
        ("fc forward x·W", bt, 4 * d, d, false, false),
        ("head logits h·Wteᵀ", 512, v, d, false, true),
        ("head input grad dL·Wte", 512, d, v, false, false),
        ("head weight grad dLᵀ·h", v, d, 512, true, false),
    ]
};

/// [`STEP_PRODUCTS`], each in fp32 and every bf16 version, then the LSTM baseline's recurrent
/// products (batch 8, H = 1,024: one per time step, `W_hh`'s bf16 panels kept through a pass
/// as the LSTM keeps them).
fn products(runs: usize) -> Vec<Product> {
    let h = 1024;
    // (label, m, n, k, a transposed, b transposed, b's panels kept)
    let lstm = [
        ("LSTM step h·W_hhᵀ", 8, 4 * h, h, false, true, true),
        ("LSTM step grad dG·W_hh", 8, h, 4 * h, false, false, true),
    ];
    STEP_PRODUCTS
        .into_iter()
        .map(|(label, m, n, k, ta, tb)| (label, m, n, k, ta, tb, false))
        .chain(lstm)
        .map(|(label, m, n, k, ta, tb, kept)| {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
            let mut c = vec![0.0f32; m * n];
            let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
            let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
            let flops = 2.0 * (m * n * k) as f64;
            let mut rates = vec![VersionRate {
                version: "fp32".into(),
                gflops: flops / time(runs, || matmul(&mut c, am, bm, m, n, k, false)) / 1e9,
            }];
            let _pinned = kept.then(|| crate::kernels::gemm::pin(&b));
            for ver in versions() {
                // Every candidate blocking timed first, so the product below runs the choice.
                tune_now(ver, am, bm, m, n, k);
                let s =
                    time(runs, || matmul_bf16(ver, &mut c, n, am, bm, m, n, k, false, Par::Pool));
                rates.push(VersionRate { version: name(ver), gflops: flops / s / 1e9 });
            }
            Product { label: label.into(), m, n, k, rates }
        })
        .collect()
}

/// One gpt1 layer's attention, forward then backward, with dropout, in each precision.
fn attention_rates(runs: usize) -> Vec<VersionRate> {
    let s = Dims { b: 4, t: 512, h: 12, dh: 64 };
    let d = s.d();
    let qkv: Vec<f32> = (0..s.b * s.t * 3 * d).map(|i| ((i % 17) as f32 - 8.0) * 0.05).collect();
    let dy: Vec<f32> = (0..s.b * s.t * d).map(|i| ((i % 11) as f32 - 5.0) * 0.01).collect();
    let mut y = vec![0.0; s.b * s.t * d];
    let mut dqkv = vec![0.0; qkv.len()];
    // Causal products: half of the 4 · T² · dh multiply-adds per head forward, twice that back
    // (the backward pass's recomputed q·kᵀ not counted: the rate is of the model's work).
    let flops = 3.0 * 2.0 * 2.0 * (s.b * s.h * s.t * s.t * s.dh) as f64;
    let drop = Dropout::new(0.1, 1);
    let mut gemms = vec![(String::from("fp32"), Gemm::Fp32)];
    gemms.extend(versions().into_iter().map(|v| (name(v), Gemm::Bf16(v))));
    gemms
        .into_iter()
        .map(|(version, g)| {
            let secs = time(runs, || {
                attention::forward(g, &mut y, &qkv, s, drop);
                attention::backward(g, &mut dqkv, &dy, &qkv, s, drop);
            });
            VersionRate { version, gflops: flops / secs / 1e9 }
        })
        .collect()
}

/// Read and copy bandwidth of every thread at once over buffers far beyond the caches.
fn memory(runs: usize) -> Memory {
    const CHUNK: usize = 1 << 16;
    let (src, mut dst) = (vec![1.0f32; 64 << 20], vec![0.0f32; 64 << 20]);
    let copy = time(runs, || {
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| d.copy_from_slice(s))
    });
    Memory {
        read_gb_s: super::measure_read_gbs(runs),
        copy_gb_s: (2 * src.len() * 4) as f64 / copy / 1e9,
    }
}

/// One decoded token's products at gpt1's size, fp32 and bf16 (the weights pinned: their bf16
/// panels are made once and kept, as `generate` does), on a spinning team where a decode step
/// runs on one (and the caller is a worker of the pool, as the command line's is).
fn decode(runs: usize, read_gb_s: f64) -> Vec<Decode> {
    let (d, v, layers) = (768, 40_481, 12);
    // (k, n) of each block's products, then the LM head (x · Wteᵀ, Wte stored [V, d]).
    let block = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)];
    let per_block: usize = block.iter().map(|(k, n)| k * n).sum();
    let weights: Vec<f32> =
        (0..layers * per_block + v * d).map(|i| ((i % 31) as f32 - 15.0) * 1e-3).collect();
    let x = vec![0.01f32; 4 * d];
    let mut y = vec![0.0f32; v.max(4 * d)];
    let token = |bf16: Option<Version>, y: &mut [f32]| {
        let mut off = 0;
        for _ in 0..layers {
            for &(k, n) in &block {
                let w = Mat::rows(&weights[off..off + k * n], n);
                let xm = Mat::rows(&x[..k], k);
                match bf16 {
                    None => matmul(&mut y[..n], xm, w, 1, n, k, false),
                    Some(ver) => matmul_bf16(ver, &mut y[..n], n, xm, w, 1, n, k, false, Par::Pool),
                }
                off += k * n;
            }
        }
        let wte = Mat::t(&weights[off..off + v * d], d);
        let xm = Mat::rows(&x[..d], d);
        match bf16 {
            None => matmul(&mut y[..v], xm, wte, 1, v, d, false),
            Some(ver) => matmul_bf16(ver, &mut y[..v], v, xm, wte, 1, v, d, false, Par::Pool),
        }
    };
    let n_weights = weights.len() as f64;
    let mut out = Vec::new();
    let mut record = |version: String, bytes_per: f64, secs: f64| {
        let gb_s = n_weights * bytes_per / secs / 1e9;
        out.push(Decode {
            version,
            weight_mb_per_token: n_weights * bytes_per / 1e6,
            ms_per_token: secs * 1e3,
            gb_s,
            bandwidth_fraction: gb_s / read_gb_s,
        });
    };
    // A team where a decode step would run one (`Gemm::team_serves`): else the `gemm`
    // crate's own rayon loops (`GPT1_GEMV=off`) would run on one thread inside it.
    let team = |serves: bool, f: &mut dyn FnMut()| if serves { with_team(f) } else { f() };
    let secs = time(runs, || team(Gemm::Fp32.team_serves(1), &mut || token(None, &mut y)));
    record("fp32".into(), 4.0, secs);
    for ver in versions().into_iter().filter(|&v| v != Version::Emulated) {
        let _pinned = crate::kernels::gemm::pin(&weights);
        let serves = Gemm::Bf16(ver).team_serves(1);
        let secs = time(runs, || team(serves, &mut || token(Some(ver), &mut y)));
        record(format!("{} (kept panels)", name(ver)), 2.0, secs);
    }
    out
}

/// The row attention of one decoded token at gpt1's size, over caches of 128 and 512 positions
/// in decoding's head-major layout and in the `[B, T, 2d]` rows it replaced (2026-12-07). Each timed token reads the next of 4 sets of 12 layers' caches
/// (151 MB in all), so its keys and values come from memory, as in a decode step, whose weights
/// have just passed through the caches, not from the last run's L3.
fn decode_attention(runs: usize) -> Vec<DecodeAttention> {
    let (layers, sets, s) = (12, 4, Dims { b: 1, t: 512, h: 12, dh: 64 });
    let d = s.d();
    let caches: Vec<Vec<f32>> = (0..sets * layers)
        .map(|l| (0..s.t * 2 * d).map(|i| ((i * 7 + l) % 23) as f32 * 0.01 - 0.1).collect())
        .collect();
    let q: Vec<f32> = (0..3 * d).map(|i| (i % 19) as f32 * 0.01 - 0.09).collect();
    let mut y = vec![0.0f32; d];
    let mut out = Vec::new();
    let mut versions = vec![RowsVersion::Portable];
    if RowsVersion::best(s.dh) != RowsVersion::Portable {
        versions.push(RowsVersion::best(s.dh));
    }
    for positions in [128, 512] {
        let layouts = [("heads", KvLayout::heads(s)), ("rows", KvLayout::rows(s, 2 * d))];
        for (&version, &(layout_name, layout)) in
            versions.iter().flat_map(|v| layouts.iter().map(move |l| (v, l)))
        {
            let mut set = 0;
            let secs = time(runs.max(4), || {
                set = (set + 1) % sets;
                for c in &caches[set * layers..(set + 1) * layers] {
                    let row = [positions - 1];
                    attention::forward_rows_with(version, &mut y, &q, c, layout, s, &row);
                }
            });
            let bytes = (layers * positions * 2 * d * 4) as f64;
            let version = format!("{version:?}").to_lowercase();
            out.push(DecodeAttention {
                version,
                layout: layout_name.into(),
                positions,
                ms_per_token: secs * 1e3,
                gb_s: bytes / secs / 1e9,
            });
        }
    }
    out
}

/// Measures everything in [`KernelReport`]; `runs` timed runs per figure (the median).
pub fn kernels(runs: usize) -> KernelReport {
    let (cpu, flags) = cpu();
    let runs = runs.max(1);
    let peaks = versions()
        .into_iter()
        .filter_map(|v| Some(VersionRate { version: name(v), gflops: kernel_peak_gflops(v)? }))
        .collect();
    let memory = memory(runs);
    KernelReport {
        cpu,
        flags,
        threads: rayon::current_num_threads(),
        bf16_version: name(best_version()),
        amx_not_used: amx_refused(),
        few_rows_version: crate::kernels::gemm::few_rows_version().into(),
        bf16_few_rows_prefetch_bytes: crate::kernels::gemm::bf16_prefetch_bytes(),
        peaks,
        products: products(runs),
        attention: attention_rates(runs),
        decode: decode(runs, memory.read_gb_s),
        decode_attention: decode_attention(runs),
        memory,
        tuner: tuner_report(),
    }
}

/// The report as a table, for people.
pub fn text(r: &KernelReport) -> String {
    let mut s = format!("{} ({} threads; {})\n", r.cpu, r.threads, r.flags.join(" "));
    s += &format!("bf16 products: {}", r.bf16_version);
    if let Some(why) = &r.amx_not_used {
        s += &format!(" ({why})");
    }
    s += &format!("\nfp32 few-row products: {}", r.few_rows_version);
    s += &format!(
        "\nbf16 few-row products ask for b {} bytes ahead",
        r.bf16_few_rows_prefetch_bytes
    );
    s += "\n\nGFLOP/s\n";
    let cols: Vec<&str> = r.products[0].rates.iter().map(|x| x.version.as_str()).collect();
    s += &format!("{:26} {:>6} {:>6} {:>6}", "product", "m", "n", "k");
    for c in &cols {
        s += &format!(" {c:>14}");
    }
    s += "\n";
    for p in &r.products {
        s += &format!("{:26} {:>6} {:>6} {:>6}", p.label, p.m, p.n, p.k);
        for x in &p.rates {
            s += &format!(" {:>14.1}", x.gflops);
        }
        s += "\n";
    }
    s += &format!("{:26} {:>6} {:>6} {:>6}", "attention fwd+bwd (causal)", 48, 512, 64);
    for x in &r.attention {
        s += &format!(" {:>14.1}", x.gflops);
    }
    s += "\n";
    for p in &r.peaks {
        s += &format!("micro-kernel peak, {}: {:.1} GFLOP/s\n", p.version, p.gflops);
    }
    s += &format!(
        "\nmemory: read {:.1} GB/s, copy {:.1} GB/s (read + written)\n",
        r.memory.read_gb_s, r.memory.copy_gb_s
    );
    for d in &r.decode {
        s += &format!(
            "decode, gpt1 size, batch 1, {}: {:.0} MB of weights per token, {:.2} ms/token, {:.1} GB/s ({:.0} % of read)\n",
            d.version,
            d.weight_mb_per_token,
            d.ms_per_token,
            d.gb_s,
            100.0 * d.bandwidth_fraction
        );
    }
    for a in &r.decode_attention {
        s += &format!(
            "decode attention, gpt1 size, batch 1, {} positions, {}, {} cache: {:.3} ms/token, {:.1} GB/s of keys and values\n",
            a.positions, a.version, a.layout, a.ms_per_token, a.gb_s
        );
    }
    s += &tuner_text(&r.tuner);
    s
}

/// The tuner's lines of the table: its mode and file, then each shape's choice and candidates.
fn tuner_text(t: &TunerReport) -> String {
    let mode = format!("{:?}", t.mode).to_lowercase();
    let mut s = format!("\ntuner: GPT1_TUNE={mode}, {:.1} s spent in this run", t.seconds_spent);
    s += &format!(", file {}", t.cache_file.as_deref().unwrap_or("none (no cache folder)"));
    if let Some(e) = &t.cache_error {
        s += &format!(" ({e})");
    }
    s += "\n";
    for x in &t.shapes {
        let rates: Vec<String> = x.gflops.iter().map(|(b, g)| format!("{} {g:.0}", b)).collect();
        s += &format!(
            "  {:34} chose {:10} (rule {}); GFLOP/s: {}\n",
            x.shape,
            x.choice.to_string(),
            x.rule,
            rates.join(", ")
        );
    }
    s
}

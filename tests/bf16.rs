//! Mixed precision (`--precision bf16`): bf16 products with fp32 accumulation against the fp32
//! engine: the same logits up to bf16 rounding, the same held-out loss after training, bitwise
//! identical results for any thread count, and the CLI's checks.

mod common;
use common::{fails, ok, s};
use gpt1::backend::{Cpu, Precision};
use gpt1::data::{Sampler, TokenData, WindowOrder};
use gpt1::kernels::rng::Rng;
use gpt1::model::{Activations, Config, Gpt};
use gpt1::train::Trainer;
use gpt1::train::trainer::StepKey;

fn config() -> Config {
    let mut c = Config::named("tiny").unwrap();
    c.vocab_size = 67;
    c.n_positions = 32;
    c.n_embd = 64;
    c.n_layer = 2;
    c.n_head = 4;
    c
}

fn tokens(n: usize, v: u32, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(v as u64) as u32).collect()
}

#[test]
fn bf16_logits_are_the_fp32_logits_up_to_bf16_rounding() {
    let c = config();
    let (b, t) = (3, 17);
    let ids = tokens(b * t, 67, 1);
    let fp32 = Gpt::init(c.clone(), 2);
    let mut bf16 = fp32.clone();
    bf16.backend = Cpu::new(Precision::Bf16);
    let want = fp32.logits(&mut Activations::new(&c, b, t, false), &ids);
    let got = bf16.logits(&mut bf16.activations(b, t, false), &ids);
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let err = got.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err > 0.0, "bf16 must actually round");
    assert!(err < 2e-2, "max relative error {err}");
}

/// Pinned weights (generation, scoring, evaluation) keep their bf16 packing between products:
/// the same log-probs and the same generated tokens, bitwise, as packing at every product.
#[test]
fn pinned_bf16_weights_give_the_same_results_bitwise() {
    let c = config();
    let (b, t) = (2, 19);
    let ids = tokens(b * t, 67, 3);
    let targets = tokens(b * t, 67, 4);
    let mut m = Gpt::init(c.clone(), 5);
    m.backend = Cpu::new(Precision::Bf16);
    let logprobs = |m: &Gpt| {
        let mut out = vec![0.0f32; b * t];
        m.logprobs(&mut m.activations(b, t, false), &ids, &targets, &mut out);
        out
    };
    let plain = logprobs(&m);
    let pinned = {
        let _pinned = m.pin();
        (logprobs(&m), logprobs(&m))
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&plain), bits(&pinned.0));
    assert_eq!(bits(&plain), bits(&pinned.1));
    // Decode steps (one row through every weight) with and without the guard `generate` takes.
    let rows: Vec<usize> = (0..5).collect();
    let step = |m: &Gpt| {
        let mut acts = m.decode_activations(1, 8);
        m.cached_logits(&mut acts, &ids[..5], &rows, &[4])
    };
    let plain = step(&m);
    let _pinned = m.pin();
    assert_eq!(bits(&plain), bits(&step(&m)));
}

/// A decode step on the CPU's spinning team (`kernels::parallel::with_team`, the command's
/// thread on a 2-thread pool) gives the logits of the same step on one thread and outside any
/// pool, bitwise, in fp32 and bf16, for one and two rows a step; the model is wide enough that
/// its products take the few-row kernels, whose loops the team runs.
#[test]
fn decode_steps_on_a_spinning_team_give_the_same_bits() {
    let mut c = config();
    (c.n_embd, c.vocab_size) = (192, 400);
    let ids = tokens(16, 400, 8);
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    for precision in [Precision::Fp32, Precision::Bf16] {
        let mut m = Gpt::init(c.clone(), 12);
        m.backend = Cpu::new(precision);
        let _pinned = m.pin();
        // Eight steps of `rows` rows: sequence i's position p is row i * 8 + p.
        let steps = |m: &Gpt, rows: usize| {
            let mut acts = m.decode_activations(rows, 8);
            (0..8)
                .flat_map(|p| {
                    let at: Vec<usize> = (0..rows).map(|i| i * 8 + p).collect();
                    let step_ids: Vec<u32> = at.iter().map(|&r| ids[r]).collect();
                    let pick: Vec<usize> = (0..rows).collect();
                    bits(m.cached_logits(&mut acts, &step_ids, &at, &pick))
                })
                .collect::<Vec<_>>()
        };
        for rows in [1, 2] {
            let plain = steps(&m, rows);
            let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            let before = gpt1::kernels::teams_started();
            let team = pool(2).install(|| steps(&m, rows));
            let started = gpt1::kernels::teams_started() - before;
            if cores >= 2 && gpt1::kernels::gemm::avx512_bf16() {
                assert!(started >= 8, "{precision:?}: {started} teams for 8 steps");
            }
            assert_eq!(team, plain, "{precision:?}, {rows} rows: the team changed the logits");
            assert_eq!(pool(1).install(|| steps(&m, rows)), plain, "{precision:?}, {rows} rows");
        }
    }
}

/// 300 steps on the fixture text with the same seed: the held-out loss in bf16 is within 1.5 %
/// of fp32's.
#[test]
fn bf16_training_reaches_the_fp32_loss() {
    let data = TokenData::open(std::path::Path::new("tests/fixtures/traj_tokens.bin")).unwrap();
    let (b, t) = (8, 16);
    let sampler = Sampler::new(&data, t, WindowOrder::Random).unwrap();
    let val = Sampler::new(&data, t, WindowOrder::Sequential).unwrap();
    let nv = val.windows().min(16);
    let (mut vi, mut vt) = (vec![0; nv * t], vec![0; nv * t]);
    val.fill(&val.starts(0, 0, nv), &mut vi, &mut vt);
    let run = |p: Precision| {
        let mut m = Gpt::init(config(), 3);
        m.backend = Cpu::new(p);
        let mut tr = Trainer::new(m, b, t, 0.01);
        let (mut ids, mut tg) = (vec![0; b * t], vec![0; b * t]);
        for step in 0..300u64 {
            sampler.fill(&sampler.starts(5, step, b), &mut ids, &mut tg);
            tr.step(&ids, &tg, t, &[], 2e-3, 1.0, StepKey::Whole(step), step).unwrap();
        }
        tr.eval_loss(&vi, &vt)
    };
    let (f, h) = (run(Precision::Fp32), run(Precision::Bf16));
    eprintln!("held-out loss after 300 steps: fp32 {f:.4}, bf16 {h:.4}");
    assert!(f < 3.0, "the model learned ({f})");
    assert!((h - f).abs() / f < 0.015, "fp32 {f} vs bf16 {h}");
}

#[test]
fn bf16_training_is_bitwise_identical_for_any_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut m = Gpt::init(config(), 5);
            m.backend = Cpu::new(Precision::Bf16);
            let mut tr = Trainer::new(m, 2, 16, 0.01);
            for s in 0..3u64 {
                let (ids, tg) = (tokens(4 * 16, 67, 10 + s), tokens(4 * 16, 67, 20 + s));
                tr.step(&ids, &tg, 16, &[], 1e-3, 1.0, StepKey::Whole(s), s).unwrap();
            }
            tr.model.params
        })
    };
    let one = run(1);
    for t in [2, 3] {
        assert!(
            one.iter().zip(&run(t)).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{t} threads differ"
        );
    }
}

#[test]
fn pretrain_in_bf16_resumes_only_in_bf16() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let base = [
        "pretrain",
        "--data",
        "tests/fixtures/traj_tokens.bin",
        "--config",
        "tests/fixtures/hf_tiny/config.json",
        "--out",
        s(&out),
        "--batch",
        "2",
        "--seq",
        "8",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--quiet",
    ];
    let mut first = base.to_vec();
    first.extend(["--stop-at", "2", "--precision", "bf16"]);
    ok(&first);
    let mut resume = base.to_vec();
    resume.push("--resume");
    let mut fp32 = resume.clone();
    fp32.extend(["--precision", "fp32"]);
    fails(&fp32, "--precision: the run was started with \"bf16\"");
    // Without the flag, the run continues in the precision it was started with.
    ok(&resume);
    let state = std::fs::read_to_string(out.join("final/trainer_state.json")).unwrap();
    assert!(state.contains("\"bf16\""), "{state}");
}

/// The product tuner (`GPT1_TUNE`): `redo` times the candidates of a step's large products and
/// keeps its choices in the cache folder; `off` reads and writes nothing; both train to the
/// same bits (a blocking changes which task computes an element, never its sums).
#[test]
fn the_tuner_keeps_its_choices_and_never_changes_the_results() {
    let d = tempfile::tempdir().unwrap();
    let run = |mode: &str| {
        let (cache, out) = (d.path().join(format!("cache-{mode}")), d.path().join(mode));
        let args = [
            "pretrain",
            "--data",
            "tests/fixtures/traj_tokens.bin",
            "--config",
            "small",
            "--precision",
            "bf16",
            "--out",
            s(&out),
            "--batch",
            "8",
            "--seq",
            "64",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--quiet",
        ];
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
            .args(args)
            .env("XDG_CACHE_HOME", &cache)
            .env("GPT1_TUNE", mode)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let kept: Vec<String> = std::fs::read_dir(cache.join("gpt1"))
            .map(|r| r.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
            .unwrap_or_default();
        (std::fs::read(out.join("final/model.safetensors")).unwrap(), kept)
    };
    let (off, off_kept) = run("off");
    let (redo, redo_kept) = run("redo");
    assert!(off == redo, "the tuner changed the weights");
    assert!(off_kept.is_empty(), "GPT1_TUNE=off wrote {off_kept:?}");
    if gpt1::kernels::gemm::avx512_bf16() {
        // The LM head's products at 8 × 64 rows are large enough to tune.
        assert!(redo_kept.len() == 1 && redo_kept[0].contains("\"choice\""), "{redo_kept:?}");
    }
}

/// `GPT1_BF16_KERNEL` chooses the bf16 product a run uses, and the precision line says which:
/// the two widening kernels (CPUs without bf16 instructions) pre-train to the same weights,
/// bit for bit, and train; a name the CPU cannot run, or no name at all, leaves the fastest
/// one with the reason in the line.
#[test]
fn gpt1_bf16_kernel_chooses_the_product_and_the_log_says_which() {
    use gpt1::kernels::gemm::Version;
    let d = tempfile::tempdir().unwrap();
    let run = |kernel: &str| {
        let out = d.path().join(format!("run-{kernel}"));
        let args = [
            "pretrain",
            "--data",
            "tests/fixtures/traj_tokens.bin",
            "--config",
            "tiny",
            "--precision",
            "bf16",
            "--out",
            s(&out),
            "--batch",
            "4",
            "--seq",
            "32",
            "--steps",
            "2",
            "--warmup",
            "1",
        ];
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
            .args(args)
            .env("GPT1_BF16_KERNEL", kernel)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{kernel}: {err}");
        let line = err.lines().find(|l| l.contains("cpu bf16")).unwrap_or_default().to_string();
        (std::fs::read(out.join("final/model.safetensors")).unwrap(), line)
    };
    if Version::Fma256.runs_here() {
        let (w256, line) = run("fma256");
        assert!(line.contains("widened to fp32, AVX2 FMA"), "{line}");
        if Version::Fma512.runs_here() {
            let (w512, line) = run("FMA512");
            assert!(line.contains("widened to fp32, AVX-512F FMA"), "{line}");
            assert!(w256 == w512, "the two widening kernels trained to different weights");
        }
        let (emulated, line) = run("emulated");
        assert!(line.contains("emulated"), "{line}");
        assert!(emulated != w256, "the emulation sums in another order: its weights differ");
    }
    let (_, line) = run("no-such-kernel");
    assert!(line.contains("GPT1_BF16_KERNEL=no-such-kernel is not one of amx,"), "{line}");
    if !Version::Amx.runs_here() {
        let (_, line) = run("amx");
        assert!(line.contains("this CPU does not run amx"), "{line}");
    }
}

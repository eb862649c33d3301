//! The CUDA backend. Without a GPU: every kernel compiles with NVRTC (when NVRTC can be found;
//! `.ci/run` installs it and sets `GPT1_REQUIRE_NVRTC=1`, which turns a missing NVRTC into a
//! failure), and `--device cuda` is a clear error. With a GPU (`tools/gpu_check.sh`): every
//! kernel against the CPU's, the model's gradients, a training trajectory.

use gpt1::backend::cuda::{self, KERNEL_NAMES};
use gpt1::backend::{Cuda, Precision};

fn nvrtc_required() -> bool {
    std::env::var("GPT1_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    let version = match cuda::compile::nvrtc_version() {
        Ok(v) => v,
        Err(e) if !nvrtc_required() && e.to_string().contains("not found") => {
            eprintln!("skipped: NVRTC not found ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    eprintln!("NVRTC {}.{}", version.0, version.1);
    for cc in [80, 90] {
        // PTX: every kernel is an entry.
        let ptx = cuda::compile_ptx(&format!("sm_{cc}")).unwrap_or_else(|e| panic!("{e}"));
        for name in KERNEL_NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "sm_{cc}: no kernel {name} in the PTX"
            );
        }
        // What the GPU loads by default: a CUBIN, an ELF image holding every kernel's name.
        let cubin = cuda::compile::compile(cc, cuda::compile::Code::Cubin)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "sm_{cc}: the CUBIN is not an ELF image");
        for name in KERNEL_NAMES {
            assert!(
                cubin
                    .windows(name.len() + 1)
                    .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0),
                "sm_{cc}: no kernel {name} in the CUBIN"
            );
        }
        let ptx = cuda::compile::compile(cc, cuda::compile::Code::Ptx).unwrap();
        assert!(ptx.starts_with(b"//") && !ptx.contains(&0), "sm_{cc}: PTX text without NULs");
    }
    // A GPU newer than this NVRTC gets PTX for the newest architecture it knows.
    let archs = cuda::compile::supported_archs().unwrap();
    let newest = *archs.iter().max().unwrap();
    assert!(archs.contains(&90), "{archs:?}");
    assert_eq!(
        cuda::compile::target(90, cuda::compile::Code::Cubin).unwrap(),
        (90, cuda::compile::Code::Cubin)
    );
    assert_eq!(
        cuda::compile::target(newest + 1, cuda::compile::Code::Cubin).unwrap(),
        (newest, cuda::compile::Code::Ptx)
    );
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_naming_the_line() {
    if cuda::libs::require("nvrtc", "test").is_err() && !nvrtc_required() {
        eprintln!("skipped: NVRTC not found");
        return;
    }
    let e = cuda::compile_source("extern \"C\" __global__ void k(float* x) { x[0] = y; }", "sm_90")
        .unwrap_err()
        .to_string();
    assert!(e.contains("identifier \"y\" is undefined"), "{e}");
}

// ---- with a GPU ----

use gpt1::backend::{Backend, Cpu, DeviceBuf};
use gpt1::kernels::attention::{Dims, KvLayout};
use gpt1::kernels::dropout::Dropout;
use gpt1::kernels::gemm::Gemm;
use gpt1::kernels::rng::Rng;

/// The GPU at `p`, or `None` (skipped) on a machine without one; `GPT1_REQUIRE_GPU=1`
/// (`tools/gpu_check.sh`) turns a missing GPU into a failure.
fn gpu(p: Precision) -> Option<Cuda> {
    match Cuda::new(0, p) {
        Ok(c) => Some(c),
        Err(e) if std::env::var("GPT1_REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("{e}"),
        Err(e) => {
            eprintln!("skipped (no GPU): {e}");
            None
        }
    }
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| (r.below(2001) as f32 - 1000.0) / 1000.0).collect()
}

/// Max |got − want| relative to the largest |want| (at least 1).
fn err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn check(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = err(got, want);
    assert!(e <= tol, "{what}: relative error {e} > {tol}");
    eprintln!("{what}: {e:.2e}");
}

/// One op on a backend: host inputs in, host outputs out.
fn host<B: Backend>(be: &B, x: &B::Buf) -> Vec<f32> {
    be.download(x.r()).into_owned()
}

/// Every elementwise, normalisation, embedding, attention, loss and optimizer kernel on `be`,
/// from the same inputs; the outputs in a fixed order, named.
fn all_ops<B: Backend>(be: &B) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    let (b, t, h, dh) = (2usize, 37usize, 3usize, 16usize);
    let d = h * dh;
    let rows = b * t;
    let v = 101usize;
    let up = |x: &[f32]| be.upload(x);
    let ids: Vec<u32> = {
        let mut r = Rng::new(9);
        (0..rows).map(|_| r.below(v as u64) as u32).collect()
    };
    let drop = Dropout::new(0.1, 77);
    // Embeddings.
    let (wte, wpe) = (up(&rand(v * d, 1)), up(&rand(t * d, 2)));
    let mut x = be.zeros(rows * d);
    be.encoder_forward(x.w(), &ids, wte.r(), wpe.r(), t, d);
    out.push(("encoder_forward".into(), host(be, &x)));
    let dout = up(&rand(rows * d, 3));
    let (mut dwte, mut dwpe) = (up(&rand(v * d, 4)), up(&rand(t * d, 5)));
    be.encoder_backward(dwte.w(), dwpe.w(), dout.r(), &ids, t, d);
    out.push(("encoder_backward wte".into(), host(be, &dwte)));
    out.push(("encoder_backward wpe".into(), host(be, &dwpe)));
    let pos = [3usize, 40, 73];
    let mut xr = be.zeros(pos.len() * d);
    be.encoder_rows(xr.w(), &ids[..3], &pos, wte.r(), wpe.r(), t, d);
    out.push(("encoder_rows".into(), host(be, &xr)));
    be.embedding_forward(xr.w(), wte.r(), &ids[..3], d);
    out.push(("embedding_forward".into(), host(be, &xr)));
    be.embedding_backward(dwte.w(), dout.r(), &ids, d);
    out.push(("embedding_backward".into(), host(be, &dwte)));
    // Dropout and residuals.
    let mut y = up(&rand(rows * d, 6));
    be.dropout(y.w(), drop);
    out.push(("dropout".into(), host(be, &y)));
    let a = up(&rand(rows * d, 7));
    be.residual_forward(y.w(), x.r(), a.r(), drop);
    out.push(("residual_forward".into(), host(be, &y)));
    be.residual_backward(y.w(), a.r(), drop);
    out.push(("residual_backward".into(), host(be, &y)));
    be.residual_backward(y.w(), a.r(), Dropout::OFF);
    out.push(("residual_backward off".into(), host(be, &y)));
    // Linear layers (products in every transpose, accumulated or not).
    let (m, n, k) = (rows, 3 * d, d);
    let w = up(&rand(k * n, 8));
    let bias = up(&rand(n, 9));
    let mut c = be.zeros(m * n);
    be.matmul_forward(c.w(), x.r(), w.r(), bias.r(), m, k, n);
    out.push(("matmul_forward".into(), host(be, &c)));
    for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
        let aa = up(&rand(m * k, 10));
        let bb = up(&rand(k * n, 11));
        let mut cc = up(&rand(m * n, 12));
        be.matmul(cc.w(), aa.r(), at, bb.r(), bt, m, n, k, true);
        out.push((format!("matmul a_t {at} b_t {bt} acc"), host(be, &cc)));
        be.matmul(cc.w(), aa.r(), at, bb.r(), bt, m, n, k, false);
        out.push((format!("matmul a_t {at} b_t {bt}"), host(be, &cc)));
    }
    let (mut dx, mut dw, mut db) = (be.zeros(m * k), up(&rand(k * n, 13)), up(&rand(n, 14)));
    be.matmul_backward(dx.w(), false, dw.w(), db.w(), c.r(), x.r(), w.r(), m, k, n);
    out.push(("matmul_backward dx".into(), host(be, &dx)));
    out.push(("matmul_backward dw".into(), host(be, &dw)));
    out.push(("matmul_backward dbias".into(), host(be, &db)));
    // LayerNorm and GELU.
    let (g, bb) = (up(&rand(d, 15)), up(&rand(d, 16)));
    let (mut ln, mut mean, mut rstd) = (be.zeros(rows * d), be.zeros(rows), be.zeros(rows));
    be.layernorm_forward(ln.w(), mean.w(), rstd.w(), x.r(), g.r(), bb.r(), d, 1e-5);
    out.push(("layernorm_forward".into(), host(be, &ln)));
    out.push(("layernorm mean".into(), host(be, &mean)));
    out.push(("layernorm rstd".into(), host(be, &rstd)));
    let (mut dln, mut dg, mut dbb) = (be.zeros(rows * d), up(&rand(d, 17)), up(&rand(d, 18)));
    be.layernorm_backward(dln.w(), dg.w(), dbb.w(), dout.r(), x.r(), mean.r(), rstd.r(), g.r(), d);
    out.push(("layernorm_backward dx".into(), host(be, &dln)));
    out.push(("layernorm_backward dg".into(), host(be, &dg)));
    out.push(("layernorm_backward db".into(), host(be, &dbb)));
    let mut ge = be.zeros(rows * d);
    be.gelu_forward(ge.w(), x.r());
    out.push(("gelu_forward".into(), host(be, &ge)));
    let mut dge = dout_copy(be, &dout);
    let mut regelu = be.zeros(rows * d);
    be.gelu_backward(dge.w(), regelu.w(), x.r());
    out.push(("gelu_backward".into(), host(be, &dge)));
    // The backward pass's recomputed GELU is the forward's, bitwise, on every backend.
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(host(be, &regelu)), bits(host(be, &ge)), "recomputed gelu");
    out.push(("gelu_backward recomputed gelu".into(), host(be, &regelu)));
    // Attention, with and without dropout.
    let s = Dims { b, t, h, dh };
    let qkv = up(&rand(rows * 3 * d, 19));
    // The CPU keeps no probabilities (its backward pass recomputes them): its entry is the
    // function both its passes compute them with.
    let keeps = be.keeps_attention_probs();
    let probs_len = if keeps { b * h * t * t } else { 0 };
    for dr in [Dropout::OFF, drop] {
        let (mut ya, mut att, mut sc) =
            (be.zeros(rows * d), be.zeros(probs_len), be.zeros(probs_len));
        be.attention_forward(ya.w(), att.w(), sc.w(), qkv.r(), s, dr);
        out.push((format!("attention_forward p {}", dr.p), host(be, &ya)));
        let probs = if keeps {
            host(be, &att)
        } else {
            let mut p = vec![0.0; b * h * t * t];
            gpt1::kernels::attention::probabilities(Gemm::Fp32, &mut p, &host(be, &qkv), s);
            p
        };
        out.push((format!("attention probs p {}", dr.p), probs));
        let mut dqkv = be.zeros(rows * 3 * d);
        be.attention_backward(dqkv.w(), sc.w(), dout.r(), qkv.r(), att.r(), s, dr);
        out.push((format!("attention_backward p {}", dr.p), host(be, &dqkv)));
    }
    // Against the forward pass's projection (evaluation), then decoding's head-major cache,
    // filled by place_kv from the whole projection.
    let mut yr = be.zeros(pos.len() * d);
    let qh = host(be, &qkv);
    let q_rows =
        up(&pos.iter().flat_map(|&r| qh[r * 3 * d..][..3 * d].to_vec()).collect::<Vec<_>>());
    let proj = KvLayout::rows(s, 3 * d);
    be.attention_rows(yr.w(), q_rows.r(), B::sub(qkv.r(), d, rows * 3 * d - d), proj, s, &pos);
    out.push(("attention_rows".into(), host(be, &yr)));
    let heads = KvLayout::heads(s);
    let mut cache = be.zeros(heads.span(s));
    be.place_kv(cache.w(), heads, qkv.r(), s, &(0..rows).collect::<Vec<_>>());
    out.push(("place_kv every position".into(), host(be, &cache)));
    be.attention_rows(yr.w(), q_rows.r(), cache.r(), heads, s, &pos);
    out.push(("attention_rows decoding's cache".into(), host(be, &yr)));
    // A few rows into the projection's keys and values (evaluation's last block), in another order.
    let mut proj_kv = up(&qh);
    let fresh = up(&rand(pos.len() * 3 * d, 34));
    let few: Vec<usize> = pos.iter().rev().copied().collect();
    be.place_kv(B::sub_mut(proj_kv.w(), d, rows * 3 * d - d), proj, fresh.r(), s, &few);
    out.push(("place_kv into the projection".into(), host(be, &proj_kv)));
    // The LM head's loss, with a bias and ignored targets, in one chunk (the CPU chunks by 512 rows).
    let mut tg = ids.clone();
    tg[5] = u32::MAX;
    tg[60] = u32::MAX;
    let hh = up(&rand(rows * d, 20));
    for with_bias in [false, true] {
        let (mut dh_, mut dwt, mut logits) =
            (be.zeros(rows * d), up(&rand(v * d, 21)), be.zeros(rows * v));
        let hb = up(&rand(v, 22));
        let mut dhb = up(&rand(v, 23));
        let bias = with_bias.then(|| (hb.r(), dhb.w()));
        let nll = be.crossentropy_forward_backward(
            dh_.w(),
            dwt.w(),
            bias,
            logits.w(),
            hh.r(),
            wte.r(),
            &tg,
            d,
            0.25,
        );
        out.push((format!("crossentropy nll bias {with_bias}"), vec![nll as f32]));
        out.push((format!("crossentropy dh bias {with_bias}"), host(be, &dh_)));
        out.push((format!("crossentropy dwte bias {with_bias}"), host(be, &dwt)));
        if with_bias {
            out.push(("crossentropy dbias".into(), host(be, &dhb)));
        }
        let mut lp = vec![0.0f32; rows];
        be.logprobs(&mut lp, logits.w(), hh.r(), wte.r(), with_bias.then(|| hb.r()), &tg, d);
        out.push((format!("logprobs bias {with_bias}"), lp));
    }
    // The LSTM's kernels.
    let (bs, hid, steps) = (3usize, 20usize, 4usize);
    let mut gates = up(&rand(steps * bs * 4 * hid, 24));
    let (mut cc, mut hs) = (be.zeros(steps * bs * hid), be.zeros(steps * bs * hid));
    let (b1, b2) = (up(&rand(4 * hid, 25)), up(&rand(4 * hid, 26)));
    be.add_biases(gates.w(), b1.r(), b2.r());
    out.push(("add_biases".into(), host(be, &gates)));
    for st in 0..steps {
        be.lstm_cell_forward(gates.w(), cc.w(), hs.w(), st, bs, hid);
    }
    out.push(("lstm_cell_forward gates".into(), host(be, &gates)));
    out.push(("lstm_cell_forward c".into(), host(be, &cc)));
    out.push(("lstm_cell_forward h".into(), host(be, &hs)));
    let dhs = up(&rand(steps * bs * hid, 27));
    let (mut dgates, mut dcn) = (be.zeros(steps * bs * 4 * hid), be.zeros(bs * hid));
    for st in (0..steps).rev() {
        be.lstm_cell_backward(dgates.w(), dcn.w(), dhs.r(), gates.r(), cc.r(), st, bs, hid);
    }
    out.push(("lstm_cell_backward dgates".into(), host(be, &dgates)));
    out.push(("lstm_cell_backward dc".into(), host(be, &dcn)));
    let mut dbias = up(&rand(4 * hid, 28));
    be.bias_backward(dbias.w(), dgates.r(), steps * bs);
    out.push(("bias_backward".into(), host(be, &dbias)));
    // Rows to and from the host.
    let rws = [4usize, 0, 70];
    out.push(("gather_rows".into(), be.gather_rows(x.r(), &rws, d)));
    let mut xs = dout_copy(be, &x);
    be.scatter_add_rows(xs.w(), &rws, &rand(3 * d, 29), d);
    out.push(("scatter_add_rows".into(), host(be, &xs)));
    let mut cr = be.zeros(3 * d);
    be.copy_rows(cr.w(), x.r(), &rws, d);
    out.push(("copy_rows".into(), host(be, &cr)));
    // Optimizer.
    let n = 70_001;
    let (mut p, gg, mut mm, mut vv) =
        (up(&rand(n, 30)), up(&rand(n, 31)), up(&rand(n, 32)), up(&rand(n, 33)));
    be.scale(vv.w(), 0.5);
    be.fill(vv.w(), 0.25);
    out.push(("sum_squares".into(), vec![be.sum_squares(p.r()) as f32]));
    let hstep = gpt1::kernels::optim::AdamStep {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step_size: 1e-3,
        bc2_sqrt: 0.3,
        shrink: 0.9999,
    };
    be.adamw(p.w(), gg.r(), mm.w(), vv.w(), hstep);
    out.push(("adamw p".into(), host(be, &p)));
    out.push(("adamw m".into(), host(be, &mm)));
    out.push(("adamw v".into(), host(be, &vv)));
    let mut rz = up(&rand(10, 34));
    be.resize(&mut rz, 4);
    be.resize(&mut rz, 8);
    be.resize(&mut rz, 20);
    out.push(("resize".into(), host(be, &rz)));
    out
}

fn dout_copy<B: Backend>(be: &B, x: &B::Buf) -> B::Buf {
    be.upload(&be.download(x.r()))
}

#[test]
fn every_kernel_matches_the_cpu() {
    let Some(gpu) = gpu(Precision::Fp32) else { return };
    eprintln!("{}", gpu.describe());
    let want = all_ops(&Cpu::FP32);
    let got = all_ops(&gpu);
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        check(name, g, w, 1e-4);
    }
    // Deterministic: the same again, bitwise.
    let again = all_ops(&gpu);
    for ((name, g), (_, a)) in got.iter().zip(&again) {
        assert!(
            g.iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs run to run"
        );
    }
}

#[test]
fn bf16_kernels_match_the_cpu_bf16_within_bf16_rounding() {
    let Some(gpu) = gpu(Precision::Bf16) else { return };
    let want = all_ops(&Cpu::new(Precision::Bf16));
    let got = all_ops(&gpu);
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        check(name, g, w, 2e-2);
    }
}

/// The parity harness itself runs (shapes, sizes) on the CPU, so that a GPU run only finds
/// differences between devices.
#[test]
fn the_parity_harness_runs_on_the_cpu() {
    let a = all_ops(&Cpu::FP32);
    let b = all_ops(&Cpu::FP32);
    assert!(a.len() > 40);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(!x.is_empty() && x.iter().all(|v| v.is_finite()), "{name}");
        assert_eq!(x, y, "{name}");
    }
}

// ---- the model on the GPU ----

use gpt1::model::{Config, Gpt};
use gpt1::train::Trainer;
use gpt1::train::trainer::StepKey;

fn small() -> Config {
    let mut c = Config::named("tiny").unwrap();
    c.vocab_size = 67;
    c.n_positions = 32;
    c.n_embd = 64;
    c.n_layer = 2;
    c.n_head = 4;
    c
}

/// Ten pre-training steps (dropout on, AdamW, clipping) on the CPU and on the GPU from the same
/// weights: the gradients of the first step within 1e-4, the losses along the way within 1e-4,
/// the weights after ten updates close.
fn trajectory(p: Precision, grad_tol: f32, loss_tol: f64, weight_tol: f32) {
    let Some(gpu) = gpu(p) else { return };
    trajectory_on(gpu, p, grad_tol, loss_tol, weight_tol);
}

fn trajectory_on<B: Backend>(gpu: B, p: Precision, grad_tol: f32, loss_tol: f64, weight_tol: f32) {
    let (b, t) = (4, 32);
    let m = Gpt::init(small(), 11);
    let mut cpu = m.clone();
    cpu.backend = Cpu::new(p);
    let mut on_cpu = Trainer::on(cpu, b, t, 0.01);
    let mut on_gpu = Trainer::on(m.to_backend(gpu.clone()), b, t, 0.01);
    let mut r = Rng::new(4);
    for step in 0..10u64 {
        let ids: Vec<u32> = (0..b * t).map(|_| r.below(67) as u32).collect();
        let tg: Vec<u32> = (0..b * t).map(|_| r.below(67) as u32).collect();
        let key = StepKey::Whole(step);
        if step == 0 {
            let lc = on_cpu.gradients(&ids, &tg, t, &[], key).loss;
            let lg = on_gpu.gradients(&ids, &tg, t, &[], key).loss;
            assert!((lc - lg).abs() / lc <= loss_tol, "first loss: cpu {lc} gpu {lg}");
            let gg = gpu.download(on_gpu.grads.r()).into_owned();
            check("gradients of every parameter", &gg, &on_cpu.grads, grad_tol);
        }
        let sc = on_cpu.step(&ids, &tg, t, &[], 1e-3, 1.0, key, step).unwrap();
        let sg = on_gpu.step(&ids, &tg, t, &[], 1e-3, 1.0, key, step).unwrap();
        assert!(
            (sc.loss - sg.loss).abs() / sc.loss <= loss_tol,
            "step {step}: cpu {} gpu {}",
            sc.loss,
            sg.loss
        );
        eprintln!("step {step}: loss cpu {:.6} gpu {:.6}", sc.loss, sg.loss);
    }
    let wg = on_gpu.model.host_params().into_owned();
    let wc = &on_cpu.model.params;
    let e = wg.iter().zip(wc.iter()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(e < weight_tol, "weights after 10 updates differ by {e}");
}

/// The trajectory harness itself, CPU against CPU (bitwise equal), so a GPU run only finds
/// device differences.
#[test]
fn the_trajectory_harness_runs_on_the_cpu() {
    trajectory_on(Cpu::FP32, Precision::Fp32, 0.0, 0.0, f32::MIN_POSITIVE);
    lstm_on(Cpu::FP32, 0.0);
}

#[test]
fn ten_training_steps_on_the_gpu_follow_the_cpu() {
    trajectory(Precision::Fp32, 1e-4, 1e-4, 1e-3);
}

#[test]
fn ten_bf16_training_steps_on_the_gpu_follow_the_cpu_bf16() {
    trajectory(Precision::Bf16, 2e-2, 1e-2, 2e-2);
}

/// The LSTM baseline on the GPU: the same losses as on the CPU over ten steps.
#[test]
fn the_lstm_trains_on_the_gpu_as_on_the_cpu() {
    let Some(gpu) = gpu(Precision::Fp32) else { return };
    lstm_on(gpu, 1e-4);
}

fn lstm_on<B: Backend>(gpu: B, tol: f64) {
    use gpt1::model::lstm::{Lstm, LstmConfig};
    use gpt1::train::lstm::LstmTrainer;
    let c = LstmConfig::new(50, 16, 24, 2);
    let m = Lstm::init(c, 3);
    let (b, t) = (3, 20);
    let mut on_cpu = LstmTrainer::new(m.clone(), b, t, 0.01);
    let mut on_gpu = LstmTrainer::new(m.to_backend(gpu), b, t, 0.01);
    let mut r = Rng::new(8);
    for step in 0..10u64 {
        let ids: Vec<u32> = (0..b * t).map(|_| r.below(50) as u32).collect();
        let tg: Vec<u32> = (0..b * t).map(|_| r.below(50) as u32).collect();
        let sc = on_cpu.step(&ids, &tg, 1e-2, 1.0, step).unwrap();
        let sg = on_gpu.step(&ids, &tg, 1e-2, 1.0, step).unwrap();
        assert!(
            (sc.loss - sg.loss).abs() / sc.loss <= tol,
            "step {step}: cpu {} gpu {}",
            sc.loss,
            sg.loss
        );
    }
}

// ---- the command line without a GPU ----

mod common;

/// On a machine without a GPU, `--device cuda` is a clear error before anything is written
/// (no run directory claimed), never a panic; on one with a GPU this test has nothing to say.
#[test]
fn device_cuda_without_a_gpu_is_a_clear_error() {
    if Cuda::new(0, Precision::Fp32).is_ok() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::write_cycle_data(dir.path());
    let out = dir.path().join("run");
    let args = common::pretrain_args(dir.path(), &out, &["--device", "cuda"]);
    common::fails(&common::strs(&args), "no NVIDIA driver on this machine");
    assert!(!out.exists(), "nothing is written");
    let bench =
        ["bench", "train", "--config", "tiny", "--seq", "32", "--steps", "1", "--device", "cuda:1"];
    common::fails(&bench, "use --device cpu");
    common::fails(
        &["bench", "train", "--config", "tiny", "--device", "gpu"],
        "expected cpu, cuda or cuda:N",
    );
    common::setup(dir.path());
    let ft = dir.path().join("ft");
    let args = common::scratch_args(dir.path(), "SST-2", &ft, &["--device", "cuda", "--quiet"]);
    common::fails(&common::strs(&args), "no NVIDIA driver on this machine");
    assert!(!ft.exists(), "nothing is written");
    let bench = ["bench", "finetune", "--config", "tiny", "--seq", "32", "--device", "cuda"];
    common::fails(&bench, "use --device cpu");
    let score = [
        "score",
        "--model",
        "tests/fixtures/hf_tiny",
        "--ids",
        "tests/fixtures/traj_tokens.bin",
        "--device",
        "cuda",
    ];
    common::fails(&score, "no NVIDIA driver on this machine");
}

/// Greedy generation (the KV-cached decode path: `encoder_rows`, `attention_rows`) on the GPU
/// gives the CPU's tokens.
#[test]
fn greedy_generation_on_the_gpu_gives_the_cpus_tokens() {
    let Some(gpu) = gpu(Precision::Fp32) else { return };
    generation_on(gpu);
}

fn generation_on<B: Backend>(other: B) {
    use gpt1::generate::{GenerateOptions, Sampling, generate};
    let m = Gpt::init(small(), 21);
    let prompt = [3u32, 14, 15, 9, 26];
    let opts = GenerateOptions {
        max_new: 20,
        sampling: Sampling::GREEDY,
        seed: 0,
        num: 2,
        logprobs: None,
    };
    let (want, _) = generate(&m, &prompt, &opts, |_, _| false).unwrap();
    let (got, _) = generate(&m.to_backend(other), &prompt, &opts, |_, _| false).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.ids, w.ids);
    }
}

#[test]
fn the_generation_harness_runs_on_the_cpu() {
    generation_on(Cpu::FP32);
}

/// Fine-tuning steps (task head, auxiliary LM loss, dropout on) on `other` and on the CPU from
/// the same weights: losses within `tol` relative, body and head weights within `wtol`.
fn finetune_on<B: Backend>(other: B, tol: f64, wtol: f32) {
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    use gpt1::train::trainer::TaskObjective;
    let (items_n, cands, len) = (4usize, 2usize, 12usize);
    let n_seq = items_n * cands;
    let task = || TaskObjective::new(Head::new(HeadKind::Choice, 64, 1, 9), 0.5, 0.1, 0.01);
    let m = Gpt::init(small(), 13);
    let mut on_cpu = Trainer::on(m.clone(), n_seq, len, 0.01).with_task(task());
    let mut on_other = Trainer::on(m.to_backend(other), n_seq, len, 0.01).with_task(task());
    let mut r = Rng::new(6);
    for step in 0..5u64 {
        let ids: Vec<u32> = (0..n_seq * len).map(|_| r.below(67) as u32).collect();
        let tg: Vec<u32> = (0..n_seq * len).map(|_| r.below(67) as u32).collect();
        let items: Vec<Item> = (0..items_n)
            .map(|i| Item {
                features: (0..cands).map(|k| vec![(i * cands + k) * len + len - 1]).collect(),
                target: Target::Class(i % cands),
            })
            .collect();
        let key = StepKey::Whole(40 + step);
        let a = on_cpu.step(&ids, &tg, len, &items, 1e-3, 1.0, key, step).unwrap();
        let b = on_other.step(&ids, &tg, len, &items, 1e-3, 1.0, key, step).unwrap();
        assert!(
            (a.loss - b.loss).abs() / a.loss <= tol,
            "step {step}: cpu {} other {}",
            a.loss,
            b.loss
        );
    }
    let w = on_other.model.host_params().into_owned();
    let e = w.iter().zip(on_cpu.model.params.iter()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(e <= wtol, "body weights differ by {e}");
    let (hc, ho) = (&on_cpu.task.as_ref().unwrap().head.w, &on_other.task.as_ref().unwrap().head.w);
    let e = hc.iter().zip(ho).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(e <= wtol, "head weights differ by {e}");
}

#[test]
fn fine_tuning_on_the_gpu_follows_the_cpu() {
    let Some(gpu) = gpu(Precision::Fp32) else { return };
    finetune_on(gpu, 1e-4, 1e-3);
}

#[test]
fn the_fine_tuning_harness_runs_on_the_cpu() {
    finetune_on(Cpu::FP32, 0.0, 0.0);
}

/// NCCL loads (when it is installed: PyTorch's wheels bring it) and makes a unique id without
/// a GPU; the all-reduce itself runs in `tools/gpu_check.sh`'s MPI stage.
#[test]
fn nccl_loads_and_makes_a_unique_id() {
    let v = match cuda::nccl::version() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skipped: NCCL not found ({e})");
            return;
        }
    };
    assert!(v >= 20000, "NCCL 2.x, got {v}");
    let a = cuda::nccl::unique_id().unwrap();
    let b = cuda::nccl::unique_id().unwrap();
    assert_eq!(a.len(), 128);
    assert_ne!(a, b, "two ids differ");
}

/// The ranks use NCCL only when every one can and each has its own GPU (NCCL refuses two ranks
/// on one GPU); they always agree.
#[test]
fn ranks_agree_on_nccl_only_with_a_gpu_each() {
    if let Err(e) = cuda::nccl::version() {
        eprintln!("skipped: NCCL not found ({e})");
        return;
    }
    let run = |gpus: [u64; 2]| -> Vec<bool> {
        let hs: Vec<_> = gpt1::dist::local::group(2)
            .into_iter()
            .zip(gpus)
            .map(|(c, g)| std::thread::spawn(move || cuda::nccl::agreed(&*c, g)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    };
    assert_eq!(run([1 << 20, 2 << 20]), [true, true]);
    assert_eq!(run([5 << 20, 5 << 20]), [false, false]);
}

/// bf16 products against pinned weights read the kept bf16 copies: the same log-probs and
/// decode-step logits, bitwise, as converting the weights at every product.
fn pinned_on<B: Backend>(be: B) {
    let (b, t) = (2, 19);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 67) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 11 % 67) as u32).collect();
    let m = Gpt::init(small(), 23).to_backend(be);
    let run = |m: &Gpt<B>| {
        let mut lp = vec![0.0f32; b * t];
        m.logprobs(&mut m.activations(b, t, false), &ids, &targets, &mut lp);
        let mut acts = m.decode_activations(1, 8);
        let rows: Vec<usize> = (0..5).collect();
        lp.extend(m.cached_logits(&mut acts, &ids[..5], &rows, &[4]));
        lp.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let plain = run(&m);
    let _pinned = m.pin();
    assert_eq!(plain, run(&m), "first pinned pass");
    assert_eq!(plain, run(&m), "second pinned pass (the kept copies)");
}

#[test]
fn pinned_bf16_weights_on_the_gpu_give_the_same_results() {
    let Some(gpu) = gpu(Precision::Bf16) else { return };
    pinned_on(gpu);
}

#[test]
fn the_pinning_harness_runs_on_the_cpu() {
    pinned_on(Cpu::new(Precision::Bf16));
}

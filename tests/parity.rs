//! Parity with PyTorch + HF transformers on the fixtures written by `tools/make_fixtures.py`:
//! logits, loss, every parameter's gradient, and a 10-step AdamW trajectory.

use gpt1::data::{Sampler, TokenData, WindowOrder};
use gpt1::model::checkpoint::load_model;
use gpt1::model::params::layout;
use gpt1::model::{Activations, Gpt};
use gpt1::train::Trainer;
use gpt1::train::trainer::StepKey;
use safetensors::SafeTensors;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Ref {
    bytes: Vec<u8>,
}

impl Ref {
    fn load() -> Self {
        Ref { bytes: std::fs::read(fixtures().join("hf_tiny_ref.safetensors")).unwrap() }
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let v = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
        v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
    fn ids(&self) -> (Vec<usize>, Vec<i64>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let v = st.tensor("ids").unwrap();
        (
            v.shape().to_vec(),
            v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
        )
    }
}

/// Max |a - b| relative to the reference's largest magnitude.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn batch(r: &Ref) -> (usize, usize, Vec<u32>, Vec<u32>) {
    let (shape, ids) = r.ids();
    let (b, t1) = (shape[0], shape[1]);
    let t = t1 - 1;
    let mut inp = Vec::new();
    let mut tg = Vec::new();
    for row in ids.chunks(t1) {
        inp.extend(row[..t].iter().map(|&x| x as u32));
        tg.extend(row[1..].iter().map(|&x| x as u32));
    }
    (b, t, inp, tg)
}

#[test]
fn logits_loss_and_gradients_match_transformers() {
    let model = load_model(&fixtures().join("hf_tiny")).unwrap();
    let r = Ref::load();
    let (b, t, ids, targets) = batch(&r);
    let mut acts = Activations::new(&model.config, b, t, true);
    let logits = model.logits(&mut acts, &ids);
    let e = rel_err(&logits, &r.f32("logits"));
    assert!(e < 1e-4, "logits rel err {e}");

    let mut grads = vec![0.0f32; model.params.len()];
    let n = (b * t) as f32;
    let nll = model.forward_backward(&mut acts, &mut grads, &ids, &targets, None, 1.0 / n);
    let loss = nll / n as f64;
    let want = r.f32("loss")[0] as f64;
    assert!((loss - want).abs() / want < 1e-5, "loss {loss} vs {want}");
    for tinfo in layout(&model.config) {
        let g = &grads[tinfo.range()];
        let e = rel_err(g, &r.f32(&format!("grad.transformer.{}", tinfo.name)));
        assert!(e < 1e-4, "gradient of {}: rel err {e}", tinfo.name);
    }
}

#[test]
fn adamw_trajectory_matches_torch() {
    let model: Gpt = load_model(&fixtures().join("hf_tiny")).unwrap();
    let r = Ref::load();
    let data = TokenData::open(&fixtures().join("traj_tokens.bin")).unwrap();
    let (b, t) = (3, 12);
    let sampler = Sampler::new(&data, t, WindowOrder::Sequential).unwrap();
    let mut tr = Trainer::new(model, b, t, 0.01);
    let (want_loss, want_norm) = (r.f32("traj_loss"), r.f32("traj_grad_norm"));
    let (mut ids, mut tg) = (vec![0; b * t], vec![0; b * t]);
    for step in 0..10u64 {
        sampler.fill(&sampler.starts(0, step, b), &mut ids, &mut tg);
        let s = tr.step(&ids, &tg, t, &[], 1e-3, 1.0, StepKey::Off, step).unwrap();
        let i = step as usize;
        let le = (s.loss as f32 - want_loss[i]).abs() / want_loss[i];
        let ne = (s.grad_norm - want_norm[i]).abs() / want_norm[i];
        assert!(le < 1e-4, "step {step}: loss {} vs {} ", s.loss, want_loss[i]);
        assert!(ne < 1e-4, "step {step}: grad norm {} vs {}", s.grad_norm, want_norm[i]);
    }
    for tinfo in layout(&tr.model.config) {
        let want = r.f32(&format!("final.transformer.{}", tinfo.name));
        let got = &tr.model.params[tinfo.range()];
        let e = rel_err(got, &want);
        assert!(e < 1e-4, "weights of {} after 10 steps: rel err {e}", tinfo.name);
    }
}

/// Fine-tuning numerics against transformers' `OpenAIGPTDoubleHeadsModel`: a multiple-choice
/// batch with right padding, objective mc_loss + 0.5 · lm_loss through [`Trainer::gradients`]
/// (the step `gpt1 finetune` takes), every body gradient and the head's (fixture:
/// `tools/make_finetune_fixtures.py`).
#[test]
fn finetuning_objective_and_gradients_match_double_heads() {
    use gpt1::tasks::batch::next_token_targets;
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    use gpt1::train::trainer::TaskObjective;
    let model = load_model(&fixtures().join("hf_ft")).unwrap();
    let bytes = std::fs::read(fixtures().join("hf_ft_ref.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| -> Vec<f32> {
        let v = st.tensor(n).unwrap();
        v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let i64s = |n: &str| -> Vec<i64> {
        let v = st.tensor(n).unwrap();
        v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let (b, c, t) = (2usize, 2usize, 9usize);
    let d = model.config.n_embd;
    let ids: Vec<u32> = i64s("ids").iter().map(|&x| x as u32).collect();
    let lengths: Vec<usize> = i64s("lengths").iter().map(|&x| x as usize).collect();
    let mc_labels = i64s("mc_labels");
    let lm = next_token_targets(&ids, &lengths, t);
    let items: Vec<Item> = (0..b)
        .map(|e| Item {
            features: (0..c).map(|k| vec![(e * c + k) * t + lengths[e * c + k] - 1]).collect(),
            target: Target::Class(mc_labels[e] as usize),
        })
        .collect();
    let w_file = std::fs::read(fixtures().join("hf_ft/model.safetensors")).unwrap();
    let wst = SafeTensors::deserialize(&w_file).unwrap();
    let wt = |n: &str| -> Vec<f32> {
        let v = wst.tensor(n).unwrap();
        v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let mut head = Head::new(HeadKind::Choice, d, 1, 0);
    head.w = wt("multiple_choice_head.summary.weight");
    head.b = wt("multiple_choice_head.summary.bias");
    let mut acts = Activations::new(&model.config, b * c, t, false);
    model.forward(&mut acts, &ids, None);
    let scores = head.forward(acts.hidden(), &items);
    let want_logits = f32s("mc_logits");
    let got_logits: Vec<f32> = scores.iter().flatten().copied().collect();
    assert!(rel_err(&got_logits, &want_logits) < 1e-4, "{got_logits:?} vs {want_logits:?}");
    let task = TaskObjective::new(head, 0.5, 0.0, 0.01);
    let mut tr = Trainer::new(model, b * c, t, 0.01).with_task(task);
    let l = tr.gradients(&ids, &lm, t, &items, StepKey::Off);
    let mc = l.task_loss.unwrap();
    assert!((mc - f32s("mc_loss")[0] as f64).abs() < 1e-5, "mc loss {mc}");
    assert!((l.lm_loss - f32s("lm_loss")[0] as f64).abs() < 1e-5, "lm loss {}", l.lm_loss);
    for tinfo in layout(&tr.model.config) {
        let e =
            rel_err(&tr.grads[tinfo.range()], &f32s(&format!("grad.transformer.{}", tinfo.name)));
        assert!(e < 1e-4, "gradient of {}: rel err {e}", tinfo.name);
    }
    let hg = tr.head_grad().unwrap();
    assert!(rel_err(&hg.w, &f32s("grad.multiple_choice_head.summary.weight")) < 1e-4);
    assert!(rel_err(&hg.b, &f32s("grad.multiple_choice_head.summary.bias")) < 1e-4);
}

/// Greedy generation with the key/value cache equals transformers' greedy `generate` (argmax
/// with a full recompute every step) token for token (fixture: `tools/make_generate_fixtures.py`;
/// the smallest top-1/top-2 logit gap on the way is recorded there, far from a tie).
#[test]
fn greedy_generation_matches_transformers() {
    use gpt1::generate::{GenerateOptions, Sampling, generate};
    let model = load_model(&fixtures().join("hf_gen")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("hf_gen_ref.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let max_new = r["max_new"].as_u64().unwrap() as usize;
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    for case in r["cases"].as_array().unwrap() {
        let (prompt, want) = (ids(&case["prompt"]), ids(&case["greedy"]));
        let opts = GenerateOptions {
            max_new,
            sampling: Sampling::GREEDY,
            seed: 0,
            num: 1,
            logprobs: None,
        };
        let (got, _) = generate(&model, &prompt, &opts, |_, _| false).unwrap();
        assert_eq!(got[0].ids, want, "prompt {prompt:?}");
    }
}

/// `gpt1 export` of a fine-tuned checkpoint whose body and head are transformers' own
/// (`hf_ft`, written by `save_pretrained` of an `OpenAIGPTDoubleHeadsModel`) gives back every
/// tensor that file holds, bit for bit, under the same names: transformers loads the export
/// with the trained head.
#[test]
fn export_gives_back_the_double_heads_tensors_transformers_wrote() {
    use gpt1::tasks::checkpoint::Finetuned;
    use gpt1::tasks::{Head, HeadKind};
    let src = fixtures().join("hf_ft/model.safetensors");
    let w_file = std::fs::read(&src).unwrap();
    let wst = SafeTensors::deserialize(&w_file).unwrap();
    let model = load_model(&fixtures().join("hf_ft")).unwrap();
    let mut head = Head::new(HeadKind::Choice, model.config.n_embd, 1, 0);
    for (dst, name) in [(&mut head.w, "weight"), (&mut head.b, "bias")] {
        let v = wst.tensor(&format!("multiple_choice_head.summary.{name}")).unwrap();
        *dst =
            v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    }
    let ft = Finetuned {
        model: gpt1::model::Net::Transformer(model),
        head,
        task: gpt1::tasks::readers::task("storycloze").unwrap(),
        tokenizer: gpt1::text::Tokenizer::gpt1(None).unwrap(),
        max_len: 16,
        device: gpt1::backend::Device::Cpu,
        comm: None,
    };
    let tmp = tempfile::tempdir().unwrap();
    gpt1::tasks::export::export_double_heads(&ft, &tmp.path().join("hf")).unwrap();
    let out = std::fs::read(tmp.path().join("hf/model.safetensors")).unwrap();
    let ost = SafeTensors::deserialize(&out).unwrap();
    for (name, v) in wst.tensors() {
        let o = ost.tensor(&name).unwrap_or_else(|_| panic!("{name} is missing"));
        assert_eq!(o.shape(), v.shape(), "{name}");
        assert_eq!(o.data(), v.data(), "{name}");
    }
}

/// Regression heads (both orders summed) export with the bias halved, so the sum over the two
/// sequences of `w·x_k + b/2` is gpt1's `w·(x_1 + x_2) + b`.
#[test]
fn export_of_a_similarity_head_sums_to_gpt1s_prediction() {
    use gpt1::tasks::checkpoint::Finetuned;
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    let model = load_model(&fixtures().join("hf_ft")).unwrap();
    let d = model.config.n_embd;
    let mut head = Head::new(HeadKind::Regress, d, 1, 7);
    head.b = vec![0.3];
    let hidden: Vec<f32> = (0..2 * d).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
    let ours = head.forward(&hidden, &[Item { features: vec![vec![0, 1]], target: Target::None }]);
    let task = gpt1::tasks::readers::task("stsb").unwrap();
    let ft = Finetuned {
        model: gpt1::model::Net::Transformer(model),
        head,
        task,
        tokenizer: gpt1::text::Tokenizer::gpt1(None).unwrap(),
        max_len: 16,
        device: gpt1::backend::Device::Cpu,
        comm: None,
    };
    let tmp = tempfile::tempdir().unwrap();
    gpt1::tasks::export::export_double_heads(&ft, &tmp.path().join("hf")).unwrap();
    let out = std::fs::read(tmp.path().join("hf/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&out).unwrap();
    let get = |n: &str| -> Vec<f32> {
        let v = st.tensor(n).unwrap();
        v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let (w, b) =
        (get("multiple_choice_head.summary.weight"), get("multiple_choice_head.summary.bias"));
    for o in 0..1 {
        let mut z = 0.0f32;
        for k in 0..2 {
            z += b[o];
            for j in 0..d {
                z += w[o * d + j] * hidden[k * d + j];
            }
        }
        assert!((z - ours[0][o]).abs() < 1e-5, "output {o}: {z} vs {}", ours[0][o]);
    }
}

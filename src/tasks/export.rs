//! Export of a fine-tuned checkpoint to transformers' `OpenAIGPTDoubleHeadsModel`, the one
//! class of transformers whose task head is gpt1's: a linear layer *with bias* over the state
//! of a token picked per sequence (`mc_token_ids`, the extract token), with one output
//! (the class forces `num_labels = 1`).
//!
//! What it can hold (its `mc_logits` are `[batch, sequences]`):
//! - multiple choice (RACE, Story Cloze, a custom `choice` task): one sequence per candidate,
//!   `mc_logits[:, k]` is candidate k's score, as gpt1's;
//! - regression (STS-B): the two orders are two sequences and gpt1's prediction is
//!   `mc_logits.sum(1)`; the bias is exported halved so that the sum is exact.
//!
//! What no transformers class can hold: a classification head over K ≥ 2 classes. DoubleHeads
//! has one output, and `OpenAIGPTForSequenceClassification`'s `score` layer has no bias, so a
//! trained `W_y` with its bias would change its predictions there. Those are refused, naming
//! the alternative (the checkpoint's `head.safetensors` beside a transformers-loadable body).

use super::checkpoint::Finetuned;
use super::head::HeadKind;
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_dir_atomic};
use crate::model::checkpoint::safetensors_bytes;
use crate::model::params::layout;
use crate::tasks::readers::{Shape, builtin};
use std::path::Path;

/// The input shape of a fine-tuned task: its custom definition, or the built-in task's.
pub fn shape_of(ft: &Finetuned) -> Option<Shape> {
    match &ft.task.custom {
        Some(c) => Some(c.shape),
        None => builtin(&ft.task.name).map(|b| b.shape),
    }
}

/// Sequences whose `mc_logits` are summed into one of gpt1's outputs (2 for similarity).
pub fn summed_sequences(ft: &Finetuned) -> usize {
    match shape_of(ft) {
        Some(Shape::Unordered | Shape::Regression) => 2,
        _ => 1,
    }
}

/// The files [`export_double_heads`] writes (the tokenizer's among them).
pub const EXPORTED: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "gpt1_task.json",
    "vocab.json",
    "merges.txt",
    crate::text::tokenizer::CONFIG_FILE,
];

/// Refuses an export directory that holds anything but an earlier export (the export replaces
/// the directory whole); returns where to write: the directory a symbolic link names.
pub fn check_export_dir(dir: &Path) -> Result<std::path::PathBuf> {
    let dir = crate::io::resolve_out_dir(dir)?;
    // An earlier export's files are its own; without its gpt1_task.json every file is the
    // user's (a transformers model's config.json, say), and refused by name.
    let earlier = dir.join("gpt1_task.json").is_file();
    crate::io::check_out_dir(&dir, |n| earlier && EXPORTED.contains(&n), None)?;
    Ok(dir)
}

/// Writes `dir` (atomically) as transformers' `save_pretrained` writes a DoubleHeads model:
/// `config.json`, `model.safetensors` (every body tensor under `transformer.`, the tied
/// embedding also as `lm_head.weight`, the head as `multiple_choice_head.summary.*`) and the
/// tokenizer files; `gpt1_task.json` says how to read the logits.
pub fn export_double_heads(ft: &Finetuned, dir: &Path) -> Result<()> {
    let crate::model::Net::Transformer(model) = &ft.model else {
        return Err(Error::Unknown(
            "an LSTM checkpoint: transformers has no class for it (docs/lstm.md shows the \
             PyTorch module its model.safetensors loads into)"
                .into(),
        ));
    };
    let (c, h) = (&model.config, &ft.head);
    if h.n_out != 1 {
        return Err(Error::Unknown(format!(
            "{} is a {}-class classification task: transformers has no class that holds its head \
             (OpenAIGPTDoubleHeadsModel has one output, OpenAIGPTForSequenceClassification's \
             layer has no bias). The checkpoint's model.safetensors loads in transformers as it \
             is (OpenAIGPTModel), and head.safetensors holds W_y [d, {}] and its bias: logits = \
             hidden[extract] @ W + b (docs/formats.md)",
            ft.task.name, h.n_out, h.n_out
        )));
    }
    let summed = summed_sequences(ft);
    let params = model.host_params();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = layout(c)
        .into_iter()
        .map(|t| {
            let r = t.range();
            (format!("transformer.{}", t.name), t.shape, params[r].to_vec())
        })
        .collect();
    let emb = tensors.iter().find(|t| t.0 == "transformer.tokens_embed.weight").cloned();
    if let Some((_, shape, data)) = emb {
        // transformers ties lm_head to the embedding; 4.x reads one name, 5.x the other.
        tensors.push(("lm_head.weight".into(), shape, data));
    }
    // gpt1 keeps W_y as [d, n_out]; nn.Linear's weight is [n_out, d].
    let mut w = vec![0.0f32; h.d * h.n_out];
    for j in 0..h.d {
        for o in 0..h.n_out {
            w[o * h.d + j] = h.w[j * h.n_out + o];
        }
    }
    let b: Vec<f32> = h.b.iter().map(|&x| x / summed as f32).collect();
    tensors.push(("multiple_choice_head.summary.weight".into(), vec![h.n_out, h.d], w));
    tensors.push(("multiple_choice_head.summary.bias".into(), vec![h.n_out], b));
    let views: Vec<(String, Vec<usize>, &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice())).collect();
    let weights = safetensors_bytes(&views)?;

    let mut config = c.to_hf_json();
    config["architectures"] = serde_json::json!(["OpenAIGPTDoubleHeadsModel"]);
    config["num_labels"] = h.n_out.into();
    let names: Vec<String> = if ft.task.labels.len() == h.n_out {
        ft.task.labels.clone()
    } else {
        (0..h.n_out).map(|i| format!("LABEL_{i}")).collect()
    };
    config["id2label"] = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), serde_json::Value::from(n.as_str())))
        .collect();
    config["label2id"] =
        names.iter().enumerate().map(|(i, n)| (n.clone(), serde_json::Value::from(i))).collect();
    let how = match (h.kind, summed) {
        (HeadKind::Choice, _) => {
            "one sequence per candidate; mc_logits[:, k] is candidate k's score, softmax over candidates"
        }
        (HeadKind::Regress, _) => {
            "the two orders as two sequences; the prediction is mc_logits.sum(1)"
        }
        (_, 2) => "the two orders as two sequences; the class logits are mc_logits.sum(1)",
        _ => "one sequence per example; the class logits are mc_logits[:, 0]",
    };
    let task = serde_json::json!({
        "task": ft.task,
        "max_len": ft.max_len,
        "sequences_summed": summed,
        "logits": how,
        "mc_token_ids": "the position of the extract token _classify_ (the last token of each sequence)",
    });
    write_dir_atomic(dir, |tmp| {
        write_atomic(
            &tmp.join("config.json"),
            serde_json::to_string_pretty(&config).expect("json").as_bytes(),
        )?;
        write_atomic(&tmp.join("model.safetensors"), &weights)?;
        write_atomic(
            &tmp.join("gpt1_task.json"),
            serde_json::to_string_pretty(&task).expect("json").as_bytes(),
        )?;
        ft.tokenizer.save(tmp)?;
        Ok(())
    })
}

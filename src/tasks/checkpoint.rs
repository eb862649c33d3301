//! Fine-tuned checkpoints: the HF-layout model with the three special tokens, the head
//! (`head.safetensors`), the task definition and the tokenizer, so `evaluate`/`predict` need
//! nothing else.

use super::Head;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::rng::{derive, stream};
use crate::model::Gpt;
use crate::model::checkpoint::{safetensors_bytes, save_model};
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;
use std::path::Path;

/// Gives `model` the three special tokens when its vocabulary is the bare BPE one (new rows
/// N(0, 0.02)), or checks it already has them.
pub fn with_special_tokens(mut model: Gpt, tok: &Tokenizer, seed: u64) -> Result<Gpt> {
    let (v, want) = (model.config.vocab_size, tok.vocab_size());
    if v == want {
        return Ok(model);
    }
    if v != tok.bpe_vocab_size() {
        return Err(Error::Vocab(format!(
            "the model has {v} token embeddings, the tokenizer {} (+3 special): they are not the same vocabulary",
            tok.bpe_vocab_size()
        )));
    }
    let d = model.config.n_embd;
    let key = derive(seed, stream::SPECIAL_TOKENS);
    let extra: Vec<f32> = (0..3 * d)
        .map(|i| {
            (crate::kernels::rng::normal(key, i as u64) * model.config.initializer_range as f64)
                as f32
        })
        .collect();
    let at = v * d;
    model.params.splice(at..at, extra);
    model.config.vocab_size = want;
    Ok(model)
}

/// Writes a fine-tuned run's checkpoint: the HF-layout model, the head, the task and the
/// tokenizer, so `evaluate`/`predict` need nothing else.
pub fn save_finetuned<B: Backend>(
    dir: &Path,
    model: &Gpt<B>,
    head: &Head,
    def: &TaskDef,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<()> {
    save_finetuned_with(dir, head, def, tok, max_len, |tmp| save_model(tmp, model))
}

/// [`save_finetuned`] with the body written by `write_model` (either architecture).
pub fn save_finetuned_with(
    dir: &Path,
    head: &Head,
    def: &TaskDef,
    tok: &Tokenizer,
    max_len: usize,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    crate::io::write_dir_atomic(dir, |tmp| {
        write_model(tmp)?;
        let bytes = safetensors_bytes(&[
            ("weight".into(), vec![head.d, head.n_out], &head.w),
            ("bias".into(), vec![head.n_out], &head.b),
        ])?;
        write_atomic(&tmp.join("head.safetensors"), &bytes)?;
        let task = serde_json::json!({"task": def, "max_len": max_len});
        write_atomic(
            &tmp.join("task.json"),
            serde_json::to_string_pretty(&task).expect("json").as_bytes(),
        )?;
        tok.save(tmp)?;
        Ok(())
    })
}

/// A fine-tuned checkpoint loaded back: model, head, task, tokenizer, context length.
pub struct Finetuned {
    /// GPT-1, or the LSTM baseline.
    pub model: crate::model::Net,
    pub head: Head,
    pub task: TaskDef,
    pub tokenizer: Tokenizer,
    pub max_len: usize,
    /// Where [`crate::tasks::evaluate::scored_split`] runs the model (the CPU when loaded).
    pub device: crate::backend::Device,
    /// The ranks that share [`crate::tasks::evaluate::scored_split`]'s batches under a launcher
    /// (each scores every N-th batch; every rank gets all scores); None: one process.
    pub comm: Option<std::sync::Arc<dyn crate::dist::Collective>>,
}

/// Loads what [`save_finetuned`] wrote.
pub fn load_finetuned(dir: &Path) -> Result<Finetuned> {
    let tp = dir.join("task.json");
    // Missing is one thing (the wrong directory), unreadable or not text another (a damaged one).
    let text = std::fs::read_to_string(&tp).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid(
            dir,
            "not a fine-tuned checkpoint: task.json is missing; pass the best/ directory of a \
             `gpt1 finetune` run",
        ),
        std::io::ErrorKind::InvalidData => {
            Error::invalid(&tp, "not UTF-8 text: the file is damaged")
        }
        _ => Error::io(&tp, e),
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::invalid(&tp, format!("not JSON ({e})")))?;
    let task: TaskDef = serde_json::from_value(v["task"].clone())
        .map_err(|e| Error::invalid(&tp, format!("not a task definition ({e})")))?;
    let max_len =
        v["max_len"].as_u64().ok_or_else(|| Error::invalid(&tp, "max_len is missing"))? as usize;
    let model = crate::model::Net::load(dir)?;
    let config = model.config();
    let width = config.width();
    let tokenizer = Tokenizer::load(dir, None)?;
    // The parts were saved together; files replaced by hand must still fit each other.
    if tokenizer.vocab_size() != config.vocab_size() {
        return Err(Error::invalid(
            dir,
            format!(
                "the tokenizer has {} tokens with the special ones, the model {}: vocab.json / \
                 merges.txt are not the model's",
                tokenizer.vocab_size(),
                config.vocab_size()
            ),
        ));
    }
    if max_len > config.n_positions() {
        return Err(Error::invalid(
            &tp,
            format!("max_len {max_len} exceeds the model's n_positions {}", config.n_positions()),
        ));
    }
    let head = load_head(dir, &task, width)?;
    let device = crate::backend::Device::Cpu;
    Ok(Finetuned { model, head, task, tokenizer, max_len, device, comm: None })
}

/// The head of a fine-tuned checkpoint (`head.safetensors`), its shape checked against the
/// task and the body's width `d`.
pub fn load_head(dir: &Path, task: &TaskDef, d: usize) -> Result<Head> {
    use crate::model::checkpoint::{copy_f32, read_safetensors};
    let hp = dir.join("head.safetensors");
    let bytes = read_safetensors(&hp)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(&hp, format!("corrupt head ({e})")))?;
    let mut head = Head::new(task.kind, d, task.n_out(), 0);
    for (name, dst, shape) in
        [("weight", &mut head.w, vec![head.d, head.n_out]), ("bias", &mut head.b, vec![head.n_out])]
    {
        let view = st.tensor(name).map_err(|e| Error::invalid(&hp, format!("{name}: {e}")))?;
        if view.shape() != shape.as_slice() {
            return Err(Error::invalid(
                &hp,
                format!("{name} has shape {:?}, the task needs {shape:?}", view.shape()),
            ));
        }
        copy_f32(&hp, name, &view, dst)?;
    }
    Ok(head)
}

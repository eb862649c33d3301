//! Training checkpoints: the HF-layout model plus the trainer state for an exact resume.

use super::optim::AdamW;
use crate::backend::{Backend, DeviceBuf};
use crate::data::WindowOrder;
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_dir_atomic};
use crate::model::Gpt;
use crate::model::checkpoint::{
    copy_f32, load_model, read_safetensors, safetensors_bytes, save_model,
};
use crate::text::Tokenizer;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Everything besides the weights and moments that a resume must agree with. The data order
/// and the dropout masks are functions of (seed, step), so no RNG state beyond them is needed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer updates done.
    pub step: u64,
    pub seed: u64,
    pub batch: usize,
    pub seq: usize,
    pub micro_batch: usize,
    pub sampling: WindowOrder,
    pub data: PathBuf,
    /// The products' precision (runs from before mixed precision were fp32).
    #[serde(default)]
    pub precision: crate::backend::Precision,
}

/// Writes `dir` (atomically, as a whole) with model, state and optimizer moments.
pub fn save<B: Backend>(
    dir: &Path,
    model: &Gpt<B>,
    opt: &AdamW<B>,
    state: &TrainerState,
    tok: Option<&Tokenizer>,
) -> Result<()> {
    save_with(dir, opt, state, tok, |tmp| save_model(tmp, model))
}

/// [`save`] with the model written by `write_model` (either architecture).
pub fn save_with<B: Backend>(
    dir: &Path,
    opt: &AdamW<B>,
    state: &TrainerState,
    tok: Option<&Tokenizer>,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    write_dir_atomic(dir, |tmp| {
        write_model(tmp)?;
        if let Some(t) = tok {
            t.save(tmp)?;
        }
        let (m, v) = (opt.backend().download(opt.m.r()), opt.backend().download(opt.v.r()));
        write_moments(tmp, &[("exp_avg", &m), ("exp_avg_sq", &v)])?;
        #[derive(Serialize)]
        struct Saved<'a> {
            state: &'a TrainerState,
            adam_t: u64,
        }
        let json = super::rundir::json_text(&Saved { state, adam_t: opt.t })?;
        write_atomic(&tmp.join(STATE_FILE), json.as_bytes())
    })
}

/// Loads model, optimizer moments and state from a checkpoint directory.
pub fn load(dir: &Path, weight_decay: f32) -> Result<(Gpt, AdamW, TrainerState)> {
    let model = load_model(dir)?;
    let mut opt = AdamW::new(&model.config, weight_decay);
    let state = load_state(dir, &mut opt)?;
    Ok((model, opt, state))
}

/// The trainer state of a checkpoint, and its optimizer moments into `opt` (shapes checked).
pub fn load_state(dir: &Path, opt: &mut AdamW) -> Result<TrainerState> {
    let sp = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
    let bad = |m: String| {
        Error::invalid(
            &sp,
            format!("{m}; the checkpoint is incomplete: resume from an earlier one"),
        )
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let state: TrainerState =
        serde_json::from_value(v["state"].clone()).map_err(|e| bad(e.to_string()))?;
    opt.t = v["adam_t"].as_u64().ok_or_else(|| bad("adam_t missing".into()))?;
    read_moments(dir, &mut [("exp_avg", &mut opt.m), ("exp_avg_sq", &mut opt.v)])?;
    Ok(state)
}

/// Writes named optimizer moments (flat) as `dir/optimizer.safetensors`.
pub(crate) fn write_moments(dir: &Path, moments: &[(&str, &[f32])]) -> Result<()> {
    let tensors: Vec<(String, Vec<usize>, &[f32])> =
        moments.iter().map(|(n, v)| (n.to_string(), vec![v.len()], *v)).collect();
    write_atomic(&dir.join(OPTIMIZER_FILE), &safetensors_bytes(&tensors)?)
}

/// Reads named moments from `dir/optimizer.safetensors` into their buffers, each checked to
/// have the buffer's length (another model's state is refused).
pub(crate) fn read_moments(dir: &Path, into: &mut [(&str, &mut Vec<f32>)]) -> Result<()> {
    let op = dir.join(OPTIMIZER_FILE);
    let bytes = read_safetensors(&op)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(&op, format!("corrupt optimizer state ({e})")))?;
    for (name, dst) in into.iter_mut() {
        let view = st.tensor(name).map_err(|e| Error::invalid(&op, format!("{name}: {e}")))?;
        if view.shape() != [dst.len()] {
            return Err(Error::invalid(
                &op,
                format!(
                    "{name} has shape {:?}, the model has {} parameters",
                    view.shape(),
                    dst.len()
                ),
            ));
        }
        copy_f32(&op, name, &view, dst)?;
    }
    Ok(())
}

/// The resumable checkpoint with the most steps in a run directory (`checkpoint-N/` or
/// `final/` holding a trainer state).
pub fn latest(run_dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let rd = match std::fs::read_dir(run_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(run_dir, e)),
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name == "final" || super::rundir::checkpoint_step(&name).is_some()) {
            continue;
        }
        let sp = entry.path().join(STATE_FILE);
        let Ok(text) = std::fs::read_to_string(&sp) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(step) = v["state"]["step"].as_u64()
            && best.as_ref().is_none_or(|(s, _)| step > *s)
        {
            best = Some((step, entry.path()));
        }
    }
    Ok(best)
}

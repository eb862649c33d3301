//! Resumable fine-tuning checkpoints (`checkpoint-N/`): the fine-tuned checkpoint of
//! [`save_finetuned_with`] plus the body's and the head's Adam moments and the loop's position
//! and best score so far.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::tasks::checkpoint::{load_head, save_finetuned_with};
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;
use crate::train::checkpoint::{STATE_FILE, read_moments, write_moments};
use crate::train::lm::LmTrainer;
use crate::train::rundir;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the loop stands, and the best dev result so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    pub step: u64,
    pub best_score: Option<f64>,
    pub best_epoch: usize,
    pub best_step: u64,
    /// Adam's update counts: body, head matrix, head bias.
    pub adam_t: [u64; 3],
}

/// Writes `dir` whole: the fine-tuned checkpoint of `trainer` (which has a task), its moments
/// and the loop state (Adam's update counts set from the optimizers).
pub fn save(
    dir: &Path,
    trainer: &dyn LmTrainer,
    def: &TaskDef,
    tok: &Tokenizer,
    max_len: usize,
    mut state: LoopState,
) -> Result<()> {
    let task = trainer.task().expect("a fine-tuning trainer has a task");
    let [w, b] = task.optimizers();
    let ([m, v], adam_t) = trainer.host_moments();
    state.adam_t = [adam_t, w.t, b.t];
    crate::io::write_dir_atomic(dir, |tmp| {
        save_finetuned_with(tmp, &task.head, def, tok, max_len, |tmp| trainer.save_model(tmp))?;
        // Written into the finished directory's temporary twin, then moved with it.
        write_moments(
            tmp,
            &[
                ("body.exp_avg", &m),
                ("body.exp_avg_sq", &v),
                ("head.weight.exp_avg", &w.m),
                ("head.weight.exp_avg_sq", &w.v),
                ("head.bias.exp_avg", &b.m),
                ("head.bias.exp_avg_sq", &b.v),
            ],
        )?;
        write_atomic(&tmp.join(STATE_FILE), rundir::json_text(&state)?.as_bytes())
    })
}

/// The newest `checkpoint-N/` of a fine-tuning run holding a loop state.
pub fn latest(run: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(run)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = rundir::checkpoint_step(&e.file_name().to_string_lossy())?;
            e.path().join(STATE_FILE).exists().then(|| (n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

/// Restores a training checkpoint into `trainer` (which has a task; shapes checked) and
/// returns its loop state.
pub fn load(dir: &Path, trainer: &mut dyn LmTrainer, def: &TaskDef) -> Result<LoopState> {
    let loaded = crate::model::Net::load(dir)?.into_params();
    let d = trainer.task().expect("a fine-tuning trainer has a task").head.d;
    let head = load_head(dir, def, d)?;
    let n = trainer.n_params();
    if loaded.len() != n {
        return Err(Error::invalid(dir, "this checkpoint is of another model or task"));
    }
    let sp = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
    let state: LoopState = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            &sp,
            format!("{e}; the checkpoint is incomplete: resume from an earlier one"),
        )
    })?;
    let task = trainer.task_mut().expect("a fine-tuning trainer has a task");
    task.head = head;
    let [w, b] = task.optimizers_mut();
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    read_moments(
        dir,
        &mut [
            ("body.exp_avg", &mut m),
            ("body.exp_avg_sq", &mut v),
            ("head.weight.exp_avg", &mut w.m),
            ("head.weight.exp_avg_sq", &mut w.v),
            ("head.bias.exp_avg", &mut b.m),
            ("head.bias.exp_avg_sq", &mut b.v),
        ],
    )?;
    (w.t, b.t) = (state.adam_t[1], state.adam_t[2]);
    trainer.restore(&loaded, [&m, &v], state.adam_t[0]);
    Ok(state)
}

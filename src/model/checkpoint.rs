//! Checkpoints in HF transformers' layout: `config.json` + `model.safetensors` with OpenAIGPT's
//! tensor names and Conv1D's `[in, out]` weights, so `OpenAIGPTLMHeadModel.from_pretrained(dir)`
//! loads them as they are.

use super::config::Config;
use super::gpt::Gpt;
use super::params::{TensorInfo, layout};
use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Serialises f32 tensors named as in [`layout`] (or any name → (shape, data) list).
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, &[f32])]) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = TensorView::new(Dtype::F32, s.clone(), bytemuck::cast_slice(d))
                .map_err(|e| Error::Serialize(format!("tensor {n}: {e}")))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Serialize(format!("safetensors: {e}")))
}

/// Writes `config.json` and `model.safetensors` into `dir` (each file atomically).
pub fn save_model<B: Backend>(dir: &Path, model: &Gpt<B>) -> Result<()> {
    let params = model.host_params();
    write_checkpoint(dir, &model.config.to_hf_json(), &layout(&model.config), &params)
}

/// Writes `config` as `dir/config.json` and the tensors of `layout`, cut from `params`, as
/// `dir/model.safetensors` (each file atomically): either model's checkpoint.
pub(crate) fn write_checkpoint(
    dir: &Path,
    config: &impl serde::Serialize,
    layout: &[TensorInfo],
    params: &[f32],
) -> Result<()> {
    let cfg = serde_json::to_string_pretty(config).expect("a config serialises");
    write_atomic(&dir.join(CONFIG_FILE), cfg.as_bytes())?;
    let tensors: Vec<(String, Vec<usize>, &[f32])> =
        layout.iter().map(|t| (t.name.clone(), t.shape.clone(), &params[t.range()])).collect();
    write_atomic(&dir.join(WEIGHTS_FILE), &safetensors_bytes(&tensors)?)
}

/// Reads a safetensors file's bytes, mapping errors to the path.
pub fn read_safetensors(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Copies an f32 tensor's little-endian bytes into `dst`; a NaN or infinite value is refused
/// (damaged weights or state: nothing gpt1 saves holds one).
pub fn copy_f32(path: &Path, name: &str, view: &TensorView, dst: &mut [f32]) -> Result<()> {
    if view.dtype() != Dtype::F32 {
        return Err(Error::invalid(
            path,
            format!(
                "tensor {name} is {:?}; only float32 checkpoints are read (save with torch_dtype=float32)",
                view.dtype()
            ),
        ));
    }
    for (d, b) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    if let Some(i) = dst.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            path,
            format!(
                "tensor {name} holds a NaN or infinite value (element {i}): the file is damaged; \
                 use an earlier checkpoint"
            ),
        ));
    }
    Ok(())
}

/// The tensors of `layout` from the safetensors file `path`, in one flat buffer: each found
/// under the first of `names(t)` the file has, its shape checked before the buffer is
/// allocated (a config.json that promises more than the file holds fails here, not in the
/// allocator), float32, finite. `config` describes the configuration in errors.
pub(crate) fn read_checkpoint(
    path: &Path,
    layout: &[TensorInfo],
    names: impl Fn(&TensorInfo) -> Vec<String>,
    config: &str,
) -> Result<Vec<f32>> {
    let bytes = read_safetensors(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::invalid(path, format!("not a valid safetensors file ({e}); the checkpoint is truncated or corrupt: re-save or use an earlier checkpoint"))
    })?;
    let present: std::collections::HashSet<String> =
        st.names().into_iter().map(|s| s.to_string()).collect();
    let mut found = Vec::with_capacity(layout.len());
    for t in layout {
        let Some(name) = names(t).into_iter().find(|n| present.contains(n)) else {
            return Err(Error::invalid(
                path,
                format!(
                    "tensor {} is missing; the checkpoint does not match config.json ({config})",
                    t.name
                ),
            ));
        };
        let view =
            st.tensor(&name).map_err(|e| Error::invalid(path, format!("tensor {name}: {e}")))?;
        if view.shape() != t.shape.as_slice() {
            return Err(Error::invalid(
                path,
                format!(
                    "tensor {name} has shape {:?}, config.json implies {:?}: config and weights disagree",
                    view.shape(),
                    t.shape
                ),
            ));
        }
        found.push((t, name, view));
    }
    let mut params = vec![0.0f32; layout.last().map_or(0, |t| t.range().end)];
    for (t, name, view) in found {
        copy_f32(path, &name, &view, &mut params[t.range()])?;
    }
    Ok(params)
}

/// Loads a model from an HF-layout directory. Accepts today's names (`transformer.` prefix,
/// `lm_head.weight` for the tied matrix) and the unprefixed names of the original `openai-gpt`.
pub fn load_model(dir: &Path) -> Result<Gpt> {
    let cfg_path = dir.join(CONFIG_FILE);
    if !dir.is_dir() {
        return Err(Error::invalid(
            dir,
            "not a checkpoint directory (expected config.json and model.safetensors in it)",
        ));
    }
    let config = Config::load(&cfg_path)?;
    // Today's names (`transformer.` prefix, the tied matrix as `lm_head.weight` too) and the
    // original `openai-gpt`'s unprefixed ones.
    let names = |t: &TensorInfo| {
        let mut n = vec![t.name.clone(), format!("transformer.{}", t.name)];
        if t.name == "tokens_embed.weight" {
            n.push("lm_head.weight".to_string());
        }
        n
    };
    let desc = format!("n_layer {}", config.n_layer);
    let params = read_checkpoint(&dir.join(WEIGHTS_FILE), &layout(&config), names, &desc)?;
    Ok(Gpt { config, backend: Cpu::FP32, params })
}

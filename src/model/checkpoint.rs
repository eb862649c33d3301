//! Checkpoints in HF transformers' layout: `config.json` + `model.safetensors` with OpenAIGPT's
//! tensor names and Conv1D's `[in, out]` weights, so `OpenAIGPTLMHeadModel.from_pretrained(dir)`
//! loads them as they are.

use super::config::Config;
use super::gpt::Gpt;
use super::params::{layout, num_params};
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
    let cfg = serde_json::to_string_pretty(&model.config.to_hf_json()).expect("json");
    write_atomic(&dir.join(CONFIG_FILE), cfg.as_bytes())?;
    let params = model.host_params();
    let tensors: Vec<(String, Vec<usize>, &[f32])> = layout(&model.config)
        .into_iter()
        .map(|t| {
            let r = t.range();
            (t.name, t.shape, &params[r])
        })
        .collect();
    write_atomic(&dir.join(WEIGHTS_FILE), &safetensors_bytes(&tensors)?)
}

/// Reads a safetensors file's bytes, mapping errors to the path.
pub fn read_safetensors(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Copies an f32 tensor's little-endian bytes into `dst`.
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
    Ok(())
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
    let path = dir.join(WEIGHTS_FILE);
    let bytes = read_safetensors(&path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::invalid(&path, format!("not a valid safetensors file ({e}); the checkpoint is truncated or corrupt: re-save or use an earlier checkpoint"))
    })?;
    let names: std::collections::HashSet<String> =
        st.names().into_iter().map(|s| s.to_string()).collect();
    // Every tensor is found and its shape checked before the parameters are allocated: a
    // config.json that promises more than the file holds fails here, not in the allocator.
    let mut found_names = Vec::new();
    for t in layout(&config) {
        let prefixed = format!("transformer.{}", t.name);
        let candidates = if t.name == "tokens_embed.weight" {
            vec![t.name.clone(), prefixed, "lm_head.weight".to_string()]
        } else {
            vec![t.name.clone(), prefixed]
        };
        let Some(found) = candidates.into_iter().find(|n| names.contains(n)) else {
            return Err(Error::invalid(
                &path,
                format!(
                    "tensor {} is missing; the checkpoint does not match config.json (n_layer {})",
                    t.name, config.n_layer
                ),
            ));
        };
        let view =
            st.tensor(&found).map_err(|e| Error::invalid(&path, format!("tensor {found}: {e}")))?;
        if view.shape() != t.shape.as_slice() {
            return Err(Error::invalid(
                &path,
                format!(
                    "tensor {found} has shape {:?}, config.json implies {:?}: config and weights disagree",
                    view.shape(),
                    t.shape
                ),
            ));
        }
        found_names.push((t, found));
    }
    let mut params = vec![0.0f32; num_params(&config)];
    for (t, found) in found_names {
        let view =
            st.tensor(&found).map_err(|e| Error::invalid(&path, format!("tensor {found}: {e}")))?;
        copy_f32(&path, &found, &view, &mut params[t.range()])?;
        if let Some(i) = params[t.range()].iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                &path,
                format!(
                    "tensor {found} holds a NaN or infinite value (element {i}): the weights are damaged; use an earlier checkpoint"
                ),
            ));
        }
    }
    Ok(Gpt { config, backend: Cpu::FP32, params })
}

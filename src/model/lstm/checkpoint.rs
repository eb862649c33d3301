//! LSTM checkpoints: `config.json` (`"model_type": "lstm"`) and `model.safetensors` with
//! PyTorch's tensor names, so either side reads what the other saved.

use super::{Lstm, LstmConfig, lstm_layout};
use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::model::params::TensorInfo;

/// Writes `config.json` and `model.safetensors` (PyTorch's names) into `dir`.
pub fn save_lstm<B: Backend>(dir: &std::path::Path, m: &Lstm<B>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let params = m.host_params();
    crate::model::checkpoint::write_checkpoint(dir, &m.config, &lstm_layout(&m.config), &params)
}

/// Whether `dir` holds an LSTM checkpoint (its `config.json` says `"model_type": "lstm"`).
pub fn is_lstm(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join(crate::model::checkpoint::CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["model_type"] == "lstm")
}

/// The validated `config.json` of an LSTM checkpoint directory.
pub fn load_lstm_config(dir: &std::path::Path) -> Result<LstmConfig> {
    let cp = dir.join(crate::model::checkpoint::CONFIG_FILE);
    let text = std::fs::read_to_string(&cp).map_err(|e| Error::io(&cp, e))?;
    let config: LstmConfig = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(&cp, format!("not an LSTM config ({e})")))?;
    config.validate().map_err(|m| Error::invalid(&cp, m))?;
    Ok(config)
}

/// Loads what [`save_lstm`] (or PyTorch's `save_file(model.state_dict())`) wrote.
pub fn load_lstm(dir: &std::path::Path) -> Result<Lstm> {
    let config = load_lstm_config(dir)?;
    let path = dir.join(crate::model::checkpoint::WEIGHTS_FILE);
    let names = |t: &TensorInfo| vec![t.name.clone()];
    let desc = format!("{config:?}");
    let params =
        crate::model::checkpoint::read_checkpoint(&path, &lstm_layout(&config), names, &desc)?;
    Ok(Lstm { config, backend: Cpu::FP32, params })
}

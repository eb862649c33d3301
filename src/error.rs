//! The library's typed errors: each names the file (or step) and says what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS's message is part of this error's text, so it is not also its `source` (an
    /// error chain would print it twice).
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A file exists but its contents are wrong (bad magic, short, corrupt, wrong shapes).
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    /// A task's data folder lacks the files of a split (`msg` says which files it looked for).
    #[error("{path}: missing split file: {msg}")]
    MissingSplit { path: PathBuf, msg: String },
    /// A setting the caller chose cannot work. `setting` is the option's name as the options
    /// structs spell it (`batch`, `max_len`); the command line shows it as its flag.
    #[error("{setting} {msg}")]
    Setting { setting: &'static str, msg: String },
    /// A model configuration (preset or config.json) that cannot work.
    #[error("{0}")]
    ModelConfig(String),
    /// A name that is none of the known ones (task, split).
    #[error("{0}")]
    Unknown(String),
    /// Token ids and a vocabulary that do not fit together.
    #[error("{0}")]
    Vocab(String),
    /// The tokenizer library failed on its input (BPE training, normalising, encoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Serialising tensors failed.
    #[error("serialising {0}")]
    Serialize(String),
    /// Training produced a NaN or infinite loss.
    #[error(
        "step {step}: the loss is {loss}; lower --lr, keep --clip on, or resume from an earlier checkpoint"
    )]
    Diverged { step: u64, loss: f64 },
    /// A run that learned nothing more than frequencies, stopped by `--on-collapse stop`.
    #[error("{0}")]
    Collapsed(String),
    /// Ctrl-C or SIGTERM: the run stopped after a step and saved it.
    #[error("interrupted after step {step}; saved {dir}")]
    Interrupted { step: u64, dir: PathBuf },
    /// Data-parallel training: ranks that disagree, or MPI that is missing.
    #[error("{0}")]
    Distributed(String),
    /// A device (`--device cuda`) that is missing or failed: no driver, no GPU, a library that
    /// cannot be found or loaded, a kernel that does not compile.
    #[error("{0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), err: source }
    }
    /// A [`Error::Setting`].
    pub fn setting(setting: &'static str, msg: impl Into<String>) -> Self {
        Error::Setting { setting, msg: msg.into() }
    }
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Invalid { path: path.into(), msg: msg.into() }
    }
}

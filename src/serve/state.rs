//! What every request handler shares: the queue to the model thread, the tokenizer, the
//! model's name and sizes, the limits.

use super::api::{ApiError, ApiResult};
use super::engine::Job;
use crate::tasks::readers::{Shape, TaskDef};
use crate::text::Tokenizer;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

/// The server's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests waiting for the model at most; more are answered 503.
    pub max_queue: usize,
    /// Choices per prompt at most (`n`).
    pub max_n: usize,
}

/// A fine-tuned checkpoint's task, as `/v1/classify` reads its inputs.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub def: TaskDef,
    pub shape: Shape,
}

#[derive(Clone)]
pub struct State {
    pub jobs: SyncSender<Job>,
    pub tokenizer: Arc<Tokenizer>,
    /// The id `/v1/models` lists and requests name.
    pub name: Arc<str>,
    /// Other names a request may use for the model (the directory as given).
    pub aliases: Arc<[String]>,
    pub n_positions: usize,
    pub vocab_size: usize,
    pub limits: Limits,
    pub api_key: Option<Arc<str>>,
    /// GPT-1 has no end-of-text token; its newline token stands in for one (see docs/serving.md).
    pub eos: Option<(String, u32)>,
    pub task: Option<Arc<TaskInfo>>,
    counter: Arc<AtomicU64>,
}

impl State {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        jobs: SyncSender<Job>,
        tokenizer: Arc<Tokenizer>,
        name: String,
        aliases: Vec<String>,
        n_positions: usize,
        limits: Limits,
        api_key: Option<String>,
        task: Option<TaskInfo>,
    ) -> Self {
        let vocab_size = tokenizer.vocab_size();
        let eos = (0..vocab_size as u32)
            .find(|&i| tokenizer.token(i) == Some("\n</w>"))
            .map(|i| ("\n".to_string(), i));
        Self {
            jobs,
            tokenizer,
            name: name.into(),
            aliases: aliases.into(),
            n_positions,
            vocab_size,
            limits,
            api_key: api_key.map(Into::into),
            eos,
            task: task.map(Arc::new),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fresh response id.
    pub fn next_id(&self) -> String {
        format!("cmpl-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// A request's `model`, when given, must be this server's.
    pub fn check_model(&self, m: &Map<String, Value>) -> ApiResult<()> {
        match m.get("model") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if *s == *self.name || self.aliases.contains(s) => Ok(()),
            Some(v) => Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("model {v} is not served here; this server has {:?}", &*self.name),
                param: Some("model"),
            }),
        }
    }
}

//! `gpt1 serve`: an OpenAI-compatible HTTP server (completions with log-probabilities, echo,
//! streaming; the tokenizer endpoints lm-evaluation-harness's remote tokenizer calls; a
//! fine-tuned checkpoint's classifier), on axum and tokio. HTTP runs on a small async runtime;
//! the model runs on a thread of its own ([`engine`]) fed by a bounded queue, so a full queue
//! is a quick 503 and the async threads never wait on the model. See docs/serving.md.

pub mod api;
mod classify;
pub mod completions;
pub mod engine;
mod routes;
pub mod state;

use crate::backend::{Backend, Cpu, Device, Precision};
use crate::error::{Error, Result};
use crate::model::{Gpt, Net};
use crate::tasks::readers::builtin;
use crate::text::Tokenizer;
use engine::{Engine, TaskHead};
use state::{Limits, State, TaskInfo};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// A checkpoint directory: pre-trained (config.json + model.safetensors) or fine-tuned
    /// (`gpt1 finetune`'s best/, with task.json).
    pub model: PathBuf,
    /// A tokenizer directory (default: the model's files, else GPT-1's built-in BPE).
    pub tokenizer: Option<PathBuf>,
    /// The model's id in the API (default: the directory's name).
    pub name: Option<String>,
    pub host: String,
    pub port: u16,
    pub precision: Precision,
    pub device: Device,
    /// Rows in one scoring pass (and examples in one classification pass) at most.
    pub max_batch: usize,
    pub max_queue: usize,
    pub max_n: usize,
    pub max_body: usize,
    pub api_key: Option<String>,
    /// One line per request on stderr.
    pub log_requests: bool,
}

/// The checkpoint's GPT-1, tokenizer and task head (fine-tuned checkpoints).
fn load(o: &ServeOptions) -> Result<(Gpt, Tokenizer, Option<TaskHead>)> {
    let lstm = |dir: &std::path::Path| {
        Error::invalid(
            dir,
            "holds the LSTM baseline: gpt1 serve runs GPT-1 checkpoints (the LSTM has no KV-cached generation)",
        )
    };
    if o.model.join("task.json").exists() {
        let ft = crate::tasks::checkpoint::load_finetuned(&o.model)?;
        let Net::Transformer(m) = ft.model else { return Err(lstm(&o.model)) };
        let head = TaskHead { head: ft.head, task: ft.task, max_len: ft.max_len };
        return Ok((m, ft.tokenizer, Some(head)));
    }
    let Net::Transformer(m) = Net::load(&o.model)? else { return Err(lstm(&o.model)) };
    let tok = match &o.tokenizer {
        Some(d) => Tokenizer::load(d, None)?,
        None => Tokenizer::load_or_gpt1(Some(&o.model), Some(m.config.vocab_size), None)?,
    };
    if tok.vocab_size() > m.config.vocab_size {
        return Err(Error::invalid(
            &o.model,
            format!(
                "the tokenizer has {} tokens, the model {}: pass the model's tokenizer (--tokenizer DIR)",
                tok.vocab_size(),
                m.config.vocab_size
            ),
        ));
    }
    Ok((m, tok, None))
}

/// Loads the model, listens, calls `on_listening` with the address, and serves until Ctrl-C
/// or SIGTERM; then it stops accepting, finishes what is running and returns.
pub fn serve(o: ServeOptions, on_listening: impl FnOnce(SocketAddr)) -> Result<()> {
    serve_until(o, on_listening, signalled())
}

/// [`serve`] until `stop` completes (a benchmark or a test in the same process).
pub fn serve_until(
    o: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    for (name, v) in [("max_batch", o.max_batch), ("max_queue", o.max_queue), ("max_n", o.max_n)] {
        if v == 0 {
            return Err(Error::setting(name, "must be at least 1"));
        }
    }
    let (model, tok, head) = load(&o)?;
    let n_positions = model.config.n_positions;
    let task = head.as_ref().map(|h| TaskInfo {
        def: h.task.clone(),
        shape: h
            .task
            .custom
            .as_ref()
            .map(|c| c.shape)
            .or_else(|| builtin(&h.task.name).map(|b| b.shape))
            .unwrap_or(crate::tasks::readers::Shape::Single),
    });
    let tok = Arc::new(tok);
    let (tx, rx) = std::sync::mpsc::sync_channel(o.max_queue);
    // The model moves to its device on its own thread (a GPU context stays on one thread).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let (device, precision, max_batch, tk) = (o.device, o.precision, o.max_batch, tok.clone());
    let worker = std::thread::Builder::new()
        .name("gpt1-model".into())
        .spawn(move || {
            fn go<B: Backend>(
                m: Gpt<B>,
                t: Arc<Tokenizer>,
                h: Option<TaskHead>,
                mb: usize,
                rx: std::sync::mpsc::Receiver<engine::Job>,
                ready: std::sync::mpsc::Sender<Result<()>>,
                on_pool: bool,
            ) {
                let _ = ready.send(Ok(()));
                let scratch = crate::model::LanguageModel::scratch(&m).into();
                Engine { model: m, tokenizer: t, task: h, max_batch: mb, scratch, on_pool }.run(rx);
            }
            match device {
                Device::Cpu => go(
                    model.to_backend(Cpu::new(precision)),
                    tk,
                    head,
                    max_batch,
                    rx,
                    ready_tx,
                    true,
                ),
                dev => match dev.cuda(precision) {
                    Ok(gpu) => go(model.to_backend(gpu), tk, head, max_batch, rx, ready_tx, false),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            }
        })
        .map_err(|e| Error::Unknown(format!("starting the model thread: {e}")))?;
    ready_rx.recv().map_err(|_| Error::Unknown("the model thread ended at start".into()))??;
    let name = o.name.clone().unwrap_or_else(|| {
        let p = std::fs::canonicalize(&o.model).unwrap_or(o.model.clone());
        p.file_name().map_or("gpt1".into(), |n| n.to_string_lossy().into_owned())
    });
    let aliases = vec![o.model.display().to_string()];
    let limits = Limits { max_queue: o.max_queue, max_n: o.max_n };
    let st = State::new(tx, tok, name, aliases, n_positions, limits, o.api_key.clone(), task);
    let app = routes::router(st, o.max_body, o.log_requests);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Unknown(format!("starting the async runtime: {e}")))?;
    let addr = format!("{}:{}", o.host, o.port);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::setting("port", format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| Error::Unknown(e.to_string()))?;
        on_listening(local);
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| Error::Unknown(format!("serving: {e}")))
    })?;
    // Every sender is gone with the router: the model thread ends after its last job.
    drop(rt);
    worker.join().map_err(|_| Error::Unknown("the model thread panicked".into()))?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn signalled() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    eprintln!("stopping: finishing the requests in flight");
}

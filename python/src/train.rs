//! Training and evaluation from Python: `pretrain`, `finetune`, `evaluate`, `predict`,
//! `zero_shot`, with the command line's options as keyword arguments. An argument left `None`
//! keeps the library's default (`PRETRAIN`, `FINETUNE`: the one source of the paper's
//! settings). Ctrl-C in Python asks the run to stop after its step; it saves a checkpoint and
//! `KeyboardInterrupt` is raised, as the command line's Ctrl-C.

use crate::errors::{invalid, to_py};
use crate::model::{cpu_only, precision};
use gpt1::kernels::on_pool;
use gpt1::model::Config;
use gpt1::train::finetune::{FinetuneOptions, finetune_net, starting_model};
use gpt1::train::pretrain::{ModelSource, PretrainOptions, PretrainSpec, pretrain as run_pretrain};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A JSON-serializable result as Python objects (dicts, lists, numbers).
fn to_python<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let s = serde_json::to_string(v).map_err(|e| invalid(e.to_string()))?;
    py.import("json")?.call_method1("loads", (s,))
}

/// Runs `f` on a thread of its own while this thread, holding the GIL every 50 ms, watches for
/// Ctrl-C: then the run is asked to stop after its step (it checkpoints), and Python's
/// `KeyboardInterrupt` is raised once it has.
fn interruptible<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> gpt1::Result<T> + Send,
) -> PyResult<T> {
    gpt1::interrupt::clear();
    std::thread::scope(|s| {
        let h = s.spawn(|| on_pool(f));
        let mut signal: Option<PyErr> = None;
        while !h.is_finished() {
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            if signal.is_none()
                && let Err(e) = py.check_signals()
            {
                gpt1::interrupt::request();
                signal = Some(e);
            }
        }
        let r = h.join().map_err(|_| invalid("the run panicked"))?;
        gpt1::interrupt::clear();
        match (r, signal) {
            (Err(e @ gpt1::Error::Interrupted { .. }), Some(_)) => Err(to_py(e)),
            (Ok(_), Some(sig)) => Err(sig),
            (r, _) => r.map_err(to_py),
        }
    })
}

macro_rules! set {
    ($o:ident . $f:ident = $v:expr) => {
        if let Some(v) = $v {
            $o.$f = v;
        }
    };
}

fn path(p: &str) -> PyResult<PathBuf> {
    gpt1::hub::resolve(Path::new(p)).map_err(to_py)
}

/// The run directory's metrics.jsonl as a list of dicts (empty when there is none).
fn metrics<'py>(py: Python<'py>, dir: &Path) -> PyResult<Bound<'py, PyAny>> {
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    to_python(py, &rows)
}

/// Pre-trains a language model on token shards (`gpt1 pretrain`). Returns `{run_dir,
/// final_dir, step, loss, val_loss, metrics}`.
#[pyfunction]
#[pyo3(signature = (data=None, out=None, *, config=None, init=None, val=None, tokenizer=None,
    batch=None, seq=None, micro_batch=None, steps=None, lr=None, warmup=None, schedule=None,
    weight_decay=None, clip=None, dropout=None, seed=None, eval_every=None, save_every=None,
    keep_checkpoints=None, stop_at=None, val_windows=None, resume=false, precision=None,
    device="cpu", progress=true, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn pretrain<'py>(
    py: Python<'py>,
    data: Option<&str>,
    out: Option<&str>,
    config: Option<&str>,
    init: Option<&str>,
    val: Option<&str>,
    tokenizer: Option<&str>,
    batch: Option<usize>,
    seq: Option<usize>,
    micro_batch: Option<usize>,
    steps: Option<u64>,
    lr: Option<f32>,
    warmup: Option<u64>,
    schedule: Option<&str>,
    weight_decay: Option<f32>,
    clip: Option<f32>,
    dropout: Option<f32>,
    seed: Option<u64>,
    eval_every: Option<u64>,
    save_every: Option<u64>,
    keep_checkpoints: Option<usize>,
    stop_at: Option<u64>,
    val_windows: Option<usize>,
    resume: bool,
    precision: Option<&str>,
    device: &str,
    progress: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    crate::set_threads(threads)?;
    cpu_only(device)?;
    let out = PathBuf::from(out.ok_or_else(|| invalid("out is required: the run directory"))?);
    // As the command line: on resume the run's own settings are the defaults.
    let spec = if resume {
        gpt1::train::rundir::load_spec::<PretrainSpec>(&out).map_err(to_py)?
    } else {
        None
    };
    let model = match (config, init, &spec) {
        (Some(c), _, _) => ModelSource::Config(Config::from_name_or_file(c).map_err(to_py)?),
        (None, Some(d), _) => ModelSource::Init(path(d)?),
        (None, None, Some(s)) => s.options(out.clone()).model,
        (None, None, None) if resume => ModelSource::Init(out.join("final")),
        (None, None, None) => {
            return Err(invalid("give config (a preset or config.json) or init (a checkpoint)"));
        }
    };
    let mut o = match &spec {
        Some(s) => s.options(out.clone()),
        None => PretrainOptions::new(PathBuf::new(), model.clone(), out.clone()),
    };
    o.model = model;
    set!(o.data = data.map(PathBuf::from));
    if o.data.as_os_str().is_empty() {
        return Err(invalid("data is required: a token shard (train.bin of gpt1 prepare)"));
    }
    o.val = val.map(PathBuf::from).or(o.val);
    o.tokenizer = tokenizer.map(PathBuf::from).or(o.tokenizer);
    set!(o.batch = batch);
    set!(o.seq = seq);
    o.micro_batch = micro_batch.or(o.micro_batch);
    set!(o.steps = steps);
    set!(o.lr = lr);
    set!(o.warmup = warmup);
    if let Some(s) = schedule {
        o.schedule =
            clap::ValueEnum::from_str(s, true).map_err(|e| invalid(format!("schedule: {e}")))?;
    }
    set!(o.weight_decay = weight_decay);
    set!(o.clip = clip);
    o.dropout = dropout.or(o.dropout);
    set!(o.seed = seed);
    set!(o.eval_every = eval_every);
    set!(o.save_every = save_every);
    set!(o.keep_checkpoints = keep_checkpoints);
    o.stop_at = stop_at;
    set!(o.val_windows = val_windows);
    o.resume = resume;
    o.progress = progress;
    set!(o.precision = precision.map(self::precision).transpose()?);
    let s = interruptible(py, || run_pretrain(&o))?;
    let r = serde_json::json!({
        "run_dir": o.out, "final_dir": s.final_dir, "step": s.step, "loss": s.loss,
        "val_loss": s.val_loss,
    });
    let d = to_python(py, &r)?;
    d.set_item("metrics", metrics(py, &o.out)?)?;
    Ok(d)
}

/// Fine-tunes a pre-trained checkpoint (or a fresh model, `from_scratch=True`) on a task
/// (`gpt1 finetune`). Returns the run's summary (best dev score, the best checkpoint's
/// directory, …) with `metrics`.
#[pyfunction]
#[pyo3(signature = (model=None, *, task, data, out, from_scratch=false, config=None,
    tokenizer=None, transfer_layers=None, epochs=None, batch=None, lr=None, aux_lm=None,
    max_len=None, seed=None, max_steps=None, eval_every=None, warmup=None, clf_dropout=None,
    weight_decay=None, clip=None, skip_bad_rows=false, precision=None, save_every=None,
    keep_checkpoints=None, resume=false, device="cpu", progress=true, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn finetune<'py>(
    py: Python<'py>,
    model: Option<&str>,
    task: &str,
    data: &str,
    out: &str,
    from_scratch: bool,
    config: Option<&str>,
    tokenizer: Option<&str>,
    transfer_layers: Option<usize>,
    epochs: Option<usize>,
    batch: Option<usize>,
    lr: Option<f32>,
    aux_lm: Option<f32>,
    max_len: Option<usize>,
    seed: Option<u64>,
    max_steps: Option<u64>,
    eval_every: Option<u64>,
    warmup: Option<f64>,
    clf_dropout: Option<f32>,
    weight_decay: Option<f32>,
    clip: Option<f32>,
    skip_bad_rows: bool,
    precision: Option<&str>,
    save_every: Option<u64>,
    keep_checkpoints: Option<usize>,
    resume: bool,
    device: &str,
    progress: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    crate::set_threads(threads)?;
    cpu_only(device)?;
    let def = gpt1::tasks::readers::task(task).map_err(to_py)?;
    let mut o = FinetuneOptions::new(PathBuf::from(data), PathBuf::from(out));
    set!(o.epochs = epochs);
    set!(o.batch = batch);
    set!(o.lr = lr);
    set!(o.aux_lm = aux_lm);
    o.max_len = max_len;
    set!(o.seed = seed);
    o.max_steps = max_steps;
    set!(o.eval_every = eval_every);
    set!(o.warmup = warmup);
    set!(o.clf_dropout = clf_dropout);
    set!(o.weight_decay = weight_decay);
    set!(o.clip = clip);
    o.skip_bad_rows = skip_bad_rows;
    set!(o.precision = precision.map(self::precision).transpose()?);
    set!(o.save_every = save_every);
    set!(o.keep_checkpoints = keep_checkpoints);
    o.resume = resume;
    o.progress = progress;
    let dir = model.map(path).transpose()?;
    let vocab = match (&dir, from_scratch) {
        (Some(d), false) => Some(gpt1::model::ArchConfig::load(d).map_err(to_py)?.vocab_size()),
        _ => None,
    };
    let tok = match tokenizer {
        Some(t) => gpt1::text::Tokenizer::load(&path(t)?, None),
        None => gpt1::text::Tokenizer::load_or_gpt1(dir.as_deref(), vocab, None),
    }
    .map_err(to_py)?;
    let scratch = if from_scratch {
        let mut c = Config::from_name_or_file(config.unwrap_or("gpt1")).map_err(to_py)?;
        c.vocab_size = tok.vocab_size();
        Some(gpt1::model::ArchConfig::Transformer(c))
    } else {
        let d =
            dir.as_ref().ok_or_else(|| invalid("model is required unless from_scratch=True"))?;
        o.model_dir = Some(d.clone());
        None
    };
    let checkpoint = if from_scratch { None } else { dir.as_deref() };
    let net =
        starting_model(checkpoint, scratch.as_ref(), o.seed, transfer_layers).map_err(to_py)?;
    let s = interruptible(py, || finetune_net(net, &tok, &def, &o))?;
    let d = to_python(py, &s)?;
    d.set_item("run_dir", out)?;
    d.set_item("metrics", metrics(py, Path::new(out))?)?;
    Ok(d)
}

fn load_finetuned(
    model: &str,
    precision: Option<&str>,
) -> PyResult<gpt1::tasks::checkpoint::Finetuned> {
    let mut ft = gpt1::tasks::checkpoint::load_finetuned(&path(model)?).map_err(to_py)?;
    if let Some(p) = precision {
        ft.model.set_backend(gpt1::backend::Cpu::new(self::precision(p)?));
    }
    Ok(ft)
}

/// A fine-tuned checkpoint's score on a labelled split (`gpt1 evaluate --json`).
#[pyfunction]
#[pyo3(signature = (model, data, *, split="dev", batch=None, skip_bad_rows=false, precision=None, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate<'py>(
    py: Python<'py>,
    model: &str,
    data: &str,
    split: &str,
    batch: Option<usize>,
    skip_bad_rows: bool,
    precision: Option<&str>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    crate::set_threads(threads)?;
    let ft = load_finetuned(model, precision)?;
    let batch = batch.unwrap_or(gpt1::train::finetune::FINETUNE.batch);
    let ev = py
        .detach(|| {
            on_pool(|| {
                gpt1::tasks::evaluate::evaluate(&ft, Path::new(data), split, batch, skip_bad_rows)
            })
        })
        .map_err(to_py)?;
    let r = serde_json::json!({
        "task": ft.task.name, "split": split, "n": ev.examples, "metric": ev.metric,
        "score": ev.score, "metrics": ev.metrics(),
    });
    to_python(py, &r)
}

/// Writes a fine-tuned checkpoint's predictions for a split to `out` (`gpt1 predict`); the
/// number written.
#[pyfunction]
#[pyo3(signature = (model, data, out, *, split="test", batch=None, probabilities=false, force=false, precision=None, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn predict(
    py: Python<'_>,
    model: &str,
    data: &str,
    out: &str,
    split: &str,
    batch: Option<usize>,
    probabilities: bool,
    force: bool,
    precision: Option<&str>,
    threads: Option<usize>,
) -> PyResult<usize> {
    crate::set_threads(threads)?;
    let ft = load_finetuned(model, precision)?;
    let batch = batch.unwrap_or(gpt1::train::finetune::FINETUNE.batch);
    let o = gpt1::io::Output::new(Path::new(out), force).map_err(to_py)?;
    py.detach(|| {
        on_pool(|| {
            gpt1::tasks::evaluate::predict_to_file(
                &ft,
                Path::new(data),
                split,
                batch,
                &o,
                probabilities,
            )
        })
    })
    .map_err(to_py)
}

/// A zero-shot heuristic of the pre-trained language model alone (`gpt1 zero-shot --json`).
#[pyfunction]
#[pyo3(signature = (model, task, data, *, split=None, batch=None, tokenizer=None, precision="fp32", threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn zero_shot<'py>(
    py: Python<'py>,
    model: &str,
    task: &str,
    data: &str,
    split: Option<&str>,
    batch: Option<usize>,
    tokenizer: Option<&str>,
    precision: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    use gpt1::zeroshot::{DEFAULT_BATCH, ZeroShotTask, zero_shot_with};
    crate::set_threads(threads)?;
    let task = ZeroShotTask::parse(task).map_err(to_py)?;
    let dir = path(model)?;
    let mut m = gpt1::model::checkpoint::load_model(&dir).map_err(to_py)?;
    m.backend = gpt1::backend::Cpu::new(self::precision(precision)?);
    let tok = match tokenizer {
        Some(t) => gpt1::text::Tokenizer::load(&path(t)?, None),
        None => gpt1::text::Tokenizer::load_or_gpt1(Some(&dir), Some(m.config.vocab_size), None),
    }
    .map_err(to_py)?;
    let split = split.map_or_else(|| task.default_split().to_string(), str::to_string);
    let batch = batch.unwrap_or(DEFAULT_BATCH);
    let r = py
        .detach(|| {
            on_pool(|| {
                zero_shot_with(&m, &tok, task, Path::new(data), &split, batch, None, |_, _| {})
            })
        })
        .map_err(to_py)?;
    to_python(py, &r)
}

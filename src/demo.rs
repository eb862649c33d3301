//! `gpt1 demo`: the paper's claim on the built-in corpus, with nothing downloaded. Four
//! public-domain novels (assets/demo) are split: most of each book pre-trains a small GPT-1
//! (the real `prepare` → `pretrain` pipeline, GPT-1's built-in BPE); the held-out end of each
//! book makes two labelled tasks — which of the four authors wrote a passage, and which of two
//! sentences truly comes next — fine-tuned once from the pre-trained model and once from scratch
//! (same architecture, same settings, auxiliary LM on both). Samples from fixed prompts before
//! and after pre-training show what the language model learned.

use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Sampling, generate};
use crate::io::write_atomic;
use crate::kernels::rng::{Rng, derive, stream};
use crate::model::checkpoint::load_model;
use crate::model::{Config, Gpt};
use crate::tasks::readers::{Custom, Shape, custom_task};
use crate::text::Tokenizer;
use crate::train::finetune::{FinetuneOptions, finetune};
use crate::train::{ModelSource, PretrainOptions, pretrain};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

const BOOKS: &[u8] = include_bytes!("../assets/demo/books.txt.gz");
const PROMPTS: [&str; 3] =
    ["It was a dark and stormy night, and", "\"I don't know,\" she said,", "The old man looked at"];

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub seed: u64,
    /// Pre-training updates (16 × 128 tokens each).
    pub pretrain_steps: u64,
    /// Fine-tuning updates per run.
    pub finetune_steps: u64,
    /// Examples per fine-tuning update.
    pub finetune_batch: usize,
    /// Peak fine-tuning learning rate.
    pub finetune_lr: f32,
    /// Examples per author (authorship) and per book (next sentence) in each task's train
    /// split; dev has a third as many.
    pub examples: usize,
    pub progress: bool,
}

impl DemoOptions {
    /// The settings that fit in about five minutes on two cores.
    pub fn new(out: PathBuf) -> Self {
        DemoOptions {
            out,
            seed: 0,
            pretrain_steps: 300,
            finetune_steps: 120,
            finetune_batch: 8,
            finetune_lr: 2e-4,
            examples: 300,
            progress: true,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub metric: String,
    pub pretrained: f64,
    pub scratch: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SampleRow {
    pub prompt: String,
    pub before: String,
    pub after: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub tasks: Vec<TaskRow>,
    pub samples: Vec<SampleRow>,
    pub pretrain_tokens: usize,
    pub val_ppl: Option<f64>,
    pub wall_s: f64,
}

struct Book {
    author: String,
    /// Paragraphs, in order.
    paras: Vec<String>,
}

fn books() -> Result<Vec<Book>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(BOOKS)
        .read_to_string(&mut text)
        .map_err(|e| Error::invalid("<built-in>/books.txt.gz", format!("corrupt ({e})")))?;
    let mut out = Vec::new();
    for part in text.split("### ").filter(|p| !p.trim().is_empty()) {
        let (head, body) = part.split_once('\n').unwrap_or((part, ""));
        let author = head.split('|').next().unwrap_or(head).trim().to_string();
        let paras = body
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| p.len() > 1)
            .collect();
        out.push(Book { author, paras });
    }
    Ok(out)
}

/// Sentences of a paragraph: cut after `.`, `!` or `?` (and closing quotes) before a space and
/// a capital letter or an opening quote. Simple, and the same for every book.
fn sentences(p: &str) -> Vec<String> {
    let b: Vec<char> = p.chars().collect();
    let (mut out, mut start) = (Vec::new(), 0);
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], '.' | '!' | '?') {
            let mut j = i + 1;
            while j < b.len() && matches!(b[j], '"' | '\'' | '”' | '’' | ')') {
                j += 1;
            }
            if j + 1 < b.len()
                && b[j] == ' '
                && (b[j + 1].is_uppercase() || matches!(b[j + 1], '"' | '“'))
            {
                out.push(b[start..j].iter().collect::<String>());
                start = j + 1;
                i = j;
            }
        }
        i += 1;
    }
    if start < b.len() {
        out.push(b[start..].iter().collect());
    }
    out.into_iter().filter(|s: &String| s.split_whitespace().count() >= 4).collect()
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    write_atomic(path, text.as_bytes())
}

/// Runs the demo; everything goes under `opts.out`.
pub fn demo(opts: &DemoOptions) -> Result<DemoReport> {
    let t0 = std::time::Instant::now();
    let out = &opts.out;
    if out.join("report.md").exists() || out.join("pretrain").exists() {
        return Err(Error::invalid(
            out,
            "an earlier demo is here; choose another --out (or remove it)",
        ));
    }
    let say = |m: &str| {
        if opts.progress {
            eprintln!("demo: {m}");
        }
    };
    let tok = Tokenizer::gpt1(None)?;
    let books = books()?;
    // 1. Pre-training text: the first 85 % of each book's paragraphs (the last 2 % of that for
    //    validation); the held-out 15 % makes the tasks.
    let (train_ids, val_ids, held) = split_books(&tok, &books)?;
    let data = out.join("data");
    std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
    crate::data::shard::write_bin(&data.join("train.bin"), &train_ids)?;
    crate::data::shard::write_bin(&data.join("val.bin"), &val_ids)?;
    tok.save(&data.join(crate::text::prepare::TOKENIZER_DIR))?;
    say(&format!(
        "{} books, {} pre-training tokens, {} held-out sentences",
        books.len(),
        train_ids.len(),
        held.iter().map(Vec::len).sum::<usize>()
    ));
    // 2. Pre-training.
    let mut config = Config::named("gpt1-mini").expect("a preset");
    config.vocab_size = tok.bpe_vocab_size();
    let initial = Gpt::init(config.clone(), derive(opts.seed, stream::INIT));
    let mut po = PretrainOptions::new(
        data.join("train.bin"),
        ModelSource::Config(config.clone()),
        out.join("pretrain"),
    );
    po.val = Some(data.join("val.bin"));
    // lr 6e-4 with 100 warm-up updates leaves the unigram plateau within 200 updates here; 8e-4
    // with 30 stayed on it (held-out perplexity ~650 after 1,000 updates; docs/demo.md).
    let warmup = 100.min(opts.pretrain_steps / 3).max(1);
    (po.batch, po.seq, po.steps, po.lr, po.warmup, po.seed) =
        (16, 128, opts.pretrain_steps, 6e-4, warmup, opts.seed);
    po.eval_every = (opts.pretrain_steps / 4).max(1);
    po.progress = opts.progress;
    say(&format!(
        "pre-training a {}-block, {}-wide model with GPT-1's vocabulary for {} updates",
        config.n_layer, config.n_embd, opts.pretrain_steps
    ));
    let summary = pretrain(&po)?;
    let trained = load_model(&summary.final_dir)?;
    // 3. Samples before and after.
    let mut samples = Vec::new();
    let sampling = Sampling { temperature: 0.8, top_k: 40, top_p: 1.0, repetition_penalty: 1.2 };
    let go = GenerateOptions { max_new: 24, sampling, seed: opts.seed, num: 1, logprobs: None };
    for p in PROMPTS {
        let ids = tok.encode(p)?;
        let text = |m: &Gpt| -> Result<String> {
            tok.decode(&generate(m, &ids, &go, |_, _| false)?.0[0].ids)
        };
        samples.push(SampleRow {
            prompt: p.to_string(),
            before: text(&initial)?,
            after: text(&trained)?,
        });
    }
    // 4. The tasks, from the held-out sentences.
    let (author_rows, next_rows) = task_rows(&held, &books, opts)?;
    let tasks_dir = out.join("tasks");
    let mut rows = Vec::new();
    for (name, rowsets, custom, metric) in [
        (
            "authorship",
            &author_rows,
            Custom {
                shape: Shape::Single,
                text_a: "text".into(),
                text_b: None,
                choices: vec![],
                label: "label".into(),
            },
            "accuracy (4 authors)",
        ),
        (
            "next sentence",
            &next_rows,
            Custom {
                shape: Shape::Choice,
                text_a: "context".into(),
                text_b: None,
                choices: vec!["a".into(), "b".into()],
                label: "label".into(),
            },
            "accuracy (2 candidates)",
        ),
    ] {
        let dir = tasks_dir.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        write_jsonl(&dir.join("train.jsonl"), &rowsets[0])?;
        write_jsonl(&dir.join("dev.jsonl"), &rowsets[1])?;
        let def = custom_task(&dir, custom)?;
        let mut scores = Vec::new();
        for variant in ["pretrained", "scratch"] {
            let model = if variant == "pretrained" { trained.clone() } else { initial.clone() };
            let mut fo = FinetuneOptions::new(
                dir.clone(),
                out.join("finetune").join(format!("{}-{variant}", name.replace(' ', "-"))),
            );
            (fo.batch, fo.lr, fo.max_len, fo.seed, fo.max_steps, fo.epochs) = (
                opts.finetune_batch,
                opts.finetune_lr,
                Some(128),
                opts.seed,
                Some(opts.finetune_steps),
                10,
            );
            fo.progress = opts.progress;
            say(&format!("fine-tuning {name} from the {variant} model"));
            let s = finetune(model, &tok, &def, &fo)?;
            scores.push(s.best_dev.map_or(0.0, |e| e.score));
        }
        rows.push(TaskRow {
            task: name.to_string(),
            metric: metric.to_string(),
            pretrained: scores[0],
            scratch: scores[1],
        });
    }
    let val_ppl = summary.val_loss.map(f64::exp);
    let report = DemoReport {
        tasks: rows,
        samples,
        pretrain_tokens: train_ids.len(),
        val_ppl,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    write_atomic(&out.join("report.md"), markdown(&report, opts).as_bytes())?;
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&report).expect("json").as_bytes(),
    )?;
    Ok(report)
}

/// Each book's first 85 % of paragraphs as pre-training tokens (the last 2 % of that for
/// validation), and the sentences of the held-out 15 %: `(train, val, held)`.
#[allow(clippy::type_complexity)]
fn split_books(tok: &Tokenizer, books: &[Book]) -> Result<(Vec<u32>, Vec<u32>, Vec<Vec<String>>)> {
    let (mut train_ids, mut val_ids, mut held) = (Vec::new(), Vec::new(), Vec::new());
    for b in books {
        let cut = b.paras.len() * 85 / 100;
        let val_from = cut * 98 / 100;
        for (i, p) in b.paras[..cut].iter().enumerate() {
            let ids = tok.encode(p)?;
            if i < val_from { train_ids.extend(ids) } else { val_ids.extend(ids) }
        }
        held.push(b.paras[cut..].iter().flat_map(|p| sentences(p)).collect::<Vec<_>>());
    }
    Ok((train_ids, val_ids, held))
}

/// Rows of `[train, dev]`.
type Rows = Vec<Vec<serde_json::Value>>;

/// The two tasks' rows from each book's held-out sentences `held`: authorship (a passage of
/// three sentences and its author) and next sentence (the true third sentence against a far
/// one), `[train, dev]` each.
fn task_rows(held: &[Vec<String>], books: &[Book], opts: &DemoOptions) -> Result<(Rows, Rows)> {
    let mut rng = Rng::new(derive(opts.seed, stream::DEMO_TASKS));
    let (n_train, n_dev) = (opts.examples, (opts.examples / 3).max(4));
    let (mut author_rows, mut next_rows): (Rows, Rows) =
        (vec![Vec::new(), Vec::new()], vec![Vec::new(), Vec::new()]);
    for (bi, sents) in held.iter().enumerate() {
        // Passages of three consecutive sentences; the first 75 % of the book's held-out text
        // for train, the rest for dev (no sentence in both).
        let split_at = sents.len() * 3 / 4;
        for (split, range, n) in [(0, 0..split_at, n_train), (1, split_at..sents.len(), n_dev)] {
            let s = &sents[range];
            if s.len() < 48 {
                return Err(Error::invalid(
                    "<built-in>/books.txt.gz",
                    "a book's held-out part is too short",
                ));
            }
            for _ in 0..n {
                let i = rng.below((s.len() - 3) as u64) as usize;
                author_rows[split].push(
                    serde_json::json!({"text": s[i..i + 3].join(" "), "label": books[bi].author}),
                );
                // Next sentence: after the passage's second sentence, the true third one or one
                // from at least 20 sentences away.
                let mut j = rng.below(s.len() as u64) as usize;
                while j.abs_diff(i + 2) < 20 {
                    j = rng.below(s.len() as u64) as usize;
                }
                let truth_first = rng.below(2) == 0;
                let (a, b) = if truth_first { (&s[i + 2], &s[j]) } else { (&s[j], &s[i + 2]) };
                next_rows[split].push(serde_json::json!({"context": s[i + 1], "a": a, "b": b, "label": if truth_first { 0 } else { 1 }}));
            }
        }
    }
    Ok((author_rows, next_rows))
}

/// The report in the shape of the paper's Table 5, with the samples.
pub fn markdown(r: &DemoReport, opts: &DemoOptions) -> String {
    let mut s = String::from("# gpt1 demo\n\n");
    s.push_str(&format!(
        "Pre-trained on {} tokens of four public-domain novels ({} updates of 16 × 128; held-out perplexity {}), then fine-tuned {} updates of {} examples per task on passages from the books' held-out ends. Every number was measured in this run ({:.0} s).\n\n",
        r.pretrain_tokens,
        opts.pretrain_steps,
        r.val_ppl.map_or("-".into(), |p| format!("{p:.1}")),
        opts.finetune_steps,
        opts.finetune_batch,
        r.wall_s
    ));
    s.push_str("| method |");
    for t in &r.tasks {
        s.push_str(&format!(" {} |", t.task));
    }
    s.push_str("\n| --- |");
    s.push_str(&" --- |".repeat(r.tasks.len()));
    for (name, f) in
        [("transformer, pre-trained, aux LM", 0), ("transformer, no pre-training, aux LM", 1)]
    {
        s.push_str(&format!("\n| {name} |"));
        for t in &r.tasks {
            s.push_str(&format!(" {:.1} |", 100.0 * if f == 0 { t.pretrained } else { t.scratch }));
        }
    }
    s.push_str("\n| gain from pre-training |");
    for t in &r.tasks {
        s.push_str(&format!(" {:+.1} |", 100.0 * (t.pretrained - t.scratch)));
    }
    s.push_str("\n\nMetric: dev accuracy, %. Authorship: which of 4 authors wrote a 3-sentence passage (chance 25 %). Next sentence: which of 2 sentences follows a sentence (chance 50 %).\n\n## Samples (temperature 0.8, top-k 40)\n");
    for x in &r.samples {
        s.push_str(&format!(
            "\n**{}**\n- before pre-training: {}\n- after: {}\n",
            x.prompt, x.before, x.after
        ));
    }
    s
}

//! The model's own thread: it owns the weights and the buffers, takes jobs from a bounded
//! queue and answers each on its reply channel. Scoring jobs waiting together run as one
//! forward pass (dynamic batching); generation runs one request at a time, its `n` samples
//! decoded together; classification runs the fine-tuned head.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::generate::{
    GenerateOptions, Generated, LogSoftmax, cut_at_stop, generate, held_back, log_softmax, top_k,
};
use crate::kernels::crossentropy::IGNORE;
use crate::model::Gpt;
use crate::model::{Activations, LanguageModel};
use crate::tasks::Example;
use crate::tasks::Head;
use crate::tasks::batch::prepare;
use crate::tasks::evaluate::{Evaluation, evaluate_prepared};
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;
use rayon::prelude::*;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

/// One row to score: log p(ids[j + 1] | ids[..=j]) for every j.
#[derive(Clone, Debug)]
pub struct ScoreRow {
    pub ids: Vec<u32>,
    /// Also the `k` most likely tokens at every position.
    pub top: Option<usize>,
    /// Also the next token's distribution after the whole row (the row's every token is an
    /// input, so it needs `ids.len() <= n_positions`; otherwise `ids.len() <= n_positions + 1`).
    pub next: bool,
}

/// A scored row.
#[derive(Clone, Debug, Default)]
pub struct Scored {
    /// `ids.len() - 1` log-probabilities.
    pub logprobs: Vec<f32>,
    /// With `top`: the alternatives at each of those positions.
    pub top: Vec<Vec<(u32, f32)>>,
    /// With `next`: log-probabilities of every token after the row.
    pub next: Option<Vec<f32>>,
}

/// A piece of streamed text: sample `sample`'s new text.
#[derive(Clone, Debug)]
pub struct Delta {
    pub sample: usize,
    pub text: String,
}

pub type Reply<T> = oneshot::Sender<Result<T>>;

/// What the model thread is asked to do.
pub enum Job {
    Score {
        rows: Vec<ScoreRow>,
        reply: Reply<Vec<Scored>>,
    },
    Generate {
        prompt: Vec<u32>,
        opts: GenerateOptions,
        /// Samples stop when their text contains one of these.
        stops: Vec<String>,
        /// Text as it comes (held back while it may still become a stop string).
        stream: Option<UnboundedSender<Delta>>,
        reply: Reply<Vec<Generated>>,
    },
    Classify {
        examples: Vec<Example>,
        reply: Reply<Evaluation>,
    },
}

/// A fine-tuned checkpoint's task head.
pub struct TaskHead {
    pub head: Head,
    pub task: TaskDef,
    pub max_len: usize,
}

/// The model thread's state.
pub struct Engine<B: Backend> {
    pub model: Gpt<B>,
    pub tokenizer: Arc<Tokenizer>,
    pub task: Option<TaskHead>,
    /// Rows in one scoring pass at most.
    pub max_batch: usize,
    /// A scoring pass's buffers, kept between passes (reshaped, made anew only when too small).
    pub scratch: std::sync::Mutex<Activations<B>>,
    /// Whether each batch of jobs runs on a worker of rayon's pool (the CPU: a parallel loop
    /// started from outside the pool puts this thread to sleep and back per op, and a decode
    /// step's spinning team needs a worker to drive it). A GPU's context stays on this thread.
    pub on_pool: bool,
}

impl<B: Backend> Engine<B> {
    /// Answers jobs until every sender is gone (the server stopped).
    pub fn run(self, rx: Receiver<Job>) {
        let _pinned = self.model.pin();
        while let Ok(first) = rx.recv() {
            // Scoring jobs that arrive together share a pass: wait a moment for company only
            // when the first one is a scoring job.
            let mut score = Vec::new();
            let mut other = Vec::new();
            let mut rows = 0;
            let mut job = Some(first);
            while let Some(j) = job.take() {
                match j {
                    Job::Score { rows: r, reply } => {
                        rows += r.len();
                        score.push((r, reply));
                    }
                    j => other.push(j),
                }
                // Generation runs alone; scoring jobs gather up to a pass.
                if rows >= self.max_batch || !other.is_empty() {
                    break;
                }
                job = rx.recv_timeout(Duration::from_millis(2)).ok();
            }
            let work = || {
                if !score.is_empty() {
                    self.score_jobs(score);
                }
                for j in other {
                    self.answer(j);
                }
            };
            // Between batches this thread waits for requests outside the pool, so no worker
            // sits parked in `recv` while others compute.
            if self.on_pool { crate::kernels::on_pool(work) } else { work() }
        }
    }

    fn answer(&self, job: Job) {
        match job {
            // The request has gone (its client disconnected): nothing to compute.
            Job::Generate { ref reply, .. } if reply.is_closed() => {}
            Job::Classify { ref reply, .. } if reply.is_closed() => {}
            Job::Score { rows, reply } => self.score_jobs(vec![(rows, reply)]),
            Job::Generate { prompt, opts, stops, stream, reply } => {
                let _ = reply.send(self.generate(&prompt, &opts, &stops, stream));
            }
            Job::Classify { examples, reply } => {
                let _ = reply.send(self.classify(&examples));
            }
        }
    }

    /// Scores every job's rows in shared passes and answers each job.
    fn score_jobs(&self, jobs: Vec<(Vec<ScoreRow>, Reply<Vec<Scored>>)>) {
        let all: Vec<&ScoreRow> = jobs.iter().flat_map(|(r, _)| r.iter()).collect();
        let mut results = self.score_rows(&all);
        for (rows, reply) in jobs.into_iter().rev() {
            let mine = match &mut results {
                Ok(v) => Ok(v.split_off(v.len() - rows.len())),
                Err(e) => Err(Error::Unknown(e.to_string())),
            };
            let _ = reply.send(mine);
        }
    }

    /// Scores `rows` in passes of at most `max_batch` rows of similar length.
    fn score_rows(&self, rows: &[&ScoreRow]) -> Result<Vec<Scored>> {
        let np = self.model.config.n_positions;
        // Inputs of a row: every token when its next distribution is asked, else all but the last.
        let inputs =
            |r: &ScoreRow| if r.next { r.ids.len() } else { r.ids.len().saturating_sub(1) };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inputs(rows[i])));
        let mut out = vec![Scored::default(); rows.len()];
        for pass in order.chunks(self.max_batch.max(1)) {
            let t = inputs(rows[pass[0]]).max(1);
            debug_assert!(t <= np, "rows were checked against the context");
            let mut ids = vec![0u32; pass.len() * t];
            let mut targets = vec![IGNORE; pass.len() * t];
            for (k, &i) in pass.iter().enumerate() {
                let r = &rows[i].ids;
                let n = inputs(rows[i]).min(r.len());
                ids[k * t..k * t + n].copy_from_slice(&r[..n]);
                for j in 0..r.len().saturating_sub(1).min(t) {
                    targets[k * t + j] = r[j + 1];
                }
            }
            // Alternatives or a whole next distribution need every logit; the rest the fused head.
            let whole = pass.iter().any(|&i| rows[i].top.is_some_and(|k| k > 0) || rows[i].next);
            let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
            let acts = &mut *scratch;
            self.model.fit(acts, pass.len(), t);
            if !whole {
                // The fused head, as `gpt1 score` runs it.
                let mut lp = vec![0.0f32; pass.len() * t];
                self.model.logprobs(acts, &ids, &targets, &mut lp);
                for (k, &i) in pass.iter().enumerate() {
                    let n = rows[i].ids.len().saturating_sub(1);
                    out[i].logprobs = lp[k * t..k * t + n].to_vec();
                }
                continue;
            }
            let v = self.model.config.vocab_size;
            self.model.logits_chunks(acts, &ids, |r0, logits| {
                // Per position: its log-prob, alternatives, or the whole next distribution.
                type Pos = (usize, Option<f32>, Vec<(u32, f32)>, Option<Vec<f32>>);
                let per: Vec<Pos> = logits
                    .par_chunks(v)
                    .enumerate()
                    .map(|(j, row)| {
                        let flat = r0 + j;
                        let (k, j) = (flat / t, flat % t);
                        let r = rows[pass[k]];
                        if j + 1 < r.ids.len() {
                            let l = LogSoftmax::of(row);
                            let top = top_k(row, r.top.unwrap_or(0));
                            let top = top.into_iter().map(|(i, x)| (i, l.at(x))).collect();
                            (flat, Some(l.at(row[r.ids[j + 1] as usize])), top, None)
                        } else if r.next && j + 1 == r.ids.len() {
                            (flat, None, Vec::new(), Some(log_softmax(row)))
                        } else {
                            (flat, None, Vec::new(), None)
                        }
                    })
                    .collect();
                for (flat, lp, top, next) in per {
                    let o = &mut out[pass[flat / t]];
                    if let Some(lp) = lp {
                        o.logprobs.push(lp);
                        if rows[pass[flat / t]].top.is_some_and(|k| k > 0) {
                            o.top.push(top);
                        }
                    }
                    if next.is_some() {
                        o.next = next;
                    }
                }
            });
        }
        Ok(out)
    }

    fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        stops: &[String],
        stream: Option<UnboundedSender<Delta>>,
    ) -> Result<Vec<Generated>> {
        let tok = &self.tokenizer;
        let mut sent = vec![0usize; opts.num];
        let on_token = |s: usize, ids: &[u32]| {
            if stops.is_empty() && stream.is_none() {
                return false;
            }
            let Ok(text) = tok.decode(ids) else { return false };
            let (shown, stopped) = cut_at_stop(&text, stops);
            if let Some(tx) = &stream {
                let safe =
                    if stopped { shown.len() } else { shown.len() - held_back(&shown, stops) };
                // Only whole words: the decoder's space after a word's last token comes with
                // the next token.
                let word_end =
                    tok.token(*ids.last().unwrap_or(&0)).is_some_and(|t| t.ends_with("</w>"));
                if (word_end || stopped) && safe > sent[s] {
                    // A client that has gone stops its samples.
                    if tx.send(Delta { sample: s, text: shown[sent[s]..safe].to_string() }).is_err()
                    {
                        return true;
                    }
                    sent[s] = safe;
                }
            }
            stopped
        };
        let (gens, _) = generate(&self.model, prompt, opts, on_token)?;
        Ok(gens)
    }

    fn classify(&self, examples: &[Example]) -> Result<Evaluation> {
        let Some(t) = &self.task else {
            return Err(Error::setting(
                "model",
                "is a language model: classification needs a fine-tuned checkpoint (`gpt1 finetune`'s best/)",
            ));
        };
        let (p, _) = prepare(&self.tokenizer, examples, t.max_len)?;
        let mut s = self.model.scratch();
        evaluate_prepared(&t.task, &self.model, &t.head, &mut s, &p, self.max_batch.max(1))
    }
}

//! `POST /v1/completions`: OpenAI's legacy completions API as lm-evaluation-harness and the
//! `openai` package use it. A request becomes jobs for the model thread (one scoring job for
//! every prompt's log-probabilities, one generation job per prompt) and their answers become
//! `choices`, or server-sent events with `stream`.

use super::api::{ApiError, ApiResult, Fields, Prompt, now, object, prompts};
use super::engine::{Delta, Job, ScoreRow, Scored};
use super::state::State;
use crate::generate::{GenerateOptions, Generated, Sampling, StopReason, cut_at_stop, draw, top_k};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

/// A completions request, checked.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompts: Vec<Prompt>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub n: usize,
    pub stops: Vec<String>,
    pub seed: u64,
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub stream: bool,
}

/// The most `logprobs` alternatives a request may ask (vLLM's default limit).
pub const MAX_LOGPROBS: usize = 20;
/// The most prompts in one request.
pub const MAX_PROMPTS: usize = 1024;

impl Request {
    pub fn parse(st: &State, body: &[u8]) -> ApiResult<Self> {
        let m = object(body)?;
        st.check_model(&m)?;
        let f = Fields(&m);
        let prompts = prompts(m.get("prompt"))?;
        if prompts.len() > MAX_PROMPTS {
            return Err(ApiError::bad(
                "prompt",
                format!("at most {MAX_PROMPTS} prompts per request"),
            ));
        }
        let n = f.uint("n")?.unwrap_or(1);
        if n == 0 || n > st.limits.max_n {
            return Err(ApiError::bad("n", format!("n must be between 1 and {}", st.limits.max_n)));
        }
        let max_tokens = f.uint("max_tokens")?.unwrap_or(16);
        if max_tokens > st.n_positions {
            return Err(ApiError::bad(
                "max_tokens",
                format!("max_tokens must be at most the model's context, {}", st.n_positions),
            ));
        }
        let logprobs = f.uint("logprobs")?;
        if logprobs.is_some_and(|k| k > MAX_LOGPROBS) {
            return Err(ApiError::bad(
                "logprobs",
                format!("logprobs must be at most {MAX_LOGPROBS}"),
            ));
        }
        let stops = f.strings("stop")?;
        if stops.iter().any(String::is_empty) {
            return Err(ApiError::bad("stop", "a stop string must not be empty"));
        }
        let sampling = Sampling {
            temperature: f.float("temperature")?.unwrap_or(1.0),
            top_k: 0,
            top_p: f.float("top_p")?.unwrap_or(1.0),
            repetition_penalty: 1.0,
        };
        if !(sampling.temperature >= 0.0 && sampling.temperature.is_finite()) {
            return Err(ApiError::bad(
                "temperature",
                "temperature must be a number >= 0 (0: greedy)",
            ));
        }
        if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
            return Err(ApiError::bad("top_p", "top_p must be in (0, 1]"));
        }
        let stream = f.bool("stream")?.unwrap_or(false);
        let scoring_only = max_tokens == 0 || (f.bool("echo")?.unwrap_or(false) && max_tokens == 1);
        if stream && logprobs.is_some() && !scoring_only {
            return Err(ApiError::bad(
                "logprobs",
                "logprobs with stream is not supported for generated text: ask without stream",
            ));
        }
        Ok(Self {
            prompts,
            max_tokens,
            sampling,
            n,
            stops,
            seed: f.int("seed")?.unwrap_or(0),
            logprobs,
            echo: f.bool("echo")?.unwrap_or(false),
            stream,
        })
    }

    /// Scoring alone answers it: nothing to generate, or one token that the scoring pass's last
    /// distribution gives (lm-evaluation-harness's log-likelihood requests: echo, max_tokens 1).
    fn scoring_only(&self) -> bool {
        self.max_tokens == 0 || (self.echo && self.max_tokens == 1)
    }
}

/// A prompt tokenized, with the text that echo returns.
pub struct Tokenized {
    pub text: String,
    pub ids: Vec<u32>,
}

/// What one choice is made of.
struct Part {
    prompt: usize,
    sample: Generated,
}

/// Tokenizes and checks the prompts against the context.
fn tokenize(st: &State, req: &Request) -> ApiResult<Vec<Tokenized>> {
    let np = st.n_positions;
    req.prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = match p {
                Prompt::Text(s) => Tokenized { text: s.clone(), ids: st.tokenizer.encode(s)? },
                Prompt::Ids(ids) => {
                    if let Some(bad) = ids.iter().find(|&&t| t as usize >= st.vocab_size) {
                        return Err(ApiError::bad(
                            "prompt",
                            format!("prompt {i}: token id {bad} is not below the vocabulary size {}", st.vocab_size),
                        ));
                    }
                    Tokenized { text: st.tokenizer.decode(ids)?, ids: ids.clone() }
                }
            };
            if t.ids.is_empty() {
                return Err(ApiError::bad("prompt", format!("prompt {i} has no tokens")));
            }
            // Scoring reads every prompt token but the last as input (the last too when one
            // token follows it); generation needs room for a new token.
            let room = match (req.max_tokens, req.scoring_only()) {
                (0, _) => np + 1,
                (_, true) => np,
                _ => np - 1,
            };
            if t.ids.len() > room {
                return Err(ApiError::bad(
                    "prompt",
                    format!(
                        "prompt {i} has {} tokens; the model's context is {np} positions{}: shorten it",
                        t.ids.len(),
                        if req.max_tokens == 0 { " (+1 scored)" } else { ", and a new token needs one" }
                    ),
                ));
            }
            Ok(t)
        })
        .collect()
}

/// Sends `job` to the model thread, or answers 503 when the queue is full.
pub fn submit(st: &State, job: Job) -> ApiResult<()> {
    st.jobs.try_send(job).map_err(|e| match e {
        std::sync::mpsc::TrySendError::Full(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the queue is full ({} requests waiting): retry later", st.limits.max_queue),
        ),
        std::sync::mpsc::TrySendError::Disconnected(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
        }
    })
}

/// Awaits a job's answer.
pub async fn answer<T>(rx: tokio::sync::oneshot::Receiver<crate::Result<T>>) -> ApiResult<T> {
    match rx.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")),
    }
}

/// The prompts' log-probabilities (with their alternatives and the next distribution when
/// asked), or `None` when no score is needed.
async fn score(st: &State, req: &Request, toks: &[Tokenized]) -> ApiResult<Option<Vec<Scored>>> {
    let need_next = req.scoring_only() && req.max_tokens == 1;
    let need_lp = req.echo && req.logprobs.is_some();
    if !need_next && !need_lp {
        return Ok(None);
    }
    let rows = toks
        .iter()
        .map(|t| ScoreRow {
            ids: t.ids.clone(),
            top: if need_lp { req.logprobs } else { None },
            next: need_next,
        })
        .collect();
    let (reply, rx) = tokio::sync::oneshot::channel();
    submit(st, Job::Score { rows, reply })?;
    Ok(Some(answer(rx).await?))
}

/// The single token after each prompt, drawn from the scoring pass's distribution exactly as
/// generation's first step draws it.
fn first_tokens(req: &Request, scored: &Scored) -> Vec<Generated> {
    let next = scored.next.as_ref().expect("asked for the next distribution");
    (0..req.n)
        .map(|s| {
            let mut row = next.clone();
            let tok = req.sampling.pick(&mut row, &[], draw(req.seed, s, 0));
            Generated {
                ids: vec![tok],
                stop: StopReason::MaxNew,
                logprobs: vec![next[tok as usize]],
                top: vec![top_k(next, req.logprobs.unwrap_or(0))],
            }
        })
        .collect()
}

/// A scoring-only request's samples of prompt `i`: the one token drawn from the scoring pass
/// (`max_tokens` 1), or none.
fn scored_samples(req: &Request, scored: Option<&[Scored]>, i: usize) -> Vec<Generated> {
    match (scored, req.max_tokens) {
        (Some(s), 1) => first_tokens(req, &s[i]),
        _ => {
            let none =
                Generated { ids: vec![], stop: StopReason::MaxNew, logprobs: vec![], top: vec![] };
            vec![none; req.n]
        }
    }
}

fn options(req: &Request) -> GenerateOptions {
    GenerateOptions {
        max_new: req.max_tokens,
        sampling: req.sampling,
        seed: req.seed,
        num: req.n,
        logprobs: req.logprobs,
    }
}

/// `POST /v1/completions` without `stream`.
pub async fn complete(st: &State, body: &[u8]) -> ApiResult<(Value, usize)> {
    let req = Request::parse(st, body)?;
    let toks = tokenize(st, &req)?;
    let scored = score(st, &req, &toks).await?;
    let mut parts = Vec::new();
    if req.scoring_only() {
        for (i, _) in toks.iter().enumerate() {
            let gens = scored_samples(&req, scored.as_deref(), i);
            parts.extend(gens.into_iter().map(|sample| Part { prompt: i, sample }));
        }
    } else {
        // One prompt at a time (the model thread runs generations in turn anyway): a request
        // holds one place in the queue, whatever its number of prompts.
        for (i, t) in toks.iter().enumerate() {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let job = Job::Generate {
                prompt: t.ids.clone(),
                opts: options(&req),
                stops: req.stops.clone(),
                stream: None,
                reply,
            };
            submit(st, job)?;
            parts.extend(answer(rx).await?.into_iter().map(|sample| Part { prompt: i, sample }));
        }
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    for (index, p) in parts.into_iter().enumerate() {
        let c =
            st.choice(&req, &toks[p.prompt], scored.as_ref().map(|s| &s[p.prompt]), &p.sample)?;
        completion_tokens += c.tokens;
        choices.push(with_index(c.value, index));
    }
    let prompt_tokens: usize = toks.iter().map(|t| t.ids.len()).sum();
    let body = json!({
        "id": st.next_id(), "object": "text_completion", "created": now(), "model": &*st.name,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    Ok((body, prompt_tokens + completion_tokens))
}

fn with_index(mut v: Value, index: usize) -> Value {
    v["index"] = json!(index);
    v
}

/// One choice's JSON and its completion token count.
pub struct Choice {
    pub value: Value,
    pub tokens: usize,
}

impl State {
    /// The text a token stands for: a word's last piece with the space after it.
    fn token_text(&self, id: u32) -> String {
        match self.tokenizer.token(id) {
            Some(t) => match t.strip_suffix("</w>") {
                Some(stem) => format!("{stem} "),
                None => t.to_string(),
            },
            None => String::new(),
        }
    }

    /// Whether a completion after `t` starts with a space (its last token ends a word and the
    /// text does not already end in white space).
    fn space_after(&self, t: &Tokenized) -> bool {
        let word_end = t
            .ids
            .last()
            .and_then(|&i| self.tokenizer.token(i))
            .is_some_and(|s| s.ends_with("</w>"));
        word_end && !t.text.ends_with(char::is_whitespace)
    }

    /// The completion's text cut at a stop string, the number of its tokens kept, and whether
    /// a stop string ended it.
    pub fn completion_text(
        &self,
        t: &Tokenized,
        sample: &Generated,
        stops: &[String],
    ) -> ApiResult<(String, usize, bool)> {
        let (text, stopped) = cut_at_stop(&self.tokenizer.decode(&sample.ids)?, stops);
        // The fewest tokens whose text covers what is kept.
        let mut kept = sample.ids.len();
        if stopped {
            kept = (0..=sample.ids.len())
                .find(|&k| {
                    self.tokenizer.decode(&sample.ids[..k]).map_or(true, |s| s.len() >= text.len())
                })
                .unwrap_or(sample.ids.len());
        }
        let lead = if !text.is_empty() && self.space_after(t) { " " } else { "" };
        Ok((format!("{lead}{text}"), kept, stopped))
    }

    fn choice(
        &self,
        req: &Request,
        t: &Tokenized,
        scored: Option<&Scored>,
        sample: &Generated,
    ) -> ApiResult<Choice> {
        let (text, kept, stopped) = self.completion_text(t, sample, &req.stops)?;
        let finish =
            if stopped || sample.stop == StopReason::StopString { "stop" } else { "length" };
        let logprobs = req.logprobs.map(|_| {
            let mut tokens = Vec::new();
            let mut lps: Vec<Value> = Vec::new();
            let mut tops: Vec<Value> = Vec::new();
            let top_obj = |v: &[(u32, f32)]| {
                let m: Map<String, Value> = v.iter().map(|&(id, lp)| (self.token_text(id), json!(lp))).collect();
                Value::Object(m)
            };
            if req.echo {
                let s = scored.expect("echo with logprobs scores the prompt");
                for (j, &id) in t.ids.iter().enumerate() {
                    tokens.push(self.token_text(id));
                    lps.push(if j == 0 { Value::Null } else { json!(s.logprobs[j - 1]) });
                    tops.push(match j {
                        0 => Value::Null,
                        _ => s.top.get(j - 1).map_or(json!({}), |t| top_obj(t)),
                    });
                }
            }
            for j in 0..kept {
                tokens.push(self.token_text(sample.ids[j]));
                lps.push(json!(sample.logprobs[j]));
                tops.push(top_obj(sample.top.get(j).map_or(&[][..], Vec::as_slice)));
            }
            let mut at = if req.echo { 0 } else { t.text.chars().count() };
            let offsets: Vec<usize> = tokens
                .iter()
                .map(|s| {
                    let o = at;
                    at += s.chars().count();
                    o
                })
                .collect();
            json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
        });
        let full = if req.echo { format!("{}{text}", t.text) } else { text };
        Ok(Choice {
            value: json!({"index": 0, "text": full, "logprobs": logprobs, "finish_reason": finish}),
            tokens: kept,
        })
    }
}

/// `POST /v1/completions` with `stream`: the events, sent on `out` as they come.
pub async fn stream(st: State, req: Request, out: mpsc::UnboundedSender<Value>) {
    if let Err(e) = stream_inner(&st, &req, &out).await {
        let _ = out.send(json!({"error": {"message": e.message, "code": e.status.as_u16()}}));
    }
}

fn chunk(
    st: &State,
    id: &str,
    index: usize,
    text: &str,
    finish: Option<&str>,
    logprobs: Option<Value>,
) -> Value {
    json!({
        "id": id, "object": "text_completion", "created": now(), "model": &*st.name,
        "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
    })
}

async fn stream_inner(
    st: &State,
    req: &Request,
    out: &mpsc::UnboundedSender<Value>,
) -> ApiResult<()> {
    let toks = tokenize(st, req)?;
    let id = st.next_id();
    if req.scoring_only() {
        // Nothing to stream token by token: each choice in one event.
        let scored = score(st, req, &toks).await?;
        for (i, t) in toks.iter().enumerate() {
            let gens = scored_samples(req, scored.as_deref(), i);
            for (s, g) in gens.iter().enumerate() {
                let c = st.choice(req, t, scored.as_ref().map(|x| &x[i]), g)?;
                let v = &c.value;
                let _ = out.send(chunk(
                    st,
                    &id,
                    i * req.n + s,
                    v["text"].as_str().unwrap_or(""),
                    v["finish_reason"].as_str(),
                    Some(v["logprobs"].clone()).filter(|l| !l.is_null()),
                ));
            }
        }
        return Ok(());
    }
    for (i, t) in toks.iter().enumerate() {
        // The client has gone: nothing more to compute for it.
        if out.is_closed() {
            return Ok(());
        }
        let base = i * req.n;
        if req.echo {
            for s in 0..req.n {
                let _ = out.send(chunk(st, &id, base + s, &t.text, None, None));
            }
        }
        let (dtx, mut drx) = mpsc::unbounded_channel::<Delta>();
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        submit(
            st,
            Job::Generate {
                prompt: t.ids.clone(),
                opts: options(req),
                stops: req.stops.clone(),
                stream: Some(dtx),
                reply,
            },
        )?;
        let lead = if st.space_after(t) { " " } else { "" };
        // What each sample has been sent, without the leading space.
        let mut sent = vec![0usize; req.n];
        let forward = |d: Delta, sent: &mut Vec<usize>| {
            let sp = if sent[d.sample] == 0 { lead } else { "" };
            sent[d.sample] += d.text.len();
            let _ =
                out.send(chunk(st, &id, base + d.sample, &format!("{sp}{}", d.text), None, None));
        };
        let gens = loop {
            tokio::select! {
                Some(d) = drx.recv() => forward(d, &mut sent),
                r = &mut rx => {
                    while let Ok(d) = drx.try_recv() {
                        forward(d, &mut sent);
                    }
                    break match r {
                        Ok(g) => g.map_err(ApiError::from)?,
                        Err(_) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")),
                    };
                }
            }
        };
        for (s, g) in gens.iter().enumerate() {
            let (text, _, stopped) = st.completion_text(t, g, &req.stops)?;
            let text = text.strip_prefix(lead).filter(|_| !lead.is_empty()).unwrap_or(&text);
            let rest = text.get(sent[s]..).unwrap_or("");
            let sp = if sent[s] == 0 && !rest.is_empty() { lead } else { "" };
            let finish =
                if stopped || g.stop == StopReason::StopString { "stop" } else { "length" };
            let _ = out.send(chunk(st, &id, base + s, &format!("{sp}{rest}"), Some(finish), None));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::state::Limits;

    #[test]
    fn a_full_queue_is_a_503_and_a_stopped_model_thread_too() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let tok = std::sync::Arc::new(crate::text::Tokenizer::gpt1(None).unwrap());
        let limits = Limits { max_queue: 1, max_n: 1 };
        let st = State::new(tx, tok, "m".into(), vec![], 8, limits, None, None);
        let job = || Job::Score { rows: vec![], reply: tokio::sync::oneshot::channel().0 };
        assert!(submit(&st, job()).is_ok());
        let e = submit(&st, job()).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("queue is full"), "{}", e.message);
        drop(rx);
        let e = submit(&st, job()).unwrap_err();
        assert!(e.message.contains("stopping"), "{}", e.message);
    }
}

//! `gpt1 bench serve`: log-likelihood requests through `gpt1 serve` over loopback HTTP at
//! several concurrencies, beside the same rows scored in-process (`gpt1 score`'s path), so the
//! ratio is the cost of the server (HTTP, JSON, queueing, batching across requests).

use super::peak_rss_mib;
use crate::backend::{Cpu, Device, Precision};
use crate::error::{Error, Result};
use crate::kernels::rng::Rng;
use crate::model::checkpoint::save_model;
use crate::model::{Config, Gpt};
use crate::serve::{ServeOptions, serve_until};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct Rate {
    pub requests_per_s: f64,
    pub tokens_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServeRun {
    pub concurrency: usize,
    /// `echo`: the prompt's log-probs (max_tokens 0, logprobs 0); `lm-eval`: what
    /// lm-evaluation-harness sends (echo, max_tokens 1, logprobs 1, temperature 0).
    pub style: &'static str,
    pub rate: Rate,
    /// Requests/s over the in-process rate.
    pub vs_in_process: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServeBench {
    pub config: String,
    pub requests: usize,
    pub prompt_len: usize,
    pub max_batch: usize,
    pub threads: usize,
    pub in_process: Rate,
    pub runs: Vec<ServeRun>,
    pub peak_rss_mib: f64,
}

/// A checkpoint written for the benchmark, removed when dropped.
struct TempModel(std::path::PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One request over a fresh connection (`Connection: close`, read to the end): a load
/// generator of a few lines, so the release binary carries no HTTP client library.
fn post(addr: SocketAddr, body: &str) -> Result<u16> {
    let io = |e: std::io::Error| Error::Unknown(format!("bench serve: {addr}: {e}"));
    let mut s = TcpStream::connect(addr).map_err(io)?;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(io)?;
    let head = String::from_utf8_lossy(&resp[..resp.len().min(16)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::Unknown(format!("bench serve: not an HTTP answer: {head:?}")))
}

/// Measures `requests` rows of `prompt_len` random tokens of a random-init model `config`.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    name: &str,
    config: Config,
    requests: usize,
    prompt_len: usize,
    concurrency: &[usize],
    max_batch: usize,
    precision: Precision,
) -> Result<ServeBench> {
    if prompt_len < 2 || prompt_len > config.n_positions || requests == 0 {
        return Err(Error::setting(
            "prompt_len",
            format!("must be 2 to the context ({}), with at least one request", config.n_positions),
        ));
    }
    // GPT-1's vocabulary: the server reads it with GPT-1's built-in tokenizer.
    let mut config = config;
    config.vocab_size = crate::text::tokenizer::GPT1_VOCAB;
    let mut model = Gpt::init(config.clone(), 1);
    let dir =
        TempModel(std::env::temp_dir().join(format!("gpt1-bench-serve-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).map_err(|e| Error::io(&dir.0, e))?;
    save_model(&dir.0, &model)?;
    let mut rng = Rng::new(29);
    let rows: Vec<Vec<u32>> = (0..requests)
        .map(|_| (0..prompt_len).map(|_| rng.below(config.vocab_size as u64) as u32).collect())
        .collect();
    let tokens = (requests * prompt_len) as f64;
    // In-process: the same rows, the same pass size, `gpt1 score`'s path; the median of 3.
    model.backend = Cpu::new(precision);
    let mut secs = Vec::new();
    {
        let _pinned = model.pin();
        for r in 0..4 {
            let t0 = Instant::now();
            crate::eval::score(&model, &rows, max_batch, None)?;
            if r > 0 {
                secs.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    secs.sort_by(f64::total_cmp);
    let base = Rate { requests_per_s: requests as f64 / secs[1], tokens_per_s: tokens / secs[1] };
    drop(model);
    let o = ServeOptions {
        model: dir.0.clone(),
        tokenizer: None,
        name: Some("bench".into()),
        host: "127.0.0.1".into(),
        port: 0,
        precision,
        device: Device::Cpu,
        max_batch,
        max_queue: 1024,
        max_n: 1,
        max_body: 64 << 20,
        api_key: None,
        log_requests: false,
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        serve_until(
            o,
            move |a| {
                let _ = addr_tx.send(a);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
    });
    let Ok(addr) = addr_rx.recv() else {
        return Err(server
            .join()
            .unwrap_or(Err(Error::Unknown("the server panicked".into())))
            .err()
            .unwrap_or(Error::Unknown("the server did not start".into())));
    };
    type Body = fn(&[u32]) -> String;
    let styles: [(&str, Body); 2] = [
        ("echo", |ids| {
            serde_json::json!({"prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 0})
                .to_string()
        }),
        ("lm-eval", |ids| {
            serde_json::json!({"prompt": [ids], "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0}).to_string()
        }),
    ];
    let mut runs = Vec::new();
    let result = (|| -> Result<()> {
        for (style, body) in styles {
            // Untimed: the first request makes what the server keeps (pinned weights, buffers).
            post(addr, &body(&rows[0]))?;
            for &c in concurrency {
                let next = AtomicUsize::new(0);
                let t0 = Instant::now();
                std::thread::scope(|sc| -> Result<()> {
                    let hs: Vec<_> = (0..c.max(1))
                        .map(|_| {
                            sc.spawn(|| -> Result<()> {
                                loop {
                                    let i = next.fetch_add(1, Ordering::Relaxed);
                                    if i >= requests {
                                        return Ok(());
                                    }
                                    let st = post(addr, &body(&rows[i]))?;
                                    if st != 200 {
                                        return Err(Error::Unknown(format!(
                                            "bench serve: answer {st}"
                                        )));
                                    }
                                }
                            })
                        })
                        .collect();
                    hs.into_iter().try_for_each(|h| {
                        h.join().unwrap_or(Err(Error::Unknown("a client panicked".into())))
                    })
                })?;
                let s = t0.elapsed().as_secs_f64();
                let rate = Rate { requests_per_s: requests as f64 / s, tokens_per_s: tokens / s };
                let vs = rate.requests_per_s / base.requests_per_s;
                runs.push(ServeRun { concurrency: c, style, rate, vs_in_process: vs });
            }
        }
        Ok(())
    })();
    let _ = stop_tx.send(());
    server.join().map_err(|_| Error::Unknown("the server panicked".into()))??;
    result?;
    Ok(ServeBench {
        config: name.to_string(),
        requests,
        prompt_len,
        max_batch,
        threads: rayon::current_num_threads(),
        in_process: base,
        runs,
        peak_rss_mib: peak_rss_mib(),
    })
}

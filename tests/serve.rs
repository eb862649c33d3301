//! `gpt1 serve` over loopback with a real HTTP client: the numbers equal `gpt1 score`,
//! `gpt1 generate` and `gpt1 predict`; streaming, concurrency, limits and bad requests.

mod common;

use common::{letter_model, ok, s, scratch_args, setup, strs};
use gpt1::model::Net;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

fn model_dir() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = common::fixture_dir("serve-letters");
        letter_model(&d);
        d
    })
}

/// A running `gpt1 serve`; stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gpt1"))
            .args(["serve", "--model", s(dir), "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gpt1 serve");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let base = match line.trim().strip_prefix("listening on ") {
            Some(b) => b.to_string(),
            None => {
                let mut err = String::new();
                child.stderr.as_mut().unwrap().read_to_string(&mut err).ok();
                panic!("gpt1 serve did not start: {line}{err}");
            }
        };
        Self { child, base }
    }

    /// SIGTERM; the exit status and standard error.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.as_mut().unwrap().read_to_string(&mut err).ok();
        (status, err)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).build().into()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), None)
    }

    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        self.try_post_raw(path, body, key).unwrap()
    }

    /// [`Server::post_raw`], or the transport's error (a connection the server closed).
    fn try_post_raw(
        &self,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> Result<(u16, Value), ureq::Error> {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(k) = key {
            r = r.header("Authorization", &format!("Bearer {k}"));
        }
        let mut res = r.send(body)?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut res = Self::agent().get(&format!("{}{path}", self.base)).call().unwrap();
        let status = res.status().as_u16();
        (status, res.body_mut().read_json().unwrap())
    }

    /// The data events of a streamed completion.
    fn stream(&self, body: &Value) -> Vec<String> {
        let mut res =
            Self::agent().post(&format!("{}/v1/completions", self.base)).send_json(body).unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let text = res.body_mut().read_to_string().unwrap();
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn echo_logprobs_equal_gpt1_score_and_the_next_token_is_the_greedy_one() {
    let dir = model_dir();
    let srv = Server::start(dir, &[]);
    let rows: Vec<Vec<u32>> =
        vec![vec![3, 7, 11, 20, 5, 9], vec![1, 2, 3], vec![40, 41, 13, 13, 2]];
    let Net::Transformer(m) = Net::load(dir).unwrap() else { panic!() };
    let want = gpt1::eval::score(&m, &rows, 8, None).unwrap();
    // lm-evaluation-harness's log-likelihood request: echo, one new token, top-1 alternatives.
    let body = json!({"model": s(dir), "prompt": rows, "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0});
    let (st, v) = srv.post("/v1/completions", &body);
    assert_eq!(st, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let lp = &c["logprobs"];
        let tl = lp["token_logprobs"].as_array().unwrap();
        assert_eq!(tl.len(), rows[i].len() + 1);
        assert!(tl[0].is_null() && lp["top_logprobs"][0].is_null());
        let got = f32s(&Value::Array(tl[1..rows[i].len()].to_vec()));
        for (g, w) in got.iter().zip(&want.rows[i].token_logprobs) {
            assert!((g - w).abs() <= 1e-5, "row {i}: {g} vs {w}");
        }
        // The new token is the greedy one: its log-prob is the top alternative's, bitwise.
        let last = tl.last().unwrap().as_f64().unwrap();
        let top = lp["top_logprobs"].as_array().unwrap().last().unwrap().as_object().unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top.values().next().unwrap().as_f64().unwrap(), last);
        let out = ok(&[
            "generate",
            "--model",
            s(dir),
            "--ids",
            &format!("{:?}", rows[i]),
            "--max-new",
            "1",
            "--greedy",
            "--json",
        ]);
        let g: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(lp["tokens"].as_array().unwrap().len(), rows[i].len() + 1);
        assert_eq!(c["finish_reason"], "length");
        let detok = srv.post("/detokenize", &json!({"tokens": g["ids"]})).1;
        let text = c["text"].as_str().unwrap();
        assert!(text.ends_with(detok["prompt"].as_str().unwrap()), "{text} vs {detok}");
    }
    // max_tokens 0 with echo and logprobs: the prompt alone, scored.
    let body = json!({"prompt": rows[0], "max_tokens": 0, "echo": true, "logprobs": 0});
    let v = srv.post("/v1/completions", &body).1;
    let tl = f32s(&Value::Array(
        v["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap()[1..].to_vec(),
    ));
    assert_eq!(tl.len(), rows[0].len() - 1);
    assert!(tl.iter().zip(&want.rows[0].token_logprobs).all(|(a, b)| (a - b).abs() <= 1e-5));
    assert_eq!(v["usage"]["completion_tokens"], 0);
    // With alternatives the whole log-softmax runs on the host: the fused head's values, bitwise.
    let body = json!({"prompt": rows[0], "max_tokens": 0, "echo": true, "logprobs": 3});
    let w = srv.post("/v1/completions", &body).1;
    let lp = |v: &Value| v["choices"][0]["logprobs"]["token_logprobs"].clone();
    assert_eq!(lp(&w), lp(&v));
    let (status, err) = srv.stop();
    assert!(status.success(), "{err}");
    assert!(err.contains("POST /v1/completions 200"), "{err}");
}

#[test]
fn greedy_completions_equal_gpt1_generate_and_stream_the_same_text() {
    let dir = model_dir();
    let srv = Server::start(dir, &[]);
    let cli = ok(&[
        "generate",
        "--model",
        s(dir),
        "--prompt",
        "ab cd",
        "--max-new",
        "10",
        "--greedy",
        "--json",
    ]);
    let want: Value = serde_json::from_str(cli.lines().next().unwrap()).unwrap();
    let body = json!({"prompt": "ab cd", "max_tokens": 10, "temperature": 0, "logprobs": 2});
    let (st, v) = srv.post("/v1/completions", &body);
    assert_eq!(st, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["text"].as_str().unwrap().trim_start(), want["text"].as_str().unwrap());
    assert_eq!(c["logprobs"]["tokens"].as_array().unwrap().len(), 10);
    assert_eq!(c["logprobs"]["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    // Streamed: the same text in pieces, a finish reason at the end, then [DONE].
    let events =
        srv.stream(&json!({"prompt": "ab cd", "max_tokens": 10, "temperature": 0, "stream": true}));
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, c["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
}

#[test]
fn n_samples_are_seeded_and_a_stop_string_ends_them() {
    let dir = model_dir();
    let srv = Server::start(dir, &[]);
    let body = json!({"prompt": ["ab", "cd ef"], "max_tokens": 12, "n": 3, "seed": 4});
    let v = srv.post("/v1/completions", &body).1;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 6);
    assert!(choices.iter().enumerate().all(|(i, c)| c["index"] == i));
    // The same seed, the same samples; sample i of a prompt as `gpt1 generate --num 3`.
    assert_eq!(srv.post("/v1/completions", &body).1["choices"], v["choices"]);
    let cli = ok(&[
        "generate",
        "--model",
        s(dir),
        "--prompt",
        "ab",
        "--max-new",
        "12",
        "--num",
        "3",
        "--seed",
        "4",
        "--json",
    ]);
    for (line, c) in cli.lines().zip(choices) {
        let g: Value = serde_json::from_str(line).unwrap();
        assert_eq!(c["text"].as_str().unwrap().trim_start(), g["text"].as_str().unwrap());
    }
    // Stop at the second letter of the first sample's text.
    let text = choices[0]["text"].as_str().unwrap().trim_start().to_string();
    let stop: String = text.chars().filter(|c| !c.is_whitespace()).skip(1).take(1).collect();
    let v = srv
        .post(
            "/v1/completions",
            &json!({"prompt": "ab", "max_tokens": 12, "n": 1, "seed": 4, "stop": [stop.clone()]}),
        )
        .1;
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop", "{v}");
    assert!(!c["text"].as_str().unwrap().contains(&stop));
    assert!(text.trim_start().starts_with(c["text"].as_str().unwrap().trim_start()));
}

#[test]
fn many_concurrent_requests_are_all_answered_as_alone() {
    let dir = model_dir();
    let srv = Server::start(dir, &["--max-batch", "8"]);
    let prompt = |i: usize| -> Vec<u32> {
        (0..(3 + i % 13)).map(|j| ((i * 7 + j * 3) % 52) as u32).collect()
    };
    let alone: Vec<Value> = (0..8)
        .map(|i| {
            srv.post(
                "/v1/completions",
                &json!({"prompt": prompt(i), "max_tokens": 0, "echo": true, "logprobs": 0}),
            )
            .1
        })
        .collect();
    let answers: Vec<(usize, u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64)
            .map(|i| {
                let srv = &srv;
                sc.spawn(move || {
                    let body = json!({"prompt": prompt(i % 8), "max_tokens": 0, "echo": true, "logprobs": 0});
                    let (st, v) = srv.post("/v1/completions", &body);
                    (i, st, v)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 64);
    for (i, st, v) in answers {
        assert_eq!(st, 200, "{v}");
        let got = &v["choices"][0]["logprobs"]["token_logprobs"];
        let want = &alone[i % 8]["choices"][0]["logprobs"]["token_logprobs"];
        let (g, w) = (got.as_array().unwrap(), want.as_array().unwrap());
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w).skip(1) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-5, "request {i}");
        }
    }
}

#[test]
fn bad_requests_get_a_json_error_and_the_server_keeps_serving() {
    let dir = model_dir();
    let srv = Server::start(dir, &["--max-n", "4", "--max-request-mb", "1", "--max-queue", "2"]);
    let long: Vec<u32> = vec![1; 30];
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/completions", "{not json".into(), 400, "not JSON"),
        ("/v1/completions", "[1, 2]".into(), 400, "JSON object"),
        ("/v1/completions", json!({"prompt": 5}).to_string(), 400, "prompt must be"),
        (
            "/v1/completions",
            json!({"prompt": "ab", "max_tokens": "x"}).to_string(),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "ab", "temperature": -1}).to_string(),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "ab", "model": "nope"}).to_string(),
            404,
            "not served here",
        ),
        ("/v1/completions", json!({"prompt": long, "max_tokens": 0}).to_string(), 400, "context"),
        (
            "/v1/completions",
            json!({"prompt": [99999]}).to_string(),
            400,
            "not below the vocabulary",
        ),
        (
            "/v1/completions",
            json!({"prompt": "ab", "n": 5}).to_string(),
            400,
            "n must be between 1 and 4",
        ),
        (
            "/v1/completions",
            json!({"prompt": "ab", "max_tokens": 1000}).to_string(),
            400,
            "max_tokens",
        ),
        ("/v1/completions", json!({"prompt": "ab", "logprobs": 50}).to_string(), 400, "logprobs"),
        ("/v1/completions", json!({"prompt": "ab", "stop": [""]}).to_string(), 400, "stop"),
        ("/v1/completions", json!({"prompt": "x".repeat(2 << 20)}).to_string(), 413, "limit"),
        ("/v1/classify", json!({"sentence": "ab"}).to_string(), 404, "fine-tuned"),
        ("/tokenize", json!({"prompt": 3}).to_string(), 400, "prompt"),
        ("/detokenize", json!({"tokens": [1, 99999]}).to_string(), 400, "outside the vocabulary"),
        ("/nowhere", "{}".into(), 404, "no such route"),
        // The whole context, and no room left for a new token.
        (
            "/v1/completions",
            json!({"prompt": vec![1; 24], "max_tokens": 2}).to_string(),
            400,
            "a new token needs one",
        ),
        (
            "/v1/completions",
            json!({"prompt": "ab", "stream": true, "logprobs": 1, "max_tokens": 1}).to_string(),
            400,
            "logprobs",
        ),
    ];
    for (path, body, status, needle) in cases {
        // A body over the limit is refused from its Content-Length, before it is read: the
        // server may close the connection while the client still sends, which a loaded machine
        // shows as a broken pipe instead of the 413 (docs/serving.md). Either way, it serves on.
        let (st, v) = match srv.try_post_raw(path, &body, None) {
            Err(ureq::Error::Io(e)) if status == 413 => {
                use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
                assert!(matches!(e.kind(), BrokenPipe | ConnectionReset), "{path}: {e}");
                let (st, v) =
                    srv.post("/v1/completions", &json!({"prompt": "ab", "max_tokens": 2}));
                assert_eq!(st, 200, "after {path} {body:.80}: {v}");
                continue;
            }
            r => r.unwrap(),
        };
        assert_eq!(st, status, "{path} {body:.80}: {v}");
        let msg =
            v["error"]["message"].as_str().unwrap_or_else(|| panic!("{path} {body:.80}: {v}"));
        assert!(msg.contains(needle), "{path} {body:.80}: {msg}");
        let (st, v) = srv.post("/v1/completions", &json!({"prompt": "ab", "max_tokens": 2}));
        assert_eq!(st, 200, "after {path} {body:.80}: {v}");
    }
    // More prompts than the queue holds: they go to the model one at a time.
    let body = json!({"prompt": ["ab", "cd", "ef", "gh", "ij"], "max_tokens": 3});
    let (st, v) = srv.post("/v1/completions", &body);
    assert_eq!((st, v["choices"].as_array().map(Vec::len)), (200, Some(5)), "{v}");
}

#[test]
fn tokenizer_endpoints_models_health_and_the_api_key() {
    let dir = model_dir();
    let srv = Server::start(dir, &["--api-key", "sesame", "--name", "letters"]);
    assert_eq!(srv.get("/health"), (200, json!({"status": "ok"})));
    let (st, v) = srv.post_raw("/tokenize", &json!({"prompt": "ab"}).to_string(), None);
    assert_eq!(st, 401, "{v}");
    let (st, v) = srv.post_raw(
        "/tokenize",
        &json!({"prompt": "ab cd", "add_special_tokens": false}).to_string(),
        Some("sesame"),
    );
    assert_eq!(st, 200, "{v}");
    let ids = v["tokens"].clone();
    let (_, d) = srv.post_raw("/detokenize", &json!({"tokens": ids}).to_string(), Some("sesame"));
    assert_eq!(d["prompt"], "ab cd");
    let mut res = Server::agent()
        .get(&format!("{}/v1/models", srv.base))
        .header("Authorization", "Bearer sesame")
        .call()
        .unwrap();
    let m: Value = res.body_mut().read_json().unwrap();
    assert_eq!(m["data"][0]["id"], "letters");
    let mut res = Server::agent()
        .get(&format!("{}/tokenizer_info", srv.base))
        .header("Authorization", "Bearer sesame")
        .call()
        .unwrap();
    let info: Value = res.body_mut().read_json().unwrap();
    assert!(info.as_object().unwrap().contains_key("eos_token"), "{info}");
    let (status, _) = srv.stop();
    assert!(status.success());
}

#[test]
fn classify_answers_what_predict_writes() {
    let d = common::fixture_dir("serve-classify");
    setup(&d);
    let out = d.join("run");
    ok(&strs(&scratch_args(&d, "sst2", &out, &["--epochs", "2", "--batch", "8", "--quiet"])));
    let best = out.join("best");
    let pred = d.join("pred.tsv");
    ok(&[
        "predict",
        "--model",
        s(&best),
        "--data",
        s(&d),
        "--split",
        "dev",
        "--out",
        s(&pred),
        "--probabilities",
    ]);
    let tsv = std::fs::read_to_string(&pred).unwrap();
    let dev = std::fs::read_to_string(d.join("dev.tsv")).unwrap();
    let sentences: Vec<&str> = dev.lines().skip(1).map(|l| l.split('\t').next().unwrap()).collect();
    let srv = Server::start(&best, &[]);
    let inputs: Vec<Value> = sentences.iter().map(|t| json!({"sentence": t})).collect();
    let (st, v) = srv.post("/v1/classify", &json!({"inputs": inputs}));
    assert_eq!(st, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), sentences.len());
    for (line, a) in tsv.lines().skip(1).zip(data) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(a["label"], cols[1], "{line} vs {a}");
        for (k, label) in ["0", "1"].iter().enumerate() {
            let p = a["probabilities"][label].as_f64().unwrap();
            assert!((p - cols[2 + k].parse::<f64>().unwrap()).abs() < 1e-5, "{line} vs {a}");
        }
    }
    // One object in, one answer out; a missing field is named.
    // (Alone, it is padded to its own length: the same up to rounding.)
    let one = srv.post("/v1/classify", &json!({"sentence": sentences[0]})).1;
    assert_eq!(one["label"], data[0]["label"]);
    let (p, q) = (&one["probabilities"]["0"], &data[0]["probabilities"]["0"]);
    assert!((p.as_f64().unwrap() - q.as_f64().unwrap()).abs() < 1e-6, "{one} vs {}", data[0]);
    let (st, v) = srv.post("/v1/classify", &json!({"text_b": "x"}));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("sentence"));
    // The fine-tuned body still completes text.
    assert_eq!(srv.post("/v1/completions", &json!({"prompt": "the cat", "max_tokens": 3})).0, 200);
}

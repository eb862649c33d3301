#!/usr/bin/env python3
"""End-to-end check of `gpt1 serve` with the real clients: the `openai` package and
lm-evaluation-harness (`local-completions` with the server's remote tokenizer).

It starts `gpt1 serve --port 0` on --model and compares what the clients get with the CLI:

  openai   echo scoring (echo, logprobs=1, max_tokens=0) against `gpt1 score` (1e-5);
           a greedy completion against `gpt1 generate --greedy` (a leading space allowed);
           a streamed completion against the same request without streaming.
  lm_eval  runs the two tasks of tools/lm_eval_tasks (serve_mc: multiple_choice, serve_gen:
           generate_until) and checks every logged sample: each choice's log-likelihood is the sum
           of its continuation tokens' log-probs from `gpt1 score` (1e-4); each generation is
           `gpt1 generate --greedy` cut at the stop strings (modulo surrounding white space).
           Where torch and transformers import, the same again against transformers'
           `OpenAIGPTLMHeadModel` on the same checkpoint (float64 log-softmax, greedy generate).
  server   SIGTERM stops it with exit status 0.

One PASS/FAIL line per check; the exit status is 1 if any failed. Any checkpoint with GPT-1's
vocabulary and n_positions >= 64 will do. The clients need no torch:

  pip install --target /tmp/pyclients openai "lm_eval[api]"
  PYTHONPATH=/tmp/pyclients python3 tools/serve_clients.py --model DIR [--gpt1 target/release/gpt1]
"""

import argparse
import glob
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
TASKS = TOOLS / "lm_eval_tasks"
PROMPT = "The old man looked at the sea, and he said that"
failures = 0


def report(name, ok, detail):
    global failures
    failures += not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def write_npy(path, ids):
    """A 1-D little-endian int32 .npy (format v1.0), without numpy."""
    header = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }" % len(ids)
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(struct.pack(f"<{len(ids)}i", *ids))


class Cli:
    def __init__(self, gpt1, model, threads, work):
        self.pre = [gpt1] + (["--threads", str(threads)] if threads else [])
        self.model, self.work, self.n = model, work, 0

    def run(self, *args):
        p = subprocess.run(self.pre + list(args), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(self.pre + list(args))}: exit {p.returncode}\n{p.stderr}")
        return p.stdout

    def score(self, ids):
        """log P(ids[j] | ids[:j]) for j = 1..len(ids)-1."""
        self.n += 1
        path = os.path.join(self.work, f"ids{self.n}.npy")
        write_npy(path, ids)
        out = json.loads(self.run("score", "--model", self.model, "--ids", path, "--json"))
        return out["rows"][0]["token_logprobs"]

    def generate(self, prompt, max_new):
        out = self.run("generate", "--model", self.model, "--prompt", prompt,
                       "--max-new", str(max_new), "--greedy", "--json")
        return json.loads(out.splitlines()[0])["text"]


class Transformers:
    """The same checkpoint in transformers' `OpenAIGPTLMHeadModel` (float64 log-softmax, greedy
    `generate`), when torch and transformers are importable: the reference gpt1 is held to."""

    def __init__(self, model, base):
        import torch
        from transformers import OpenAIGPTLMHeadModel

        self.torch, self.base = torch, base
        self.m = OpenAIGPTLMHeadModel.from_pretrained(model).eval()

    def score(self, ids):
        with self.torch.no_grad():
            x = self.torch.tensor([ids])
            lp = self.torch.log_softmax(self.m(x).logits.double(), -1)[0]
        return [float(lp[j, ids[j + 1]]) for j in range(len(ids) - 1)]

    def generate(self, prompt, max_new):
        ids = http(self.base, "/tokenize", {"prompt": prompt, "add_special_tokens": False})["tokens"]
        n = min(max_new, self.m.config.n_positions - len(ids))
        with self.torch.no_grad():
            out = self.m.generate(self.torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                  pad_token_id=0)
        return http(self.base, "/detokenize", {"tokens": out[0, len(ids):].tolist()})["prompt"]


def http(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def cut(text, stops):
    at = min([i for i in (text.find(s) for s in stops) if i >= 0], default=len(text))
    return text[:at]


def check_openai(base, name, cli):
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
    ids = http(base, "/tokenize", {"prompt": PROMPT, "add_special_tokens": False})["tokens"]
    r = client.completions.create(model=name, prompt=PROMPT, echo=True, logprobs=1, max_tokens=0)
    lps = r.choices[0].logprobs.token_logprobs
    ref = cli.score(ids)
    ok = len(lps) == len(ids) and lps[0] is None and r.choices[0].text == PROMPT
    diff = max(abs(a - b) for a, b in zip(lps[1:], ref)) if ok else float("inf")
    report("openai echo logprobs vs gpt1 score", ok and diff <= 1e-5,
           f"{len(lps)} entries for {len(ids)} ids, first {lps[0]!r}, max |diff| {diff:.2e}")

    greedy = client.completions.create(model=name, prompt=PROMPT, temperature=0, max_tokens=16)
    text, ref = greedy.choices[0].text, cli.generate(PROMPT, 16)
    report("openai greedy vs gpt1 generate", text in (ref, " " + ref),
           f"server {text!r}, cli {ref!r}")

    chunks = client.completions.create(model=name, prompt=PROMPT, temperature=0, max_tokens=16,
                                       stream=True)
    joined = "".join(c.choices[0].text for c in chunks if c.choices)
    report("openai stream vs non-stream", joined == text, f"streamed {joined!r}")


def run_lm_eval(base, name, work):
    tasks = os.path.join(work, "tasks")
    os.makedirs(tasks)
    for t in TASKS.glob("*.yaml.template"):
        Path(tasks, t.name.removesuffix(".template")).write_text(
            t.read_text().replace("@DATA_DIR@", str(TASKS)))
    out = os.path.join(work, "lm_eval_out")
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
           f"model={name},base_url={base}/v1/completions,tokenizer_backend=remote,"
           "tokenized_requests=True,max_length=64,num_concurrent=1",
           "--batch_size", "4", "--tasks", "serve_mc,serve_gen", "--include_path", tasks,
           "--log_samples", "--output_path", out]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    report("lm_eval run", p.returncode == 0, f"exit {p.returncode}")
    if p.returncode != 0:
        print(p.stdout[-3000:] + p.stderr[-6000:], file=sys.stderr)
        return None

    def samples(task):
        files = glob.glob(os.path.join(out, "**", f"samples_{task}_*.jsonl"), recursive=True)
        return [json.loads(line) for f in files for line in open(f, encoding="utf-8")]

    return samples("serve_mc"), samples("serve_gen")


def check_mc(base, refs, samples):
    tok = lambda s: http(base, "/tokenize", {"prompt": s, "add_special_tokens": False})["tokens"]
    report("lm_eval serve_mc samples", len(samples) == 8, f"{len(samples)} logged")
    for (who, ref_of), s in ((r, s) for r in refs for s in sorted(samples, key=lambda s: s["doc_id"])):
        worst, n = 0.0, 0
        for i, arg in enumerate(s["arguments"].values()):
            ctx, cont = arg["arg_0"], arg["arg_1"]
            # As lm_eval's `_encode_pair`: trailing spaces of the context go to the continuation.
            k = len(ctx) - len(ctx.rstrip())
            if k:
                ctx, cont = ctx[:-k], ctx[-k:] + cont
            whole, ctx_ids = tok(ctx + cont), tok(ctx)
            ref = sum(ref_of.score(whole)[len(ctx_ids) - 1:])
            got = float(s["resps"][i][0][0])
            filtered = float(s["filtered_resps"][i][0])
            worst = max(worst, abs(got - ref), abs(filtered - ref))
            n += 1
        report(f"lm_eval serve_mc doc {s['doc_id']} vs {who}", n > 0 and worst <= 1e-4,
               f"{n} choices, max |loglik - {who}| {worst:.2e}")


def check_gen(base, refs, samples):
    eos = http(base, "/tokenizer_info").get("eos_token")
    report("lm_eval serve_gen samples", len(samples) == 8, f"{len(samples)} logged")
    for (who, ref_of), s in ((r, s) for r in refs for s in sorted(samples, key=lambda s: s["doc_id"])):
        ctx, kw = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
        # The synchronous path (num_concurrent=1) adds the EOS string to the task's `until`.
        stops = list(kw["until"]) + ([eos] if eos and eos not in kw["until"] else [])
        got = s["resps"][0][0]
        ref = cut(ref_of.generate(ctx, kw["max_gen_toks"]), stops)
        report(f"lm_eval serve_gen doc {s['doc_id']} vs {who}", got.strip() == ref.strip(),
               f"server {got!r}, {who} cut at {stops!r} {ref!r}")


def small_model(gpt1, work):
    """A 2-block model with GPT-1's vocabulary, 150 steps on 400 kB of the demo's books: enough
    for varied greedy text and sharp distributions, which random weights lack."""
    import gzip
    with gzip.open(TOOLS.parent / "assets/demo/books.txt.gz", "rb") as f:
        Path(work, "books.txt").write_bytes(f.read(400_000))
    run = lambda *a: subprocess.run([gpt1, *a], check=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    run("prepare", "--input", f"{work}/books.txt", "--out", f"{work}/data")
    run("pretrain", "--data", f"{work}/data/train.bin", "--out", f"{work}/run", "--config",
        "gpt1-mini", "--n-layer", "2", "--n-embd", "32", "--n-head", "4", "--n-positions", "64",
        "--batch", "16", "--seq", "32", "--steps", "150", "--lr", "1e-2", "--dropout", "0")
    return f"{work}/run/final"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint directory (GPT-1's vocabulary); default: "
                    "a small model pre-trained here in ~10 s on the demo's books")
    ap.add_argument("--gpt1", default=str(TOOLS.parent / "target/release/gpt1"))
    ap.add_argument("--threads", type=int, help="passed to every gpt1 command")
    args = ap.parse_args()
    gpt1 = os.path.abspath(args.gpt1)
    try:
        import lm_eval  # noqa: F401
        import openai  # noqa: F401
    except ImportError as e:
        sys.exit(f"{e}: pip install --target /tmp/pyclients openai 'lm_eval[api]', "
                 "then run with PYTHONPATH=/tmp/pyclients")
    with tempfile.TemporaryDirectory(prefix="serve_clients_") as work:
        if args.model is None:
            args.model = small_model(gpt1, work)
        cli = Cli(gpt1, args.model, args.threads, work)
        log = open(os.path.join(work, "serve.log"), "w+")
        server = subprocess.Popen(cli.pre + ["serve", "--model", args.model, "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            line = server.stdout.readline()
            if not line.startswith("listening on http://"):
                log.seek(0)
                sys.exit(f"gpt1 serve did not start: {line!r}\n{log.read()}")
            base = line.split()[-1].rstrip("/")
            name = http(base, "/v1/models")["data"][0]["id"]
            print(f"server {base}, model {name!r}", flush=True)
            check_openai(base, name, cli)
            got = run_lm_eval(base, name, work)
            refs = [("gpt1", cli)]
            try:
                refs.append(("transformers", Transformers(args.model, base)))
            except ImportError:
                print("transformers: not importable (torch + transformers); compared with gpt1's "
                      "CLI only", flush=True)
            if got:
                check_mc(base, refs, got[0])
                check_gen(base, refs, got[1])
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                rc = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                rc = "none (killed after 60 s)"
            report("server stops on SIGTERM", rc == 0, f"exit status {rc}")
            if failures:
                log.seek(0)
                print("server log (tail):\n" + "".join(log.readlines()[-30:]), file=sys.stderr)
    print(f"{failures} check(s) failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

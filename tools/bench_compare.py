#!/usr/bin/env python3
"""Runs `gpt1 bench train` and tools/bench_torch.py alternately, ROUNDS times each, on the same
configuration, and prints both medians and their ratio (this machine is noisy: alternate, then
take medians). PyTorch runs with jemalloc when it is installed (Debian: libjemalloc2).

  python3 tools/bench_compare.py --config tiny --batch 16 --seq 256 [--steps 5] [--rounds 3]
  python3 tools/bench_compare.py --kind generate --config gpt1 [--prompt-len 64 --new 128]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--prompt-len", type=int, default=64, help="generate: prompt tokens")
ap.add_argument("--new", type=int, default=128, help="generate: new tokens")
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--gpt1", default=os.path.join(ROOT, "target", "release", "gpt1"))
ap.add_argument("--vocab", type=int, help="lstm: vocabulary")
ap.add_argument("--embd", type=int, help="lstm: embedding width")
ap.add_argument("--hidden", type=int, default=2048, help="lstm: hidden units")
ap.add_argument("--layers", type=int, default=1, help="lstm: layers")
ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                help="gpt1's --precision; PyTorch's bf16 autocast for train and finetune, its model "
                     "cast to bf16 for generate")
ap.add_argument("--kind", choices=["train", "finetune", "generate", "lstm"], default="train",
                help="train: pre-training tokens/s; finetune: fine-tuning and evaluation examples/s; "
                     "generate: KV-cached greedy generation, batch 1")
a = ap.parse_args()
TORCH = {"train": "bench_torch.py", "finetune": "bench_finetune_torch.py",
         "generate": "bench_generate_torch.py", "lstm": "bench_lstm_torch.py"}[a.kind]
KEYS = {"train": ["tokens_per_s"], "finetune": ["train_examples_per_s", "eval_examples_per_s"],
        "generate": ["tokens_per_s", "prefill_ms", "decode_ms_per_token"], "lstm": ["tokens_per_s"]}[a.kind]

if a.kind == "generate":
    common = ["--config", a.config, "--prompt-len", str(a.prompt_len), "--new", str(a.new)]
else:
    common = ["--config", a.config, "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps)]
env = dict(os.environ)
if os.path.exists(JEMALLOC):
    env["LD_PRELOAD"] = JEMALLOC
    env["MALLOC_CONF"] = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


shape = ["--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps)]
if a.kind == "lstm":
    sizes = ["--hidden", str(a.hidden), "--layers", str(a.layers)]
    gpt1_cmd = [a.gpt1, "--threads", str(a.threads), "bench", "train", "--json", "--arch", "lstm",
                "--config", a.config, "--vocab-size", str(a.vocab), "--n-embd", str(a.embd),
                "--lstm-hidden", str(a.hidden), "--lstm-layers", str(a.layers)] + shape
    torch_cmd = [sys.executable, os.path.join(HERE, TORCH), "--threads", str(a.threads),
                 "--vocab", str(a.vocab), "--embd", str(a.embd)] + sizes + shape
else:
    gpt1_cmd = [a.gpt1, "--threads", str(a.threads), "bench", a.kind, "--json"] + common
    torch_cmd = [sys.executable, os.path.join(HERE, TORCH), "--threads", str(a.threads)] + common
    if a.precision == "bf16":
        gpt1_cmd += ["--precision", "bf16"]
        torch_cmd += ["--precision", "bf16"] if a.kind == "generate" else ["--bf16"]
if a.kind in ("train", "lstm"):
    # The two MFUs over one denominator: bench_torch.py's fixed 160 GFLOP/s per thread.
    gpt1_cmd += ["--peak-gflops", str(160.0 * a.threads)]
ours, theirs = [], []
for r in range(a.rounds):
    ours.append(run(gpt1_cmd))
    theirs.append(run(torch_cmd, env))
    print(f"round {r}: " + ", ".join(f"{k} gpt1 {ours[-1][k]:.1f} torch {theirs[-1][k]:.1f}" for k in KEYS), file=sys.stderr)
res = {"kind": a.kind, "precision": a.precision, "config": a.config, "batch": a.batch, "seq": a.seq, "threads": a.threads, "rounds": a.rounds}
for k in KEYS:
    g = statistics.median(x[k] for x in ours)
    t = statistics.median(x[k] for x in theirs)
    res.update({f"gpt1_{k}": g, f"torch_{k}": t, f"ratio_{k}": g / t})
if a.kind == "train":
    res["gpt1_mfu"] = statistics.median(x["mfu"] for x in ours)
    res["torch_mfu"] = statistics.median(x["mfu"] for x in theirs)
res["gpt1_peak_rss_mib"] = max(x["peak_rss_mib"] for x in ours)
res["torch_peak_rss_mib"] = max(x["peak_rss_mib"] for x in theirs)
print(json.dumps(res))

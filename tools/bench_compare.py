#!/usr/bin/env python3
"""Runs `gpt1 bench train` and tools/bench_torch.py alternately, ROUNDS times each, on the same
configuration, and prints both medians and their ratio (this machine is noisy: alternate, then
take medians). PyTorch runs with jemalloc when it is installed (Debian: libjemalloc2).

  python3 tools/bench_compare.py --config tiny --batch 16 --seq 256 [--steps 5] [--rounds 3]
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
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--seq", type=int, required=True)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--gpt1", default=os.path.join(ROOT, "target", "release", "gpt1"))
a = ap.parse_args()

common = ["--config", a.config, "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps)]
env = dict(os.environ)
if os.path.exists(JEMALLOC):
    env["LD_PRELOAD"] = JEMALLOC
    env["MALLOC_CONF"] = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


ours, theirs = [], []
for r in range(a.rounds):
    ours.append(run([a.gpt1, "--threads", str(a.threads), "bench", "train", "--json"] + common))
    theirs.append(run([sys.executable, os.path.join(HERE, "bench_torch.py"), "--threads", str(a.threads)] + common, env))
    print(f"round {r}: gpt1 {ours[-1]['tokens_per_s']:.0f} tok/s, torch {theirs[-1]['tokens_per_s']:.0f} tok/s",
          file=sys.stderr)
g = statistics.median(x["tokens_per_s"] for x in ours)
t = statistics.median(x["tokens_per_s"] for x in theirs)
print(json.dumps({
    "config": a.config, "batch": a.batch, "seq": a.seq, "threads": a.threads, "rounds": a.rounds,
    "gpt1_tokens_per_s": g, "torch_tokens_per_s": t, "ratio": g / t,
    "gpt1_mfu": statistics.median(x["mfu"] for x in ours),
    "torch_mfu": statistics.median(x["mfu"] for x in theirs),
    "gpt1_peak_rss_mib": max(x["peak_rss_mib"] for x in ours),
    "torch_peak_rss_mib": max(x["peak_rss_mib"] for x in theirs),
}))

#!/usr/bin/env python3
"""A/B of two gpt1 binaries (e.g. before and after a refactor): `gpt1 bench train` (or
`bench finetune`) alternately, ROUNDS times each, same configuration; prints both medians and
their ratio (B / A). The machine is noisy: alternate, then take medians.

  python3 tools/bench_ab.py OLD_BINARY NEW_BINARY --config small --batch 8 --seq 512 [--kind finetune]
"""
import argparse
import json
import statistics
import subprocess

ap = argparse.ArgumentParser()
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--seq", type=int, required=True)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--kind", choices=["train", "finetune"], default="train")
ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
a = ap.parse_args()
keys = ["tokens_per_s"] if a.kind == "train" else ["train_examples_per_s", "eval_examples_per_s"]
res = {"a": {k: [] for k in keys}, "b": {k: [] for k in keys}}
for r in range(a.rounds):
    for name, binary in (("a", a.a), ("b", a.b)):
        cmd = [binary, "--threads", str(a.threads), "bench", a.kind, "--config", a.config,
               "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--json",
               "--precision", a.precision]
        if a.kind == "train" and name == "b":
            cmd += ["--peak-gflops", "320"]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        for k in keys:
            res[name][k].append(out[k])
for k in keys:
    ma, mb = statistics.median(res["a"][k]), statistics.median(res["b"][k])
    print(f"{a.kind} {a.config} {a.batch}x{a.seq} {k}: A {ma:.1f}  B {mb:.1f}  B/A {mb / ma:.3f}  "
          f"(A {res['a'][k]}, B {res['b'][k]})")

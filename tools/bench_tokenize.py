#!/usr/bin/env python3
"""Tokenization throughput: transformers' OpenAIGPTTokenizer on the shared books (paragraph by
paragraph, one thread) next to `gpt1 prepare` (hf mode) with 1 and 2 workers, alternated, in one
run. Prints JSON with MB/s and tokens/s (medians of ROUNDS).

  python3 tools/bench_tokenize.py [GPT1_DATA] [ROUNDS]
"""
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from transformers import OpenAIGPTTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "data")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
GPT1 = os.path.join(ROOT, "target", "release", "gpt1")
books = sorted(glob.glob(os.path.join(DATA, "corpus", "books", "*.txt")))
tmp = tempfile.mkdtemp()
shutil.copy(os.path.join(DATA, "gpt1-bpe", "encoder_bpe_40000.json"), os.path.join(tmp, "vocab.json"))
shutil.copy(os.path.join(DATA, "gpt1-bpe", "vocab_40000.bpe"), os.path.join(tmp, "merges.txt"))
tok = OpenAIGPTTokenizer.from_pretrained(tmp)
nbytes = sum(os.path.getsize(b) for b in books)


def run_hf():
    t0 = time.perf_counter()
    n = 0
    for b in books:
        text = open(b, encoding="utf-8").read()
        for p in text.split("\n\n"):
            n += len(tok.encode(p))
    return time.perf_counter() - t0, n


def run_gpt1(workers):
    t0 = time.perf_counter()
    out = subprocess.run([GPT1, "prepare", "--tokenizer", os.path.join(DATA, "gpt1-bpe"), "--input",
                          os.path.join(DATA, "corpus", "books"), "--out", os.path.join(tmp, "out"),
                          "--workers", str(workers), "--quiet"], check=True, capture_output=True, text=True)
    s = json.loads(out.stdout)
    return time.perf_counter() - t0, s["train_tokens"] + s["val_tokens"]


res = {"hf_1thread": [], "gpt1_1worker": [], "gpt1_2workers": []}
toks = {}
for _ in range(ROUNDS):
    for k, f in (("hf_1thread", run_hf), ("gpt1_1worker", lambda: run_gpt1(1)), ("gpt1_2workers", lambda: run_gpt1(2))):
        s, n = f()
        res[k].append(s)
        toks[k] = n
out = {"bytes": nbytes, "rounds": ROUNDS}
for k, v in res.items():
    m = statistics.median(v)
    out[k] = {"seconds": m, "mb_per_s": nbytes / 1e6 / m, "tokens_per_s": toks[k] / m, "tokens": toks[k]}
out["ratio_gpt1_1worker_vs_hf"] = out["hf_1thread"]["seconds"] / out["gpt1_1worker"]["seconds"]
out["ratio_gpt1_2workers_vs_hf"] = out["hf_1thread"]["seconds"] / out["gpt1_2workers"]["seconds"]
print(json.dumps(out))

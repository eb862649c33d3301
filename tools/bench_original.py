#!/usr/bin/env python3
"""`original`-mode throughput: the Python original pipeline (ftfy + text_standardize + spaCy +
BPE, tools/make_original_fixtures.py) against `gpt1 prepare --mode original` with 1 and 2
workers, on the same books, in one run. Prints JSON with MB/s and the ratios.

  pip install ftfy spacy
  python3 tools/bench_original.py [GPT1_DATA] [N_BOOKS]
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_original_fixtures import Original  # noqa: E402

ROOT = os.path.dirname(HERE)
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "data")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10
books = sorted(glob.glob(os.path.join(DATA, "corpus", "books", "*.txt")))[:N]
nbytes = sum(os.path.getsize(b) for b in books)
bpe = os.path.join(DATA, "gpt1-bpe")
enc = Original(os.path.join(bpe, "encoder_bpe_40000.json"), os.path.join(bpe, "vocab_40000.bpe"))

t0 = time.perf_counter()
py_tokens = 0
for b in books:
    for p in open(b, encoding="utf-8-sig").read().split("\n\n"):
        py_tokens += len(enc.encode(p))
py = time.perf_counter() - t0
out = {"books": N, "bytes": nbytes, "python": {"seconds": py, "mb_per_s": nbytes / 1e6 / py, "tokens": py_tokens}}
tmp = tempfile.mkdtemp()
for w in (1, 2):
    t0 = time.perf_counter()
    r = subprocess.run([os.path.join(ROOT, "target", "release", "gpt1"), "prepare", "--tokenizer", bpe, "--mode", "original",
                        "--input", *books, "--out", tmp, "--workers", str(w), "--quiet"], check=True, capture_output=True, text=True)
    s = json.loads(r.stdout)
    sec = time.perf_counter() - t0
    out[f"gpt1_{w}_workers"] = {"seconds": sec, "mb_per_s": nbytes / 1e6 / sec, "tokens": s["train_tokens"] + s["val_tokens"],
                                "speedup_vs_python": py / sec}
print(json.dumps(out))

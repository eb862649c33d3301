#!/usr/bin/env python3
"""The PyTorch reference for `gpt1 bench finetune`: HF OpenAIGPTDoubleHeadsModel (one choice:
the body, the tied LM head and a linear summary head, the same work as gpt1's classifier with
the auxiliary LM loss), fp32, dropout 0.1, λ = 0.5, clipping 1.0, AdamW, random sequences;
evaluation with OpenAIGPTForSequenceClassification (forward, no grad). `--bf16`: both under
`torch.autocast("cpu", torch.bfloat16)`, mixed precision as gpt1's `--precision bf16`. Prints
JSON.

  python3 tools/bench_finetune_torch.py --config tiny --batch 8 --seq 128 --steps 5 --threads 2
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--bf16", action="store_true", help="bf16 autocast (mixed precision)")
a = ap.parse_args()

import torch  # noqa: E402
from transformers import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel, OpenAIGPTForSequenceClassification  # noqa: E402

PRESETS = {
    "gpt1": dict(vocab_size=40478 + 3, n_positions=512, n_embd=768, n_layer=12, n_head=12),
    "small": dict(vocab_size=16384, n_positions=512, n_embd=384, n_layer=6, n_head=6),
    "tiny": dict(vocab_size=8192, n_positions=256, n_embd=256, n_layer=4, n_head=4),
}
torch.set_num_threads(a.threads)
torch.manual_seed(0)
kw = PRESETS[a.config]
cfg = OpenAIGPTConfig(**kw, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, summary_first_dropout=0.1, num_labels=2, pad_token_id=0)
B, T, V = a.batch, a.seq, kw["vocab_size"]
model = OpenAIGPTDoubleHeadsModel(cfg)
model.train()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=6.25e-5)
times = []
for s in range(a.warmup + a.steps):
    ids = torch.randint(0, V, (B, 1, T))
    mc_ids = torch.full((B, 1), T - 1)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        out = model(input_ids=ids, mc_token_ids=mc_ids, labels=ids, mc_labels=torch.zeros(B, dtype=torch.long))
        loss = out.mc_loss + 0.5 * out.loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if s >= a.warmup:
        times.append(time.perf_counter() - t0)
clf = OpenAIGPTForSequenceClassification(cfg)
clf.eval()
eval_times = []
with torch.no_grad():
    for s in range(a.warmup + a.steps):
        ids = torch.randint(0, V, (B, T))
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            clf(input_ids=ids)
        if s >= a.warmup:
            eval_times.append(time.perf_counter() - t0)
med = statistics.median(times)
print(json.dumps({
    "config": a.config, "batch": B, "seq": T, "threads": a.threads,
    "train_examples_per_s": B / med,
    "train_step_ms": {"min": min(times) * 1e3, "median": med * 1e3, "max": max(times) * 1e3},
    "eval_examples_per_s": B / statistics.median(eval_times),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch": torch.__version__,
}))

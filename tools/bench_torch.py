#!/usr/bin/env python3
"""The PyTorch reference for `gpt1 bench train`: HF OpenAIGPTLMHeadModel, fp32, eager, AdamW,
dropout 0.1, gradient clipping 1.0, random tokens; prints the same JSON.

  pip install torch transformers
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
  MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \
  python3 tools/bench_torch.py --config tiny --batch 16 --seq 256 --steps 5 --threads 2
(jemalloc makes PyTorch 1.3-1.8x faster here; see ../shared/BENCHMARKS.md.)
"""
import argparse
import json
import os
import resource
import statistics
import time

PRESETS = {  # must match gpt1's src/model/config.rs
    "gpt1": dict(vocab_size=40478 + 3, n_positions=512, n_embd=768, n_layer=12, n_head=12),
    "small": dict(vocab_size=16384, n_positions=512, n_embd=384, n_layer=6, n_head=6),
    "tiny": dict(vocab_size=8192, n_positions=256, n_embd=256, n_layer=4, n_head=4),
}

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--bf16", action="store_true", help="bf16 autocast (mixed precision)")
args = ap.parse_args()

import torch  # noqa: E402
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
if args.config in PRESETS:
    kw = PRESETS[args.config]
else:
    kw = {k: v for k, v in json.load(open(args.config)).items()
          if k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
cfg = OpenAIGPTConfig(**kw, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
model = OpenAIGPTLMHeadModel(cfg)
model.train()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                         {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
B, T, V = args.batch, args.seq, kw["vocab_size"]
times = []
for s in range(args.warmup + args.steps):
    ids = torch.randint(0, V, (B, T))
    tg = torch.randint(0, V, (B, T))
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V).float(), tg.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if s >= args.warmup:
        times.append(time.perf_counter() - t0)
L, d = kw["n_layer"], kw["n_embd"]
N = 12 * L * d * d + V * d
flops_tok = 6 * N + 12 * L * T * d
med = statistics.median(times)
gflops = flops_tok * B * T / med / 1e9
peak = 160.0 * args.threads
print(json.dumps({
    "config": args.config, "batch": B, "seq": T, "threads": args.threads,
    "params": sum(p.numel() for p in model.parameters()),
    "tokens_per_s": B * T / med,
    "step_ms": {"min": min(times) * 1e3, "median": med * 1e3, "max": max(times) * 1e3},
    "gflops": gflops, "mfu": gflops / peak,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "flops_formula": "6*N + 12*L*T*d per token, N = 12*L*d^2 + V*d", "peak_gflops": peak,
    "torch": torch.__version__,
}))

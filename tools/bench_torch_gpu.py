#!/usr/bin/env python3
"""The PyTorch reference for `gpt1 bench train --device cuda` on the same GPU: HF
OpenAIGPTLMHeadModel, bf16 autocast (or fp32), eager or torch.compile, fused AdamW, dropout 0.1,
gradient clipping 1.0, random tokens; prints the same JSON as `gpt1 bench train --json`.

  python3 tools/bench_torch_gpu.py --config gpt1 --batch 16 --seq 512 [--compile] [--fp32]
"""
import argparse
import json
import statistics
import time

PRESETS = {  # must match gpt1's src/model/config.rs
    "gpt1": dict(vocab_size=40478 + 3, n_positions=512, n_embd=768, n_layer=12, n_head=12),
    "small": dict(vocab_size=16384, n_positions=512, n_embd=384, n_layer=6, n_head=6),
    "tiny": dict(vocab_size=8192, n_positions=256, n_embd=256, n_layer=4, n_head=4),
}

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--compile", action="store_true")
ap.add_argument("--fp32", action="store_true", help="no autocast")
args = ap.parse_args()

import torch  # noqa: E402
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel  # noqa: E402

torch.manual_seed(0)
dev = torch.device("cuda")
kw = PRESETS[args.config]
cfg = OpenAIGPTConfig(**kw, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
model = OpenAIGPTLMHeadModel(cfg).to(dev)
model.train()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                         {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, fused=True)
B, T, V = args.batch, args.seq, kw["vocab_size"]


def step(ids, tg):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not args.fp32):
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V).float(), tg.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


if args.compile:
    step = torch.compile(step)
times = []
for s in range(args.warmup + args.steps):
    ids = torch.randint(0, V, (B, T), device=dev)
    tg = torch.randint(0, V, (B, T), device=dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(ids, tg).item()
    torch.cuda.synchronize()
    if s >= args.warmup:
        times.append(time.perf_counter() - t0)
L, d = kw["n_layer"], kw["n_embd"]
N = 12 * L * d * d + V * d
flops_tok = 6 * N + 12 * L * T * d
med = statistics.median(times)
print(json.dumps({
    "config": args.config, "batch": B, "seq": T,
    "mode": ("compile" if args.compile else "eager") + (" fp32" if args.fp32 else " bf16 autocast"),
    "params": sum(p.numel() for p in model.parameters()),
    "tokens_per_s": B * T / med,
    "step_ms": {"min": min(times) * 1e3, "median": med * 1e3, "max": max(times) * 1e3},
    "gflops": flops_tok * B * T / med / 1e9,
    "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
    "device": torch.cuda.get_device_name(), "torch": torch.__version__,
}))

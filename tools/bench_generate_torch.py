#!/usr/bin/env python3
"""The PyTorch reference for `gpt1 bench generate`: a key/value-cached greedy decoder written
over transformers' OpenAIGPT modules (their weights and LayerNorms; OpenAIGPT has no cache of
its own), fp32 (or `--precision bf16`: the model cast to bf16, PyTorch's fastest bf16
inference, after the check below runs in fp32), batch 1, random weights and prompt; prints the
same JSON keys.

  pip install torch transformers
  python3 tools/bench_generate_torch.py --config gpt1 --prompt-len 64 --new 128 --threads 2
It also checks itself: its greedy tokens equal transformers' full-recompute argmax for the
first 8 steps (an assertion), so the comparison is with a correct decoder.
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
ap.add_argument("--prompt-len", type=int, default=64)
ap.add_argument("--new", type=int, default=128)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
args = ap.parse_args()

import torch  # noqa: E402
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
kw = PRESETS[args.config]
model = OpenAIGPTLMHeadModel(OpenAIGPTConfig(**kw)).eval()
tr = model.transformer
H = kw["n_head"]
D = kw["n_embd"]


def step(ids, pos, cache):
    """Embeddings and every block for the new positions `pos` of `ids` [1, n], with the cache
    (per block: keys and values [1, H, t, dh]) extended in place; returns the last logits."""
    x = tr.tokens_embed(ids) + tr.positions_embed(pos)
    for i, blk in enumerate(tr.h):
        qkv = blk.attn.c_attn(x)
        q, k, v = qkv.split(D, dim=2)
        sh = lambda t: t.view(1, -1, H, D // H).transpose(1, 2)  # noqa: E731
        q, k, v = sh(q), sh(k), sh(v)
        if cache[i] is not None:
            k = torch.cat([cache[i][0], k], dim=2)
            v = torch.cat([cache[i][1], v], dim=2)
        cache[i] = (k, v)
        n, t = q.shape[2], k.shape[2]
        s = q @ k.transpose(-1, -2) / (D // H) ** 0.5
        mask = torch.ones(n, t, dtype=torch.bool).tril(t - n)
        a = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        a = blk.attn.c_proj(a.transpose(1, 2).reshape(1, n, D))
        x = blk.ln_1(x + a)
        x = blk.ln_2(x + blk.mlp(x))
    return x[:, -1] @ tr.tokens_embed.weight.T


def generate(prompt, new):
    cache = [None] * len(tr.h)
    t0 = time.perf_counter()
    logits = step(prompt, torch.arange(prompt.shape[1])[None], cache)
    prefill = time.perf_counter() - t0
    out = []
    t1 = time.perf_counter()
    for i in range(new):
        tok = logits.argmax(-1)
        out.append(tok.item())
        if i + 1 < new:
            logits = step(tok[:, None], torch.tensor([[prompt.shape[1] + i]]), cache)
    decode = time.perf_counter() - t1
    return out, prefill, decode, time.perf_counter() - t0


g = torch.Generator().manual_seed(17)
prompt = torch.randint(0, kw["vocab_size"], (1, args.prompt_len), generator=g)
with torch.inference_mode():
    check, *_ = generate(prompt, 8)
    seq = prompt
    for i in range(8):
        nxt = model(seq).logits[:, -1].argmax(-1)
        assert nxt.item() == check[i], "the cached decoder disagrees with transformers"
        seq = torch.cat([seq, nxt[:, None]], dim=1)
    if args.precision == "bf16":
        model.to(torch.bfloat16)
    tps, pre, dec = [], [], []
    for r in range(args.rounds + 1):
        out, p, d, total = generate(prompt, args.new)
        if r > 0:
            tps.append(args.new / total)
            pre.append(p * 1e3)
            dec.append(d * 1e3 / (args.new - 1))
print(json.dumps({
    "config": args.config, "precision": args.precision, "prompt_len": args.prompt_len, "new": args.new, "threads": args.threads,
    "tokens_per_s": statistics.median(tps), "prefill_ms": statistics.median(pre),
    "decode_ms_per_token": statistics.median(dec),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))

#!/usr/bin/env python3
"""PyTorch's side of `gpt1 bench train --arch lstm`: the same LSTM language model (embedding →
nn.LSTM (oneDNN on the CPU) → nn.Linear with bias), cross-entropy, clipping 1.0, AdamW with
decay on the matrices only, random tokens; prints one JSON line with tokens/s (median step).

  python3 tools/bench_lstm_torch.py --vocab 40478 --embd 256 --hidden 2048 --layers 1 --batch 8 --seq 128
"""
import argparse
import json
import statistics
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--vocab", type=int, required=True)
ap.add_argument("--embd", type=int, required=True)
ap.add_argument("--hidden", type=int, required=True)
ap.add_argument("--layers", type=int, default=1)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


class LstmLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(a.vocab, a.embd)
        self.lstm = torch.nn.LSTM(a.embd, a.hidden, num_layers=a.layers, batch_first=True)
        self.decoder = torch.nn.Linear(a.hidden, a.vocab)

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        return self.decoder(out)


model = LstmLM()
decay = [p for n, p in model.named_parameters() if p.dim() == 2]
other = [p for n, p in model.named_parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=1e-4)
times = []
for s in range(a.warmup + a.steps):
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    tg = torch.randint(0, a.vocab, (a.batch, a.seq))
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(ids).reshape(-1, a.vocab), tg.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if s >= a.warmup:
        times.append(time.perf_counter() - t0)
med = statistics.median(times)
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tokens_per_s": a.batch * a.seq / med, "step_ms": med * 1e3, "peak_rss_mib": rss}))

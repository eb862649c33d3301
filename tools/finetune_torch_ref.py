#!/usr/bin/env python3
"""The paper's fine-tuning recipe in PyTorch + HF transformers, for a side-by-side accuracy
check of `gpt1 finetune` from the same checkpoint on a single-sentence GLUE task (SST-2, CoLA).

Inputs are `[_start_] x [_classify_]` with the ids `gpt1 tokenize` gives (so both sides see
the same tokens); the head is a linear layer on the last block's state at `_classify_` with
dropout 0.1; loss = task CE + λ·LM (padding masked); AdamW (decay 0.01 on matrices), lr
6.25e-5, warm-up over 0.2 % of the updates then linear decay to 0, clipping 1.0, batch 32.

  python3 tools/finetune_torch_ref.py --model CKPT_DIR --data ../shared/data/glue/SST-2 \
      --gpt1 target/release/gpt1 --steps 400 [--metric accuracy|matthews] [--threads 2]
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import OpenAIGPTLMHeadModel

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--gpt1", default="target/release/gpt1")
ap.add_argument("--steps", type=int, default=400)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--lr", type=float, default=6.25e-5)
ap.add_argument("--aux-lm", type=float, default=0.5)
ap.add_argument("--metric", choices=["accuracy", "matthews"], default="accuracy")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def read(split):
    """(sentences, labels) of a GLUE single-sentence split: SST-2 has a header, CoLA none."""
    path = os.path.join(a.data, f"{split}.tsv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows[0][:2] == ["sentence", "label"]:
        return [r[0] for r in rows[1:]], [int(r[1]) for r in rows[1:]]
    return [r[3] for r in rows], [int(r[1]) for r in rows]


def tokenize(texts):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    out = subprocess.run([a.gpt1, "tokenize", "--tokenizer", a.model, "--file", f.name, "--json"],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
    return [json.loads(l) for l in out.splitlines()]


model = OpenAIGPTLMHeadModel.from_pretrained(a.model)
V = model.config.vocab_size
START, CLF = V, V + 2
model.resize_token_embeddings(V + 3, mean_resizing=False)
with torch.no_grad():
    model.transformer.tokens_embed.weight[V:].normal_(0.0, 0.02)
d = model.config.n_embd
head = torch.nn.Linear(d, 2)
torch.nn.init.normal_(head.weight, std=0.02)
torch.nn.init.zeros_(head.bias)

(tr_x, tr_y), (dv_x, dv_y) = read("train"), read("dev")
tr_ids, dv_ids = tokenize(tr_x), tokenize(dv_x)


def batchify(ids_list, labels):
    seqs = [[START] + ids + [CLF] for ids in ids_list]
    n = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), n, dtype=torch.long)
    lm = torch.full((len(seqs), n), -100, dtype=torch.long)
    ext = torch.tensor([len(s) - 1 for s in seqs])
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
        lm[i, :len(s) - 1] = torch.tensor(s[1:])
    return x, lm, ext, torch.tensor(labels)


params = list(model.named_parameters()) + [("head." + n, p) for n, p in head.named_parameters()]
opt = torch.optim.AdamW([
    {"params": [p for n, p in params if p.dim() >= 2], "weight_decay": 0.01},
    {"params": [p for n, p in params if p.dim() < 2], "weight_decay": 0.0}], lr=a.lr)
warm = max(1, math.ceil(a.steps * 0.002))
rng = np.random.default_rng(a.seed)
order = rng.permutation(len(tr_ids))
t0 = time.time()
model.train()
head.train()
for step in range(a.steps):
    lr = a.lr * (step + 1) / warm if step < warm else a.lr * max(0.0, (a.steps - step) / (a.steps - warm))
    for g in opt.param_groups:
        g["lr"] = lr
    idx = order[(step * a.batch) % len(order):][:a.batch]
    x, lm, ext, y = batchify([tr_ids[i] for i in idx], [tr_y[i] for i in idx])
    out = model.transformer(input_ids=x).last_hidden_state
    h = out[torch.arange(len(idx)), ext]
    task = F.cross_entropy(head(F.dropout(h, 0.1, training=True)), y)
    logits = model.lm_head(out)
    lml = F.cross_entropy(logits.view(-1, logits.size(-1)), lm.view(-1), ignore_index=-100)
    loss = task + a.aux_lm * lml
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
    opt.step()
    if step % 50 == 0:
        print(json.dumps({"step": step, "task_loss": task.item(), "lm_loss": lml.item(),
                          "elapsed_s": time.time() - t0}), file=sys.stderr, flush=True)
model.eval()
head.eval()
pred = []
with torch.no_grad():
    for i in range(0, len(dv_ids), 64):
        x, _, ext, _ = batchify(dv_ids[i:i + 64], dv_y[i:i + 64])
        out = model.transformer(input_ids=x).last_hidden_state
        pred += head(out[torch.arange(len(ext)), ext]).argmax(-1).tolist()
p, g = np.array(pred), np.array(dv_y)
acc = float((p == g).mean())
tp, tn = float(((p == 1) & (g == 1)).sum()), float(((p == 0) & (g == 0)).sum())
fp, fn = float(((p == 1) & (g == 0)).sum()), float(((p == 0) & (g == 1)).sum())
den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
mcc = (tp * tn - fp * fn) / den if den else 0.0
print(json.dumps({"steps": a.steps, "dev_examples": len(dv_y), "accuracy": acc, "matthews": mcc,
                  "score": acc if a.metric == "accuracy" else mcc, "seconds": time.time() - t0}))

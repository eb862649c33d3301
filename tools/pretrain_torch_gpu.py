#!/usr/bin/env python3
"""A stand-in pre-trained checkpoint for fine-tuning checks, trained with PyTorch on a GPU.

GPT-1's released weights cannot be downloaded here, and two CPU cores pre-train too slowly to
show transfer, so this trains HF's `OpenAIGPTLMHeadModel` (the same architecture) on shards made
by `gpt1 prepare` for a fixed wall-clock budget, then writes an HF checkpoint. `gpt1 finetune
--model DIR` loads it like any HF OpenAIGPT checkpoint.

On the GPU machine (the paper's recipe: random contiguous windows, Adam, warm-up then cosine
to 0, decoupled weight decay 0.01 on matrices, dropout 0.1; bf16 autocast):

  python3 tools/pretrain_torch_gpu.py train --data DIR_WITH_train.bin_val.bin --out DIR \
      [--n-embd 384 --n-layer 6 --n-head 6 --seconds 360 --batch 64 --seq 512 --lr 6e-4]

It saves the weights in bf16, split into pieces under 16 MiB (what a lent machine sends back);
on this machine, `python3 tools/pretrain_torch_gpu.py join --dir DIR --tokenizer BPE_DIR`
joins them into a float32 `model.safetensors` and copies the tokenizer files beside it.
"""
import argparse
import glob
import json
import math
import os
import shutil
import sys
import time

import numpy as np


def load_bin(path):
    head = np.fromfile(path, dtype=np.int32, count=256)
    if head[0] != 20240520 or head[1] != 1:
        sys.exit(f"{path}: not a uint16 llm.c shard (magic {head[0]}, version {head[1]})")
    return np.memmap(path, dtype=np.uint16, mode="r", offset=1024, shape=(int(head[2]),))


def train(a):
    import torch
    import torch.nn.functional as F
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke test only
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    tr = torch.from_numpy(np.array(load_bin(os.path.join(a.data, "train.bin")), dtype=np.int64)).to(dev)
    va = torch.from_numpy(np.array(load_bin(os.path.join(a.data, "val.bin")), dtype=np.int64)).to(dev)
    cfg = OpenAIGPTConfig(vocab_size=a.vocab, n_positions=a.seq, n_embd=a.n_embd, n_layer=a.n_layer,
                          n_head=a.n_head, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    model = OpenAIGPTLMHeadModel(cfg).to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, fused=dev == "cuda")
    g = torch.Generator(device=dev).manual_seed(a.seed)
    ar = torch.arange(a.seq + 1, device=dev)

    def windows(src, b):
        ix = torch.randint(0, len(src) - a.seq - 1, (b,), generator=g, device=dev)
        w = src[ix[:, None] + ar]
        return w[:, :-1], w[:, 1:]

    def loss_of(x, y):
        with torch.autocast(dev, dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def step(lr):
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, y = windows(tr, a.batch)
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    # Time a few warm-up steps to size the schedule to the budget.
    model.train()
    t0 = time.time()
    for i in range(5):
        step(a.lr * (i + 1) / a.warmup).item()
    sync()
    t1 = time.time()
    for i in range(5, 25):
        step(a.lr * (i + 1) / a.warmup)
    sync()
    per = (time.time() - t1) / 20
    total = max(int((a.seconds - (time.time() - t0)) / per) + 25, a.warmup + 1)
    print(json.dumps({"step_s": per, "tokens_per_s": a.batch * a.seq / per, "planned_steps": total,
                      "planned_tokens": total * a.batch * a.seq, "train_tokens": len(tr)}), flush=True)
    log = open(os.path.join(a.out, "pretrain_log.jsonl"), "w")
    for s in range(25, total):
        lr = a.lr * min(1.0, (s + 1) / a.warmup)
        if s >= a.warmup:
            lr = 0.5 * a.lr * (1 + math.cos(math.pi * (s - a.warmup) / (total - a.warmup)))
        loss = step(lr)
        if s % 200 == 0 or s == total - 1:
            rec = {"step": s, "loss": loss.item(), "lr": lr, "elapsed_s": time.time() - t0}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
    model.eval()
    with torch.no_grad():
        losses = []
        for i in range(0, min(len(va) - a.seq - 1, 64 * a.seq * 8), a.seq * 16):
            idx = torch.arange(i, min(i + a.seq * 16, len(va) - a.seq - 1), a.seq, device=dev)
            w = va[idx[:, None] + ar]
            losses.append(loss_of(w[:, :-1], w[:, 1:]).item())
    val = float(np.mean(losses))
    rec = {"val_loss": val, "val_ppl": math.exp(val), "steps": total,
           "tokens_seen": total * a.batch * a.seq, "seconds": time.time() - t0}
    print(json.dumps(rec), flush=True)
    log.write(json.dumps(rec) + "\n")
    log.close()
    from safetensors.torch import save_file
    sd = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in model.state_dict().items()
          if k != "lm_head.weight"}
    # Pieces of whole tensors, each under 15 MiB (the return limit is 16 MiB a file).
    pieces, cur, size = [], {}, 0
    for k, v in sd.items():
        n = v.numel() * 2
        if cur and size + n > 15 << 20:
            pieces.append(cur)
            cur, size = {}, 0
        if n > 15 << 20:  # one tensor too big: split along its rows
            rows = max(1, (15 << 20) // (v[0].numel() * 2))
            for j in range(0, v.shape[0], rows):
                pieces.append({f"{k}@{j}": v[j:j + rows].contiguous()})
            continue
        cur[k] = v
        size += n
    if cur:
        pieces.append(cur)
    for i, p in enumerate(pieces):
        save_file(p, os.path.join(a.out, f"part{i:02}.safetensors"))
    cfg.save_pretrained(a.out)


def join(a):
    import torch
    from safetensors.torch import load_file, save_file
    rows = {}
    for p in sorted(glob.glob(os.path.join(a.dir, "part*.safetensors"))):
        for k, v in load_file(p).items():
            name, _, start = k.partition("@")
            rows.setdefault(name, []).append((int(start or 0), v))
    sd = {k: torch.cat([v for _, v in sorted(parts, key=lambda t: t[0])]).float().contiguous()
          for k, parts in rows.items()}
    save_file(sd, os.path.join(a.dir, "model.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(a.tokenizer):
        if f.startswith(("encoder_bpe", "vocab", "merges", "tokenizer_config")):
            shutil.copy(os.path.join(a.tokenizer, f), os.path.join(a.dir, f))
    print(f"{a.dir}/model.safetensors: {len(sd)} tensors, "
          f"{sum(v.numel() for v in sd.values()):,} parameters")


ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd", required=True)
t = sub.add_parser("train")
t.add_argument("--data", required=True)
t.add_argument("--out", required=True)
t.add_argument("--vocab", type=int, default=40478)
t.add_argument("--n-embd", type=int, default=384)
t.add_argument("--n-layer", type=int, default=6)
t.add_argument("--n-head", type=int, default=6)
t.add_argument("--batch", type=int, default=64)
t.add_argument("--seq", type=int, default=512)
t.add_argument("--lr", type=float, default=6e-4)
t.add_argument("--warmup", type=int, default=200)
t.add_argument("--seconds", type=float, default=360)
t.add_argument("--seed", type=int, default=0)
j = sub.add_parser("join")
j.add_argument("--dir", required=True)
j.add_argument("--tokenizer", required=True)
a = ap.parse_args()
if a.cmd == "train":
    os.makedirs(a.out, exist_ok=True)
    train(a)
else:
    join(a)

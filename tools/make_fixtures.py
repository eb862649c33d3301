#!/usr/bin/env python3
"""Writes the parity fixtures in tests/fixtures/ from PyTorch + HF transformers.

Run by hand (CI needs no Python):  pip install torch transformers safetensors numpy
                                   python3 tools/make_fixtures.py
Outputs:
  hf_tiny/            a random-init OpenAIGPTLMHeadModel as save_pretrained writes it
  hf_tiny_ref.safetensors
      ids [B, T+1] (int64), logits [B, T, V], loss [1], grad.<hf name> for every parameter
      (dropout 0), and the 10-step AdamW trajectory: traj_loss [10], traj_grad_norm [10],
      final.<hf name> (the weights after it)
  traj_tokens.bin     the token stream of the trajectory, llm.c layout (uint16)
"""
import json
import os
import struct

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
B, T, V = 3, 12, 67
STEPS, LR, WD, CLIP = 10, 1e-3, 0.01, 1.0

torch.manual_seed(0)
torch.set_default_dtype(torch.float32)
cfg = OpenAIGPTConfig(vocab_size=V, n_positions=20, n_embd=32, n_layer=2, n_head=4,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
model = OpenAIGPTLMHeadModel(cfg)
model.eval()  # dropout 0 anyway; eval keeps it explicit
os.makedirs(HERE, exist_ok=True)
model.save_pretrained(os.path.join(HERE, "hf_tiny"))

out = {}
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, V, (B, T + 1), generator=g)
out["ids"] = ids
logits = model(input_ids=ids[:, :-1]).logits
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
loss.backward()
out["logits"] = logits.detach()
out["loss"] = loss.detach().reshape(1)
for name, p in model.named_parameters():
    out["grad." + name] = p.grad.detach().clone()
model.zero_grad()

# Trajectory: constant lr, AdamW with decay on rank >= 2 only, clipping, sequential windows.
stream = torch.randint(0, V, (B * T * STEPS + 1,), generator=g)
with open(os.path.join(HERE, "traj_tokens.bin"), "wb") as f:
    header = [20240520, 1, stream.numel()] + [0] * 253
    f.write(struct.pack("<256i", *header))
    f.write(stream.numpy().astype("<u2").tobytes())
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                         {"params": no_decay, "weight_decay": 0.0}],
                        lr=LR, betas=(0.9, 0.999), eps=1e-8)
n_windows = (stream.numel() - 1) // T
losses, norms = [], []
for step in range(STEPS):
    rows = [((step * B + j) % n_windows) * T for j in range(B)]
    w = torch.stack([stream[r:r + T + 1] for r in rows])
    logits = model(input_ids=w[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), w[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()
    losses.append(loss.item())
    norms.append(norm.item())
out["traj_loss"] = torch.tensor(losses, dtype=torch.float32)
out["traj_grad_norm"] = torch.tensor(norms, dtype=torch.float32)
for name, p in model.named_parameters():
    out["final." + name] = p.detach().clone()
out = {k: v.contiguous() for k, v in out.items()}
save_file(out, os.path.join(HERE, "hf_tiny_ref.safetensors"))
with open(os.path.join(HERE, "hf_tiny_ref.json"), "w") as f:
    json.dump({"B": B, "T": T, "steps": STEPS, "lr": LR, "weight_decay": WD, "clip": CLIP,
               "torch": torch.__version__, "traj_loss": losses, "traj_grad_norm": norms}, f, indent=1)
print("loss", loss.item(), "trajectory", losses)

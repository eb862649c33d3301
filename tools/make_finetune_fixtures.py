#!/usr/bin/env python3
"""Writes tests/fixtures/hf_ft/ and hf_ft_ref.safetensors: a random-init tiny
OpenAIGPTDoubleHeadsModel (dropout 0) as save_pretrained writes it, a multiple-choice batch with
right padding, and the fine-tuning objective mc_loss + 0.5 * lm_loss with every gradient.

  pip install torch transformers safetensors
  python3 tools/make_finetune_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
B, C, T, V = 2, 2, 9, 61
torch.manual_seed(3)
cfg = OpenAIGPTConfig(vocab_size=V, n_positions=16, n_embd=24, n_layer=2, n_head=3, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0, num_labels=1)
model = OpenAIGPTDoubleHeadsModel(cfg)
model.eval()
model.save_pretrained(os.path.join(HERE, "hf_ft"))
g = torch.Generator().manual_seed(4)
ids = torch.randint(0, V - 3, (B, C, T), generator=g)
lengths = torch.tensor([[9, 6], [7, 9]])
mc_token_ids = lengths - 1
labels = ids.clone()
for b in range(B):
    for c in range(C):
        ids[b, c, lengths[b, c] - 1] = V - 1  # the extract token
        labels[b, c, lengths[b, c] - 1] = V - 1
        ids[b, c, lengths[b, c]:] = 0          # padding
        labels[b, c, lengths[b, c]:] = -100
mc_labels = torch.tensor([1, 0])
out = model(input_ids=ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=mc_labels)
loss = out.mc_loss + 0.5 * out.loss
loss.backward()
ref = {"ids": ids, "lengths": lengths, "mc_labels": mc_labels, "mc_logits": out.mc_logits.detach(),
       "mc_loss": out.mc_loss.detach().reshape(1), "lm_loss": out.loss.detach().reshape(1)}
for name, p in model.named_parameters():
    ref["grad." + name] = p.grad.detach().clone()
save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(HERE, "hf_ft_ref.safetensors"))
print("mc", out.mc_loss.item(), "lm", out.loss.item())

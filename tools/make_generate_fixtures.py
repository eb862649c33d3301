#!/usr/bin/env python3
"""Writes the generation fixture in tests/fixtures/ from PyTorch + HF transformers.

Run by hand (CI needs no Python):  pip install torch transformers safetensors
                                   python3 tools/make_generate_fixtures.py
Outputs:
  hf_gen/               a random-init OpenAIGPTLMHeadModel (weights N(0, 0.3), so that greedy
                        choices are far from ties) as save_pretrained writes it
  hf_gen_ref.json       prompts, transformers' greedy continuation of each
                        (`generate(do_sample=False)`: argmax with a full recompute every step),
                        and the smallest top-1 / top-2 logit gap met on the way
"""
import json
import os

import torch
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
V, NEW = 67, 20

torch.manual_seed(0)
cfg = OpenAIGPTConfig(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3)
model = OpenAIGPTLMHeadModel(cfg)
model.eval()
model.save_pretrained(os.path.join(HERE, "hf_gen"))

g = torch.Generator().manual_seed(2)
cases = []
for plen in (1, 4, 9):
    prompt = torch.randint(0, V, (1, plen), generator=g)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(prompt))
        logits = model(out[:, :-1]).logits[0, plen - 1:]
        top2 = logits.topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]).min().item()
    cases.append({"prompt": prompt[0].tolist(), "greedy": out[0, plen:].tolist(), "min_gap": gap})
with open(os.path.join(HERE, "hf_gen_ref.json"), "w") as f:
    json.dump({"max_new": NEW, "cases": cases}, f, indent=1)
print(json.dumps(cases))

#!/usr/bin/env python3
"""Loads a `gpt1 export` directory with transformers' OpenAIGPTDoubleHeadsModel and prints, per
input line of token ids (each a full model sequence, e.g. `_start_ ids _classify_`), the softmax
of the head's logits: compare with `gpt1 predict --probabilities` on the same examples.

  pip install torch transformers
  python3 tools/check_hf_export.py EXPORT_DIR IDS_FILE
"""
import json
import sys

import torch
from transformers import OpenAIGPTDoubleHeadsModel

export, ids_file = sys.argv[1], sys.argv[2]
model = OpenAIGPTDoubleHeadsModel.from_pretrained(export)
model.eval()
summed = json.load(open(f"{export}/gpt1_task.json"))["sequences_summed"]
for line in open(ids_file):
    seqs = [[int(t) for t in s.split()] for s in line.strip().split("|")]
    assert len(seqs) == summed or summed == 1
    T = max(len(s) for s in seqs)
    ids = torch.tensor([[s + [0] * (T - len(s)) for s in seqs]])
    mc = torch.tensor([[len(s) - 1 for s in seqs]])
    with torch.no_grad():
        logits = model(input_ids=ids, mc_token_ids=mc).mc_logits[0]
    z = logits.sum(0) if summed > 1 else (logits[0] if logits.dim() > 1 else logits)
    print("\t".join(f"{p:.6f}" for p in torch.softmax(z, -1).tolist()))

#!/usr/bin/env python3
"""Checks that a gpt1 checkpoint loads in HF transformers with the same numbers.

  python3 tools/check_hf_load.py CKPT_DIR ROWS.npy SCORE.json
where SCORE.json is `gpt1 score --model CKPT_DIR --ids ROWS.npy --json`. Loads the directory
with OpenAIGPTLMHeadModel.from_pretrained, computes log p(row[j+1] | row[..=j]) and compares.
"""
import json
import sys

import numpy as np
import torch
from transformers import OpenAIGPTLMHeadModel

ckpt, rows_path, score_path = sys.argv[1:4]
model = OpenAIGPTLMHeadModel.from_pretrained(ckpt)
model.eval()
rows = np.load(rows_path).astype(np.int64)
ours = json.load(open(score_path))
worst = 0.0
with torch.no_grad():
    for r, row in zip(ours["rows"], rows):
        ids = torch.tensor(row)[None]
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        ref = logp.gather(1, ids[0, 1:, None])[:, 0].numpy()
        worst = max(worst, float(np.abs(ref - np.array(r["token_logprobs"])).max()))
print(json.dumps({"rows": len(rows), "max_abs_logprob_diff": worst}))
sys.exit(0 if worst < 1e-4 else 1)

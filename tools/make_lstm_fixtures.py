#!/usr/bin/env python3
"""Writes tests/fixtures/lstm_tiny/ (config.json, model.safetensors with torch.nn.LSTM's names)
and lstm_tiny_ref.safetensors: a random-init 2-layer LSTM language model (embedding → nn.LSTM →
nn.Linear with bias), a batch of token ids with some targets ignored, its logits, mean
cross-entropy and every gradient.

  pip install torch safetensors
  python3 tools/make_lstm_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
V, E, H, L, B, T = 37, 12, 16, 2, 3, 6
torch.manual_seed(5)


class LstmLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, E)
        self.lstm = torch.nn.LSTM(E, H, num_layers=L, batch_first=True)
        self.decoder = torch.nn.Linear(H, V)

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        return self.decoder(out)


model = LstmLM()
os.makedirs(os.path.join(HERE, "lstm_tiny"), exist_ok=True)
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          os.path.join(HERE, "lstm_tiny", "model.safetensors"))
json.dump({"model_type": "lstm", "vocab_size": V, "n_embd": E, "hidden_size": H, "num_layers": L,
           "n_positions": 16}, open(os.path.join(HERE, "lstm_tiny", "config.json"), "w"), indent=2)
g = torch.Generator().manual_seed(6)
ids = torch.randint(0, V, (B, T), generator=g)
targets = torch.randint(0, V, (B, T), generator=g)
targets[0, 5] = -100
targets[2, 0] = -100
logits = model(ids)
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
loss.backward()
ref = {"ids": ids, "targets": targets, "logits": logits.detach(), "loss": loss.detach().reshape(1)}
for name, p in model.named_parameters():
    ref["grad." + name] = p.grad.detach().clone()
save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(HERE, "lstm_tiny_ref.safetensors"))
print("loss", loss.item())

# The fine-tuning objective with the LSTM as the body (lstm_ft_ref.safetensors): a linear head
# with bias on the extract token's top state of right-padded sequences, cross-entropy over 3
# classes + 0.5 × the LM loss (next tokens inside each sequence), every gradient.
model.zero_grad()
C = 3
torch.manual_seed(7)
head = torch.nn.Linear(H, C)
lengths = torch.tensor([6, 4, 5])
ids = torch.randint(1, V, (B, T), generator=g)
lm = torch.full((B, T), -100)
for b in range(B):
    ids[b, lengths[b]:] = 0
    lm[b, : lengths[b] - 1] = ids[b, 1 : lengths[b]]
labels = torch.tensor([2, 0, 1])
out, _ = model.lstm(model.embedding(ids))
extract = out[torch.arange(B), lengths - 1]
task_loss = torch.nn.functional.cross_entropy(head(extract), labels)
lm_loss = torch.nn.functional.cross_entropy(model.decoder(out).reshape(-1, V), lm.reshape(-1), ignore_index=-100)
(task_loss + 0.5 * lm_loss).backward()
ft = {"ids": ids, "lengths": lengths, "lm": lm, "labels": labels, "head.weight": head.weight.detach(),
      "head.bias": head.bias.detach(), "task_loss": task_loss.detach().reshape(1),
      "lm_loss": lm_loss.detach().reshape(1), "grad.head.weight": head.weight.grad, "grad.head.bias": head.bias.grad}
for name, p in model.named_parameters():
    ft["grad." + name] = p.grad.detach().clone()
save_file({k: v.contiguous() for k, v in ft.items()}, os.path.join(HERE, "lstm_ft_ref.safetensors"))
print("task", task_loss.item(), "lm", lm_loss.item())

"""Writes tests/fixtures/hf_tiny_hidden.npy: transformers' OpenAIGPTModel last_hidden_state
[B, T, d] (float32) of tests/fixtures/hf_tiny on the ids of hf_tiny_ref.safetensors without
their last column (the inputs of the logits fixture), for the Python package's
`Model.hidden_states` test (python/tests), which then needs no torch.

    pip install torch transformers safetensors numpy
    python3 tools/make_python_fixtures.py
"""
import os

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import OpenAIGPTModel

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
ids = load_file(os.path.join(HERE, "hf_tiny_ref.safetensors"))["ids"][:, :-1]
model = OpenAIGPTModel.from_pretrained(os.path.join(HERE, "hf_tiny")).eval()
with torch.no_grad():
    h = model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy().astype(np.float32)
np.save(os.path.join(HERE, "hf_tiny_hidden.npy"), h)
print("wrote hf_tiny_hidden.npy", h.shape, "torch", torch.__version__)

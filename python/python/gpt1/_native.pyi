from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

Ids = Union[npt.NDArray[np.integer[Any]], Sequence[Sequence[int]], Sequence[int]]

class Tokenizer:
    """GPT-1's built-in BPE (path=None) or a folder's vocabulary files; mode "original"
    (ftfy, text_standardize, spaCy rules) or "hf" (transformers' OpenAIGPTTokenizer)."""
    def __init__(self, path: Optional[str] = None, mode: Optional[str] = None) -> None: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    @property
    def vocab_size(self) -> int: ...

class Model:
    """A GPT-1 checkpoint on the CPU."""
    @staticmethod
    def load(path_or_hub_id: str, precision: str = "fp32", device: str = "cpu",
             threads: Optional[int] = None) -> "Model": ...
    def logprobs(self, ids: Ids) -> npt.NDArray[np.float32]:
        """[B, T-1]: log P(ids[:, t+1] | ids[:, :t+1])."""
    def hidden_states(self, ids: Ids) -> npt.NDArray[np.float32]:
        """[B, T, d]: the last block's output (transformers' last_hidden_state)."""
    def score(self, texts: Sequence[str], batch: int = 8) -> list[dict[str, Any]]: ...
    def generate(self, prompt: Union[str, Sequence[int]], max_new: int = 128,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int = 0, num: int = 1,
                 stop: Optional[Sequence[str]] = None,
                 greedy: bool = False) -> Union[str, list[str], list[int], list[list[int]]]: ...
    @property
    def tokenizer(self) -> Optional[Tokenizer]: ...
    @property
    def config(self) -> dict[str, int]: ...

def pretrain(data: Optional[str] = None, out: Optional[str] = None, *, config: Optional[str] = None,
             init: Optional[str] = None, val: Optional[str] = None, tokenizer: Optional[str] = None,
             batch: Optional[int] = None, seq: Optional[int] = None, micro_batch: Optional[int] = None,
             steps: Optional[int] = None, lr: Optional[float] = None, warmup: Optional[int] = None,
             schedule: Optional[str] = None, weight_decay: Optional[float] = None,
             clip: Optional[float] = None, dropout: Optional[float] = None, seed: Optional[int] = None,
             eval_every: Optional[int] = None, save_every: Optional[int] = None,
             keep_checkpoints: Optional[int] = None, stop_at: Optional[int] = None,
             val_windows: Optional[int] = None, resume: bool = False, precision: Optional[str] = None,
             device: str = "cpu", progress: bool = True, threads: Optional[int] = None) -> dict[str, Any]: ...
def finetune(model: Optional[str] = None, *, task: str, data: str, out: str, from_scratch: bool = False,
             config: Optional[str] = None, tokenizer: Optional[str] = None,
             transfer_layers: Optional[int] = None, epochs: Optional[int] = None,
             batch: Optional[int] = None, lr: Optional[float] = None, aux_lm: Optional[float] = None,
             max_len: Optional[int] = None, seed: Optional[int] = None, max_steps: Optional[int] = None,
             eval_every: Optional[int] = None, warmup: Optional[float] = None,
             clf_dropout: Optional[float] = None, weight_decay: Optional[float] = None,
             clip: Optional[float] = None, skip_bad_rows: bool = False, precision: Optional[str] = None,
             save_every: Optional[int] = None, keep_checkpoints: Optional[int] = None,
             resume: bool = False, device: str = "cpu", progress: bool = True,
             threads: Optional[int] = None) -> dict[str, Any]: ...
def evaluate(model: str, data: str, *, split: str = "dev", batch: Optional[int] = None,
             skip_bad_rows: bool = False, precision: Optional[str] = None,
             threads: Optional[int] = None) -> dict[str, Any]: ...
def predict(model: str, data: str, out: str, *, split: str = "test", batch: Optional[int] = None,
            probabilities: bool = False, force: bool = False, precision: Optional[str] = None,
            threads: Optional[int] = None) -> int: ...
def zero_shot(model: str, task: str, data: str, *, split: Optional[str] = None,
              batch: Optional[int] = None, tokenizer: Optional[str] = None, precision: str = "fp32",
              threads: Optional[int] = None) -> dict[str, Any]: ...
def resolve_model(path_or_hub_id: str) -> str: ...

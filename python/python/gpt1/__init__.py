"""GPT-1 ("Improving Language Understanding by Generative Pre-Training", Radford et al., 2018)
from Python, over gpt1's Rust engine: the same numbers as the ``gpt1`` command line.

>>> import gpt1
>>> m = gpt1.Model.load("openai-community/openai-gpt")   # or a checkpoint directory
>>> m.logprobs([[40, 481, 2216]])                          # [B, T-1] float32
>>> m.generate("the old man looked at the sea", max_new=20, greedy=True)
"""


class Error(Exception):
    """Base of gpt1's errors."""


class InvalidInputError(Error, ValueError):
    """A bad argument, file or setting (the message names it, as the command line's)."""


class NotFoundError(Error, FileNotFoundError):
    """A file or directory that is not there."""


from ._native import (  # noqa: E402  (the exceptions first: the engine raises them)
    Model,
    Tokenizer,
    __version__,
    evaluate,
    finetune,
    predict,
    pretrain,
    resolve_model,
    zero_shot,
)

__all__ = [
    "Error",
    "InvalidInputError",
    "NotFoundError",
    "Model",
    "Tokenizer",
    "pretrain",
    "finetune",
    "evaluate",
    "predict",
    "zero_shot",
    "resolve_model",
    "__version__",
]

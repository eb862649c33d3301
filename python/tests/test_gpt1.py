"""The Python package against transformers' committed fixtures, the command line, and bad input.

Run after building the package (see .ci/run):  GPT1_BIN=target/release/gpt1 pytest python/tests
"""

import json
import os
import signal
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import gpt1

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
BIN = os.environ.get("GPT1_BIN", str(ROOT / "target" / "release" / "gpt1"))


def safetensors(path):
    """A safetensors file's arrays with numpy alone."""
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    kinds = {"F32": np.float32, "I64": np.int64, "F64": np.float64, "I32": np.int32}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=kinds[v["dtype"]]).reshape(v["shape"])
    return out


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_logprobs_equal_transformers_lm_head_model():
    ref = safetensors(FIX / "hf_tiny_ref.safetensors")
    ids, logits = ref["ids"], ref["logits"]
    want = np.take_along_axis(log_softmax(logits), ids[:, 1:, None], -1)[..., 0]
    m = gpt1.Model.load(str(FIX / "hf_tiny"))
    got = m.logprobs(ids)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Lists work as arrays do.
    np.testing.assert_array_equal(m.logprobs(ids.tolist()), got)


def test_hidden_states_equal_transformers_model():
    ids = safetensors(FIX / "hf_tiny_ref.safetensors")["ids"][:, :-1]
    want = np.load(FIX / "hf_tiny_hidden.npy")
    got = gpt1.Model.load(str(FIX / "hf_tiny")).hidden_states(ids)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_greedy_generation_equals_the_command_line():
    ids = [54, 43, 49, 39]
    cli = subprocess.run([BIN, "generate", "--model", str(FIX / "hf_gen"), "--ids", " ".join(map(str, ids)),
                          "--max-new", "12", "--greedy", "--json"], capture_output=True, text=True, check=True)
    want = json.loads(cli.stdout.splitlines()[0])["ids"]
    m = gpt1.Model.load(str(FIX / "hf_gen"))
    assert m.tokenizer is None  # 67 tokens: not GPT-1's vocabulary, no files
    assert m.generate(ids, max_new=12, greedy=True) == want


def test_the_tokenizer_is_gpt1s():
    t = gpt1.Tokenizer()
    ids = t.encode("Hello world, the cat sat.")
    assert ids == [3570, 1276, 240, 481, 3387, 1305, 239]
    assert t.decode(ids) == "hello world , the cat sat ."
    assert t.encode_batch(["Hello world", "the cat"]) == [ids[:2], [481, 3387]]


def letters(d):
    """A letter vocabulary (a-z alone and word-final) with no merges, and a two-class task."""
    toks = [t for c in "abcdefghijklmnopqrstuvwxyz" for t in (c, c + "</w>")]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(toks)}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    rows = [(f"{s} was {w}", lab) for s in ["the cat", "a dog", "my day", "the plan"] for w, lab in [("good", 1), ("bad", 0)]]
    for split in ["train", "dev"]:
        (d / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{lab}\n" for s, lab in rows))
    (d / "cfg.json").write_text(json.dumps({"vocab_size": 52, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}))
    # A learnable token stream: a cycle of 13 letters.
    np.save(d / "train.npy", np.array([(i * 2) % 26 * 2 for i in range(3000)], dtype=np.int32))


def test_pretrain_then_finetune_from_python(tmp_path):
    letters(tmp_path)
    run = tmp_path / "run"
    r = gpt1.pretrain(str(tmp_path / "train.npy"), str(run), config=str(tmp_path / "cfg.json"), batch=4, seq=16,
                      steps=30, lr=3e-3, warmup=3, progress=False, tokenizer=str(tmp_path))
    assert r["step"] == 30 and Path(r["final_dir"]).is_dir()
    assert r["metrics"] and r["metrics"][-1]["step"] == 30 and r["loss"] < r["metrics"][0]["loss"]
    ft = gpt1.finetune(r["final_dir"], task="sst2", data=str(tmp_path), out=str(tmp_path / "ft"), epochs=2,
                       batch=4, lr=1e-3, progress=False)
    best = Path(tmp_path / "ft" / "best")
    assert best.is_dir() and ft["metrics"]
    ev = gpt1.evaluate(str(best), str(tmp_path), split="dev")
    assert ev["task"] == "sst2" and ev["n"] == 8 and 0.0 <= ev["score"] <= 1.0
    n = gpt1.predict(str(best), str(tmp_path), str(tmp_path / "pred.tsv"), split="dev", probabilities=True)
    assert n == 8 and (tmp_path / "pred.tsv").read_text().startswith("index\tprediction\tp_0\tp_1")
    # The output rule: an existing file is refused unless force.
    with pytest.raises(gpt1.InvalidInputError):
        gpt1.predict(str(best), str(tmp_path), str(tmp_path / "pred.tsv"), split="dev")


def test_errors_are_python_exceptions_with_the_clis_messages(tmp_path):
    with pytest.raises(FileNotFoundError):
        gpt1.Model.load(str(tmp_path / "missing"))
    m = gpt1.Model.load(str(FIX / "hf_tiny"))
    with pytest.raises(ValueError, match="not in the model's vocabulary of 67"):
        m.logprobs([[1, 2, 999]])
    with pytest.raises(gpt1.InvalidInputError, match="rows of equal length"):
        m.logprobs([[1, 2, 3], [1, 2]])
    with pytest.raises(gpt1.Error, match="exceed the model's context"):
        m.hidden_states([list(range(30))])
    with pytest.raises(ValueError, match="precision"):
        gpt1.Model.load(str(FIX / "hf_tiny"), precision="fp8")
    with pytest.raises(gpt1.Error, match="no tokenizer"):
        gpt1.Model.load(str(FIX / "hf_gen")).generate("text")
    with pytest.raises(gpt1.NotFoundError, match="huggingface-cli download nobody/nothing"):
        gpt1.Model.load("nobody/nothing")


def test_a_hub_id_loads_from_the_local_cache(tmp_path, monkeypatch):
    snap = tmp_path / "models--someone--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (tmp_path / "models--someone--tiny" / "refs").mkdir()
    (tmp_path / "models--someone--tiny" / "refs" / "main").write_text("abc")
    for f in ["config.json", "model.safetensors"]:
        (snap / f).write_bytes((FIX / "hf_tiny" / f).read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert gpt1.resolve_model("someone/tiny") == str(snap)
    ids = [[1, 2, 3, 4]]
    np.testing.assert_array_equal(gpt1.Model.load("someone/tiny").logprobs(ids),
                                  gpt1.Model.load(str(FIX / "hf_tiny")).logprobs(ids))


def test_keyboard_interrupt_during_training_leaves_a_loadable_checkpoint(tmp_path):
    letters(tmp_path)
    run = tmp_path / "run"
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        gpt1.pretrain(str(tmp_path / "train.npy"), str(run), config=str(tmp_path / "cfg.json"), batch=4,
                      seq=16, steps=1_000_000, warmup=10, progress=False, tokenizer=str(tmp_path))
    timer.cancel()
    ckpts = sorted(run.glob("checkpoint-*"))
    assert ckpts, list(run.iterdir())
    m = gpt1.Model.load(str(ckpts[-1]))
    assert m.logprobs([[0, 2, 4, 6]]).shape == (1, 3)
    # The run continues from it, and a later run is not stopped by the old request.
    done = int(ckpts[-1].name.split("-")[1])
    r = gpt1.pretrain(out=str(run), resume=True, stop_at=done + 2, progress=False)
    assert r["step"] == done + 2

#!/usr/bin/env python3
"""Reads a gpt1 run directory's TensorBoard event files with the `tensorboard` package's own
reader and checks that every number of metrics.jsonl is there, at its step, as a scalar.

    pip install --target /tmp/tb tensorboard
    PYTHONPATH=/tmp/tb python3 tools/check_tensorboard.py RUN_DIR
"""
import json
import math
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = Path(sys.argv[1])
acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
acc.Reload()
got = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
want = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
bad, n = [], 0
for rec in want:
    for k, v in rec.items():
        if k == "step" or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        n += 1
        g = got.get(k, {}).get(rec["step"])
        if g is None or not math.isclose(g, v, rel_tol=1e-6, abs_tol=1e-30):
            bad.append((k, rec["step"], v, g))
print(f"{n} scalars of {len(want)} records, tags {sorted(got)}: {len(bad)} missing or different")
for b in bad[:10]:
    print("  ", b)
sys.exit(1 if bad or n == 0 else 0)

#!/usr/bin/env python3
"""Checks what tools/gpu_check.sh left in OUT_DIR against what a GPU lease can bring back, and
prints the summary.

  python3 tools/check_gpu_out.py OUT_DIR [--stages N] [--ok STAGE ...]

A lease returns at most 8 files, no deeper than 2 folders, 16 MiB each, named in letters,
digits, '.', '_' and '-'. Fails (exit 1) when OUT_DIR breaks any of these, when summary.txt or
results.json is missing or unreadable, when logs.tar.gz does not hold every stage's logs, or
(with --stages N) when fewer than N stages have a line in summary.txt, or when a stage named
by --ok did not run with exit code 0.
"""
import argparse
import json
import os
import re
import sys
import tarfile

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--stages", type=int, default=0, help="at least this many stage lines")
ap.add_argument("--ok", nargs="*", default=[], help="stages that must have run with rc=0")
args = ap.parse_args()

problems = []
files = []
for root, dirs, names in os.walk(args.out):
    for n in dirs + names:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", n):
            problems.append(f"{os.path.join(root, n)}: a name a lease cannot bring back")
    for n in names:
        p = os.path.join(root, n)
        rel = os.path.relpath(p, args.out)
        files.append(rel)
        if rel.count(os.sep) > 2:
            problems.append(f"{rel}: deeper than 2 folders")
        if os.path.getsize(p) > 16 << 20:
            problems.append(f"{rel}: over 16 MiB")
if len(files) > 8:
    problems.append(f"{len(files)} files (at most 8 come back): {sorted(files)}")

summary = os.path.join(args.out, "summary.txt")
lines = open(summary).read().splitlines() if os.path.exists(summary) else []
if not lines:
    problems.append("summary.txt missing or empty")
stages = [ln.split()[0] for ln in lines if ln.split() and ln.split()[0] != "total"]
for name in args.ok:
    if not any(ln.split()[:2] == [name, "rc=0"] for ln in lines):
        problems.append(f"stage {name} did not succeed")
if len(stages) < args.stages:
    problems.append(f"{len(stages)} stage lines, expected at least {args.stages}")
try:
    res = json.load(open(os.path.join(args.out, "results.json")))
    missing = [s for s in stages if s not in res["stages"]]
    if missing:
        problems.append(f"results.json lacks stages {missing}")
except (OSError, ValueError, KeyError) as e:
    problems.append(f"results.json: {e}")
try:
    with tarfile.open(os.path.join(args.out, "logs.tar.gz")) as t:
        names = set(t.getnames())
    ran = [ln.split()[0] for ln in lines if " rc=" in ln]
    lost = [s for s in ran if f"logs/{s}.log" not in names]
    if lost:
        problems.append(f"logs.tar.gz lacks the logs of {lost}")
except (OSError, tarfile.TarError) as e:
    problems.append(f"logs.tar.gz: {e}")

print("\n".join(lines))
for p in problems:
    print(f"problem: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)

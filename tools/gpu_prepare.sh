#!/usr/bin/env bash
# Builds, on an ordinary x86-64 Linux machine with Rust, what tools/gpu_check.sh runs on a GPU
# machine that has no Rust toolchain: the release binary and the CUDA test binary, stripped,
# in gpu-bundle/ (ignored by git; carry it along).
#
#   tools/gpu_prepare.sh && <copy the repository with gpu-bundle/> && tools/gpu_check.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exe=$(cargo test --release --test cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == "cuda":
        print(j["executable"])')
rm -rf gpu-bundle && mkdir -p gpu-bundle
cp target/release/gpt1 gpu-bundle/gpt1
cp "$exe" gpu-bundle/cuda-tests
strip gpu-bundle/gpt1 gpu-bundle/cuda-tests
du -sh gpu-bundle/*

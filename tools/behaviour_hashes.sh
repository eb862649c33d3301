#!/usr/bin/env bash
# Hashes of the weights after a short pre-training and a short fine-tuning run at 1 and 2
# threads: a refactor that changes no behaviour leaves every line of this output unchanged.
# tools/behaviour_hashes.expected holds the current lines; the redesign of the engine (compute
# seam, one Trainer step, task registry) left all four unchanged, and only the last change of it,
# `--from-scratch` drawing its weights from the named INIT stream as `pretrain` does, changed the
# two fine-tuning lines (they were 023f2125bacb92a2 1296a0bd2291524d 1903cbdb2339dac0).
# Issue 24 (dropout masks keyed by a sequence's index in the step's batch, not by micro-batch)
# left all four unchanged: this pre-training run has no dropout (hf_tiny's p = 0) and
# fine-tuning already drew the whole batch's masks in one pass.
# The fine-tuning lines depend on the CPU: the expected file is from CPUs with AVX-512F; on an
# AMD Zen 3 (AVX2, no AVX-512) the pre-training lines are the same and the fine-tuning lines are
# those of behaviour_hashes.avx2.expected, with the binary of 2026-12-07 before and after its
# column-block change. Not traced further: the `gemm` crate picks its kernels by vector width.
# Usage: tools/behaviour_hashes.sh [BINARY] (default target/release/gpt1); needs GPT1_DATA or
# ../shared/data for the fine-tuning run (SST-2 and GPT-1's BPE files).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/gpt1}
DATA=${GPT1_DATA:-../shared/data}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for th in 1 2; do
  "$BIN" --threads $th pretrain --data tests/fixtures/traj_tokens.bin \
    --config tests/fixtures/hf_tiny/config.json --out "$TMP/pt$th" --batch 4 --seq 12 \
    --micro-batch 2 --steps 12 --warmup 3 --lr 3e-3 --quiet >/dev/null 2>&1 \
    || "$BIN" --threads $th pretrain --data tests/fixtures/traj_tokens.bin \
    --config tests/fixtures/hf_tiny/config.json --out "$TMP/pt$th" --batch 4 --seq 12 \
    --micro-batch 2 --steps 12 --warmup 3 --lr 3e-3 >/dev/null 2>&1
  echo "pretrain threads=$th $(sha256sum "$TMP/pt$th/final/model.safetensors" | cut -c1-16) $(cut -d, -f2 "$TMP/pt$th/metrics.jsonl" | sha256sum | cut -c1-16)"
  "$BIN" --threads $th finetune --from-scratch --config tiny --tokenizer "$DATA/gpt1-bpe" \
    --task sst2 --data "$DATA/glue/SST-2" --out "$TMP/ft$th" --max-steps 6 --batch 4 \
    --max-len 32 --quiet >/dev/null 2>&1
  echo "finetune threads=$th $(sha256sum "$TMP/ft$th/best/model.safetensors" | cut -c1-16) $(sha256sum "$TMP/ft$th/best/head.safetensors" | cut -c1-16) $(grep -o '"loss":[^,]*' "$TMP/ft$th/metrics.jsonl" | sha256sum | cut -c1-16)"
done

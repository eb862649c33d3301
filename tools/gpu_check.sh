#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with an NVIDIA GPU, its driver, the
# CUDA 13 (or 12) libraries and PyTorch, but no Rust toolchain and no network. The binaries come
# from tools/gpu_prepare.sh, run beforehand on an ordinary x86-64 Linux machine (gpu-bundle/).
#
#   tools/gpu_check.sh OUT_DIR [SECONDS]
#
# Writes into OUT_DIR: summary.txt (one line per stage: exit code, seconds), each stage's log,
# and JSON results (bench_*.json, torch_*.json, hf_load.json, pretrain.json). Stages, each with
# a timeout, skipped once the budget (SECONDS, default 460) is spent:
#   1. parity: every kernel against the CPU (fp32 1e-4, bf16), 10-step trajectories, the LSTM;
#   2. gpt1 bench train at GPT-1's size (12 x 768, V 40,481), bf16 and fp32, on the GPU, and
#      bench finetune (32 x 128, bf16) and bench generate (KV-cached greedy decoding, fp32 and
#      bf16 with pinned weights);
#   3. PyTorch on the same GPU: HF OpenAIGPTLMHeadModel, bf16 autocast, eager and torch.compile;
#   4. a checkpoint pre-trained on the GPU loads in transformers with the same log-probs;
#   5. with the time left, a real pre-training of a GPT-1-size model on the demo books.
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUT_DIR [SECONDS]}
budget=${2:-460}
# GPT1_CHECK_DEVICE=cpu: a dry run of the script itself on a machine without a GPU.
dev=${GPT1_CHECK_DEVICE:-cuda}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=$PWD/gpu-bundle
[ -x "$bin/gpt1" ] && [ -x "$bin/cuda-tests" ] || {
  echo "no gpu-bundle/: run tools/gpu_prepare.sh on a machine with Rust first" >&2
  exit 2
}
t0=$(date +%s)
left() { echo $((budget - ($(date +%s) - t0))); }

# The CUDA libraries of the Python wheels (PyTorch's own), for gpt1's library search.
GPT1_CUDA_LIBS=$(python3 - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib"))
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib64"))
print(":".join(dirs))
EOF
)
export GPT1_CUDA_LIBS
export XDG_CACHE_HOME=$out/cache
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

# stage NAME TIMEOUT CMD...: runs CMD (stdout to NAME.out, stderr to NAME.log) unless the
# budget is spent; one line in summary.txt either way.
stage() {
  local name=$1 limit=$2
  shift 2
  local l
  l=$(left)
  if [ "$l" -lt 20 ]; then
    echo "$name skipped (budget spent)" | tee -a "$out/summary.txt"
    return 1
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  local s
  s=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.log"
  local rc=$?
  echo "$name rc=$rc $(($(date +%s) - s))s" | tee -a "$out/summary.txt"
  return $rc
}

# 1. Parity.
GPT1_REQUIRE_GPU=1 GPT1_REQUIRE_NVRTC=1 stage parity 150 \
  "$bin/cuda-tests" --test-threads 1 --nocapture

# 2. gpt1 at GPT-1's size (batch 16 x 512 per pass; 64 x 512 when it fits in one pass).
for b in 16 64; do
  stage "bench_gpt1_bf16_b$b" 90 "$bin/gpt1" bench train --config gpt1 --batch $b --seq 512 \
    --steps 5 --warmup 2 --precision bf16 --device "$dev" --json &&
    cp "$out/bench_gpt1_bf16_b$b.out" "$out/bench_gpt1_bf16_b$b.json"
done
stage bench_gpt1_fp32_b16 60 "$bin/gpt1" bench train --config gpt1 --batch 16 --seq 512 \
  --steps 3 --warmup 1 --device "$dev" --json &&
  cp "$out/bench_gpt1_fp32_b16.out" "$out/bench_gpt1_fp32_b16.json"

stage bench_finetune 60 "$bin/gpt1" bench finetune --config gpt1 --batch 32 --seq 128 --steps 5 \
  --precision bf16 --device "$dev" --json && cp "$out/bench_finetune.out" "$out/bench_finetune.json"
stage bench_generate 60 "$bin/gpt1" bench generate --config gpt1 --prompt-len 64 --new 128 \
  --device "$dev" --json && cp "$out/bench_generate.out" "$out/bench_generate.json"
stage bench_generate_bf16 45 "$bin/gpt1" bench generate --config gpt1 --prompt-len 64 --new 128 \
  --precision bf16 --device "$dev" --json &&
  cp "$out/bench_generate_bf16.out" "$out/bench_generate_bf16.json"

# 3. PyTorch on the same GPU.
stage torch_eager_b16 90 python3 tools/bench_torch_gpu.py --config gpt1 --batch 16 --seq 512 &&
  cp "$out/torch_eager_b16.out" "$out/torch_eager_b16.json"
stage torch_compile_b16 150 python3 tools/bench_torch_gpu.py --config gpt1 --batch 16 --seq 512 \
  --compile && cp "$out/torch_compile_b16.out" "$out/torch_compile_b16.json"

# 4. A checkpoint trained on the GPU loads in transformers with the same log-probs.
work=$(mktemp -d)
# The demo books (one document): the first 97 % trains, the rest is held out.
python3 - "$work" <<'EOF'
import gzip, sys
w = sys.argv[1]
text = gzip.open("assets/demo/books.txt.gz", "rt", encoding="utf-8").read()
cut = text.rfind("\n", 0, int(len(text) * 0.97))
open(f"{w}/train.txt", "w", encoding="utf-8").write(text[:cut])
open(f"{w}/val.txt", "w", encoding="utf-8").write(text[cut:])
EOF
stage prepare 60 "$bin/gpt1" prepare --input "$work/train.txt" --out "$work/tr" --val-fraction 0 &&
  stage prepare_val 60 "$bin/gpt1" prepare --input "$work/val.txt" --out "$work/va" \
    --val-fraction 0 && mkdir -p "$work/data" && mv "$work/tr/train.bin" "$work/data/train.bin" &&
  mv "$work/va/train.bin" "$work/data/val.bin"
stage pretrain_small 60 "$bin/gpt1" pretrain --data "$work/data/train.bin" \
  --val "$work/data/val.bin" --config gpt1-mini --batch 8 --seq 128 --steps 30 --warmup 5 \
  --device "$dev" --precision bf16 --quiet --out "$work/small" &&
  python3 - "$work" <<'EOF' &&
import sys, numpy as np
w = sys.argv[1]
toks = np.fromfile(f"{w}/data/val.bin", dtype=np.uint16, offset=1024)
np.save(f"{w}/rows.npy", toks[: 4 * 64].astype(np.int64).reshape(4, 64))
EOF
  stage score_small 60 "$bin/gpt1" score --model "$work/small/final" --ids "$work/rows.npy" --json &&
  stage hf_load 60 python3 tools/check_hf_load.py "$work/small/final" "$work/rows.npy" \
    "$out/score_small.out" && cp "$out/hf_load.out" "$out/hf_load.json"

# 5. A real pre-training in the time left: GPT-1's size on the demo books, bf16.
l=$(left)
if [ "$l" -gt 90 ]; then
  tps=$(python3 -c "import json; print(json.load(open('$out/bench_gpt1_bf16_b16.json'))['tokens_per_s'])" 2>/dev/null || echo 0)
  steps=$(python3 -c "print(max(10, int(($l - 60) * $tps / (16 * 512))))")
  stage pretrain_gpt1 $((l - 15)) "$bin/gpt1" pretrain --data "$work/data/train.bin" \
    --val "$work/data/val.bin" --config gpt1 --batch 16 --seq 512 --steps "$steps" \
    --warmup $((steps / 20 + 1)) --lr 2.5e-4 --eval-every $((steps / 4 + 1)) \
    --save-every 1000000 --device "$dev" --precision bf16 --quiet --out "$work/gpt1"
  cp "$work/gpt1/metrics.jsonl" "$out/pretrain_gpt1_metrics.jsonl" 2>/dev/null
fi
echo "total $(($(date +%s) - t0))s" | tee -a "$out/summary.txt"
rm -rf "$work"
